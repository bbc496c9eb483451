/* test_wm_parse.c - WM_ParseLine, WM_ErrorName, WM_NmToTHz and the
 * cmiWavelength mode table (pure functions of the wavemeter layer). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "wm.h"
#include "wm_int.h"

/* cmocka's assert_float_equal works in single precision: compare doubles. */
#define assert_close(a, b, eps) do { \
    double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (eps))) \
      fail_msg("%s = %.15g, want %.15g (+-%g)", #a, a_, b_, (double)(eps)); \
  } while (0)

static int
parse(const char *line, WM_Reading *r)
{
  memset(r, 0x55, sizeof *r);
  r->rx_s = 123.0;
  return WM_ParseLine(line, strlen(line), r);
}

static void
test_valid_lines(void **state)
{
  WM_Reading r;

  assert_int_equal(parse("1 384.230484468 123456", &r), 0);
  assert_int_equal(r.channel, 1);
  assert_close(r.value, 384.230484468, 1e-12);
  assert_close(r.t_s, 123.456, 1e-12);
  assert_close(r.rx_s, 123.0, 0);           /* untouched */

  /* tabs, several blanks, leading/trailing blanks, CR of a CRLF line */
  assert_int_equal(parse("\t 12\t\t 500.000000001   7 \r", &r), 0);
  assert_int_equal(r.channel, 12);
  assert_close(r.value, 500.000000001, 1e-12);
  assert_close(r.t_s, 0.007, 1e-15);

  /* 9 decimals survive exactly as printed */
  assert_int_equal(parse("3 281.634942123 1", &r), 0);
  assert_close(r.value, 281.634942123, 1e-12);

  /* highest channel, fractional and exponent times */
  assert_int_equal(parse("64 1e2 1.5e3", &r), 0);
  assert_int_equal(r.channel, 64);
  assert_close(r.value, 100.0, 0);
  assert_close(r.t_s, 1.5, 1e-15);
  assert_int_equal(parse("+2 +384.2 0", &r), 0);
  assert_int_equal(r.channel, 2);
  assert_close(r.t_s, 0.0, 0);
}

static void
test_missing_time(void **state)
{
  WM_Reading r;

  assert_int_equal(parse("4 384.1", &r), 0);
  assert_int_equal(r.channel, 4);
  assert_close(r.value, 384.1, 1e-12);
  assert_true(r.t_s < 0);
  assert_int_equal(parse("4 384.1   ", &r), 0);
  assert_true(r.t_s < 0);
}

static void
test_error_codes(void **state)
{
  static const int codes[] = { 0, -1, -2, -3, -4, -5, -6, -8, -10, -26, -999 };
  WM_Reading r;
  char line[64];

  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    snprintf(line, sizeof line, "7 %d 99", codes[i]);
    assert_int_equal(parse(line, &r), 0);
    assert_int_equal(r.channel, 7);
    assert_close(r.value, (double)codes[i], 0);
    assert_close(r.t_s, 0.099, 1e-15);
  }
  /* no negative zero; a code written as -3.0 is still -3 */
  assert_int_equal(parse("1 -0", &r), 0);
  assert_false(signbit(r.value));
  assert_int_equal(parse("1 -3.0 5", &r), 0);
  assert_close(r.value, -3.0, 0);
  /* not error codes: fractional or absurd */
  assert_int_equal(parse("1 -0.5 5", &r), -1);
  assert_int_equal(parse("1 -1e9 5", &r), -1);
}

static void
test_garbage(void **state)
{
  static const char *const bad[] = {
    "", " ", "\r", "x", "1", "1 ", "one 384.2 5", "1 abc 5", "1 384.2 abc",
    "0 384.2 5", "-1 384.2 5", "65 384.2 5", "1.5 384.2 5", "1e0 384.2 5",
    "1 nan 5", "1 inf 5", "1 -inf", "1 0x1p8 5", "0x1 384.2", "1 384.2 -5",
    "1 384.2 5 6", "1 384.2 5 junk", "1 384.2junk 5", "1 384.2 5junk",
    "1,384.2,5", "1 384,2 5", "1 . 5", "1 384.2 .", "1 384.2 e5", "1 - 5",
    "1 384.2 5\x01", "#1 384.2 5",
  };
  WM_Reading r;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (parse(bad[i], &r) != -1)
      fail_msg("accepted malformed line '%s'", bad[i]);
  }
  /* an embedded NUL makes the line malformed, whatever follows */
  assert_int_equal(WM_ParseLine("1 384.2\0 5", 10, &r), -1);
  assert_int_equal(WM_ParseLine("1 384.2 5", 0, &r), -1);
  assert_int_equal(WM_ParseLine(NULL, 3, &r), -1);
}

