/* test_tune.c - measuring a laser's actuator and proposing gains (src/tune.c),
 * against a small simulated laser: f = G v + walk + noise. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune.h"

#define assert_near(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

static unsigned long rng = 12345;

static double
uniform(void)
{
  rng = rng * 6364136223846793005UL + 1442695040888963407UL;
  return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static double
gauss(void)
{
  return sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform());
}

typedef struct {
  double g, noise, walk_rts, slope_mhz_s;   /* the laser */
  double T;                                 /* reading interval */
  int lag;                                  /* readings a write takes to show */
} Plant;

/* Run a whole sequence; returns TUN_Evaluate's result, fills r, counts
   writes and checks every write against the limits and max_step_v. */
static int
run(const Plant *pl, const TUN_Params *p, TUN_Result *r, int *writes, double lo, double hi)
{
  TUN_Tune s;
  double v = p->v0, applied[8], walk = 0.0, t = 0.0;
  int n = 0;

  for (int i = 0; i < 8; i++)
    applied[i] = v;
  assert_int_equal(TUN_Start(&s, p), 0);
  *writes = 0;
  for (int i = 0; i < 10000; i++) {
    double out, f;
    TUN_Action a;

    t += pl->T;
    walk += pl->walk_rts * sqrt(pl->T) * gauss();
    f = pl->g * applied[pl->lag] + walk + pl->slope_mhz_s * t + pl->noise * gauss();
    a = TUN_OnReading(&s, t, f, &out);
    if (a == TUN_WRITE) {
      assert_true(out >= lo && out <= hi);
      if (p->max_step_v > 0.0)
        assert_true(fabs(out - v) <= p->max_step_v + 2e-9);
      v = out;
      (*writes)++;
    }
    for (int k = 7; k > 0; k--)
      applied[k] = applied[k - 1];
    applied[0] = v;
    n++;
    if (a == TUN_DONE) {
      assert_near(v, p->v0, 1e-12);          /* back where it started */
      assert_false(s.active);
      return TUN_Evaluate(&s, r);
    }
  }
  fail_msg("the sequence did not end");
  return -1;
}

static TUN_Params
params(double v0, double lo, double hi, double max_step)
{
  TUN_Params p;

  memset(&p, 0, sizeof p);
  p.v0 = v0;
  assert_int_equal(TUN_Steps(v0, TUN_DEFAULT_STEP_V, lo, hi, &p.up_v, &p.down_v), 0);
  p.max_step_v = max_step;
  p.settle = TUN_DEFAULT_SETTLE;
  p.block_n = TUN_DEFAULT_BLOCK_N;
  return p;
}

static void
test_steps(void **state)
{
  double u, d;

  (void)state;
  assert_int_equal(TUN_Steps(5.0, 0.5, 0.0, 10.0, &u, &d), 0);
  assert_near(u, 5.5, 1e-12);
  assert_near(d, 4.5, 1e-12);
  assert_int_equal(TUN_Steps(9.9, 0.5, 0.0, 10.0, &u, &d), 0);   /* clipped at a limit */
  assert_near(u, 10.0, 1e-12);
  assert_near(d, 9.4, 1e-12);
  assert_int_equal(TUN_Steps(1.0, 0.5, 1.0, 1.01, &u, &d), -1);  /* no room */
  assert_int_equal(TUN_Steps(11.0, 0.5, 0.0, 10.0, &u, &d), -1); /* outside */
  assert_int_equal(TUN_Steps(5.0, 0.0, 0.0, 10.0, &u, &d), -1);
}

