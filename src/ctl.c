/* ctl.c - the daemon's control runtime: lasers, devices, cycles.
 *
 * Threads: the event loop owns every CTL_Laser field.  A cycle job (one per
 * laser, embedded in the laser, so the hot path allocates nothing) is handed
 * to the device thread of the laser's piezo actuator, and, when the current
 * actuator sits on another device, then to that device's thread.  While a job
 * is in flight the loop does not touch the job; the job carries a copy of the
 * PID state and everything it needs.  Finished jobs and device status changes
 * come back through a mutex-protected list and one pre-made event that the
 * device threads activate.
 *
 * Limits are enforced at the wire.  Each laser has two gates (piezo,
 * current) holding the actuator it may write now (device, register,
 * encoding) and the limits in force (run-time inside configured), updated
 * under ctx->lock whenever a `set`, a reload or a removal changes them.  A
 * device thread reads the gate under the lock right before each request
 * goes out (MB_WriteGated: after the wait for a shared RS-485 bus, for each
 * write of a multi-write job), clamps and encodes towards the inside of the
 * limits, and sends nothing to an actuator that moved.  Whatever was on the
 * wire before a limit narrowed is caught when the job comes back: an output
 * found outside the limits in force gets a corrective write at once.  Every
 * path (PID, hand-set, feed-forward, relock, restore, reload) writes
 * through this one gate.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "ctl.h"
#include "log.h"
#include "mbdev.h"
#include "regenc.h"
#include "util.h"
#include "prio.h"

enum { JOB_PID = 0, JOB_RELOCK, JOB_MANUAL, JOB_FF };

/* While a laser scans with feed-forward, its output follows the setpoint
   between readings too: a feed-forward write every CTL_SCAN_PERIOD_S (when
   no cycle is in flight), aimed at the setpoint CTL_FF_LEAD_S ahead (half
   a period: the middle of the time the value stays). */
#define CTL_SCAN_PERIOD_S 0.02
#define CTL_FF_LEAD_S (0.5 * CTL_SCAN_PERIOD_S + 0.002)

/* A tune sequence that has not ended after this long gives up. */
#define CTL_TUNE_TIMEOUT_S 120.0

/* One request's share of a job: which values it carries, to which device. */
typedef struct {
  struct CTL_Job *j;
  const MB_Device *mb;
  int piezo, current;
  double piezo_v, current_v;   /* the values asked for (clamped at each fill) */
} Fill;

typedef struct CTL_Job {
  struct CTL_Job *next;          /* result list link */
  CTL_Ctx *ctx;
  CTL_Laser *laser;
  int kind;
  int resume;                /* forget PID history before the step */
  int stage;                 /* 1: piezo device, 2: current device */
  PID_Params pp;
  PID_State pid;
  PID_State pid_before;
  double t, meas_mhz, sp_mhz;
  double ff_dv;              /* setpoint feed-forward: added to the integrator */
  double ff_target_mhz;      /* the setpoint the output answers after this job */
  double relock_v;
  int relock_set_current;    /* relock: write relock_current_v, not the feed-forward */
  double relock_current_v;
  /* Actuators the job was made for (copied so the job never reads the
     laser; the gates say at the wire whether they are still the laser's). */
  MB_Device *pdev, *cdev;    /* cdev NULL when no current actuator */
  int preg, creg;
  REG_Encoding penc, cenc;
  double ff, piezo_ref, current_ref;
  double clo, chi;                     /* runtime current limits */
  int has_current;
  int want_piezo, want_current;        /* manual: which outputs */
  double piezo_v, current_v;           /* values to write / written */
  /* Results. */
  int skipped;               /* PID refused the reading, or retargeted: nothing written */
  int retargeted;            /* the gate refused: a reload moved or removed an actuator */
  int recheck;               /* a gate changed while a write was on the wire */
  int piezo_ok, current_ok;  /* write acknowledged */
  int failed;                /* a write failed */
  int err;
  Fill last;                 /* the job's last write, made with MB_WriteLater */
} Job;

/* Where and within what one actuator may be written now; mb NULL: nowhere. */
typedef struct {
  const MB_Device *mb;
  int reg;
  REG_Encoding enc;
  double lo, hi;             /* limits in force: run-time inside configured */
} Gate;

struct CTL_Gates {
  Gate g[2];                 /* piezo, current; under ctx->lock */
  int reassert;              /* loop thread: 1 piezo, 2 current to write again once idle */
  int internal;              /* loop thread: 1 piezo, 2 current: the queued hand-set value
                                is the daemon's own (held, corrected), not a user's */
};

enum { GATE_PIEZO = 0, GATE_CURRENT = 1 };

/* Most hold inputs polled on one device. */
#define CTL_MAX_INPUTS 32

struct CTL_Device {
  CNF_Device cfg;
  MB_Device *mb;
  CTL_Ctx *ctx;
  int up;                    /* as seen by the loop */
  /* Written by the device thread under ctx->lock. */
  int status_dirty, status_up;
  int status_downs;          /* downs reported since the loop last looked */
  char status_why[96], down_why[96];
  int keep;                  /* reload bookkeeping */
  /* Hold inputs polled on this device (hold_input), under ctx->lock. */
  struct { int addr, coil, value; double edge_t; } in[CTL_MAX_INPUTS];
  int n_in;
  int in_dirty;              /* a value changed since the loop last looked */
};

struct CTL_Ctx {
  struct event_base *base;
  CTL_Hooks hooks;
  CTL_Laser **lasers;
  int n_lasers;
  /* channel -> lasers (indexes into lasers, -1 ends a chain), rebuilt by
     CTL_OnReading when chan_dirty is set (creation, reload). */
  int chan_first[CNF_MAX_CHANNEL + 1];
  int *chan_next;
  int chan_dirty;
  CTL_Device **devices;
  int n_devices;
  double stale_s;
  struct event *result_ev;
  pthread_mutex_t lock;
  Job *results, **results_tail;
  int started;
  /* Lasers dropped by a reload while a job was in flight. */
  CTL_Laser **zombies;
  int n_zombies;
  /* Devices dropped by a reload, stopped once no job in flight uses them. */
  CTL_Device **retiring;
  int n_retiring;
  struct event *scan_ev;       /* feed-forward writes of scanning lasers */
};

/* ------------------------------------------------------------------------ */

static double
clampd(double v, double lo, double hi)
{
  return v < lo ? lo : v > hi ? hi : v;
}

/* Setpoint changes are fed forward (a sensitivity is set). */
static int
ff_on(const CTL_Laser *l)
{
  return l->cfg.sensitivity_mhz_per_v != 0.0 && isfinite(l->cfg.sensitivity_mhz_per_v);
}

void
CTL_PidParams(const CTL_Laser *l, PID_Params *p)
{
  p->kp = l->cfg.kp;
  p->ki = l->cfg.ki;
  p->kd = l->cfg.kd;
  p->d_tau_s = l->cfg.d_tau_s;
  p->polarity = l->cfg.polarity;
  p->min_v = l->piezo_lo;
  p->max_v = l->piezo_hi;
  p->max_step_v = l->cfg.piezo.max_step_v;
  p->max_dt_s = l->cfg.max_dt_s;
}

static int
pid_params_equal(const PID_Params *a, const PID_Params *b)
{
  return a->kp == b->kp && a->ki == b->ki && a->kd == b->kd && a->d_tau_s == b->d_tau_s &&
         a->polarity == b->polarity && a->min_v == b->min_v && a->max_v == b->max_v &&
         a->max_step_v == b->max_step_v && a->max_dt_s == b->max_dt_s;
}

static void
lsr_params(const CTL_Ctx *ctx, const CTL_Laser *l, LSR_Params *p)
{
  p->window_mhz = l->cfg.window_mhz;
  p->capture_mhz = l->cfg.capture_mhz;
  p->modehop_mhz = l->cfg.modehop_mhz;
  p->lock_n = l->cfg.lock_n;
  p->unlock_m = l->cfg.unlock_m;
  p->stale_s = ctx->stale_s;
}

static void update_railed(CTL_Ctx *ctx, CTL_Laser *l, int cycle);
static void relock_state(CTL_Ctx *ctx, CTL_Laser *l, LSR_StateId from);

static void
set_state_hook(CTL_Ctx *ctx, CTL_Laser *l, LSR_StateId from)
{
  if (l->sm.state != from)
    relock_state(ctx, l, from);
  if (l->sm.state != from && ctx->hooks.state_changed)
    ctx->hooks.state_changed(l, from, ctx->hooks.arg);
  if (l->rail.railed && !LSR_Regulating(&l->sm))
    update_railed(ctx, l, 0);
}

/* Outputs at a limit of their run-time range: counted over the regulating
   cycles (cycle: a PID step was written), cleared when the laser stops
   regulating; a change is told through the railed hook. */
static void
update_railed(CTL_Ctx *ctx, CTL_Laser *l, int cycle)
{
  int was = l->rail.railed, changed;

  if (!LSR_Regulating(&l->sm)) {
    changed = LSR_RailClear(&l->rail);
  } else if (cycle) {
    int seen = LSR_RailObserve(l->piezo_v, l->piezo_lo, l->piezo_hi, LSR_RAIL_PIEZO_LOW,
                               LSR_RAIL_PIEZO_HIGH);
    if (l->current_dev)
      seen |= LSR_RailObserve(l->current_v, l->current_lo, l->current_hi,
                              LSR_RAIL_CURRENT_LOW, LSR_RAIL_CURRENT_HIGH);
    changed = LSR_RailCycle(&l->rail, seen);
  } else {
    return;
  }
  if (changed && ctx->hooks.railed)
    ctx->hooks.railed(l, was, ctx->hooks.arg);
}

static void
mark_dirty(CTL_Ctx *ctx)
{
  if (ctx->hooks.dirty)
    ctx->hooks.dirty(ctx->hooks.arg);
}

static CTL_Device *
find_device(CTL_Ctx *ctx, const char *name)
{
  for (int i = 0; i < ctx->n_devices; i++)
    if (strcmp(ctx->devices[i]->cfg.name, name) == 0)
      return ctx->devices[i];
  return NULL;
}

static int
laser_actuators_ok(const CTL_Laser *l)
{
  return l->piezo_dev->up && (!l->current_dev || l->current_dev->up);
}

/* ---- jobs: run on device threads --------------------------------------- */

static void post_result(Job *j);

static int
same_encoding(const REG_Encoding *a, const REG_Encoding *b)
{
  return a->format == b->format && a->order == b->order && a->scale == b->scale &&
         a->offset == b->offset;
}

static int
gate_is(const Gate *g, const MB_Device *mb, int reg, const REG_Encoding *enc)
{
  return g->mb && g->mb == mb && g->reg == reg && same_encoding(&g->enc, enc);
}

/* One value of a write, checked against its gate (ctx->lock held): the
   registers, and *v clamped to the limits in force; -1 if the actuator
   moved (retargeted) or no register code lies within the limits. */
static int
gate_put(Job *j, const Gate *g, const MB_Device *mb, int reg, const REG_Encoding *enc,
         double *v, uint16_t *regs)
{
  int n;

  if (!gate_is(g, mb, reg, enc)) {
    j->retargeted = 1;
    return -1;
  }
  *v = clampd(*v, g->lo, g->hi);
  n = REG_EncodeWithin(&g->enc, *v, g->lo, g->hi, regs, NULL);
  if (n < 0)
    j->err = ERANGE;
  return n;
}

