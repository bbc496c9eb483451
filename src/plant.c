/* plant.c - the simulated laser plant and wavemeter of wavelock-sim (pure). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plant.h"

/* Random streams of a laser and of its wavemeter channel. */
enum { STREAM_WALK = 1, STREAM_HOP = 2, STREAM_METER = 3 };

/* Stream of the calibration error's walk: not the hash of any laser name
   (names have no spaces). */
#define STREAM_CALIB_NAME "wavemeter calibration"

struct PLT_Laser {
  char name[CNF_NAME_MAX];
  int channel;
  double setpoint_thz;
  double piezo_start_v, current_start_v;
  int has_current;
  CNF_SimLaser p;

  double t;                       /* time of the state below */
  double vp_cmd, vc_cmd;          /* commanded volts */
  double vp, vc;                  /* lagged volts */
  double step_mhz;                /* sum of manual drift steps */
  double sine_phase;

  /* random walk on the grid k * PLT_WALK_STEP_S */
  PLT_Rng walk_rng;
  double walk_sigma;              /* MHz per grid step */
  int64_t walk_k;
  double walk_a, walk_b;          /* walk at grid points k and k + 1 */

  /* mode hops */
  PLT_Rng hop_rng;
  double hop_rate;                /* per second */
  double next_hop_t;              /* next spontaneous hop */
  double hop_start, hop_end, hop_size;
  unsigned long hops;
  /* persistent mode hops (p.modehop_free_v > 0) */
  int mode;                       /* -1, 0 (the right mode), +1 */
  double mode_mhz;                /* frequency offset of the wrong mode */
  double return_x;                /* tuning at which the laser falls back to mode 0 */
  int reference;                  /* made by PLT_CreateReference */
};

typedef struct {
  PLT_Laser *laser;
  int index;
  PLT_Rng rng;
  double until;                   /* dropout end */
  int code;                       /* dropout code */
} MeterChannel;

/* The calibration error, eps(t) in ppb. */
typedef struct {
  PLT_CalibParams p;
  double t;                       /* time of the state below */
  double lin_ppb, lin_t;          /* linear part: lin_ppb at lin_t, then the rate */
  double steps_ppb;
  PLT_Rng rng;                    /* walk on the grid k * PLT_WALK_STEP_S */
  double sigma;                   /* ppb per grid step */
  int64_t k;
  double a, b;                    /* walk at grid points k and k + 1 */
} Calib;

struct PLT_Wavemeter {
  Calib cal;
  MeterChannel *ch;
  int n;
  int next;                       /* index of the channel being read */
  double next_t;                  /* end of its exposure */
  double switch_s;
};

/* ---- random numbers ---------------------------------------------------- */

static uint64_t
splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t
rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

void
PLT_RngSeed(PLT_Rng *rng, uint64_t seed)
{
  uint64_t x = seed;

  for (int i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&x);
  rng->have_spare = 0;
  rng->spare = 0.0;
}

