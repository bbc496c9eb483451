/* wm_wlmdata.c - the `wlmdata` wavemeter backend: HighFinesse's wlmData
 * library, loaded with dlopen() so wavelock builds and runs without it.
 *
 * Readings come from the library's CallbackProcEx notification, which runs on
 * the library's own thread: cmiWavelength1..17 events carry a time stamp (ms)
 * and a vacuum wavelength in nm or an error code.  The callback keeps the
 * latest reading per channel under a mutex and wakes the event loop through a
 * pre-made event (event_active), so readings reach WM_ReadingFn on the loop
 * thread.  The base must have been created after evthread_use_pthreads().
 *
 * If no wavelength callback arrives for callback_silence_ms (callbacks not
 * supported, or the notification silently stopped, a known complaint), a
 * polling thread calls GetFrequencyNum(channel, 0) for every channel each
 * poll_ms and re-installs the callback now and then; as soon as callbacks
 * flow again, polling stops.  The polling runs on its own thread because the
 * library's calls may block on its TCP link to the wavemeter PC.
 *
 * Only readings newer than the last one per channel are delivered: for
 * callbacks, a time stamp later than the channel's last one (a jump back of
 * more than 10 s is taken as a restarted wavemeter clock); for polls, which
 * carry no time stamp, a value different from the last one.
 *
 * The CallbackProcEx prototype has no user pointer, so the live backends are
 * kept in a small process-wide table; the callback serves all of them.  The
 * library is never dlclose()d once started: its own threads may outlive our
 * callback.  (WM_WlmDataCheck, for `wavelockd -t`, unloads it again: it only
 * resolves symbols, calling nothing.)
 *
 * Nothing here makes the event loop wait for the library: loading it,
 * asking its channel count and installing the callback happen in
 * WM_WlmDataPrepare (a reload runs it on a helper thread), and destroying a
 * started backend only marks it stopped and unregisters it; its polling
 * thread (detached) finishes the call in progress, removes the callback if
 * no other backend shares the library, and frees the backend.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"
#include "util.h"
#include "wm_int.h"
#include "prio.h"

#define WLM_CHANNELS 17              /* cmiWavelength1..17 */
#define WLM_MAX_BACKENDS 4
#define WLM_REINSTALL_S 30.0         /* while polling, re-install this often */
#define WLM_CLOCK_RESET_MS 10000     /* a time stamp this far back: new clock */

/* wlmData constants (wlmData.h) */
#define cInstNotification 1
#define cNotifyRemoveCallback 1
#define cNotifyInstallCallbackEx 4

typedef intptr_t (*InstantiateFn)(int32_t rfc, int32_t mode, intptr_t p1, int32_t p2);
typedef double (*GetFrequencyNumFn)(int32_t num, double f);
typedef double (*GetWavelengthNumFn)(int32_t num, double wl);
typedef int32_t (*GetChannelsCountFn)(int32_t c);
typedef uint16_t (*GetOperationStateFn)(uint16_t os);
typedef int32_t (*GetExposureNumFn)(int32_t num, int32_t arr, int32_t e);
typedef int32_t (*SetExposureNumFn)(int32_t num, int32_t arr, int32_t e);
typedef bool (*GetExposureModeFn)(bool em);
typedef int32_t (*SetExposureModeFn)(bool em);
typedef void (*CallbackProcExFn)(int32_t ver, int32_t mode, int32_t intval,
                                 double dblval, int32_t res1);

typedef struct {
  int has;
  double value;
  double t_s;
} Slot;

typedef struct {
  WM_Backend hdr;
  struct event_base *base;
  WM_ReadingFn fn;
  void *arg;
  char library[CNF_PATH_MAX];
  void *dl;
  InstantiateFn instantiate;
  GetFrequencyNumFn get_frequency;
  GetWavelengthNumFn get_wavelength;        /* optional */
  GetChannelsCountFn get_channels;          /* optional */
  GetOperationStateFn get_operation;        /* optional */
  GetExposureNumFn get_exposure;            /* optional (exposure command) */
  SetExposureNumFn set_exposure;            /* optional */
  GetExposureModeFn get_exposure_mode;      /* optional */
  SetExposureModeFn set_exposure_mode;      /* optional */
  struct event *deliver_ev;
  int poll_ms;
  double silence_s;
  int n_poll;                               /* channels polled: 1..n_poll */

  /* Below: protected by g_lock. */
  Slot pending[WLM_CHANNELS + 1];
  int pending_any;
  int has_t[WLM_CHANNELS + 1];
  uint32_t last_t_ms[WLM_CHANNELS + 1];
  int has_value[WLM_CHANNELS + 1];
  double last_value[WLM_CHANNELS + 1];
  double last_callback;                     /* monotonic s of the last wavelength callback */
  int polling;
  int poll_ok;                              /* the last poll reached the wavemeter */
  int stop;
  unsigned long callbacks, polls, readings, errors, old_dropped;
  long install_rc;

  pthread_t poll_thread;
  int poll_started;
  pthread_cond_t cond;
} Wlm;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static Wlm *g_backends[WLM_MAX_BACKENDS];
static int g_dying;                         /* destroyed, their threads still running */
static pthread_cond_t g_dying_cond = PTHREAD_COND_INITIALIZER;

