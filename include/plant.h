/* plant.h - the simulated laser plant and wavemeter of wavelock-sim (pure).
 *
 * No I/O and no clock: every call takes the simulated time t in seconds
 * (t = 0 at start).  Time only moves forward; a call with an earlier t than
 * the laser has seen is evaluated at the laser's own time.
 *
 * One laser (DESIGN.md section 6, config group lasers.[i].sim):
 *   true frequency = setpoint + offset_mhz
 *                  + piezo_mhz_per_v   * (Vp_lagged - piezo.start_v)
 *                  + current_mhz_per_v * (Vc_lagged - current.start_v)
 *                  + drift(t) + mode hop
 *   Vp_lagged, Vc_lagged: first-order lags (piezo_lag_ms, current_lag_ms) of
 *   the commanded volts, updated exactly for any time step;
 *   drift = random walk (walk_mhz_rts, MHz/sqrt(s)) + slow sine (sine_mhz,
 *   sine_period_s, random phase) + linear (linear_mhz_per_h) + manual steps;
 *   mode hops: Poisson at modehop_per_h, size +-modehop_mhz, lasting
 *   modehop_s, then the laser falls back.
 *
 * Persistent mode hops (modehop_free_v > 0), as in an external-cavity diode
 * laser: the hop lasts until the actuators move.  The tuning
 *   x = (Vp_lagged - piezo.start_v)
 *     + (Vc_lagged - current.start_v) * current_mhz_per_v / piezo_mhz_per_v
 * (the tuning the actuators ask for, in piezo volts) has a mode-hop-free
 * window |x| <= modehop_free_v / 2 around the start outputs.  Tuned past its
 * upper edge the laser hops to the adjacent mode (mode +1: the frequency
 * jumps back against the tuning by |modehop_mhz|) and stays there until x
 * falls below the edge minus hysteresis_v; past the lower edge likewise
 * (mode -1, back above the edge plus hysteresis_v).  A spontaneous hop
 * (modehop_per_h, while on the right mode, either way at random) or one on
 * command (PLT_StartHop; the sign of its size picks the kind) at tuning x0
 * lasts until x moves back past x0 -+ hysteresis_v.  modehop_s is not used.
 * Modes are evaluated at each advance (the lagged outputs then).
 *
 * Replays: all randomness comes from PLT_Rng streams derived from the seed
 * and the laser's name.  The random walk lives on a fixed time grid
 * (PLT_WALK_STEP_S, linear between grid points) and hops are drawn in
 * simulated time, so the free-running frequency at time t does not depend
 * on how often or when the plant was looked at.
 *
 * The wavemeter reads the lasers' channels in turn, in increasing channel
 * order; each channel takes sim.switch_ms + exposure_ms and its reading is
 * the true frequency at the end of the exposure plus Gaussian noise
 * (noise_mhz rms), or an error code (a fraction error_rate of readings,
 * mostly -3/-4, or every reading during a dropout).  Each channel has its own
 * random stream and draws the same numbers per reading whatever happens, so
 * a dropout does not shift later readings.
 *
 * Calibration error (DESIGN.md section 7): the wavemeter's calibration is off
 * by a relative error eps(t) common to every channel,
 *   eps(t) = offset + rate * t + random walk (walk, ppb/sqrt(s)) + manual steps,
 * in parts per billion (1 ppb = 0.384 MHz at 384 THz).  Every published
 * frequency is f_true * (1 + eps) plus the channel's white noise.  The walk
 * lives on the PLT_WALK_STEP_S grid of its own random stream (derived from
 * the seed alone), so it replays like the lasers' drift; with every parameter
 * 0 (the default) readings are exactly those of a perfect wavemeter.
 *
 * Reference lasers (PLT_CreateReference): a fixed true frequency, no
 * actuator, no drift and no mode hops; read on their channel like any laser,
 * so their readings show the calibration error.
 */
#ifndef WL_PLANT_H
#define WL_PLANT_H

#include <stdint.h>
#include "conf.h"

/* Grid step of the random walk, seconds. */
#define PLT_WALK_STEP_S 0.01

/* xoshiro256** generator with a cached Box-Muller deviate. */
typedef struct {
  uint64_t s[4];
  int have_spare;
  double spare;
} PLT_Rng;

/* Seed a generator (any seed, 0 included, gives a good state). */
void PLT_RngSeed(PLT_Rng *rng, uint64_t seed);

/* Next 64 random bits. */
uint64_t PLT_RngNext(PLT_Rng *rng);

/* Uniform deviate in (0, 1]. */
double PLT_RngUniform(PLT_Rng *rng);

/* Standard normal deviate (Box-Muller). */
double PLT_RngGauss(PLT_Rng *rng);

/* Derive an independent seed from a seed and a stream number. */
uint64_t PLT_MixSeed(uint64_t seed, uint64_t stream);

/* Stable 64-bit hash of a name (FNV-1a), for per-laser streams. */
uint64_t PLT_HashName(const char *name);

typedef struct PLT_Laser PLT_Laser;

/* Parameters of the calibration error (all 0: a perfect wavemeter). */
typedef struct {
  double offset_ppb;              /* eps at t = 0 */
  double rate_ppb_per_min;        /* linear drift */
  double walk_ppb_rts;            /* random walk, ppb/sqrt(s) */
} PLT_CalibParams;

/* The calibration error of a wavemeter at one time. */
typedef struct {
  double t;                       /* simulated time, s */
  double ppb;                     /* eps(t), ppb: the sum of the four below */
  double offset_ppb;
  double linear_ppb;              /* the integral of the rate so far */
  double walk_ppb;
  double steps_ppb;               /* sum of manual steps */
  double rate_ppb_per_min;        /* the rate now */
  double walk_ppb_rts;
} PLT_CalibState;

