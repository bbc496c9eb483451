/* units.c - optical frequency units and setpoint parsing (pure, no I/O). */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "units.h"
#include "util.h"

/* c in nm*THz (f[THz] * lambda[nm] = 299792.458) and in cm/ps (THz per cm-1). */
#define C_NM_THZ 299792.458
#define C_THZ_PER_CM1 0.0299792458

static const struct {
  const char *word;
  UNI_Unit unit;
} unit_words[] = {
  { "THz", UNI_THZ }, { "GHz", UNI_GHZ }, { "MHz", UNI_MHZ }, { "nm", UNI_NM },
  { "cm-1", UNI_CM1 }, { "cm^-1", UNI_CM1 }, { "1/cm", UNI_CM1 },
};

int
UNI_ParseUnit(const char *text, UNI_Unit *unit)
{
  size_t i;

  if (!text)
    return -1;
  for (i = 0; i < sizeof unit_words / sizeof unit_words[0]; i++) {
    if (strcasecmp(text, unit_words[i].word) == 0) {
      *unit = unit_words[i].unit;
      return 0;
    }
  }
  return -1;
}

const char *
UNI_Name(UNI_Unit unit)
{
  switch (unit) {
    case UNI_THZ: return "THz";
    case UNI_GHZ: return "GHz";
    case UNI_MHZ: return "MHz";
    case UNI_NM: return "nm";
    case UNI_CM1: return "cm-1";
  }
  return "?";
}

int
UNI_ToTHz(double value, UNI_Unit unit, double *thz)
{
  double f;

  if (!isfinite(value))
    return -1;
  switch (unit) {
    case UNI_THZ: f = value; break;
    case UNI_GHZ: f = value / 1e3; break;
    case UNI_MHZ: f = value / 1e6; break;
    case UNI_NM:
      if (value <= 0.0)
        return -1;
      f = C_NM_THZ / value;
      break;
    case UNI_CM1: f = value * C_THZ_PER_CM1; break;
    default: return -1;
  }
  if (!isfinite(f) || f <= 0.0)
    return -1;
  *thz = f;
  return 0;
}

double
UNI_FromTHz(double thz, UNI_Unit unit)
{
  switch (unit) {
    case UNI_THZ: return thz;
    case UNI_GHZ: return thz * 1e3;
    case UNI_MHZ: return thz * 1e6;
    case UNI_NM: return C_NM_THZ / thz;
    case UNI_CM1: return thz / C_THZ_PER_CM1;
  }
  return (double)NAN;
}

#define UNIT_CHOICES "use THz, GHz, MHz, nm or cm-1"

/* The number and unit of a frequency as written: "<number>[unit]" in one
   word, or the unit as a separate word.  Every unit error is worded the
   same, and comes before anything is checked about the number's value. */
static int
parse_parts(const char *number, const char *unit_word, char *numbuf, size_t numlen,
            UNI_Unit *unit, char *err, size_t errlen)
{
  char unitbuf[32];
  const char *p, *u;
  size_t n, ulen;

  *unit = UNI_THZ;
  if (!number) {
    UTL_SetErr(err, errlen, "missing frequency");
    return -1;
  }
  p = number;
  while (isspace((unsigned char)*p))
    p++;
  n = UTL_ScanDecimal(p);
  if (n == 0 || n >= numlen) {
    UTL_SetErr(err, errlen, "malformed frequency '%s'", number);
    return -1;
  }
  if (p[n] == ',' && isdigit((unsigned char)p[n + 1])) {
    UTL_SetErr(err, errlen, "'%s': decimal comma not accepted, write a point (%.*s.%s)",
               number, (int)n, p, p + n + 1);
    return -1;
  }
  memcpy(numbuf, p, n);
  numbuf[n] = '\0';

  /* A unit glued on or after spaces inside the same word. */
  u = p + n;
  while (isspace((unsigned char)*u))
    u++;
  ulen = strlen(u);
  while (ulen > 0 && isspace((unsigned char)u[ulen - 1]))
    ulen--;

  if (unit_word) {
    while (isspace((unsigned char)*unit_word))
      unit_word++;
    if (*unit_word == '\0')
      unit_word = NULL;
  }
  if (ulen > 0 && unit_word) {
    UTL_SetErr(err, errlen, "two units given in '%s %s'", number, unit_word);
    return -1;
  }
  if (ulen == 0 && unit_word) {
    u = unit_word;
    ulen = strlen(u);
    while (ulen > 0 && isspace((unsigned char)u[ulen - 1]))
      ulen--;
  }
  if (ulen == 0)
    return 0;
  if (ulen >= sizeof unitbuf) {
    UTL_SetErr(err, errlen, "unknown unit '%.*s...' (" UNIT_CHOICES ")", 16, u);
    return -1;
  }
  memcpy(unitbuf, u, ulen);
  unitbuf[ulen] = '\0';
  if (UNI_ParseUnit(unitbuf, unit) < 0) {
    UTL_SetErr(err, errlen, "unknown unit '%s' (" UNIT_CHOICES ")", unitbuf);
    return -1;
  }
  return 0;
}

int
UNI_ParseFrequency(const char *number, const char *unit_word, double *thz,
                   char *err, size_t errlen)
{
  char numbuf[64];
  UNI_Unit unit;
  double value, f;

  if (parse_parts(number, unit_word, numbuf, sizeof numbuf, &unit, err, errlen) < 0)
    return -1;
  value = strtod(numbuf, NULL);
  if (!isfinite(value)) {
    UTL_SetErr(err, errlen, "frequency '%s' out of range", number);
    return -1;
  }
  if (UNI_ToTHz(value, unit, &f) < 0) {
    UTL_SetErr(err, errlen, "'%s' is not a positive finite frequency", number);
    return -1;
  }
  *thz = f;
  return 0;
}

int
UNI_ParseSetpoint(const char *number, const char *unit_word, double current_thz,
                  double *thz, int *relative, char *err, size_t errlen)
{
  char numbuf[64];
  UNI_Unit unit;
  double delta, f;

  if (parse_parts(number, unit_word, numbuf, sizeof numbuf, &unit, err, errlen) < 0)
    return -1;
  if (numbuf[0] != '+' && numbuf[0] != '-') {
    if (UNI_ParseFrequency(number, unit_word, thz, err, errlen) < 0)
      return -1;
    if (relative)
      *relative = 0;
    return 0;
  }
  delta = strtod(numbuf, NULL);
  if (!isfinite(delta) || !(current_thz > 0.0) || !isfinite(current_thz)) {
    UTL_SetErr(err, errlen, "offset '%s' out of range", number);
    return -1;
  }
  switch (unit) {
    case UNI_THZ: f = current_thz + delta; break;
    case UNI_GHZ: f = current_thz + delta / 1e3; break;
    case UNI_MHZ: f = current_thz + delta / 1e6; break;
    default:
      /* A step of the wavelength or wavenumber itself. */
      if (UNI_ToTHz(UNI_FromTHz(current_thz, unit) + delta, unit, &f) < 0)
        f = (double)NAN;
      break;
  }
  if (!isfinite(f) || f <= 0.0) {
    UTL_SetErr(err, errlen, "'%s' from %.9f THz is not a positive finite frequency", number,
               current_thz);
    return -1;
  }
  *thz = f;
  if (relative)
    *relative = 1;
  return 0;
}
