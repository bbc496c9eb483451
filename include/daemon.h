/* daemon.h - wavelockd's top-level state, shared by main (wavelockd.c) and
 * the commands (cmds.c).  The commands reach what only the daemon does
 * through host (host.h); the command table is in cmds.h and the run-time
 * parameters in params.h. */
#ifndef WL_DAEMON_H
#define WL_DAEMON_H

#include "conf.h"
#include "ctl.h"
#include "host.h"
#include "srv.h"
#include "statefile.h"
#include "wm.h"

struct event_base;
struct event;

struct BG_Ctx;
struct CAL_Ctx;
struct HTP_Server;
struct MQT_Client;

/* A state event held back during a reload (see hook_state). */
typedef struct {
  char laser[CNF_NAME_MAX];
  char line[256];
} WLD_HeldEvent;

typedef struct WLD_Daemon {
  const WLD_Host *host;         /* reload, save, calibrate: for the commands */
  struct event_base *base;
  struct BG_Ctx *bg;            /* blocking work off the loop (bg.h) */
  char cfg_path[CNF_PATH_MAX];
  CNF_Config *cfg;
  CTL_Ctx *ctl;
  SRV_Server *srv;
  struct HTP_Server *http;      /* the http group (http.h); NULL: off */
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

#endif