/* MB_FillFn: the registers of one request, decided at the wire. */
static int
fill_cb(void *arg, int *addr, uint16_t regs[MB_MAX_WRITE])
{
  Fill *f = arg;
  Job *j = f->j;
  const CTL_Gates *gs = j->laser->gates;
  int n = 0, k = 0;

  pthread_mutex_lock(&j->ctx->lock);
  /* From the values asked for each time: a write filled again for a later
     request follows the limits in force then, narrower or wider. */
  if (f->piezo)
    j->piezo_v = f->piezo_v;
  if (f->current)
    j->current_v = f->current_v;
  if (f->piezo) {
    k = gate_put(j, &gs->g[GATE_PIEZO], f->mb, j->preg, &j->penc, &j->piezo_v, regs);
    *addr = j->preg;
    n = k;
  }
  if (k >= 0 && f->current) {
    k = gate_put(j, &gs->g[GATE_CURRENT], f->mb, j->creg, &j->cenc, &j->current_v, regs + n);
    if (!f->piezo)
      *addr = j->creg;
    n += k;
  }
  pthread_mutex_unlock(&j->ctx->lock);
  return k < 0 ? -1 : n;
}

/* After a write: whether the registers are still the laser's (a reload
   may have given one to another laser while the request was on the wire);
   if not, their new owners write theirs again.  (Limits narrowed meanwhile
   are caught by enforce_limits when the job is back.) */
static void
after_write(Job *j, const Fill *f)
{
  const CTL_Gates *gs = j->laser->gates;

  pthread_mutex_lock(&j->ctx->lock);
  if ((f->piezo && !gate_is(&gs->g[GATE_PIEZO], f->mb, j->preg, &j->penc)) ||
      (f->current && !gate_is(&gs->g[GATE_CURRENT], f->mb, j->creg, &j->cenc)))
    j->recheck = 1;
  pthread_mutex_unlock(&j->ctx->lock);
}

static void job_fail(Job *j);
static void job_refused(Job *j);

/* The outcome of one of j's requests: rc 0 when acknowledged, else -1
   with err. */
static int
job_written(Job *j, const Fill *f, int rc, int err)
{
  if (rc != 0) {
    errno = err;
    if (err == ECANCELED)
      job_refused(j);
    else
      job_fail(j);
    return -1;
  }
  after_write(j, f);
  if (f->piezo)
    j->piezo_ok = 1;
  if (f->current)
    j->current_ok = 1;
  return 0;
}

/* Write the piezo and/or current value of j in one request on io's device;
   0 when acknowledged. */
static int
job_write(MB_Io *io, Job *j, int piezo, int current)
{
  Fill f = { j, MB_IoDevice(io), piezo, current, j->piezo_v, j->current_v };
  int rc = MB_WriteGated(io, fill_cb, &f);

  return job_written(j, &f, rc, rc != 0 ? errno : 0);
}

/* MB_DoneFn of a job's last write. */
static void
last_done(MB_Io *io, void *arg, int rc, int err)
{
  Fill *f = arg;

  (void)io;
  job_written(f->j, f, rc, err);
  post_result(f->j);
}

/* The job's last write: it may share a request with other lasers' writes
   on the device (MB_WriteLater); the result goes to the loop once it is
   acknowledged or failed. */
static void
job_write_last(MB_Io *io, Job *j, int piezo, int current)
{
  j->last = (Fill){ j, MB_IoDevice(io), piezo, current, j->piezo_v, j->current_v };
  MB_WriteLater(io, fill_cb, last_done, &j->last);
}

static void
job_compute(Job *j)
{
  j->pid_before = j->pid;
  if (j->kind == JOB_RELOCK) {
    PID_Reset(&j->pid, &j->pp, j->relock_v);
  } else if (j->kind == JOB_PID) {
    if (j->resume)
      PID_Forget(&j->pid);
    /* The setpoint moved since the last cycle: the output moves with it
       through the sensitivity, from the integrator, so the step still
       goes through the limits and max_step_v of PID_Step. */
    if (j->ff_dv != 0.0)
      j->pid.integ = PID_Clamp(&j->pp, j->pid.integ + j->ff_dv);
    if (PID_Step(&j->pid, &j->pp, j->t, j->meas_mhz, j->sp_mhz) != 0) {
      j->skipped = 1;
      return;
    }
  } else if (j->kind == JOB_FF) {
    PID_Shift(&j->pid, &j->pp, j->ff_dv);
  }
  if (j->kind != JOB_MANUAL) {
    j->piezo_v = j->pid.out;
    j->want_piezo = 1;
    if (j->has_current) {
      if (j->relock_set_current)
        j->current_v = clampd(j->relock_current_v, j->clo, j->chi);
      else
        j->current_v = PID_FeedForward(j->piezo_v, j->piezo_ref, j->ff, j->current_ref,
                                       j->clo, j->chi);
      j->want_current = 1;
    }
  }
}

static void
job_fail(Job *j)
{
  j->failed = 1;
  j->err = errno;
  /* The piezo output did not move: neither does the PID.  If it did move
     (written before the current write failed), the PID keeps the output the
     device now holds, so the resume after the fault starts from there. */
  if (j->kind != JOB_MANUAL && !j->piezo_ok)
    j->pid = j->pid_before;
}

/* The gate refused a write (the actuator moved, or no register code lies
   within the limits): nothing of it went out.  A cycle whose piezo was not
   written leaves the PID as it was. */
static void
job_refused(Job *j)
{
  if (j->err == ERANGE)
    j->failed = 1;
  if (j->kind != JOB_MANUAL && !j->piezo_ok) {
    j->pid = j->pid_before;
    j->skipped = 1;
  }
}

static void
job_fn(MB_Io *io, void *arg)
{
  Job *j = arg;
  const MB_Device *mb = MB_IoDevice(io);

  if (j->stage == 1) {
    int current_here;

    job_compute(j);
    if (j->skipped)
      goto done;
    current_here = j->want_current && j->cdev == mb;
    if (j->want_piezo) {
      /* Adjacent registers on one device: one request (function 16). */
      int both = current_here && j->creg == j->preg + REG_Count(&j->penc);

      if (both || !j->want_current) {
        job_write_last(io, j, 1, both);
        return;
      }
      if (job_write(io, j, 1, 0) != 0)
        goto done;
    }
    if (j->want_current) {
      if (current_here) {
        job_write_last(io, j, 0, 1);
        return;
      }
      j->stage = 2;
      if (MB_Submit(j->cdev, job_fn, j) == 0)
        return;
      errno = ESHUTDOWN;
      job_fail(j);
    }
    goto done;
  }

  /* Stage 2: the current actuator on its own device. */
  job_write_last(io, j, 0, 1);
  return;

done:
  post_result(j);
}

static void
post_result(Job *j)
{
  CTL_Ctx *ctx = j->ctx;
  int first;

  pthread_mutex_lock(&ctx->lock);
  j->next = NULL;
  first = ctx->results == NULL;   /* else the loop has been woken already */
  *ctx->results_tail = j;
  ctx->results_tail = &j->next;
  pthread_mutex_unlock(&ctx->lock);
  if (first)
    event_active(ctx->result_ev, EV_READ, 0);
}

static void
device_status_cb(MB_Device *mb, int up, const char *why, void *arg)
{
  CTL_Device *d = arg;
  CTL_Ctx *ctx = d->ctx;

  (void)mb;
  pthread_mutex_lock(&ctx->lock);
  d->status_dirty = 1;
  d->status_up = up;
  UTL_Strlcpy(d->status_why, why ? why : "", sizeof d->status_why);
  if (!up) {
    d->status_downs++;
    UTL_Strlcpy(d->down_why, why ? why : "", sizeof d->down_why);
  }
  pthread_mutex_unlock(&ctx->lock);
  event_active(ctx->result_ev, EV_READ, 0);
}

/* Hold inputs (device thread): read each input of the device's list and
   tell the loop about a changed level. */
static void
input_poll(MB_Io *io, void *arg)
{
  CTL_Device *d = arg;
  CTL_Ctx *ctx = d->ctx;
  struct { int addr, coil; } want[CTL_MAX_INPUTS];
  int n, changed = 0;

  pthread_mutex_lock(&ctx->lock);
  n = d->n_in;
  for (int i = 0; i < n; i++) {
    want[i].addr = d->in[i].addr;
    want[i].coil = d->in[i].coil;
  }
  pthread_mutex_unlock(&ctx->lock);
  for (int i = 0; i < n; i++) {
    int v;

    if (MB_ReadBit(io, want[i].addr, want[i].coil, &v) != 0)
      return;                   /* the device is down now: kept as last read */
    pthread_mutex_lock(&ctx->lock);
    if (i < d->n_in && d->in[i].addr == want[i].addr && d->in[i].coil == want[i].coil &&
        d->in[i].value != v) {
      d->in[i].value = v;
      d->in[i].edge_t = UTL_Now();
      d->in_dirty = 1;
      changed = 1;
    }
    pthread_mutex_unlock(&ctx->lock);
  }
  if (changed)
    event_active(ctx->result_ev, EV_READ, 0);
}

/* ---- loop side ---------------------------------------------------------- */

/* Queue a hand-set output (clamped to the limits in force); kick() sends it.
   internal: the daemon's own (a held output re-asserted, a correction),
   which a user's value still in flight may replace. */
static void
queue_output_(CTL_Laser *l, int has_piezo, double piezo_v, int has_current, double current_v,
              int internal)
{
  if (has_piezo) {
    l->manual_has_piezo = 1;
    l->manual_piezo = clampd(piezo_v, l->piezo_lo, l->piezo_hi);
    l->gates->internal = internal ? l->gates->internal | 1 : l->gates->internal & ~1;
  }
  if (has_current && l->current_dev) {
    l->manual_has_current = 1;
    l->manual_current = clampd(current_v, l->current_lo, l->current_hi);
    l->gates->internal = internal ? l->gates->internal | 2 : l->gates->internal & ~2;
  }
  l->manual_pending = l->manual_has_piezo || l->manual_has_current;
}

static void
queue_output(CTL_Laser *l, int has_piezo, double piezo_v, int has_current, double current_v)
{
  queue_output_(l, has_piezo, piezo_v, has_current, current_v, 1);
}

/* Publish where and within what l's actuators may be written now (after
   any change of limits, actuators or removal). */
static void
gates_sync(CTL_Ctx *ctx, CTL_Laser *l)
{
  Gate g[2];

  memset(g, 0, sizeof g);
  if (!l->removed && l->piezo_dev) {
    g[GATE_PIEZO].mb = l->piezo_dev->mb;
    g[GATE_PIEZO].reg = l->cfg.piezo.reg;
    g[GATE_PIEZO].enc = l->cfg.piezo.enc;
    g[GATE_PIEZO].lo = fmax(l->piezo_lo, l->cfg.piezo.min_v);
    g[GATE_PIEZO].hi = fmin(l->piezo_hi, l->cfg.piezo.max_v);
  }
  if (!l->removed && l->current_dev) {
    g[GATE_CURRENT].mb = l->current_dev->mb;
    g[GATE_CURRENT].reg = l->cfg.current.reg;
    g[GATE_CURRENT].enc = l->cfg.current.enc;
    g[GATE_CURRENT].lo = fmax(l->current_lo, l->cfg.current.min_v);
    g[GATE_CURRENT].hi = fmin(l->current_hi, l->cfg.current.max_v);
  }
  pthread_mutex_lock(&ctx->lock);
  memcpy(l->gates->g, g, sizeof g);
  pthread_mutex_unlock(&ctx->lock);
}

