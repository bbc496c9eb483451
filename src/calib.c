/* calib.c - correction of the wavemeter's calibration against a reference
 * laser: a first-order filter with a slew limit, and the judgement of the
 * reference readings (see calib.h). */
#include <math.h>
#include <stdlib.h>

#include "calib.h"

struct CAL_Ctx {
  CAL_Params p;
  CAL_StateId state;
  CAL_Reason reason;
  int have_eps;              /* a correction has been acquired */
  double eps;
  double t_used;             /* the last reference reading used (filter time) */
  double t_good;             /* the filter last followed without its slew limit */
  int have_ref;              /* any reference reading (even an error code) */
  double t_ref;
  double t_prev;             /* the reference reading before this one */
  int have_measured;
  double measured;           /* the last valid reference reading's eps */
  int n_out;                 /* consecutive readings beyond the band */
  int n_invalid;             /* consecutive error codes */
  int calibrating;
};

static double
mhz_of(const CAL_Ctx *c, double eps)
{
  return eps * c->p.ref_thz * 1e6;
}

static void
hold(CAL_Ctx *c, CAL_Reason why)
{
  c->state = CAL_HOLD;
  c->reason = why;
}

static void
reset(CAL_Ctx *c)
{
  c->state = CAL_HOLD;
  c->reason = CAL_R_WAITING;
  c->have_eps = 0;
  c->eps = 0.0;
  c->have_ref = 0;
  c->have_measured = 0;
  c->n_out = 0;
  c->n_invalid = 0;
}

CAL_Ctx *
CAL_Create(const CAL_Params *p)
{
  CAL_Ctx *c = calloc(1, sizeof *c);

  if (!c)
    return NULL;
  c->p = *p;
  reset(c);
  return c;
}

void
CAL_Destroy(CAL_Ctx *c)
{
  free(c);
}

void
CAL_Configure(CAL_Ctx *c, const CAL_Params *p)
{
  int keep = p->mode == c->p.mode && p->ref_thz == c->p.ref_thz;

  c->p = *p;
  if (!keep) {
    int cal = c->calibrating;

    reset(c);
    c->calibrating = cal;
  }
}

void
CAL_OnReference(CAL_Ctx *c, double value, double now)
{
  double m, rate_s, dt, band, dev, a, target, step;

  c->t_prev = c->have_ref ? c->t_ref : now;
  c->have_ref = 1;
  c->t_ref = now;
  if (c->calibrating) {
    hold(c, CAL_R_CALIBRATING);
    return;
  }
  if (!(value > 0.0) || !isfinite(value)) {
    /* One error code is a glitch of the switch or the exposure: nothing
       is used, the state changes after a few in a row. */
    if (++c->n_invalid >= CAL_MOVED_N || !c->have_eps)
      hold(c, CAL_R_INVALID);
    return;
  }
  c->n_invalid = 0;
  m = value / c->p.ref_thz - 1.0;
  c->measured = m;
  c->have_measured = 1;
  if (c->p.mode == CAL_MODE_WLMDATA || !c->have_eps) {
    if (fabs(mhz_of(c, m)) > c->p.tolerance_mhz) {
      hold(c, CAL_R_TOLERANCE);
      return;
    }
    if (c->p.mode == CAL_MODE_CORRECT) {
      c->have_eps = 1;
      c->eps = m;
      c->t_used = c->t_good = now;
    }
    c->state = CAL_TRACKING;
    c->reason = CAL_R_NONE;
    return;
  }

  /* How far the reference may be from the filter: its lag behind a drift
     at max_rate, plus the drift since the filter last followed freely (a
     hold), plus the noise. */
  rate_s = c->p.max_rate_mhz_per_min / 60.0;
  dt = now - c->t_used;
  if (dt < 0.0)
    dt = 0.0;
  band = CAL_NOISE_FLOOR_MHZ + rate_s * (c->p.tau_s + fmax(0.0, now - c->t_good));
  dev = fabs(mhz_of(c, m - c->eps));
  if (dev > band) {
    if (++c->n_out >= CAL_MOVED_N)
      hold(c, CAL_R_MOVED);
    return;
  }
  c->n_out = 0;
  if (fabs(mhz_of(c, m)) > c->p.tolerance_mhz) {
    hold(c, CAL_R_TOLERANCE);
    return;
  }
  /* First-order filter over dt, its step limited to max_rate over the time
     since the previous reference reading (not since the last one used: the
     seconds of a hold allow no jump), at most stale_s. */
  a = 1.0 - exp(-dt / c->p.tau_s);
  target = c->eps + (m - c->eps) * a;
  step = rate_s * fmin(fmin(dt, fmax(0.0, now - c->t_prev)), c->p.stale_s) /
         (c->p.ref_thz * 1e6);
  if (target > c->eps + step) {
    c->eps += step;
  } else if (target < c->eps - step) {
    c->eps -= step;
  } else {
    c->eps = target;
    c->t_good = now;
  }
  c->t_used = now;
  c->state = CAL_TRACKING;
  c->reason = CAL_R_NONE;
}

