/* lsr.c - per-laser lock state machine and setpoint ramps (pure, no I/O). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "lsr.h"

void
LSR_Init(LSR_Machine *m)
{
  m->state = LSR_OFF;
  m->engaged = 0;
  m->actuator_ok = 1;
  m->in_count = 0;
  m->out_count = 0;
  m->last_valid_t = -1.0;
  m->last_freq_mhz = 0.0;
  m->have_freq = 0;
  m->lock_losses = 0;
  m->relocks = 0;
  m->relock_failed = 0;
  m->engage_t = -1.0;
  m->resume = 0;
  m->held = 0;
}

/* Move to state s, keeping the counters consistent. */
static void
set_state(LSR_Machine *m, LSR_StateId s)
{
  if (m->state == s)
    return;
  if (m->state == LSR_LOCKED && m->engaged)
    m->lock_losses++;
  if (s == LSR_RELOCKING)
    m->relocks++;
  if (s != LSR_ACQUIRING && s != LSR_LOCKED)
    m->resume = 1;
  m->in_count = 0;
  m->out_count = 0;
  m->state = s;
}

void
LSR_Engage(LSR_Machine *m, double t)
{
  if (m->engaged && !m->relock_failed)
    return;
  m->relock_failed = 0;
  m->engaged = 1;
  m->engage_t = t;
  m->resume = 1;
  m->in_count = m->out_count = 0;
  m->state = !m->actuator_ok ? LSR_FAULT : m->held ? LSR_HOLDING : LSR_ACQUIRING;
}

void
LSR_Disengage(LSR_Machine *m)
{
  m->engaged = 0;
  m->relock_failed = 0;
  m->resume = 1;
  m->in_count = m->out_count = 0;
  m->state = m->actuator_ok ? LSR_OFF : LSR_FAULT;
}

void
LSR_OnActuator(LSR_Machine *m, int ok)
{
  m->actuator_ok = ok ? 1 : 0;
  if (!m->actuator_ok)
    set_state(m, LSR_FAULT);
  else if (m->state == LSR_FAULT && !m->relock_failed)
    set_state(m, !m->engaged ? LSR_OFF : m->held ? LSR_HOLDING : LSR_ACQUIRING);
}

int
LSR_Hold(LSR_Machine *m, int on, double t)
{
  LSR_StateId was = m->state;

  on = on ? 1 : 0;
  if (m->held == on)
    return 0;
  m->held = on;
  if (on) {
    if (m->engaged && m->state != LSR_FAULT && m->state != LSR_OFF)
      set_state(m, LSR_HOLDING);
  } else {
    /* The laser may have been moved on purpose meanwhile: its first
       reading is not a mode hop, and staleness counts from now. */
    m->have_freq = 0;
    m->engage_t = t;
    m->resume = 1;
    if (m->engaged && m->state == LSR_HOLDING)
      set_state(m, LSR_ACQUIRING);
  }
  return m->state != was;
}

void
LSR_RelockFailed(LSR_Machine *m)
{
  if (!m->engaged)
    return;
  m->relock_failed = 1;
  set_state(m, LSR_FAULT);
}

void
LSR_SetpointStep(LSR_Machine *m, const LSR_Params *p, double new_error_mhz)
{
  if (m->state != LSR_LOCKED || fabs(new_error_mhz) <= p->window_mhz)
    return;
  /* A deliberate move, not a lost lock: lock_n fresh readings are needed again. */
  m->state = LSR_ACQUIRING;
  m->in_count = m->out_count = 0;
}

int
LSR_Regulating(const LSR_Machine *m)
{
  return m->state == LSR_ACQUIRING || m->state == LSR_LOCKED;
}

const char *
LSR_StateName(LSR_StateId s)
{
  switch (s) {
    case LSR_OFF: return "off";
    case LSR_ACQUIRING: return "acquiring";
    case LSR_LOCKED: return "locked";
    case LSR_HOLDING: return "holding";
    case LSR_RELOCKING: return "relocking";
    case LSR_FAULT: return "fault";
  }
  return "unknown";
}

