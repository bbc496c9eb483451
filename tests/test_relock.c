/* test_relock.c - the relock search's grid and pacing (src/relock.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "relock.h"

#define assert_near(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

static const RLK_Limits WIDE = { 0.0, 10.0, -1.0, 1.0 };

static RLK_Params
params(void)
{
  RLK_Params p;

  memset(&p, 0, sizeof p);
  p.piezo_span_v = 1.0;        /* DESIGN.md defaults */
  p.piezo_step_v = 0.1;
  p.settle_readings = 1;
  p.tries = 3;
  return p;
}

static void
test_outward(void **state)
{
  static const double want[] = { 0, 1, -1, 2, -2, 3, -3 };

  (void)state;
  for (int k = 0; k < 7; k++)
    assert_near(RLK_Outward(k, 0.5), want[k] * 0.5, 1e-12);
  assert_int_equal(RLK_AxisSteps(1.0, 0.1), 10);      /* rounding: 9.999... counts 10 */
  assert_int_equal(RLK_AxisSteps(0.3, 0.1), 3);
  assert_int_equal(RLK_AxisSteps(1.05, 0.1), 10);
  assert_int_equal(RLK_AxisSteps(0.0, 0.1), 0);
  assert_int_equal(RLK_AxisSteps(1.0, 0.0), 0);
  assert_near(RLK_Toward(5.0, 5.3, 0.25), 5.25, 1e-12);
  assert_near(RLK_Toward(5.0, 4.7, 0.25), 4.75, 1e-12);
  assert_near(RLK_Toward(5.0, 5.2, 0.25), 5.2, 0.0);
  assert_near(RLK_Toward(5.0, 9.0, 0.0), 9.0, 0.0);
}

/* The default grid: +0.1, -0.1, +0.2 ... -1.0 around the centre, one step
   per settle reading + one fresh reading; 3 passes, then home and failed. */
static void
test_default_grid(void **state)
{
  RLK_Params p = params();
  RLK_Search s;
  double pv, cv;
  int steps = 0, waits = 0;

  (void)state;
  assert_int_equal(RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0), 0);
  assert_int_equal(RLK_PointCount(&s), 20);
  for (int pass = 1; pass <= 3; pass++) {
    for (int i = 0; i < 20; i++) {
      double want = 5.0 + RLK_Outward(i + 1, 0.1);

      assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_STEP);
      assert_near(pv, want, 1e-12);
      assert_int_equal(s.pass, pass);
      assert_int_equal(s.step, ++steps);
      /* the first reading after the step is discarded */
      assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_WAIT);
      waits++;
    }
  }
  assert_near(pv, 5.0 - 1.0, 1e-12);
  /* the fresh reading at the last point of the last pass: home, failed */
  assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_FAILED);
  assert_near(pv, 5.0, 0.0);
  assert_int_equal(s.active, 0);
  assert_int_equal(steps, 60);
  assert_int_equal(waits, 60);
  assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_WAIT);
}

/* Points outside the limits in force are skipped; a big move is split
   into max_step_v pieces, the settling counted only once there, and the
   way home too. */
static void
test_limits_and_split(void **state)
{
  RLK_Params p = params();
  RLK_Limits lim = { 0.0, 5.25, -1.0, 1.0 };
  RLK_Search s;
  double pv, cv, last = 5.0;
  int n = 0;

  (void)state;
  p.piezo_span_v = 2.0;
  p.piezo_step_v = 1.0;
  p.settle_readings = 2;
  p.tries = 1;
  p.piezo_max_step_v = 0.75;
  RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0);
  /* +1 (6.0 > 5.25) skipped: -1 first, in two pieces (0.75 + 0.25) */
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_STEP);
  assert_near(pv, 4.25, 1e-12);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WRITE);
  assert_near(pv, 4.0, 1e-12);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WAIT);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WAIT);
  /* +2 skipped, -2 = 3.0: one piece of 0.75, then 0.25 */
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_STEP);
  assert_near(pv, 3.25, 1e-12);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WRITE);
  assert_near(pv, 3.0, 1e-12);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WAIT);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_WAIT);
  /* the pass is over (one try): home in pieces of at most 0.75 */
  last = 3.0;
  for (;;) {
    RLK_Action a = RLK_OnReading(&s, &lim, &pv, &cv);

    assert_true(fabs(pv - last) <= 0.75 + 1e-12);
    last = pv;
    n++;
    if (a == RLK_FAILED)
      break;
    assert_int_equal(a, RLK_WRITE);
  }
  assert_near(pv, 5.0, 0.0);
  assert_int_equal(n, 3);
  assert_int_equal(s.step, 2);
}