/* Relative error eps in ppb expressed in MHz at a frequency in THz. */
#define PLT_PPB_TO_MHZ(ppb, thz) ((ppb) * (thz) * 1e-3)

/* The state of one laser at a time. */
typedef struct {
  double t;               /* simulated time, s */
  double true_thz;        /* true optical frequency */
  double error_mhz;       /* true frequency minus the configured setpoint */
  double piezo_v;         /* last commanded piezo volts */
  double current_v;       /* last commanded current volts (0 without a current actuator) */
  double piezo_lag_v;     /* piezo volts the laser feels (after the lag) */
  double current_lag_v;
  double drift_mhz;       /* walk + sine + linear + manual steps */
  double hop_mhz;         /* offset of the mode hop in progress, 0 if none */
  int mode_hop;           /* 1 while a mode hop lasts */
  int mode;               /* persistent hops: -1, 0 or +1 (else mode_hop) */
  double tuning_v;        /* x: the actuators' tuning in piezo volts */
  double return_v;        /* x at which a persistent hop ends (0 on mode 0) */
  unsigned long hops;     /* mode hops so far (spontaneous and manual) */
} PLT_Truth;

/* Create the plant of one laser from its config; NULL if out of memory. */
PLT_Laser *PLT_CreateLaser(const CNF_Laser *cfg, uint64_t seed);

/* Free a laser (NULL is fine). */
void PLT_DestroyLaser(PLT_Laser *laser);

/* Move the laser's state forward to time t. */
void PLT_Advance(PLT_Laser *laser, double t);

/* Command the piezo / current input to volts from time t on (non-finite: ignored). */
void PLT_SetPiezo(PLT_Laser *laser, double t, double volts);
void PLT_SetCurrent(PLT_Laser *laser, double t, double volts);

/* Start a mode hop of mhz at time t; it lasts sim.modehop_s, or, with
   persistent hops, until the tuning moves back by sim.hysteresis_v. */
void PLT_StartHop(PLT_Laser *laser, double t, double mhz);

/* The same with persistent hops lasting until the tuning moves back by
   hysteresis_v (not sim.hysteresis_v) from where it happens; a hop that
   lasts modehop_s ignores it. */
void PLT_StartHopHysteresis(PLT_Laser *laser, double t, double mhz, double hysteresis_v);

/* Step the free-running frequency by mhz at time t (permanent). */
void PLT_StepDrift(PLT_Laser *laser, double t, double mhz);

/* Advance to t and describe the laser. */
void PLT_GetTruth(PLT_Laser *laser, double t, PLT_Truth *truth);

/* A reference laser: true frequency thz for ever, no actuator; its
   wavemeter channel has white noise noise_mhz rms and exposure_ms; NULL if
   out of memory. */
PLT_Laser *PLT_CreateReference(const char *name, int channel, double thz, double noise_mhz,
                               double exposure_ms, uint64_t seed);

/* Whether a laser was made by PLT_CreateReference. */
int PLT_LaserIsReference(const PLT_Laser *laser);

/* The configured name, channel and physics of a laser. */
const char *PLT_LaserName(const PLT_Laser *laser);
int PLT_LaserChannel(const PLT_Laser *laser);
const CNF_SimLaser *PLT_LaserParams(const PLT_Laser *laser);

typedef struct PLT_Wavemeter PLT_Wavemeter;

/* One wavemeter measurement. */
typedef struct {
  int channel;
  int laser;              /* index into the array given to PLT_CreateWavemeter */
  double t;               /* end of the exposure, simulated s */
  double value;           /* THz, or an error code <= 0 */
  double true_thz;        /* the true frequency at t */
  double calib_ppb;       /* the calibration error eps at t */
  double calib_mhz;       /* true_thz * eps, in MHz (0 for error codes) */
  double noise_mhz;       /* white noise: value = true * (1 + eps) + noise (0 for error codes) */
} PLT_Reading;

/* Create a wavemeter over n lasers (borrowed; they must outlive it) with a
   fibre-switch settle time; NULL if out of memory. */
PLT_Wavemeter *PLT_CreateWavemeter(PLT_Laser *const *lasers, int n, double switch_ms,
                                   uint64_t seed);

/* Free a wavemeter (NULL is fine). */
void PLT_DestroyWavemeter(PLT_Wavemeter *wm);

/* Simulated time of the next reading (HUGE_VAL with no lasers). */
double PLT_NextReadingTime(const PLT_Wavemeter *wm);

/* Take the next reading (advances its laser); -1 with no lasers. */
int PLT_TakeReading(PLT_Wavemeter *wm, PLT_Reading *reading);

/* Make a channel (0 = every channel) report code instead of a frequency for
   readings before t_end; -1 if no laser uses that channel. */
int PLT_Dropout(PLT_Wavemeter *wm, int channel, double t_end, int code);

/* Set the calibration error's parameters; call before the first reading
   (the walk restarts from 0 at t = 0, the steps are cleared). */
void PLT_SetCalibration(PLT_Wavemeter *wm, const PLT_CalibParams *p, uint64_t seed);

/* Advance the calibration error to t and describe it. */
void PLT_GetCalibration(PLT_Wavemeter *wm, double t, PLT_CalibState *state);

/* Step the calibration error by ppb at time t (permanent; non-finite: ignored). */
void PLT_StepCalibration(PLT_Wavemeter *wm, double t, double ppb);

/* Change the linear rate to ppb_per_min from time t on (the error stays
   continuous; non-finite: ignored). */
void PLT_SetCalibrationRate(PLT_Wavemeter *wm, double t, double ppb_per_min);

#endif