static void
test_measures_both_signs(void **state)
{
  static const Plant plants[] = {
    { 380.0, 1.0, 2.0, 0.0, 0.215, 0 },
    { -450.0, 0.8, 2.0, 0.005, 0.215, 0 },
    { 90.0, 0.3, 0.5, 0.0, 0.215, 1 },        /* a write that shows one reading late */
    { 900.0, 10.0, 3.0, 0.0, 0.1, 0 },
  };
  (void)state;
  for (size_t i = 0; i < sizeof plants / sizeof plants[0]; i++) {
    const Plant *pl = &plants[i];
    TUN_Params p = params(5.0, 0.0, 10.0, 1.0);
    TUN_Result r;
    int writes;

    assert_int_equal(run(pl, &p, &r, &writes, 0.0, 10.0), 0);
    assert_int_equal(writes, 4);
    assert_true(fabs(r.sensitivity_mhz_per_v - pl->g) <= 0.05 * fabs(pl->g));
    assert_int_equal(r.polarity, pl->g < 0 ? -1 : 1);
    assert_near(r.interval_s, pl->T, 1e-9);
    assert_near(r.kp, 0.1 / fabs(r.sensitivity_mhz_per_v), 1e-15);
    assert_near(r.ki, 0.4 / (fabs(r.sensitivity_mhz_per_v) * pl->T), 1e-12);
    assert_true(r.kd == 0.0);
    /* noise: the right size (a rough estimate from 40 readings) */
    assert_true(r.noise_mhz <= 3.0 * pl->noise + 1.0);
  }
}

static void
test_split_moves_and_limits(void **state)
{
  Plant pl = { 200.0, 0.5, 0.0, 0.0, 0.2, 0 };
  TUN_Params p = params(9.8, 0.0, 10.0, 0.1);     /* up clipped at 10, steps of 0.1 V */
  TUN_Result r;
  int writes;

  (void)state;
  assert_int_equal(run(&pl, &p, &r, &writes, 0.0, 10.0), 0);
  /* 9.8 -> 10 (2), -> 9.8 (2), -> 9.3 (5), -> 9.8 (5) */
  assert_int_equal(writes, 14);
  assert_true(fabs(r.sensitivity_mhz_per_v - 200.0) <= 10.0);
}

static void
test_no_response(void **state)
{
  Plant pl = { 0.0, 1.0, 0.0, 0.0, 0.2, 0 };
  TUN_Params p = params(5.0, 0.0, 10.0, 1.0);
  TUN_Result r;
  int writes;

  (void)state;
  assert_int_equal(run(&pl, &p, &r, &writes, 0.0, 10.0), -1);
}

static void
test_gains_and_bad_params(void **state)
{
  double kp, ki, kd;
  int pol;
  TUN_Tune s;
  TUN_Params p;

  (void)state;
  /* conf/sim.conf's hand-set gains of cool780 (G = 380 MHz/V, T = 0.2 s) */
  assert_int_equal(TUN_Gains(380.0, 0.2, &kp, &ki, &kd, &pol), 0);
  assert_near(kp, 0.00026, 0.000005);
  assert_near(ki, 0.0052, 0.0001);
  assert_int_equal(pol, 1);
  assert_int_equal(TUN_Gains(-450.0, 0.2, &kp, &ki, &kd, &pol), 0);
  assert_int_equal(pol, -1);
  assert_near(kp, 0.00022, 0.000005);
  assert_int_equal(TUN_Gains(0.0, 0.2, &kp, &ki, &kd, &pol), -1);
  assert_int_equal(TUN_Gains(100.0, 0.0, &kp, &ki, &kd, &pol), -1);
  assert_int_equal(TUN_Gains(NAN, 0.2, &kp, &ki, &kd, &pol), -1);

  p = params(5.0, 0.0, 10.0, 1.0);
  p.block_n = 2;
  assert_int_equal(TUN_Start(&s, &p), -1);
  p.block_n = TUN_MAX_BLOCK_N + 1;
  assert_int_equal(TUN_Start(&s, &p), -1);
  p = params(5.0, 0.0, 10.0, 1.0);
  p.up_v = p.down_v;
  assert_int_equal(TUN_Start(&s, &p), -1);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_steps),
    cmocka_unit_test(test_measures_both_signs),
    cmocka_unit_test(test_split_moves_and_limits),
    cmocka_unit_test(test_no_response),
    cmocka_unit_test(test_gains_and_bad_params),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
