/* util.c - small helpers shared by every program. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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

double
UTL_WallNow(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
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

const char *
UTL_FormatDouble(char *buf, size_t len, double v)
{
  if (!buf || len == 0)
    return "";
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, v);
    if (prec == 17 || !isfinite(v) || strtod(buf, NULL) == v)
      break;
  }
  return buf;
}

struct timeval
UTL_Timeval(double seconds, double max_s)
{
  struct timeval tv;

  if (!(seconds > 0.0))
    seconds = 0.0;
  if (seconds > max_s)
    seconds = max_s;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  if (tv.tv_usec > 999999)
    tv.tv_usec = 999999;
  return tv;
}

void
UTL_SetErr(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int
UTL_StrEqCase(const char *a, const char *b)
{
  return strcasecmp(a, b) == 0;
}

size_t
UTL_ScanDecimal(const char *s)
{
  size_t i = 0, digits = 0, save;

  if (s[i] == '+' || s[i] == '-')
    i++;
  while (isdigit((unsigned char)s[i])) {
    i++;
    digits++;
  }
  if (s[i] == '.') {
    i++;
    while (isdigit((unsigned char)s[i])) {
      i++;
      digits++;
    }
  }
  if (digits == 0)
    return 0;
  if (s[i] == 'e' || s[i] == 'E') {
    save = i;
    i++;
    if (s[i] == '+' || s[i] == '-')
      i++;
    if (isdigit((unsigned char)s[i])) {
      while (isdigit((unsigned char)s[i]))
        i++;
    } else {
      i = save;   /* "5e" or "5eV": the 'e' is not part of the number */
    }
  }
  return i;
}

void
UTL_AbsTime(int clock_id, double delay_s, struct timespec *ts)
{
  clock_gettime((clockid_t)clock_id, ts);
  ts->tv_sec += (time_t)delay_s;
  ts->tv_nsec += (long)((delay_s - (double)(time_t)delay_s) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

int
UTL_Fixed(char *buf, size_t size, double v, int decimals)
{
  static const double p10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };
  char tmp[40];
  double x, r, frac;
  unsigned long long u;
  int n = 0, len;

  if (decimals < 0 || decimals > 9 || !isfinite(v))
    return snprintf(buf, size, "%.*f", decimals, v);
  x = fabs(v) * p10[decimals];
  if (x >= 1e15)
    return snprintf(buf, size, "%.*f", decimals, v);
  r = floor(x);
  frac = x - r;
  /* The product may be off by an ulp of x: near .5 only printf's exact
     decimal expansion knows the way to round. */
  if (fabs(frac - 0.5) <= x * 1e-15 + 1e-12)
    return snprintf(buf, size, "%.*f", decimals, v);
  u = (unsigned long long)r + (frac > 0.5);
  /* digits backwards into tmp */
  for (int i = 0; i < decimals; i++) {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  }
  if (decimals > 0)
    tmp[n++] = '.';
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (signbit(v))
    tmp[n++] = '-';
  len = n;
  if (size > 0) {
    size_t k = 0;

    for (; k + 1 < size && n > 0; k++)
      buf[k] = tmp[--n];
    buf[k] = '\0';
  }
  return len;
}
