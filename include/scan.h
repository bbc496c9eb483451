/* scan.h - setpoint scans and setpoint feed-forward (pure, no I/O).
 *
 * A scan moves the setpoint around a centre (DESIGN.md section 8):
 * offset(t) in MHz, with phase ph = frac((t - t0) / period):
 *
 *   triangle  starts at the centre rising: +A at ph 1/4, -A at 3/4
 *   sawtooth  starts at the centre rising to +A at ph 1/2, jumps to -A,
 *             rises back to the centre
 *   sine      A sin(2 pi ph)
 *   square    +A for the first half period, -A for the second
 *
 * so every waveform stays inside centre +- A.  After `cycles` periods (0:
 * until stopped) the scan ends at the centre.
 *
 * Feed-forward: a setpoint change of d MHz moves the output by
 * d / (polarity * |sensitivity|) volts at once, so the laser follows without
 * waiting for the integrator; sensitivity 0 means no feed-forward.
 */
#ifndef WL_SCAN_H
#define WL_SCAN_H

#include <stddef.h>

typedef enum { SCN_TRIANGLE = 0, SCN_SAWTOOTH, SCN_SINE, SCN_SQUARE } SCN_Wave;

/* Accepted ranges of the scan command's arguments. */
#define SCN_MIN_AMPLITUDE_MHZ 1e-3
#define SCN_MAX_AMPLITUDE_MHZ 1e6
#define SCN_MIN_PERIOD_S 0.1
#define SCN_MAX_PERIOD_S 86400.0
#define SCN_MAX_CYCLES 1000000

typedef struct {
  int active;
  SCN_Wave wave;
  double centre_thz;
  double amplitude_mhz;
  double period_s;
  long cycles;           /* 0: until stopped */
  double t0;             /* start time (s, the caller's clock) */
} SCN_Scan;

/* Waveform from its name (case-insensitive); 0, or -1 if unknown. */
int SCN_ParseWave(const char *name, SCN_Wave *w);

/* The name of a waveform ("triangle" ...). */
const char *SCN_WaveName(SCN_Wave w);

/* Check the arguments and fill s (active) for a scan around centre_thz
   starting at t0; the setpoint must stay inside min_thz..max_thz.  0, or -1
   with a reason in err (a range error). */
int SCN_Start(SCN_Scan *s, SCN_Wave w, double centre_thz, double amplitude_mhz,
              double period_s, long cycles, double min_thz, double max_thz, double t0,
              char *err, size_t errlen);

/* The offset from the centre (MHz) at time t (t before t0: 0). */
double SCN_Offset(const SCN_Scan *s, double t);

/* 1 if a finite scan has run all its cycles at time t. */
int SCN_Done(const SCN_Scan *s, double t);

/* The setpoint (THz) at time t: centre + offset, the centre once done. */
double SCN_Setpoint(const SCN_Scan *s, double t);

/* Output change (V) that feeds a setpoint change of delta_mhz forward
   through a sensitivity (MHz/V; its magnitude) and polarity (+1/-1); 0 when
   the sensitivity is 0 or either is not finite. */
double SCN_FeedForwardV(double delta_mhz, double sensitivity_mhz_per_v, int polarity);

#endif