/* Offer a reading for channel ch; g_lock held.  Wakes the loop if needed. */
static void
offer(Wlm *w, int ch, double value, double t_s)
{
  if (w->stop)
    return;                      /* destroyed: its event is gone */
  w->pending[ch].has = 1;
  w->pending[ch].value = value;
  w->pending[ch].t_s = t_s;
  w->has_value[ch] = 1;
  w->last_value[ch] = value;
  if (!w->pending_any) {
    w->pending_any = 1;
    event_active(w->deliver_ev, EV_READ, 0);
  }
}

static void
wlm_callback(int32_t ver, int32_t mode, int32_t intval, double dblval, int32_t res1)
{
  int ch = WM_WlmModeChannel(mode);
  uint32_t t_ms = (uint32_t)intval;
  double now;

  if (ch < 1 || ch > WLM_CHANNELS)
    return;
  now = UTL_Now();
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < WLM_MAX_BACKENDS; i++) {
    Wlm *w = g_backends[i];

    if (!w)
      continue;
    w->callbacks++;
    w->last_callback = now;
    if (w->has_t[ch]) {
      int32_t d = (int32_t)(t_ms - w->last_t_ms[ch]);

      if (d <= 0 && d > -WLM_CLOCK_RESET_MS) {
        w->old_dropped++;
        continue;
      }
    }
    w->has_t[ch] = 1;
    w->last_t_ms[ch] = t_ms;
    offer(w, ch, WM_NmToTHz(dblval), t_ms / 1000.0);
  }
  pthread_mutex_unlock(&g_lock);
}

/* Runs on the loop thread: hand the pending readings to the user. */
static void
deliver_cb(evutil_socket_t fd, short what, void *arg)
{
  Wlm *w = arg;
  Slot slots[WLM_CHANNELS + 1];
  double now = UTL_Now();

  PRI_Enter(w->deliver_ev);
  pthread_mutex_lock(&g_lock);
  memcpy(slots, w->pending, sizeof slots);
  memset(w->pending, 0, sizeof w->pending);
  w->pending_any = 0;
  for (int ch = 1; ch <= WLM_CHANNELS; ch++) {
    if (slots[ch].has) {
      w->readings++;
      if (slots[ch].value <= 0)
        w->errors++;
    }
  }
  pthread_mutex_unlock(&g_lock);

  for (int ch = 1; ch <= WLM_CHANNELS; ch++) {
    WM_Reading r;

    if (!slots[ch].has)
      continue;
    r.channel = ch;
    r.value = slots[ch].value;
    r.t_s = slots[ch].t_s;
    r.rx_s = now;
    w->fn(&r, w->arg);
  }
}

static long
install_callback(Wlm *w)
{
  intptr_t rc = w->instantiate(cInstNotification, cNotifyInstallCallbackEx,
                               (intptr_t)wlm_callback, 0);

  pthread_mutex_lock(&g_lock);
  w->install_rc = (long)rc;
  pthread_mutex_unlock(&g_lock);
  return (long)rc;
}

static void
remove_callback(Wlm *w)
{
  w->instantiate(cInstNotification, cNotifyRemoveCallback, 0, 0);
}

