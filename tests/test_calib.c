/* test_calib.c - the calibration correction against a reference laser:
 * filter (time-step aware), slew limit, hold reasons (invalid, stale,
 * tolerance, moved), recovery, re-acquisition after a long hold, restore,
 * reconfiguration and the wlmdata mode's judgement.  Time is injected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "calib.h"

#define F_REF 384.0                       /* THz: 1 ppb = 0.384 MHz */
#define MHZ(x) ((x) * 1e-6)               /* MHz in THz */

#define assert_near(a, b, eps) do { \
    double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (eps))) \
      fail_msg("%s = %.15g, expected %.15g (+-%g)", #a, a_, b_, (double)(eps)); \
  } while (0)

static CAL_Params
params(void)
{
  CAL_Params p = {
    .mode = CAL_MODE_CORRECT, .ref_thz = F_REF, .tau_s = 10.0,
    .max_rate_mhz_per_min = 60.0, .tolerance_mhz = 100.0, .stale_s = 1.0,
  };
  return p;
}

static CAL_Report
report(const CAL_Ctx *c, double now)
{
  CAL_Report r;

  CAL_GetReport(c, now, &r);
  return r;
}

/* Feed the reference at offset_mhz(t) every dt from t0 to t1; returns t1. */
static double
feed(CAL_Ctx *c, double t0, double t1, double dt, double (*offset_mhz)(double), double k)
{
  double t;

  for (t = t0; t <= t1 + 1e-9; t += dt) {
    CAL_Check(c, t);
    CAL_OnReference(c, F_REF + MHZ(offset_mhz ? offset_mhz(t) : k), t);
  }
  return t - dt;
}

static void
test_waiting_then_acquires(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  CAL_Report r = report(c, 0.0);

  (void)state;
  assert_int_equal(r.state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(r.reason), "waiting");
  assert_false(CAL_Applies(c));
  assert_near(CAL_Correct(c, 300.0), 300.0, 0.0);
  CAL_OnReference(c, F_REF + MHZ(20.0), 1.0);
  r = report(c, 1.0);
  assert_string_equal(CAL_StateName(r.state), "tracking");
  assert_true(r.applies);
  assert_near(r.offset_mhz, 20.0, 1e-6);
  assert_near(r.ppb, 20.0 / 0.384, 1e-4);
  /* Every other channel is divided by 1 + eps: 20 MHz at 384 THz is
     10 MHz at 192 THz. */
  assert_near(CAL_Correct(c, 192.0 + MHZ(10.0)), 192.0, 1e-12);
  assert_near(CAL_Correct(c, -3.0), -3.0, 0.0);     /* error codes pass */
  CAL_Destroy(c);
}

static void
test_filter_time_constant(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);

  (void)state;
  p.max_rate_mhz_per_min = 6000.0;       /* no slew limit here */
  CAL_Configure(c, &p);
  CAL_OnReference(c, F_REF, 0.0);
  /* A 3 MHz step (within the band): after tau, 1 - 1/e of it, whatever
     the reading interval. */
  feed(c, 0.05, 10.0, 0.05, NULL, 3.0);
  assert_near(report(c, 10.0).offset_mhz, 3.0 * (1 - exp(-1.0)), 0.01);
  CAL_Destroy(c);

  c = CAL_Create(&p);
  CAL_OnReference(c, F_REF, 0.0);
  feed(c, 0.5, 10.0, 0.5, NULL, 3.0);
  assert_near(report(c, 10.0).offset_mhz, 3.0 * (1 - exp(-1.0)), 0.01);
  CAL_Destroy(c);
}

static double
ramp40(double t)
{
  return 40.0 * t / 60.0;                /* 40 MHz/min */
}

static void
test_tracks_drift_with_lag(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c;
  double t;

  (void)state;
  p.tau_s = 2.0;
  c = CAL_Create(&p);
  t = feed(c, 0.0, 120.0, 0.05, ramp40, 0);
  /* Lag of a first-order filter behind a ramp: rate * tau. */
  assert_int_equal(report(c, t).state, CAL_TRACKING);
  assert_near(report(c, t).offset_mhz, ramp40(t) - 40.0 / 60.0 * 2.0, 0.05);
  CAL_Destroy(c);
}

