/* fuzz_http.c - fuzz target: HTTP request routing (HTP_Match) and the JSON
 * request bodies (HTP_ParseSetpoint, HTP_ParseToken, with jansson), the
 * first things a request to the HTTP face goes through.
 *
 * Input: byte 0 picks the method; the rest is "<path>\n<body>".  Checked:
 * routing answers only 200, 400, 404 or 405; a 200 names a known route, and
 * for the laser routes a plain name (letters, digits, _ . -, no leading
 * dot) that the path really holds; no route has an encoded byte or a
 * backslash.  A body that parses gives a value and a unit that are single
 * non-empty words of safe characters (they go into a text-protocol line),
 * a token of printable characters only; a refusal has a reason.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http.h"

static FUZZ_NOCOV int
safe_word(const char *s, const char *extra)
{
  if (!s[0])
    return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
      return 0;
  return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const int methods[] = { HTP_GET, HTP_POST, HTP_HEAD, HTP_PUT, HTP_DELETE, 32, 64, 0 };
  char *path, *body, value[64], unit[16], token[128], err[200];
  const char *nl;
  size_t plen, blen;
  HTP_Route r;
  int method, code;

  if (size < 1 || size > 8192)
    return 0;
  method = methods[data[0] % (sizeof methods / sizeof methods[0])];
  data++;
  size--;
  nl = memchr(data, '\n', size);
  plen = nl ? (size_t)(nl - (const char *)data) : size;
  blen = nl ? size - plen - 1 : 0;
  path = malloc(plen + 1);
  body = malloc(blen + 1);
  FUZZ_CHECK(path && body);
  memcpy(path, data, plen);
  path[plen] = '\0';
  memcpy(body, nl ? nl + 1 : "", blen);
  body[blen] = '\0';

  code = HTP_Match(method, path, &r);
  FUZZ_CHECK(code == 200 || code == 400 || code == 404 || code == 405);
  if (code == 200) {
    FUZZ_CHECK(r.id >= HTP_R_PAGE && r.id <= HTP_R_SETPOINT);
    FUZZ_CHECK(!strchr(path, '%') && !strchr(path, '\\'));
  }
  if (code == 200 && (r.id == HTP_R_ACTION || r.id == HTP_R_SETPOINT)) {
    FUZZ_CHECK(safe_word(r.laser, "_-.") && r.laser[0] != '.');
    FUZZ_CHECK(strlen(r.laser) < CNF_NAME_MAX);
    FUZZ_CHECK(strstr(path, r.laser) != NULL);
    FUZZ_CHECK(r.id == HTP_R_SETPOINT || !strcmp(r.action, "lock") ||
               !strcmp(r.action, "unlock") || !strcmp(r.action, "hold") ||
               !strcmp(r.action, "resume"));
  }

  err[0] = '\0';
  if (HTP_ParseSetpoint(body, blen, value, sizeof value, unit, sizeof unit, err,
                        sizeof err) == 0) {
    FUZZ_CHECK(safe_word(value, "+-.eE"));
    FUZZ_CHECK(safe_word(unit, "-"));
  } else {
    FUZZ_CHECK(err[0] != '\0');
  }
  err[0] = '\0';
  if (HTP_ParseToken(body, blen, token, sizeof token, err, sizeof err) == 0) {
    FUZZ_CHECK(token[0] != '\0');
    for (const char *p = token; *p; p++)
      FUZZ_CHECK(isgraph((unsigned char)*p));
  } else {
    FUZZ_CHECK(err[0] != '\0');
  }
  free(path);
  free(body);
  return 0;
}
