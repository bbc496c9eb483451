/* pid.c - PID step on the frequency error (pure, no I/O).
 *
 * Position form: out = integ + P + D with
 *   P = -pol * kp * error
 *   D = -pol * kd * d(measurement)/dt (first-order filtered)
 *   integ += -pol * ki * error * dt      (dt capped at max_dt_s)
 * The minus sign makes a positive error (laser too high) drive the output
 * down for polarity +1.  Anti-windup is back-calculation: when the output is
 * limited by min_v..max_v or max_step_v, integ is recomputed from the output
 * actually written, so it never holds more than the output can deliver.
 */
#include <math.h>

#include "pid.h"

static double
pol_sign(const PID_Params *p)
{
  return p->polarity < 0 ? -1.0 : 1.0;
}

double
PID_Clamp(const PID_Params *p, double v)
{
  if (!(v >= p->min_v))     /* also catches NaN */
    return p->min_v;
  if (v > p->max_v)
    return p->max_v;
  return v;
}

void
PID_Reset(PID_State *s, const PID_Params *p, double out)
{
  s->out = PID_Clamp(p, out);
  s->integ = s->out;
  s->d_filt = 0.0;
  s->last_meas = 0.0;
  s->last_t = 0.0;
  s->have_last = 0;
  s->last_err = 0.0;
}

void
PID_Forget(PID_State *s)
{
  s->d_filt = 0.0;
  s->have_last = 0;
}

int
PID_Step(PID_State *s, const PID_Params *p, double t, double meas_mhz, double sp_mhz)
{
  double pol = pol_sign(p), err, dt, dt_i, raw_d, a, pterm, dterm, integ, u, out;

  if (!isfinite(t) || !isfinite(meas_mhz) || !isfinite(sp_mhz))
    return -1;
  if (s->have_last && t <= s->last_t)
    return -1;

  err = meas_mhz - sp_mhz;
  pterm = -pol * p->kp * err;

  if (!s->have_last) {
    /* First reading after an engage or a gap: no dt, no derivative.  Keep the
       output and absorb the proportional term into the integrator, so the
       output only moves from the next reading on (bumpless). */
    s->out = PID_Clamp(p, s->out);
    s->integ = PID_Clamp(p, s->out - pterm);
    s->d_filt = 0.0;
    s->last_meas = meas_mhz;
    s->last_t = t;
    s->last_err = err;
    s->have_last = 1;
    return 0;
  }

  dt = t - s->last_t;
  dt_i = p->max_dt_s > 0.0 && dt > p->max_dt_s ? p->max_dt_s : dt;

  /* Derivative of the measurement through a first-order low-pass filter
     (backward Euler, stable for any dt). */
  raw_d = (meas_mhz - s->last_meas) / dt;
  a = p->d_tau_s > 0.0 ? dt / (p->d_tau_s + dt) : 1.0;
  s->d_filt += a * (raw_d - s->d_filt);
  dterm = -pol * p->kd * s->d_filt;

  integ = PID_Clamp(p, s->integ - pol * p->ki * err * dt_i);
  u = integ + pterm + dterm;

  out = PID_Clamp(p, u);
  if (p->max_step_v > 0.0) {
    if (out > s->out + p->max_step_v)
      out = s->out + p->max_step_v;
    else if (out < s->out - p->max_step_v)
      out = s->out - p->max_step_v;
    out = PID_Clamp(p, out);
  }

  /* Back-calculation: the integrator follows the output that was written. */
  if (out != u)
    integ = PID_Clamp(p, out - pterm - dterm);

  s->integ = integ;
  s->out = out;
  s->last_meas = meas_mhz;
  s->last_t = t;
  s->last_err = err;
  return 0;
}

double
PID_Shift(PID_State *s, const PID_Params *p, double dv)
{
  double out, d;

  if (!isfinite(dv))
    return 0.0;
  out = PID_Clamp(p, s->out + dv);
  if (p->max_step_v > 0.0) {
    if (out > s->out + p->max_step_v)
      out = s->out + p->max_step_v;
    else if (out < s->out - p->max_step_v)
      out = s->out - p->max_step_v;
    out = PID_Clamp(p, out);
  }
  d = out - s->out;
  s->out = out;
  s->integ = PID_Clamp(p, s->integ + d);
  return d;
}

void
PID_Retune(PID_State *s, const PID_Params *old_p, const PID_Params *new_p)
{
  double pol = pol_sign(new_p), pterm, dterm;

  (void)old_p;
  s->out = PID_Clamp(new_p, s->out);
  if (!s->have_last) {
    s->integ = s->out;
    return;
  }
  /* Choose the integrator so that the new P and D terms, evaluated on the
     last reading, reproduce the present output. */
  pterm = -pol * new_p->kp * s->last_err;
  dterm = -pol * new_p->kd * s->d_filt;
  s->integ = PID_Clamp(new_p, s->out - pterm - dterm);
}

double
PID_FeedForward(double piezo_v, double piezo_ref_v, double ff,
                double current_ref_v, double cur_min_v, double cur_max_v)
{
  double v = current_ref_v + ff * (piezo_v - piezo_ref_v);

  if (!(v >= cur_min_v))
    return cur_min_v;
  if (v > cur_max_v)
    return cur_max_v;
  return v;
}
