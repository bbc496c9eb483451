/* test_units.c - optical frequency units and setpoint parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "units.h"
#include "util.h"

static double
rel(double a, double b)
{
  return fabs(a - b) / fabs(b);
}

static double
parse_ok(const char *num, const char *unit)
{
  char err[128] = "";
  double thz = -1.0;

  if (UNI_ParseFrequency(num, unit, &thz, err, sizeof err) != 0)
    fail_msg("'%s' '%s' rejected: %s", num, unit ? unit : "(null)", err);
  return thz;
}

static void
parse_bad(const char *num, const char *unit)
{
  char err[128] = "";
  double thz = 123.0;

  if (UNI_ParseFrequency(num, unit, &thz, err, sizeof err) == 0)
    fail_msg("'%s' '%s' accepted as %.9f THz", num ? num : "(null)", unit ? unit : "(null)", thz);
  assert_true(thz == 123.0);          /* untouched */
  assert_true(strlen(err) > 0);        /* a message for the user */
}

/* The speed of light is exact: 1 THz is 299792.458 nm; 1 cm-1 is c*100 Hz. */
static void
test_exact_c(void **state)
{
  double thz;

  (void)state;
  assert_int_equal(UNI_ToTHz(299792.458, UNI_NM, &thz), 0);
  assert_true(thz == 1.0);
  assert_true(UNI_FromTHz(1.0, UNI_NM) == 299792.458);
  assert_int_equal(UNI_ToTHz(1.0, UNI_CM1, &thz), 0);
  assert_true(rel(thz, UNI_C_M_PER_S * 100.0 / 1e12) < 1e-15);
  assert_int_equal(UNI_ToTHz(780.24, UNI_NM, &thz), 0);
  assert_true(rel(thz, UNI_C_M_PER_S / 780.24e-9 / 1e12) < 1e-15);
  assert_int_equal(UNI_ToTHz(384230.0, UNI_GHZ, &thz), 0);
  assert_true(rel(thz, 384.23) < 1e-15);
  assert_int_equal(UNI_ToTHz(384230000.0, UNI_MHZ, &thz), 0);
  assert_true(rel(thz, 384.23) < 1e-15);
  assert_true(rel(UNI_FromTHz(384.23, UNI_GHZ), 384230.0) < 1e-15);
  assert_true(rel(UNI_FromTHz(384.23, UNI_MHZ), 384230000.0) < 1e-15);
}

/* THz -> unit -> THz and unit -> THz -> unit agree to 1e-12 relative over
   the optical range, for every unit. */
static void
test_round_trip(void **state)
{
  static const UNI_Unit units[] = { UNI_THZ, UNI_GHZ, UNI_MHZ, UNI_NM, UNI_CM1 };
  size_t u;
  int i;

  (void)state;
  for (u = 0; u < sizeof units / sizeof units[0]; u++) {
    for (i = 0; i <= 1000; i++) {
      double f = 150.0 * pow(1000.0 / 150.0, i / 1000.0);   /* 150..1000 THz */
      double v = UNI_FromTHz(f, units[u]), back = 0.0, v2;

      assert_int_equal(UNI_ToTHz(v, units[u], &back), 0);
      if (rel(back, f) > 1e-12)
        fail_msg("%s: %.15g THz -> %.15g -> %.15g THz", UNI_Name(units[u]), f, v, back);
      v2 = UNI_FromTHz(back, units[u]);
      assert_true(rel(v2, v) <= 1e-12);
    }
  }
}

static void
test_bad_conversions(void **state)
{
  double thz = 7.0;

  (void)state;
  assert_int_equal(UNI_ToTHz(0.0, UNI_NM, &thz), -1);
  assert_int_equal(UNI_ToTHz(-780.0, UNI_NM, &thz), -1);
  assert_int_equal(UNI_ToTHz(0.0, UNI_THZ, &thz), -1);
  assert_int_equal(UNI_ToTHz(-1.0, UNI_GHZ, &thz), -1);
  assert_int_equal(UNI_ToTHz((double)INFINITY, UNI_THZ, &thz), -1);
  assert_int_equal(UNI_ToTHz((double)NAN, UNI_CM1, &thz), -1);
  assert_int_equal(UNI_ToTHz(1e-320, UNI_NM, &thz), -1);   /* overflows to inf */
  assert_true(thz == 7.0);
}

/* Glued, spaced inside one word, and as a separate word; case-insensitive;
   THz by default. */