static int
outside(double v, double lo, double hi)
{
  return !(v >= lo && v <= hi);
}

/* An idle laser whose outputs are outside the limits in force (narrowed
   while a write was on the wire, or by a reload) gets a corrective write
   now.  While a job is in flight the stored outputs are stale: its return
   checks again.  The caller kicks. */
static void
enforce_limits(CTL_Laser *l)
{
  int p, c;

  if (l->busy || l->removed)
    return;
  p = outside(l->piezo_v, l->piezo_lo, l->piezo_hi);
  c = l->current_dev && outside(l->current_v, l->current_lo, l->current_hi);
  if (!p && !c)
    return;
  l->corrections++;
  if (p)
    log_warn("laser %s: piezo output %.6f V is outside %.6f..%.6f V now: corrected",
             l->cfg.name, l->piezo_v, l->piezo_lo, l->piezo_hi);
  if (c)
    log_warn("laser %s: current output %.6f V is outside %.6f..%.6f V now: corrected",
             l->cfg.name, l->current_v, l->current_lo, l->current_hi);
  /* A newer hand-set value already waiting is clamped at submit. */
  queue_output(l, p && !l->manual_has_piezo, l->piezo_v, c && !l->manual_has_current,
               l->current_v);
}

static void kick(CTL_Ctx *ctx, CTL_Laser *l);

/* Write again the outputs marked for it, unless a newer value waits. */
static void
reassert_outputs(CTL_Laser *l)
{
  int r = l->gates->reassert;

  l->gates->reassert = 0;
  queue_output(l, (r & 1) && !l->manual_has_piezo, l->piezo_v,
               (r & 2) && !l->manual_has_current, l->current_v);
}

/* A write went out while its register changed hands (a reload on the way):
   whoever owns that register now has its own output written again (kicked
   unless it is self, whose caller kicks). */
static void
reassert_register(CTL_Ctx *ctx, const MB_Device *mb, int reg, const CTL_Laser *self)
{
  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    int p = l->piezo_dev && l->piezo_dev->mb == mb && l->cfg.piezo.reg == reg;
    int c = l->current_dev && l->current_dev->mb == mb && l->cfg.current.reg == reg;

    if (p || c) {
      log_warn("laser %s: register %d was written by another laser's job during a reload: "
               "its output is written again", l->cfg.name, reg);
      l->corrections++;
      l->gates->reassert |= (p ? 1 : 0) | (c ? 2 : 0);
      if (!l->busy)
        reassert_outputs(l);
      if (l != self)
        kick(ctx, l);
    }
  }
}

static int
submit(CTL_Ctx *ctx, CTL_Laser *l, int kind, const WM_Reading *r, int resume)
{
  Job *j = l->job;
  MB_Device *first;

  memset(j, 0, sizeof *j);
  j->ctx = ctx;
  j->laser = l;
  j->kind = kind;
  j->stage = 1;
  CTL_PidParams(l, &j->pp);
  j->pid = l->pid;
  j->pdev = l->piezo_dev->mb;
  j->preg = l->cfg.piezo.reg;
  j->penc = l->cfg.piezo.enc;
  j->has_current = l->current_dev != NULL;
  if (j->has_current) {
    j->cdev = l->current_dev->mb;
    j->creg = l->cfg.current.reg;
    j->cenc = l->cfg.current.enc;
    j->ff = l->cfg.current.feedforward;
    if (l->ff_ref != l->cfg.current.feedforward) {
      /* The ratio changed (set, reload): the new line goes through the
         present outputs, so the current does not step. */
      l->piezo_ref_v = l->piezo_v;
      l->current_ref_v = l->current_v;
      l->ff_ref = l->cfg.current.feedforward;
    }
    j->piezo_ref = l->piezo_ref_v;
    j->current_ref = l->current_ref_v;
    j->clo = l->current_lo;
    j->chi = l->current_hi;
  }
  /* JOB_RELOCK: back to the last good output, or a relock search's point. */
  j->relock_v = l->search_write ? l->search_piezo : l->last_good_v;
  j->relock_set_current = l->search_write;
  j->relock_current_v = l->search_current;
  l->search_write = 0;
  j->resume = resume;
  if (r) {
    j->t = r->t_s >= 0.0 ? r->t_s : r->rx_s;
    j->meas_mhz = r->value * 1e6;
    j->sp_mhz = l->setpoint_thz * 1e6;
    j->ff_target_mhz = j->sp_mhz;
    if (ff_on(l) && l->ff_have && l->pid.have_last && !resume) {
      /* The reading shows the laser answering the setpoint the output was
         fed forward to (ff_sp_mhz): that is what the PID corrects; the
         move to the new setpoint is the feed-forward's.  So a step or a
         scan gives the PID no error of its own to react to. */
      j->sp_mhz = l->ff_sp_mhz;
      if (l->scan.active) {
        /* Scanning, the output follows the setpoint between readings too:
           the reading shows the laser at the setpoint of the time it
           arrived (not of now: the loop may have been busy meanwhile). */
        j->ff_target_mhz = SCN_Setpoint(&l->scan, UTL_Now() + CTL_FF_LEAD_S) * 1e6;
        j->sp_mhz = SCN_Setpoint(&l->scan, r->rx_s) * 1e6;
      }
      j->ff_dv = SCN_FeedForwardV(j->ff_target_mhz - l->ff_sp_mhz,
                                  l->cfg.sensitivity_mhz_per_v, l->cfg.polarity);
    }
  }
  if (kind == JOB_FF) {
    j->ff_dv = l->ff_next_dv;
    j->ff_target_mhz = l->ff_next_mhz;
  }
  if (kind == JOB_MANUAL) {
    j->want_piezo = l->manual_has_piezo;
    j->piezo_v = clampd(l->manual_piezo, l->piezo_lo, l->piezo_hi);
    j->want_current = j->has_current && l->manual_has_current;
    j->current_v = j->has_current ? clampd(l->manual_current, l->current_lo, l->current_hi) : 0.0;
    l->manual_pending = 0;
    l->manual_has_piezo = l->manual_has_current = 0;
    l->gates->internal = 0;
    if (!j->want_piezo && !j->want_current)
      return 0;
  }
  first = (kind == JOB_MANUAL && !j->want_piezo) ? j->cdev : j->pdev;
  if (kind == JOB_MANUAL && !j->want_piezo)
    j->stage = 2;
  l->busy = 1;
  if (MB_Submit(first, job_fn, j) != 0) {
    char buf[128];

    l->busy = 0;
    l->write_errors++;
    log_warn("laser %s: cannot queue a write: %s", l->cfg.name,
             MB_StrError(errno, buf, sizeof buf));
    if (kind == JOB_MANUAL) {
      /* Keep the hand-set output for the next try (kick). */
      l->manual_pending = 1;
      l->manual_has_piezo = j->want_piezo;
      l->manual_piezo = j->piezo_v;
      l->manual_has_current = j->want_current;
      l->manual_current = j->current_v;
    }
    return -1;
  }
  return 0;
}

static void process_reading(CTL_Ctx *ctx, CTL_Laser *l, const WM_Reading *r);

/* Start whatever waits for an idle laser: a manual write first, then the
   latest reading. */
static void
kick(CTL_Ctx *ctx, CTL_Laser *l)
{
  /* Before CTL_Start (the state file being restored) only the values are
     set; CTL_Start kicks every laser. */
  if (l->busy || l->removed || !ctx->started)
    return;
  if (l->manual_pending) {
    submit(ctx, l, JOB_MANUAL, NULL, 0);
    if (l->busy)
      return;
  }
  if (l->have_pending) {
    WM_Reading r = l->pending;
    l->have_pending = 0;
    process_reading(ctx, l, &r);
  }
}

static void
datalog_write(CTL_Laser *l)
{
  struct timespec ts;

  if (!l->datalog)
    return;
  clock_gettime(CLOCK_REALTIME, &ts);
  fprintf(l->datalog, "%.3f %.9f %.4f %.6f %.6f %s\n",
          (double)ts.tv_sec + ts.tv_nsec * 1e-9,
          l->have_reading ? l->last.value : 0.0, l->last_error_mhz,
          l->piezo_v, l->current_dev ? l->current_v : 0.0, LSR_StateName(l->sm.state));
}

/* End a tune sequence with an error (rc -1) or its result. */
static void
tune_end(CTL_Laser *l, int rc, int code, const char *why, const TUN_Result *r)
{
  CTL_TuneDone done = l->tune_done;

  l->tune.active = 0;
  l->tune_done = NULL;
  if (rc != 0)
    log_info("laser %s: tune ended: %s", l->cfg.name, why);
  if (done)
    done(l, rc, code, why, r, l->tune_arg);
}

static void
free_laser(CTL_Laser *l)
{
  if (l->tune.active)
    tune_end(l, -1, 503, "the laser was removed", NULL);
  if (l->datalog)
    fclose(l->datalog);
  free(l->job);
  free(l->gates);
  free(l->status_memo);
  free(l);
}

static void
finish_job(CTL_Ctx *ctx, Job *j)
{
  CTL_Laser *l = j->laser;

  l->busy = 0;
  if (j->recheck) {
    if (j->piezo_ok)
      reassert_register(ctx, j->pdev, j->preg, l);
    if (j->current_ok)
      reassert_register(ctx, j->cdev, j->creg, l);
  }
  if (l->removed) {
    /* The laser was dropped by a reload; free it now that it is idle. */
    for (int i = 0; i < ctx->n_zombies; i++) {
      if (ctx->zombies[i] == l) {
        ctx->zombies[i] = ctx->zombies[ctx->n_zombies - 1];
        ctx->n_zombies--;
        free_laser(l);
        break;
      }
    }
    return;
  }
  if (j->kind != JOB_MANUAL) {
    PID_Params now;

    l->pid = j->pid;
    if (l->forget_pid)
      PID_Forget(&l->pid);
    /* Gains or limits changed while the cycle was in flight: the job's PID
       state was computed with the old ones, so make it bumpless now (an
       idle laser was retuned when they changed). */
    CTL_PidParams(l, &now);
    if (!pid_params_equal(&now, &j->pp))
      PID_Retune(&l->pid, &j->pp, &now);
  }
  if (j->piezo_ok)
    l->piezo_v = j->piezo_v;
  if (j->current_ok)
    l->current_v = j->current_v;
  if ((j->kind == JOB_PID || j->kind == JOB_FF) && !j->skipped && (j->piezo_ok || !j->failed)) {
    /* the output now answers this setpoint: the next feed-forward is
       relative to it */
    l->ff_sp_mhz = j->ff_target_mhz;
    l->ff_have = 1;
  } else if (j->kind == JOB_RELOCK || j->kind == JOB_MANUAL) {
    l->ff_have = 0;
  }
  update_railed(ctx, l, j->kind == JOB_PID && !j->skipped && !j->failed);
  if (j->kind == JOB_MANUAL && (j->piezo_ok || j->current_ok)) {
    /* A hand-set output is where regulation and feed-forward start from. */
    l->pid.out = l->piezo_v;
    l->pid.integ = l->piezo_v;
    l->piezo_ref_v = l->piezo_v;
    l->current_ref_v = l->current_v;
    mark_dirty(ctx);
  } else if (j->piezo_ok && l->pid.out != l->piezo_v) {
    /* The gate clamped the cycle's output (limits narrowed while it was in
       flight): the PID goes on from what was written. */
    PID_Params now;

    CTL_PidParams(l, &now);
    l->pid.out = l->piezo_v;
    PID_Retune(&l->pid, &now, &now);
  }
  if (j->failed) {
    char buf[128];
    l->write_errors++;
    log_debug("laser %s: write failed: %s", l->cfg.name, MB_StrError(j->err, buf, sizeof buf));
  } else if (!j->skipped && j->kind != JOB_FF) {
    l->cycles++;
    if (l->sm.state == LSR_LOCKED)
      l->last_good_v = l->piezo_v;
    datalog_write(l);
  }
  l->forget_pid = 0;
  if (j->retargeted && j->kind == JOB_MANUAL) {
    /* A hand-set output the reload kept from its moved actuator goes to the
       new one, unless a newer one waits already. */
    int own = l->gates->internal;
    int piezo = j->want_piezo && !j->piezo_ok && (!l->manual_has_piezo || (own & 1));
    int current = j->want_current && !j->current_ok && (!l->manual_has_current || (own & 2));

    queue_output_(l, piezo, j->piezo_v, current, j->current_v, 0);
  }
  if (l->gates->reassert)
    reassert_outputs(l);
  enforce_limits(l);
  kick(ctx, l);      /* last: this may reuse j */
}

