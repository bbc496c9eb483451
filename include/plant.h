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

/* Start a mode hop of mhz at time t; it lasts sim.modehop_s. */
void PLT_StartHop(PLT_Laser *laser, double t, double mhz);

/* Step the free-running frequency by mhz at time t (permanent). */
void PLT_StepDrift(PLT_Laser *laser, double t, double mhz);

/* Advance to t and describe the laser. */
void PLT_GetTruth(PLT_Laser *laser, double t, PLT_Truth *truth);

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
  double noise_mhz;       /* value minus true frequency (0 for error codes) */
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

#endif