static void *
poll_thread(void *arg)
{
  Wlm *w = arg;
  double last_install = UTL_Now();

  pthread_mutex_lock(&g_lock);
  while (!w->stop) {
    struct timespec ts;
    double now;

    UTL_AbsTime(CLOCK_MONOTONIC, w->poll_ms / 1000.0, &ts);
    pthread_cond_timedwait(&w->cond, &g_lock, &ts);
    if (w->stop)
      break;
    now = UTL_Now();
    if (now - w->last_callback < w->silence_s) {
      if (w->polling) {
        w->polling = 0;
        log_info("wavemeter %s: callbacks resumed, polling stopped", w->library);
      }
      continue;
    }
    if (!w->polling) {
      w->polling = 1;
      log_warn("wavemeter %s: no callback for %.0f ms, polling every %d ms",
               w->library, w->silence_s * 1e3, w->poll_ms);
    }
    pthread_mutex_unlock(&g_lock);

    if (now - last_install >= WLM_REINSTALL_S) {
      remove_callback(w);
      install_callback(w);
      last_install = now;
    }
    for (int ch = 1; ch <= w->n_poll; ch++) {
      double v = w->get_frequency(ch, 0.0);
      int stop;

      pthread_mutex_lock(&g_lock);
      w->polls++;
      w->poll_ok = !(v == WM_ERR_WLMMISSING || v == -26);
      stop = w->stop;
      if (!stop && !(w->has_value[ch] && w->last_value[ch] == v))
        offer(w, ch, v, -1.0);
      pthread_mutex_unlock(&g_lock);
      if (stop)
        break;      /* wlm_destroy waits for at most this one call */
    }
    pthread_mutex_lock(&g_lock);
  }
  /* Destroyed (and unregistered): the callback goes unless another
     backend still uses this library. */
  {
    int shared = 0;

    for (int i = 0; i < WLM_MAX_BACKENDS; i++)
      if (g_backends[i] && g_backends[i]->dl == w->dl)
        shared = 1;
    pthread_mutex_unlock(&g_lock);
    if (!shared)
      remove_callback(w);
  }
  pthread_cond_destroy(&w->cond);
  free(w);
  pthread_mutex_lock(&g_lock);
  g_dying--;
  pthread_cond_broadcast(&g_dying_cond);
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

int
WM_WlmDataReap(double timeout_s)
{
  struct timespec ts;
  int left;

  UTL_AbsTime(CLOCK_REALTIME, timeout_s, &ts);
  pthread_mutex_lock(&g_lock);
  while (g_dying > 0 && pthread_cond_timedwait(&g_dying_cond, &g_lock, &ts) == 0)
    ;
  left = g_dying;
  pthread_mutex_unlock(&g_lock);
  return left;
}

static void
wlm_status(const WM_Backend *wm, char *buf, size_t len)
{
  const Wlm *w = (const Wlm *)wm;

  pthread_mutex_lock(&g_lock);
  snprintf(buf, len, "backend=wlmdata library=%s connected=%d mode=%s readings=%lu "
           "errors=%lu callbacks=%lu polls=%lu old_dropped=%lu",
           w->library, w->polling ? w->poll_ok : 1, w->polling ? "polling" : "callback",
           w->readings, w->errors, w->callbacks, w->polls, w->old_dropped);
  pthread_mutex_unlock(&g_lock);
}

/* Unregister w; returns whether another backend still uses the same library. */
static int
unregister(Wlm *w)
{
  int shared = 0;

  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < WLM_MAX_BACKENDS; i++) {
    if (g_backends[i] == w)
      g_backends[i] = NULL;
    else if (g_backends[i] && g_backends[i]->dl == w->dl)
      shared = 1;
  }
  pthread_mutex_unlock(&g_lock);
  return shared;
}

static void
wlm_destroy(WM_Backend *wm)
{
  Wlm *w = (Wlm *)wm;

  if (!w->poll_started) {
    /* Prepared, never started: nothing of ours runs; the library stays
       loaded if the callback was installed. */
    if (!unregister(w))
      remove_callback(w);
    if (w->deliver_ev)
      event_free(w->deliver_ev);
    free(w);
    return;
  }
  /* Started: stop and unregister under the lock, so neither the callback
     nor the polling thread offers a reading (or touches the event) any
     more; the polling thread finishes the rest and frees w. */
  pthread_mutex_lock(&g_lock);
  w->stop = 1;
  g_dying++;
  for (int i = 0; i < WLM_MAX_BACKENDS; i++)
    if (g_backends[i] == w)
      g_backends[i] = NULL;
  event_free(w->deliver_ev);
  w->deliver_ev = NULL;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&g_lock);
}

static void *
resolve(void *dl, const char *lib, const char *name, int required,
        char *err, size_t errlen)
{
  void *p;

  dlerror();
  p = dlsym(dl, name);
  if (!p && required)
    snprintf(err, errlen, "wavemeter.library: '%s' has no symbol '%s' (not a wlmData library?)",
             lib, name);
  return p;
}