static void
apply_device_status(CTL_Ctx *ctx, CTL_Device *d, int up, const char *why)
{
  if (d->up == up)
    return;
  d->up = up;
  if (up)
    log_info("device %s is up", d->cfg.name);
  else
    log_warn("device %s is down: %s", d->cfg.name, why);
  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    if (l->piezo_dev != d && l->current_dev != d)
      continue;
    LSR_StateId from = l->sm.state;
    int ok = laser_actuators_ok(l);
    LSR_OnActuator(&l->sm, ok);
    if (ok) {
      /* Resume bumplessly from the held output: forget the old history. */
      PID_Forget(&l->pid);
      if (!LSR_Regulating(&l->sm) || l->sm.state == LSR_OFF) {
        /* Re-assert the held outputs once the device answers again. */
        l->manual_pending = 1;
        l->manual_has_piezo = 1;
        l->manual_piezo = l->piezo_v;
        l->manual_has_current = l->current_dev != NULL;
        l->manual_current = l->current_v;
        kick(ctx, l);
      }
    }
    set_state_hook(ctx, l, from);
  }
}

static void inputs_changed(CTL_Ctx *ctx);

static void
result_cb(evutil_socket_t fd, short what, void *arg)
{
  CTL_Ctx *ctx = arg;
  Job *list;

  (void)fd;
  (void)what;
  PRI_Enter(ctx->result_ev);
  pthread_mutex_lock(&ctx->lock);
  list = ctx->results;
  ctx->results = NULL;
  ctx->results_tail = &ctx->results;
  /* A device that went down and came back up again before this round is
     handled as down, then up: its lasers fault, forget their history and
     have their outputs asserted again. */
  struct { CTL_Device *d; int up, downs; char why[96], down_why[96]; } st[64];
  int nst = 0, more = 0;
  for (int i = 0; i < ctx->n_devices; i++) {
    if (nst == 64) {
      more = 1;   /* the rest on the next round */
      break;
    }
    CTL_Device *d = ctx->devices[i];
    if (d->status_dirty) {
      d->status_dirty = 0;
      st[nst].d = d;
      st[nst].up = d->status_up;
      st[nst].downs = d->status_downs;
      d->status_downs = 0;
      memcpy(st[nst].why, d->status_why, sizeof st[nst].why);
      memcpy(st[nst].down_why, d->down_why, sizeof st[nst].down_why);
      nst++;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  if (more)
    event_active(ctx->result_ev, EV_READ, 0);

  for (int i = 0; i < nst; i++) {
    if (st[i].up && st[i].downs > 0)
      apply_device_status(ctx, st[i].d, 0, st[i].down_why);
    apply_device_status(ctx, st[i].d, st[i].up, st[i].why);
  }
  inputs_changed(ctx);
  while (list) {
    Job *next = list->next;
    finish_job(ctx, list);
    list = next;
  }
}

/* ---- hold (DESIGN.md section 8) ----------------------------------------- */

/* Apply hold_cmd / hold_in to the state machine. */
static void
hold_apply(CTL_Ctx *ctx, CTL_Laser *l)
{
  LSR_StateId from = l->sm.state;
  int on = l->hold_cmd || l->hold_in;

  if (on == l->sm.held)
    return;
  if (on)
    l->holds++;
  LSR_Hold(&l->sm, on, UTL_Now());
  if (!on) {
    /* Resume from the held output: the next cycle only records history. */
    if (l->busy)
      l->forget_pid = 1;
    else
      PID_Forget(&l->pid);
  }
  set_state_hook(ctx, l, from);
}

void
CTL_Hold(CTL_Ctx *ctx, CTL_Laser *l, int on, double seconds)
{
  l->hold_cmd = on ? 1 : 0;
  l->hold_until = on && seconds > 0.0 ? UTL_Now() + seconds : 0.0;
  hold_apply(ctx, l);
}

const char *
CTL_HoldReason(const CTL_Laser *l)
{
  if (l->hold_cmd)
    return "hold";
  if (l->hold_in)
    return "hold_input";
  return NULL;
}

/* The hold input of l read level value (edge read at edge_t). */
static void
hold_input_level(CTL_Ctx *ctx, CTL_Laser *l, int value, double edge_t)
{
  int active = value >= 0 && (value ^ l->cfg.hold_input.active_low);

  if (value == l->hold_in_value)
    return;
  l->hold_in_value = value;
  l->hold_in_edge_t = edge_t;
  if (active == l->hold_in)
    return;
  l->hold_in = active;
  log_info("laser %s: hold input %s %d is %s: %s", l->cfg.name,
           l->cfg.hold_input.coil ? "coil" : "discrete input", l->cfg.hold_input.addr,
           value ? "high" : "low", active ? "held" : "released");
  hold_apply(ctx, l);
}

/* The devices' hold input lists from the lasers' hold_input (after create
   or reload); levels of inputs that stay are kept. */
static void
inputs_sync(CTL_Ctx *ctx)
{
  for (int k = 0; k < ctx->n_devices; k++) {
    CTL_Device *d = ctx->devices[k];
    struct { int addr, coil, value; double edge_t; } in[CTL_MAX_INPUTS];
    int n = 0;
    double poll_s = 0.0;

    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->n_lasers; i++) {
      const CNF_HoldInput *h = &ctx->lasers[i]->cfg.hold_input;
      int j;

      if (!h->present || strcmp(h->device, d->cfg.name) != 0)
        continue;
      if (poll_s <= 0.0 || h->poll_s < poll_s)
        poll_s = h->poll_s;
      for (j = 0; j < n; j++)
        if (in[j].addr == h->addr && in[j].coil == h->coil)
          break;
      if (j < n || n == CTL_MAX_INPUTS)
        continue;
      in[n].addr = h->addr;
      in[n].coil = h->coil;
      in[n].value = -1;
      in[n].edge_t = 0.0;
      for (int o = 0; o < d->n_in; o++)
        if (d->in[o].addr == h->addr && d->in[o].coil == h->coil) {
          in[n].value = d->in[o].value;
          in[n].edge_t = d->in[o].edge_t;
        }
      n++;
    }
    memcpy(d->in, in, sizeof in[0] * (size_t)n);
    d->n_in = n;
    pthread_mutex_unlock(&ctx->lock);
    MB_SetPoll(d->mb, n ? poll_s : 0.0, n ? input_poll : NULL, d);
  }
  /* A laser whose hold input went away is released from it. */
  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];

    if (!l->cfg.hold_input.present && (l->hold_in || l->hold_in_value >= 0)) {
      l->hold_in_value = -1;
      l->hold_in = 0;
      hold_apply(ctx, l);
    }
  }
}

/* New levels from the devices' polls, to the lasers. */
static void
inputs_changed(CTL_Ctx *ctx)
{
  for (int k = 0; k < ctx->n_devices; k++) {
    CTL_Device *d = ctx->devices[k];
    struct { int addr, coil, value; double edge_t; } in[CTL_MAX_INPUTS];
    int n;

    pthread_mutex_lock(&ctx->lock);
    n = d->in_dirty ? d->n_in : 0;
    d->in_dirty = 0;
    memcpy(in, d->in, sizeof in[0] * (size_t)n);
    pthread_mutex_unlock(&ctx->lock);
    for (int j = 0; j < n; j++)
      for (int i = 0; i < ctx->n_lasers; i++) {
        CTL_Laser *l = ctx->lasers[i];
        const CNF_HoldInput *h = &l->cfg.hold_input;

        if (h->present && h->addr == in[j].addr && h->coil == in[j].coil &&
            strcmp(h->device, d->cfg.name) == 0)
          hold_input_level(ctx, l, in[j].value, in[j].edge_t);
      }
  }
}

static void
advance_ramp(CTL_Ctx *ctx, CTL_Laser *l, double now)
{
  if (l->scan.active) {
    l->setpoint_thz = SCN_Setpoint(&l->scan, now);
    if (SCN_Done(&l->scan, now)) {
      l->scan.active = 0;
      log_info("laser %s: scan done, setpoint back at %.9f THz", l->cfg.name, l->setpoint_thz);
      mark_dirty(ctx);
    }
  }
  if (!l->ramp.active)
    return;
  l->setpoint_thz = LSR_RampAdvance(&l->ramp, now);
  if (!l->ramp.active)
    mark_dirty(ctx);
}

/* ---- relock search (DESIGN.md section 8; the grid is relock.c's) ------- */

static void
relock_event(CTL_Ctx *ctx, CTL_Laser *l, const char *what)
{
  if (ctx->hooks.relock)
    ctx->hooks.relock(l, what, ctx->hooks.arg);
}

/* End a search in progress, telling why. */
static void
search_end(CTL_Ctx *ctx, CTL_Laser *l, const char *what)
{
  if (!l->search.active)
    return;
  RLK_Stop(&l->search);
  l->search_write = 0;
  log_info("laser %s: relock search %s at step %d (pass %d), piezo %.6f V", l->cfg.name, what,
           l->search.step, l->search.pass, l->piezo_v);
  relock_event(ctx, l, what);
}

/* The state changed: relocking entered starts the wait for the search;
   left, it ends the search (found: PID goes on from the point, so the
   feed-forward line goes through it, the current step kept). */
static void
relock_state(CTL_Ctx *ctx, CTL_Laser *l, LSR_StateId from)
{
  if (l->sm.state == LSR_RELOCKING) {
    l->relock_t0 = UTL_Now();
    return;
  }
  if (from != LSR_RELOCKING || !l->search.active)
    return;
  if (LSR_Regulating(&l->sm)) {
    l->piezo_ref_v = l->piezo_v;
    l->current_ref_v = l->current_v;
    l->ff_ref = l->cfg.current.feedforward;
    search_end(ctx, l, "found");
  } else {
    search_end(ctx, l, "stopped");
  }
}