uint64_t
PLT_RngNext(PLT_Rng *rng)
{
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;

  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double
PLT_RngUniform(PLT_Rng *rng)
{
  /* 53 random bits, shifted into (0, 1] so that log() is always finite */
  return (double)((PLT_RngNext(rng) >> 11) + 1) * 0x1.0p-53;
}

double
PLT_RngGauss(PLT_Rng *rng)
{
  double r, phi;

  if (rng->have_spare) {
    rng->have_spare = 0;
    return rng->spare;
  }
  r = sqrt(-2.0 * log(PLT_RngUniform(rng)));
  phi = 2.0 * M_PI * PLT_RngUniform(rng);
  rng->spare = r * sin(phi);
  rng->have_spare = 1;
  return r * cos(phi);
}

uint64_t
PLT_MixSeed(uint64_t seed, uint64_t stream)
{
  uint64_t x = seed ^ rotl(stream * 0xd1342543de82ef95ULL + 1, 29);

  splitmix64(&x);
  return splitmix64(&x);
}

uint64_t
PLT_HashName(const char *name)
{
  uint64_t h = 0xcbf29ce484222325ULL;

  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* ---- laser --------------------------------------------------------------- */

static double
exp_interval(PLT_Rng *rng, double rate)
{
  return rate > 0.0 ? -log(PLT_RngUniform(rng)) / rate : HUGE_VAL;
}

PLT_Laser *
PLT_CreateLaser(const CNF_Laser *cfg, uint64_t seed)
{
  PLT_Laser *l = calloc(1, sizeof *l);
  uint64_t base;

  if (!l)
    return NULL;
  memcpy(l->name, cfg->name, sizeof l->name);
  l->name[sizeof l->name - 1] = '\0';
  l->channel = cfg->channel;
  l->setpoint_thz = cfg->setpoint_thz;
  l->p = cfg->sim;
  l->piezo_start_v = cfg->piezo.start_v;
  l->has_current = cfg->current.present;
  l->current_start_v = l->has_current ? cfg->current.start_v : 0.0;
  l->vp_cmd = l->vp = l->piezo_start_v;
  l->vc_cmd = l->vc = l->current_start_v;
  l->t = 0.0;

  base = PLT_MixSeed(seed, PLT_HashName(l->name));
  PLT_RngSeed(&l->walk_rng, PLT_MixSeed(base, STREAM_WALK));
  PLT_RngSeed(&l->hop_rng, PLT_MixSeed(base, STREAM_HOP));

  l->walk_sigma = l->p.walk_mhz_rts > 0.0 ? l->p.walk_mhz_rts * sqrt(PLT_WALK_STEP_S) : 0.0;
  l->walk_k = 0;
  l->walk_a = 0.0;
  l->walk_b = l->walk_sigma * PLT_RngGauss(&l->walk_rng);

  l->sine_phase = 2.0 * M_PI * PLT_RngUniform(&l->hop_rng);
  l->hop_rate = l->p.modehop_per_h > 0.0 ? l->p.modehop_per_h / 3600.0 : 0.0;
  l->next_hop_t = exp_interval(&l->hop_rng, l->hop_rate);
  l->hop_start = l->hop_end = -HUGE_VAL;
  return l;
}

PLT_Laser *
PLT_CreateReference(const char *name, int channel, double thz, double noise_mhz,
                    double exposure_ms, uint64_t seed)
{
  CNF_Laser cfg;
  PLT_Laser *l;

  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.name, sizeof cfg.name, "%s", name);
  cfg.channel = channel;
  cfg.setpoint_thz = thz;
  /* no tuning, walk, sine (period 0), linear drift or spontaneous mode
     hops; a hop on command has the default size and length */
  cfg.sim.modehop_mhz = 8000.0;
  cfg.sim.modehop_s = 3.0;
  cfg.sim.noise_mhz = noise_mhz > 0.0 ? noise_mhz : 0.0;
  cfg.sim.exposure_ms = exposure_ms;
  l = PLT_CreateLaser(&cfg, seed);
  if (l)
    l->reference = 1;
  return l;
}

int
PLT_LaserIsReference(const PLT_Laser *laser)
{
  return laser->reference;
}

void
PLT_DestroyLaser(PLT_Laser *laser)
{
  free(laser);
}

static double
lag(double v, double cmd, double dt, double tau_ms)
{
  if (tau_ms <= 0.0)
    return cmd;
  return cmd + (v - cmd) * exp(-dt / (tau_ms * 1e-3));
}

/* The tuning the actuators ask for, in piezo volts from the start outputs:
   the piezo plus the current expressed through the ratio of the gains. */
static double
tuning_x(const PLT_Laser *l)
{
  double x = l->vp - l->piezo_start_v;

  if (l->has_current && l->p.piezo_mhz_per_v != 0.0)
    x += (l->vc - l->current_start_v) * l->p.current_mhz_per_v / l->p.piezo_mhz_per_v;
  return x;
}

static double
sgn(double v)
{
  return v < 0.0 ? -1.0 : 1.0;
}

/* Persistent hop to mode dir (+1: the kind that happens past the upper edge
   of the window, it returns when the tuning falls below return_x; -1 the
   other way) with a frequency offset of mhz. */
static void
persistent_hop(PLT_Laser *l, int dir, double return_x, double mhz)
{
  l->mode = dir;
  l->return_x = return_x;
  l->mode_mhz = mhz;
  l->hops++;
}

/* Mode hop-free window and hysteresis, at the present lagged outputs. */
static void
update_mode(PLT_Laser *l)
{
  double x = tuning_x(l), half = 0.5 * l->p.modehop_free_v, h = l->p.hysteresis_v;
  double size = fabs(l->p.modehop_mhz) * sgn(l->p.piezo_mhz_per_v);

  if ((l->mode > 0 && x < l->return_x) || (l->mode < 0 && x > l->return_x))
    l->mode = 0;
  if (l->mode != 0)
    return;
  /* Tuned past an edge of the window, the laser hops back by one mode. */
  if (x > half)
    persistent_hop(l, 1, half - h, -size);
  else if (x < -half)
    persistent_hop(l, -1, -half + h, size);
}

static void
advance_walk(PLT_Laser *l, double t)
{
  int64_t k = (int64_t)floor(t / PLT_WALK_STEP_S);

  if (k <= l->walk_k)
    return;
  if (l->walk_sigma == 0.0) {
    l->walk_k = k;
    return;
  }
  while (l->walk_k < k) {
    l->walk_k++;
    l->walk_a = l->walk_b;
    l->walk_b += l->walk_sigma * PLT_RngGauss(&l->walk_rng);
  }
}

void
PLT_Advance(PLT_Laser *l, double t)
{
  double dt;

  if (!(t > l->t))
    return;
  dt = t - l->t;
  l->vp = lag(l->vp, l->vp_cmd, dt, l->p.piezo_lag_ms);
  l->vc = lag(l->vc, l->vc_cmd, dt, l->p.current_lag_ms);
  advance_walk(l, t);
  if (l->p.modehop_free_v > 0.0) {
    /* Persistent hops: a spontaneous one (either way) while on the right
       mode; it lasts until the tuning moves back by hysteresis_v. */
    while (l->next_hop_t <= t) {
      if (l->mode == 0) {
        int dir = (PLT_RngNext(&l->hop_rng) >> 63) ? 1 : -1;
        double x = tuning_x(l);

        persistent_hop(l, dir, x - dir * l->p.hysteresis_v,
                       -dir * fabs(l->p.modehop_mhz) * sgn(l->p.piezo_mhz_per_v));
      }
      l->next_hop_t += exp_interval(&l->hop_rng, l->hop_rate);
    }
    l->t = t;
    update_mode(l);
    return;
  }
  while (l->next_hop_t <= t) {
    l->hop_start = l->next_hop_t;
    l->hop_end = l->hop_start + l->p.modehop_s;
    l->hop_size = (PLT_RngNext(&l->hop_rng) >> 63) ? -l->p.modehop_mhz : l->p.modehop_mhz;
    l->hops++;
    l->next_hop_t += exp_interval(&l->hop_rng, l->hop_rate);
  }
  l->t = t;
}

void
PLT_SetPiezo(PLT_Laser *l, double t, double volts)
{
  PLT_Advance(l, t);
  if (isfinite(volts))
    l->vp_cmd = volts;
}

void
PLT_SetCurrent(PLT_Laser *l, double t, double volts)
{
  PLT_Advance(l, t);
  if (isfinite(volts))
    l->vc_cmd = volts;
}

void
PLT_StartHop(PLT_Laser *l, double t, double mhz)
{
  PLT_StartHopHysteresis(l, t, mhz, l->p.hysteresis_v);
}

void
PLT_StartHopHysteresis(PLT_Laser *l, double t, double mhz, double hysteresis_v)
{
  PLT_Advance(l, t);
  if (l->p.modehop_free_v > 0.0) {
    /* The kind of hop whose frequency jump has this sign. */
    int dir = mhz * sgn(l->p.piezo_mhz_per_v) < 0.0 ? 1 : -1;

    if (!(hysteresis_v >= 0.0))
      hysteresis_v = l->p.hysteresis_v;
    persistent_hop(l, dir, tuning_x(l) - dir * hysteresis_v, mhz);
    return;
  }
  l->hop_start = l->t;
  l->hop_end = l->t + l->p.modehop_s;
  l->hop_size = mhz;
  l->hops++;
}

void
PLT_StepDrift(PLT_Laser *l, double t, double mhz)
{
  PLT_Advance(l, t);
  if (isfinite(mhz))
    l->step_mhz += mhz;
}

void
PLT_GetTruth(PLT_Laser *l, double t, PLT_Truth *out)
{
  double walk, sine = 0.0, linear, off;
  int hopping;

  PLT_Advance(l, t);
  t = l->t;
  walk = l->walk_a + (l->walk_b - l->walk_a) *
         (t - (double)l->walk_k * PLT_WALK_STEP_S) / PLT_WALK_STEP_S;
  if (l->p.sine_period_s > 0.0)
    sine = l->p.sine_mhz * sin(2.0 * M_PI * t / l->p.sine_period_s + l->sine_phase);
  linear = l->p.linear_mhz_per_h * t / 3600.0;
  hopping = l->p.modehop_free_v > 0.0 ? l->mode != 0 : t >= l->hop_start && t < l->hop_end;

  memset(out, 0, sizeof *out);
  out->t = t;
  out->drift_mhz = walk + sine + linear + l->step_mhz;
  out->hop_mhz = !hopping ? 0.0 : l->p.modehop_free_v > 0.0 ? l->mode_mhz : l->hop_size;
  out->mode = l->p.modehop_free_v > 0.0 ? l->mode : hopping;
  out->tuning_v = tuning_x(l);
  out->return_v = l->mode != 0 ? l->return_x : 0.0;
  out->mode_hop = hopping;
  out->hops = l->hops;
  out->piezo_v = l->vp_cmd;
  out->current_v = l->has_current ? l->vc_cmd : 0.0;
  out->piezo_lag_v = l->vp;
  out->current_lag_v = l->has_current ? l->vc : 0.0;
  off = l->p.offset_mhz + l->p.piezo_mhz_per_v * (l->vp - l->piezo_start_v) + out->drift_mhz +
        out->hop_mhz;
  if (l->has_current)
    off += l->p.current_mhz_per_v * (l->vc - l->current_start_v);
  out->error_mhz = off;
  out->true_thz = l->setpoint_thz + off * 1e-6;
}

const char *
PLT_LaserName(const PLT_Laser *laser)
{
  return laser->name;
}

int
PLT_LaserChannel(const PLT_Laser *laser)
{
  return laser->channel;
}

const CNF_SimLaser *
PLT_LaserParams(const PLT_Laser *laser)
{
  return &laser->p;
}

/* ---- wavemeter ----------------------------------------------------------- */

static int
cmp_channel(const void *a, const void *b)
{
  const MeterChannel *x = a, *y = b;

  if (x->laser->channel != y->laser->channel)
    return x->laser->channel < y->laser->channel ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Time one channel takes; at least 1 us, so that time always moves on. */
static double
channel_time(const PLT_Wavemeter *wm, int i)
{
  double e = wm->ch[i].laser->p.exposure_ms;
  double t = wm->switch_s + (e > 0.0 ? e * 1e-3 : 0.0);

  return t > 1e-6 ? t : 1e-6;
}

PLT_Wavemeter *
PLT_CreateWavemeter(PLT_Laser *const *lasers, int n, double switch_ms, uint64_t seed)
{
  PLT_Wavemeter *wm = calloc(1, sizeof *wm);

  if (!wm)
    return NULL;
  if (n > 0) {
    wm->ch = calloc((size_t)n, sizeof *wm->ch);
    if (!wm->ch) {
      free(wm);
      return NULL;
    }
  }
  wm->n = n;
  wm->switch_s = switch_ms > 0.0 ? switch_ms * 1e-3 : 0.0;
  for (int i = 0; i < n; i++) {
    MeterChannel *c = &wm->ch[i];
    uint64_t base = PLT_MixSeed(seed, PLT_HashName(lasers[i]->name));

    c->laser = lasers[i];
    c->index = i;
    PLT_RngSeed(&c->rng, PLT_MixSeed(base, STREAM_METER));
    c->until = -HUGE_VAL;
    c->code = -1;
  }
  if (n > 1)
    qsort(wm->ch, (size_t)n, sizeof *wm->ch, cmp_channel);
  PLT_SetCalibration(wm, NULL, seed);
  wm->next = 0;
  wm->next_t = n > 0 ? channel_time(wm, 0) : HUGE_VAL;
  return wm;
}

void
PLT_DestroyWavemeter(PLT_Wavemeter *wm)
{
  if (!wm)
    return;
  free(wm->ch);
  free(wm);
}

double
PLT_NextReadingTime(const PLT_Wavemeter *wm)
{
  return wm->next_t;
}

/* Error code of a reading that failed: mostly under- or overexposed. */
static int
random_code(double u)
{
  if (u < 0.45)
    return -3;
  if (u < 0.90)
    return -4;
  if (u < 0.95)
    return -2;
  return -1;
}

/* ---- calibration error ------------------------------------------------ */

void
PLT_SetCalibration(PLT_Wavemeter *wm, const PLT_CalibParams *p, uint64_t seed)
{
  Calib *c = &wm->cal;

  memset(c, 0, sizeof *c);
  if (p)
    c->p = *p;
  if (!isfinite(c->p.offset_ppb))
    c->p.offset_ppb = 0.0;
  if (!isfinite(c->p.rate_ppb_per_min))
    c->p.rate_ppb_per_min = 0.0;
  if (!(c->p.walk_ppb_rts > 0.0 && isfinite(c->p.walk_ppb_rts)))
    c->p.walk_ppb_rts = 0.0;
  PLT_RngSeed(&c->rng, PLT_MixSeed(seed, PLT_HashName(STREAM_CALIB_NAME)));
  c->sigma = c->p.walk_ppb_rts * sqrt(PLT_WALK_STEP_S);
  c->a = 0.0;
  c->b = c->sigma > 0.0 ? c->sigma * PLT_RngGauss(&c->rng) : 0.0;
}

static void
calib_advance(Calib *c, double t)
{
  int64_t k;

  if (!(t > c->t))
    return;
  k = (int64_t)floor(t / PLT_WALK_STEP_S);
  if (c->sigma == 0.0) {
    if (k > c->k)
      c->k = k;
  } else {
    while (c->k < k) {
      c->k++;
      c->a = c->b;
      c->b += c->sigma * PLT_RngGauss(&c->rng);
    }
  }
  c->t = t;
}

void
PLT_GetCalibration(PLT_Wavemeter *wm, double t, PLT_CalibState *st)
{
  Calib *c = &wm->cal;

  calib_advance(c, t);
  t = c->t;
  memset(st, 0, sizeof *st);
  st->t = t;
  st->offset_ppb = c->p.offset_ppb;
  st->linear_ppb = c->lin_ppb + c->p.rate_ppb_per_min * (t - c->lin_t) / 60.0;
  if (c->sigma != 0.0)
    st->walk_ppb = c->a + (c->b - c->a) * (t - (double)c->k * PLT_WALK_STEP_S) /
                   PLT_WALK_STEP_S;
  st->steps_ppb = c->steps_ppb;
  st->ppb = st->offset_ppb + st->linear_ppb + st->walk_ppb + st->steps_ppb;
  st->rate_ppb_per_min = c->p.rate_ppb_per_min;
  st->walk_ppb_rts = c->p.walk_ppb_rts;
}

void
PLT_StepCalibration(PLT_Wavemeter *wm, double t, double ppb)
{
  calib_advance(&wm->cal, t);
  if (isfinite(ppb))
    wm->cal.steps_ppb += ppb;
}

void
PLT_SetCalibrationRate(PLT_Wavemeter *wm, double t, double ppb_per_min)
{
  Calib *c = &wm->cal;

  calib_advance(c, t);
  if (!isfinite(ppb_per_min))
    return;
  c->lin_ppb += c->p.rate_ppb_per_min * (c->t - c->lin_t) / 60.0;
  c->lin_t = c->t;
  c->p.rate_ppb_per_min = ppb_per_min;
}

/* ---- readings ------------------------------------------------------------ */

int
PLT_TakeReading(PLT_Wavemeter *wm, PLT_Reading *r)
{
  MeterChannel *c;
  PLT_Truth truth;
  PLT_CalibState cal;
  double noise, u_err, u_code;

  if (wm->n <= 0)
    return -1;
  c = &wm->ch[wm->next];
  PLT_GetTruth(c->laser, wm->next_t, &truth);
  PLT_GetCalibration(wm, wm->next_t, &cal);

  /* always the same draws, so the stream stays aligned whatever happens */
  noise = c->laser->p.noise_mhz * PLT_RngGauss(&c->rng);
  u_err = PLT_RngUniform(&c->rng);
  u_code = PLT_RngUniform(&c->rng);

  memset(r, 0, sizeof *r);
  r->channel = c->laser->channel;
  r->laser = c->index;
  r->t = wm->next_t;
  r->true_thz = truth.true_thz;
  r->calib_ppb = cal.ppb;
  if (wm->next_t < c->until) {
    r->value = c->code;
  } else if (u_err <= c->laser->p.error_rate) {
    r->value = random_code(u_code);
  } else {
    /* f_true * (1 + eps) + noise; exactly the old sum when eps is 0 */
    r->noise_mhz = noise;
    r->calib_mhz = cal.ppb != 0.0 ? PLT_PPB_TO_MHZ(cal.ppb, truth.true_thz) : 0.0;
    r->value = c->laser->setpoint_thz + (truth.error_mhz + r->calib_mhz + noise) * 1e-6;
  }

  wm->next = (wm->next + 1) % wm->n;
  wm->next_t += channel_time(wm, wm->next);
  return 0;
}

int
PLT_Dropout(PLT_Wavemeter *wm, int channel, double t_end, int code)
{
  int found = 0;

  for (int i = 0; i < wm->n; i++) {
    if (channel == 0 || wm->ch[i].laser->channel == channel) {
      wm->ch[i].until = t_end;
      wm->ch[i].code = code;
      found = 1;
    }
  }
  return found ? 0 : -1;
}
