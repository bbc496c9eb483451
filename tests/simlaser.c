/* simlaser.c - a simple simulated laser for the closed-loop tests. */
#include <math.h>

#include "simlaser.h"

#define SUBSTEP_S 0.002

void
TSL_Seed(TSL_Rng *r, uint64_t seed)
{
  r->state = seed;
  r->have_spare = 0;
  r->spare = 0.0;
}

uint64_t
TSL_Next(TSL_Rng *r)
{
  /* splitmix64 */
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double
TSL_Uniform(TSL_Rng *r)
{
  return (double)(TSL_Next(r) >> 11) * (1.0 / 9007199254740992.0);
}

double
TSL_Gauss(TSL_Rng *r)
{
  double u1, u2, rad;

  if (r->have_spare) {
    r->have_spare = 0;
    return r->spare;
  }
  do
    u1 = TSL_Uniform(r);
  while (u1 <= 0.0);
  u2 = TSL_Uniform(r);
  rad = sqrt(-2.0 * log(u1));
  r->spare = rad * sin(2.0 * M_PI * u2);
  r->have_spare = 1;
  return rad * cos(2.0 * M_PI * u2);
}

void
TSL_Init(TSL_Laser *l, uint64_t seed, double f_free_mhz, double gain_mhz_v,
         double tau_s, double rw_mhz_rts, double noise_mhz, double v0)
{
  l->f_free_mhz = f_free_mhz;
  l->gain_mhz_v = gain_mhz_v;
  l->tau_s = tau_s;
  l->rw_mhz_rts = rw_mhz_rts;
  l->noise_mhz = noise_mhz;
  l->v_cmd = v0;
  l->v_lag = v0;
  l->drift_mhz = 0.0;
  l->t = 0.0;
  TSL_Seed(&l->rng, seed);
}

void
TSL_Advance(TSL_Laser *l, double t)
{
  while (l->t < t) {
    double h = t - l->t < SUBSTEP_S ? t - l->t : SUBSTEP_S;

    /* exact first-order lag for a constant command over the sub-step */
    l->v_lag = l->v_cmd + (l->v_lag - l->v_cmd) * exp(-h / l->tau_s);
    l->drift_mhz += l->rw_mhz_rts * sqrt(h) * TSL_Gauss(&l->rng);
    l->t = h < SUBSTEP_S ? t : l->t + h;
  }
}

double
TSL_True(const TSL_Laser *l)
{
  return l->f_free_mhz + l->gain_mhz_v * l->v_lag + l->drift_mhz;
}

double
TSL_Read(TSL_Laser *l)
{
  return TSL_True(l) + l->noise_mhz * TSL_Gauss(&l->rng);
}