/* A lock, unlock or setpoint change while relocking: the search (if any)
   ends, and the wait for the next one starts again. */
static void
relock_restart(CTL_Ctx *ctx, CTL_Laser *l)
{
  search_end(ctx, l, "stopped");
  if (l->sm.state == LSR_RELOCKING)
    l->relock_t0 = UTL_Now();
}

/* A valid reading still beyond capture while relocking (the laser idle):
   after relock.after_s, the search's next write, through the relock job and
   its gates like every other write. */
static void
relock_search(CTL_Ctx *ctx, CTL_Laser *l, double now)
{
  const CNF_Relock *rc = &l->cfg.relock;
  RLK_Limits lim = { l->piezo_lo, l->piezo_hi, l->current_lo, l->current_hi };
  double pv, cv;
  RLK_Action a;

  if (!l->search.active) {
    RLK_Params p;
    double c0 = 0.0;

    if (now - l->relock_t0 < rc->after_s)
      return;
    memset(&p, 0, sizeof p);
    p.piezo_span_v = rc->piezo_span_v;
    p.piezo_step_v = rc->piezo_step_v;
    p.current_span_v = rc->current_span_v;
    p.current_step_v = rc->current_step_v;
    p.settle_readings = rc->settle_readings;
    p.tries = rc->tries;
    p.piezo_max_step_v = l->cfg.piezo.max_step_v;
    p.has_current = l->current_dev != NULL;
    if (p.has_current) {
      p.current_max_step_v = l->cfg.current.max_step_v;
      p.feedforward = l->cfg.current.feedforward;
      /* the current the relock job wrote with the last good piezo */
      c0 = PID_FeedForward(l->last_good_v, l->piezo_ref_v, l->cfg.current.feedforward,
                           l->current_ref_v, l->current_lo, l->current_hi);
    }
    if (RLK_Start(&l->search, &p, l->last_good_v, c0, l->piezo_v, l->current_v) < 0)
      return;                       /* no span: wait at the last good output */
    l->searches++;
    log_info("laser %s: relock search from piezo %.6f V (%d points, %d passes)",
             l->cfg.name, l->last_good_v, RLK_PointCount(&l->search), l->search.p.tries);
    relock_event(ctx, l, "start");
  }
  a = RLK_OnReading(&l->search, &lim, &pv, &cv);
  if (a == RLK_WAIT)
    return;
  l->search_write = 1;
  l->search_piezo = pv;
  l->search_current = cv;
  if (a == RLK_STEP)
    relock_event(ctx, l, "step");
  submit(ctx, l, JOB_RELOCK, NULL, 0);
  if (a == RLK_FAILED) {
    LSR_StateId from = l->sm.state;

    l->relock_failures++;
    log_warn("laser %s: relock failed after %d passes (%d steps): fault, output back at "
             "%.6f V", l->cfg.name, l->search.pass, l->search.step, pv);
    relock_event(ctx, l, "failed");
    LSR_RelockFailed(&l->sm);
    set_state_hook(ctx, l, from);
  }
}

static void
process_reading(CTL_Ctx *ctx, CTL_Laser *l, const WM_Reading *r)
{
  LSR_Params lp;
  int valid = r->value > 0.0;
  double t = r->t_s >= 0.0 ? r->t_s : r->rx_s;
  double meas_mhz = r->value * 1e6;
  double sp_mhz;
  LSR_StateId from = l->sm.state;
  LSR_Action act;
  int resume = 0;

  advance_ramp(ctx, l, r->rx_s);
  sp_mhz = l->setpoint_thz * 1e6;
  lsr_params(ctx, l, &lp);
  if (valid && l->last_used_t >= 0.0) {
    if (t == l->last_used_t)
      return;                       /* the same reading again: never used twice */
    if (t < l->last_used_t)
      resume = 1;                   /* the wavemeter's clock restarted */
  }
  act = LSR_OnReading(&l->sm, &lp, r->rx_s, valid, meas_mhz, meas_mhz - sp_mhz);
  set_state_hook(ctx, l, from);

  if (act == LSR_ACT_RELOCK) {
    submit(ctx, l, JOB_RELOCK, NULL, 0);
    return;
  }
  if (act == LSR_ACT_NONE && valid && l->sm.state == LSR_RELOCKING) {
    relock_search(ctx, l, r->rx_s);
    return;
  }
  if (act == LSR_ACT_NONE || !valid)
    return;
  /* REGULATE or RESUME (which first forgets the PID history). */
  l->last_used_t = t;
  submit(ctx, l, JOB_PID, r, resume || act == LSR_ACT_RESUME);
}

/* A reading that passed the glitch filter: a cycle now, or the slot. */
static void
take_reading(CTL_Ctx *ctx, CTL_Laser *l, const WM_Reading *r)
{
  if (l->busy || l->manual_pending) {
    if (l->have_pending)
      l->coalesced++;
    l->pending = *r;
    l->have_pending = 1;
    if (!l->busy)
      kick(ctx, l);
    return;
  }
  process_reading(ctx, l, r);
}

/* Glitch rejection (glitch.h): a far reading waits in l->glitch_held for
   the next valid one; the readings it lets through go on in their order,
   each with its own time stamp.  A held reading shows the laser is being
   read, so it keeps the lock state machine from calling the laser stale. */
static void
filter_reading(CTL_Ctx *ctx, CTL_Laser *l, const WM_Reading *r)
{
  int valid = r->value > 0.0;
  int what;

  GLT_Expect(&l->glitch, l->setpoint_thz * 1e6);   /* the first reading: near the setpoint? */
  what = GLT_Feed(&l->glitch, l->cfg.glitch_mhz, valid, r->value * 1e6);

  if (what & GLT_DROP_HELD)
    log_info("laser %s: glitch dropped: %.9f THz, %.0f MHz from the readings around it "
             "(%lu so far)", l->cfg.name, l->glitch_held.value,
             (l->glitch_held.value - r->value) * 1e6, l->glitch.glitches);
  if (what & GLT_USE_HELD) {
    WM_Reading held = l->glitch_held;
    take_reading(ctx, l, &held);
  }
  if (what & GLT_USE)
    take_reading(ctx, l, r);
  if (what & GLT_HOLD) {
    l->glitch_held = *r;
    if (r->rx_s > l->sm.last_valid_t)
      l->sm.last_valid_t = r->rx_s;
  }
}

/* ---- tune (tune.h): the steps go out as hand-set outputs ---------------- */

static void
tune_write(CTL_Ctx *ctx, CTL_Laser *l, double piezo_v)
{
  double cv = 0.0;

  if (l->current_dev)
    cv = PID_FeedForward(piezo_v, l->tune_p0, l->cfg.current.feedforward, l->tune_c0,
                         l->current_lo, l->current_hi);
  queue_output_(l, 1, piezo_v, l->current_dev != NULL, cv, 1);
  kick(ctx, l);
}

static void
tune_reading(CTL_Ctx *ctx, CTL_Laser *l, const WM_Reading *r)
{
  TUN_Result res;
  double v;
  TUN_Action a;

  if (r->value <= 0.0 || l->busy || l->manual_pending)
    return;                     /* a step still on its way: not a reading of it */
  a = TUN_OnReading(&l->tune, r->rx_s, r->value * 1e6, &v);
  if (a == TUN_WRITE) {
    tune_write(ctx, l, v);
  } else if (a == TUN_DONE) {
    if (TUN_Evaluate(&l->tune, &res) != 0) {
      tune_end(l, -1, 503, "no measurable response of the laser to the piezo steps", NULL);
      return;
    }
    log_info("laser %s: tune: sensitivity %.4g MHz/V, noise %.3g MHz, drift %.3g MHz/rts, "
             "reading every %.3f s", l->cfg.name, res.sensitivity_mhz_per_v, res.noise_mhz,
             res.drift_mhz_rts, res.interval_s);
    tune_end(l, 0, 0, "", &res);
  }
}

/* Index the lasers by channel; if memory is short, CTL_OnReading scans. */
static int
chan_index(CTL_Ctx *ctx)
{
  int *next = realloc(ctx->chan_next, ((size_t)ctx->n_lasers + 1) * sizeof *next);

  if (!next)
    return -1;
  ctx->chan_next = next;
  for (int c = 0; c <= CNF_MAX_CHANNEL; c++)
    ctx->chan_first[c] = -1;
  for (int i = ctx->n_lasers - 1; i >= 0; i--) {
    int c = ctx->lasers[i]->cfg.channel;

    next[i] = -1;
    if (c >= 0 && c <= CNF_MAX_CHANNEL) {
      next[i] = ctx->chan_first[c];
      ctx->chan_first[c] = i;
    }
  }
  ctx->chan_dirty = 0;
  return 0;
}

void
CTL_OnReading(CTL_Ctx *ctx, const WM_Reading *r)
{
  int indexed = 0, i;

  if (ctx->chan_dirty)
    chan_index(ctx);
  if (!ctx->chan_dirty && r->channel >= 0 && r->channel <= CNF_MAX_CHANNEL) {
    indexed = 1;
    i = ctx->chan_first[r->channel];
  } else {
    i = 0;
  }
  for (; indexed ? i >= 0 : i < ctx->n_lasers; i = indexed ? ctx->chan_next[i] : i + 1) {
    CTL_Laser *l = ctx->lasers[i];
    if (l->cfg.channel != r->channel)
      continue;
    l->readings++;
    if (r->value <= 0.0)
      l->bad_readings++;
    l->last = *r;
    l->have_reading = 1;
    advance_ramp(ctx, l, r->rx_s);
    if (r->value > 0.0)
      l->last_error_mhz = (r->value - l->setpoint_thz) * 1e6;
    if (ctx->hooks.reading)
      ctx->hooks.reading(l, r, ctx->hooks.arg);
    filter_reading(ctx, l, r);
    if (l->tune.active)
      tune_reading(ctx, l, r);
  }
}

static void retire_idle(CTL_Ctx *ctx);

void
CTL_Tick(CTL_Ctx *ctx)
{
  double now = UTL_Now();
  LSR_Params lp;

  if (ctx->n_retiring)
    retire_idle(ctx);

  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    LSR_StateId from = l->sm.state;
    advance_ramp(ctx, l, now);
    if (l->hold_cmd && l->hold_until > 0.0 && now >= l->hold_until) {
      log_info("laser %s: hold timed out: resumed", l->cfg.name);
      CTL_Hold(ctx, l, 0, 0.0);
    }
    if (l->tune.active && now - l->tune_t0 > CTL_TUNE_TIMEOUT_S) {
      tune_write(ctx, l, l->tune_p0);
      tune_end(l, -1, 503, "too few readings", NULL);
    }
    lsr_params(ctx, l, &lp);
    if (LSR_OnTick(&l->sm, &lp, now))
      set_state_hook(ctx, l, from);
    kick(ctx, l);
  }
}

/* ---- scans: feed-forward between readings ------------------------------- */

/* Every CTL_SCAN_PERIOD_S while a laser scans: the setpoint moves on, and
   where it is fed forward and the laser regulates quietly (locked or
   acquiring, no cycle in flight) the output follows it at once. */
