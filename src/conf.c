/* conf.c - the configuration file (libconfig): load, range-check, copy out.
 *
 * Every key is checked here once, so the rest of wavelock reads plain typed
 * fields.  Unknown keys are errors (a typo must not silently fall back to a
 * default).  Errors are one line, "FILE:LINE: KEY: message", where KEY is the
 * libconfig path of the setting ("lasers.[2].pid.ki", list indices from 0).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "regenc.h"
#include "units.h"
#include "util.h"

/* Defaults (also documented in conf.h and doc/wavelockd.conf.5). */
#define DEF_LISTEN "127.0.0.1:7470"
#define DEF_WM_ADDRESS "127.0.0.1:7480"
#define DEF_WM_LIBRARY "libwlmData.so"
#define DEF_SIM_CONTROL "127.0.0.1:7481"

/* Raw ranges of the register formats. */
#define U16_MAX_RAW 65535.0
#define S16_MIN_RAW -32768.0
#define S16_MAX_RAW 32767.0
#define F32_MAX_RAW 3.4028234663852886e38

typedef struct {
  const char *path;         /* the file as given, for messages */
  char dir[CNF_PATH_MAX];   /* its directory (absolute when possible) */
  char filebuf[2 * CNF_PATH_MAX];  /* an included file's path, for messages */
  char *err;
  size_t errlen;
} Loader;

/* ------------------------------------------------------------------ */
/* Error messages                                                       */

static void
setting_path(const config_setting_t *s, char *buf, size_t len)
{
  const config_setting_t *parent;
  const char *name;
  size_t used;

  buf[0] = '\0';
  if (!s)
    return;
  parent = config_setting_parent(s);
  if (!parent)
    return;                       /* the root group has no name */
  setting_path(parent, buf, len);
  used = strlen(buf);
  if (used > 0 && used + 1 < len)
    buf[used++] = '.', buf[used] = '\0';
  name = config_setting_name(s);
  if (name)
    snprintf(buf + used, len - used, "%s", name);
  else
    snprintf(buf + used, len - used, "[%d]", config_setting_index(s));
}

/* The file a setting (or parse error) comes from: the config file itself, or
   an @include'd file, which libconfig names as written (relative to dir). */
static const char *
source_file(Loader *ld, const char *f)
{
  if (!f || strcmp(f, ld->path) == 0 || f[0] == '/')
    return f ? f : ld->path;
  snprintf(ld->filebuf, sizeof ld->filebuf, "%s/%s", ld->dir, f);
  return ld->filebuf;
}

static const char *
setting_file(Loader *ld, const config_setting_t *s)
{
  return source_file(ld, s ? config_setting_source_file(s) : NULL);
}

/* Report an error about setting s (its line); key overrides the path of s
   (used for a missing key, reported at its parent's line).  Returns -1. */
static int __attribute__((format(printf, 4, 5)))
fail(Loader *ld, const config_setting_t *s, const char *key, const char *fmt, ...)
{
  char path[256], msg[384];
  unsigned int line = s ? config_setting_source_line(s) : 0;
  va_list ap;

  if (key)
    UTL_Strlcpy(path, key, sizeof path);
  else
    setting_path(s, path, sizeof path);
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (line > 0)
    snprintf(ld->err, ld->errlen, "%s:%u: %s: %s", setting_file(ld, s), line,
             path[0] ? path : "(top level)", msg);
  else
    snprintf(ld->err, ld->errlen, "%s: %s: %s", setting_file(ld, s),
             path[0] ? path : "(top level)", msg);
  return -1;
}

/* A required key is missing from group g. */
static int
fail_missing(Loader *ld, const config_setting_t *g, const char *key)
{
  char path[256], full[320];

  setting_path(g, path, sizeof path);
  snprintf(full, sizeof full, "%s%s%s", path, path[0] ? "." : "", key);
  return fail(ld, g, full, "missing (required)");
}

static const char *
type_name(const config_setting_t *s)
{
  switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP: return "a group { }";
    case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a number";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array [ ]";
    case CONFIG_TYPE_LIST: return "a list ( )";
    default: return "empty";
  }
}

/* ------------------------------------------------------------------ */
/* Unknown keys                                                         */

static size_t
edit_distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b), prev[40], cur[40];

  if (la >= 39 || lb >= 39)
    return 99;
  for (size_t j = 0; j <= lb; j++)
    prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) !=
                                  tolower((unsigned char)b[j - 1]));
      size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
  }
  return prev[lb];
}

/* Every member of group g must be one of allowed (NULL-terminated).  An
   unknown key is reported with the closest allowed names as suggestions. */
