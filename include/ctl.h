/* ctl.h - the daemon's control runtime: lasers, devices, cycles.
 *
 * Everything here runs on the event loop thread except the cycle jobs, which
 * run on the device threads of include/mbdev.h.  A wavemeter reading for a
 * laser starts a cycle when no cycle of that laser is in flight; otherwise it
 * waits in a one-reading slot (latest wins).  A cycle job owns a copy of the
 * laser's PID state, does the PID step and the Modbus write on the device
 * thread, and posts its result back to the loop with event_active().
 */
#ifndef WL_CTL_H
#define WL_CTL_H

#include <stddef.h>
#include <stdio.h>

#include "conf.h"
#include "glitch.h"
#include "lsr.h"
#include "pid.h"
#include "relock.h"
#include "scan.h"
#include "tune.h"
#include "wm.h"

struct event_base;
typedef struct CTL_Ctx CTL_Ctx;
typedef struct CTL_Device CTL_Device;
typedef struct CTL_Job CTL_Job;
typedef struct CTL_Gates CTL_Gates;
typedef struct CTL_Laser CTL_Laser;

/* A tune sequence ended (loop thread): rc 0 with the result, or -1 with why
   and the protocol code it deserves (409 interrupted, 503 no readings or no
   answer from the laser). */
typedef void (*CTL_TuneDone)(CTL_Laser *l, int rc, int code, const char *why,
                             const TUN_Result *r, void *arg);

/* Per-laser runtime; fields are read by the command handlers. */
struct CTL_Laser {
  CNF_Laser cfg;               /* config in force (runtime changes applied) */
  CNF_Laser base_cfg;          /* config as loaded, to tell what reload changed */
  int forget_pid;              /* PID history to forget when the job in flight is back */
  int index;                   /* position in the laser list */
  LSR_Machine sm;
  LSR_Ramp ramp;
  double setpoint_thz;         /* effective setpoint (follows a ramp) */

  /* Outputs: last values acknowledged by the device. */
  double piezo_v, current_v;
  double piezo_ref_v;          /* piezo output the current feed-forward is relative to */
  double current_ref_v;        /* current output at piezo_ref_v */
  double ff_ref;               /* the feed-forward ratio of that reference */
  double last_good_v;          /* piezo output when last locked: the relock target */
  double piezo_lo, piezo_hi;   /* runtime limits (inside the configured ones) */
  double current_lo, current_hi;
  PID_State pid;               /* owned by the job while a cycle is in flight */

  int busy;                    /* a cycle job is in flight */
  int have_pending;            /* a reading waits in the slot */
  WM_Reading pending;
  int manual_pending;          /* a manual output waits */
  double manual_piezo, manual_current;
  int manual_has_piezo, manual_has_current;

  /* Latest reading seen on the laser's channel. */
  int have_reading;
  WM_Reading last;
  double last_error_mhz;
  double last_used_t;          /* time stamp of the last reading fed to a cycle */
  GLT_Filter glitch;           /* glitch rejection (glitch.glitches: readings dropped) */
  WM_Reading glitch_held;      /* the reading it holds back */

  CTL_Device *piezo_dev, *current_dev;
  int removed;                 /* dropped by a reload; freed when idle */
  CTL_Job *job;                /* the laser's one cycle job (never two in flight) */
  CTL_Gates *gates;            /* where and within what its actuators may be written,
                                  checked by the device thread at the wire */

  FILE *datalog;
  unsigned long cycles, coalesced, write_errors, readings, bad_readings;
  unsigned long corrections;   /* corrective writes: an output found outside its limits */
  LSR_Rail rail;               /* outputs at a limit (rail.railed: LSR_RAIL_* bits) */

  /* Relock search (DESIGN.md section 8): search.active while searching. */
  RLK_Search search;
  double relock_t0;            /* when relocking was last entered or restarted (UTL_Now) */
  int search_write;            /* the next JOB_RELOCK writes search_piezo/search_current */
  double search_piezo, search_current;
  unsigned long searches, relock_failures;

  /* Hold (DESIGN.md section 8): held while hold_cmd or hold_in. */
  int hold_cmd;                /* held by the hold command */
  double hold_until;           /* UTL_Now() at which that hold ends; 0: at resume */
  int hold_in;                 /* the hold input is active */
  int hold_in_value;           /* its last level read (0/1), -1 not read yet */
  double hold_in_edge_t;       /* UTL_Now() of the device thread's read of the last edge */
  unsigned long holds;         /* holds begun (command or input) */

  /* Claim (DESIGN.md section 8), kept here so it follows the laser through
     reloads: owner "" = none; claim_until is a unix time (state file). */
  char owner[96];
  double claim_until;
  double claim_len_s;          /* the claim's length: a renewal adds it again */
  /* The command layer's cache of this laser's formatted `status` line
     (cmds.c); freed with the laser. */
  void *status_memo;
  /* Setpoint scan (scan.h) and setpoint feed-forward. */
  SCN_Scan scan;
  int ff_have;                 /* ff_sp_mhz valid: the output follows that setpoint */
  double ff_sp_mhz;            /* the setpoint the output was last fed forward to */
  double ff_next_dv, ff_next_mhz;  /* the next feed-forward write (JOB_FF) */