static void
scan_cb(evutil_socket_t fd, short what, void *arg)
{
  CTL_Ctx *ctx = arg;
  double now = UTL_Now();
  int scanning = 0;

  (void)fd;
  (void)what;
  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    double target, dv;

    if (!l->scan.active)
      continue;
    advance_ramp(ctx, l, now);
    if (!l->scan.active)
      continue;
    scanning = 1;
    if (!ctx->started || l->busy || l->manual_pending || l->removed || !ff_on(l) ||
        !l->ff_have || !l->pid.have_last ||
        (l->sm.state != LSR_LOCKED && l->sm.state != LSR_ACQUIRING))
      continue;
    target = SCN_Setpoint(&l->scan, now + CTL_FF_LEAD_S) * 1e6;
    dv = SCN_FeedForwardV(target - l->ff_sp_mhz, l->cfg.sensitivity_mhz_per_v,
                          l->cfg.polarity);
    if (fabs(dv) < 1e-6)
      continue;
    l->ff_next_dv = dv;
    l->ff_next_mhz = target;
    submit(ctx, l, JOB_FF, NULL, 0);
  }
  if (!scanning)
    event_del(ctx->scan_ev);
}

/* ---- laser setup -------------------------------------------------------- */

static void
init_limits(CTL_Laser *l)
{
  l->piezo_lo = l->cfg.piezo.min_v;
  l->piezo_hi = l->cfg.piezo.max_v;
  l->current_lo = l->cfg.current.present ? l->cfg.current.min_v : 0.0;
  l->current_hi = l->cfg.current.present ? l->cfg.current.max_v : 0.0;
}

static int
bind_devices(CTL_Ctx *ctx, CTL_Laser *l)
{
  l->piezo_dev = find_device(ctx, l->cfg.piezo.device);
  l->current_dev = l->cfg.current.present ? find_device(ctx, l->cfg.current.device) : NULL;
  return l->piezo_dev && (!l->cfg.current.present || l->current_dev) ? 0 : -1;
}

static CTL_Laser *
new_laser(CTL_Ctx *ctx, const CNF_Laser *cfg)
{
  CTL_Laser *l = calloc(1, sizeof *l);

  if (!l)
    return NULL;
  l->job = calloc(1, sizeof *l->job);
  l->gates = calloc(1, sizeof *l->gates);
  if (!l->job || !l->gates) {
    free(l->job);
    free(l->gates);
    free(l);
    return NULL;
  }
  l->cfg = *cfg;
  l->base_cfg = *cfg;
  LSR_Init(&l->sm);
  l->hold_in_value = -1;
  GLT_Init(&l->glitch);
  l->setpoint_thz = cfg->setpoint_thz;
  init_limits(l);
  l->piezo_v = clampd(cfg->piezo.start_v, l->piezo_lo, l->piezo_hi);
  l->current_v = cfg->current.present ? clampd(cfg->current.start_v, l->current_lo, l->current_hi) : 0.0;
  l->piezo_ref_v = l->piezo_v;
  l->current_ref_v = l->current_v;
  l->ff_ref = cfg->current.feedforward;
  l->last_good_v = l->piezo_v;
  l->last_used_t = -1.0;
  {
    PID_Params pp;
    CTL_PidParams(l, &pp);
    PID_Reset(&l->pid, &pp, l->piezo_v);
  }
  /* The first write puts the actuators at their start outputs. */
  l->manual_pending = 1;
  l->manual_has_piezo = 1;
  l->manual_piezo = l->piezo_v;
  l->manual_has_current = cfg->current.present;
  l->manual_current = l->current_v;
  if (bind_devices(ctx, l) != 0) {
    free_laser(l);
    return NULL;
  }
  gates_sync(ctx, l);
  return l;
}

static int
probe_reg(const CNF_Config *cfg, const char *dev)
{
  int reg = -1;
  for (int i = 0; i < cfg->n_lasers; i++) {
    const CNF_Laser *c = &cfg->lasers[i];
    if (strcmp(c->piezo.device, dev) == 0 && (reg < 0 || c->piezo.reg < reg))
      reg = c->piezo.reg;
    if (c->current.present && strcmp(c->current.device, dev) == 0 && (reg < 0 || c->current.reg < reg))
      reg = c->current.reg;
  }
  return reg < 0 ? 0 : reg;
}

static CTL_Device *
new_device(CTL_Ctx *ctx, const CNF_Config *cfg, const CNF_Device *dc)
{
  CTL_Device *d = calloc(1, sizeof *d);
  MB_Options opt = { .backoff_min_ms = 100, .backoff_max_ms = 5000,
                     .probe_reg = dc->probe_reg >= 0 ? dc->probe_reg : probe_reg(cfg, dc->name),
                     .probe_fn = dc->probe_fn, .combine = dc->combine_writes };

  if (!d)
    return NULL;
  d->cfg = *dc;
  d->ctx = ctx;
  d->up = 1;   /* assumed until the device says otherwise */
  d->mb = MB_Create(&d->cfg, &opt, device_status_cb, d);
  if (!d->mb) {
    free(d);
    return NULL;
  }
  return d;
}

CTL_Ctx *
CTL_Create(struct event_base *base, const CNF_Config *cfg, const CTL_Hooks *hooks)
{
  CTL_Ctx *ctx = calloc(1, sizeof *ctx);

  if (!ctx)
    return NULL;
  ctx->base = base;
  if (hooks)
    ctx->hooks = *hooks;
  ctx->stale_s = cfg->wavemeter.stale_ms / 1000.0;
  pthread_mutex_init(&ctx->lock, NULL);
  ctx->results_tail = &ctx->results;
  ctx->result_ev = event_new(base, -1, 0, result_cb, ctx);
  PRI_SetUrgent(ctx->result_ev);
  ctx->scan_ev = event_new(base, -1, EV_PERSIST, scan_cb, ctx);
  ctx->devices = calloc((size_t)cfg->n_devices + 1, sizeof *ctx->devices);
  ctx->lasers = calloc((size_t)cfg->n_lasers + 1, sizeof *ctx->lasers);
  if (!ctx->result_ev || !ctx->scan_ev || !ctx->devices || !ctx->lasers)
    goto fail;
  for (int i = 0; i < cfg->n_devices; i++) {
    CTL_Device *d = new_device(ctx, cfg, &cfg->devices[i]);
    if (!d)
      goto fail;
    ctx->devices[ctx->n_devices++] = d;
  }
  for (int i = 0; i < cfg->n_lasers; i++) {
    CTL_Laser *l = new_laser(ctx, &cfg->lasers[i]);
    if (!l)
      goto fail;
    l->index = ctx->n_lasers;
    ctx->lasers[ctx->n_lasers++] = l;
  }
  ctx->chan_dirty = 1;
  inputs_sync(ctx);
  return ctx;

fail:
  CTL_Destroy(ctx);
  return NULL;
}

static void
open_datalog(CTL_Laser *l)
{
  if (l->datalog || !l->cfg.datalog[0])
    return;
  l->datalog = fopen(l->cfg.datalog, "a");
  if (!l->datalog) {
    log_warn("laser %s: cannot open data log %s: %s", l->cfg.name, l->cfg.datalog, strerror(errno));
    return;
  }
  if (ftell(l->datalog) == 0)
    fprintf(l->datalog, "# wavelock data log, laser %s\n"
            "# unix_time_s reading_thz error_mhz piezo_v current_v state\n", l->cfg.name);
}

int
CTL_Start(CTL_Ctx *ctx, char *err, size_t errlen)
{
  for (int i = 0; i < ctx->n_devices; i++) {
    if (MB_Start(ctx->devices[i]->mb) != 0) {
      snprintf(err, errlen, "device %s: cannot start: %s", ctx->devices[i]->cfg.name, strerror(errno));
      return -1;
    }
  }
  ctx->started = 1;
  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    open_datalog(l);
    if (l->cfg.autolock && !l->sm.engaged)
      CTL_Lock(ctx, l);
    kick(ctx, l);
  }
  return 0;
}

void
CTL_Restore(CTL_Ctx *ctx, CTL_Laser *l, double setpoint_thz, int engaged,
            double kp, double ki, double kd, double piezo_v, int has_current,
            double current_v)
{
  PID_Params pp;

  if (setpoint_thz >= l->cfg.min_thz && setpoint_thz <= l->cfg.max_thz)
    l->setpoint_thz = setpoint_thz;
  if (kp >= 0.0 && ki >= 0.0 && kd >= 0.0 && kp <= 1e6 && ki <= 1e6 && kd <= 1e6) {
    l->cfg.kp = kp;
    l->cfg.ki = ki;
    l->cfg.kd = kd;
  }
  l->piezo_v = clampd(piezo_v, l->piezo_lo, l->piezo_hi);
  if (has_current && l->current_dev)
    l->current_v = clampd(current_v, l->current_lo, l->current_hi);
  l->piezo_ref_v = l->piezo_v;
  l->current_ref_v = l->current_v;
  l->last_good_v = l->piezo_v;
  l->manual_piezo = l->piezo_v;
  l->manual_current = l->current_v;
  CTL_PidParams(l, &pp);
  PID_Reset(&l->pid, &pp, l->piezo_v);
  l->cfg.autolock = engaged;    /* the saved lock state wins over autolock */
  (void)ctx;
}

/* ---- user actions ------------------------------------------------------- */

void
CTL_Lock(CTL_Ctx *ctx, CTL_Laser *l)
{
  PID_Params pp;
  LSR_StateId from = l->sm.state;

  if (l->sm.engaged && !l->sm.relock_failed) {
    relock_restart(ctx, l);
    return;
  }
  if (l->tune.active)
    tune_end(l, -1, 409, "interrupted: the laser was locked", NULL);
  CTL_PidParams(l, &pp);
  PID_Reset(&l->pid, &pp, l->piezo_v);   /* bumpless: start from the present output */
  l->piezo_ref_v = l->piezo_v;
  l->current_ref_v = l->current_v;
  l->ff_ref = l->cfg.current.feedforward;
  l->last_good_v = l->piezo_v;
  l->last_used_t = -1.0;
  LSR_Engage(&l->sm, UTL_Now());
  if (!laser_actuators_ok(l))
    LSR_OnActuator(&l->sm, 0);
  set_state_hook(ctx, l, from);
  mark_dirty(ctx);
}

void
CTL_Unlock(CTL_Ctx *ctx, CTL_Laser *l)
{
  LSR_StateId from = l->sm.state;

  if (l->scan.active)
    CTL_ScanStop(ctx, l);
  if (!l->sm.engaged)
    return;
  LSR_Disengage(&l->sm);
  l->have_pending = 0;
  set_state_hook(ctx, l, from);
  mark_dirty(ctx);
}

void
CTL_SetSetpoint(CTL_Ctx *ctx, CTL_Laser *l, double thz)
{
  l->ramp.active = 0;
  l->scan.active = 0;
  l->setpoint_thz = thz;
  /* A step is left to the PID, not fed forward: moved at once, the laser
     could jump farther than glitch_mhz in one reading, and that reading
     would be held back as a glitch, a cycle late for the PID. */
  l->ff_have = 0;
  relock_restart(ctx, l);
  if (l->have_reading && l->last.value > 0.0) {
    LSR_Params lp;
    LSR_StateId from = l->sm.state;
    lsr_params(ctx, l, &lp);
    l->last_error_mhz = (l->last.value - thz) * 1e6;
    LSR_SetpointStep(&l->sm, &lp, l->last_error_mhz);
    set_state_hook(ctx, l, from);
  }
  mark_dirty(ctx);
}