static void
test_invalid_and_recovery(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double before;

  (void)state;
  feed(c, 0.0, 5.0, 0.1, NULL, 10.0);
  before = report(c, 5.0).eps;
  CAL_OnReference(c, -3.0, 5.1);         /* one error code: skipped */
  assert_int_equal(report(c, 5.1).state, CAL_TRACKING);
  CAL_OnReference(c, -3.0, 5.2);
  CAL_OnReference(c, 0.0, 5.3);
  assert_int_equal(report(c, 5.3).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, 5.3).reason), "invalid");
  assert_near(report(c, 5.3).eps, before, 0.0);
  CAL_OnReference(c, F_REF + MHZ(10.0), 5.4);
  assert_int_equal(report(c, 5.4).state, CAL_TRACKING);
  CAL_Destroy(c);
}

static void
test_stale(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double before;

  (void)state;
  feed(c, 0.0, 5.0, 0.1, NULL, 10.0);
  before = report(c, 5.0).eps;
  CAL_Check(c, 5.9);
  assert_int_equal(report(c, 5.9).state, CAL_TRACKING);
  CAL_Check(c, 6.1);
  assert_int_equal(report(c, 6.1).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, 6.1).reason), "stale");
  assert_near(CAL_Correct(c, F_REF), F_REF / (1 + before), 0.0);
  assert_near(report(c, 8.0).age_s, 3.0, 1e-9);
  /* Back after 10 s at the same offset: tracking again, no jump. */
  CAL_OnReference(c, F_REF + MHZ(10.0), 16.0);
  assert_int_equal(report(c, 16.0).state, CAL_TRACKING);
  assert_near(report(c, 16.0).offset_mhz, 10.0, 0.01);
  CAL_Destroy(c);
}

static void
test_tolerance(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);

  (void)state;
  CAL_OnReference(c, F_REF + MHZ(150.0), 0.0);
  assert_int_equal(report(c, 0.0).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, 0.0).reason), "tolerance");
  assert_false(CAL_Applies(c));
  assert_near(report(c, 0.0).measured_mhz, 150.0, 1e-6);
  CAL_OnReference(c, F_REF + MHZ(-50.0), 0.1);
  assert_int_equal(report(c, 0.1).state, CAL_TRACKING);
  /* A slow drift out of tolerance freezes the correction near the edge. */
  for (double t = 0.2, off = -50.0; t < 200.0; t += 0.1, off -= 0.05) {
    CAL_OnReference(c, F_REF + MHZ(off), t);
  }
  assert_int_equal(report(c, 200.0).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, 200.0).reason), "tolerance");
  assert_true(report(c, 200.0).offset_mhz > -101.0 && report(c, 200.0).offset_mhz < -90.0);
  CAL_Destroy(c);
}

static void
test_jump_is_moved_and_never_drags(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double before;

  (void)state;
  p.tolerance_mhz = 1000.0;
  CAL_Configure(c, &p);
  feed(c, 0.0, 30.0, 0.05, NULL, 5.0);
  before = report(c, 30.0).offset_mhz;
  /* The reference unlocks: +200 MHz. */
  for (int i = 1; i <= CAL_MOVED_N; i++) {
    CAL_OnReference(c, F_REF + MHZ(205.0), 30.0 + 0.05 * i);
    assert_int_equal(report(c, 30.0).state, i < CAL_MOVED_N ? CAL_TRACKING : CAL_HOLD);
  }
  assert_string_equal(CAL_ReasonName(report(c, 31.0).reason), "moved");
  feed(c, 30.2, 60.0, 0.05, NULL, 205.0);
  assert_int_equal(report(c, 60.0).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, 60.0).reason), "moved");
  assert_near(report(c, 60.0).offset_mhz, before, 0.0);
  /* It relocks: tracking again at once. */
  CAL_OnReference(c, F_REF + MHZ(5.0), 60.05);
  assert_int_equal(report(c, 60.05).state, CAL_TRACKING);
  CAL_Destroy(c);
}