  /* tune (tune.h): the piezo stepped by hand while unlocked. */
  TUN_Tune tune;
  double tune_t0;              /* when it started (UTL_Now) */
  double tune_p0, tune_c0;     /* outputs at the start; the current follows the piezo */
  CTL_TuneDone tune_done;
  void *tune_arg;
};

/* Called on the loop thread when a laser changes state or gets a reading. */
typedef struct {
  void (*state_changed)(CTL_Laser *l, LSR_StateId from, void *arg);
  void (*reading)(CTL_Laser *l, const WM_Reading *r, void *arg);
  void (*dirty)(void *arg);     /* runtime state worth saving changed */
  /* The railed outputs changed (l->rail.railed; was: the bits before). */
  void (*railed)(CTL_Laser *l, int was, void *arg);
  /* The relock search: what is "start", "step" (l->search.step, .pass,
     .to_p, .to_c: the point), "found", "stopped" or "failed". */
  void (*relock)(CTL_Laser *l, const char *what, void *arg);
  void *arg;
} CTL_Hooks;

/* Create the runtime for cfg on base (no I/O until CTL_Start). */
CTL_Ctx *CTL_Create(struct event_base *base, const CNF_Config *cfg, const CTL_Hooks *hooks);

/* Start device threads and open data logs.  0, or -1 with err. */
int CTL_Start(CTL_Ctx *ctx, char *err, size_t errlen);

/* Feed a wavemeter reading (loop thread). */
void CTL_OnReading(CTL_Ctx *ctx, const WM_Reading *r);

/* Periodic work: staleness, ramps, manual writes (loop thread). */
void CTL_Tick(CTL_Ctx *ctx);

/* Apply a newly loaded config bumplessly; changed keys take effect, added
   lasers start, removed lasers stop.  Keeps runtime changes to keys the
   new config does not change.  0, or -1 with err when a new device cannot
   be set up: then nothing has changed. */
int CTL_Reconfigure(CTL_Ctx *ctx, const CNF_Config *cfg, char *err, size_t errlen);

/* Lasers. */
int CTL_LaserCount(const CTL_Ctx *ctx);
CTL_Laser *CTL_Laser_(CTL_Ctx *ctx, int i);
CTL_Laser *CTL_FindLaser(CTL_Ctx *ctx, const char *name);

/* Engage / disengage regulation. */
void CTL_Lock(CTL_Ctx *ctx, CTL_Laser *l);
void CTL_Unlock(CTL_Ctx *ctx, CTL_Laser *l);

/* Change the setpoint now (clamped by the caller to the allowed range);
   stops a ramp.  Ramp to a target at rate MHz/s. */
void CTL_SetSetpoint(CTL_Ctx *ctx, CTL_Laser *l, double thz);
void CTL_Ramp(CTL_Ctx *ctx, CTL_Laser *l, double thz, double rate_mhz_s);

/* Hold by command (on = 1; seconds > 0: ends by itself after that long,
   0: until resumed) or resume (on = 0).  The laser stays holding while its
   hold input is active. */
void CTL_Hold(CTL_Ctx *ctx, CTL_Laser *l, int on, double seconds);

/* Why a laser is held: "hold", "hold_input", or NULL if it is not. */
const char *CTL_HoldReason(const CTL_Laser *l);

/* Set outputs by hand (only while disengaged); values are clamped to the
   limits.  has_* selects which. */
void CTL_SetOutput(CTL_Ctx *ctx, CTL_Laser *l, int has_piezo, double piezo_v,
                   int has_current, double current_v);

/* Restore outputs/state from the state file before CTL_Start. */
void CTL_Restore(CTL_Ctx *ctx, CTL_Laser *l, double setpoint_thz, int engaged,
                 double kp, double ki, double kd, double piezo_v, int has_current,
                 double current_v);

/* Apply changed gains/limits bumplessly after l->cfg or the runtime limits
   were edited; old holds the PID parameters before the edit. */
void CTL_ParamsChanged(CTL_Ctx *ctx, CTL_Laser *l, const PID_Params *old);

/* Start a scan of the setpoint around its present value (scan.h); the
   caller has checked the laser's state.  0, or -1 with the range error in
   err.  CTL_ScanStop ends it with the setpoint back at the centre. */
int CTL_Scan(CTL_Ctx *ctx, CTL_Laser *l, SCN_Wave w, double amplitude_mhz, double period_s,
             long cycles, char *err, size_t errlen);
void CTL_ScanStop(CTL_Ctx *ctx, CTL_Laser *l);

/* Start tuning an unlocked laser (tune.h); done is called once, on the loop
   thread, when it ends.  0, or -1 with the reason in err (409: not off, or
   already tuning; 422: the piezo has no room for the steps). */
int CTL_Tune(CTL_Ctx *ctx, CTL_Laser *l, CTL_TuneDone done, void *arg, char *err,
             size_t errlen, int *code);

/* Number of cycles in flight (for shutdown). */
int CTL_Busy(const CTL_Ctx *ctx);

/* Device status lines: name=... up=0|1 writes=... errors=... reconnects=... */
int CTL_DeviceCount(const CTL_Ctx *ctx);
void CTL_DeviceStatus(const CTL_Ctx *ctx, int i, char *buf, size_t len);

/* Stop device threads (waits for running jobs) and free everything. */
void CTL_Destroy(CTL_Ctx *ctx);

/* The PID parameters of a laser's piezo loop, from its config and runtime limits. */
void CTL_PidParams(const CTL_Laser *l, PID_Params *p);

#endif