/* With a current span: for each current offset (outward), the piezo
   offsets (outward); the current follows the piezo through the
   feed-forward; current points outside the limits are skipped. */
static void
test_current_grid(void **state)
{
  RLK_Params p = params();
  RLK_Limits lim = { 0.0, 10.0, -0.16, 1.0 };
  RLK_Search s;
  double pv, cv, dp, dc;

  (void)state;
  p.piezo_span_v = 0.2;
  p.piezo_step_v = 0.1;
  p.current_span_v = 0.2;
  p.current_step_v = 0.1;
  p.settle_readings = 0;
  p.has_current = 1;
  p.feedforward = -0.5;
  RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0);
  assert_int_equal(RLK_PointCount(&s), 24);
  assert_int_equal(RLK_Point(&s, 0, &dp, &dc), 0);
  assert_near(dp, 0.1, 1e-12);
  assert_near(dc, 0.0, 1e-12);
  assert_int_equal(RLK_Point(&s, 4, &dp, &dc), 0);     /* grid 5: dp 0, dc +0.1 */
  assert_near(dp, 0.0, 1e-12);
  assert_near(dc, 0.1, 1e-12);
  assert_int_equal(RLK_Point(&s, 24, &dp, &dc), -1);

  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_STEP);
  assert_near(pv, 5.1, 1e-12);
  assert_near(cv, -0.05, 1e-12);                       /* feed-forward */
  for (int i = 1; i < 4; i++)
    assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_STEP);
  assert_near(pv, 4.8, 1e-12);
  assert_near(cv, 0.1, 1e-12);
  assert_int_equal(RLK_OnReading(&s, &lim, &pv, &cv), RLK_STEP);
  assert_near(pv, 5.0, 1e-12);
  assert_near(cv, 0.1, 1e-12);
  /* the rest of the pass: rows dc = -0.1 (4 of 5 inside: -0.2 is out),
     +0.2 (5), -0.2 (2: -0.15 and -0.1); every point inside the limits */
  for (;;) {
    RLK_Action a = RLK_OnReading(&s, &lim, &pv, &cv);

    if (s.pass > 1 || a != RLK_STEP)
      break;
    assert_true(cv >= lim.current_lo && cv <= lim.current_hi);
  }
  assert_int_equal(s.step, 5 + 4 + 4 + 5 + 2 + 1);   /* + the first of pass 2 */
}

/* No span at all: no search. */
static void
test_empty(void **state)
{
  RLK_Params p = params();
  RLK_Search s;
  double pv, cv;

  (void)state;
  p.piezo_span_v = 0.0;
  assert_int_equal(RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0), -1);
  assert_int_equal(s.active, 0);
  assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_WAIT);
  /* limits that exclude every point: passes end, home, failed */
  p = params();
  p.tries = 2;
  RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0);
  {
    RLK_Limits none = { 5.0, 5.0, -1.0, 1.0 };
    assert_int_equal(RLK_OnReading(&s, &none, &pv, &cv), RLK_FAILED);
    assert_near(pv, 5.0, 0.0);
  }
  /* stopped: nothing more */
  RLK_Start(&s, &p, 5.0, 0.0, 5.0, 0.0);
  RLK_Stop(&s);
  assert_int_equal(RLK_OnReading(&s, &WIDE, &pv, &cv), RLK_WAIT);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_outward),
    cmocka_unit_test(test_default_grid),
    cmocka_unit_test(test_limits_and_split),
    cmocka_unit_test(test_current_grid),
    cmocka_unit_test(test_empty),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
