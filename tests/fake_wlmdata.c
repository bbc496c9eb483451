/* fake_wlmdata.c - a test double of HighFinesse's libwlmData.so.
 *
 * Exports the real prototypes (with int32_t, as on Linux) and calls the
 * CallbackProcEx installed with Instantiate(1, 4, fn, 0) from its own thread
 * until Instantiate(1, 1, 0, 0) removes it (the thread is joined then).
 *
 * Behaviour is set by "key=value" words (separated by blanks, ';' or
 * newlines), first from the environment variable FAKE_WLM_SETTINGS, then from
 * the file named by FAKE_WLM_CONTROL, which is re-read whenever it changes
 * (write it atomically: write a temporary file, rename it).  Keys:
 *
 *   channels=1,2,5    channels measured (1..17), default 1
 *   nm<N>=780.24      vacuum wavelength of channel N, default 770 + 10*N
 *   step_nm=1e-6      each new reading of a channel adds this (mod 1000 steps), default 0
 *   err<N>=-3         channel N reports this error code; err<N>=none clears it
 *   period_ms=10      one measurement of every channel per period, default 10
 *   callbacks=on|off  off: the thread stays alive but calls nothing ("silent")
 *   install=ok|fail   fail: Instantiate(1, 4, ...) returns 0 and never calls back
 *   repeat=N          send every callback N times with the same time stamp, default 1
 *   get_delay_ms=N    GetFrequencyNum/GetWavelengthNum sleep this long, default 0
 *   exposure_delay_ms=N  the exposure calls sleep this long, default 0
 *   count=N           what GetChannelsCount returns, default the highest channel
 *   cal_ms=N          Calibration() takes this long, default 2000: no
 *                     measurement (no callback, GetFrequencyNum answers -6)
 *                     meanwhile
 *   cal_rc=N          what Calibration() returns, default 0
 *   restart=TOKEN     a TOKEN (a word) other than the last one seen plays a
 *                     restart of the wavemeter software: the installed callback
 *                     is forgotten (nothing is called until Instantiate(1, 4,
 *                     ...) installs one again) and the callbacks' time stamps
 *                     start again from 0; leaving the key out changes nothing
 *
 * The file named by FAKE_WLM_LOG (if set) gets one line per event:
 * "install", "install-refused", "remove", "restart", with a flush after each;
 * for each call of Calibration() "calibration type=T unit=U value=V channel=C"
 * when it starts and "calibration-done rc=R" when it returns; and one per
 * exposure call: "GetExposureNum <num> <arr> = <ms>",
 * "SetExposureNum <num> <arr> <ms> = <rc>", "GetExposureMode = <0|1>",
 * "SetExposureMode <0|1> = <rc>".  The exposure is kept per channel and CCD
 * (arr 1 and 2; default 10 and 20 ms; Set accepts 1..9999, else returns -5),
 * auto exposure is one switch (default off).
 * Test programs that dlopen() this library can also read its counters with
 * FakeWlm_Count("installs" | "removes" | "callbacks" | "gets" | "reads").
 *
 * Built several times: with FAKE_WLM_NO_GETFREQ the library lacks
 * GetFrequencyNum, for the missing-symbol test; with FAKE_WLM_NO_CALIBRATION
 * it lacks Calibration() (an old library: calibration mode wlmdata refused).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NCH 17

typedef void (*CallbackProcEx)(int32_t ver, int32_t mode, int32_t intval,
                               double dblval, int32_t res1);

/* The wlmData interface (and the test hook). */
intptr_t Instantiate(int32_t RFC, int32_t Mode, intptr_t P1, int32_t P2);
#ifndef FAKE_WLM_NO_GETFREQ
double GetFrequencyNum(int32_t num, double F);
#endif
double GetWavelengthNum(int32_t num, double WL);
int32_t GetChannelsCount(int32_t C);
int32_t GetSwitcherMode(int32_t SM);
int32_t SetSwitcherMode(int32_t SM);
int32_t GetSwitcherChannel(int32_t CH);
int32_t GetExposureNum(int32_t num, int32_t arr, int32_t E);
int32_t SetExposureNum(int32_t num, int32_t arr, int32_t E);
bool GetExposureMode(bool EM);
int32_t SetExposureMode(bool EM);
uint16_t GetOperationState(uint16_t OS);
#ifndef FAKE_WLM_NO_CALIBRATION
int32_t Calibration(int32_t Type, int32_t Unit, double Value, int32_t Channel);
#endif
unsigned long FakeWlm_Count(const char *what);

