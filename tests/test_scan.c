/* test_scan.c - setpoint scans and setpoint feed-forward (src/scan.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "scan.h"

#define assert_near(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

static SCN_Scan
start(SCN_Wave w, double amp, double period, long cycles)
{
  SCN_Scan s;
  char err[128];

  memset(&s, 0, sizeof s);
  assert_int_equal(SCN_Start(&s, w, 384.0, amp, period, cycles, 383.99, 384.01, 100.0, err,
                             sizeof err), 0);
  assert_true(s.active);
  return s;
}

static void
test_parse(void **state)
{
  SCN_Wave w;

  (void)state;
  assert_int_equal(SCN_ParseWave("Triangle", &w), 0);
  assert_int_equal(w, SCN_TRIANGLE);
  assert_int_equal(SCN_ParseWave("SQUARE", &w), 0);
  assert_int_equal(w, SCN_SQUARE);
  assert_int_equal(SCN_ParseWave("saw", &w), -1);
  assert_int_equal(SCN_ParseWave("", &w), -1);
  assert_string_equal(SCN_WaveName(SCN_SAWTOOTH), "sawtooth");
  assert_string_equal(SCN_WaveName(SCN_SINE), "sine");
}

static void
test_waveforms(void **state)
{
  SCN_Scan s;

  (void)state;
  s = start(SCN_TRIANGLE, 100.0, 10.0, 0);
  assert_near(SCN_Offset(&s, 100.0), 0.0, 1e-9);
  assert_near(SCN_Offset(&s, 101.25), 50.0, 1e-9);
  assert_near(SCN_Offset(&s, 102.5), 100.0, 1e-9);
  assert_near(SCN_Offset(&s, 105.0), 0.0, 1e-9);
  assert_near(SCN_Offset(&s, 107.5), -100.0, 1e-9);
  assert_near(SCN_Offset(&s, 110.0), 0.0, 1e-9);
  assert_near(SCN_Offset(&s, 112.5), 100.0, 1e-9);   /* the next period */
  assert_near(SCN_Offset(&s, 99.0), 0.0, 1e-12);     /* before the start */

  s = start(SCN_SAWTOOTH, 100.0, 10.0, 0);
  assert_near(SCN_Offset(&s, 102.5), 50.0, 1e-9);
  assert_near(SCN_Offset(&s, 104.999), 99.98, 1e-6);
  assert_near(SCN_Offset(&s, 105.0), -100.0, 1e-9);
  assert_near(SCN_Offset(&s, 107.5), -50.0, 1e-9);

  s = start(SCN_SINE, 100.0, 10.0, 0);
  assert_near(SCN_Offset(&s, 102.5), 100.0, 1e-9);
  assert_near(SCN_Offset(&s, 107.5), -100.0, 1e-9);
  assert_near(SCN_Offset(&s, 101.0), 100.0 * sin(0.2 * M_PI), 1e-9);

  s = start(SCN_SQUARE, 100.0, 10.0, 0);
  assert_near(SCN_Offset(&s, 100.1), 100.0, 1e-12);
  assert_near(SCN_Offset(&s, 104.9), 100.0, 1e-12);
  assert_near(SCN_Offset(&s, 105.1), -100.0, 1e-12);

  /* every waveform stays inside centre +- A */
  for (int w = 0; w < 4; w++) {
    s = start((SCN_Wave)w, 100.0, 3.0, 0);
    for (double t = 100.0; t < 110.0; t += 0.0137) {
      double o = SCN_Offset(&s, t);
      assert_true(o >= -100.0 - 1e-9 && o <= 100.0 + 1e-9);
    }
  }
}

static void
test_cycles(void **state)
{
  SCN_Scan s;

  (void)state;
  s = start(SCN_TRIANGLE, 100.0, 10.0, 2);
  assert_false(SCN_Done(&s, 119.9));
  assert_near(SCN_Setpoint(&s, 102.5), 384.0 + 100e-6, 1e-12);
  assert_true(SCN_Done(&s, 120.0));
  assert_true(SCN_Setpoint(&s, 122.5) == 384.0);     /* exactly the centre */
  s = start(SCN_SQUARE, 100.0, 10.0, 0);
  assert_false(SCN_Done(&s, 1e9));
}

static void
test_ranges(void **state)
{
  SCN_Scan s;
  char err[128];

  (void)state;
  memset(&s, 0, sizeof s);
  /* 384.0 +- 10 GHz inside 383.99..384.01; one MHz more is not */
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 10000.0, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), 0);
  s.active = 0;
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 10001.0, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_non_null(strstr(err, "would leave"));
  assert_false(s.active);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.005, 6000.0, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 0.0, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, NAN, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 1.0, 0.05, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 1.0, INFINITY, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, SCN_SINE, 384.0, 1.0, 1.0, -1, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_int_equal(SCN_Start(&s, (SCN_Wave)7, 384.0, 1.0, 1.0, 0, 383.99, 384.01, 0.0, err,
                             sizeof err), -1);
  assert_false(s.active);
}

static void
test_feedforward(void **state)
{
  (void)state;
  assert_near(SCN_FeedForwardV(40.0, 400.0, 1), 0.1, 1e-12);
  assert_near(SCN_FeedForwardV(40.0, -400.0, 1), 0.1, 1e-12);    /* polarity decides */
  assert_near(SCN_FeedForwardV(40.0, 400.0, -1), -0.1, 1e-12);
  assert_near(SCN_FeedForwardV(-40.0, 400.0, -1), 0.1, 1e-12);
  assert_true(SCN_FeedForwardV(40.0, 0.0, 1) == 0.0);
  assert_true(SCN_FeedForwardV(40.0, NAN, 1) == 0.0);
  assert_true(SCN_FeedForwardV(NAN, 400.0, 1) == 0.0);
  assert_true(SCN_FeedForwardV(40.0, INFINITY, 1) == 0.0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_waveforms),
    cmocka_unit_test(test_cycles),
    cmocka_unit_test(test_ranges),
    cmocka_unit_test(test_feedforward),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
