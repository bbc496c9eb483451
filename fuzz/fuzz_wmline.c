/* fuzz_wmline.c - fuzz target: the wavemeter stream line parser
 * (WM_ParseLine, DESIGN.md section 5) and the error-code names.
 *
 * Input: one line as it arrives from the publisher (without the newline;
 * the stream backend frames lines itself).  A line that parses gives a
 * channel in 1..CNF_MAX_CHANNEL, a finite value that is a frequency up to
 * 10000 THz or a small integer error code, and a time that is absent or
 * non-negative; printing the reading and parsing it again gives it back.
 * The first 8 bytes, taken as a double, also go to WM_ErrorName and
 * WM_NmToTHz: the wlmData backend hands them whatever the library returns.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "wm.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  WM_Reading r, again;
  char line[128];
  const char *name;

  if (size >= sizeof(double)) {
    double v;

    memcpy(&v, data, sizeof v);
    name = WM_ErrorName(v);
    FUZZ_CHECK(name && name[0]);
    FUZZ_CHECK((strcmp(name, "ok") == 0) == (v > 0.0));
    (void)WM_NmToTHz(v);
  }

  memset(&r, 0, sizeof r);
  r.rx_s = 12.5;
  if (WM_ParseLine((const char *)data, size, &r) != 0)
    return 0;
  FUZZ_CHECK(r.channel >= 1 && r.channel <= CNF_MAX_CHANNEL);
  FUZZ_CHECK(isfinite(r.value) && r.value <= 10000.0);
  FUZZ_CHECK(r.value > 0.0 || (r.value == floor(r.value) && r.value >= -1000.0));
  FUZZ_CHECK(!signbit(r.value) || r.value < 0.0);        /* no negative zero */
  FUZZ_CHECK(r.t_s == -1.0 || (isfinite(r.t_s) && r.t_s >= 0.0));
  FUZZ_CHECK(r.rx_s == 12.5);                              /* not the parser's */

  name = WM_ErrorName(r.value);
  FUZZ_CHECK(name && name[0]);
  FUZZ_CHECK((strcmp(name, "ok") == 0) == (r.value > 0.0));

  snprintf(line, sizeof line, "%d %.17g", r.channel, r.value);
  FUZZ_CHECK(WM_ParseLine(line, strlen(line), &again) == 0);
  FUZZ_CHECK(again.channel == r.channel && again.value == r.value && again.t_s == -1.0);
  return 0;
}