typedef struct {
  int on[NCH + 1];
  double nm[NCH + 1];
  int has_err[NCH + 1];
  double err[NCH + 1];
  double step_nm;
  int period_ms;
  int callbacks;
  int install_ok;
  int repeat;
  int get_delay_ms;
  int exposure_delay_ms;
  int count;
  int cal_ms;
  int cal_rc;
  char restart[32];
} Settings;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Settings cur;
static int loaded;
static struct timespec ctl_mtime;
static off_t ctl_size = -1;
static CallbackProcEx callback;
static pthread_t thread;
static int running, stopping;
static unsigned long n_installs, n_removes, n_callbacks, n_gets;
static unsigned long n_reads[NCH + 1];
static struct timespec t0;
static int switcher_channel = 1;
static char restart_seen[32];
static int32_t exposure_ms[3][NCH + 1];     /* [arr][channel], 0: not set yet */
static int exposure_auto;
static int calibrating;          /* inside Calibration(): no measurements */

static void log_event(const char *what);

static void
defaults(Settings *s)
{
  memset(s, 0, sizeof *s);
  for (int ch = 1; ch <= NCH; ch++)
    s->nm[ch] = 770.0 + 10.0 * ch;
  s->on[1] = 1;
  s->period_ms = 10;
  s->callbacks = 1;
  s->install_ok = 1;
  s->repeat = 1;
  s->cal_ms = 2000;
}

static void
apply_word(Settings *s, const char *w)
{
  const char *eq = strchr(w, '=');
  const char *v;
  int ch;

  if (!eq)
    return;
  v = eq + 1;
  if (!strncmp(w, "channels=", 9)) {
    char *end;

    for (ch = 1; ch <= NCH; ch++)
      s->on[ch] = 0;
    while (*v) {
      long n = strtol(v, &end, 10);

      if (end == v)
        break;
      if (n >= 1 && n <= NCH)
        s->on[n] = 1;
      v = *end == ',' ? end + 1 : end;
    }
  } else if (sscanf(w, "nm%d=", &ch) == 1 && ch >= 1 && ch <= NCH) {
    s->nm[ch] = strtod(v, NULL);
  } else if (sscanf(w, "err%d=", &ch) == 1 && ch >= 1 && ch <= NCH) {
    if (!strcmp(v, "none")) {
      s->has_err[ch] = 0;
    } else {
      s->has_err[ch] = 1;
      s->err[ch] = strtod(v, NULL);
    }
  } else if (!strncmp(w, "step_nm=", 8)) {
    s->step_nm = strtod(v, NULL);
  } else if (!strncmp(w, "period_ms=", 10)) {
    s->period_ms = atoi(v) > 0 ? atoi(v) : 10;
  } else if (!strncmp(w, "callbacks=", 10)) {
    s->callbacks = !strcmp(v, "on") || !strcmp(v, "1");
  } else if (!strncmp(w, "install=", 8)) {
    s->install_ok = strcmp(v, "fail") != 0;
  } else if (!strncmp(w, "repeat=", 7)) {
    s->repeat = atoi(v) > 0 ? atoi(v) : 1;
  } else if (!strncmp(w, "get_delay_ms=", 13)) {
    s->get_delay_ms = atoi(v) > 0 ? atoi(v) : 0;
  } else if (!strncmp(w, "exposure_delay_ms=", 18)) {
    s->exposure_delay_ms = atoi(v) > 0 ? atoi(v) : 0;
  } else if (!strncmp(w, "count=", 6)) {
    s->count = atoi(v);
  } else if (!strncmp(w, "cal_ms=", 7)) {
    s->cal_ms = atoi(v) >= 0 ? atoi(v) : 0;
  } else if (!strncmp(w, "cal_rc=", 7)) {
    s->cal_rc = atoi(v);
  } else if (!strncmp(w, "restart=", 8)) {
    snprintf(s->restart, sizeof s->restart, "%s", v);
  }
}

