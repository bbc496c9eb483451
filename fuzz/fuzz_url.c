/* fuzz_url.c - fuzz target: the Modbus device URL parser (CNF_ParseUrl),
 * host:port splitting (CNF_ParseHostPort), the loopback test behind the
 * "no tokens, loopback only" rule (CNF_IsLoopback), and MB_Create, which
 * turns a parsed URL into a libmodbus context (no I/O before MB_Start).
 *
 * Input: the text (up to the first NUL byte).  A URL that parses has every
 * field in its documented range.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "fuzz.h"
#include "mbdev.h"
#include "util.h"

static void
check_url(const char *text)
{
  CNF_Url u;
  CNF_Device dev;
  MB_Device *mb;
  char err[256];

  err[0] = '\0';
  if (CNF_ParseUrl(text, &u, err, sizeof err) != 0) {
    FUZZ_CHECK(err[0] != '\0');
    return;
  }
  FUZZ_CHECK(memchr(u.host, '\0', sizeof u.host) != NULL);
  if (u.kind == CNF_URL_TCP) {
    FUZZ_CHECK(u.host[0] != '\0');
    FUZZ_CHECK(u.port >= 1 && u.port <= 65535);
    for (const char *c = u.host; *c; c++)
      FUZZ_CHECK(isgraph((unsigned char)*c) && *c != '/' && *c != '?' && *c != '@');
  } else {
    FUZZ_CHECK(u.kind == CNF_URL_RTU);
    FUZZ_CHECK(u.host[0] == '/');
    FUZZ_CHECK(u.baud >= 50 && u.baud <= 4000000);
    FUZZ_CHECK(u.parity == 'N' || u.parity == 'E' || u.parity == 'O');
    FUZZ_CHECK(u.data_bits >= 5 && u.data_bits <= 8);
    FUZZ_CHECK(u.stop_bits == 1 || u.stop_bits == 2);
  }

  /* The device layer accepts whatever the parser accepted (or says why). */
  memset(&dev, 0, sizeof dev);
  UTL_Strlcpy(dev.name, "fuzz", sizeof dev.name);
  UTL_Strlcpy(dev.url, text, sizeof dev.url);
  dev.parsed = u;
  dev.unit = 1;
  dev.timeout_ms = 200;
  mb = MB_Create(&dev, NULL, NULL, NULL);
  if (mb) {
    FUZZ_CHECK(strcmp(MB_Name(mb), "fuzz") == 0);
    FUZZ_CHECK(!MB_IsUp(mb));
    MB_Destroy(mb);
  }
}

static void
check_host_port(const char *text)
{
  char host[64];
  int port = -2;

  if (CNF_ParseHostPort(text, host, sizeof host, &port) != 0)
    return;
  FUZZ_CHECK(strlen(host) < sizeof host && host[0] != '\0');
  FUZZ_CHECK(port >= 0 && port <= 65535);
  /* Loopback means loopback: a v4 address is 127/8, anything else is a
     known name or a v6 loopback form. */
  if (CNF_IsLoopback(host) && isdigit((unsigned char)host[0]) && !strchr(host, ':'))
    FUZZ_CHECK(strncmp(host, "127.", 4) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *text = malloc(size + 1);

  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  check_url(text);
  check_host_port(text);
  (void)CNF_IsLoopback(text);
  free(text);
  return 0;
}