static void
test_single_outlier_skipped(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double before;

  (void)state;
  feed(c, 0.0, 10.0, 0.05, NULL, 5.0);
  before = report(c, 10.0).eps;
  CAL_OnReference(c, F_REF + MHZ(3000.0), 10.05);
  assert_int_equal(report(c, 10.05).state, CAL_TRACKING);
  assert_near(report(c, 10.05).eps, before, 0.0);
  CAL_Destroy(c);
}

static double
fast_ramp(double t)
{
  return 300.0 * t / 60.0;               /* 300 MHz/min: 5x max_rate */
}

static void
test_fast_drift_is_slew_limited(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double prev, t;

  (void)state;
  p.tolerance_mhz = 1e5;
  CAL_Configure(c, &p);
  CAL_OnReference(c, F_REF, 0.0);
  prev = 0.0;
  for (t = 0.05; t < 60.0; t += 0.05) {
    CAL_OnReference(c, F_REF + MHZ(fast_ramp(t)), t);
    double now = report(c, t).offset_mhz;
    /* Never faster than max_rate (60 MHz/min = 0.05 MHz per 50 ms). */
    assert_true(now - prev <= 0.05 + 1e-9);
    prev = now;
  }
  assert_int_equal(report(c, t).state, CAL_HOLD);
  assert_string_equal(CAL_ReasonName(report(c, t).reason), "moved");
  assert_true(prev < 60.0 * t / 60.0 + 1e-6);
  CAL_Destroy(c);
}

static void
test_reacquire_after_long_hold(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double prev, t;

  (void)state;
  p.tolerance_mhz = 1000.0;
  CAL_Configure(c, &p);
  feed(c, 0.0, 10.0, 0.05, NULL, 0.0);
  /* Ten minutes without the reference; meanwhile the calibration drifted
     by 100 MHz (10 MHz/min, well within max_rate). */
  CAL_Check(c, 610.0);
  assert_int_equal(report(c, 610.0).state, CAL_HOLD);
  prev = report(c, 610.0).offset_mhz;
  for (t = 610.0; t < 800.0; t += 0.05) {
    CAL_OnReference(c, F_REF + MHZ(100.0), t);
    double now = report(c, t).offset_mhz;
    /* The first reading after the gap may move stale_s worth of max_rate. */
    assert_true(now - prev <= 60.0 / 60.0 * (t == 610.0 ? 1.0 : 0.05) + 1e-9);
    if (t > 610.0)
      assert_int_equal(report(c, t).state, CAL_TRACKING);
    prev = now;
  }
  /* Re-acquired at max_rate (100 s for 100 MHz), then filtered. */
  assert_near(report(c, t).offset_mhz, 100.0, 0.5);
  CAL_Destroy(c);
}

/* A dropout (error codes) of 10 s while the calibration drifts: frozen,
   then caught up at max_rate, never in one step. */
static void
test_dropout_no_jump(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c;
  double prev, t, frozen;

  (void)state;
  p.tau_s = 2.0;
  p.max_rate_mhz_per_min = 120.0;
  c = CAL_Create(&p);
  t = feed(c, 0.0, 30.0, 0.044, ramp40, 0);
  frozen = report(c, t).offset_mhz;
  for (t += 0.044; t < 40.0; t += 0.044) {
    CAL_Check(c, t);
    CAL_OnReference(c, -3.0, t);
    assert_near(report(c, t).offset_mhz, frozen, 0.0);
  }
  assert_int_equal(report(c, t).state, CAL_HOLD);
  prev = frozen;
  for (; t < 60.0; t += 0.044) {
    CAL_OnReference(c, F_REF + MHZ(ramp40(t)), t);
    double now = report(c, t).offset_mhz;
    assert_int_equal(report(c, t).state, CAL_TRACKING);
    assert_true(fabs(now - prev) <= 2.0 * 0.044 + 1e-9);
    prev = now;
  }
  assert_near(prev, ramp40(t) - 40.0 / 60.0 * 2.0, 0.3);
  CAL_Destroy(c);
}

