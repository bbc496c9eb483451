/* simlaser.h - a simple simulated laser for the closed-loop tests of the
 * control core (test-only; the full plant is wavelock-sim).
 *
 * true frequency = f_free + gain * v_lag + drift, where v_lag follows the
 * commanded piezo voltage with a first-order lag and drift is a random walk.
 * Readings add white noise.  The PRNG is our own (splitmix64), seeded, so
 * every run can be replayed and does not depend on the C library's rand().
 * Frequencies are in MHz relative to an arbitrary reference.
 */
#ifndef WL_TEST_SIMLASER_H
#define WL_TEST_SIMLASER_H

#include <stdint.h>

typedef struct {
  uint64_t state;
  int have_spare;
  double spare;
} TSL_Rng;

typedef struct {
  double f_free_mhz;      /* frequency at 0 V without drift */
  double gain_mhz_v;      /* piezo tuning */
  double tau_s;           /* piezo lag time constant */
  double rw_mhz_rts;      /* random walk, MHz per sqrt(s) */
  double noise_mhz;       /* white wavemeter noise, rms */
  double v_cmd;           /* commanded piezo voltage */
  double v_lag;           /* piezo voltage after the lag */
  double drift_mhz;       /* accumulated random walk */
  double t;               /* simulated time (s) */
  TSL_Rng rng;
} TSL_Laser;

/* Seed a generator. */
void TSL_Seed(TSL_Rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t TSL_Next(TSL_Rng *r);

/* Uniform in [0, 1). */
double TSL_Uniform(TSL_Rng *r);

/* Standard normal (Box-Muller). */
double TSL_Gauss(TSL_Rng *r);

/* Set up a laser at time 0 with the piezo settled at v0. */
void TSL_Init(TSL_Laser *l, uint64_t seed, double f_free_mhz, double gain_mhz_v,
              double tau_s, double rw_mhz_rts, double noise_mhz, double v0);

/* Advance the plant to time t (s) in small sub-steps. */
void TSL_Advance(TSL_Laser *l, double t);

/* True frequency now (MHz). */
double TSL_True(const TSL_Laser *l);

/* A wavemeter reading now: true frequency plus white noise. */
double TSL_Read(TSL_Laser *l);

#endif