static void
test_huge_numbers(void **state)
{
  WM_Reading r;
  char line[400];

  assert_int_equal(parse("99999999999999999999 384.2 5", &r), -1);
  assert_int_equal(parse("1 1e400 5", &r), -1);
  assert_int_equal(parse("1 384.2 1e400", &r), -1);
  assert_int_equal(parse("1 384.2 1e16", &r), -1);
  assert_int_equal(parse("1 20000 5", &r), -1);     /* 20 PHz is not a laser */
  assert_int_equal(parse("1 1e-400 5", &r), -1);    /* underflow */
  /* the largest plausible time stamp is fine */
  assert_int_equal(parse("1 384.2 999999999999999", &r), 0);

  /* 256 bytes is the limit, 257 is too long (with or without CR) */
  memset(line, ' ', sizeof line);
  memcpy(line, "1 384.2 5", 9);
  assert_int_equal(WM_ParseLine(line, 256, &r), 0);
  assert_int_equal(WM_ParseLine(line, 257, &r), -1);
  line[256] = '\r';
  assert_int_equal(WM_ParseLine(line, 257, &r), 0);
  assert_int_equal(WM_ParseLine(line, 300, &r), -1);
}

static void
test_error_names(void **state)
{
  assert_string_equal(WM_ErrorName(384.2), "ok");
  assert_string_equal(WM_ErrorName(0), "no-value");
  assert_string_equal(WM_ErrorName(-1), "no-signal");
  assert_string_equal(WM_ErrorName(-2), "bad-signal");
  assert_string_equal(WM_ErrorName(-3), "underexposed");
  assert_string_equal(WM_ErrorName(-4), "overexposed");
  assert_string_equal(WM_ErrorName(-5), "wavemeter-missing");
  assert_string_equal(WM_ErrorName(-6), "not-available");
  assert_string_equal(WM_ErrorName(-8), "no-pulse");
  assert_string_equal(WM_ErrorName(-26), "tcp-error");
  assert_string_equal(WM_ErrorName(-9), "error");
  assert_string_equal(WM_ErrorName(-1e300), "error");
  assert_string_equal(WM_ErrorName(nan("")), "invalid");
}

static void
test_nm_to_thz(void **state)
{
  assert_close(WM_NmToTHz(780.241), 299792.458 / 780.241, 1e-12);
  assert_close(WM_NmToTHz(299792.458), 1.0, 1e-15);
  assert_close(WM_NmToTHz(1000.0), 299.792458, 1e-12);
  /* error codes pass through unchanged */
  for (int code = 0; code >= -26; code--)
    assert_close(WM_NmToTHz(code), (double)code, 0);
}

static void
test_mode_channels(void **state)
{
  assert_int_equal(WM_WlmModeChannel(42), 1);
  assert_int_equal(WM_WlmModeChannel(43), 2);
  for (int m = 90; m <= 95; m++)
    assert_int_equal(WM_WlmModeChannel(m), m - 87);
  assert_int_equal(WM_WlmModeChannel(1130), 9);
  for (int m = 1355; m <= 1362; m++)
    assert_int_equal(WM_WlmModeChannel(m), m - 1345);
  /* not wavelength modes */
  assert_int_equal(WM_WlmModeChannel(16), 0);
  assert_int_equal(WM_WlmModeChannel(203), 0);
  assert_int_equal(WM_WlmModeChannel(44), 0);
  assert_int_equal(WM_WlmModeChannel(89), 0);
  assert_int_equal(WM_WlmModeChannel(96), 0);
  assert_int_equal(WM_WlmModeChannel(1354), 0);
  assert_int_equal(WM_WlmModeChannel(1363), 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_valid_lines),
    cmocka_unit_test(test_missing_time),
    cmocka_unit_test(test_error_codes),
    cmocka_unit_test(test_garbage),
    cmocka_unit_test(test_huge_numbers),
    cmocka_unit_test(test_error_names),
    cmocka_unit_test(test_nm_to_thz),
    cmocka_unit_test(test_mode_channels),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