static void
test_parse_forms(void **state)
{
  (void)state;
  assert_true(parse_ok("384.23THz", NULL) == 384.23);
  assert_true(parse_ok("384.23 THz", NULL) == 384.23);
  assert_true(parse_ok("  384.23\tTHz  ", NULL) == 384.23);
  assert_true(parse_ok("384.23", "THz") == 384.23);
  assert_true(parse_ok("384.23", NULL) == 384.23);
  assert_true(parse_ok("384.23", "") == 384.23);
  assert_true(parse_ok("384.2304844 THz", NULL) == 384.2304844);
  assert_true(parse_ok("384.23thz", NULL) == 384.23);
  assert_true(parse_ok("384.23", "tHz") == 384.23);
  assert_true(parse_ok("+384.23", NULL) == 384.23);
  assert_true(parse_ok("3.8423e2THz", NULL) == 384.23);
  assert_true(rel(parse_ok("384230GHz", NULL), 384.23) < 1e-15);
  assert_true(rel(parse_ok("384230 ghz", NULL), 384.23) < 1e-15);
  assert_true(rel(parse_ok("384230000", "MHz"), 384.23) < 1e-15);
  assert_true(rel(parse_ok("780.24nm", NULL), 299792.458 / 780.24) < 1e-15);
  assert_true(rel(parse_ok("780.24 nm", NULL), 299792.458 / 780.24) < 1e-15);
  assert_true(rel(parse_ok("780.24", "NM"), 299792.458 / 780.24) < 1e-15);
  assert_true(rel(parse_ok("12987.0cm-1", NULL), 12987.0 * 0.0299792458) < 1e-15);
  assert_true(rel(parse_ok("12987.0 CM-1", NULL), 12987.0 * 0.0299792458) < 1e-15);
  assert_true(rel(parse_ok("12987", "cm^-1"), 12987.0 * 0.0299792458) < 1e-15);
  assert_true(rel(parse_ok("12987", "1/cm"), 12987.0 * 0.0299792458) < 1e-15);
  /* a NULL error buffer is allowed */
  {
    double thz;
    assert_int_equal(UNI_ParseFrequency("1THz", NULL, &thz, NULL, 0), 0);
    assert_int_equal(UNI_ParseFrequency("x", NULL, &thz, NULL, 0), -1);
  }
}

/* Garbage, non-finite and non-positive values are refused with a message. */
static void
test_parse_rejects(void **state)
{
  (void)state;
  parse_bad(NULL, NULL);
  parse_bad("", NULL);
  parse_bad("   ", NULL);
  parse_bad("THz", NULL);
  parse_bad("abc", NULL);
  parse_bad("384.23 furlongs", NULL);
  parse_bad("384.23", "furlongs");
  parse_bad("384.23THz extra", NULL);
  parse_bad("384.23THz", "GHz");        /* two units */
  parse_bad("384.23.5", NULL);
  parse_bad("384,23", NULL);
  parse_bad(".", NULL);
  parse_bad("-", NULL);
  parse_bad("5e", NULL);
  parse_bad("0x180", NULL);
  parse_bad("inf", NULL);
  parse_bad("infinity", NULL);
  parse_bad("-inf", NULL);
  parse_bad("nan", NULL);
  parse_bad("NaN", "THz");
  parse_bad("1e400", NULL);
  parse_bad("0", NULL);
  parse_bad("0.0THz", NULL);
  parse_bad("-384.23", NULL);
  parse_bad("-780nm", NULL);
  parse_bad("0nm", NULL);
  parse_bad("0", "cm-1");
  parse_bad("1e-320nm", NULL);
  parse_bad("384.23 THzz", NULL);
  parse_bad("384.23 Hz", NULL);
}

static const char *
parse_err(const char *num, const char *unit)
{
  static char err[160];
  double thz = 123.0;

  err[0] = '\0';
  if (UNI_ParseFrequency(num, unit, &thz, err, sizeof err) == 0)
    fail_msg("'%s' '%s' accepted as %.9f THz", num, unit ? unit : "(null)", thz);
  return err;
}

/* A unit error is found before anything about the number's value, and is
   always worded the same; a decimal comma is named as such. */
static void
test_parse_messages(void **state)
{
  static const char *const bad_units[][2] = {
    { "780.2412", "mn" }, { "780.2412mn", NULL }, { "780.2412 mn", NULL },
    { "0", "furlongs" }, { "-5", "Hz" }, { "1e400", "THzz" },
  };
  char want[160];

  (void)state;
  for (size_t i = 0; i < sizeof bad_units / sizeof bad_units[0]; i++) {
    const char *unit = bad_units[i][1] ? bad_units[i][1] :
                       bad_units[i][0] + UTL_ScanDecimal(bad_units[i][0]);
    while (*unit == ' ')
      unit++;
    snprintf(want, sizeof want, "unknown unit '%s' (use THz, GHz, MHz, nm or cm-1)", unit);
    assert_string_equal(parse_err(bad_units[i][0], bad_units[i][1]), want);
  }
  assert_string_equal(parse_err("780,2412", "nm"),
                      "'780,2412': decimal comma not accepted, write a point (780.2412)");
  assert_string_equal(parse_err("780,2412nm", NULL),
                      "'780,2412nm': decimal comma not accepted, write a point (780.2412nm)");
  assert_string_equal(parse_err("384.23THz", "GHz"), "two units given in '384.23THz GHz'");
}

