/* test_util.c - the small helpers every program shares (src/util.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static void
test_timeval(void **st)
{
  struct timeval tv;

  (void)st;
  tv = UTL_Timeval(1.25, 10.0);
  assert_int_equal(tv.tv_sec, 1);
  assert_int_equal(tv.tv_usec, 250000);
  tv = UTL_Timeval(0.000001, 10.0);
  assert_int_equal(tv.tv_sec, 0);
  assert_true(tv.tv_usec >= 0 && tv.tv_usec <= 1);
  /* negative, NaN and -inf wait not at all; +inf and large ones the cap */
  tv = UTL_Timeval(-3.0, 10.0);
  assert_true(tv.tv_sec == 0 && tv.tv_usec == 0);
  tv = UTL_Timeval(NAN, 10.0);
  assert_true(tv.tv_sec == 0 && tv.tv_usec == 0);
  tv = UTL_Timeval(-INFINITY, 10.0);
  assert_true(tv.tv_sec == 0 && tv.tv_usec == 0);
  tv = UTL_Timeval(INFINITY, 3600.0);
  assert_true(tv.tv_sec == 3600 && tv.tv_usec == 0);
  tv = UTL_Timeval(1e300, 1e7);
  assert_true(tv.tv_sec == 10000000 && tv.tv_usec == 0);
  /* the microseconds are always a valid timeval field */
  for (double s = 0.0; s < 3.0; s += 0.0999999) {
    tv = UTL_Timeval(s, 10.0);
    assert_true(tv.tv_usec >= 0 && tv.tv_usec <= 999999);
    assert_true(fabs((double)tv.tv_sec + tv.tv_usec * 1e-6 - s) < 2e-6);
  }
}

static void
test_set_err(void **st)
{
  char err[8];

  (void)st;
  UTL_SetErr(err, sizeof err, "bad %d", 42);
  assert_string_equal(err, "bad 42");
  UTL_SetErr(err, sizeof err, "%s", "truncated message");
  assert_string_equal(err, "truncat");
  UTL_SetErr(NULL, 0, "nothing %d", 1);      /* no buffer: no crash */
  memcpy(err, "keep", 5);
  UTL_SetErr(err, 0, "x");
  assert_string_equal(err, "keep");
}

static void
test_parse(void **st)
{
  long l;
  double d;

  (void)st;
  assert_int_equal(UTL_ParseInt("42", 0, 100, &l), 0);
  assert_int_equal(l, 42);
  assert_int_equal(UTL_ParseInt("-5", -10, 10, &l), 0);
  assert_int_equal(l, -5);
  assert_int_equal(UTL_ParseInt("101", 0, 100, &l), -1);
  assert_int_equal(UTL_ParseInt("4x", 0, 100, &l), -1);
  assert_int_equal(UTL_ParseInt(" 4", 0, 100, &l), -1);
  assert_int_equal(UTL_ParseInt("", 0, 100, &l), -1);
  assert_int_equal(UTL_ParseInt(NULL, 0, 100, &l), -1);
  assert_int_equal(UTL_ParseInt("99999999999999999999", 0, LONG_MAX, &l), -1);
  assert_int_equal(UTL_ParseDouble("2.5e3", &d), 0);
  assert_true(d == 2500.0);
  assert_int_equal(UTL_ParseDouble("nan", &d), -1);
  assert_int_equal(UTL_ParseDouble("inf", &d), -1);
  assert_int_equal(UTL_ParseDouble("1e999", &d), -1);
  assert_int_equal(UTL_ParseDouble("1.0V", &d), -1);
}

static void
test_scan_and_copy(void **st)
{
  char buf[4];

  (void)st;
  assert_int_equal(UTL_ScanDecimal("384.23THz"), 6);
  assert_int_equal(UTL_ScanDecimal("-1.5e-3 x"), 7);
  assert_int_equal(UTL_ScanDecimal("2e"), 1);          /* 'e' without digits */
  assert_int_equal(UTL_ScanDecimal("abc"), 0);
  assert_int_equal(UTL_ScanDecimal("."), 0);
  assert_int_equal(UTL_Strlcpy(buf, "abcdef", sizeof buf), 6);
  assert_string_equal(buf, "abc");
  assert_true(UTL_StrEqCase("THz", "thz"));
  assert_false(UTL_StrEqCase("THz", "GHz"));
}