static void
test_restore(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);
  double eps = MHZ(30.0) / F_REF;

  (void)state;
  CAL_Restore(c, eps, 120.0, 1000.0);
  assert_true(CAL_Applies(c));
  assert_int_equal(report(c, 1000.0).state, CAL_HOLD);
  assert_near(report(c, 1000.0).offset_mhz, 30.0, 1e-6);
  assert_near(report(c, 1000.0).age_s, 120.0, 1e-9);
  /* The reference 50 MHz away after 2 minutes down: within what max_rate
     allows; approached at max_rate, no jump. */
  CAL_OnReference(c, F_REF + MHZ(80.0), 1000.0);
  assert_int_equal(report(c, 1000.0).state, CAL_TRACKING);
  assert_true(report(c, 1000.0).offset_mhz < 30.0 + 1e-6 + 60.0 / 60.0 * 120.0);
  CAL_OnReference(c, F_REF + MHZ(80.0), 1000.05);
  assert_true(report(c, 1000.05).offset_mhz - report(c, 1000.0).offset_mhz <= 0.05 + 1e-9);
  /* Nonsense in a state file is ignored. */
  CAL_Destroy(c);
  c = CAL_Create(&p);
  CAL_Restore(c, NAN, 1.0, 0.0);
  CAL_Restore(c, 0.5, 1.0, 0.0);
  assert_false(CAL_Applies(c));
  CAL_Destroy(c);
}

static void
test_configure(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c = CAL_Create(&p);

  (void)state;
  feed(c, 0.0, 1.0, 0.1, NULL, 10.0);
  p.tau_s = 5.0;
  CAL_Configure(c, &p);                 /* a new tau keeps the correction */
  assert_true(CAL_Applies(c));
  assert_near(report(c, 1.0).offset_mhz, 10.0, 1e-6);
  p.ref_thz = F_REF + 1.0;
  CAL_Configure(c, &p);                 /* a new reference starts again */
  assert_false(CAL_Applies(c));
  assert_string_equal(CAL_ReasonName(report(c, 1.0).reason), "waiting");
  CAL_Destroy(c);
}

static void
test_wlmdata_mode(void **state)
{
  CAL_Params p = params();
  CAL_Ctx *c;

  (void)state;
  p.mode = CAL_MODE_WLMDATA;
  c = CAL_Create(&p);
  CAL_OnReference(c, F_REF + MHZ(20.0), 0.0);
  assert_int_equal(report(c, 0.0).state, CAL_TRACKING);
  assert_false(CAL_Applies(c));
  assert_near(CAL_Correct(c, 300.0), 300.0, 0.0);
  assert_near(report(c, 0.0).offset_mhz, 20.0, 1e-6);
  /* After the wavemeter calibrates itself the reading jumps: fine here. */
  CAL_OnReference(c, F_REF, 0.1);
  assert_int_equal(report(c, 0.1).state, CAL_TRACKING);
  CAL_OnReference(c, F_REF + MHZ(120.0), 0.2);
  assert_string_equal(CAL_ReasonName(report(c, 0.2).reason), "tolerance");
  CAL_SetCalibrating(c, 1, 0.3);
  CAL_OnReference(c, F_REF, 0.4);
  assert_string_equal(CAL_ReasonName(report(c, 0.4).reason), "calibrating");
  CAL_Check(c, 5.0);
  assert_string_equal(CAL_ReasonName(report(c, 5.0).reason), "calibrating");
  CAL_SetCalibrating(c, 0, 5.0);
  CAL_OnReference(c, F_REF, 5.1);
  assert_int_equal(report(c, 5.1).state, CAL_TRACKING);
  CAL_Destroy(c);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_waiting_then_acquires),
    cmocka_unit_test(test_filter_time_constant),
    cmocka_unit_test(test_tracks_drift_with_lag),
    cmocka_unit_test(test_invalid_and_recovery),
    cmocka_unit_test(test_stale),
    cmocka_unit_test(test_tolerance),
    cmocka_unit_test(test_jump_is_moved_and_never_drags),
    cmocka_unit_test(test_single_outlier_skipped),
    cmocka_unit_test(test_fast_drift_is_slew_limited),
    cmocka_unit_test(test_reacquire_after_long_hold),
    cmocka_unit_test(test_dropout_no_jump),
    cmocka_unit_test(test_restore),
    cmocka_unit_test(test_configure),
    cmocka_unit_test(test_wlmdata_mode),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