static void
apply_text(Settings *s, const char *text)
{
  char word[128];
  size_t n = 0;

  for (const char *p = text;; p++) {
    if (*p == '\0' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';') {
      if (n) {
        word[n] = '\0';
        apply_word(s, word);
        n = 0;
      }
      if (!*p)
        break;
    } else if (n + 1 < sizeof word) {
      word[n++] = *p;
    }
  }
}

/* Re-read the settings if the control file changed; lock held. */
static void
refresh(void)
{
  const char *path = getenv("FAKE_WLM_CONTROL");
  struct stat st;
  int changed = !loaded;

  if (path && stat(path, &st) == 0) {
    if (st.st_mtim.tv_sec != ctl_mtime.tv_sec || st.st_mtim.tv_nsec != ctl_mtime.tv_nsec ||
        st.st_size != ctl_size) {
      ctl_mtime = st.st_mtim;
      ctl_size = st.st_size;
      changed = 1;
    }
  } else if (ctl_size != -1) {
    ctl_size = -1;
    changed = 1;
  }
  if (!changed)
    return;
  defaults(&cur);
  if (getenv("FAKE_WLM_SETTINGS"))
    apply_text(&cur, getenv("FAKE_WLM_SETTINGS"));
  if (path && ctl_size >= 0) {
    FILE *f = fopen(path, "r");

    if (f) {
      char buf[4096];
      size_t n = fread(buf, 1, sizeof buf - 1, f);

      buf[n] = '\0';
      fclose(f);
      apply_text(&cur, buf);
    }
  }
  loaded = 1;
  if (cur.restart[0] && strcmp(cur.restart, restart_seen) != 0) {
    snprintf(restart_seen, sizeof restart_seen, "%s", cur.restart);
    callback = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    log_event("restart");
  }
}

static void
log_event(const char *what)
{
  const char *path = getenv("FAKE_WLM_LOG");
  FILE *f;

  if (!path || !(f = fopen(path, "a")))
    return;
  fprintf(f, "%s\n", what);
  fclose(f);
}

static int32_t
ms_since_start(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int32_t)((ts.tv_sec - t0.tv_sec) * 1000 + (ts.tv_nsec - t0.tv_nsec) / 1000000);
}

static int
mode_of(int ch)
{
  if (ch == 1)
    return 42;
  if (ch == 2)
    return 43;
  if (ch <= 8)
    return 90 + ch - 3;
  if (ch == 9)
    return 1130;
  return 1355 + ch - 10;
}

/* The current reading of channel ch in nm (or an error code); lock held.
   Each call counts as a new measurement. */
static double
measure(int ch)
{
  double v;

  if (cur.has_err[ch])
    return cur.err[ch];
  v = cur.nm[ch] + cur.step_nm * (double)(n_reads[ch] % 1000);
  n_reads[ch]++;
  return v;
}

