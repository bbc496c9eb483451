/* tune.h - measuring a laser's actuator and proposing gains (pure, no I/O).
 *
 * `tune <laser>` (DESIGN.md section 8) steps the piezo of an unlocked laser
 * in five blocks of readings: centre, up, centre, down, centre.  The first
 * `settle` readings after a move are discarded (the first one may have been
 * exposed before the write); moves larger than max_step_v go in pieces, one
 * per reading.  The sequence ends at the centre, where it started.
 *
 * From the block means (m0..m4 at mean times t0..t4) the drift is removed by
 * interpolating the centre blocks linearly to the time of each stepped block:
 *
 *   sensitivity = ((m1 - c(t1)) - (m3 - c(t3))) / (up_v - down_v)   MHz/V
 *
 * with its sign (the current feed-forward, which follows the piezo, is
 * included).  Noise and drift come from the differences of readings inside
 * the blocks: with V1 the mean square of differences one reading apart and
 * VL that of differences L readings apart (T the mean reading interval),
 * white noise n and a random walk q (MHz/sqrt(s)) give V1 = 2 n^2 + q^2 T and
 * VL = 2 n^2 + q^2 L T, so q^2 = (VL - V1) / ((L - 1) T) and
 * n^2 = (V1 - q^2 T) / 2 (each at least 0).
 *
 * The gains (TUN_Gains) follow the rule conf/sim.conf's hand-set gains were
 * chosen by, for a loop that gets one reading every T seconds:
 *
 *   ki = 0.4 / (|G| T)   the integrator removes 40 % of the error per reading
 *   kp = 0.1 / |G|       a little proportional action
 *   kd = 0               (the wavemeter noise would only be amplified)
 *   polarity = the sign of G
 *
 * which puts the closed loop's poles at 0.65 and -0.15 per reading: well
 * damped whatever the tuning of the laser and the reading rate.
 */
#ifndef WL_TUNE_H
#define WL_TUNE_H

#define TUN_BLOCKS 5
#define TUN_MAX_BLOCK_N 64
#define TUN_DEFAULT_STEP_V 0.5     /* piezo step each way */
#define TUN_DEFAULT_BLOCK_N 8      /* readings used per block */
#define TUN_DEFAULT_SETTLE 1       /* readings discarded after a move */
#define TUN_MIN_SPAN_V 0.05        /* up_v - down_v at least this */

typedef struct {
  double v0;                 /* piezo output at the start (the centre) */
  double up_v, down_v;       /* the stepped outputs, down_v < up_v */
  double max_step_v;         /* per write, <= 0: none */
  int settle;                /* >= 0 */
  int block_n;               /* 3..TUN_MAX_BLOCK_N */
} TUN_Params;

typedef enum {
  TUN_WAIT = 0,              /* nothing to do (reading used or discarded) */
  TUN_WRITE,                 /* write *piezo_v */
  TUN_DONE                   /* the sequence is over: TUN_Result */
} TUN_Action;

typedef struct {
  int active;
  TUN_Params p;
  int block;                 /* 0..TUN_BLOCKS-1 */
  double at_v;               /* output last asked for */
  int moving;                /* a split move is under way */
  int settle_left;
  int n;                     /* readings in the present block */
  double x[TUN_BLOCKS][TUN_MAX_BLOCK_N], t[TUN_BLOCKS][TUN_MAX_BLOCK_N];
  long seen;                 /* readings seen (used or not) */
  double first_t, last_t;
} TUN_Tune;

typedef struct {
  double sensitivity_mhz_per_v;   /* signed */
  int polarity;                   /* sign of the sensitivity */
  double noise_mhz;               /* white reading noise, rms */
  double drift_mhz_rts;           /* random walk, MHz per sqrt(s) */
  double interval_s;              /* mean time between readings */
  double kp, ki, kd;              /* proposed gains (TUN_Gains) */
} TUN_Result;

/* The stepped outputs around v0 for a step each way inside lo..hi;
   0, or -1 if the span left (up_v - down_v) is below TUN_MIN_SPAN_V. */
int TUN_Steps(double v0, double step_v, double lo, double hi, double *up_v, double *down_v);

/* Start a sequence (0), or -1 if the parameters are out of range. */
int TUN_Start(TUN_Tune *s, const TUN_Params *p);

/* A valid reading (MHz) at time t (s): what to do next. */
TUN_Action TUN_OnReading(TUN_Tune *s, double t, double mhz, double *piezo_v);

/* The figures of a finished sequence: 0, or -1 if the laser did not answer
   the steps (no measurable sensitivity). */
int TUN_Evaluate(const TUN_Tune *s, TUN_Result *r);

/* The gains for a sensitivity G (MHz/V) and a reading interval T (s), see
   above; -1 if G is 0 or either is not finite. */
int TUN_Gains(double sensitivity_mhz_per_v, double interval_s, double *kp, double *ki,
              double *kd, int *polarity);

#endif