LSR_Action
LSR_OnReading(LSR_Machine *m, const LSR_Params *p, double t, int valid,
              double freq_mhz, double error_mhz)
{
  int hop = 0, lost, inside, lock_n, unlock_m;
  double aerr;

  if (m->held)
    return LSR_ACT_NONE;          /* held: readings are not used */
  if (!valid || !isfinite(freq_mhz) || !isfinite(error_mhz)) {
    /* A wavemeter error code: hold the output, freeze the integrator. */
    m->in_count = 0;
    if (m->engaged && m->state != LSR_FAULT && m->state != LSR_OFF)
      set_state(m, LSR_HOLDING);
    return LSR_ACT_NONE;
  }

  if (m->have_freq && p->modehop_mhz > 0.0 &&
      fabs(freq_mhz - m->last_freq_mhz) > p->modehop_mhz)
    hop = 1;
  m->last_freq_mhz = freq_mhz;
  m->have_freq = 1;
  if (t > m->last_valid_t)
    m->last_valid_t = t;

  if (!m->engaged || m->state == LSR_OFF || m->state == LSR_FAULT)
    return LSR_ACT_NONE;

  aerr = fabs(error_mhz);
  lost = p->capture_mhz > 0.0 && aerr > p->capture_mhz;
  inside = aerr <= p->window_mhz;
  lock_n = p->lock_n < 1 ? 1 : p->lock_n;
  unlock_m = p->unlock_m < 1 ? 1 : p->unlock_m;

  if (m->state == LSR_RELOCKING) {
    /* Waiting at the last good output; the jump back from a mode hop is
       itself large, so only the error decides here. */
    if (lost)
      return LSR_ACT_NONE;
    set_state(m, LSR_ACQUIRING);
  } else if (lost || hop) {
    set_state(m, LSR_RELOCKING);
    return LSR_ACT_RELOCK;
  } else if (m->state == LSR_HOLDING) {
    set_state(m, LSR_ACQUIRING);
  }

  /* Acquiring or locked: count towards the hysteresis. */
  if (inside) {
    m->in_count++;
    m->out_count = 0;
    if (m->state == LSR_ACQUIRING && m->in_count >= lock_n)
      set_state(m, LSR_LOCKED);
  } else {
    m->in_count = 0;
    if (m->state == LSR_LOCKED && ++m->out_count >= unlock_m)
      set_state(m, LSR_ACQUIRING);
  }

  if (m->resume) {
    m->resume = 0;
    return LSR_ACT_RESUME;
  }
  return LSR_ACT_REGULATE;
}

int
LSR_OnTick(LSR_Machine *m, const LSR_Params *p, double now)
{
  double ref;

  if (!m->engaged || p->stale_s <= 0.0 || m->held)
    return 0;
  if (m->state != LSR_ACQUIRING && m->state != LSR_LOCKED && m->state != LSR_RELOCKING)
    return 0;
  ref = m->last_valid_t > m->engage_t ? m->last_valid_t : m->engage_t;
  if (now - ref <= p->stale_s)
    return 0;
  set_state(m, LSR_HOLDING);
  return 1;
}

void
LSR_RampStart(LSR_Ramp *r, double from_thz, double target_thz, double rate_mhz_s, double t)
{
  r->sp_thz = from_thz;
  r->target_thz = target_thz;
  r->rate_mhz_s = rate_mhz_s;
  r->last_t = t;
  r->active = 1;
  if (!(rate_mhz_s > 0.0) || !isfinite(rate_mhz_s) || from_thz == target_thz) {
    r->sp_thz = target_thz;
    r->active = 0;
  }
}

double
LSR_RampAdvance(LSR_Ramp *r, double t)
{
  double step, left;

  if (!r->active)
    return r->sp_thz;
  if (!(t > r->last_t))
    return r->sp_thz;
  step = r->rate_mhz_s * 1e-6 * (t - r->last_t);
  r->last_t = t;
  left = r->target_thz - r->sp_thz;
  if (fabs(left) <= step) {
    r->sp_thz = r->target_thz;
    r->active = 0;
  } else {
    r->sp_thz += left > 0.0 ? step : -step;
  }
  return r->sp_thz;
}

int
LSR_RailObserve(double v, double lo, double hi, int low_bit, int high_bit)
{
  double band = LSR_RAIL_BAND * (hi - lo);

  if (!(hi > lo) || !isfinite(v))
    return 0;
  if (v <= lo + band)
    return low_bit;
  if (v >= hi - band)
    return high_bit;
  return 0;
}

int
LSR_RailCycle(LSR_Rail *r, int observed)
{
  int before = r->railed;

  for (int b = 0; b < 4; b++) {
    int bit = 1 << b;

    if ((observed & bit) == (r->railed & bit)) {
      r->count[b] = 0;
    } else if (++r->count[b] > LSR_RAIL_CYCLES) {
      r->railed ^= bit;
      r->count[b] = 0;
    }
  }
  return r->railed != before;
}

int
LSR_RailClear(LSR_Rail *r)
{
  int before = r->railed;

  memset(r, 0, sizeof *r);
  return before != 0;
}

const char *
LSR_RailName(int railed, char *buf, size_t len)
{
  static const char *const names[4] = {
    "piezo_low", "piezo_high", "current_low", "current_high"
  };
  size_t n = 0;

  if (!buf || len == 0)
    return "";
  buf[0] = '\0';
  if (!(railed & 15)) {
    snprintf(buf, len, "none");
    return buf;
  }
  for (int b = 0; b < 4 && n < len; b++)
    if (railed & (1 << b))
      n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "," : "", names[b]);
  return buf;
}
