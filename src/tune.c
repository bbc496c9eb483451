/* tune.c - measuring a laser's actuator and proposing gains (pure, no I/O). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "tune.h"

int
TUN_Steps(double v0, double step_v, double lo, double hi, double *up_v, double *down_v)
{
  double u = v0 + step_v, d = v0 - step_v;

  if (!(step_v > 0.0) || !(v0 >= lo && v0 <= hi))
    return -1;
  if (u > hi)
    u = hi;
  if (d < lo)
    d = lo;
  *up_v = u;
  *down_v = d;
  return u - d >= TUN_MIN_SPAN_V ? 0 : -1;
}

static double
target(const TUN_Tune *s, int block)
{
  return block == 1 ? s->p.up_v : block == 3 ? s->p.down_v : s->p.v0;
}

/* The next piece of the move to the present block's target. */
static double
piece(TUN_Tune *s)
{
  double to = target(s, s->block), v = to, m = s->p.max_step_v;

  /* (a rounding residue of 1 nV is not worth a write of its own) */
  if (m > 0.0 && to > s->at_v + m + 1e-9)
    v = s->at_v + m;
  else if (m > 0.0 && to < s->at_v - m - 1e-9)
    v = s->at_v - m;
  s->at_v = v;
  s->moving = v != to;
  if (!s->moving)
    s->settle_left = s->p.settle;
  return v;
}

int
TUN_Start(TUN_Tune *s, const TUN_Params *p)
{
  if (p->block_n < 3 || p->block_n > TUN_MAX_BLOCK_N || p->settle < 0 ||
      !(p->up_v - p->down_v >= TUN_MIN_SPAN_V) || !(p->v0 >= p->down_v && p->v0 <= p->up_v))
    return -1;
  memset(s, 0, sizeof *s);
  s->active = 1;
  s->p = *p;
  s->at_v = p->v0;
  return 0;
}

TUN_Action
TUN_OnReading(TUN_Tune *s, double t, double mhz, double *piezo_v)
{
  if (!s->active)
    return TUN_WAIT;
  if (s->seen++ == 0)
    s->first_t = t;
  s->last_t = t;
  if (s->moving) {
    *piezo_v = piece(s);
    return TUN_WRITE;
  }
  if (s->settle_left > 0) {
    s->settle_left--;
    return TUN_WAIT;
  }
  s->x[s->block][s->n] = mhz;
  s->t[s->block][s->n] = t;
  if (++s->n < s->p.block_n)
    return TUN_WAIT;
  s->n = 0;
  if (++s->block == TUN_BLOCKS) {
    s->active = 0;
    return TUN_DONE;
  }
  if (target(s, s->block) == s->at_v)
    return TUN_WAIT;
  *piezo_v = piece(s);
  return TUN_WRITE;
}

static void
mean_of(const TUN_Tune *s, int b, double *m, double *tm)
{
  double sx = 0.0, st = 0.0;

  for (int i = 0; i < s->p.block_n; i++) {
    sx += s->x[b][i];
    st += s->t[b][i];
  }
  *m = sx / s->p.block_n;
  *tm = st / s->p.block_n;
}

/* The centre blocks a and b interpolated linearly to time t. */
static double
centre_at(const double *m, const double *tm, int a, int b, double t)
{
  if (!(tm[b] > tm[a]))
    return 0.5 * (m[a] + m[b]);
  return m[a] + (m[b] - m[a]) * (t - tm[a]) / (tm[b] - tm[a]);
}

int
TUN_Evaluate(const TUN_Tune *s, TUN_Result *r)
{
  double m[TUN_BLOCKS], tm[TUN_BLOCKS], up, down, v1 = 0.0, vl = 0.0, q2, n2, T;
  int n1 = 0, nl = 0, L = s->p.block_n - 1;

  memset(r, 0, sizeof *r);
  if (s->active || s->block != TUN_BLOCKS)
    return -1;
  for (int b = 0; b < TUN_BLOCKS; b++) {
    mean_of(s, b, &m[b], &tm[b]);
    for (int i = 0; i + 1 < s->p.block_n; i++, n1++) {
      double d = s->x[b][i + 1] - s->x[b][i];
      v1 += d * d;
    }
    double d = s->x[b][L] - s->x[b][0];
    vl += d * d;
    nl++;
  }
  v1 /= n1;
  vl /= nl;
  T = s->seen > 1 ? (s->last_t - s->first_t) / (double)(s->seen - 1) : 0.0;
  r->interval_s = T;
  q2 = T > 0.0 && L > 1 ? (vl - v1) / ((L - 1) * T) : 0.0;
  if (!(q2 > 0.0))
    q2 = 0.0;
  n2 = (v1 - q2 * T) / 2.0;
  if (!(n2 > 0.0))
    n2 = 0.0;
  r->noise_mhz = sqrt(n2);
  r->drift_mhz_rts = sqrt(q2);

  up = m[1] - centre_at(m, tm, 0, 2, tm[1]);
  down = m[3] - centre_at(m, tm, 2, 4, tm[3]);
  r->sensitivity_mhz_per_v = (up - down) / (s->p.up_v - s->p.down_v);
  /* The response must stand out of the reading noise of the block means. */
  if (!isfinite(r->sensitivity_mhz_per_v) ||
      fabs(up - down) <= 4.0 * sqrt(v1 / s->p.block_n) + 1e-9)
    return -1;
  if (TUN_Gains(r->sensitivity_mhz_per_v, T, &r->kp, &r->ki, &r->kd, &r->polarity) != 0)
    return -1;
  return 0;
}

int
TUN_Gains(double sensitivity_mhz_per_v, double interval_s, double *kp, double *ki,
          double *kd, int *polarity)
{
  double g = fabs(sensitivity_mhz_per_v);

  if (!(g > 0.0) || !isfinite(g) || !(interval_s > 0.0) || !isfinite(interval_s))
    return -1;
  *kp = 0.1 / g;
  *ki = 0.4 / (g * interval_s);
  *kd = 0.0;
  *polarity = sensitivity_mhz_per_v < 0.0 ? -1 : 1;
  return 0;
}
