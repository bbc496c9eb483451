/* scan.c - setpoint scans and setpoint feed-forward (pure, no I/O). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <strings.h>

#include "scan.h"

static const char *const wave_names[] = { "triangle", "sawtooth", "sine", "square" };

int
SCN_ParseWave(const char *name, SCN_Wave *w)
{
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(name, wave_names[i]) == 0) {
      *w = (SCN_Wave)i;
      return 0;
    }
  }
  return -1;
}

const char *
SCN_WaveName(SCN_Wave w)
{
  return (unsigned)w < 4 ? wave_names[w] : "none";
}

int
SCN_Start(SCN_Scan *s, SCN_Wave w, double centre_thz, double amplitude_mhz,
          double period_s, long cycles, double min_thz, double max_thz, double t0,
          char *err, size_t errlen)
{
  if ((unsigned)w >= 4) {
    snprintf(err, errlen, "unknown waveform");
    return -1;
  }
  if (!(amplitude_mhz >= SCN_MIN_AMPLITUDE_MHZ && amplitude_mhz <= SCN_MAX_AMPLITUDE_MHZ)) {
    snprintf(err, errlen, "amplitude must be %g..%g MHz", SCN_MIN_AMPLITUDE_MHZ,
             SCN_MAX_AMPLITUDE_MHZ);
    return -1;
  }
  if (!(period_s >= SCN_MIN_PERIOD_S && period_s <= SCN_MAX_PERIOD_S)) {
    snprintf(err, errlen, "period must be %g..%g s", SCN_MIN_PERIOD_S, SCN_MAX_PERIOD_S);
    return -1;
  }
  if (cycles < 0 || cycles > SCN_MAX_CYCLES) {
    snprintf(err, errlen, "cycles must be a whole number in 1..%d", SCN_MAX_CYCLES);
    return -1;
  }
  if (!isfinite(centre_thz) || centre_thz - amplitude_mhz * 1e-6 < min_thz ||
      centre_thz + amplitude_mhz * 1e-6 > max_thz) {
    snprintf(err, errlen, "the scan %.9f +- %g MHz would leave %.9f..%.9f THz", centre_thz,
             amplitude_mhz, min_thz, max_thz);
    return -1;
  }
  s->active = 1;
  s->wave = w;
  s->centre_thz = centre_thz;
  s->amplitude_mhz = amplitude_mhz;
  s->period_s = period_s;
  s->cycles = cycles;
  s->t0 = t0;
  return 0;
}

double
SCN_Offset(const SCN_Scan *s, double t)
{
  double x, ph, a = s->amplitude_mhz;

  if (!(t > s->t0) || !(s->period_s > 0.0))
    return 0.0;
  x = (t - s->t0) / s->period_s;
  ph = x - floor(x);
  switch (s->wave) {
  case SCN_TRIANGLE:
    if (ph < 0.25)
      return 4.0 * a * ph;
    if (ph < 0.75)
      return a * (2.0 - 4.0 * ph);
    return a * (4.0 * ph - 4.0);
  case SCN_SAWTOOTH:
    return ph < 0.5 ? 2.0 * a * ph : 2.0 * a * (ph - 1.0);
  case SCN_SINE:
    return a * sin(2.0 * M_PI * ph);
  case SCN_SQUARE:
    return ph < 0.5 ? a : -a;
  }
  return 0.0;
}

int
SCN_Done(const SCN_Scan *s, double t)
{
  return s->cycles > 0 && t - s->t0 >= (double)s->cycles * s->period_s;
}

double
SCN_Setpoint(const SCN_Scan *s, double t)
{
  if (SCN_Done(s, t))
    return s->centre_thz;
  return s->centre_thz + SCN_Offset(s, t) * 1e-6;
}

double
SCN_FeedForwardV(double delta_mhz, double sensitivity_mhz_per_v, int polarity)
{
  double g = fabs(sensitivity_mhz_per_v);

  if (!(g > 0.0) || !isfinite(g) || !isfinite(delta_mhz))
    return 0.0;
  return delta_mhz / (polarity < 0 ? -g : g);
}
