/* fuzz_units.c - fuzz target: UNI_ParseFrequency, UNI_ParseSetpoint and
 * UNI_ParseUnit, the parsers behind every setpoint typed at the protocol or
 * in a config.
 *
 * Input: the number word, optionally followed by a NUL byte and a separate
 * unit word ("780.24" NUL "nm").  A frequency that parses is finite and
 * positive, converts back to the unit it was written in, and a failure
 * always comes with a message.  The same words as a protocol setpoint
 * (relative with a leading sign) give a finite positive frequency or a
 * message, and without a sign the same result as UNI_ParseFrequency.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "units.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *buf = malloc(size + 1), *unit_word = NULL;
  char err[128];
  double thz = -1.0;
  const uint8_t *nul;
  UNI_Unit u;
  int rc;

  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  nul = memchr(data, '\0', size);
  if (nul)
    unit_word = buf + (nul - data) + 1;     /* may be empty */

  err[0] = '\0';
  rc = UNI_ParseFrequency(buf, unit_word, &thz, err, sizeof err);
  FUZZ_CHECK(rc == 0 || rc == -1);
  if (rc != 0) {
    FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
    FUZZ_CHECK(thz == -1.0);                /* untouched on failure */
  } else {
    FUZZ_CHECK(isfinite(thz) && thz > 0.0);
    /* Written in a known unit: converting back gives the same value. */
    if (unit_word && UNI_ParseUnit(unit_word, &u) == 0) {
      double back = UNI_FromTHz(thz, u), again;
      if (isfinite(back) && back > 0.0 && isnormal(thz) &&
          UNI_ToTHz(back, u, &again) == 0 && isnormal(again))
        FUZZ_CHECK(fabs(again - thz) <= 1e-12 * thz);
    }
  }

  {
    double sp = -1.0;
    int relative = -1;
    char err2[128] = "";
    int rc2 = UNI_ParseSetpoint(buf, unit_word, 384.2304844, &sp, &relative, err2, sizeof err2);

    FUZZ_CHECK(rc2 == 0 || rc2 == -1);
    if (rc2 != 0) {
      FUZZ_CHECK(err2[0] != '\0' && sp == -1.0);
    } else {
      FUZZ_CHECK(isfinite(sp) && sp > 0.0 && (relative == 0 || relative == 1));
      if (!relative)
        FUZZ_CHECK(rc == 0 && sp == thz);
    }
  }

  /* Every unit that parses has a name that parses to the same unit. */
  if (UNI_ParseUnit(buf, &u) == 0) {
    UNI_Unit v;
    FUZZ_CHECK(UNI_ParseUnit(UNI_Name(u), &v) == 0 && v == u);
  }
  free(buf);
  return 0;
}
