/* lsr.h - per-laser lock state machine and setpoint ramps (pure, no I/O).
 *
 * States (DESIGN.md section 3):
 *   off        not regulating
 *   acquiring  regulating, not yet inside the lock window
 *   locked     lock_n consecutive readings inside window_mhz; left after
 *              unlock_m consecutive readings outside (hysteresis)
 *   holding    engaged, but no valid fresh reading (error code, or none for
 *              stale_s): output held, integrator frozen
 *   relocking  engaged, error beyond capture_mhz or a reading-to-reading jump
 *              beyond modehop_mhz: output returns to the last good output and
 *              waits until the error is back inside capture_mhz
 *   fault      an actuator device is unreachable, or the relock search
 *              failed (LSR_RelockFailed: relock_failed set)
 * Every state recovers by itself when its cause clears, except a failed
 * relock search, which stays until the next engage or disengage.
 *
 * Readings drive the machine (LSR_OnReading) and say what the caller should
 * do with the PID: LSR_ACT_RELOCK once when relocking is entered (move the
 * output back to the last good output and PID_Reset there), LSR_ACT_NONE
 * while relocking/holding/off/fault, LSR_ACT_RESUME on the first regulating
 * reading after engage or any interruption (PID_Forget, then PID_Step), and
 * LSR_ACT_REGULATE otherwise.  An invalid reading (error code) while engaged
 * goes to holding; the next valid one resumes (acquiring, or relocking if the
 * error is beyond capture_mhz or the frequency jumped by a mode hop).
 * In relocking only the error decides (the jump back is as large as the hop).
 * lock_losses counts every exit from locked except a disengage.
 */
#ifndef WL_LSR_H
#define WL_LSR_H

#include <stddef.h>

typedef enum {
  LSR_OFF = 0, LSR_ACQUIRING, LSR_LOCKED, LSR_HOLDING, LSR_RELOCKING, LSR_FAULT
} LSR_StateId;

/* What the caller should do with the controller after an input. */
typedef enum {
  LSR_ACT_NONE = 0,   /* nothing: output stays where it is */
  LSR_ACT_REGULATE,   /* run a PID step with this reading */
  LSR_ACT_RESUME,     /* forget PID history (bumpless), then run a PID step */
  LSR_ACT_RELOCK      /* move the output back to the last good output, reset PID */
} LSR_Action;

typedef struct {
  double window_mhz;   /* |error| inside this counts as in lock */
  double capture_mhz;  /* |error| beyond this means the lock is lost */
  double modehop_mhz;  /* reading-to-reading jump that signals a mode hop; <= 0 off */
  int lock_n;          /* consecutive in-window readings to enter locked (>= 1) */
  int unlock_m;        /* consecutive out-of-window readings to leave locked (>= 1) */
  double stale_s;      /* no valid reading for this long: holding */
} LSR_Params;

typedef struct {
  LSR_StateId state;
  int engaged;         /* user wants regulation */
  int actuator_ok;     /* every actuator device answers */
  int in_count;        /* consecutive readings inside the window */
  int out_count;       /* consecutive readings outside the window while locked */
  double last_valid_t; /* time of the last valid reading (s), < 0 none */
  double last_freq_mhz;/* last valid frequency, for mode-hop detection */
  int have_freq;
  unsigned long lock_losses; /* times locked was left */
  unsigned long relocks;     /* times relocking was entered */
  double engage_t;     /* time of the last engage (s): staleness counts from
                          the later of this and last_valid_t */
  int resume;          /* regulation was interrupted: the next regulating
                          reading returns LSR_ACT_RESUME */
  int relock_failed;   /* fault because the relock search failed */
  int held;            /* held by a hold command or input (LSR_Hold) */
} LSR_Machine;

/* A fresh machine: off, actuators assumed ok. */
void LSR_Init(LSR_Machine *m);

/* Engage (off -> acquiring, or fault if an actuator is down) / disengage (-> off,
   or fault while an actuator is down).  t is the present time (s); staleness
   is counted from it until the first reading.  Engaging an engaged machine
   changes nothing, unless its relock search failed (then it starts again). */
void LSR_Engage(LSR_Machine *m, double t);
void LSR_Disengage(LSR_Machine *m);

