/* pid.h - PID step on the frequency error (pure, no I/O).
 *
 * Error convention: error = reading - setpoint (MHz), so a laser that is too
 * high has a positive error.  With polarity +1 (frequency rises with volts)
 * a positive error drives the output down.  Gains: kp V/MHz, ki V/(MHz s),
 * kd V s/MHz.  The derivative acts on the measurement (not the error) through
 * a first-order low-pass filter, so setpoint changes and ramps cause no kick.
 * The integrator is held inside min_v..max_v (anti-windup) and the output is
 * clamped to min_v..max_v and slewed by at most max_step_v per update.
 * Engaging sets the integrator to the present output (bumpless).
 *
 * Anti-windup is back-calculation: whenever the output is limited (by
 * min_v..max_v or by max_step_v) the integrator is set so that it agrees
 * with the output actually written, so it never runs ahead of it.  The first
 * reading after PID_Reset or PID_Forget only records the history and leaves
 * the output where it is (the proportional term is absorbed into the
 * integrator), so engaging and resuming cause no jump.
 */
#ifndef WL_PID_H
#define WL_PID_H

typedef struct {
  double kp, ki, kd;   /* gains, see above */
  double d_tau_s;      /* derivative filter time constant (s), 0 = no filter */
  int polarity;        /* +1 or -1 */
  double min_v, max_v; /* output limits */
  double max_step_v;   /* largest change per update; <= 0: unlimited */
  double max_dt_s;     /* cap on one integration step after a long gap */
} PID_Params;

typedef struct {
  double out;          /* present output (V) */
  double integ;        /* integrator contribution (V) */
  double d_filt;       /* filtered derivative of the measurement (MHz/s) */
  double last_meas;    /* last measurement used (MHz) */
  double last_t;       /* time stamp of the last reading used (s) */
  int have_last;       /* last_meas/last_t valid */
  double last_err;     /* error of the last reading used (MHz), for PID_Retune */
} PID_State;

/* Start from output out (clamped to the limits): integrator = out, no history. */
void PID_Reset(PID_State *s, const PID_Params *p, double out);

/* One update with a reading taken at time t (s).  meas_mhz is the measured
   frequency and sp_mhz the setpoint, both in MHz on the same scale.
   Returns 0 and updates s->out; returns -1 and changes nothing if t is not
   newer than the last reading used (a reading is never used twice) or if
   an input is not finite. */
int PID_Step(PID_State *s, const PID_Params *p, double t, double meas_mhz, double sp_mhz);

/* Change parameters bumplessly: keeps the output where it is (re-clamped to
   new limits) and adjusts the integrator so the next step does not jump. */
void PID_Retune(PID_State *s, const PID_Params *old_p, const PID_Params *new_p);

/* Forget the measurement history (after a hold or relock) without moving the
   output: the next reading restarts dt and the derivative. */
void PID_Forget(PID_State *s);

/* Move the output by dv at once (a setpoint feed-forward), within the
   limits and max_step_v, the integrator moving with it so the next step
   goes on from there; the measurement history is kept.  Returns the change
   actually made. */
double PID_Shift(PID_State *s, const PID_Params *p, double dv);

/* Clamp v to min_v..max_v. */
double PID_Clamp(const PID_Params *p, double v);

/* Current feed-forward: the current output that follows piezo_v with ratio
   ff (V per V of piezo change from piezo_ref_v) around current_ref_v, clamped
   to cur_min_v..cur_max_v. */
double PID_FeedForward(double piezo_v, double piezo_ref_v, double ff,
                       double current_ref_v, double cur_min_v, double cur_max_v);

#endif
