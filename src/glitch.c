/* glitch.c - per-laser glitch rejection of wavemeter readings (pure, no I/O). */
#include <math.h>

#include "glitch.h"

void
GLT_Init(GLT_Filter *f)
{
  f->glitches = 0;
  GLT_Reset(f);
}

void
GLT_Reset(GLT_Filter *f)
{
  f->have_ref = 0;
  f->ref_mhz = 0.0;
  f->held = 0;
  f->held_mhz = 0.0;
}

void
GLT_Expect(GLT_Filter *f, double expect_mhz)
{
  if (f->have_ref || !isfinite(expect_mhz))
    return;
  f->have_ref = 1;
  f->ref_mhz = expect_mhz;
}

int
GLT_Feed(GLT_Filter *f, double limit_mhz, int valid, double freq_mhz)
{
  int out = 0;

  if (!valid || !isfinite(freq_mhz))
    return GLT_USE;
  if (!(limit_mhz > 0.0)) {
    out = f->held ? GLT_USE_HELD : 0;
    f->held = 0;
    f->have_ref = 1;
    f->ref_mhz = freq_mhz;
    return out | GLT_USE;
  }
  if (f->held) {
    f->held = 0;
    if (fabs(freq_mhz - f->held_mhz) <= limit_mhz) {
      f->have_ref = 1;
      f->ref_mhz = freq_mhz;
      return GLT_USE_HELD | GLT_USE;
    }
    f->glitches++;
    out = GLT_DROP_HELD;
  }
  if (f->have_ref && fabs(freq_mhz - f->ref_mhz) <= limit_mhz) {
    f->ref_mhz = freq_mhz;
    return out | GLT_USE;
  }
  f->held = 1;
  f->held_mhz = freq_mhz;
  return out | GLT_HOLD;
}