static int
wlm_start(WM_Backend *wm, struct event_base *base, char *err, size_t errlen)
{
  Wlm *w = (Wlm *)wm;
  pthread_condattr_t ca;
  pthread_attr_t ta;
  int slot = -1, rc;

  w->base = base;
  w->last_callback = UTL_Now();
  w->deliver_ev = event_new(base, -1, 0, deliver_cb, w);
  PRI_SetUrgent(w->deliver_ev);
  if (!w->deliver_ev) {
    snprintf(err, errlen, "wavemeter: cannot create an event");
    return -1;
  }
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cond, &ca);
  pthread_condattr_destroy(&ca);

  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < WLM_MAX_BACKENDS; i++) {
    if (!g_backends[i]) {
      g_backends[i] = w;
      slot = i;
      break;
    }
  }
  pthread_mutex_unlock(&g_lock);
  if (slot < 0) {
    snprintf(err, errlen, "wavemeter: too many wlmdata backends");
    pthread_cond_destroy(&w->cond);
    return -1;
  }
  pthread_attr_init(&ta);
  pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
  rc = pthread_create(&w->poll_thread, &ta, poll_thread, w);
  pthread_attr_destroy(&ta);
  if (rc != 0) {
    char buf[64];

    snprintf(err, errlen, "wavemeter: cannot start the polling thread: %s",
             strerror_r(rc, buf, sizeof buf));
    unregister(w);
    pthread_cond_destroy(&w->cond);
    return -1;
  }
  w->poll_started = 1;
  return 0;
}

/* The exposure calls (WM_ExposureRun), on a helper thread; op->calls hold
   GetExposureNum, SetExposureNum, GetExposureMode, SetExposureMode (the
   last three may be NULL when not needed). */
static int
wlm_exposure_run(WM_ExposureOp *op, char *err, size_t errlen)
{
  GetExposureNumFn get = (GetExposureNumFn)op->calls[0];
  SetExposureNumFn set = (SetExposureNumFn)op->calls[1];
  GetExposureModeFn get_mode = (GetExposureModeFn)op->calls[2];
  SetExposureModeFn set_mode = (SetExposureModeFn)op->calls[3];
  int32_t rc;

  if (op->set_auto && (rc = set_mode(true)) < 0) {
    snprintf(err, errlen, "SetExposureMode(true) failed: error %d", (int)rc);
    return -1;
  }
  if (op->set_ms > 0) {
    if (set_mode && (rc = set_mode(false)) < 0) {
      snprintf(err, errlen, "SetExposureMode(false) failed: error %d", (int)rc);
      return -1;
    }
    if ((rc = set(op->channel, 1, op->set_ms)) < 0) {
      snprintf(err, errlen, "SetExposureNum(%d, 1, %d) failed: error %d", op->channel,
               op->set_ms, (int)rc);
      return -1;
    }
  }
  rc = get(op->channel, 1, 0);
  if (rc < 0) {
    snprintf(err, errlen, "GetExposureNum(%d, 1) failed: error %d", op->channel, (int)rc);
    return -1;
  }
  op->ms = (int)rc;
  op->auto_on = get_mode ? (get_mode(false) ? 1 : 0) : -1;
  return 0;
}

static int
wlm_exposure(const WM_Backend *wm, WM_ExposureOp *op, char *err, size_t errlen)
{
  const Wlm *w = (const Wlm *)wm;
  const char *missing = NULL;

  if (!w->get_exposure)
    missing = "GetExposureNum";
  else if (op->set_ms > 0 && !w->set_exposure)
    missing = "SetExposureNum";
  else if (op->set_auto && !w->set_exposure_mode)
    missing = "SetExposureMode";
  if (missing) {
    snprintf(err, errlen, "the wavemeter library '%s' has no %s: it cannot %s the exposure",
             w->library, missing, strcmp(missing, "GetExposureNum") ? "set" : "read");
    errno = ENOTSUP;
    return -1;
  }
  if (op->channel < 1 || op->channel > WLM_CHANNELS) {
    snprintf(err, errlen, "the wlmdata backend has channels 1 to %d (not %d)", WLM_CHANNELS,
             op->channel);
    errno = EINVAL;
    return -1;
  }
  op->calls[0] = (void (*)(void))w->get_exposure;
  op->calls[1] = (void (*)(void))w->set_exposure;
  op->calls[2] = (void (*)(void))w->get_exposure_mode;
  op->calls[3] = (void (*)(void))w->set_exposure_mode;
  op->auto_on = -1;
  op->run = wlm_exposure_run;
  return 0;
}

/* dlopen() lib and resolve the symbols every wlmData library has; 0, or -1
   with err (and nothing left open). */
