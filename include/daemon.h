/* daemon.h - wavelockd's top-level state, shared by main and the commands. */
#ifndef WL_DAEMON_H
#define WL_DAEMON_H

#include "conf.h"
#include "ctl.h"
#include "srv.h"
#include "statefile.h"
#include "wm.h"

struct event_base;
struct event;

struct BG_Ctx;
struct CAL_Ctx;
struct MQT_Client;

/* A state event held back during a reload (see hook_state). */
typedef struct {
  char laser[CNF_NAME_MAX];
  char line[256];
} WLD_HeldEvent;

typedef struct {
  struct event_base *base;
  struct BG_Ctx *bg;            /* blocking work off the loop (bg.h) */
  char cfg_path[CNF_PATH_MAX];
  CNF_Config *cfg;
  CTL_Ctx *ctl;
  SRV_Server *srv;
  WM_Backend *wm;
  /* The addresses the listeners are bound to (from the config at start;
     a reload does not rebind). */
  char bound[CNF_MAX_LISTEN][128];
  int n_bound;

  /* Latest reading per wavemeter channel (index = channel). */
  WM_Reading channels[CNF_MAX_CHANNEL + 1];
  int have_channel[CNF_MAX_CHANNEL + 1];

  /* Calibration against a reference laser (calib.h): NULL without a
     calibration group. */
  struct CAL_Ctx *cal;
  int cal_state, cal_reason;    /* as last logged */
  double cal_logged_s;          /* data-log comment last written (monotonic s) */
  /* wlmdata mode: the wavemeter's own Calibration(). */
  double cal_next_s;            /* next periodic calibration (monotonic s) */
  int cal_running;              /* a Calibration() call in progress */
  unsigned long cal_calls, cal_failures;
  double cal_last_s;            /* the last one ended (monotonic s); < 0 never */
  long cal_last_rc;
  STF_Calibration saved_cal;    /* what was written last */

  /* State file. */
  struct event *save_ev;        /* debounced save after a change */
  int save_scheduled;
  STF_Laser *saved;             /* what was written last (or queued) */
  int n_saved;
  STF_Writer *writer;           /* writes on a thread of its own (NULL: here) */
  unsigned long writes_seen;    /* writer's finished writes, last looked */
  int write_failing;            /* its last write failed (logged once) */

  struct event *tick_ev, *slow_ev, *stop_ev;
  struct event *sig_hup, *sig_term, *sig_int;
  int stopping;
  double stop_deadline;
  unsigned long reloads, reload_failures;
  int reloading;                /* a reload is in progress (it may wait for a helper) */
  int reload_again;             /* a SIGHUP came during it */
  int hold_events;              /* inside CTL_Reconfigure: state events are held */
  WLD_HeldEvent *held;
  int n_held;

  struct MQT_Client *mqtt;      /* the mqtt group's connection (mqtt.h); NULL without one */
} WLD_Daemon;

/* The command table for the text protocol. */
extern const SRV_Command WLD_Commands[];
extern const int WLD_NumCommands;

/* The outcome of a reload: rc 0, or -1 with the reason in err (the old
   config stays).  Runs on the loop thread. */
typedef void (*WLD_ReloadDone)(int rc, const char *err, void *arg);

/* Re-read the config file and apply it.  The loop never waits: a new
   wavemeter backend is prepared on a helper thread.  done (may be NULL: the
   outcome is logged) runs exactly once, possibly before this returns.  A
   reload asked for while one is in progress fails with "a reload is in
   progress" (with done NULL, as from SIGHUP: it runs once this one ends). */
void WLD_Reload(WLD_Daemon *d, WLD_ReloadDone done, void *arg);

/* Write the state file now, in the background (wait = 0: errors show up
   later, in the log) or waiting until it is on disk; 0, or -1 with the error
   in err. */
int WLD_SaveState(WLD_Daemon *d, int wait, char *err, size_t errlen);

/* Write the state file and call done(rc, err, arg) on the loop once it is on
   disk (or failed); the loop does not wait meanwhile.  done runs exactly
   once, possibly before this returns. */
void WLD_SaveAsync(WLD_Daemon *d, WLD_ReloadDone done, void *arg);

/* Ask for a state-file write soon (debounced). */
void WLD_ScheduleSave(WLD_Daemon *d);

/* A raw reading of a channel as the lasers use it: corrected by the
   calibration against the reference laser (not the reference channel). */
double WLD_Corrected(const WLD_Daemon *d, int channel, double value);

/* Whether a correction is applied to channel's readings now. */
int WLD_CalApplies(const WLD_Daemon *d, int channel);

/* Start a wlmdata Calibration() now; done(rc, message, arg) runs on the
   loop when it has finished.  -1 with the reason in err when it cannot start
   (no calibration group, mode correct, one running, reference out of
   tolerance). */
int WLD_Calibrate(WLD_Daemon *d, WLD_ReloadDone done, void *arg, int *code, char *err,
                  size_t errlen);

/* The run-time parameters of get/set (cmds.c), i in 0..WLD_ParamCount()-1,
   for the state file.  WLD_ParamSaved: kept as a set.<key> field for laser l
   (kp, ki and kd have fields of their own; current ones need a current
   actuator).  WLD_ParamFileValue: the config file's value.  WLD_ParamSet:
   as the set command, with the same checks; 0, or -1 with the reason. */
int WLD_ParamCount(void);
const char *WLD_ParamName(int i);
int WLD_ParamSaved(const CTL_Laser *l, int i);
double WLD_ParamValue(const CTL_Laser *l, int i);
double WLD_ParamFileValue(const CTL_Laser *l, int i);
int WLD_ParamFind(const char *name);
int WLD_ParamSet(WLD_Daemon *d, CTL_Laser *l, int i, double v, char *err, size_t errlen);

#endif
