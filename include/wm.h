/* wm.h - wavemeter backends behind one interface.
 *
 * A backend delivers readings to a callback that always runs on the event
 * loop thread (backends with their own threads post to the loop).  Each
 * reading carries a channel, a frequency in THz or a HighFinesse error code
 * (<= 0), the measurement time on the wavemeter's clock, and the time it
 * arrived on our monotonic clock.
 */
#ifndef WL_WM_H
#define WL_WM_H

#include <stddef.h>
#include <stdint.h>
#include "conf.h"

struct event_base;

/* HighFinesse error codes (value <= 0). */
#define WM_ERR_NOVALUE      0
#define WM_ERR_NOSIGNAL    -1
#define WM_ERR_BADSIGNAL   -2
#define WM_ERR_LOWSIGNAL   -3
#define WM_ERR_BIGSIGNAL   -4
#define WM_ERR_WLMMISSING  -5
#define WM_ERR_NOTAVAIL    -6
#define WM_ERR_NOPULSE     -8

typedef struct {
  int channel;          /* 1.. */
  double value;         /* THz if > 0, else an error code */
  double t_s;           /* measurement time (s) on the wavemeter's clock; < 0 unknown
                           (wlmdata polling and stream lines without a time) */
  double rx_s;          /* arrival time (s) on our monotonic clock */
} WM_Reading;

typedef void (*WM_ReadingFn)(const WM_Reading *r, void *arg);

typedef struct WM_Backend WM_Backend;

/* wlmData's Calibration(Type, Unit, Value, Channel): 0 or a negative error.
   It blocks for seconds (the wavemeter stops measuring meanwhile): call it
   on a helper thread, never on the event loop. */
typedef int32_t (*WM_CalibrationCall)(int32_t type, int32_t unit, double value,
                                      int32_t channel);

/* The backend's Calibration(), NULL if it has none (stream; a library
   without the symbol).  The library is never unloaded once started, so the
   pointer stays valid after the backend is destroyed. */
WM_CalibrationCall WM_CalibrationFn(const WM_Backend *wm);

/* Create and start the configured backend on base.  NULL on error with a
   one-line message in err (missing library or symbol, bad address...).
   base must have been created after evthread_use_pthreads(): the wlmdata
   backend wakes it from the library's thread.  Several backends may live at
   once (a reload creates the new one before destroying the old). */
WM_Backend *WM_Create(const CNF_Wavemeter *cfg, struct event_base *base,
                      WM_ReadingFn fn, void *arg, char *err, size_t errlen);

/* Check, without starting anything, what WM_Create would fail on (for
   `wavelockd -t`): stream, that the address resolves; wlmdata, that the
   library loads and has the required symbols (it is unloaded again, none
   of its functions called).  0, or -1 with a one-line message in err. */
int WM_Check(const CNF_Wavemeter *cfg, char *err, size_t errlen);

/* The same in two steps, so the event loop never waits for the library or
   the resolver: WM_Prepare does what may block (wlmdata: load the library,
   resolve its symbols, ask its channel count, install the callback; stream:
   resolve the address) and may run on any thread; WM_Start sets the
   prepared backend going on base, on the loop thread, without blocking.
   A prepared backend that is not started is freed with WM_Destroy (which
   may then call into the library: not on the loop thread). */
WM_Backend *WM_Prepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg,
                       char *err, size_t errlen);
int WM_Start(WM_Backend *wm, struct event_base *base, char *err, size_t errlen);

/* Stop and free (closes connections); on the loop thread, never from
   inside the reading callback.  Never blocks: no reading is delivered after
   it returns, and what needs the library (a polling call in progress, the
   callback's removal) finishes on the backend's own thread. */
void WM_Destroy(WM_Backend *wm);

/* Wait up to timeout_s for destroyed backends to finish on their threads;
   returns how many are still running (0: all done).  For tests and the
   shutdown. */
int WM_Reap(double timeout_s);

/* One line of key=value status: backend, connected, counters.
   stream:  backend=stream address= connected= readings= errors= malformed=
            overlong= reconnects=
   wlmdata: backend=wlmdata library= connected= mode=callback|polling readings=
            errors= callbacks= polls= old_dropped= */
void WM_Status(const WM_Backend *wm, char *buf, size_t len);

/* The wavemeter's exposure (wlmdata only), in two steps so that the event
   loop never waits for the library: WM_ExposureBegin, on the loop thread,
   checks that the backend can and copies into op the library calls it
   needs (the library is never unloaded, so op outlives the backend: a
   reload meanwhile is harmless); WM_ExposureRun then makes the calls on a
   helper thread (they may block on the vendor's TCP link). */
#define WM_EXPOSURE_MIN_MS 1
#define WM_EXPOSURE_MAX_MS 9999

typedef struct WM_ExposureOp WM_ExposureOp;
struct WM_ExposureOp {
  int channel;                 /* 1..17 */
  int set_ms;                  /* > 0: switch auto exposure off, set this time (ms, CCD 1) */
  int set_auto;                /* 1: switch auto exposure on */
  int ms;                      /* answer: exposure time of CCD 1 (ms) */
  int auto_on;                 /* answer: auto exposure 1 on, 0 off, -1 unknown */
  /* Filled by the backend. */
  int (*run)(WM_ExposureOp *op, char *err, size_t errlen);
  void (*calls[4])(void);
};

/* 0, or -1 with err and errno: ENOTSUP the backend (or its library) cannot,
   EINVAL a channel it does not have. */
int WM_ExposureBegin(const WM_Backend *wm, WM_ExposureOp *op, char *err, size_t errlen);

/* Set (if asked) and read back; 0, or -1 with err (the library refused or
   failed). */
int WM_ExposureRun(WM_ExposureOp *op, char *err, size_t errlen);

/* Name of an error code ("no-signal", "underexposed", ...). */
const char *WM_ErrorName(double code);

/* Parse one stream line "<channel> <value> [<time_ms>]" (no newline).
   0 and *r filled (rx_s untouched, t_s < 0 when absent); -1 if malformed. */
int WM_ParseLine(const char *line, size_t len, WM_Reading *r);

/* Convert a vacuum wavelength in nm (or an error code <= 0, passed through)
   to THz. */
double WM_NmToTHz(double nm);

#endif
