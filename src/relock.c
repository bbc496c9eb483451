/* relock.c - the relock search's grid and pacing (pure, no I/O). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "relock.h"

double
RLK_Outward(int k, double step)
{
  int n = (k + 1) / 2;

  return (k % 2 == 1 ? n : -n) * step;
}

int
RLK_AxisSteps(double span, double step)
{
  if (!(span > 0.0) || !(step > 0.0))
    return 0;
  /* a span that is a whole number of steps up to rounding counts whole */
  return (int)floor(span / step + 1e-9);
}

double
RLK_Toward(double from, double to, double max_step)
{
  if (!(max_step > 0.0) || fabs(to - from) <= max_step)
    return to;
  return to > from ? from + max_step : from - max_step;
}

int
RLK_PointCount(const RLK_Search *s)
{
  return s->axis_p * s->axis_c - 1;
}

int
RLK_Point(const RLK_Search *s, int i, double *dp, double *dc)
{
  int g = i + 1;              /* the centre is grid point 0 */

  if (i < 0 || i >= RLK_PointCount(s))
    return -1;
  *dp = RLK_Outward(g % s->axis_p, s->p.piezo_step_v);
  *dc = RLK_Outward(g / s->axis_p, s->p.current_step_v);
  return 0;
}

int
RLK_Start(RLK_Search *s, const RLK_Params *p, double piezo_v, double current_v,
          double at_piezo_v, double at_current_v)
{
  memset(s, 0, sizeof *s);
  s->p = *p;
  if (s->p.tries < 1)
    s->p.tries = 1;
  if (s->p.settle_readings < 0)
    s->p.settle_readings = 0;
  s->axis_p = 2 * RLK_AxisSteps(p->piezo_span_v, p->piezo_step_v) + 1;
  s->axis_c = p->has_current ? 2 * RLK_AxisSteps(p->current_span_v, p->current_step_v) + 1 : 1;
  if (RLK_PointCount(s) < 1)
    return -1;
  s->p0 = piezo_v;
  s->at_p = at_piezo_v;
  s->c0 = p->has_current ? current_v : 0.0;
  s->at_c = p->has_current ? at_current_v : 0.0;
  s->index = -1;
  s->pass = 1;
  s->active = 1;
  return 0;
}

void
RLK_Stop(RLK_Search *s)
{
  s->active = 0;
  s->moving = 0;
}

static double
clampd(double v, double lo, double hi)
{
  return v < lo ? lo : v > hi ? hi : v;
}

/* The outputs of grid point i within lim; 0, or -1 if outside them. */
static int
point_outputs(const RLK_Search *s, int i, const RLK_Limits *lim, double *pv, double *cv)
{
  double dp, dc;

  if (RLK_Point(s, i, &dp, &dc) < 0)
    return -1;
  *pv = s->p0 + dp;
  if (!(*pv >= lim->piezo_lo && *pv <= lim->piezo_hi))
    return -1;
  *cv = 0.0;
  if (s->p.has_current) {
    *cv = s->c0 + s->p.feedforward * dp + dc;
    if (dc != 0.0 && !(*cv >= lim->current_lo && *cv <= lim->current_hi))
      return -1;
    *cv = clampd(*cv, lim->current_lo, lim->current_hi);
  }
  return 0;
}

/* Write the next piece of the move in progress. */
static void
piece(RLK_Search *s, double *pv, double *cv)
{
  s->at_p = RLK_Toward(s->at_p, s->to_p, s->p.piezo_max_step_v);
  if (s->p.has_current)
    s->at_c = RLK_Toward(s->at_c, s->to_c, s->p.current_max_step_v);
  s->moving = !(s->at_p == s->to_p && (!s->p.has_current || s->at_c == s->to_c));
  if (!s->moving)
    s->settle_left = s->p.settle_readings;
  *pv = s->at_p;
  *cv = s->at_c;
}

RLK_Action
RLK_OnReading(RLK_Search *s, const RLK_Limits *lim, double *piezo_v, double *current_v)
{
  int n = RLK_PointCount(s);

  if (!s->active)
    return RLK_WAIT;
  if (s->moving) {
    piece(s, piezo_v, current_v);
    if (s->returning && !s->moving) {
      s->active = 0;
      return RLK_FAILED;
    }
    return RLK_WRITE;
  }
  if (s->settle_left > 0) {
    s->settle_left--;
    return RLK_WAIT;
  }
  /* A fresh reading out of capture at this point (or at the start): on to
     the next point within the limits, pass after pass. */
  for (;;) {
    double pv, cv;

    s->index++;
    if (s->index >= n) {
      s->index = -1;
      if (++s->pass > s->p.tries) {
        s->pass = s->p.tries;
        s->returning = 1;
        s->to_p = s->p0;
        s->to_c = s->c0;
        piece(s, piezo_v, current_v);
        if (!s->moving) {
          s->active = 0;
          return RLK_FAILED;
        }
        return RLK_WRITE;
      }
      continue;
    }
    if (point_outputs(s, s->index, lim, &pv, &cv) < 0) {
      /* A pass with no point inside the limits at all must still end. */
      continue;
    }
    s->step++;
    s->to_p = pv;
    s->to_c = cv;
    piece(s, piezo_v, current_v);
    return RLK_STEP;
  }
}