static int
open_library(const char *lib, void **dl_out, InstantiateFn *instantiate,
             GetFrequencyNumFn *get_frequency, char *err, size_t errlen)
{
  void *dl, *p;

  dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    const char *why = dlerror();
    size_t n = strlen(lib);

    /* dlerror() often repeats the name: "NAME: cannot open shared object..." */
    if (why && !strncmp(why, lib, n) && why[n] == ':' && why[n + 1] == ' ')
      why += n + 2;
    snprintf(err, errlen, "wavemeter.library: cannot load '%s': %s", lib,
             why ? why : "unknown error");
    return -1;
  }
  if (!(p = resolve(dl, lib, "Instantiate", 1, err, errlen))) {
    dlclose(dl);
    return -1;
  }
  memcpy(instantiate, &p, sizeof p);
  if (!(p = resolve(dl, lib, "GetFrequencyNum", 1, err, errlen))) {
    dlclose(dl);
    return -1;
  }
  memcpy(get_frequency, &p, sizeof p);
  *dl_out = dl;
  return 0;
}

int
WM_WlmDataCheck(const CNF_Wavemeter *cfg, char *err, size_t errlen)
{
  const char *lib = cfg->library[0] ? cfg->library : "libwlmData.so";
  InstantiateFn instantiate;
  GetFrequencyNumFn get_frequency;
  void *dl;

  if (open_library(lib, &dl, &instantiate, &get_frequency, err, errlen) < 0)
    return -1;
  if (cfg->need_calibration && !resolve(dl, lib, "Calibration", 0, err, errlen)) {
    snprintf(err, errlen, "wavemeter.library: '%s' has no symbol 'Calibration' "
             "(calibration.mode \"wlmdata\" needs it)", lib);
    dlclose(dl);
    return -1;
  }
  dlclose(dl);      /* nothing of ours was called or installed in it */
  return 0;
}

WM_Backend *
WM_WlmDataPrepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg,
                  char *err, size_t errlen)
{
  const char *lib = cfg->library[0] ? cfg->library : "libwlmData.so";
  InstantiateFn instantiate;
  GetFrequencyNumFn get_frequency;
  void *dl, *p;
  Wlm *w;

  if (open_library(lib, &dl, &instantiate, &get_frequency, err, errlen) < 0)
    return NULL;
  w = calloc(1, sizeof *w);
  if (!w) {
    dlclose(dl);
    snprintf(err, errlen, "wavemeter: out of memory");
    return NULL;
  }
  w->dl = dl;
  UTL_Strlcpy(w->library, lib, sizeof w->library);
  w->instantiate = instantiate;
  w->get_frequency = get_frequency;
  p = resolve(dl, lib, "GetWavelengthNum", 0, err, errlen);
  memcpy(&w->get_wavelength, &p, sizeof p);
  p = resolve(dl, lib, "GetChannelsCount", 0, err, errlen);
  memcpy(&w->get_channels, &p, sizeof p);
  p = resolve(dl, lib, "GetOperationState", 0, err, errlen);
  memcpy(&w->get_operation, &p, sizeof p);
  p = resolve(dl, lib, "GetExposureNum", 0, err, errlen);
  memcpy(&w->get_exposure, &p, sizeof p);
  p = resolve(dl, lib, "SetExposureNum", 0, err, errlen);
  memcpy(&w->set_exposure, &p, sizeof p);
  p = resolve(dl, lib, "GetExposureMode", 0, err, errlen);
  memcpy(&w->get_exposure_mode, &p, sizeof p);
  p = resolve(dl, lib, "SetExposureMode", 0, err, errlen);
  memcpy(&w->set_exposure_mode, &p, sizeof p);
  p = resolve(dl, lib, "Calibration", 0, err, errlen);
  memcpy(&w->hdr.calibration, &p, sizeof p);

  w->hdr.name = "wlmdata";
  w->hdr.start = wlm_start;
  w->hdr.destroy = wlm_destroy;
  w->hdr.status = wlm_status;
  w->hdr.exposure = wlm_exposure;
  w->fn = fn;
  w->arg = arg;
  w->poll_ms = cfg->poll_ms > 0 ? cfg->poll_ms : 100;
  w->silence_s = (cfg->callback_silence_ms > 0 ? cfg->callback_silence_ms : 2000) / 1000.0;
  w->n_poll = 8;
  if (w->get_channels) {
    int32_t n = w->get_channels(0);

    if (n >= 1 && n <= WLM_CHANNELS)
      w->n_poll = n;
  }
  w->poll_ok = 1;
  /* Callbacks that arrive before the start reach the backends already
     running (the old one, on a reload); this one has none yet. */
  install_callback(w);
  log_info("wavemeter: %s loaded, %d channel(s), callback install returned %ld",
           lib, w->n_poll, w->install_rc);
  return &w->hdr;
}