void
CAL_Check(CAL_Ctx *c, double now)
{
  if (c->calibrating)
    return;
  if (!c->have_ref) {
    if (c->state != CAL_HOLD)
      hold(c, CAL_R_WAITING);
    return;
  }
  if (now - c->t_ref > c->p.stale_s)
    hold(c, CAL_R_STALE);
}

void
CAL_SetCalibrating(CAL_Ctx *c, int on, double now)
{
  c->calibrating = on != 0;
  if (on) {
    hold(c, CAL_R_CALIBRATING);
  } else {
    /* The next reference reading decides; until then it is not fresh. */
    c->have_ref = 1;
    c->t_ref = now;
    hold(c, CAL_R_WAITING);
  }
}

int
CAL_Applies(const CAL_Ctx *c)
{
  return c && c->p.mode == CAL_MODE_CORRECT && c->have_eps;
}

double
CAL_Correct(const CAL_Ctx *c, double f)
{
  if (!CAL_Applies(c) || !(f > 0.0))
    return f;
  return f / (1.0 + c->eps);
}

void
CAL_GetReport(const CAL_Ctx *c, double now, CAL_Report *r)
{
  r->state = c->state;
  r->reason = c->reason;
  r->applies = CAL_Applies(c);
  if (c->p.mode == CAL_MODE_CORRECT) {
    r->eps = c->have_eps ? c->eps : 0.0;
    r->age_s = c->have_eps ? now - c->t_used : -1.0;
  } else {
    r->eps = c->have_measured ? c->measured : 0.0;
    r->age_s = c->have_ref ? now - c->t_ref : -1.0;
  }
  r->ppb = r->eps * 1e9;
  r->offset_mhz = mhz_of(c, r->eps);
  r->measured_mhz = c->have_measured ? mhz_of(c, c->measured) : (double)NAN;
}

void
CAL_Restore(CAL_Ctx *c, double eps, double age_s, double now)
{
  if (c->p.mode != CAL_MODE_CORRECT || !isfinite(eps) || fabs(eps) > 1e-3)
    return;
  if (!(age_s >= 0.0) || !isfinite(age_s))
    age_s = 0.0;
  c->have_eps = 1;
  c->eps = eps;
  c->t_used = c->t_good = now - age_s;
  c->n_out = 0;
  if (!c->have_ref)
    hold(c, CAL_R_WAITING);
}

const char *
CAL_StateName(CAL_StateId s)
{
  switch (s) {
  case CAL_TRACKING: return "tracking";
  case CAL_HOLD: return "hold";
  case CAL_OFF: break;
  }
  return "off";
}

const char *
CAL_ReasonName(CAL_Reason r)
{
  switch (r) {
  case CAL_R_WAITING: return "waiting";
  case CAL_R_INVALID: return "invalid";
  case CAL_R_STALE: return "stale";
  case CAL_R_TOLERANCE: return "tolerance";
  case CAL_R_MOVED: return "moved";
  case CAL_R_CALIBRATING: return "calibrating";
  case CAL_R_NONE: break;
  }
  return "none";
}
