/* util.h - small helpers shared by every program. */
#ifndef WL_UTIL_H
#define WL_UTIL_H

#include <stddef.h>

/* Monotonic time in seconds. */
double UTL_Now(void);

/* Copy with truncation, always NUL-terminated; returns strlen(src). */
size_t UTL_Strlcpy(char *dst, const char *src, size_t size);

/* Strict number parsing of a whole word: 0 on success, -1 otherwise
   (empty, trailing junk, out of range, not finite). */
int UTL_ParseDouble(const char *s, double *out);
int UTL_ParseInt(const char *s, long min, long max, long *out);

/* Length of the decimal number ([+-]digits[.digits][e[+-]digits]) at the
   start of s, 0 if there is none; an 'e' without exponent digits is not
   part of the number. */
size_t UTL_ScanDecimal(const char *s);

/* Case-insensitive equality. */
int UTL_StrEqCase(const char *a, const char *b);

#endif
