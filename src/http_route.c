/* http_route.c - HTTP request routing and request bodies (pure: no I/O,
 * fuzzed by fuzz/fuzz_http.c). */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "http.h"
#include "util.h"

/* A laser name in a path: what the config allows (letters, digits, _ . -). */
static int
name_ok(const char *s, size_t n)
{
  if (n == 0 || n >= CNF_NAME_MAX || s[0] == '.')
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if (!isalnum(c) && c != '_' && c != '-' && c != '.')
      return 0;
  }
  return 1;
}

int
HTP_Match(int method, const char *path, HTP_Route *r)
{
  const char *p, *slash;
  size_t n;
  int want;

  memset(r, 0, sizeof *r);
  if (!path || path[0] != '/')
    return 400;
  /* Nothing is served from the file system, and names are plain: any
     encoded byte, backslash or dot segment is no path of ours. */
  for (p = path; *p; p++)
    if (*p == '%' || *p == '\\' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
      return 404;
  if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
    r->id = HTP_R_PAGE;
    want = HTP_GET | HTP_HEAD;
  } else if (strcmp(path, "/api/status") == 0) {
    r->id = HTP_R_STATUS;
    want = HTP_GET | HTP_HEAD;
  } else if (strcmp(path, "/api/events") == 0) {
    r->id = HTP_R_EVENTS;
    want = HTP_GET;
  } else if (strcmp(path, "/metrics") == 0) {
    r->id = HTP_R_METRICS;
    want = HTP_GET | HTP_HEAD;
  } else if (strcmp(path, "/api/session") == 0) {
    r->id = HTP_R_SESSION;
    want = HTP_POST | HTP_DELETE;
  } else if (strncmp(path, "/api/lasers/", 12) == 0) {
    p = path + 12;
    slash = strchr(p, '/');
    if (!slash)
      return 404;
    n = (size_t)(slash - p);
    if (!name_ok(p, n))
      return 404;
    memcpy(r->laser, p, n);
    r->laser[n] = '\0';
    p = slash + 1;
    if (strcmp(p, "setpoint") == 0) {
      r->id = HTP_R_SETPOINT;
      want = HTP_PUT;
    } else if (strcmp(p, "lock") == 0 || strcmp(p, "unlock") == 0 || strcmp(p, "hold") == 0 ||
               strcmp(p, "resume") == 0) {
      r->id = HTP_R_ACTION;
      UTL_Strlcpy(r->action, p, sizeof r->action);
      want = HTP_POST;
    } else {
      memset(r, 0, sizeof *r);
      return 404;
    }
  } else {
    return 404;
  }
  return (method & want) ? 200 : 405;
}

/* A word for a request line: printable, no spaces, at most len - 1. */
static int
word_ok(const char *s, const char *extra)
{
  if (!s[0])
    return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
      return 0;
  return 1;
}

static json_t *
parse_object(const char *body, size_t len, char *err, size_t errlen)
{
  json_error_t je;
  json_t *o;

  if (!body || len == 0) {
    snprintf(err, errlen, "a JSON object is needed");
    return NULL;
  }
  o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
  if (!o) {
    snprintf(err, errlen, "invalid JSON: %s", je.text);
    return NULL;
  }
  if (!json_is_object(o)) {
    snprintf(err, errlen, "a JSON object is needed");
    json_decref(o);
    return NULL;
  }
  return o;
}

int
HTP_ParseSetpoint(const char *body, size_t len, char *value, size_t vlen, char *unit,
                  size_t ulen, char *err, size_t errlen)
{
  json_t *o = parse_object(body, len, err, errlen), *v, *u;
  const char *key;
  json_t *x;
  int rc = -1;

  if (!o)
    return -1;
  json_object_foreach(o, key, x) {
    if (strcmp(key, "value") != 0 && strcmp(key, "unit") != 0) {
      snprintf(err, errlen, "unknown key \"%.32s\" (value, unit)", key);
      goto out;
    }
  }
  v = json_object_get(o, "value");
  u = json_object_get(o, "unit");
  if (json_is_number(v)) {
    double d = json_number_value(v);

    if (!isfinite(d)) {
      snprintf(err, errlen, "value must be a finite number");
      goto out;
    }
    snprintf(value, vlen, "%.17g", d);
  } else if (json_is_string(v) && json_string_length(v) < vlen &&
             word_ok(json_string_value(v), "+-.eE")) {
    UTL_Strlcpy(value, json_string_value(v), vlen);
  } else {
    snprintf(err, errlen, "value must be a number (or a string such as \"+50\")");
    goto out;
  }
  if (!u) {
    UTL_Strlcpy(unit, "THz", ulen);
  } else if (json_is_string(u) && json_string_length(u) < ulen && json_string_length(u) <= 8 &&
             word_ok(json_string_value(u), "-")) {
    UTL_Strlcpy(unit, json_string_value(u), ulen);
  } else {
    snprintf(err, errlen, "unit must be THz, GHz, MHz, nm or cm-1");
    goto out;
  }
  rc = 0;
out:
  json_decref(o);
  return rc;
}

int
HTP_ParseToken(const char *body, size_t len, char *token, size_t tlen, char *err, size_t errlen)
{
  json_t *o = parse_object(body, len, err, errlen), *t;
  int rc = -1;

  if (!o)
    return -1;
  t = json_object_get(o, "token");
  if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) >= tlen ||
      !word_ok(json_string_value(t), "!#$%&'()*+,-./:;<=>?@[]^_`{|}~\"\\")) {
    snprintf(err, errlen, "token must be a string of printable characters");
  } else {
    UTL_Strlcpy(token, json_string_value(t), tlen);
    rc = 0;
  }
  json_decref(o);
  return rc;
}