void
CTL_Ramp(CTL_Ctx *ctx, CTL_Laser *l, double thz, double rate_mhz_s)
{
  if (l->scan.active) {
    l->scan.active = 0;
    l->setpoint_thz = l->scan.centre_thz;
  }
  LSR_RampStart(&l->ramp, l->setpoint_thz, thz, rate_mhz_s, UTL_Now());
  mark_dirty(ctx);
}

int
CTL_Scan(CTL_Ctx *ctx, CTL_Laser *l, SCN_Wave w, double amplitude_mhz, double period_s,
         long cycles, char *err, size_t errlen)
{
  SCN_Scan s;
  double centre = l->scan.active ? l->scan.centre_thz : l->setpoint_thz;

  if (SCN_Start(&s, w, centre, amplitude_mhz, period_s, cycles, l->cfg.min_thz,
                l->cfg.max_thz, UTL_Now(), err, errlen) != 0)
    return -1;
  l->ramp.active = 0;
  l->scan = s;
  l->setpoint_thz = centre;
  if (!event_pending(ctx->scan_ev, EV_TIMEOUT, NULL)) {
    struct timeval tv = { 0, (int)(CTL_SCAN_PERIOD_S * 1e6) };
    event_add(ctx->scan_ev, &tv);
  }
  mark_dirty(ctx);
  return 0;
}

void
CTL_ScanStop(CTL_Ctx *ctx, CTL_Laser *l)
{
  if (!l->scan.active)
    return;
  l->scan.active = 0;
  l->setpoint_thz = l->scan.centre_thz;
  l->ff_have = 0;               /* the way back is a step: the PID's (see CTL_SetSetpoint) */
  mark_dirty(ctx);
}

int
CTL_Tune(CTL_Ctx *ctx, CTL_Laser *l, CTL_TuneDone done, void *arg, char *err, size_t errlen,
         int *code)
{
  TUN_Params p;

  *code = 409;
  if (l->tune.active) {
    snprintf(err, errlen, "%s is being tuned already", l->cfg.name);
    return -1;
  }
  if (l->sm.engaged || l->sm.state != LSR_OFF) {
    snprintf(err, errlen, "%s is %s: unlock it first (tune steps the piezo by hand)",
             l->cfg.name, LSR_StateName(l->sm.state));
    return -1;
  }
  if (!laser_actuators_ok(l)) {
    *code = 503;
    snprintf(err, errlen, "%s: an actuator device is down", l->cfg.name);
    return -1;
  }
  if (!l->have_reading || !(l->last.value > 0.0) || UTL_Now() - l->last.rx_s > ctx->stale_s) {
    *code = 503;
    snprintf(err, errlen, "%s: no fresh valid reading to tune on", l->cfg.name);
    return -1;
  }
  memset(&p, 0, sizeof p);
  p.v0 = l->manual_pending && l->manual_has_piezo ? l->manual_piezo : l->piezo_v;
  if (TUN_Steps(p.v0, TUN_DEFAULT_STEP_V, l->piezo_lo, l->piezo_hi, &p.up_v, &p.down_v) != 0) {
    *code = 422;
    snprintf(err, errlen, "%s: the piezo limits leave no room for the tune steps", l->cfg.name);
    return -1;
  }
  p.max_step_v = l->cfg.piezo.max_step_v;
  p.settle = TUN_DEFAULT_SETTLE;
  p.block_n = TUN_DEFAULT_BLOCK_N;
  if (TUN_Start(&l->tune, &p) != 0) {
    *code = 500;
    snprintf(err, errlen, "cannot start the tune");
    return -1;
  }
  l->tune_t0 = UTL_Now();
  l->tune_p0 = p.v0;
  l->tune_c0 = l->manual_pending && l->manual_has_current ? l->manual_current : l->current_v;
  l->tune_done = done;
  l->tune_arg = arg;
  log_info("laser %s: tune: piezo %.6f V, steps to %.6f and %.6f V", l->cfg.name, p.v0,
           p.up_v, p.down_v);
  return 0;
}

void
CTL_SetOutput(CTL_Ctx *ctx, CTL_Laser *l, int has_piezo, double piezo_v,
              int has_current, double current_v)
{
  queue_output_(l, has_piezo, piezo_v, has_current, current_v, 0);
  kick(ctx, l);
}

void
CTL_ParamsChanged(CTL_Ctx *ctx, CTL_Laser *l, const PID_Params *old)
{
  PID_Params pp;

  /* Runtime limits never leave the configured ones. */
  l->piezo_lo = clampd(l->piezo_lo, l->cfg.piezo.min_v, l->cfg.piezo.max_v);
  l->piezo_hi = clampd(l->piezo_hi, l->piezo_lo, l->cfg.piezo.max_v);
  if (l->current_dev) {
    l->current_lo = clampd(l->current_lo, l->cfg.current.min_v, l->cfg.current.max_v);
    l->current_hi = clampd(l->current_hi, l->current_lo, l->cfg.current.max_v);
  }
  CTL_PidParams(l, &pp);
  if (!l->busy)
    PID_Retune(&l->pid, old, &pp);
  gates_sync(ctx, l);
  /* Outputs outside narrowed limits are brought inside at once (engaged or
     not; a job in flight is checked when it comes back). */
  enforce_limits(l);
  kick(ctx, l);
  mark_dirty(ctx);
}

/* ---- reload ------------------------------------------------------------- */

static int
same_device_cfg(const CNF_Device *a, const CNF_Device *b)
{
  return strcmp(a->url, b->url) == 0 && a->unit == b->unit && a->timeout_ms == b->timeout_ms &&
         a->probe_fn == b->probe_fn && a->probe_reg == b->probe_reg &&
         a->combine_writes == b->combine_writes;
}

/* A key the new file gives the same value as the old one keeps its run-time
   value (changed with `set`); a key the file changes takes the file's. */
#define KEEP(field)                                                           \
  do {                                                                        \
    if (memcmp(&l->base_cfg.field, &nc->field, sizeof nc->field) == 0)        \
      l->cfg.field = run.field;                                               \
  } while (0)

static void
update_laser(CTL_Ctx *ctx, CTL_Laser *l, const CNF_Laser *nc)
{
  const CNF_Laser run = l->cfg;
  const int had_current = l->current_dev != NULL;
  const double piezo_lo = l->piezo_lo, piezo_hi = l->piezo_hi;
  const double current_lo = l->current_lo, current_hi = l->current_hi;
  PID_Params before, after;

  CTL_PidParams(l, &before);
  if (memcmp(&l->base_cfg.setpoint_thz, &nc->setpoint_thz, sizeof nc->setpoint_thz) != 0) {
    l->setpoint_thz = nc->setpoint_thz;
    l->ramp.active = 0;
    l->scan.active = 0;
    l->ff_have = 0;
  }
  if (l->cfg.channel != nc->channel)
    ctx->chan_dirty = 1;
  l->cfg = *nc;
  KEEP(kp);
  KEEP(ki);
  KEEP(kd);
  KEEP(d_tau_s);
  KEEP(polarity);
  KEEP(max_dt_s);
  KEEP(sensitivity_mhz_per_v);
  KEEP(window_mhz);
  KEEP(capture_mhz);
  KEEP(modehop_mhz);
  KEEP(glitch_mhz);
  if (nc->channel != run.channel)
    GLT_Reset(&l->glitch);      /* another laser's readings: nothing to compare with */
  KEEP(lock_n);
  KEEP(unlock_m);
  KEEP(piezo.max_step_v);
  if (nc->current.present && l->base_cfg.current.present)
    KEEP(current.feedforward);
  l->cfg.autolock = run.autolock;     /* engagement is run-time state */
  if (!(l->cfg.window_mhz < l->cfg.capture_mhz)) {
    /* a kept window and a new capture (or the reverse) that do not fit */
    log_warn("reload: laser %s: window_mhz %g is not below capture_mhz %g; both from the file",
             l->cfg.name, l->cfg.window_mhz, l->cfg.capture_mhz);
    l->cfg.window_mhz = nc->window_mhz;
    l->cfg.capture_mhz = nc->capture_mhz;
  }

  /* Run-time output limits are kept inside the configured ones: kept as
     they are while the file's limits stay, reset when the file changes
     them. */
  init_limits(l);
  if (l->base_cfg.piezo.min_v == nc->piezo.min_v && l->base_cfg.piezo.max_v == nc->piezo.max_v) {
    l->piezo_lo = clampd(piezo_lo, nc->piezo.min_v, nc->piezo.max_v);
    l->piezo_hi = clampd(piezo_hi, l->piezo_lo, nc->piezo.max_v);
  }
  if (had_current && nc->current.present && l->base_cfg.current.present &&
      l->base_cfg.current.min_v == nc->current.min_v &&
      l->base_cfg.current.max_v == nc->current.max_v) {
    l->current_lo = clampd(current_lo, nc->current.min_v, nc->current.max_v);
    l->current_hi = clampd(current_hi, l->current_lo, nc->current.max_v);
  }
  l->base_cfg = *nc;

  /* The setpoint, a ramp's target and a scan stay inside the allowed range. */
  if (l->scan.active &&
      (l->scan.centre_thz - l->scan.amplitude_mhz * 1e-6 < l->cfg.min_thz ||
       l->scan.centre_thz + l->scan.amplitude_mhz * 1e-6 > l->cfg.max_thz)) {
    log_warn("reload: laser %s: the scan would leave %.9f..%.9f THz now; scan stopped",
             l->cfg.name, l->cfg.min_thz, l->cfg.max_thz);
    l->scan.active = 0;
    l->setpoint_thz = l->scan.centre_thz;
  }
  if (l->setpoint_thz < l->cfg.min_thz || l->setpoint_thz > l->cfg.max_thz) {
    l->setpoint_thz = clampd(l->setpoint_thz, l->cfg.min_thz, l->cfg.max_thz);
    l->ramp.active = 0;
  }
  if (l->ramp.active &&
      (l->ramp.target_thz < l->cfg.min_thz || l->ramp.target_thz > l->cfg.max_thz)) {
    log_warn("reload: laser %s: ramp target %.9f THz is outside %.9f..%.9f THz now; ramp stopped"
             " at %.9f THz", l->cfg.name, l->ramp.target_thz, l->cfg.min_thz, l->cfg.max_thz,
             l->setpoint_thz);
    l->ramp.active = 0;
  }
  if (nc->channel != run.channel) {
    /* Another fibre: nothing seen on the old channel is this laser's. */
    l->have_pending = 0;
    l->have_reading = 0;
    l->last_used_t = -1.0;
    l->sm.have_freq = 0;
    PID_Forget(&l->pid);
    l->forget_pid = l->busy;   /* again once the cycle in flight is back */
  }
  {
    /* An actuator the reload moved (device, register or encoding) gets the
       laser's held output at its new place: the new register holds
       whatever it held before. */
    const CTL_Device *pd = l->piezo_dev, *cd = l->current_dev;

    bind_devices(ctx, l);
    if (pd != l->piezo_dev || run.piezo.reg != l->cfg.piezo.reg ||
        !same_encoding(&run.piezo.enc, &l->cfg.piezo.enc))
      queue_output(l, !l->manual_has_piezo, l->piezo_v, 0, 0.0);
    if (had_current && l->current_dev &&
        (cd != l->current_dev || run.current.reg != l->cfg.current.reg ||
         !same_encoding(&run.current.enc, &l->cfg.current.enc)))
      queue_output(l, 0, 0.0, !l->manual_has_current, l->current_v);
  }
  /* A job in flight (it may wait in a device queue behind another laser's
     request) writes within the new limits, and nothing to an actuator the
     reload moved: its gates say so at the wire. */
  gates_sync(ctx, l);
  if (!had_current && l->current_dev) {
    /* A current actuator added by the reload starts at its start output. */
    l->current_v = clampd(l->cfg.current.start_v, l->current_lo, l->current_hi);
    l->current_ref_v = l->current_v;
    l->piezo_ref_v = l->piezo_v;
    CTL_SetOutput(ctx, l, 0, 0.0, 1, l->current_v);
  } else if (!l->current_dev) {
    l->current_v = 0.0;
  }
  CTL_PidParams(l, &after);
  if (!l->busy)
    PID_Retune(&l->pid, &before, &after);
  if (l->datalog && strcmp(l->cfg.datalog, run.datalog) != 0) {
    fclose(l->datalog);
    l->datalog = NULL;
  }
  open_datalog(l);
  enforce_limits(l);
}