/* A reading for this laser at time t: valid = 0 for a wavemeter error code.
   freq_mhz is the reading, error_mhz = reading - setpoint. */
LSR_Action LSR_OnReading(LSR_Machine *m, const LSR_Params *p, double t, int valid,
                         double freq_mhz, double error_mhz);

/* Time passes without readings: goes holding when stale.  Returns 1 if the
   state changed. */
int LSR_OnTick(LSR_Machine *m, const LSR_Params *p, double now);

/* Hold (on = 1) or release (on = 0) a laser (DESIGN.md section 8): while
   held an engaged laser is holding, readings are not used (they return
   LSR_ACT_NONE and do not count for mode hops or staleness), and engage or
   a recovered actuator goes to holding.  Release at time t goes to
   acquiring with LSR_ACT_RESUME on the next reading (bumpless, the history
   forgotten), the first reading not compared for a mode hop.  Returns 1 if
   the state changed. */
int LSR_Hold(LSR_Machine *m, int on, double t);

/* The relock search gave up: fault until the next engage or disengage. */
void LSR_RelockFailed(LSR_Machine *m);

/* Actuator devices became unreachable (ok = 0) or answer again (ok = 1). */
void LSR_OnActuator(LSR_Machine *m, int ok);

/* The setpoint was stepped so that the error would now be new_error_mhz:
   a locked laser outside the window goes back to acquiring (not counted as
   a lock loss), so "locked" always means "locked at the present setpoint". */
void LSR_SetpointStep(LSR_Machine *m, const LSR_Params *p, double new_error_mhz);

/* Whether the state regulates (acquiring or locked). */
int LSR_Regulating(const LSR_Machine *m);

/* Name of a state as printed by the protocol ("off", "acquiring", ...). */
const char *LSR_StateName(LSR_StateId s);

/* Outputs at a limit ("railed", DESIGN.md section 3): an output within
   LSR_RAIL_BAND of its range lo..hi from a limit, for more than
   LSR_RAIL_CYCLES consecutive regulating cycles.  Leaving takes as many
   cycles away from the limit, so a railed output that hovers at the band's
   edge does not flap. */
#define LSR_RAIL_BAND 0.02
#define LSR_RAIL_CYCLES 10
enum {
  LSR_RAIL_PIEZO_LOW = 1, LSR_RAIL_PIEZO_HIGH = 2,
  LSR_RAIL_CURRENT_LOW = 4, LSR_RAIL_CURRENT_HIGH = 8
};
#define LSR_RAIL_NAME_MAX 48    /* the longest LSR_RailName, with its NUL */

typedef struct {
  int railed;          /* LSR_RAIL_* bits reported */
  int count[4];        /* per bit: consecutive cycles that disagree with it */
} LSR_Rail;

/* The bits low_bit / high_bit for output v in lo..hi: within LSR_RAIL_BAND
   of the range from lo, or from hi (0 if neither, or if lo >= hi). */
int LSR_RailObserve(double v, double lo, double hi, int low_bit, int high_bit);

/* One regulating cycle that saw the bits observed; returns 1 if railed
   changed. */
int LSR_RailCycle(LSR_Rail *r, int observed);

/* Not regulating: nothing is railed, at once; returns 1 if railed changed. */
int LSR_RailClear(LSR_Rail *r);

/* "none", or the bits' names joined by commas ("piezo_low,current_high")
   into buf (at least LSR_RAIL_NAME_MAX bytes); returns buf. */
const char *LSR_RailName(int railed, char *buf, size_t len);

/* A setpoint ramp towards target at rate MHz/s. */
typedef struct {
  int active;
  double sp_thz;       /* present setpoint */
  double target_thz;
  double rate_mhz_s;   /* > 0 */
  double last_t;
} LSR_Ramp;

/* Start a ramp from from_thz at time t.  A rate that is not a finite
   positive number (or from == target) jumps straight to the target. */
void LSR_RampStart(LSR_Ramp *r, double from_thz, double target_thz, double rate_mhz_s, double t);

/* Advance to time t and return the setpoint; the ramp ends (active = 0)
   exactly on the target. */
double LSR_RampAdvance(LSR_Ramp *r, double t);

#endif