static void *
fake_thread(void *arg)
{
  pthread_mutex_lock(&lock);
  while (!stopping) {
    struct timespec ts = { 0, 0 };

    refresh();
    if (callback && cur.callbacks && !calibrating) {
      CallbackProcEx fn = callback;
      int32_t t = ms_since_start();
      double vals[NCH + 1];
      int repeat = cur.repeat, on[NCH + 1];

      for (int ch = 1; ch <= NCH; ch++) {
        on[ch] = cur.on[ch];
        if (on[ch])
          vals[ch] = measure(ch);
      }
      pthread_mutex_unlock(&lock);
      for (int ch = 1; ch <= NCH; ch++) {
        if (!on[ch])
          continue;
        fn(0, 203, ch, 0.0, 0);              /* cmiSwitcherChannel: to be ignored */
        for (int i = 0; i < repeat; i++)
          fn(0, mode_of(ch), t, vals[ch], 0);
        pthread_mutex_lock(&lock);
        n_callbacks += (unsigned long)repeat;
        pthread_mutex_unlock(&lock);
      }
      pthread_mutex_lock(&lock);
    }
    ts.tv_sec = cur.period_ms / 1000;
    ts.tv_nsec = (long)(cur.period_ms % 1000) * 1000000L;
    pthread_mutex_unlock(&lock);
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&lock);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

static void
stop_thread(void)
{
  int join;

  pthread_mutex_lock(&lock);
  callback = NULL;
  join = running && !pthread_equal(pthread_self(), thread);
  stopping = 1;
  pthread_mutex_unlock(&lock);
  if (join)
    pthread_join(thread, NULL);
  pthread_mutex_lock(&lock);
  running = 0;
  stopping = 0;
  pthread_mutex_unlock(&lock);
}

intptr_t
Instantiate(int32_t RFC, int32_t Mode, intptr_t P1, int32_t P2)
{
  intptr_t rc = 1;

  if (RFC != 1)                 /* cInstCheckForWLM and friends: "running" */
    return 1;
  if (Mode == 1) {              /* cNotifyRemoveCallback */
    stop_thread();
    pthread_mutex_lock(&lock);
    n_removes++;
    pthread_mutex_unlock(&lock);
    log_event("remove");
    return 1;
  }
  if (Mode != 4 && Mode != 0)   /* only CallbackEx (4) and Callback (0) */
    return 0;
  pthread_mutex_lock(&lock);
  refresh();
  if (!cur.install_ok || !P1) {
    pthread_mutex_unlock(&lock);
    log_event("install-refused");
    return 0;
  }
  if (t0.tv_sec == 0 && t0.tv_nsec == 0)
    clock_gettime(CLOCK_MONOTONIC, &t0);
  memcpy(&callback, &P1, sizeof callback);
  n_installs++;
  if (!running) {
    stopping = 0;
    if (pthread_create(&thread, NULL, fake_thread, NULL) == 0)
      running = 1;
    else
      rc = 0;
  }
  pthread_mutex_unlock(&lock);
  log_event("install");
  return rc;
}

static double
get_value(int32_t num, int thz)
{
  double v;
  int delay;

  pthread_mutex_lock(&lock);
  refresh();
  n_gets++;
  delay = cur.get_delay_ms;
  if (num < 1 || num > NCH || !cur.on[num])
    v = -10;                    /* ErrNoChannel... channel not available */
  else if (calibrating)
    v = -6;                     /* ErrNotAvailable: measurement interrupted */
  else
    v = measure(num);
  pthread_mutex_unlock(&lock);
  if (delay > 0) {
    struct timespec ts = { delay / 1000, (long)(delay % 1000) * 1000000L };

    nanosleep(&ts, NULL);
  }
  if (thz && v > 0)
    v = 299792.458 / v;
  return v;
}

#ifndef FAKE_WLM_NO_CALIBRATION
/* Calibration(Type, Unit, Value, Channel): logged; blocks for cal_ms with
   the measurement interrupted, as the real one does for a few seconds. */
int32_t
Calibration(int32_t Type, int32_t Unit, double Value, int32_t Channel)
{
  char line[160];
  int ms, rc;

  pthread_mutex_lock(&lock);
  refresh();
  ms = cur.cal_ms;
  rc = cur.cal_rc;
  calibrating = 1;
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "calibration type=%d unit=%d value=%.9f channel=%d",
           (int)Type, (int)Unit, Value, (int)Channel);
  log_event(line);
  if (ms > 0) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
  }
  pthread_mutex_lock(&lock);
  calibrating = 0;
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "calibration-done rc=%d", rc);
  log_event(line);
  return rc;
}
#endif