static int
job_uses(const CTL_Laser *l, const MB_Device *mb)
{
  return l->busy && (l->job->pdev == mb || l->job->cdev == mb);
}

/* Stop and free retired devices that no job in flight refers to. */
static void
retire_idle(CTL_Ctx *ctx)
{
  for (int i = 0; i < ctx->n_retiring; i++) {
    CTL_Device *d = ctx->retiring[i];
    int used = 0;

    for (int k = 0; k < ctx->n_lasers && !used; k++)
      used = job_uses(ctx->lasers[k], d->mb);
    for (int k = 0; k < ctx->n_zombies && !used; k++)
      used = job_uses(ctx->zombies[k], d->mb);
    if (used)
      continue;
    /* Ask its thread to stop, and free it on a later tick once it has: the
       loop never waits for a request or a connect still in progress. */
    MB_RequestStop(d->mb);
    if (!MB_Exited(d->mb))
      continue;
    log_info("reload: device %s stopped", d->cfg.name);
    MB_Stop(d->mb);
    MB_Destroy(d->mb);
    free(d);
    ctx->retiring[i--] = ctx->retiring[--ctx->n_retiring];
  }
}

/* Hand a device over to retire_idle (stopped and freed on a later tick). */
static void
retire(CTL_Ctx *ctx, CTL_Device *d)
{
  CTL_Device **r = realloc(ctx->retiring, (size_t)(ctx->n_retiring + 1) * sizeof *r);

  if (!r) {
    log_error("reload: out of memory retiring device %s", d->cfg.name);
    return;   /* leaked rather than freed under a job */
  }
  ctx->retiring = r;
  ctx->retiring[ctx->n_retiring++] = d;
}

int
CTL_Reconfigure(CTL_Ctx *ctx, const CNF_Config *cfg, char *err, size_t errlen)
{
  CTL_Device **devs = calloc((size_t)cfg->n_devices + 1, sizeof *devs);
  CTL_Laser **lasers = calloc((size_t)cfg->n_lasers + 1, sizeof *lasers);
  CTL_Device **old_devs = ctx->devices;
  int n_old_devs = ctx->n_devices;

  if (!devs || !lasers) {
    UTL_SetErr(err, errlen, "out of memory");
    free(devs);
    free(lasers);
    return -1;
  }

  /* Devices first, before anything changes: keep the unchanged ones and
     create (and start) the new ones.  If one cannot be set up, the reload
     is refused as a whole and the running devices and lasers stay as they
     are. */
  for (int i = 0; i < n_old_devs; i++)
    old_devs[i]->keep = 0;
  for (int i = 0; i < cfg->n_devices; i++) {
    CTL_Device *d = NULL;
    for (int k = 0; k < n_old_devs; k++) {
      if (strcmp(old_devs[k]->cfg.name, cfg->devices[i].name) == 0 &&
          same_device_cfg(&old_devs[k]->cfg, &cfg->devices[i])) {
        d = old_devs[k];
        d->keep = 1;
        break;
      }
    }
    if (!d) {
      int e = 0;

      errno = 0;
      d = new_device(ctx, cfg, &cfg->devices[i]);
      if (!d || (ctx->started && MB_Start(d->mb) != 0)) {
        e = errno;
        if (d) {
          MB_Destroy(d->mb);
          free(d);
        }
        UTL_SetErr(err, errlen, "device %s (%s) cannot be set up: %s%s", cfg->devices[i].name,
                   cfg->devices[i].url, e ? strerror(e) : "error",
                   e == EINVAL && cfg->devices[i].parsed.kind == CNF_URL_RTU
                     ? " (other line settings on a serial port in use take a restart)" : "");
        /* The devices made for this reload may be connecting or probing
           (up to their timeout): retired, never waited for here. */
        for (int k = 0; k < i; k++)
          if (devs[k] && !devs[k]->keep)
            retire(ctx, devs[k]);
        retire_idle(ctx);
        free(devs);
        free(lasers);
        return -1;
      }
      d->keep = 0;
    }
    devs[i] = d;
  }
  for (int i = 0; i < cfg->n_devices; i++)
    if (!devs[i]->keep)
      log_info("reload: device %s added", devs[i]->cfg.name);
  ctx->stale_s = cfg->wavemeter.stale_ms / 1000.0;
  ctx->devices = devs;
  ctx->n_devices = cfg->n_devices;

  /* Lasers: update, add, remove. */
  for (int i = 0; i < cfg->n_lasers; i++) {
    CTL_Laser *l = NULL;
    for (int k = 0; k < ctx->n_lasers; k++) {
      /* names match without case, as in the config and the state file */
      if (ctx->lasers[k] && strcasecmp(ctx->lasers[k]->cfg.name, cfg->lasers[i].name) == 0) {
        l = ctx->lasers[k];
        ctx->lasers[k] = NULL;
        break;
      }
    }
    if (l) {
      update_laser(ctx, l, &cfg->lasers[i]);
    } else {
      l = new_laser(ctx, &cfg->lasers[i]);
      if (!l) {
        log_error("reload: laser %s cannot be added", cfg->lasers[i].name);
        continue;
      }
      log_info("reload: laser %s added", l->cfg.name);
      if (ctx->started) {
        open_datalog(l);
        if (l->cfg.autolock)
          CTL_Lock(ctx, l);
      }
    }
    l->index = i;
    lasers[i] = l;
  }
  for (int k = 0; k < ctx->n_lasers; k++) {
    CTL_Laser *l = ctx->lasers[k];
    if (!l)
      continue;
    log_info("reload: laser %s removed; its outputs stay where they are", l->cfg.name);
    l->removed = 1;
    /* Its job, if it has not written yet, writes nothing: the register may
       be another laser's now. */
    gates_sync(ctx, l);
    if (l->busy) {
      CTL_Laser **z = realloc(ctx->zombies, (size_t)(ctx->n_zombies + 1) * sizeof *z);
      if (z) {
        ctx->zombies = z;
        ctx->zombies[ctx->n_zombies++] = l;
      } else {
        log_error("reload: out of memory keeping a busy laser");
      }
      continue;   /* freed when its job comes back (leaked rather than freed under it) */
    }
    free_laser(l);
  }
  free(ctx->lasers);
  ctx->lasers = lasers;
  ctx->n_lasers = cfg->n_lasers;
  ctx->chan_dirty = 1;
  /* Compact in case a laser could not be added. */
  {
    int n = 0;
    for (int i = 0; i < ctx->n_lasers; i++) {
      if (lasers[i]) {
        lasers[i]->index = n;
        lasers[n++] = lasers[i];
      }
    }
    ctx->n_lasers = n;
  }

  /* Old devices nobody uses any more: retired once no job in flight can
     still hand them work (a split laser's job may be on its way to one). */
  for (int i = 0; i < n_old_devs; i++) {
    if (old_devs[i]->keep)
      continue;
    retire(ctx, old_devs[i]);
  }
  free(old_devs);
  retire_idle(ctx);

  for (int i = 0; i < ctx->n_lasers; i++) {
    CTL_Laser *l = ctx->lasers[i];
    LSR_StateId from = l->sm.state;
    LSR_OnActuator(&l->sm, laser_actuators_ok(l));
    set_state_hook(ctx, l, from);
    kick(ctx, l);
  }
  inputs_sync(ctx);
  mark_dirty(ctx);
  return 0;
}

/* ---- queries and teardown ------------------------------------------------ */

int
CTL_LaserCount(const CTL_Ctx *ctx)
{
  return ctx->n_lasers;
}

CTL_Laser *
CTL_Laser_(CTL_Ctx *ctx, int i)
{
  return i >= 0 && i < ctx->n_lasers ? ctx->lasers[i] : NULL;
}

CTL_Laser *
CTL_FindLaser(CTL_Ctx *ctx, const char *name)
{
  for (int i = 0; i < ctx->n_lasers; i++)
    if (strcasecmp(ctx->lasers[i]->cfg.name, name) == 0)
      return ctx->lasers[i];
  return NULL;
}

int
CTL_Busy(const CTL_Ctx *ctx)
{
  int n = ctx->n_zombies;
  for (int i = 0; i < ctx->n_lasers; i++)
    n += ctx->lasers[i]->busy;
  return n;
}

int
CTL_DeviceCount(const CTL_Ctx *ctx)
{
  return ctx->n_devices;
}

void
CTL_DeviceStatus(const CTL_Ctx *ctx, int i, char *buf, size_t len)
{
  const CTL_Device *d = ctx->devices[i];
  MB_Stats st;

  MB_GetStats(d->mb, &st);
  snprintf(buf, len,
           "name=%s url=%s unit=%d up=%d writes=%lu write_errors=%lu reconnects=%lu requests=%lu",
           d->cfg.name, d->cfg.url, d->cfg.unit, MB_IsUp(d->mb), st.writes, st.write_errors,
           st.reconnects, st.requests);
}

void
CTL_Destroy(CTL_Ctx *ctx)
{
  if (!ctx)
    return;
  for (int i = 0; i < ctx->n_devices; i++) {
    if (ctx->started)
      MB_Stop(ctx->devices[i]->mb);
  }
  for (int i = 0; i < ctx->n_retiring; i++)
    MB_Stop(ctx->retiring[i]->mb);
  /* Device threads are gone: no job can post any more. */
  for (int i = 0; i < ctx->n_retiring; i++) {
    MB_Destroy(ctx->retiring[i]->mb);
    free(ctx->retiring[i]);
  }
  free(ctx->retiring);
  for (int i = 0; i < ctx->n_devices; i++) {
    MB_Destroy(ctx->devices[i]->mb);
    free(ctx->devices[i]);
  }
  for (int i = 0; i < ctx->n_lasers; i++)
    if (ctx->lasers[i])
      free_laser(ctx->lasers[i]);
  for (int i = 0; i < ctx->n_zombies; i++)
    free_laser(ctx->zombies[i]);
  free(ctx->zombies);
  free(ctx->devices);
  free(ctx->lasers);
  free(ctx->chan_next);
  if (ctx->result_ev)
    event_free(ctx->result_ev);
  if (ctx->scan_ev)
    event_free(ctx->scan_ev);
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}