static int
check_keys(Loader *ld, const config_setting_t *g, const char *const *allowed)
{
  int n = config_setting_length(g);

  for (int i = 0; i < n; i++) {
    const config_setting_t *m = config_setting_get_elem(g, (unsigned int)i);
    const char *name = config_setting_name(m);
    const char *best[3];
    size_t best_d = 3;
    int ok = 0, nbest = 0;

    if (!name)
      continue;
    for (const char *const *k = allowed; *k && !ok; k++)
      ok = strcmp(name, *k) == 0;
    if (ok)
      continue;
    /* Unknown: suggest the nearest keys (edit distances only here, so a
       valid config costs one comparison per key and candidate). */
    for (const char *const *k = allowed; *k; k++) {
      size_t d = edit_distance(name, *k);

      if (d > 1 && strlen(*k) <= 3)
        continue;                 /* "kx" is not two edits from "offset" */
      if (d < best_d) {
        best_d = d;
        nbest = 0;
      }
      if (d == best_d && nbest < 3)
        best[nbest++] = *k;
    }
    switch (nbest) {
      case 0:
        return fail(ld, m, NULL, "unknown key");
      case 1:
        return fail(ld, m, NULL, "unknown key (did you mean \"%s\"?)", best[0]);
      case 2:
        return fail(ld, m, NULL, "unknown key (did you mean \"%s\" or \"%s\"?)",
                    best[0], best[1]);
      default:
        return fail(ld, m, NULL, "unknown key (did you mean \"%s\", \"%s\" or \"%s\"?)",
                    best[0], best[1], best[2]);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Typed getters.  Each returns 0 (value stored, or key absent and not
   required: *out untouched) or -1 with the error reported.             */

enum { OPT = 0, REQ = 1 };

/* A member that must be a group, or NULL if absent. */
static int
get_group(Loader *ld, const config_setting_t *g, const char *key, int required,
          const config_setting_t **out)
{
  const config_setting_t *s = config_setting_get_member(g, key);

  *out = NULL;
  if (!s)
    return required ? fail_missing(ld, g, key) : 0;
  if (config_setting_type(s) != CONFIG_TYPE_GROUP)
    return fail(ld, s, NULL, "must be a group { ... }, not %s", type_name(s));
  *out = s;
  return 0;
}

static int
setting_number(Loader *ld, const config_setting_t *s, double *out)
{
  double v = 0.0;

  switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
      v = config_setting_get_int(s);
      break;
    case CONFIG_TYPE_INT64:
      v = (double)config_setting_get_int64(s);
      break;
    case CONFIG_TYPE_FLOAT:
      v = config_setting_get_float(s);
      break;
    default:
      return fail(ld, s, NULL, "must be a number, not %s", type_name(s));
  }
  if (!isfinite(v))
    return fail(ld, s, NULL, "must be a finite number");
  *out = v;
  return 0;
}

static int
setting_integer(Loader *ld, const config_setting_t *s, long long *out)
{
  double d;

  switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
      *out = config_setting_get_int(s);
      return 0;
    case CONFIG_TYPE_INT64:
      *out = config_setting_get_int64(s);
      return 0;
    case CONFIG_TYPE_FLOAT:
      d = config_setting_get_float(s);
      if (!isfinite(d) || d != floor(d) || fabs(d) > 9.0e15)
        return fail(ld, s, NULL, "must be a whole number, not %.17g", d);
      *out = (long long)d;
      return 0;
    default:
      return fail(ld, s, NULL, "must be an integer, not %s", type_name(s));
  }
}

/* Range flags for num_key. */
#define GT_LO 2   /* lower bound exclusive */
#define LT_HI 4   /* upper bound exclusive */

static int
check_range(Loader *ld, const config_setting_t *s, double v, double lo, double hi,
            int flags)
{
  int lo_bad = (flags & GT_LO) ? !(v > lo) : !(v >= lo);
  int hi_bad = (flags & LT_HI) ? !(v < hi) : !(v <= hi);
  const char *lo_op = (flags & GT_LO) ? ">" : ">=";
  const char *hi_op = (flags & LT_HI) ? "<" : "<=";

  if (!lo_bad && !hi_bad)
    return 0;
  if (isinf(hi))
    return fail(ld, s, NULL, "must be %s %g (is %g)", lo_op, lo, v);
  if (isinf(lo))
    return fail(ld, s, NULL, "must be %s %g (is %g)", hi_op, hi, v);
  if (!(flags & (GT_LO | LT_HI)))
    return fail(ld, s, NULL, "must be between %g and %g (is %g)", lo, hi, v);
  return fail(ld, s, NULL, "must be %s %g and %s %g (is %g)", lo_op, lo, hi_op, hi, v);
}

/* A number in lo..hi (flags: REQ, GT_LO, LT_HI). */
static int
num_key(Loader *ld, const config_setting_t *g, const char *key, int flags,
        double lo, double hi, double *out)
{
  const config_setting_t *s = config_setting_get_member(g, key);
  double v = 0.0;

  if (!s)
    return (flags & REQ) ? fail_missing(ld, g, key) : 0;
  if (setting_number(ld, s, &v) < 0 || check_range(ld, s, v, lo, hi, flags) < 0)
    return -1;
  *out = v;
  return 0;
}

/* An integer in lo..hi (inclusive). */
static int
int_key(Loader *ld, const config_setting_t *g, const char *key, int required,
        long long lo, long long hi, long long *out)
{
  const config_setting_t *s = config_setting_get_member(g, key);
  long long v = 0;

  if (!s)
    return required ? fail_missing(ld, g, key) : 0;
  if (setting_integer(ld, s, &v) < 0)
    return -1;
  if (v < lo || v > hi) {
    if (hi == LLONG_MAX)
      return fail(ld, s, NULL, "must be >= %lld (is %lld)", lo, v);
    return fail(ld, s, NULL, "must be between %lld and %lld (is %lld)", lo, hi, v);
  }
  *out = v;
  return 0;
}

static int
int_key_i(Loader *ld, const config_setting_t *g, const char *key, int required,
          int lo, int hi, int *out)
{
  long long v = *out;

  if (int_key(ld, g, key, required, lo, hi, &v) < 0)
    return -1;
  *out = (int)v;
  return 0;
}

static int
bool_key(Loader *ld, const config_setting_t *g, const char *key, int *out)
{
  const config_setting_t *s = config_setting_get_member(g, key);

  if (!s)
    return 0;
  switch (config_setting_type(s)) {
    case CONFIG_TYPE_BOOL:
      *out = config_setting_get_bool(s) ? 1 : 0;
      return 0;
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
      if (config_setting_get_int64(s) == 0 || config_setting_get_int64(s) == 1) {
        *out = (int)config_setting_get_int64(s);
        return 0;
      }
      break;
    default:
      break;
  }
  return fail(ld, s, NULL, "must be true or false");
}

/* The string of setting s (must be a string). */
static int
setting_string(Loader *ld, const config_setting_t *s, const char **out)
{
  if (config_setting_type(s) != CONFIG_TYPE_STRING)
    return fail(ld, s, NULL, "must be a string \"...\", not %s", type_name(s));
  *out = config_setting_get_string(s);
  return 0;
}

/* A string copied into buf; may be empty unless nonempty is set. */
static int
str_key(Loader *ld, const config_setting_t *g, const char *key, int required,
        int nonempty, char *buf, size_t buflen, const config_setting_t **where)
{
  const config_setting_t *s = config_setting_get_member(g, key);
  const char *v = NULL;

  if (where)
    *where = s;
  if (!s)
    return required ? fail_missing(ld, g, key) : 0;
  if (setting_string(ld, s, &v) < 0)
    return -1;
  if (nonempty && !v[0])
    return fail(ld, s, NULL, "must not be empty");
  if (strlen(v) >= buflen)
    return fail(ld, s, NULL, "too long (at most %zu characters)", buflen - 1);
  UTL_Strlcpy(buf, v, buflen);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Host:port, URLs, loopback                                            */

static int
parse_port(const char *s, int min, int *port)
{
  long v;

  if (!s[0] || strspn(s, "0123456789") != strlen(s) ||
      UTL_ParseInt(s, min, 65535, &v) < 0)
    return -1;
  *port = (int)v;
  return 0;
}

/* Split "host:port" / "[v6]:port" / optionally bare "host" (port_opt).
   Returns 0, or -1 with a message. */
static int
split_host_port(const char *text, char *host, size_t hostlen, int *port,
                int port_opt, int min_port, char *err, size_t errlen)
{
  const char *h, *p = NULL;
  size_t hl;

  if (text[0] == '[') {
    const char *close = strchr(text, ']');

    if (!close) {
      snprintf(err, errlen, "missing ']' after an IPv6 address");
      return -1;
    }
    h = text + 1;
    hl = (size_t)(close - h);
    if (close[1] == ':')
      p = close + 2;
    else if (close[1] != '\0') {
      snprintf(err, errlen, "expected ':port' after ']'");
      return -1;
    }
  } else {
    const char *colon = strchr(text, ':');

    h = text;
    if (colon && strchr(colon + 1, ':')) {
      snprintf(err, errlen, "write IPv6 addresses in brackets, e.g. [::1]:7470");
      return -1;
    }
    hl = colon ? (size_t)(colon - text) : strlen(text);
    if (colon)
      p = colon + 1;
  }
  if (hl == 0) {
    snprintf(err, errlen, "missing host");
    return -1;
  }
  if (hl >= hostlen) {
    snprintf(err, errlen, "host name too long");
    return -1;
  }
  for (size_t i = 0; i < hl; i++) {
    if (isspace((unsigned char)h[i]) || !isprint((unsigned char)h[i]) ||
        h[i] == '/' || h[i] == '?' || h[i] == '@') {
      snprintf(err, errlen, "bad character in host");
      return -1;
    }
  }
  if (!p) {
    if (!port_opt) {
      snprintf(err, errlen, "missing ':port'");
      return -1;
    }
  } else if (parse_port(p, min_port, port) < 0) {
    snprintf(err, errlen, "port must be a number %d..65535", min_port);
    return -1;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  return 0;
}

int
CNF_ParseHostPort(const char *text, char *host, size_t hostlen, int *port)
{
  char err[128], h[256];
  int p = -1;

  if (!text || split_host_port(text, h, sizeof h, &p, 0, 0, err, sizeof err) < 0 ||
      strlen(h) >= hostlen)
    return -1;
  UTL_Strlcpy(host, h, hostlen);
  *port = p;
  return 0;
}

int
CNF_IsLoopback(const char *host)
{
  char h[256];
  size_t len;
  struct in_addr a4;
  struct in6_addr a6;

  if (!host)
    return 0;
  len = strlen(host);
  if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
    if (len - 2 >= sizeof h)
      return 0;
    memcpy(h, host + 1, len - 2);
    h[len - 2] = '\0';
  } else {
    UTL_Strlcpy(h, host, sizeof h);
  }
  if (strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0 ||
      strcasecmp(h, "ip6-localhost") == 0)
    return 1;
  if (inet_pton(AF_INET, h, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, h, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6))
      return 1;
    if (IN6_IS_ADDR_V4MAPPED(&a6))
      return a6.s6_addr[12] == 127;
  }
  return 0;
}

static int
parse_rtu_params(const char *q, CNF_Url *url, char *err, size_t errlen)
{
  char buf[256], *save = NULL;
  int seen_baud = 0, seen_parity = 0, seen_data = 0, seen_stop = 0;

  if (strlen(q) >= sizeof buf) {
    snprintf(err, errlen, "parameters too long");
    return -1;
  }
  UTL_Strlcpy(buf, q, sizeof buf);
  for (char *kv = strtok_r(buf, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(kv, '=');
    const char *val;
    long v;

    if (!eq) {
      snprintf(err, errlen, "parameter \"%s\" needs a value (name=value)", kv);
      return -1;
    }
    *eq = '\0';
    val = eq + 1;
    if (strcasecmp(kv, "baud") == 0) {
      if (seen_baud++ || UTL_ParseInt(val, 50, 4000000, &v) < 0) {
        snprintf(err, errlen, "baud must be given once, 50..4000000");
        return -1;
      }
      url->baud = (int)v;
    } else if (strcasecmp(kv, "parity") == 0) {
      if (seen_parity++) {
        snprintf(err, errlen, "parity given twice");
        return -1;
      }
      if (strcasecmp(val, "N") == 0 || strcasecmp(val, "none") == 0)
        url->parity = 'N';
      else if (strcasecmp(val, "E") == 0 || strcasecmp(val, "even") == 0)
        url->parity = 'E';
      else if (strcasecmp(val, "O") == 0 || strcasecmp(val, "odd") == 0)
        url->parity = 'O';
      else {
        snprintf(err, errlen, "parity must be N, E or O");
        return -1;
      }
    } else if (strcasecmp(kv, "data") == 0) {
      if (seen_data++ || UTL_ParseInt(val, 5, 8, &v) < 0) {
        snprintf(err, errlen, "data (bits) must be given once, 5..8");
        return -1;
      }
      url->data_bits = (int)v;
    } else if (strcasecmp(kv, "stop") == 0) {
      if (seen_stop++ || UTL_ParseInt(val, 1, 2, &v) < 0) {
        snprintf(err, errlen, "stop (bits) must be given once, 1 or 2");
        return -1;
      }
      url->stop_bits = (int)v;
    } else {
      snprintf(err, errlen, "unknown parameter \"%s\" (baud, parity, data, stop)", kv);
      return -1;
    }
  }
  return 0;
}

int
CNF_ParseUrl(const char *text, CNF_Url *url, char *err, size_t errlen)
{
  CNF_Url u;

  memset(&u, 0, sizeof u);
  u.baud = 19200;
  u.parity = 'N';
  u.data_bits = 8;
  u.stop_bits = 1;
  if (!text || !text[0]) {
    snprintf(err, errlen, "empty URL");
    return -1;
  }
  for (const char *c = text; *c; c++) {
    if (isspace((unsigned char)*c) || !isprint((unsigned char)*c)) {
      snprintf(err, errlen, "URL contains spaces or control characters");
      return -1;
    }
  }
  if (strncasecmp(text, "tcp://", 6) == 0) {
    const char *rest = text + 6;

    u.kind = CNF_URL_TCP;
    u.port = 502;
    if (strchr(rest, '/') || strchr(rest, '?')) {
      snprintf(err, errlen, "a tcp URL is tcp://host:port, nothing after the port");
      return -1;
    }
    if (split_host_port(rest, u.host, sizeof u.host, &u.port, 1, 1, err, errlen) < 0)
      return -1;
  } else if (strncasecmp(text, "rtu:", 4) == 0) {
    const char *rest = text + 4, *q;
    size_t plen;

    u.kind = CNF_URL_RTU;
    if (strncmp(rest, "//", 2) == 0 && rest[2] == '/')
      rest += 2;                          /* rtu:///dev/ttyS0 */
    q = strchr(rest, '?');
    plen = q ? (size_t)(q - rest) : strlen(rest);
    if (plen == 0 || rest[0] != '/') {
      snprintf(err, errlen, "an rtu URL is rtu:/dev/ttyX?baud=19200&parity=N&data=8&stop=1");
      return -1;
    }
    if (plen >= sizeof u.host) {
      snprintf(err, errlen, "device path too long");
      return -1;
    }
    memcpy(u.host, rest, plen);
    u.host[plen] = '\0';
    if (q && q[1] && parse_rtu_params(q + 1, &u, err, errlen) < 0)
      return -1;
  } else {
    snprintf(err, errlen, "unknown kind of URL (use tcp://host:port or "
             "rtu:/dev/ttyX?baud=19200&parity=N&data=8&stop=1)");
    return -1;
  }
  *url = u;
  return 0;
}

/* Whether two parsed URLs reach the same line: one TCP host and port (a
   name compared without case), or one serial port. */
static int
same_line(const CNF_Url *a, const CNF_Url *b)
{
  if (a->kind != b->kind)
    return 0;
  if (a->kind == CNF_URL_TCP)
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
  return strcmp(a->host, b->host) == 0;
}

/* ------------------------------------------------------------------ */
/* Names and paths                                                      */

/* Names of lasers and devices appear as words in the text protocol. */
static int
check_name(Loader *ld, const config_setting_t *s, const char *name)
{
  if (!isalpha((unsigned char)name[0]))
    return fail(ld, s, NULL, "\"%s\": must start with a letter", name);
  for (const char *c = name; *c; c++) {
    if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
      return fail(ld, s, NULL, "\"%s\": only letters, digits, '_', '-' and '.' allowed",
                  name);
  }
  return 0;
}

/* Resolve a relative path against the config file's directory. */
static int
resolve_path(Loader *ld, const config_setting_t *s, const char *in, char *out,
             size_t outlen)
{
  int n;

  if (!in[0] || in[0] == '/')
    n = snprintf(out, outlen, "%s", in);
  else
    n = snprintf(out, outlen, "%s/%s", ld->dir, in);
  if (n < 0 || (size_t)n >= outlen)
    return fail(ld, s, NULL, "path too long");
  return 0;
}

static int
path_key(Loader *ld, const config_setting_t *g, const char *key, char *out,
         size_t outlen)
{
  char raw[CNF_PATH_MAX];
  const config_setting_t *s;

  raw[0] = '\0';
  if (str_key(ld, g, key, OPT, 0, raw, sizeof raw, &s) < 0)
    return -1;
  if (!s)
    return 0;
  return resolve_path(ld, s, raw, out, outlen);
}

static void
set_dir(Loader *ld, const char *path)
{
  const char *slash = strrchr(path, '/');
  char dir[CNF_PATH_MAX], *real;

  if (!slash)
    UTL_Strlcpy(dir, ".", sizeof dir);
  else if (slash == path)
    UTL_Strlcpy(dir, "/", sizeof dir);
  else {
    size_t n = (size_t)(slash - path);

    if (n >= sizeof dir)
      n = sizeof dir - 1;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  real = realpath(dir, NULL);
  if (real && strlen(real) < sizeof ld->dir)
    UTL_Strlcpy(ld->dir, real, sizeof ld->dir);
  else
    UTL_Strlcpy(ld->dir, dir, sizeof ld->dir);
  free(real);
  if (strcmp(ld->dir, "/") == 0)
    ld->dir[0] = '\0';          /* so "dir/file" becomes "/file" */
}

/* ------------------------------------------------------------------ */
/* Sections                                                             */

static const char *const top_keys[] = {
  "server", "state_file", "log", "log_level", "pid_file", "user",
  "wavemeter", "devices", "lasers", "calibration", "sim", "http", "mqtt", NULL
};
static const char *const mqtt_keys[] = {
  "url", "instance", "username", "password_file", "cafile", "commands", "keepalive_s",
  "reading_interval_ms", "queue", "protocol", "remote", NULL
};
static const char *const http_keys[] = { "listen", "max_event_readers", "session_s", NULL };
static const char *const cal_keys[] = {
  "channel", "frequency", "mode", "tau_s", "max_rate_mhz_per_min", "tolerance_mhz",
  "period_s", NULL
};
static const char *const server_keys[] = {
  "listen", "max_clients", "idle_timeout_s", "line_timeout_s", "auth_timeout_s", "tokens", NULL
};
static const char *const token_keys[] = { "secret", "role", NULL };
static const char *const wm_keys[] = {
  "backend", "library", "address", "stale_ms", "poll_ms", "callback_silence_ms", NULL
};
static const char *const device_keys[] = { "name", "url", "unit", "timeout_ms", "probe",
                                            "combine_writes", NULL };
static const char *const probe_keys[] = { "register", "function", NULL };
static const char *const piezo_keys[] = {
  "device", "register", "format", "word_order", "scale", "offset", "min_v",
  "max_v", "start_v", "max_step_v", NULL
};
static const char *const current_keys[] = {
  "device", "register", "format", "word_order", "scale", "offset", "min_v",
  "max_v", "start_v", "max_step_v", "feedforward", NULL
};
static const char *const sim_keys[] = {
  "seed", "control", "switch_ms", "speed", "calibration_offset_ppb",
  "calibration_drift_ppb_per_min", "calibration_walk_ppb_rts", "references", NULL
};
static const char *const simref_keys[] = {
  "name", "channel", "frequency", "noise_mhz", "exposure_ms", NULL
};

/* A "host:port" string key; min_port 0 allows "any free port". */
static int
hostport_key(Loader *ld, const config_setting_t *g, const char *key, int min_port,
             char *out, size_t outlen)
{
  const config_setting_t *s;
  char buf[128], host[256], msg[128];
  int port;

  buf[0] = '\0';
  if (str_key(ld, g, key, OPT, 1, buf, sizeof buf, &s) < 0)
    return -1;
  if (!s)
    return 0;
  if (split_host_port(buf, host, sizeof host, &port, 0, min_port, msg, sizeof msg) < 0)
    return fail(ld, s, NULL, "\"%s\": %s (expected host:port)", buf, msg);
  UTL_Strlcpy(out, buf, outlen);
  return 0;
}

/* A listen setting: one "host:port" string or a list of them (at least min)
   into list[0..*n-1].  With srv (the http group), a non-loopback address
   needs the text protocol's tokens.  port_eg: the port of the example in
   the error message. */
static int
load_listen(Loader *ld, const config_setting_t *s, int min, const CNF_Server *srv,
            const char *port_eg, char list[][128], int *n_list)
{
  int n;

  if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    n = 1;
  } else if (config_setting_type(s) == CONFIG_TYPE_ARRAY ||
             config_setting_type(s) == CONFIG_TYPE_LIST) {
    n = config_setting_length(s);
  } else {
    return fail(ld, s, NULL, "must be a list of \"host:port\" strings, not %s", type_name(s));
  }
  if (n < min)
    return fail(ld, s, NULL, "needs at least one \"host:port\"");
  if (n > CNF_MAX_LISTEN)
    return fail(ld, s, NULL, "at most %d addresses", CNF_MAX_LISTEN);
  *n_list = 0;
  for (int i = 0; i < n; i++) {
    const config_setting_t *e = config_setting_type(s) == CONFIG_TYPE_STRING ? s :
      config_setting_get_elem(s, (unsigned int)i);
    const char *v = NULL;
    char host[256], msg[128];
    int port;

    if (setting_string(ld, e, &v) < 0)
      return -1;
    if (strlen(v) >= 128)
      return fail(ld, e, NULL, "too long");
    if (split_host_port(v, host, sizeof host, &port, 0, 0, msg, sizeof msg) < 0)
      return fail(ld, e, NULL, "\"%s\": %s (expected host:port, e.g. 127.0.0.1:%s)", v, msg,
                  port_eg);
    /* Open to the network only with authentication, as the text protocol. */
    if (srv && srv->n_tokens == 0 && !CNF_IsLoopback(host))
      return fail(ld, e, NULL, "\"%s\" is not a loopback address: configure server.tokens "
                  "so that clients must authenticate", v);
    UTL_Strlcpy(list[(*n_list)++], v, 128);
  }
  return 0;
}

static int
load_server(Loader *ld, const config_setting_t *root, CNF_Server *srv)
{
  const config_setting_t *g, *s;

  if (get_group(ld, root, "server", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  if (check_keys(ld, g, server_keys) < 0 ||
      int_key_i(ld, g, "max_clients", OPT, 1, 100000, &srv->max_clients) < 0 ||
      int_key_i(ld, g, "idle_timeout_s", OPT, 0, 7 * 86400, &srv->idle_timeout_s) < 0 ||
      int_key_i(ld, g, "line_timeout_s", OPT, 0, 86400, &srv->line_timeout_s) < 0 ||
      int_key_i(ld, g, "auth_timeout_s", OPT, 0, 86400, &srv->auth_timeout_s) < 0)
    return -1;

  s = config_setting_get_member(g, "listen");
  if (s && load_listen(ld, s, 1, NULL, "7470", srv->listen, &srv->n_listen) < 0)
    return -1;

  s = config_setting_get_member(g, "tokens");
  if (s) {
    int n;

    if (config_setting_type(s) != CONFIG_TYPE_LIST)
      return fail(ld, s, NULL, "must be a list ( { secret = \"...\"; role = \"control\"; }, ... ), not %s",
                  type_name(s));
    n = config_setting_length(s);
    if (n > CNF_MAX_TOKENS)
      return fail(ld, s, NULL, "at most %d tokens", CNF_MAX_TOKENS);
    for (int i = 0; i < n; i++) {
      const config_setting_t *t = config_setting_get_elem(s, (unsigned int)i), *ws, *wr;
      CNF_Token *tok = &srv->tokens[i];
      char role[32];

      if (config_setting_type(t) != CONFIG_TYPE_GROUP)
        return fail(ld, t, NULL, "must be a group { secret = ...; role = ...; }");
      if (check_keys(ld, t, token_keys) < 0 ||
          str_key(ld, t, "secret", REQ, 1, tok->secret, sizeof tok->secret, &ws) < 0 ||
          str_key(ld, t, "role", REQ, 1, role, sizeof role, &wr) < 0)
        return -1;
      for (const char *c = tok->secret; *c; c++) {
        if (!isgraph((unsigned char)*c))
          return fail(ld, ws, NULL, "must not contain spaces or control characters");
      }
      if (strcasecmp(role, "monitor") == 0)
        tok->role = CNF_ROLE_MONITOR;
      else if (strcasecmp(role, "control") == 0)
        tok->role = CNF_ROLE_CONTROL;
      else
        return fail(ld, wr, NULL, "\"%s\": must be \"monitor\" or \"control\"", role);
      for (int j = 0; j < i; j++) {
        if (strcmp(srv->tokens[j].secret, tok->secret) == 0)
          return fail(ld, ws, NULL, "the same secret as server.tokens.[%d]", j);
      }
      srv->n_tokens = i + 1;
    }
  }

  /* Open to the network only with authentication. */
  if (srv->n_tokens == 0) {
    const config_setting_t *ls = config_setting_get_member(g, "listen");

    for (int i = 0; i < srv->n_listen; i++) {
      char host[256];
      int port;

      if (CNF_ParseHostPort(srv->listen[i], host, sizeof host, &port) == 0 &&
          !CNF_IsLoopback(host)) {
        const config_setting_t *e = ls && config_setting_type(ls) != CONFIG_TYPE_STRING ?
          config_setting_get_elem(ls, (unsigned int)i) : ls;
        return fail(ld, e, NULL, "\"%s\" is not a loopback address: configure "
                    "server.tokens so that clients must authenticate", srv->listen[i]);
      }
    }
  }
  return 0;
}

static int
load_http(Loader *ld, const config_setting_t *root, const CNF_Server *srv, CNF_Http *h)
{
  const config_setting_t *g, *s;

  if (get_group(ld, root, "http", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  if (check_keys(ld, g, http_keys) < 0 ||
      int_key_i(ld, g, "max_event_readers", OPT, 0, 100000, &h->max_event_readers) < 0 ||
      int_key_i(ld, g, "session_s", OPT, 60, 30 * 86400, &h->session_s) < 0)
    return -1;
  s = config_setting_get_member(g, "listen");
  if (!s)
    return 0;
  return load_listen(ld, s, 0, srv, "7471", h->listen, &h->n_listen);
}

static int
load_wavemeter(Loader *ld, const config_setting_t *root, CNF_Wavemeter *wm)
{
  const config_setting_t *g, *s;
  char backend[32];

  if (get_group(ld, root, "wavemeter", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  backend[0] = '\0';
  if (check_keys(ld, g, wm_keys) < 0 ||
      str_key(ld, g, "backend", OPT, 1, backend, sizeof backend, &s) < 0)
    return -1;
  if (s) {
    if (strcasecmp(backend, "stream") == 0)
      wm->backend = CNF_WM_STREAM;
    else if (strcasecmp(backend, "wlmdata") == 0)
      wm->backend = CNF_WM_WLMDATA;
    else
      return fail(ld, s, NULL, "\"%s\": must be \"stream\" or \"wlmdata\"", backend);
  }
  if (str_key(ld, g, "library", OPT, 1, wm->library, sizeof wm->library, NULL) < 0 ||
      hostport_key(ld, g, "address", 1, wm->address, sizeof wm->address) < 0 ||
      int_key_i(ld, g, "stale_ms", OPT, 1, 3600000, &wm->stale_ms) < 0 ||
      int_key_i(ld, g, "poll_ms", OPT, 1, 60000, &wm->poll_ms) < 0 ||
      int_key_i(ld, g, "callback_silence_ms", OPT, 1, 3600000,
                &wm->callback_silence_ms) < 0)
    return -1;
  return 0;
}

static int
load_sim(Loader *ld, const config_setting_t *root, CNF_Sim *sim)
{
  const config_setting_t *g;
  long long seed = (long long)sim->seed;

  if (get_group(ld, root, "sim", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  if (check_keys(ld, g, sim_keys) < 0 ||
      int_key(ld, g, "seed", OPT, 0, LLONG_MAX, &seed) < 0 ||
      hostport_key(ld, g, "control", 0, sim->control, sizeof sim->control) < 0 ||
      num_key(ld, g, "switch_ms", 0, 0.0, 60000.0, &sim->switch_ms) < 0 ||
      num_key(ld, g, "speed", GT_LO, 0.0, 10000.0, &sim->speed) < 0 ||
      num_key(ld, g, "calibration_offset_ppb", 0, -1e5, 1e5, &sim->calib_offset_ppb) < 0 ||
      num_key(ld, g, "calibration_drift_ppb_per_min", 0, -1e5, 1e5,
              &sim->calib_drift_ppb_per_min) < 0 ||
      num_key(ld, g, "calibration_walk_ppb_rts", 0, 0.0, 1e4, &sim->calib_walk_ppb_rts) < 0)
    return -1;
  sim->seed = (unsigned long)seed;
  return 0;
}

/* probe = { register = N; function = "holding" | "input" | "none"; } */
static int
load_probe(Loader *ld, const config_setting_t *dg, CNF_Device *d)
{
  const config_setting_t *g, *s;
  char fn[16];

  if (get_group(ld, dg, "probe", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  fn[0] = '\0';
  if (check_keys(ld, g, probe_keys) < 0 ||
      str_key(ld, g, "function", OPT, 1, fn, sizeof fn, &s) < 0 ||
      int_key_i(ld, g, "register", OPT, 0, 65535, &d->probe_reg) < 0)
    return -1;
  if (s) {
    if (strcasecmp(fn, "holding") == 0)
      d->probe_fn = CNF_PROBE_HOLDING;
    else if (strcasecmp(fn, "input") == 0)
      d->probe_fn = CNF_PROBE_INPUT;
    else if (strcasecmp(fn, "none") == 0)
      d->probe_fn = CNF_PROBE_NONE;
    else
      return fail(ld, s, NULL, "\"%s\": must be \"holding\" (FC03), \"input\" (FC04) or "
                  "\"none\"", fn);
  }
  if (d->probe_fn == CNF_PROBE_NONE && d->probe_reg >= 0)
    return fail(ld, config_setting_get_member(g, "register"), NULL,
                "no register is read with function = \"none\"");
  return 0;
}

static int
load_devices(Loader *ld, const config_setting_t *root, CNF_Config *cfg)
{
  const config_setting_t *l = config_setting_get_member(root, "devices");
  int n;

  if (!l)
    return 0;
  if (config_setting_type(l) != CONFIG_TYPE_LIST)
    return fail(ld, l, NULL, "must be a list ( { name = ...; url = ...; }, ... ), not %s",
                type_name(l));
  n = config_setting_length(l);
  cfg->devices = calloc((size_t)(n > 0 ? n : 1), sizeof *cfg->devices);
  if (!cfg->devices)
    return fail(ld, l, NULL, "out of memory");
  for (int i = 0; i < n; i++) {
    const config_setting_t *g = config_setting_get_elem(l, (unsigned int)i), *ws, *wu;
    CNF_Device *d = &cfg->devices[i];
    char msg[256];

    d->unit = 1;
    d->timeout_ms = 200;
    d->probe_fn = CNF_PROBE_HOLDING;
    d->probe_reg = -1;
    d->line = (int)config_setting_source_line(g);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
      return fail(ld, g, NULL, "must be a group { name = ...; url = ...; }, not %s",
                  type_name(g));
    if (check_keys(ld, g, device_keys) < 0 ||
        str_key(ld, g, "name", REQ, 1, d->name, sizeof d->name, &ws) < 0 ||
        check_name(ld, ws, d->name) < 0 ||
        str_key(ld, g, "url", REQ, 1, d->url, sizeof d->url, &wu) < 0)
      return -1;
    if (CNF_ParseUrl(d->url, &d->parsed, msg, sizeof msg) < 0)
      return fail(ld, wu, NULL, "\"%s\": %s", d->url, msg);
    if (int_key_i(ld, g, "unit", OPT, 0, 247, &d->unit) < 0 ||
        int_key_i(ld, g, "timeout_ms", OPT, 1, 60000, &d->timeout_ms) < 0 ||
        bool_key(ld, g, "combine_writes", &d->combine_writes) < 0 ||
        load_probe(ld, g, d) < 0)
      return -1;
    for (int j = 0; j < i; j++) {
      if (strcasecmp(cfg->devices[j].name, d->name) == 0)
        return fail(ld, ws, NULL, "duplicate device name \"%s\" (also line %d)",
                    d->name, cfg->devices[j].line);
      /* Compared as parsed: "tcp://h" is "tcp://h:502".  Two names for one
         unit would let two lasers drive the same registers. */
      if (same_line(&cfg->devices[j].parsed, &d->parsed) && cfg->devices[j].unit == d->unit)
        return fail(ld, wu, NULL, "same url and unit as device \"%s\" (line %d)",
                    cfg->devices[j].name, cfg->devices[j].line);
      /* Devices on one serial port share its line (mbdev.h). */
      if (d->parsed.kind == CNF_URL_RTU && same_line(&cfg->devices[j].parsed, &d->parsed) &&
          (cfg->devices[j].parsed.baud != d->parsed.baud ||
           cfg->devices[j].parsed.parity != d->parsed.parity ||
           cfg->devices[j].parsed.data_bits != d->parsed.data_bits ||
           cfg->devices[j].parsed.stop_bits != d->parsed.stop_bits))
        return fail(ld, wu, NULL, "serial port %s is used by device \"%s\" (line %d) with "
                    "other line settings (baud, parity, data and stop bits must match)",
                    d->parsed.host, cfg->devices[j].name, cfg->devices[j].line);
    }
    cfg->n_devices = i + 1;
  }
  return 0;
}

static void
raw_limits(REG_Format f, double *lo, double *hi)
{
  switch (f) {
    case REG_U16: *lo = 0.0; *hi = U16_MAX_RAW; break;
    case REG_S16: *lo = S16_MIN_RAW; *hi = S16_MAX_RAW; break;
    default: *lo = -F32_MAX_RAW; *hi = F32_MAX_RAW; break;
  }
}

static int
load_actuator(Loader *ld, const CNF_Config *cfg, const config_setting_t *g,
              int is_current, CNF_Actuator *a)
{
  const config_setting_t *s, *wdev, *wmax;
  char fmt[16], order[16];
  double rlo, rhi, r1, r2;
  int have_scale, have_start;
  long long reg = 0;

  a->present = 1;
  a->enc.format = REG_U16;
  a->enc.order = REG_ABCD;
  a->enc.offset = 0.0;
  a->min_v = 0.0;
  a->max_v = 10.0;
  a->max_step_v = 0.0;
  a->feedforward = 0.0;
  if (check_keys(ld, g, is_current ? current_keys : piezo_keys) < 0 ||
      str_key(ld, g, "device", REQ, 1, a->device, sizeof a->device, &wdev) < 0)
    return -1;
  a->device_index = CNF_FindDevice(cfg, a->device);
  if (a->device_index < 0)
    return fail(ld, wdev, NULL, "unknown device \"%s\" (not in devices)", a->device);
  /* Names match without case; the rest of wavelock looks them up exactly. */
  UTL_Strlcpy(a->device, cfg->devices[a->device_index].name, sizeof a->device);

  fmt[0] = order[0] = '\0';
  if (str_key(ld, g, "format", OPT, 1, fmt, sizeof fmt, &s) < 0)
    return -1;
  if (s && REG_ParseFormat(fmt, &a->enc.format) < 0)
    return fail(ld, s, NULL, "\"%s\": must be \"u16\", \"s16\" or \"f32\"", fmt);
  if (str_key(ld, g, "word_order", OPT, 1, order, sizeof order, &s) < 0)
    return -1;
  if (s && REG_ParseWordOrder(order, &a->enc.order) < 0)
    return fail(ld, s, NULL, "\"%s\": must be \"abcd\", \"cdab\", \"badc\" or \"dcba\"",
                order);

  if (int_key(ld, g, "register", REQ, 0, a->enc.format == REG_F32 ? 65534 : 65535,
              &reg) < 0)
    return -1;
  a->reg = (int)reg;

  /* Default scale: the format's full range over 0..10 V (u16), -10..10 V
     (s16), or the volts themselves (f32). */
  a->enc.scale = a->enc.format == REG_U16 ? 6553.5 :
                 a->enc.format == REG_S16 ? 3276.7 : 1.0;
  have_scale = config_setting_get_member(g, "scale") != NULL;
  if (num_key(ld, g, "scale", 0, -HUGE_VAL, HUGE_VAL, &a->enc.scale) < 0 ||
      num_key(ld, g, "offset", 0, -HUGE_VAL, HUGE_VAL, &a->enc.offset) < 0)
    return -1;
  if (have_scale && a->enc.scale == 0.0)
    return fail(ld, config_setting_get_member(g, "scale"), NULL, "must not be 0");

  if (num_key(ld, g, "min_v", 0, -1000.0, 1000.0, &a->min_v) < 0 ||
      num_key(ld, g, "max_v", 0, -1000.0, 1000.0, &a->max_v) < 0)
    return -1;
  wmax = config_setting_get_member(g, "max_v");
  if (!(a->min_v < a->max_v))
    return fail(ld, wmax ? wmax : config_setting_get_member(g, "min_v"), NULL,
                "min_v (%g) must be below max_v (%g)", a->min_v, a->max_v);

  raw_limits(a->enc.format, &rlo, &rhi);
  r1 = a->enc.offset + a->enc.scale * a->min_v;
  r2 = a->enc.offset + a->enc.scale * a->max_v;
  if (r1 > r2) {
    double t = r1;
    r1 = r2;
    r2 = t;
  }
  if (r1 < rlo - 0.5 || r2 > rhi + 0.5) {
    s = config_setting_get_member(g, "scale");
    return fail(ld, s ? s : g, NULL,
                "min_v..max_v (%g..%g V) encodes to raw %.1f..%.1f, outside the %s "
                "range %.0f..%.0f (check scale, offset and the limits)",
                a->min_v, a->max_v, r1, r2, REG_FormatName(a->enc.format), rlo, rhi);
  }

  a->start_v = 0.5 * (a->min_v + a->max_v);
  have_start = config_setting_get_member(g, "start_v") != NULL;
  if (num_key(ld, g, "start_v", 0, -HUGE_VAL, HUGE_VAL, &a->start_v) < 0)
    return -1;
  if (have_start && (a->start_v < a->min_v || a->start_v > a->max_v))
    return fail(ld, config_setting_get_member(g, "start_v"), NULL,
                "%g V is outside min_v..max_v (%g..%g)", a->start_v, a->min_v, a->max_v);
  if (num_key(ld, g, "max_step_v", 0, 0.0, HUGE_VAL, &a->max_step_v) < 0)
    return -1;
  if (is_current &&
      num_key(ld, g, "feedforward", 0, -1000.0, 1000.0, &a->feedforward) < 0)
    return -1;
  return 0;
}

/* Parse a setpoint: a number in THz, or a string "<number> [unit]". */
static int
parse_setpoint(Loader *ld, const config_setting_t *s, double *thz)
{
  char buf[128], *words[3], *save = NULL, msg[160];
  const char *text;
  int n = 0;

  if (config_setting_type(s) != CONFIG_TYPE_STRING) {
    if (setting_number(ld, s, thz) < 0)
      return fail(ld, s, NULL, "must be a frequency such as \"384.2304844 THz\" or "
                  "\"780.24 nm\", or a number in THz");
    if (!(*thz > 0.0))
      return fail(ld, s, NULL, "must be > 0 THz");
    return 0;
  }
  text = config_setting_get_string(s);
  if (strlen(text) >= sizeof buf)
    return fail(ld, s, NULL, "too long");
  UTL_Strlcpy(buf, text, sizeof buf);
  for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
    if (n == 3)
      break;
    words[n++] = w;
  }
  if (n == 0 || n > 2)
    return fail(ld, s, NULL, "\"%s\": expected a number and an optional unit "
                "(THz, GHz, MHz, nm, cm-1)", text);
  if (UNI_ParseFrequency(words[0], n == 2 ? words[1] : NULL, thz, msg, sizeof msg) < 0)
    return fail(ld, s, NULL, "\"%s\": %s", text, msg);
  return 0;
}

/* One axis of the relock grid: a span needs a step, at most
   CNF_RELOCK_MAX_STEPS of them each way. */
static int
check_relock_axis(Loader *ld, const config_setting_t *g, const char *span_key,
                  const char *step_key, double span, double step)
{
  const config_setting_t *s = config_setting_get_member(g, step_key);
  char path[256], full[320];

  if (span <= 0.0)
    return 0;
  if (!(step > 0.0)) {
    setting_path(g, path, sizeof path);
    snprintf(full, sizeof full, "%s.%s", path, step_key);
    return fail(ld, s ? s : g, full, "must be > 0 when %s is (%g)", span_key, span);
  }
  if (step > span)
    return fail(ld, s, NULL, "must not be larger than %s (%g)", span_key, span);
  if (span / step > CNF_RELOCK_MAX_STEPS)
    return fail(ld, s, NULL, "%s / %s must be at most %d steps (is %.0f)", span_key,
                step_key, CNF_RELOCK_MAX_STEPS, span / step);
  return 0;
}

/* ---- the keys of a laser group ------------------------------------------ */

/* Checks after a key (or a sub-group) is read, on the group it is in: 0, or
   -1 with the error reported. */
typedef int (*LaserCheck)(Loader *ld, const CNF_Config *cfg, const config_setting_t *g,
                          CNF_Laser *l);

static int
check_laser_name(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  const config_setting_t *ws = config_setting_get_member(g, "name");

  if (check_name(ld, ws, l->name) < 0)
    return -1;
  if (strcasecmp(l->name, "all") == 0)
    return fail(ld, ws, NULL, "\"all\" is reserved (lock all, unlock all)");
  return 0;
}

/* A channel the backend never reads would leave the laser unread, silently. */
static int
check_laser_channel(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  if (cfg->wavemeter.backend == CNF_WM_WLMDATA && l->channel > CNF_WLMDATA_MAX_CHANNEL)
    return fail(ld, config_setting_get_member(g, "channel"), NULL,
                "the wlmdata backend reads channels 1 to %d only (is %d)",
                CNF_WLMDATA_MAX_CHANNEL, l->channel);
  return 0;
}

static int
check_laser_thz(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  if (!(l->min_thz < l->max_thz))
    return fail(ld, config_setting_get_member(g, "max_thz"), NULL, "must be above min_thz (%.9g)",
                l->min_thz);
  return 0;
}

static int
check_laser_setpoint(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  if (l->setpoint_thz < l->min_thz || l->setpoint_thz > l->max_thz)
    return fail(ld, config_setting_get_member(g, "setpoint"), NULL,
                "%.9f THz is outside min_thz..max_thz (%.9g..%.9g)",
                l->setpoint_thz, l->min_thz, l->max_thz);
  return 0;
}

static int
check_laser_capture(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  const config_setting_t *s;

  if (!(l->capture_mhz > l->window_mhz)) {
    s = config_setting_get_member(g, "capture_mhz");
    return fail(ld, s ? s : config_setting_get_member(g, "window_mhz"), NULL,
                "capture_mhz (%g) must be larger than window_mhz (%g)",
                l->capture_mhz, l->window_mhz);
  }
  return 0;
}

static int
check_laser_pid(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  if (l->polarity == 0)
    return fail(ld, config_setting_get_member(g, "polarity"), NULL, "must be 1 or -1");
  return 0;
}

static int
check_laser_relock(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  const CNF_Relock *r = &l->relock;

  if (check_relock_axis(ld, g, "piezo_span_v", "piezo_step_v", r->piezo_span_v,
                        r->piezo_step_v) < 0 ||
      check_relock_axis(ld, g, "current_span_v", "current_step_v", r->current_span_v,
                        r->current_step_v) < 0)
    return -1;
  if (r->current_span_v > 0.0 && !l->current.present)
    return fail(ld, config_setting_get_member(g, "current_span_v"), NULL,
                "needs a current actuator (the laser has no current group)");
  return 0;
}

static int
check_laser_sim(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  if (l->sim.piezo_mhz_per_v == 0.0)
    return fail(ld, config_setting_get_member(g, "piezo_mhz_per_v"), NULL, "must not be 0");
  return 0;
}

/* hold_input = { device = "..."; discrete_input = N; | coil = N;
   active = "high" | "low"; poll_s = 0.02; } */
static int
check_laser_hold_input(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  CNF_HoldInput *h = &l->hold_input;
  const config_setting_t *di = config_setting_get_member(g, "discrete_input");
  const config_setting_t *co = config_setting_get_member(g, "coil");

  h->present = 1;
  h->device_index = CNF_FindDevice(cfg, h->device);
  if (h->device_index < 0)
    return fail(ld, config_setting_get_member(g, "device"), NULL,
                "unknown device \"%s\" (not in devices)", h->device);
  UTL_Strlcpy(h->device, cfg->devices[h->device_index].name, sizeof h->device);
  if (h->poll_s < 0.001)
    return fail(ld, config_setting_get_member(g, "poll_s"), NULL,
                "must be at least 0.001 (is %g)", h->poll_s);
  if (di && co)
    return fail(ld, co, NULL, "give either discrete_input or coil, not both");
  if (!di && !co)
    return fail_missing(ld, g, "discrete_input");
  h->coil = co != NULL;
  h->addr = co ? h->coil_key : h->di_key;
  if (h->active[0] == '\0' || strcasecmp(h->active, "high") == 0)
    h->active_low = 0;
  else if (strcasecmp(h->active, "low") == 0)
    h->active_low = 1;
  else
    return fail(ld, config_setting_get_member(g, "active"), NULL,
                "must be \"high\" or \"low\" (is \"%s\")", h->active);
  return 0;
}

/* How a key is read. */
typedef enum {
  K_NUM,          /* a double in lo..hi (flags GT_LO, LT_HI: bounds exclusive) */
  K_INT,          /* an int in lo..hi */
  K_BOOL,         /* true/false (or 1/0) into an int */
  K_STR,          /* a non-empty string into a char[size] */
  K_PATH,         /* a file path (path_key) into a char[size] */
  K_SETPOINT,     /* a frequency (parse_setpoint) into a double, THz */
  K_ACTUATOR,     /* an actuator group (load_actuator); lo = 1: the current one */
  K_GROUP         /* a sub-group whose keys are the entries naming it as their group */
} KeyType;

/* One key of a laser group.  Keys are read, and their checks run, in table
   order; a group's keys are those that name it.  A check runs after its key
   whether or not the key is there (a K_GROUP's check only if the group is). */
typedef struct {
  const char *group;    /* NULL: a key of the laser group itself */
  const char *key;
  KeyType type;
  size_t off;           /* where the value goes in CNF_Laser */
  int flags;            /* REQ (else optional), GT_LO, LT_HI */
  double lo, hi;        /* K_NUM, K_INT: the allowed range */
  double def;           /* K_NUM, K_INT, K_BOOL: the value when absent */
  size_t size;          /* K_STR, K_PATH: the size of the buffer */
  LaserCheck check;     /* NULL, or checks after the key */
} LaserKey;

#define LK_OFF(f) offsetof(CNF_Laser, f)
#define LK_SIZE(f) sizeof(((CNF_Laser *)0)->f)
#define LK_NUM(grp, key, f, flags, lo, hi, def, check) \
  { grp, key, K_NUM, LK_OFF(f), flags, lo, hi, def, 0, check }
#define LK_INT(grp, key, f, flags, lo, hi, def, check) \
  { grp, key, K_INT, LK_OFF(f), flags, lo, hi, def, 0, check }
#define LK_BOOL(grp, key, f, def) { grp, key, K_BOOL, LK_OFF(f), OPT, 0, 1, def, 0, NULL }
#define LK_STR(grp, key, f, flags, check) \
  { grp, key, K_STR, LK_OFF(f), flags, 0, 0, 0, LK_SIZE(f), check }
#define LK_PATH(grp, key, f) { grp, key, K_PATH, LK_OFF(f), OPT, 0, 0, 0, LK_SIZE(f), NULL }
#define LK_SETPOINT(key, f, check) { NULL, key, K_SETPOINT, LK_OFF(f), REQ, 0, 0, 0, 0, check }
#define LK_ACTUATOR(key, f, flags, is_current) \
  { NULL, key, K_ACTUATOR, LK_OFF(f), flags, is_current, 0, 0, 0, NULL }
#define LK_GROUP(key, check) { NULL, key, K_GROUP, 0, OPT, 0, 0, 0, 0, check }
#define INF HUGE_VAL

static const LaserKey laser_table[] = {
  LK_STR(NULL, "name", name, REQ, check_laser_name),
  LK_INT(NULL, "channel", channel, REQ, 1, CNF_MAX_CHANNEL, 0, check_laser_channel),
  LK_BOOL(NULL, "autolock", autolock, 0),
  LK_NUM(NULL, "min_thz", min_thz, REQ | GT_LO, 0.0, INF, 0, NULL),
  LK_NUM(NULL, "max_thz", max_thz, REQ | GT_LO, 0.0, INF, 0, check_laser_thz),
  LK_SETPOINT("setpoint", setpoint_thz, check_laser_setpoint),
  LK_NUM(NULL, "window_mhz", window_mhz, GT_LO, 0.0, 1e7, 5.0, NULL),
  LK_NUM(NULL, "capture_mhz", capture_mhz, GT_LO, 0.0, 1e8, 2000.0, NULL),
  LK_NUM(NULL, "modehop_mhz", modehop_mhz, OPT, 0.0, 1e8, 1000.0, NULL),
  LK_NUM(NULL, "glitch_mhz", glitch_mhz, OPT, 0.0, 1e8, 500.0, NULL),
  LK_INT(NULL, "lock_n", lock_n, OPT, 1, 100000, 5, NULL),
  LK_INT(NULL, "unlock_m", unlock_m, OPT, 1, 100000, 3, check_laser_capture),

  LK_GROUP("pid", check_laser_pid),
  LK_NUM("pid", "kp", kp, OPT, 0.0, INF, 0.0, NULL),
  LK_NUM("pid", "ki", ki, OPT, 0.0, INF, 0.002, NULL),
  LK_NUM("pid", "kd", kd, OPT, 0.0, INF, 0.0, NULL),
  LK_NUM("pid", "d_filter_s", d_tau_s, OPT, 0.0, 3600.0, 0.05, NULL),
  LK_NUM("pid", "max_dt_s", max_dt_s, GT_LO, 0.0, 3600.0, 1.0, NULL),
  LK_INT("pid", "polarity", polarity, OPT, -1, 1, 1, NULL),
  LK_NUM("pid", "sensitivity_mhz_per_v", sensitivity_mhz_per_v, OPT, -CNF_MAX_SENSITIVITY,
         CNF_MAX_SENSITIVITY, 0.0, NULL),

  LK_ACTUATOR("piezo", piezo, REQ, 0),
  LK_ACTUATOR("current", current, OPT, 1),
  LK_PATH(NULL, "datalog", datalog),

  LK_GROUP("relock", check_laser_relock),
  LK_NUM("relock", "after_s", relock.after_s, OPT, 0.0, 86400.0, 2.0, NULL),
  LK_NUM("relock", "piezo_span_v", relock.piezo_span_v, OPT, 0.0, 1e4, 1.0, NULL),
  LK_NUM("relock", "piezo_step_v", relock.piezo_step_v, OPT, 0.0, 1e4, 0.1, NULL),
  LK_NUM("relock", "current_span_v", relock.current_span_v, OPT, 0.0, 1e4, 0.0, NULL),
  LK_NUM("relock", "current_step_v", relock.current_step_v, OPT, 0.0, 1e4, 0.0, NULL),
  LK_INT("relock", "settle_readings", relock.settle_readings, OPT, 0, 1000, 1, NULL),
  LK_INT("relock", "tries", relock.tries, OPT, 1, 1000, 3, NULL),

  LK_GROUP("hold_input", check_laser_hold_input),   /* DESIGN.md section 8 */
  LK_STR("hold_input", "device", hold_input.device, REQ, NULL),
  LK_INT("hold_input", "discrete_input", hold_input.di_key, OPT, 0, 65535, -1, NULL),
  LK_INT("hold_input", "coil", hold_input.coil_key, OPT, 0, 65535, -1, NULL),
  LK_STR("hold_input", "active", hold_input.active, OPT, NULL),
  LK_NUM("hold_input", "poll_s", hold_input.poll_s, GT_LO, 0.0, 10.0, 0.02, NULL),

  LK_GROUP("sim", check_laser_sim),        /* the simulated laser (wavelock-sim) */
  LK_NUM("sim", "offset_mhz", sim.offset_mhz, OPT, -1e7, 1e7, 0.0, NULL),
  LK_NUM("sim", "piezo_mhz_per_v", sim.piezo_mhz_per_v, OPT, -1e6, 1e6, 300.0, NULL),
  LK_NUM("sim", "current_mhz_per_v", sim.current_mhz_per_v, OPT, -1e6, 1e6, 50.0, NULL),
  LK_NUM("sim", "piezo_lag_ms", sim.piezo_lag_ms, OPT, 0.0, 1e6, 1.0, NULL),
  LK_NUM("sim", "current_lag_ms", sim.current_lag_ms, OPT, 0.0, 1e6, 100.0, NULL),
  LK_NUM("sim", "walk_mhz_rts", sim.walk_mhz_rts, OPT, 0.0, 1e6, 2.0, NULL),
  LK_NUM("sim", "sine_mhz", sim.sine_mhz, OPT, 0.0, 1e7, 5.0, NULL),
  LK_NUM("sim", "sine_period_s", sim.sine_period_s, GT_LO, 0.0, 1e9, 600.0, NULL),
  LK_NUM("sim", "linear_mhz_per_h", sim.linear_mhz_per_h, OPT, -1e7, 1e7, 20.0, NULL),
  LK_NUM("sim", "modehop_per_h", sim.modehop_per_h, OPT, 0.0, 1e6, 0.0, NULL),
  LK_NUM("sim", "modehop_mhz", sim.modehop_mhz, OPT, -1e7, 1e7, 8000.0, NULL),
  LK_NUM("sim", "modehop_s", sim.modehop_s, GT_LO, 0.0, 1e6, 3.0, NULL),
  LK_NUM("sim", "modehop_free_v", sim.modehop_free_v, OPT, 0.0, 1e6, 0.0, NULL),
  LK_NUM("sim", "hysteresis_v", sim.hysteresis_v, OPT, 0.0, 1e6, 0.3, NULL),
  LK_NUM("sim", "noise_mhz", sim.noise_mhz, OPT, 0.0, 1e6, 1.0, NULL),
  LK_NUM("sim", "exposure_ms", sim.exposure_ms, GT_LO, 0.0, 1e6, 10.0, NULL),
  LK_NUM("sim", "error_rate", sim.error_rate, OPT, 0.0, 1.0, 0.0, NULL),
};
#define N_LASER_KEYS ((int)(sizeof laser_table / sizeof laser_table[0]))
#undef INF

static int
same_group(const char *a, const char *b)
{
  return a == b || (a && b && strcmp(a, b) == 0);
}

/* The defaults of every key that has one. */
static void
laser_defaults(CNF_Laser *l)
{
  for (int i = 0; i < N_LASER_KEYS; i++) {
    const LaserKey *k = &laser_table[i];
    void *dst = (char *)l + k->off;

    if (k->type == K_NUM)
      *(double *)dst = k->def;
    else if (k->type == K_INT || k->type == K_BOOL)
      *(int *)dst = (int)k->def;
  }
}

/* Read the keys of group (NULL: the laser's own) from g into l, in table
   order, after refusing keys the table does not have. */
static int
load_laser_keys(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, const char *group,
                CNF_Laser *l)
{
  const char *allowed[N_LASER_KEYS + 1];
  int n = 0;

  for (int i = 0; i < N_LASER_KEYS; i++)
    if (same_group(laser_table[i].group, group))
      allowed[n++] = laser_table[i].key;
  allowed[n] = NULL;
  if (check_keys(ld, g, allowed) < 0)
    return -1;
  for (int i = 0; i < N_LASER_KEYS; i++) {
    const LaserKey *k = &laser_table[i];
    char *dst = (char *)l + k->off;
    const config_setting_t *s, *sub;
    int rc = 0, req = (k->flags & REQ) ? REQ : OPT;

    if (!same_group(k->group, group))
      continue;
    switch (k->type) {
      case K_NUM:
        rc = num_key(ld, g, k->key, k->flags, k->lo, k->hi, (double *)(void *)dst);
        break;
      case K_INT:
        rc = int_key_i(ld, g, k->key, req, (int)k->lo, (int)k->hi, (int *)(void *)dst);
        break;
      case K_BOOL:
        rc = bool_key(ld, g, k->key, (int *)(void *)dst);
        break;
      case K_STR:
        rc = str_key(ld, g, k->key, req, 1, dst, k->size, NULL);
        break;
      case K_PATH:
        rc = path_key(ld, g, k->key, dst, k->size);
        break;
      case K_SETPOINT:
        s = config_setting_get_member(g, k->key);
        if (!s)
          rc = req ? fail_missing(ld, g, k->key) : 0;
        else
          rc = parse_setpoint(ld, s, (double *)(void *)dst);
        break;
      case K_ACTUATOR:
        rc = get_group(ld, g, k->key, req, &sub);
        if (rc == 0 && sub)
          rc = load_actuator(ld, cfg, sub, k->lo != 0.0, (CNF_Actuator *)(void *)dst);
        break;
      case K_GROUP:
        rc = get_group(ld, g, k->key, req, &sub);
        if (rc == 0 && sub)
          rc = load_laser_keys(ld, cfg, sub, k->key, l);
        if (rc == 0 && sub && k->check)
          rc = k->check(ld, cfg, sub, l);
        if (rc < 0)
          return -1;
        continue;
    }
    if (rc < 0 || (k->check && k->check(ld, cfg, g, l) < 0))
      return -1;
  }
  return 0;
}

static int
load_laser(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, CNF_Laser *l)
{
  laser_defaults(l);
  l->line = (int)config_setting_source_line(g);
  if (config_setting_type(g) != CONFIG_TYPE_GROUP)
    return fail(ld, g, NULL, "must be a group { name = ...; channel = ...; }, not %s",
                type_name(g));
  return load_laser_keys(ld, cfg, g, NULL, l);
}

/* Registers used by an actuator: [reg, reg + count). */
static int
overlaps(const CNF_Actuator *a, const CNF_Actuator *b)
{
  int na = REG_Count(&a->enc), nb = REG_Count(&b->enc);

  return a->device_index == b->device_index &&
         a->reg < b->reg + nb && b->reg < a->reg + na;
}

/* Checks between lasers: names, channels, registers, data logs. */
static int
check_laser_against(Loader *ld, const CNF_Config *cfg, const config_setting_t *g, int i)
{
  const CNF_Laser *l = &cfg->lasers[i];

  for (int j = 0; j < i; j++) {
    const CNF_Laser *o = &cfg->lasers[j];
    const CNF_Actuator *mine[2] = { &l->piezo, &l->current };
    const CNF_Actuator *theirs[2] = { &o->piezo, &o->current };
    static const char *const which[2] = { "piezo", "current" };

    if (strcasecmp(o->name, l->name) == 0)
      return fail(ld, config_setting_get_member(g, "name"), NULL,
                  "duplicate laser name \"%s\" (also line %d)", l->name, o->line);
    if (o->channel == l->channel)
      return fail(ld, config_setting_get_member(g, "channel"), NULL,
                  "channel %d is already used by laser \"%s\" (line %d)",
                  l->channel, o->name, o->line);
    if (l->datalog[0] && strcmp(l->datalog, o->datalog) == 0)
      return fail(ld, config_setting_get_member(g, "datalog"), NULL,
                  "the same file as laser \"%s\"", o->name);
    for (int a = 0; a < 2; a++) {
      if (!mine[a]->present)
        continue;
      for (int b = 0; b < 2; b++) {
        if (theirs[b]->present && overlaps(mine[a], theirs[b]))
          return fail(ld, config_setting_get_member(
                        config_setting_get_member(g, which[a]), "register"), NULL,
                      "register %d of device \"%s\" is already driven by %s.%s",
                      mine[a]->reg, mine[a]->device, o->name, which[b]);
      }
    }
  }
  if (l->current.present && overlaps(&l->piezo, &l->current))
    return fail(ld, config_setting_get_member(config_setting_get_member(g, "current"),
                                              "register"), NULL,
                "overlaps the registers of this laser's piezo");
  return 0;
}

static int
load_lasers(Loader *ld, const config_setting_t *root, CNF_Config *cfg)
{
  const config_setting_t *l = config_setting_get_member(root, "lasers");
  int n;

  if (!l)
    return 0;
  if (config_setting_type(l) != CONFIG_TYPE_LIST)
    return fail(ld, l, NULL, "must be a list ( { name = ...; }, ... ), not %s",
                type_name(l));
  n = config_setting_length(l);
  if (n > CNF_MAX_CHANNEL)
    return fail(ld, l, NULL, "at most %d lasers", CNF_MAX_CHANNEL);
  cfg->lasers = calloc((size_t)(n > 0 ? n : 1), sizeof *cfg->lasers);
  if (!cfg->lasers)
    return fail(ld, l, NULL, "out of memory");
  for (int i = 0; i < n; i++) {
    const config_setting_t *g = config_setting_get_elem(l, (unsigned int)i);

    if (load_laser(ld, cfg, g, &cfg->lasers[i]) < 0 ||
        check_laser_against(ld, cfg, g, i) < 0)
      return -1;
    cfg->n_lasers = i + 1;
  }
  return 0;
}

/* sim.references: reference lasers of wavelock-sim, checked against the
   lasers (names and channels) and each other. */
static int
load_sim_references(Loader *ld, const config_setting_t *root, CNF_Config *cfg)
{
  const config_setting_t *g = config_setting_get_member(root, "sim"), *l;
  CNF_Sim *sim = &cfg->sim;
  int n;

  if (!g || config_setting_type(g) != CONFIG_TYPE_GROUP)
    return 0;
  l = config_setting_get_member(g, "references");
  if (!l)
    return 0;
  if (config_setting_type(l) != CONFIG_TYPE_LIST)
    return fail(ld, l, NULL, "must be a list ( { name = ...; channel = ...; frequency = ...; }, "
                "... ), not %s", type_name(l));
  n = config_setting_length(l);
  if (n > CNF_MAX_SIM_REFERENCES)
    return fail(ld, l, NULL, "at most %d reference lasers", CNF_MAX_SIM_REFERENCES);
  for (int i = 0; i < n; i++) {
    const config_setting_t *e = config_setting_get_elem(l, (unsigned int)i), *ws, *fs;
    CNF_SimReference *r = &sim->references[i];

    memset(r, 0, sizeof *r);
    r->noise_mhz = 1.0;
    r->exposure_ms = 10.0;
    r->line = (int)config_setting_source_line(e);
    if (config_setting_type(e) != CONFIG_TYPE_GROUP)
      return fail(ld, e, NULL, "must be a group { name = ...; channel = ...; frequency = ...; }, "
                  "not %s", type_name(e));
    if (check_keys(ld, e, simref_keys) < 0 ||
        str_key(ld, e, "name", REQ, 1, r->name, sizeof r->name, &ws) < 0 ||
        check_name(ld, ws, r->name) < 0)
      return -1;
    if (strcasecmp(r->name, "all") == 0)
      return fail(ld, ws, NULL, "\"all\" is reserved");
    if (int_key_i(ld, e, "channel", REQ, 1, CNF_MAX_CHANNEL, &r->channel) < 0)
      return -1;
    fs = config_setting_get_member(e, "frequency");
    if (!fs)
      return fail_missing(ld, e, "frequency");
    if (parse_setpoint(ld, fs, &r->thz) < 0 ||
        num_key(ld, e, "noise_mhz", 0, 0.0, 1e6, &r->noise_mhz) < 0 ||
        num_key(ld, e, "exposure_ms", GT_LO, 0.0, 1e6, &r->exposure_ms) < 0)
      return -1;
    for (int j = 0; j < cfg->n_lasers; j++) {
      const CNF_Laser *o = &cfg->lasers[j];

      if (strcasecmp(o->name, r->name) == 0)
        return fail(ld, ws, NULL, "the name of laser \"%s\" (line %d)", o->name, o->line);
      if (o->channel == r->channel)
        return fail(ld, config_setting_get_member(e, "channel"), NULL,
                    "channel %d is already used by laser \"%s\" (line %d)", r->channel,
                    o->name, o->line);
    }
    for (int j = 0; j < i; j++) {
      const CNF_SimReference *o = &sim->references[j];

      if (strcasecmp(o->name, r->name) == 0)
        return fail(ld, ws, NULL, "duplicate reference name \"%s\" (also line %d)", r->name,
                    o->line);
      if (o->channel == r->channel)
        return fail(ld, config_setting_get_member(e, "channel"), NULL,
                    "channel %d is already used by reference \"%s\" (line %d)", r->channel,
                    o->name, o->line);
    }
    sim->n_references = i + 1;
  }
  return 0;
}

/* calibration = { channel; frequency; mode; tau_s; max_rate_mhz_per_min;
   tolerance_mhz; period_s; } (after the wavemeter: its channel range). */
static int
load_calibration(Loader *ld, const config_setting_t *root, CNF_Config *cfg)
{
  const config_setting_t *g, *s;
  CNF_Calibration *c = &cfg->calibration;
  char mode[32];

  if (get_group(ld, root, "calibration", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  c->present = 1;
  c->line = (int)config_setting_source_line(g);
  if (check_keys(ld, g, cal_keys) < 0 ||
      int_key_i(ld, g, "channel", REQ, 1, CNF_MAX_CHANNEL, &c->channel) < 0)
    return -1;
  if (cfg->wavemeter.backend == CNF_WM_WLMDATA && c->channel > CNF_WLMDATA_MAX_CHANNEL)
    return fail(ld, config_setting_get_member(g, "channel"), NULL,
                "the wlmdata backend reads channels 1 to %d only (is %d)",
                CNF_WLMDATA_MAX_CHANNEL, c->channel);
  s = config_setting_get_member(g, "frequency");
  if (!s)
    return fail_missing(ld, g, "frequency");
  if (parse_setpoint(ld, s, &c->thz) < 0)
    return -1;
  mode[0] = '\0';
  if (str_key(ld, g, "mode", OPT, 1, mode, sizeof mode, &s) < 0)
    return -1;
  if (s) {
    if (strcasecmp(mode, "correct") == 0)
      c->mode = CNF_CAL_CORRECT;
    else if (strcasecmp(mode, "wlmdata") == 0)
      c->mode = CNF_CAL_WLMDATA;
    else
      return fail(ld, s, NULL, "\"%s\": must be \"correct\" or \"wlmdata\"", mode);
    if (c->mode == CNF_CAL_WLMDATA && cfg->wavemeter.backend != CNF_WM_WLMDATA)
      return fail(ld, s, NULL, "mode \"wlmdata\" needs wavemeter.backend = \"wlmdata\"");
    cfg->wavemeter.need_calibration = c->mode == CNF_CAL_WLMDATA;
  }
  if (num_key(ld, g, "tau_s", GT_LO, 0.0, 86400.0, &c->tau_s) < 0 ||
      num_key(ld, g, "max_rate_mhz_per_min", GT_LO, 0.0, 1e6, &c->max_rate_mhz_per_min) < 0 ||
      num_key(ld, g, "tolerance_mhz", GT_LO, 0.0, 1e6, &c->tolerance_mhz) < 0 ||
      num_key(ld, g, "period_s", 0, 10.0, 30.0 * 86400.0, &c->period_s) < 0)
    return -1;
  return 0;
}

/* mqtt = { url; instance; username; password_file; cafile; commands;
   keepalive_s; reading_interval_ms; queue; protocol; } */
static int
load_mqtt(Loader *ld, const config_setting_t *root, CNF_Mqtt *m)
{
  const config_setting_t *g, *s;
  char proto[16], msg[128];
  const char *rest;

  if (get_group(ld, root, "mqtt", OPT, &g) < 0)
    return -1;
  if (!g)
    return 0;
  m->present = 1;
  m->line = (int)config_setting_source_line(g);
  if (check_keys(ld, g, mqtt_keys) < 0 ||
      str_key(ld, g, "url", REQ, 1, m->url, sizeof m->url, &s) < 0)
    return -1;
  if (strncasecmp(m->url, "mqtt://", 7) == 0) {
    rest = m->url + 7;
    m->tls = 0;
  } else if (strncasecmp(m->url, "mqtts://", 8) == 0) {
    rest = m->url + 8;
    m->tls = 1;
  } else {
    return fail(ld, s, NULL, "\"%s\": must be mqtt://host[:port] or mqtts://host[:port]",
                m->url);
  }
  m->port = m->tls ? 8883 : 1883;
  {
    char hp[256];
    size_t n = strcspn(rest, "/");

    if (rest[n] == '/' && rest[n + 1] != '\0')
      return fail(ld, s, NULL, "\"%s\": no path allowed after host:port", m->url);
    if (n >= sizeof hp)
      return fail(ld, s, NULL, "\"%s\": host too long", m->url);
    memcpy(hp, rest, n);
    hp[n] = '\0';
    if (split_host_port(hp, m->host, sizeof m->host, &m->port, 1, 1, msg, sizeof msg) < 0)
      return fail(ld, s, NULL, "\"%s\": %s", m->url, msg);
  }
  if (str_key(ld, g, "instance", REQ, 1, m->instance, sizeof m->instance, &s) < 0 ||
      check_name(ld, s, m->instance) < 0 ||
      str_key(ld, g, "username", OPT, 0, m->username, sizeof m->username, NULL) < 0 ||
      path_key(ld, g, "password_file", m->password_file, sizeof m->password_file) < 0 ||
      path_key(ld, g, "cafile", m->cafile, sizeof m->cafile) < 0 ||
      bool_key(ld, g, "commands", &m->commands) < 0 ||
      bool_key(ld, g, "remote", &m->remote) < 0 ||
      int_key_i(ld, g, "keepalive_s", OPT, 5, 3600, &m->keepalive_s) < 0 ||
      int_key_i(ld, g, "reading_interval_ms", OPT, 0, 3600000, &m->reading_interval_ms) < 0 ||
      int_key_i(ld, g, "queue", OPT, 16, 1000000, &m->queue) < 0)
    return -1;
  proto[0] = '\0';
  if (str_key(ld, g, "protocol", OPT, 1, proto, sizeof proto, &s) < 0)
    return -1;
  if (s) {
    if (strcasecmp(proto, "auto") == 0)
      m->protocol = CNF_MQTT_AUTO;
    else if (strcmp(proto, "5") == 0 || strcmp(proto, "5.0") == 0)
      m->protocol = CNF_MQTT_V5;
    else if (strcmp(proto, "3.1.1") == 0)
      m->protocol = CNF_MQTT_V311;
    else
      return fail(ld, s, NULL, "\"%s\": must be \"auto\", \"5\" or \"3.1.1\"", proto);
  }
  if (m->cafile[0] && !m->tls)
    return fail(ld, config_setting_get_member(g, "cafile"), NULL,
                "needs an mqtts:// url (TLS)");
  if (m->cafile[0] && access(m->cafile, R_OK) != 0)
    return fail(ld, config_setting_get_member(g, "cafile"), NULL, "%s: cannot read: %s",
                m->cafile, strerror(errno));
  if (m->password_file[0]) {
    FILE *f;
    size_t n;

    s = config_setting_get_member(g, "password_file");
    if (!m->username[0])
      return fail(ld, s, NULL, "needs a username");
    f = fopen(m->password_file, "r");
    if (!f)
      return fail(ld, s, NULL, "%s: cannot read: %s", m->password_file, strerror(errno));
    if (!fgets(m->password, sizeof m->password, f))
      m->password[0] = '\0';
    fclose(f);
    n = strcspn(m->password, "\r\n");
    m->password[n] = '\0';
    if (!m->password[0])
      return fail(ld, s, NULL, "%s: empty (the password is its first line)", m->password_file);
  }
  return 0;
}

static int
load_top(Loader *ld, const config_setting_t *root, CNF_Config *cfg)
{
  const config_setting_t *s;
  LOG_Level level;

  if (check_keys(ld, root, top_keys) < 0 ||
      path_key(ld, root, "state_file", cfg->state_file, sizeof cfg->state_file) < 0 ||
      path_key(ld, root, "pid_file", cfg->pid_file, sizeof cfg->pid_file) < 0 ||
      str_key(ld, root, "user", OPT, 0, cfg->user, sizeof cfg->user, NULL) < 0 ||
      str_key(ld, root, "log", OPT, 1, cfg->log_target, sizeof cfg->log_target, &s) < 0)
    return -1;
  if (s && strcmp(cfg->log_target, "stderr") != 0 && strcmp(cfg->log_target, "syslog") != 0)
    return fail(ld, s, NULL, "\"%s\": must be \"stderr\" or \"syslog\"", cfg->log_target);
  if (str_key(ld, root, "log_level", OPT, 1, cfg->log_level, sizeof cfg->log_level, &s) < 0)
    return -1;
  if (s && LOG_ParseLevel(cfg->log_level, &level) < 0)
    return fail(ld, s, NULL, "\"%s\": must be \"error\", \"warn\", \"info\" or \"debug\"",
                cfg->log_level);
  return 0;
}

static void
config_defaults(CNF_Config *cfg)
{
  CNF_Server *srv = &cfg->server;
  CNF_Wavemeter *wm = &cfg->wavemeter;

  UTL_Strlcpy(srv->listen[0], DEF_LISTEN, sizeof srv->listen[0]);
  srv->n_listen = 1;
  srv->max_clients = 64;
  srv->idle_timeout_s = 0;
  srv->line_timeout_s = 30;
  srv->auth_timeout_s = 60;
  srv->n_tokens = 0;
  cfg->http.max_event_readers = 256;
  cfg->http.session_s = 43200;
  UTL_Strlcpy(cfg->log_target, "stderr", sizeof cfg->log_target);
  UTL_Strlcpy(cfg->log_level, "info", sizeof cfg->log_level);
  wm->backend = CNF_WM_STREAM;
  UTL_Strlcpy(wm->library, DEF_WM_LIBRARY, sizeof wm->library);
  UTL_Strlcpy(wm->address, DEF_WM_ADDRESS, sizeof wm->address);
  wm->stale_ms = 1000;
  wm->poll_ms = 100;
  wm->callback_silence_ms = 2000;
  cfg->sim.seed = 1;
  UTL_Strlcpy(cfg->sim.control, DEF_SIM_CONTROL, sizeof cfg->sim.control);
  cfg->sim.switch_ms = 1.0;
  cfg->sim.speed = 1.0;
  cfg->calibration.mode = CNF_CAL_CORRECT;
  cfg->calibration.tau_s = 30.0;
  cfg->calibration.max_rate_mhz_per_min = 10.0;
  cfg->calibration.tolerance_mhz = 50.0;
  cfg->calibration.period_s = 600.0;
  cfg->mqtt.keepalive_s = 30;
  cfg->mqtt.queue = 8192;
  cfg->mqtt.remote = -1;       /* default: on when http is */
}

/* ------------------------------------------------------------------ */

CNF_Config *
CNF_Load(const char *path, char *err, size_t errlen)
{
  Loader ld;
  config_t lc;
  CNF_Config *cfg;
  struct stat st;
  FILE *f;
  int ok;

  if (!err || errlen == 0) {
    static char dummy[8];
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = '\0';
  if (!path || !path[0]) {
    snprintf(err, errlen, "no config file given");
    return NULL;
  }
  memset(&ld, 0, sizeof ld);
  ld.path = path;
  ld.err = err;
  ld.errlen = errlen;

  /* Check readability ourselves: libconfig says only "file I/O error". */
  f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return NULL;
  }
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(EISDIR));
    return NULL;
  }
  fclose(f);
  if (strlen(path) >= CNF_PATH_MAX) {
    snprintf(err, errlen, "%s: path too long", path);
    return NULL;
  }
  set_dir(&ld, path);

  config_init(&lc);
  config_set_options(&lc, CONFIG_OPTION_AUTOCONVERT);
  config_set_include_dir(&lc, ld.dir[0] ? ld.dir : "/");
  if (!config_read_file(&lc, path)) {
    if (config_error_type(&lc) == CONFIG_ERR_PARSE)
      snprintf(err, errlen, "%s:%d: %s", source_file(&ld, config_error_file(&lc)),
               config_error_line(&lc), config_error_text(&lc));
    else
      snprintf(err, errlen, "%s: cannot read: %s", path,
               config_error_text(&lc) ? config_error_text(&lc) : "I/O error");
    config_destroy(&lc);
    return NULL;
  }

  cfg = calloc(1, sizeof *cfg);
  if (!cfg) {
    snprintf(err, errlen, "%s: out of memory", path);
    config_destroy(&lc);
    return NULL;
  }
  UTL_Strlcpy(cfg->path, path, sizeof cfg->path);
  config_defaults(cfg);

  {
    const config_setting_t *root = config_root_setting(&lc);

    ok = load_top(&ld, root, cfg) == 0 &&
         load_server(&ld, root, &cfg->server) == 0 &&
         load_http(&ld, root, &cfg->server, &cfg->http) == 0 &&
         load_wavemeter(&ld, root, &cfg->wavemeter) == 0 &&
         load_sim(&ld, root, &cfg->sim) == 0 &&
         load_devices(&ld, root, cfg) == 0 &&
         load_lasers(&ld, root, cfg) == 0 &&
         load_calibration(&ld, root, cfg) == 0 &&
         load_sim_references(&ld, root, cfg) == 0 &&
         load_mqtt(&ld, root, &cfg->mqtt) == 0;
    if (cfg->mqtt.remote < 0)
      cfg->mqtt.remote = cfg->http.n_listen > 0;
  }
  config_destroy(&lc);
  if (!ok) {
    CNF_Free(cfg);
    return NULL;
  }
  return cfg;
}

void
CNF_Free(CNF_Config *cfg)
{
  if (!cfg)
    return;
  free(cfg->devices);
  free(cfg->lasers);
  free(cfg);
}

int
CNF_FindLaser(const CNF_Config *cfg, const char *name)
{
  if (!cfg || !name)
    return -1;
  for (int i = 0; i < cfg->n_lasers; i++) {
    if (strcasecmp(cfg->lasers[i].name, name) == 0)
      return i;
  }
  return -1;
}

int
CNF_FindDevice(const CNF_Config *cfg, const char *name)
{
  if (!cfg || !name)
    return -1;
  for (int i = 0; i < cfg->n_devices; i++) {
    if (strcasecmp(cfg->devices[i].name, name) == 0)
      return i;
  }
  return -1;
}
