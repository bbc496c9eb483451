/* calib.h - correction of the wavemeter's calibration against a reference
 * laser (DESIGN.md section 7).  Pure: no I/O, time is passed in.
 *
 * Mode correct: the relative error eps = f_ref_measured / f_ref - 1 is
 * tracked with a first-order filter (time constant tau_s) whose output can
 * move at most max_rate_mhz_per_min (a slew limit), and every other
 * channel's reading f is used as f / (1 + eps).  A reference reading that is
 * invalid (<= 0), missing for longer than stale_s, farther than
 * tolerance_mhz from the reference frequency, or farther from the filtered
 * value than the reference could have drifted at max_rate since the last
 * good reading (it moved: unlocked, hopped) is not used and the correction
 * holds; single outliers are skipped, CAL_MOVED_N in a row are a hold.  The
 * band of accepted readings widens with the time since the last good one, so
 * after a long hold the reference is re-acquired, at no more than max_rate.
 *
 * Mode wlmdata: the wavemeter calibrates itself (the daemon calls the
 * library); this module only judges the reference (tracking when it is good,
 * hold otherwise) and reports its error; CAL_Correct changes nothing.
 */
#ifndef WL_CALIB_H
#define WL_CALIB_H

/* Consecutive readings beyond the accepted band before the state is hold
   with reason moved (fewer are skipped as outliers). */
#define CAL_MOVED_N 3
/* The accepted band never narrows below this many MHz (wavemeter noise). */
#define CAL_NOISE_FLOOR_MHZ 4.0

typedef enum { CAL_MODE_CORRECT = 0, CAL_MODE_WLMDATA } CAL_Mode;
typedef enum { CAL_OFF = 0, CAL_TRACKING, CAL_HOLD } CAL_StateId;
typedef enum {
  CAL_R_NONE = 0,         /* tracking, or off */
  CAL_R_WAITING,          /* no reference reading yet */
  CAL_R_INVALID,          /* the reference reading is an error code */
  CAL_R_STALE,            /* no reference reading for longer than stale_s */
  CAL_R_TOLERANCE,        /* farther than tolerance_mhz from the frequency */
  CAL_R_MOVED,            /* moving faster than max_rate_mhz_per_min */
  CAL_R_CALIBRATING       /* wlmdata: the wavemeter is calibrating */
} CAL_Reason;

typedef struct {
  CAL_Mode mode;
  double ref_thz;                 /* the reference's true frequency */
  double tau_s;                   /* filter time constant (> 0) */
  double max_rate_mhz_per_min;    /* slew limit and moved threshold (> 0) */
  double tolerance_mhz;           /* (> 0) */
  double stale_s;                 /* (> 0) */
} CAL_Params;

typedef struct {
  CAL_StateId state;
  CAL_Reason reason;
  int applies;                    /* a correction is applied to readings */
  double eps;                     /* the correction (relative) */
  double ppb;                     /* eps * 1e9 */
  double offset_mhz;              /* eps at the reference frequency, MHz */
  double measured_mhz;            /* the last reference reading's offset, MHz (NAN: none) */
  double age_s;                   /* since the last reference reading used; < 0: never */
} CAL_Report;

typedef struct CAL_Ctx CAL_Ctx;

/* A new context (no correction yet, state hold, reason waiting); NULL if out of memory. */
CAL_Ctx *CAL_Create(const CAL_Params *p);

/* Free a context (NULL is fine). */
void CAL_Destroy(CAL_Ctx *c);

/* New parameters (reload): the correction is kept unless the mode or the
   reference frequency changed. */
void CAL_Configure(CAL_Ctx *c, const CAL_Params *p);

/* A reading of the reference channel (THz, <= 0: error code) at time now (s). */
void CAL_OnReference(CAL_Ctx *c, double value_thz, double now);

/* Time passes (call before using the correction): stale reference -> hold. */
void CAL_Check(CAL_Ctx *c, double now);

/* The wavemeter is calibrating (wlmdata), on = 1 from the start to the end. */
void CAL_SetCalibrating(CAL_Ctx *c, int on, double now);

/* A reading f (THz) of another channel, corrected: f / (1 + eps); an error
   code (<= 0) or no correction (mode wlmdata, nothing acquired): f. */
double CAL_Correct(const CAL_Ctx *c, double f);

/* Whether CAL_Correct changes readings. */
int CAL_Applies(const CAL_Ctx *c);

/* The present state, for the calibration command, logs and the state file. */
void CAL_GetReport(const CAL_Ctx *c, double now, CAL_Report *r);

/* Restore a correction eps last updated age_s ago (state file): held until
   the reference confirms it, re-acquired at no more than max_rate. */
void CAL_Restore(CAL_Ctx *c, double eps, double age_s, double now);

/* "tracking", "hold", "off"; "none", "waiting", "invalid", ... */
const char *CAL_StateName(CAL_StateId s);
const char *CAL_ReasonName(CAL_Reason r);

#endif