/* UTL_AbsTime: now + delay on the given clock, nanoseconds normalised. */
static void
test_abs_time(void **st)
{
  static const int clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC };
  static const double delays[] = { 0.0, 0.25, 0.999999999, 1.5, 30.0 };

  (void)st;
  for (size_t c = 0; c < 2; c++) {
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
      struct timespec before, at, after;
      double b, a, x;

      clock_gettime(clocks[c], &before);
      UTL_AbsTime(clocks[c], delays[i], &at);
      clock_gettime(clocks[c], &after);
      assert_true(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
      b = (double)before.tv_sec + before.tv_nsec * 1e-9 + delays[i];
      a = (double)after.tv_sec + after.tv_nsec * 1e-9 + delays[i];
      x = (double)at.tv_sec + at.tv_nsec * 1e-9;
      assert_true(x >= b - 1e-6 && x <= a + 1e-6);
    }
  }
}

static void
test_format_double(void **st)
{
  char buf[UTL_DOUBLE_LEN], g15[UTL_DOUBLE_LEN];
  uint64_t x = 88172645463325252ULL;

  (void)st;
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 0.0003), "0.0003");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 384.2304844), "384.2304844");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 0.002), "0.002");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 5.0), "5");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, -1.0), "-1");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 0.0), "0");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 1.0 / 3.0), "0.3333333333333333");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 0.1 + 0.2), "0.30000000000000004");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, INFINITY), "inf");
  assert_string_equal(UTL_FormatDouble(buf, sizeof buf, 1e300), "1e+300");
  /* Any double reads back exactly; one that %.15g holds is printed so. */
  for (int i = 0; i < 100000; i++) {
    double v;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(&v, &x, sizeof v);
    if (!isfinite(v))
      continue;
    UTL_FormatDouble(buf, sizeof buf, v);
    assert_true(strtod(buf, NULL) == v);
    snprintf(g15, sizeof g15, "%.15g", v);
    if (strtod(g15, NULL) == v)
      assert_string_equal(buf, g15);
  }
  /* A short buffer is still a string. */
  char tiny[4];
  UTL_FormatDouble(tiny, sizeof tiny, 0.12345);
  assert_int_equal(strlen(tiny), 3);
}

/* UTL_Fixed gives printf's "%.*f" text, byte for byte. */
static void
check_fixed(double v, int dec)
{
  char want[64], got[64];
  int n = UTL_Fixed(got, sizeof got, v, dec);

  snprintf(want, sizeof want, "%.*f", dec, v);
  if (strcmp(want, got) != 0)
    fail_msg("UTL_Fixed(%.17g, %d) = '%s', printf '%s'", v, dec, got, want);
  assert_int_equal(n, (int)strlen(want));
}

static void
test_fixed(void **state)
{
  static const double edge[] = { 0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 0.125, 1e-12, -1e-12, 0.00005,
                                 -0.00004, 384.2304844, 377.1074635, 999999.9999999999, 1e14,
                                 -1e14, 1e16, 123456789.123456789, NAN, INFINITY, -INFINITY };
  unsigned seed = 12345;

  (void)state;
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
    for (int dec = 0; dec <= 9; dec++)
      check_fixed(edge[i], dec);
  for (int i = 0; i < 200000; i++) {
    double v;

    seed = seed * 1103515245u + 12345u;
    v = (double)(seed >> 4) / (double)(1u << 20);             /* up to 4096, fine steps */
    if (i % 3 == 0)
      v = 300.0 + v / 4096.0 * 500.0;                         /* frequencies in THz */
    if (i % 5 == 0)
      v = -v;
    if (i % 7 == 0)
      v = floor(v * 1e4) / 1e4 + 0.00005;                     /* near a tie at 4 decimals */
    check_fixed(v, (int)(seed % 10));
    check_fixed(v, 9);
    check_fixed(v, 4);
  }
  /* A short buffer is still a string, the length the whole text's. */
  char tiny[4];
  assert_int_equal(UTL_Fixed(tiny, sizeof tiny, 12.345, 3), 6);
  assert_string_equal(tiny, "12.");
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_timeval),
    cmocka_unit_test(test_abs_time),
    cmocka_unit_test(test_set_err),
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_scan_and_copy),
    cmocka_unit_test(test_format_double),
    cmocka_unit_test(test_fixed),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
