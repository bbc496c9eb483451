/* util.h - small helpers shared by every program. */
#ifndef WL_UTIL_H
#define WL_UTIL_H

#include <stddef.h>
#include <sys/time.h>

/* Monotonic time in seconds. */
double UTL_Now(void);

/* Seconds since the Unix epoch (CLOCK_REALTIME): for times that outlive
   the process (claims, the state file). */
double UTL_WallNow(void);

/* Copy with truncation, always NUL-terminated; returns strlen(src). */
size_t UTL_Strlcpy(char *dst, const char *src, size_t size);

/* Strict number parsing of a whole word: 0 on success, -1 otherwise
   (empty, trailing junk, out of range, not finite). */
int UTL_ParseDouble(const char *s, double *out);
int UTL_ParseInt(const char *s, long min, long max, long *out);

/* Room for any double printed by UTL_FormatDouble. */
#define UTL_DOUBLE_LEN 32

/* Print v in the shortest of %.15g, %.16g and %.17g that strtod() reads
   back as exactly v ("0.0003", not "0.00029999999999999997"); returns buf. */
const char *UTL_FormatDouble(char *buf, size_t len, double v);

/* Length of the decimal number ([+-]digits[.digits][e[+-]digits]) at the
   start of s, 0 if there is none; an 'e' without exponent digits is not
   part of the number. */
size_t UTL_ScanDecimal(const char *s);

/* A delay in seconds as a timeval for evtimer_add: not finite or negative
   is 0, more than max_s is max_s. */
struct timeval UTL_Timeval(double seconds, double max_s);

/* The time delay_s (>= 0) from now on clock id, for pthread_cond_timedwait. */
struct timespec;
void UTL_AbsTime(int clock_id, double delay_s, struct timespec *ts);

/* Format an error message into err (errlen bytes; nothing if err is NULL
   or errlen is 0). */
void UTL_SetErr(char *err, size_t errlen, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* Case-insensitive equality. */
int UTL_StrEqCase(const char *a, const char *b);

/* snprintf(buf, size, "%.*f", decimals, v), the same text, in integer
   arithmetic where that is exact (|v| * 10^decimals < 1e15, decimals
   0..9, not near a rounding tie), else by snprintf.  Returns the length. */
int UTL_Fixed(char *buf, size_t size, double v, int decimals);

#endif
