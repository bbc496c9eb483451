/* fuzz_statefile.c - fuzz target: the runtime state file loader (STF_Load).
 *
 * Input: the first byte picks a mode, the rest is file content.
 *   even: the content is the whole file, as found on disk (exercises the
 *         framing: truncation, the end line, the CRC);
 *   odd:  the content is the body, and the target appends a valid
 *         "end count=N crc32=X" line, N being the number of lines that begin
 *         with "laser " plus (first byte >> 1) % 3 - 1, so the fuzzer gets
 *         past the checksum to the laser-line parser.
 * A file that loads (format 1 or 2) gives lasers with names, finite values
 * and a setpoint parameter, and saving them (format 2) and loading again
 * gives the same lasers back.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "statefile.h"

static uint32_t
crc32_of(const uint8_t *p, size_t n)
{
  uint32_t crc = 0xffffffffu;

  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* Whether STF_Save would store this name (see statefile.c). */
static int
savable_name(const char *name)
{
  for (const char *c = name; *c; c++)
    if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '=')
      return 0;
  return name[0] != '\0';
}

static void
check_round_trip(const STF_Laser *l, int n)
{
  char path[512], err[256];
  STF_Laser *back = NULL;
  int m;

  for (int i = 0; i < n; i++)
    if (!savable_name(l[i].name))
      return;
  snprintf(path, sizeof path, "%s/state", FUZZ_TempDir());
  FUZZ_CHECK(STF_Save(path, l, n, err, sizeof err) == 0);
  m = STF_Load(path, &back, err, sizeof err);
  FUZZ_CHECK(m == n);
  for (int i = 0; i < n; i++) {
    FUZZ_CHECK(strcmp(back[i].name, l[i].name) == 0);
    FUZZ_CHECK(back[i].engaged == l[i].engaged);
    FUZZ_CHECK(back[i].piezo_v == l[i].piezo_v);
    FUZZ_CHECK(back[i].has_current == l[i].has_current);
    FUZZ_CHECK(!l[i].has_current || back[i].current_v == l[i].current_v);
    FUZZ_CHECK(back[i].ramp == l[i].ramp);
    FUZZ_CHECK(!l[i].ramp || (back[i].ramp_to_thz == l[i].ramp_to_thz &&
                              back[i].ramp_mhz_s == l[i].ramp_mhz_s));
    FUZZ_CHECK(back[i].n_params == l[i].n_params);
    for (int k = 0; k < l[i].n_params; k++) {
      FUZZ_CHECK(strcmp(back[i].params[k].key, l[i].params[k].key) == 0);
      FUZZ_CHECK(back[i].params[k].value == l[i].params[k].value);
      FUZZ_CHECK(back[i].params[k].has_file == l[i].params[k].has_file);
      FUZZ_CHECK(!l[i].params[k].has_file || back[i].params[k].file == l[i].params[k].file);
    }
  }
  free(back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint8_t *file;
  size_t len;
  const char *path;
  STF_Laser *l = (STF_Laser *)(uintptr_t)1;   /* must be replaced */
  STF_Calibration cal;
  char err[256];
  int n;

  if (size < 1 || size > 64 * 1024)
    return 0;
  file = malloc(size + 64);
  if (!file)
    return 0;
  memcpy(file, data + 1, size - 1);
  len = size - 1;
  if (data[0] & 1) {
    long count = (data[0] >> 1) % 3 - 1;
    char end[64];

    if (len > 0 && file[len - 1] != '\n')
      file[len++] = '\n';
    for (size_t i = 0; i < len; i++)
      if ((i == 0 || file[i - 1] == '\n') && len - i >= 6 && memcmp(file + i, "laser ", 6) == 0)
        count++;
    if (count < 0)
      count = 0;
    snprintf(end, sizeof end, "end count=%ld crc32=%08x\n", count,
             (unsigned int)crc32_of(file, len));
    memcpy(file + len, end, strlen(end));
    len += strlen(end);
  }
  path = FUZZ_MemFile(file, len);
  free(file);
  if (!path)
    return 0;

  err[0] = '\0';
  memset(&cal, 0xa5, sizeof cal);
  n = STF_LoadCal(path, &l, &cal, err, sizeof err);
  FUZZ_CHECK(n >= -1);
  if (n < 0) {
    FUZZ_CHECK(l == NULL && err[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(n > 0 || len > 0);             /* an empty file is an error, not "no lasers" */
  FUZZ_CHECK(n == 0 || l != NULL);
  FUZZ_CHECK(cal.present == 0 || cal.present == 1);
  FUZZ_CHECK(!cal.present || (cal.ref_thz > 0.0 && isfinite(cal.ref_thz) &&
                              fabs(cal.eps) < 1e-3 && isfinite(cal.unix_s)));
  for (int i = 0; i < n; i++) {
    FUZZ_CHECK(l[i].name[0] != '\0' && memchr(l[i].name, '\0', sizeof l[i].name));
    FUZZ_CHECK(!strchr(l[i].name, ' ') && !strchr(l[i].name, '\t') && !strchr(l[i].name, '\n'));
    FUZZ_CHECK(isfinite(l[i].piezo_v) && isfinite(l[i].current_v));
    /* both formats give the setpoint as a parameter */
    FUZZ_CHECK(STF_FindParam(&l[i], STF_KEY_SETPOINT) != NULL);
    FUZZ_CHECK(l[i].engaged == 0 || l[i].engaged == 1);
    FUZZ_CHECK(!l[i].ramp || (isfinite(l[i].ramp_to_thz) && l[i].ramp_mhz_s > 0.0 &&
                              isfinite(l[i].ramp_mhz_s)));
    FUZZ_CHECK(l[i].n_params >= 0 && l[i].n_params <= STF_MAX_PARAMS);
    for (int k = 0; k < l[i].n_params; k++) {
      size_t kl = strnlen(l[i].params[k].key, STF_KEY_MAX);
      FUZZ_CHECK(kl > 0 && kl < STF_KEY_MAX);
      FUZZ_CHECK(strspn(l[i].params[k].key, "abcdefghijklmnopqrstuvwxyz0123456789_") == kl);
      FUZZ_CHECK(isfinite(l[i].params[k].value));
      FUZZ_CHECK(!l[i].params[k].has_file || isfinite(l[i].params[k].file));
      for (int m = 0; m < k; m++)
        FUZZ_CHECK(strcmp(l[i].params[m].key, l[i].params[k].key) != 0);
    }
    for (int j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(l[i].name, l[j].name) != 0);
  }
  check_round_trip(l, n);
  free(l);
  return 0;
}
