/* wm_int.h - what the wavemeter backends share with wm.c (internal). */
#ifndef WL_WM_INT_H
#define WL_WM_INT_H

#include "wm.h"

/* Every backend starts with this header; wm.c dispatches through it. */
struct WM_Backend {
  const char *name;
  int (*start)(WM_Backend *wm, struct event_base *base, char *err, size_t errlen);
  void (*destroy)(WM_Backend *wm);
  void (*status)(const WM_Backend *wm, char *buf, size_t len);
  /* WM_ExposureBegin; NULL: the backend cannot. */
  int (*exposure)(const WM_Backend *wm, WM_ExposureOp *op, char *err, size_t errlen);
  WM_CalibrationCall calibration;   /* wlmdata: the library's Calibration(), or NULL */
};

/* Backend constructors: same contract as WM_Prepare. */
WM_Backend *WM_StreamPrepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg,
                             char *err, size_t errlen);
WM_Backend *WM_WlmDataPrepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg,
                              char *err, size_t errlen);

/* WM_Reap for the wlmdata backend. */
int WM_WlmDataReap(double timeout_s);

/* Backend checks for `wavelockd -t`: same contract as WM_Check. */
int WM_StreamCheck(const CNF_Wavemeter *cfg, char *err, size_t errlen);
int WM_WlmDataCheck(const CNF_Wavemeter *cfg, char *err, size_t errlen);

/* Channel (1..17) of a CallbackProcEx wavelength mode, 0 if none. */
int WM_WlmModeChannel(int mode);

#endif