static double
setpoint_ok(const char *num, const char *unit, double current, int want_relative)
{
  char err[160] = "";
  double thz = -1.0;
  int relative = -1;

  if (UNI_ParseSetpoint(num, unit, current, &thz, &relative, err, sizeof err) != 0)
    fail_msg("'%s' '%s' from %.9f rejected: %s", num, unit ? unit : "(null)", current, err);
  assert_int_equal(relative, want_relative);
  return thz;
}

/* A leading sign: relative to the present setpoint, in the unit's space. */
static void
test_parse_relative(void **state)
{
  const double f0 = 384.2304844, nm0 = 299792.458 / f0;
  char err[160];
  double thz = 7.0;

  (void)state;
  /* No sign: absolute, whatever the present setpoint. */
  assert_true(setpoint_ok("384.25", NULL, f0, 0) == 384.25);
  assert_true(rel(setpoint_ok("780.2 nm", NULL, f0, 0), 299792.458 / 780.2) < 1e-15);
  /* Frequency units: a step of the frequency. */
  assert_true(fabs(setpoint_ok("+50", "MHz", f0, 1) - (f0 + 50e-6)) < 1e-12);
  assert_true(fabs(setpoint_ok("+50MHz", NULL, f0, 1) - (f0 + 50e-6)) < 1e-12);
  assert_true(fabs(setpoint_ok("-0.2", "GHz", f0, 1) - (f0 - 0.2e-3)) < 1e-12);
  assert_true(fabs(setpoint_ok("-0.001", NULL, f0, 1) - (f0 - 0.001)) < 1e-12);
  assert_true(setpoint_ok("+0", "THz", f0, 1) == f0);
  /* Wavelength and wavenumber: a step in that unit, then converted. */
  assert_true(rel(setpoint_ok("+0.001", "nm", f0, 1), 299792.458 / (nm0 + 0.001)) < 1e-15);
  assert_true(setpoint_ok("+0.001", "nm", f0, 1) < f0);        /* longer: lower */
  assert_true(rel(setpoint_ok("-1.5cm-1", NULL, f0, 1),
                  (f0 / 0.0299792458 - 1.5) * 0.0299792458) < 1e-15);
  /* The unit is checked first; a result that is no frequency is refused. */
  assert_int_equal(UNI_ParseSetpoint("+50", "mn", f0, &thz, NULL, err, sizeof err), -1);
  assert_string_equal(err, "unknown unit 'mn' (use THz, GHz, MHz, nm or cm-1)");
  assert_int_equal(UNI_ParseSetpoint("-400", "THz", f0, &thz, NULL, err, sizeof err), -1);
  assert_int_equal(UNI_ParseSetpoint("-800", "nm", f0, &thz, NULL, err, sizeof err), -1);
  assert_int_equal(UNI_ParseSetpoint("+1e400", "MHz", f0, &thz, NULL, err, sizeof err), -1);
  assert_int_equal(UNI_ParseSetpoint("+0,5", "GHz", f0, &thz, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "decimal comma"));
  assert_int_equal(UNI_ParseSetpoint("+", "GHz", f0, &thz, NULL, err, sizeof err), -1);
  assert_true(thz == 7.0);                 /* untouched on failure */
}

static void
test_unit_names(void **state)
{
  static const UNI_Unit units[] = { UNI_THZ, UNI_GHZ, UNI_MHZ, UNI_NM, UNI_CM1 };
  size_t i;
  UNI_Unit u;

  (void)state;
  for (i = 0; i < sizeof units / sizeof units[0]; i++) {
    assert_int_equal(UNI_ParseUnit(UNI_Name(units[i]), &u), 0);
    assert_int_equal(u, units[i]);
  }
  assert_string_equal(UNI_Name(UNI_CM1), "cm-1");
  assert_string_equal(UNI_Name(UNI_THZ), "THz");
  assert_int_equal(UNI_ParseUnit("GHZ", &u), 0);
  assert_int_equal(u, UNI_GHZ);
  assert_int_equal(UNI_ParseUnit("mhz", &u), 0);
  assert_int_equal(u, UNI_MHZ);
  assert_int_equal(UNI_ParseUnit("Nm", &u), 0);
  assert_int_equal(u, UNI_NM);
  assert_int_equal(UNI_ParseUnit("", &u), -1);
  assert_int_equal(UNI_ParseUnit("hz", &u), -1);
  assert_int_equal(UNI_ParseUnit("um", &u), -1);
  assert_int_equal(UNI_ParseUnit(NULL, &u), -1);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_exact_c),
    cmocka_unit_test(test_round_trip),
    cmocka_unit_test(test_bad_conversions),
    cmocka_unit_test(test_parse_forms),
    cmocka_unit_test(test_parse_rejects),
    cmocka_unit_test(test_unit_names),
    cmocka_unit_test(test_parse_messages),
    cmocka_unit_test(test_parse_relative),
  };

  return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
