/* wm.c - wavemeter backends: dispatch, stream line parsing, error names. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "wm_int.h"

#define WM_LINE_MAX 256
#define WM_MAX_THZ 10000.0        /* 30 nm: anything above is not a reading */
#define WM_MIN_CODE -1000.0       /* error codes are small negative integers */
#define WM_MAX_TIME_MS 1e15       /* 30000 years of milliseconds */
#define WM_C_NM_THZ 299792.458    /* c in nm*THz */

WM_Backend *
WM_Prepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg, char *err, size_t errlen)
{
  if (!cfg || !fn) {
    snprintf(err, errlen, "wavemeter: internal error (missing argument)");
    return NULL;
  }
  switch (cfg->backend) {
    case CNF_WM_STREAM:
      return WM_StreamPrepare(cfg, fn, arg, err, errlen);
    case CNF_WM_WLMDATA:
      return WM_WlmDataPrepare(cfg, fn, arg, err, errlen);
  }
  snprintf(err, errlen, "wavemeter.backend: unknown backend %d", (int)cfg->backend);
  return NULL;
}

int
WM_Start(WM_Backend *wm, struct event_base *base, char *err, size_t errlen)
{
  if (!wm || !base) {
    snprintf(err, errlen, "wavemeter: internal error (missing argument)");
    return -1;
  }
  return wm->start(wm, base, err, errlen);
}

WM_Backend *
WM_Create(const CNF_Wavemeter *cfg, struct event_base *base,
          WM_ReadingFn fn, void *arg, char *err, size_t errlen)
{
  WM_Backend *wm;

  if (!base) {
    snprintf(err, errlen, "wavemeter: internal error (missing argument)");
    return NULL;
  }
  wm = WM_Prepare(cfg, fn, arg, err, errlen);
  if (wm && WM_Start(wm, base, err, errlen) != 0) {
    WM_Destroy(wm);
    wm = NULL;
  }
  return wm;
}

int
WM_Reap(double timeout_s)
{
  return WM_WlmDataReap(timeout_s);
}

int
WM_Check(const CNF_Wavemeter *cfg, char *err, size_t errlen)
{
  switch (cfg->backend) {
    case CNF_WM_STREAM:
      return WM_StreamCheck(cfg, err, errlen);
    case CNF_WM_WLMDATA:
      return WM_WlmDataCheck(cfg, err, errlen);
  }
  snprintf(err, errlen, "wavemeter.backend: unknown backend %d", (int)cfg->backend);
  return -1;
}

void
WM_Destroy(WM_Backend *wm)
{
  if (wm)
    wm->destroy(wm);
}

void
WM_Status(const WM_Backend *wm, char *buf, size_t len)
{
  if (!len)
    return;
  if (!wm) {
    snprintf(buf, len, "backend=none connected=0");
    return;
  }
  wm->status(wm, buf, len);
}

int
WM_ExposureBegin(const WM_Backend *wm, WM_ExposureOp *op, char *err, size_t errlen)
{
  op->run = NULL;
  if (!wm || !wm->exposure) {
    snprintf(err, errlen, "the %s wavemeter backend cannot read or set the exposure "
             "(only wlmdata can)", wm ? wm->name : "(none)");
    errno = ENOTSUP;
    return -1;
  }
  return wm->exposure(wm, op, err, errlen);
}

int
WM_ExposureRun(WM_ExposureOp *op, char *err, size_t errlen)
{
  if (!op->run) {
    snprintf(err, errlen, "no exposure call prepared");
    errno = EINVAL;
    return -1;
  }
  return op->run(op, err, errlen);
}

const char *
WM_ErrorName(double code)
{
  if (isnan(code))
    return "invalid";
  if (code > 0)
    return "ok";
  if (code < WM_MIN_CODE || code != floor(code))
    return "error";           /* not a code: (int) of it would be undefined */
  switch ((int)code) {
    case 0: return "no-value";
    case -1: return "no-signal";
    case -2: return "bad-signal";
    case -3: return "underexposed";
    case -4: return "overexposed";
    case -5: return "wavemeter-missing";
    case -6: return "not-available";
    case -7: return "nothing-changed";
    case -8: return "no-pulse";
    case -10: return "channel-not-available";
    case -13: return "division-by-zero";
    case -14: return "out-of-range";
    case -15: return "unit-not-available";
    case -26: return "tcp-error";
    default: return "error";
  }
}

double
WM_NmToTHz(double nm)
{
  if (!(nm > 0))
    return nm;
  return WM_C_NM_THZ / nm;
}


/* Parse the next word of *p as a finite decimal number; advances *p. */
static int
next_number(const char **p, double *out, int integer)
{
  const char *s = *p;
  char *end;
  size_t n;
  double v;

  while (*s == ' ' || *s == '\t')
    s++;
  n = UTL_ScanDecimal(s);
  if (!n || (s[n] != '\0' && s[n] != ' ' && s[n] != '\t'))
    return -1;
  if (integer && memchr(s, '.', n))
    return -1;
  errno = 0;
  v = strtod(s, &end);
  if (end != s + n || errno == ERANGE || !isfinite(v))
    return -1;
  if (integer && (memchr(s, 'e', n) || memchr(s, 'E', n)))
    return -1;
  *out = v;
  *p = s + n;
  return 0;
}

int
WM_ParseLine(const char *line, size_t len, WM_Reading *r)
{
  char buf[WM_LINE_MAX + 2];
  const char *p;
  double ch, value, t_ms = -1;

  if (!line || !r || len > WM_LINE_MAX + 1)
    return -1;
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (len > WM_LINE_MAX || memchr(line, '\0', len))
    return -1;
  memcpy(buf, line, len);
  buf[len] = '\0';
  p = buf;

  if (next_number(&p, &ch, 1) < 0 || ch < 1 || ch > CNF_MAX_CHANNEL)
    return -1;
  if (next_number(&p, &value, 0) < 0)
    return -1;
  if (value > WM_MAX_THZ)
    return -1;
  if (value <= 0 && (value < WM_MIN_CODE || value != floor(value)))
    return -1;
  while (*p == ' ' || *p == '\t')
    p++;
  if (*p) {
    if (next_number(&p, &t_ms, 0) < 0 || t_ms < 0 || t_ms > WM_MAX_TIME_MS)
      return -1;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p)
      return -1;
  }
  r->channel = (int)ch;
  r->value = value == 0 ? 0.0 : value;    /* no negative zero */
  r->t_s = t_ms >= 0 ? t_ms / 1000.0 : -1.0;
  return 0;
}

int
WM_WlmModeChannel(int mode)
{
  if (mode == 42)
    return 1;
  if (mode == 43)
    return 2;
  if (mode >= 90 && mode <= 95)
    return mode - 90 + 3;
  if (mode == 1130)
    return 9;
  if (mode >= 1355 && mode <= 1362)
    return mode - 1355 + 10;
  return 0;
}

WM_CalibrationCall
WM_CalibrationFn(const WM_Backend *wm)
{
  return wm ? wm->calibration : NULL;
}
