/* util.c - small helpers shared by every program. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util.h"

double
UTL_Now(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t
UTL_Strlcpy(char *dst, const char *src, size_t size)
{
  size_t len = strlen(src);

  if (size > 0) {
    size_t n = len < size - 1 ? len : size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
  }
  return len;
}

int
UTL_ParseDouble(const char *s, double *out)
{
  char *end;
  double v;

  if (!s || !*s || isspace((unsigned char)*s))
    return -1;
  errno = 0;
  v = strtod(s, &end);
  if (*end != '\0' || errno == ERANGE || !isfinite(v))
    return -1;
  *out = v;
  return 0;
}

int
UTL_ParseInt(const char *s, long min, long max, long *out)
{
  char *end;
  long v;

  if (!s || !*s || isspace((unsigned char)*s))
    return -1;
  errno = 0;
  v = strtol(s, &end, 10);
  if (*end != '\0' || errno == ERANGE || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int
UTL_StrEqCase(const char *a, const char *b)
{
  return strcasecmp(a, b) == 0;
}