#ifndef FAKE_WLM_NO_GETFREQ
double
GetFrequencyNum(int32_t num, double F)
{
  return get_value(num, 1);
}
#endif

double
GetWavelengthNum(int32_t num, double WL)
{
  return get_value(num, 0);
}

int32_t
GetChannelsCount(int32_t C)
{
  int32_t n = 0;

  pthread_mutex_lock(&lock);
  refresh();
  if (cur.count > 0) {
    n = cur.count;
  } else {
    for (int ch = 1; ch <= NCH; ch++)
      if (cur.on[ch])
        n = ch;
  }
  pthread_mutex_unlock(&lock);
  return n;
}

int32_t
GetSwitcherMode(int32_t SM)
{
  return 1;
}

int32_t
SetSwitcherMode(int32_t SM)
{
  return 0;
}

int32_t
GetSwitcherChannel(int32_t CH)
{
  return switcher_channel;
}

/* Sleep exposure_delay_ms (a slow link to the wavemeter PC). */
static void
exposure_delay(void)
{
  int ms;

  pthread_mutex_lock(&lock);
  refresh();
  ms = cur.exposure_delay_ms;
  pthread_mutex_unlock(&lock);
  if (ms > 0) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
  }
}

int32_t
GetExposureNum(int32_t num, int32_t arr, int32_t E)
{
  int32_t v = -5;               /* ResERR_ParmOutOfRange */
  char line[80];

  exposure_delay();
  pthread_mutex_lock(&lock);
  if (num >= 1 && num <= NCH && (arr == 1 || arr == 2))
    v = exposure_ms[arr][num] ? exposure_ms[arr][num] : 10 * arr;
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "GetExposureNum %d %d = %d", (int)num, (int)arr, (int)v);
  log_event(line);
  return v;
}

int32_t
SetExposureNum(int32_t num, int32_t arr, int32_t E)
{
  int32_t rc = -5;
  char line[80];

  exposure_delay();
  pthread_mutex_lock(&lock);
  if (num >= 1 && num <= NCH && (arr == 1 || arr == 2) && E >= 1 && E <= 9999) {
    exposure_ms[arr][num] = E;
    rc = 0;
  }
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "SetExposureNum %d %d %d = %d", (int)num, (int)arr, (int)E,
           (int)rc);
  log_event(line);
  return rc;
}

bool
GetExposureMode(bool EM)
{
  int v;
  char line[40];

  exposure_delay();
  pthread_mutex_lock(&lock);
  v = exposure_auto;
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "GetExposureMode = %d", v);
  log_event(line);
  return v != 0;
}

int32_t
SetExposureMode(bool EM)
{
  char line[40];

  exposure_delay();
  pthread_mutex_lock(&lock);
  exposure_auto = EM ? 1 : 0;
  pthread_mutex_unlock(&lock);
  snprintf(line, sizeof line, "SetExposureMode %d = 0", EM ? 1 : 0);
  log_event(line);
  return 0;
}

uint16_t
GetOperationState(uint16_t OS)
{
  return 2;                     /* measurement */
}

unsigned long
FakeWlm_Count(const char *what)
{
  unsigned long v = 0;

  pthread_mutex_lock(&lock);
  if (!strcmp(what, "installs"))
    v = n_installs;
  else if (!strcmp(what, "removes"))
    v = n_removes;
  else if (!strcmp(what, "callbacks"))
    v = n_callbacks;
  else if (!strcmp(what, "gets"))
    v = n_gets;
  else if (!strcmp(what, "running"))
    v = (unsigned long)running;
  pthread_mutex_unlock(&lock);
  return v;
}

__attribute__((destructor)) static void
fake_fini(void)
{
  stop_thread();
}
