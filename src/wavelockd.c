/* wavelockd.c - the wavelock daemon: start-up, signals, reload, state file.
 *
 * Modules start in dependency order (config, logging, event base, control
 * runtime and its device threads, state restore, protocol server, wavemeter)
 * and stop in reverse.  The event loop never blocks on hardware: device I/O
 * runs on the device threads of the control runtime.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bg.h"
#include "calib.h"
#include "cmds.h"
#include "conf.h"
#include "ctl.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "params.h"
#include "mqtt.h"
#include "srv.h"
#include "statefile.h"
#include "util.h"
#include "wm.h"
#include "prio.h"

#define EXIT_CONFIG 78            /* EX_CONFIG */
#define STOP_GRACE_S 1.5          /* longest wait for running cycles at shutdown */
#define OUTPUT_SAVE_INTERVAL_S 60 /* outputs alone are saved at most this often */
#define CAL_DATALOG_S 10.0        /* calibration comment lines in the data logs */
#define CAL_TYPE_OTHER 2          /* wlmData Calibration(): cOther (a reference laser) */
#define CAL_UNIT_FREQUENCY 2      /* cReturnFrequency: Value in THz */
#define CAL_READING_BUSY (-6.0)   /* readings while calibrating: "not available" */

static WLD_Daemon daemon_state;

/* The daemon's own operations; the commands reach them through
   daemon_host (host.h).

   Re-read the config file and apply it.  The loop never waits: a new
   wavemeter backend is prepared on a helper thread.  done (may be NULL: the
   outcome is logged) runs exactly once, possibly before this returns.  A
   reload asked for while one is in progress fails with "a reload is in
   progress" (with done NULL, as from SIGHUP: it runs once this one ends). */
static void WLD_Reload(WLD_Daemon *d, WLD_Done done, void *arg);
/* Write the state file now, in the background (wait = 0: errors show up
   later, in the log) or waiting until it is on disk; 0, or -1 with the error
   in err. */
static int WLD_SaveState(WLD_Daemon *d, int wait, char *err, size_t errlen);
/* Write the state file and call done(rc, err, arg) on the loop once it is on
   disk (or failed); the loop does not wait meanwhile.  done runs exactly
   once, possibly before this returns. */
static void WLD_SaveAsync(WLD_Daemon *d, WLD_Done done, void *arg);
/* Ask for a state-file write soon (debounced). */
static void WLD_ScheduleSave(WLD_Daemon *d);
/* A raw reading of a channel as the lasers use it: corrected by the
   calibration against the reference laser (not the reference channel). */
static double WLD_Corrected(const WLD_Daemon *d, int channel, double value);
/* Whether a correction is applied to channel's readings now. */
static int WLD_CalApplies(const WLD_Daemon *d, int channel);
/* Start a wlmdata Calibration() now; done(rc, message, arg) runs on the
   loop when it has finished.  -1 with the reason in err when it cannot start
   (no calibration group, mode correct, one running, reference out of
   tolerance). */
static int WLD_Calibrate(WLD_Daemon *d, WLD_Done done, void *arg, int *code, char *err,
                         size_t errlen);

static const WLD_Host daemon_host = {
  .reload = WLD_Reload,
  .save = WLD_SaveAsync,
  .schedule_save = WLD_ScheduleSave,
  .calibrate = WLD_Calibrate,
  .cal_applies = WLD_CalApplies,
};


/* The calibration record of the state file: the correction and when the
   reference last updated it. */
static void
collect_cal(const WLD_Daemon *d, STF_Calibration *c)
{
  CAL_Report r;

  memset(c, 0, sizeof *c);
  if (!d->cal || !CAL_Applies(d->cal))
    return;
  CAL_GetReport(d->cal, UTL_Now(), &r);
  c->present = 1;
  c->ref_thz = d->cfg->calibration.thz;
  c->eps = r.eps;
  c->unix_s = UTL_WallNow() - (r.age_s > 0.0 ? r.age_s : 0.0);
}

/* ---- state file ------------------------------------------------------------ */

static int
collect_state(WLD_Daemon *d, STF_Laser **out)
{
  int n = CTL_LaserCount(d->ctl);
  STF_Laser *s = calloc((size_t)n + 1, sizeof *s);

  if (!s)
    return -1;
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);
    UTL_Strlcpy(s[i].name, l->cfg.name, sizeof s[i].name);
    /* A ramp is saved as the point it has reached and where it goes: a
       restart resumes it rather than jumping to its target.  A scan is
       saved as its centre: a restart does not resume it. */
    s[i].ramp = l->ramp.active;
    s[i].ramp_to_thz = l->ramp.target_thz;
    s[i].ramp_mhz_s = l->ramp.rate_mhz_s;
    s[i].engaged = l->sm.engaged;
    s[i].piezo_v = l->piezo_v;
    s[i].has_current = l->current_dev != NULL;
    s[i].current_v = l->current_v;
    /* Every run-time parameter with the config file's value: one the file
       changes while the daemon is down comes from the file at the start. */
    STF_AddParam(&s[i], STF_KEY_SETPOINT, l->scan.active ? l->scan.centre_thz : l->setpoint_thz,
                 1, l->base_cfg.setpoint_thz);
    for (int k = 0; k < PRM_Count(); k++)
      if (PRM_Applies(l, k))
        STF_AddParam(&s[i], PRM_Name(k), PRM_Value(l, k), 1, PRM_FileValue(l, k));
    if (l->owner[0]) {          /* its claim (DESIGN.md section 8) */
      UTL_Strlcpy(s[i].owner, l->owner, sizeof s[i].owner);
      s[i].claim_expires = l->claim_until;
      s[i].claim_len_s = l->claim_len_s;
    }
  }
  *out = s;
  return n;
}

static int
WLD_SaveState(WLD_Daemon *d, int wait, char *err, size_t errlen)
{
  STF_Laser *s, *copy = NULL;
  STF_Calibration cal;
  int n, rc;

  if (!d->cfg->state_file[0])
    return 0;
  collect_cal(d, &cal);
  n = collect_state(d, &s);
  if (n >= 0 && d->writer) {
    copy = malloc(((size_t)n + 1) * sizeof *copy);
    if (copy)
      memcpy(copy, s, (size_t)n * sizeof *s);
  }
  if (n < 0 || (d->writer && !copy)) {
    free(n < 0 ? NULL : s);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (d->writer) {
    /* On the writer's thread: the loop does not wait for the disk, except
       when asked to (the save command, the shutdown). */
    rc = STF_WriterSubmitCal(d->writer, d->cfg->state_file, copy, n, &cal);
    if (rc != 0)
      snprintf(err, errlen, "the state writer is stopping");
    else if (wait)
      rc = STF_WriterFlush(d->writer, err, errlen);
  } else {
    rc = STF_SaveCal(d->cfg->state_file, s, n, &cal, err, errlen);
  }
  if (rc != 0) {
    free(s);
    return -1;
  }
  free(d->saved);
  d->saved = s;
  d->n_saved = n;
  d->saved_cal = cal;
  return 0;
}

typedef struct {
  WLD_Daemon *d;
  WLD_Done done;
  void *arg;
  int rc;
  char err[512];
} SaveWait;

/* Helper thread: wait for the writer to finish what was submitted. */
static void
save_wait(void *arg)
{
  SaveWait *w = arg;

  w->rc = STF_WriterFlush(w->d->writer, w->err, sizeof w->err);
}

static void
save_waited(void *arg)
{
  SaveWait *w = arg;

  w->done(w->rc, w->err, w->arg);
  free(w);
}

static void
WLD_SaveAsync(WLD_Daemon *d, WLD_Done done, void *arg)
{
  SaveWait *w;
  char err[512];

  if (WLD_SaveState(d, 0, err, sizeof err) != 0) {
    done(-1, err, arg);
    return;
  }
  w = calloc(1, sizeof *w);
  if (w && d->writer && d->bg) {
    w->d = d;
    w->done = done;
    w->arg = arg;
    if (BG_Run(d->bg, save_wait, save_waited, w) == 0)
      return;
  }
  free(w);
  /* No helper (or no writer: then it is written already): wait here. */
  if (d->writer && STF_WriterFlush(d->writer, err, sizeof err) != 0) {
    done(-1, err, arg);
    return;
  }
  done(0, "", arg);
}

static void
save_now(WLD_Daemon *d, const char *why, int wait)
{
  char err[512];

  if (WLD_SaveState(d, wait, err, sizeof err) != 0)
    log_error("cannot write state file (%s): %s", why, err);
  else
    log_debug("state file %s (%s)", wait ? "written" : "queued", why);
}

/* Report the background writer's failures once (and its recovery), and
   have a failed state written again at the next chance. */
static void
check_writer(WLD_Daemon *d)
{
  char err[512];
  unsigned long writes;

  if (!d->writer)
    return;
  if (STF_WriterStatus(d->writer, err, sizeof err, &writes) != 0) {
    if (writes != d->writes_seen) {
      if (!d->write_failing)
        log_error("cannot write state file: %s (retrying)", err);
      d->write_failing = 1;
      free(d->saved);
      d->saved = NULL;
      d->n_saved = -1;   /* differs from anything: the next check writes */
    }
  } else if (d->write_failing) {
    log_info("state file written again");
    d->write_failing = 0;
  }
  d->writes_seen = writes;
}

static void
save_cb(evutil_socket_t fd, short what, void *arg)
{
  WLD_Daemon *d = arg;

  d->save_scheduled = 0;
  save_now(d, "change", 0);
}

static void
WLD_ScheduleSave(WLD_Daemon *d)
{
  struct timeval one_s = { 1, 0 };

  if (d->save_scheduled || !d->cfg->state_file[0] || d->stopping)
    return;
  d->save_scheduled = 1;
  evtimer_add(d->save_ev, &one_s);
}

/* The one rule for every saved run-time parameter (the setpoint, the gains
   and the others of get/set): the saved value wins unless the config file's
   value differs from the one it had at the save (the file was edited while
   the daemon was down; then the file wins).  Format 1 files without the
   file's values for the setpoint and gains: the saved value wins. */
static int
file_changed(const STF_Param *p, double file_now)
{
  return p->has_file && p->file != file_now;
}

/* The setpoint to restore: the saved one, or the config's if the file
   changed it since the save (a ramp then stops). */
static double
restore_setpoint(STF_Laser *s, const CTL_Laser *l)
{
  const STF_Param *p = STF_FindParam(s, STF_KEY_SETPOINT);

  if (!p)
    return l->setpoint_thz;
  if (file_changed(p, l->base_cfg.setpoint_thz)) {
    log_info("state file: laser %s: setpoint %.9f THz from the config, which changed it "
             "since the state was saved", s->name, l->base_cfg.setpoint_thz);
    s->ramp = 0;
    return l->base_cfg.setpoint_thz;
  }
  return p->value;
}

static const char *
limit_partner(const char *key)
{
  static const char *const pairs[][2] = {
    { "piezo_min_v", "piezo_max_v" }, { "current_min_v", "current_max_v" },
  };

  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    if (strcmp(key, pairs[i][0]) == 0)
      return pairs[i][1];
    if (strcmp(key, pairs[i][1]) == 0)
      return pairs[i][0];
  }
  return NULL;
}

/* The saved run-time parameters of get/set, with the checks of the set
   command; one that the config file changed since the save comes from the
   file (file_changed).  Two rounds: a value may be refused only until
   another one is in (a window wider than the file's capture range, a limit
   past the other one). */
static void
restore_params(WLD_Daemon *d, CTL_Laser *l, const STF_Laser *s)
{
  int done[STF_MAX_PARAMS] = { 0 }, edited[STF_MAX_PARAMS] = { 0 };
  char err[160];

  for (int k = 0; k < s->n_params; k++) {
    int i = PRM_Find(s->params[k].key);

    /* The setpoint (restore_setpoint), a parameter of another version, or
       one that needs a current actuator the laser does not have now. */
    if (i < 0 || !PRM_Applies(l, i))
      done[k] = 1;
    else if (file_changed(&s->params[k], PRM_FileValue(l, i)))
      done[k] = edited[k] = 1;
    else if (s->params[k].value == PRM_Value(l, i))
      done[k] = 1;
  }
  /* Output limits go in pairs, as on a reload: the file changing either
     configured limit resets both run-time ones. */
  for (int k = 0; k < s->n_params; k++) {
    const char *partner = limit_partner(s->params[k].key);

    for (int m = 0; partner && m < s->n_params; m++)
      if (edited[m] && strcmp(s->params[m].key, partner) == 0)
        done[k] = edited[k] = 1;
    if (edited[k])
      log_info("state file: laser %s: %s from the config, which changed it since the state "
               "was saved", l->cfg.name, s->params[k].key);
  }
  for (int round = 0; round < 2; round++) {
    for (int k = 0; k < s->n_params; k++) {
      if (done[k])
        continue;
      int i = PRM_Find(s->params[k].key);
      if (PRM_Set(d->ctl, l, i, s->params[k].value, err, sizeof err) == 0) {
        log_info("state file: laser %s: %s=%g", l->cfg.name, s->params[k].key,
                 s->params[k].value);
        done[k] = 1;
      } else if (round == 1) {
        log_warn("state file: laser %s: %s=%g not restored: %s", l->cfg.name,
                 s->params[k].key, s->params[k].value, err);
      }
    }
  }
}

static void
restore_state(WLD_Daemon *d)
{
  STF_Laser *s = NULL;
  STF_Calibration cal = { 0 };
  char err[512];
  int n;

  if (!d->cfg->state_file[0])
    return;
  n = STF_RemoveStaleTemps(d->cfg->state_file);
  if (n > 0)
    log_info("removed %d temporary file%s left by an interrupted save of %s", n,
             n == 1 ? "" : "s", d->cfg->state_file);
  n = STF_LoadCal(d->cfg->state_file, &s, &cal, err, sizeof err);
  if (n < 0) {
    log_warn("state file ignored: %s", err);
    return;
  }
  if (cal.present && d->cal && cal.ref_thz == d->cfg->calibration.thz &&
      d->cfg->calibration.mode == CNF_CAL_CORRECT) {
    double age = UTL_WallNow() - cal.unix_s;

    CAL_Restore(d->cal, cal.eps, age, UTL_Now());
    log_info("state file: calibration correction %.3f ppb (%.3f MHz at the reference), "
             "last updated %.0f s ago", cal.eps * 1e9, cal.eps * cal.ref_thz * 1e6, age);
  } else if (cal.present) {
    log_info("state file: calibration correction not restored (no calibration in mode "
             "correct for a reference at %.9f THz now)", cal.ref_thz);
  }
  for (int i = 0; i < n; i++) {
    CTL_Laser *l = CTL_FindLaser(d->ctl, s[i].name);
    if (!l) {
      log_info("state file: laser %s is no longer configured", s[i].name);
      continue;
    }
    double setpoint = restore_setpoint(&s[i], l);

    restore_params(d, l, &s[i]);
    CTL_Restore(d->ctl, l, setpoint, s[i].engaged, l->cfg.kp, l->cfg.ki, l->cfg.kd,
                s[i].piezo_v, s[i].has_current, s[i].current_v);
    if (s[i].owner[0] && s[i].claim_expires > UTL_WallNow()) {
      UTL_Strlcpy(l->owner, s[i].owner, sizeof l->owner);
      l->claim_until = s[i].claim_expires;
      l->claim_len_s = s[i].claim_len_s;
      log_info("state file: laser %s stays claimed by %s for %.0f s", l->cfg.name, l->owner,
               l->claim_until - UTL_WallNow());
    }
    if (s[i].ramp && s[i].ramp_to_thz >= l->cfg.min_thz && s[i].ramp_to_thz <= l->cfg.max_thz &&
        s[i].ramp_mhz_s <= 1e9) {
      CTL_Ramp(d->ctl, l, s[i].ramp_to_thz, s[i].ramp_mhz_s);
      log_info("state file: laser %s resumes its ramp to %.9f THz at %g MHz/s", l->cfg.name,
               s[i].ramp_to_thz, s[i].ramp_mhz_s);
    }
  }
  if (n > 0)
    log_info("restored %d laser%s from %s", n, n == 1 ? "" : "s", d->cfg->state_file);
  free(s);
}

/* ---- control runtime hooks ------------------------------------------------- */


/* ---- MQTT (mqtt.h): a laser's retained state, published when it changes -- */

static void
mqtt_state(WLD_Daemon *d, const CTL_Laser *l)
{
  MQT_LaserState st;

  if (!d->mqtt)
    return;
  memset(&st, 0, sizeof st);
  UTL_Strlcpy(st.name, l->cfg.name, sizeof st.name);
  st.state = LSR_StateName(l->sm.state);
  st.setpoint_thz = l->setpoint_thz;
  st.min_thz = l->cfg.min_thz;
  st.max_thz = l->cfg.max_thz;
  st.piezo_min_v = l->cfg.piezo.min_v;
  st.piezo_max_v = l->cfg.piezo.max_v;
  st.has_current = l->current_dev != NULL;
  if (st.has_current) {
    st.current_min_v = l->cfg.current.min_v;
    st.current_max_v = l->cfg.current.max_v;
  }
  st.autolock = l->cfg.autolock;
  LSR_RailName(l->rail.railed, st.railed, sizeof st.railed);
  if (l->owner[0] && l->claim_until > UTL_WallNow())
    UTL_Strlcpy(st.owner, l->owner, sizeof st.owner);
  MQT_SetState(d->mqtt, &st);
}

static void
mqtt_states(WLD_Daemon *d)
{
  for (int i = 0; d->mqtt && i < CTL_LaserCount(d->ctl); i++)
    mqtt_state(d, CTL_Laser_(d->ctl, i));
}

/* After a reload: a new, changed or removed mqtt group, and removed lasers. */
static void
mqtt_reconfigure(WLD_Daemon *d, const CNF_Config *old)
{
  const CNF_Mqtt *nm = &d->cfg->mqtt;
  char err[256];

  if (d->mqtt && !MQT_SameConnection(&old->mqtt, nm)) {
    /* The same instance on the same broker: the new connection says
       online; another one: this one says offline. */
    int moved = !nm->present || strcmp(old->mqtt.instance, nm->instance) != 0 ||
                strcmp(old->mqtt.url, nm->url) != 0;

    MQT_Destroy(d->mqtt, moved, 0.0);
    d->mqtt = NULL;
    log_info("mqtt: %s", nm->present ? "connection settings changed: reconnecting"
                                     : "mqtt group removed: disconnected");
  }
  if (!d->mqtt && nm->present) {
    d->mqtt = MQT_Create(d->base, nm, d->srv, err, sizeof err);
    if (!d->mqtt)
      log_error("%s", err);
  } else if (d->mqtt) {
    for (int i = 0; i < old->n_lasers; i++)
      if (CNF_FindLaser(d->cfg, old->lasers[i].name) < 0)
        MQT_RemoveLaser(d->mqtt, old->lasers[i].name);
    MQT_ResetLasers(d->mqtt);
  }
  mqtt_states(d);
}

static void
hook_state(CTL_Laser *l, LSR_StateId from, void *arg)
{
  WLD_Daemon *d = arg;
  char line[256];

  log_info("laser %s: %s -> %s", l->cfg.name, LSR_StateName(from), LSR_StateName(l->sm.state));
  HTP_OnState(d->http, l, (int)from, UTL_WallNow());
  if (!d->hold_events)
    mqtt_state(d, l);
  if (!d->srv)
    return;
  snprintf(line, sizeof line, "state laser=%s state=%s from=%s t=%.3f%s%s", l->cfg.name,
           LSR_StateName(l->sm.state), LSR_StateName(from), UTL_WallNow(),
           l->sm.state == LSR_HOLDING && CTL_HoldReason(l) ? " reason=" : "",
           l->sm.state == LSR_HOLDING && CTL_HoldReason(l) ? CTL_HoldReason(l) : "");
  if (d->hold_events) {
    /* Inside a reload: laser indices are the new ones, subscriptions still
       the old ones until they are remapped; published after that. */
    WLD_HeldEvent *h = realloc(d->held, (size_t)(d->n_held + 1) * sizeof *h);

    if (h) {
      d->held = h;
      UTL_Strlcpy(h[d->n_held].laser, l->cfg.name, sizeof h[d->n_held].laser);
      UTL_Strlcpy(h[d->n_held].line, line, sizeof h[d->n_held].line);
      d->n_held++;
    }
    return;
  }
  SRV_Publish(d->srv, l->index, "%s", line);
}

/* Publish the events held during a reload, by the lasers' indices now. */
static void
flush_held_events(WLD_Daemon *d)
{
  for (int i = 0; i < d->n_held; i++) {
    CTL_Laser *l = CTL_FindLaser(d->ctl, d->held[i].laser);

    SRV_Publish(d->srv, l ? l->index : -1, "%s", d->held[i].line);
  }
  free(d->held);
  d->held = NULL;
  d->n_held = 0;
}

static void
hook_reading(CTL_Laser *l, const WM_Reading *r, void *arg)
{
  WLD_Daemon *d = arg;
  char current[64] = "";
  double now = UTL_WallNow();
  /* One line per reading for every subscriber (SRV_Publish formats once),
     its numbers by UTL_Fixed rather than printf's %.Nf. */
  char f_t[40], f_thz[40], f_raw[40], f_err[40], f_pz[40], f_cur[40];

  HTP_OnReading(d->http, l, now);
  if (d->mqtt) {
    MQT_Reading m;

    m.t = now;
    m.valid = r->value > 0.0;
    m.freq_thz = r->value;
    m.error_mhz = l->last_error_mhz;
    m.wm_status = m.valid ? NULL : WM_ErrorName(r->value);
    m.piezo_v = l->piezo_v;
    m.has_current = l->current_dev != NULL;
    m.current_v = l->current_v;
    m.state = LSR_StateName(l->sm.state);
    MQT_PublishReading(d->mqtt, l->index, l->cfg.name, &m);
  }
  if (!d->srv || SRV_SubscriberCount(d->srv) == 0)
    return;
  if (l->current_dev) {
    UTL_Fixed(f_cur, sizeof f_cur, l->current_v, 6);
    snprintf(current, sizeof current, " current_v=%s", f_cur);
  }
  UTL_Fixed(f_t, sizeof f_t, now, 3);
  UTL_Fixed(f_pz, sizeof f_pz, l->piezo_v, 6);
  if (r->value > 0.0) {
    UTL_Fixed(f_thz, sizeof f_thz, r->value, 9);
    UTL_Fixed(f_err, sizeof f_err, l->last_error_mhz, 4);
  }
  if (r->value > 0.0 && WLD_CalApplies(d, l->cfg.channel)) {
    UTL_Fixed(f_raw, sizeof f_raw, d->channels[l->cfg.channel].value, 9);
    SRV_Publish(d->srv, l->index,
                "reading laser=%s t=%s freq_thz=%s raw_freq_thz=%s error_mhz=%s "
                "piezo_v=%s%s state=%s",
                l->cfg.name, f_t, f_thz, f_raw, f_err, f_pz, current, LSR_StateName(l->sm.state));
  } else if (r->value > 0.0) {
    SRV_Publish(d->srv, l->index,
                "reading laser=%s t=%s freq_thz=%s error_mhz=%s piezo_v=%s%s state=%s",
                l->cfg.name, f_t, f_thz, f_err, f_pz, current, LSR_StateName(l->sm.state));
  } else {
    SRV_Publish(d->srv, l->index,
                "reading laser=%s t=%s freq_thz=none wm_status=%s piezo_v=%s%s state=%s",
                l->cfg.name, f_t, WM_ErrorName(r->value), f_pz, current,
                LSR_StateName(l->sm.state));
  }
}

/* An output reached a limit, or left it: a railed laser is about to lose
   lock, and one that never locks usually has its polarity wrong. */
static void
hook_railed(CTL_Laser *l, int was, void *arg)
{
  WLD_Daemon *d = arg;
  char now_s[LSR_RAIL_NAME_MAX], was_s[LSR_RAIL_NAME_MAX];

  LSR_RailName(l->rail.railed, now_s, sizeof now_s);
  LSR_RailName(was, was_s, sizeof was_s);
  if (l->rail.railed)
    log_warn("laser %s: railed=%s (was %s): output at its limit, state %s, error %.1f MHz",
             l->cfg.name, now_s, was_s, LSR_StateName(l->sm.state), l->last_error_mhz);
  else
    log_info("laser %s: railed=none (was %s)", l->cfg.name, was_s);
  mqtt_state(d, l);
  if (d->srv)
    SRV_Publish(d->srv, l->index, "warning laser=%s railed=%s t=%.3f", l->cfg.name, now_s,
                UTL_WallNow());
}

/* The relock search: its start, each point, and how it ended. */
static void
hook_relock(CTL_Laser *l, const char *what, void *arg)
{
  WLD_Daemon *d = arg;
  char current[48] = "";

  if (!d->srv)
    return;
  if (strcmp(what, "step") == 0) {
    if (l->current_dev)
      snprintf(current, sizeof current, " current_v=%.6f", l->search.to_c);
    SRV_Publish(d->srv, l->index, "relock laser=%s step=%d pass=%d piezo_v=%.6f%s t=%.3f",
                l->cfg.name, l->search.step, l->search.pass, l->search.to_p, current,
                UTL_WallNow());
    return;
  }
  /* the outputs last written by the search (failed: back at the last good) */
  if (l->current_dev)
    snprintf(current, sizeof current, " current_v=%.6f", l->search.at_c);
  SRV_Publish(d->srv, l->index, "relock laser=%s result=%s step=%d pass=%d piezo_v=%.6f%s t=%.3f",
              l->cfg.name, what, l->search.step, l->search.pass, l->search.at_p, current,
              UTL_WallNow());
}

static void
hook_dirty(void *arg)
{
  WLD_ScheduleSave(arg);
  mqtt_states(arg);
}

/* ---- calibration against the reference laser ------------------------------ */

static int
WLD_CalApplies(const WLD_Daemon *d, int channel)
{
  return d->cal && channel != d->cfg->calibration.channel && CAL_Applies(d->cal);
}

static double
WLD_Corrected(const WLD_Daemon *d, int channel, double value)
{
  return WLD_CalApplies(d, channel) ? CAL_Correct(d->cal, value) : value;
}

/* A comment line in every data log: the correction behind its readings. */
static void
cal_datalog(WLD_Daemon *d, const CAL_Report *r, double now)
{
  d->cal_logged_s = now;
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    CTL_Laser *l = CTL_Laser_(d->ctl, i);

    if (l->datalog)
      fprintf(l->datalog, "# calibration unix_time_s=%.3f state=%s reason=%s ppb=%.4f "
              "offset_mhz=%.4f applied=%d\n", UTL_WallNow(), CAL_StateName(r->state),
              CAL_ReasonName(r->reason), r->ppb, r->offset_mhz,
              l->cfg.channel != d->cfg->calibration.channel && r->applies);
  }
}

/* Log the calibration's state changes; data-log lines now and then. */
static void
cal_note(WLD_Daemon *d, double now)
{
  CAL_Report r;

  CAL_GetReport(d->cal, now, &r);
  if ((int)r.state != d->cal_state || (int)r.reason != d->cal_reason) {
    if (r.state == CAL_HOLD && r.reason != CAL_R_WAITING && r.reason != CAL_R_CALIBRATING)
      log_warn("calibration: hold (%s): reference on channel %d at %+.3f MHz; correction "
               "frozen at %.3f ppb", CAL_ReasonName(r.reason), d->cfg->calibration.channel,
               isnan(r.measured_mhz) ? 0.0 : r.measured_mhz, r.ppb);
    else
      log_info("calibration: %s%s%s: %.3f ppb (%.3f MHz at the reference)",
               CAL_StateName(r.state), r.reason ? ", " : "",
               r.reason ? CAL_ReasonName(r.reason) : "", r.ppb, r.offset_mhz);
    d->cal_state = (int)r.state;
    d->cal_reason = (int)r.reason;
    cal_datalog(d, &r, now);
  } else if (now - d->cal_logged_s >= CAL_DATALOG_S) {
    cal_datalog(d, &r, now);
  }
}

static CAL_Params
cal_params(const CNF_Config *cfg)
{
  const CNF_Calibration *c = &cfg->calibration;
  CAL_Params p = {
    .mode = c->mode == CNF_CAL_WLMDATA ? CAL_MODE_WLMDATA : CAL_MODE_CORRECT,
    .ref_thz = c->thz, .tau_s = c->tau_s, .max_rate_mhz_per_min = c->max_rate_mhz_per_min,
    .tolerance_mhz = c->tolerance_mhz, .stale_s = cfg->wavemeter.stale_ms / 1000.0,
  };
  return p;
}

/* At start and after a reload: the calibration of d->cfg (old: the one
   before, NULL at start). */
static void
cal_setup(WLD_Daemon *d, const CNF_Config *old)
{
  const CNF_Calibration *c = &d->cfg->calibration;
  CAL_Params p;

  if (!c->present) {
    if (d->cal) {
      log_warn("calibration removed: every channel is used raw from now on");
      CAL_Destroy(d->cal);
      d->cal = NULL;
    }
    return;
  }
  p = cal_params(d->cfg);
  if (d->cal) {
    CAL_Configure(d->cal, &p);
  } else {
    d->cal = CAL_Create(&p);
    if (!d->cal) {
      log_error("calibration: out of memory: readings are used raw");
      return;
    }
    d->cal_state = d->cal_reason = -1;
  }
  if (!old || !old->calibration.present || old->calibration.mode != c->mode ||
      old->calibration.period_s != c->period_s)
    d->cal_next_s = UTL_Now() + c->period_s;
  log_info("calibration: mode %s, reference on channel %d at %.9f THz, tau %g s, "
           "max rate %g MHz/min, tolerance %g MHz, period %g s",
           c->mode == CNF_CAL_WLMDATA ? "wlmdata" : "correct", c->channel, c->thz, c->tau_s,
           c->max_rate_mhz_per_min, c->tolerance_mhz, c->period_s);
}

static void
on_reading(const WM_Reading *r, void *arg)
{
  WLD_Daemon *d = arg;
  WM_Reading used = *r;

  if (r->channel >= 1 && r->channel <= CNF_MAX_CHANNEL) {
    d->channels[r->channel] = *r;
    d->have_channel[r->channel] = 1;
  }
  if (d->cal) {
    double now = UTL_Now();

    if (r->channel == d->cfg->calibration.channel)
      CAL_OnReference(d->cal, d->cal_running ? CAL_READING_BUSY : r->value, now);
    else
      CAL_Check(d->cal, now);
    cal_note(d, now);
    if (d->cal_running)
      used.value = CAL_READING_BUSY;    /* the lasers hold while it calibrates */
    else
      used.value = WLD_Corrected(d, r->channel, r->value);
  }
  if (!d->stopping)
    CTL_OnReading(d->ctl, &used);
}

/* wlmdata mode: Calibration() on a helper thread (it takes seconds). */
typedef struct {
  WLD_Daemon *d;
  WM_CalibrationCall fn;
  double thz;
  int channel;
  long rc;
  double t0;
  WLD_Done done;
  void *arg;
} CalJob;

static void
cal_job_run(void *arg)
{
  CalJob *j = arg;

  j->rc = j->fn(CAL_TYPE_OTHER, CAL_UNIT_FREQUENCY, j->thz, j->channel);
}

static void
cal_job_done(void *arg)
{
  CalJob *j = arg;
  WLD_Daemon *d = j->d;
  double now = UTL_Now();
  char msg[160];

  d->cal_running = 0;
  d->cal_last_s = now;
  d->cal_last_rc = j->rc;
  if (d->cal)
    CAL_SetCalibrating(d->cal, 0, now);
  if (j->rc == 0) {
    snprintf(msg, sizeof msg, "calibrated on channel %d at %.9f THz in %.1f s", j->channel,
             j->thz, now - j->t0);
    log_info("calibration: %s", msg);
  } else {
    d->cal_failures++;
    snprintf(msg, sizeof msg, "Calibration() on channel %d at %.9f THz failed: error %ld",
             j->channel, j->thz, j->rc);
    log_error("calibration: %s", msg);
  }
  if (j->done)
    j->done(j->rc == 0 ? 0 : -1, msg, j->arg);
  free(j);
}

static int
WLD_Calibrate(WLD_Daemon *d, WLD_Done done, void *arg, int *code, char *err,
              size_t errlen)
{
  const CNF_Calibration *c = &d->cfg->calibration;
  CAL_Report r;
  CalJob *j;
  double now = UTL_Now();

  *code = 409;
  if (!c->present || !d->cal) {
    UTL_SetErr(err, errlen, "no calibration group in the config");
    return -1;
  }
  if (c->mode != CNF_CAL_WLMDATA) {
    UTL_SetErr(err, errlen, "mode correct follows the reference all the time; calibrate "
               "is for mode wlmdata");
    return -1;
  }
  if (d->cal_running) {
    UTL_SetErr(err, errlen, "a calibration is in progress");
    return -1;
  }
  CAL_Check(d->cal, now);
  CAL_GetReport(d->cal, now, &r);
  if (r.state != CAL_TRACKING) {
    UTL_SetErr(err, errlen, "the reference on channel %d is not usable (%s)", c->channel,
               CAL_ReasonName(r.reason));
    return -1;
  }
  j = calloc(1, sizeof *j);
  if (!j || !d->bg) {
    *code = 500;
    UTL_SetErr(err, errlen, "%s", !j ? "out of memory" : "no helper thread to run it on");
    free(j);
    return -1;
  }
  if (!d->wm || !(j->fn = WM_CalibrationFn(d->wm))) {
    *code = 503;
    UTL_SetErr(err, errlen, "the wavemeter library has no Calibration()");
    free(j);
    return -1;
  }
  j->d = d;
  j->thz = c->thz;
  j->channel = c->channel;
  j->t0 = now;
  j->done = done;
  j->arg = arg;
  d->cal_running = 1;
  d->cal_calls++;
  CAL_SetCalibrating(d->cal, 1, now);
  log_info("calibration: Calibration(cOther, cReturnFrequency, %.9f, %d): reference at %+.3f MHz",
           c->thz, c->channel, r.measured_mhz);
  if (BG_Run(d->bg, cal_job_run, cal_job_done, j) != 0) {
    d->cal_running = 0;
    CAL_SetCalibrating(d->cal, 0, now);
    free(j);
    *code = 500;
    UTL_SetErr(err, errlen, "cannot start a helper thread");
    return -1;
  }
  d->cal_next_s = now + c->period_s;
  return 0;
}

/* Once a second: the periodic wlmdata calibration, only with a good reference. */
static void
cal_periodic(WLD_Daemon *d)
{
  double now = UTL_Now();
  char err[160];
  int code;

  if (!d->cal)
    return;
  CAL_Check(d->cal, now);
  cal_note(d, now);
  if (d->cfg->calibration.mode != CNF_CAL_WLMDATA || d->cal_running || now < d->cal_next_s)
    return;
  if (WLD_Calibrate(d, NULL, NULL, &code, err, sizeof err) != 0)
    log_debug("calibration: not now: %s", err);
}

/* ---- reload ------------------------------------------------------------------ */

static int
same_wavemeter(const CNF_Wavemeter *a, const CNF_Wavemeter *b)
{
  return a->backend == b->backend && strcmp(a->library, b->library) == 0 &&
         strcmp(a->address, b->address) == 0 && a->poll_ms == b->poll_ms &&
         a->callback_silence_ms == b->callback_silence_ms;
}

/* A reload in progress: phase 1 (loop) reads and checks the file, the
   wavemeter's blocking part runs on a helper thread if it changed, phase 2
   (loop) applies everything at once. */
typedef struct {
  WLD_Daemon *d;
  CNF_Config *nc;
  WM_Backend *wm;              /* the new wavemeter backend, prepared */
  int new_wm;                  /* the wavemeter settings changed */
  WLD_Done done;
  void *arg;
  char err[1024];
} Reload;

static void
reload_end(Reload *r, int rc)
{
  WLD_Daemon *d = r->d;

  if (rc != 0) {
    d->reload_failures++;
    log_error("reload refused, old config kept: %s", r->err);
  }
  d->reloading = 0;
  if (r->done)
    r->done(rc, r->err, r->arg);
  CNF_Free(r->nc);
  free(r);
  if (d->reload_again && !d->stopping) {
    d->reload_again = 0;
    log_info("reloading %s again (asked for during the last reload)", d->cfg_path);
    WLD_Reload(d, NULL, NULL);
  }
}

/* Helper thread: load the library / resolve the address. */
static void
reload_prepare(void *arg)
{
  Reload *r = arg;

  r->wm = WM_Prepare(&r->nc->wavemeter, on_reading, r->d, r->err, sizeof r->err);
}

/* Helper thread: free a prepared backend that will not be used (this may
   call into the library). */
static void
discard_wm(void *arg)
{
  WM_Destroy(arg);
}

static void
drop_prepared(WLD_Daemon *d, WM_Backend *wm)
{
  if (wm && (!d->bg || BG_Run(d->bg, discard_wm, NULL, wm) != 0))
    WM_Destroy(wm);
}

/* Phase 2, on the loop: nothing here waits for hardware. */
static void
reload_apply(void *arg)
{
  Reload *r = arg;
  WLD_Daemon *d = r->d;
  CNF_Config *nc = r->nc;
  LOG_Level lv;

  if (d->stopping) {
    UTL_SetErr(r->err, sizeof r->err, "wavelockd is stopping");
    drop_prepared(d, r->wm);
    reload_end(r, -1);
    return;
  }
  if (r->new_wm) {
    if (!r->wm) {
      reload_end(r, -1);
      return;
    }
    if (WM_Start(r->wm, d->base, r->err, sizeof r->err) != 0) {
      drop_prepared(d, r->wm);
      reload_end(r, -1);
      return;
    }
  }
  if (nc->calibration.present && nc->calibration.mode == CNF_CAL_WLMDATA &&
      !WM_CalibrationFn(r->wm ? r->wm : d->wm)) {
    UTL_SetErr(r->err, sizeof r->err, "calibration: mode \"wlmdata\" needs Calibration() in "
               "%s, which lacks it", nc->wavemeter.library);
    if (r->wm)
      WM_Destroy(r->wm);      /* started: returns at once */
    reload_end(r, -1);
    return;
  }
  {
    /* Subscriptions name lasers by index: carry them over to the new list
       before any event of the new configuration goes out. */
    int n_old = CTL_LaserCount(d->ctl);
    char (*names)[CNF_NAME_MAX] = calloc((size_t)n_old + 1, sizeof *names);
    int *map = calloc((size_t)n_old + 1, sizeof *map);

    for (int i = 0; names && i < n_old; i++)
      UTL_Strlcpy(names[i], CTL_Laser_(d->ctl, i)->cfg.name, sizeof names[i]);
    d->hold_events = 1;
    if (CTL_Reconfigure(d->ctl, nc, r->err, sizeof r->err) != 0) {
      d->hold_events = 0;
      flush_held_events(d);
      if (r->wm)
        WM_Destroy(r->wm);    /* started: returns at once */
      free(names);
      free(map);
      reload_end(r, -1);
      return;
    }
    if (r->wm) {
      WM_Destroy(d->wm);      /* returns at once; its thread finishes the rest */
      d->wm = r->wm;
      r->wm = NULL;
    }
    SRV_Reconfigure(d->srv, &nc->server);
    if (HTP_Reconfigure(d->http, nc))
      log_warn("reload: the http group's listen addresses changed: they take effect at the "
               "next restart (tokens, roles and limits apply now)");
    if (names && map) {
      for (int i = 0; i < n_old; i++) {
        CTL_Laser *l = CTL_FindLaser(d->ctl, names[i]);
        map[i] = l ? l->index : -1;
      }
      SRV_RemapLasers(d->srv, map, n_old, CTL_LaserCount(d->ctl));
    }
    free(names);
    free(map);
    d->hold_events = 0;
    flush_held_events(d);
  }
  if (LOG_ParseLevel(nc->log_level, &lv) == 0 && !LOG_Enabled(LOG_LV_DEBUG))
    LOG_SetLevel(lv);
  {
    CNF_Config *old = d->cfg;

    d->cfg = nc;
    cal_setup(d, old);
    mqtt_reconfigure(d, old);
    CNF_Free(old);
  }
  r->nc = NULL;
  d->reloads++;
  log_info("configuration reloaded from %s: %d lasers, %d devices", d->cfg_path, d->cfg->n_lasers,
           d->cfg->n_devices);
  WLD_ScheduleSave(d);
  reload_end(r, 0);
}

static void
WLD_Reload(WLD_Daemon *d, WLD_Done done, void *arg)
{
  Reload *r = calloc(1, sizeof *r);
  CNF_Config *nc;

  if (!r) {
    if (done)
      done(-1, "out of memory", arg);
    return;
  }
  r->d = d;
  r->done = done;
  r->arg = arg;
  if (d->reloading) {
    free(r);
    if (done) {
      done(-1, "a reload is in progress", arg);
    } else {
      d->reload_again = 1;     /* SIGHUP: once this one is done */
    }
    return;
  }
  d->reloading = 1;
  nc = r->nc = CNF_Load(d->cfg_path, r->err, sizeof r->err);
  if (!nc) {
    reload_end(r, -1);
    return;
  }
  if (d->stopping) {
    UTL_SetErr(r->err, sizeof r->err, "wavelockd is stopping");
    reload_end(r, -1);
    return;
  }
  if (nc->server.n_tokens == 0) {
    /* The listeners stay bound to the old addresses until a restart: a
       file that drops the tokens must not open them to everyone. */
    for (int i = 0; i < d->n_bound + HTP_ListenCount(d->http); i++) {
      const char *bound = i < d->n_bound ? d->bound[i] : HTP_ListenAddress(d->http, i - d->n_bound);
      char host[256];
      int port;

      if (CNF_ParseHostPort(bound, host, sizeof host, &port) == 0 &&
          !CNF_IsLoopback(host)) {
        UTL_SetErr(r->err, sizeof r->err, "%s: no server.tokens, but wavelockd listens on %s "
                   "(not loopback) until it restarts", d->cfg_path, bound);
        reload_end(r, -1);
        return;
      }
    }
  }
  if (nc->server.n_listen != d->cfg->server.n_listen ||
      memcmp(nc->server.listen, d->cfg->server.listen, sizeof nc->server.listen) != 0)
    log_warn("reload: listen addresses take effect at the next restart");
  if (strcmp(nc->state_file, d->cfg->state_file) != 0)
    log_info("reload: state file is now %s", nc->state_file[0] ? nc->state_file : "(none)");
  r->new_wm = !same_wavemeter(&nc->wavemeter, &d->cfg->wavemeter);
  if (r->new_wm && d->bg && BG_Run(d->bg, reload_prepare, reload_apply, r) == 0)
    return;                    /* phase 2 once the backend is prepared */
  if (r->new_wm)
    reload_prepare(r);         /* no helper thread: here, as before */
  reload_apply(r);
}

/* ---- signals, timers, shutdown ----------------------------------------------- */

static void
stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
  WLD_Daemon *d = arg;

  if ((CTL_Busy(d->ctl) == 0 && (!d->bg || BG_Busy(d->bg) == 0)) ||
      UTL_Now() >= d->stop_deadline)
    event_base_loopexit(d->base, NULL);
}

static void
begin_stop(WLD_Daemon *d, const char *why)
{
  struct timeval tick = { 0, 10000 };

  if (d->stopping)
    return;
  d->stopping = 1;
  d->stop_deadline = UTL_Now() + STOP_GRACE_S;
  log_info("%s: stopping; outputs stay where they are", why);
  SRV_StopListening(d->srv);
  WM_Destroy(d->wm);      /* no new readings, so no new cycles */
  d->wm = NULL;
  event_del(d->tick_ev);
  d->stop_ev = event_new(d->base, -1, EV_PERSIST, stop_check_cb, d);
  if (d->stop_ev)
    event_add(d->stop_ev, &tick);
  else
    event_base_loopexit(d->base, NULL);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
  WLD_Daemon *d = arg;

  if (sig == SIGHUP) {
    log_info("SIGHUP: reloading %s", d->cfg_path);
    WLD_Reload(d, NULL, NULL);
    return;
  }
  begin_stop(d, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
  WLD_Daemon *d = arg;

  CTL_Tick(d->ctl);
}

static void
slow_cb(evutil_socket_t fd, short what, void *arg)
{
  WLD_Daemon *d = arg;
  static int seconds;
  STF_Laser *s;
  int n;

  cal_periodic(d);
  mqtt_states(d);             /* what changed without an event (a ramp) */
  /* Data logs are flushed once a second. */
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++)
    if (CTL_Laser_(d->ctl, i)->datalog)
      fflush(CTL_Laser_(d->ctl, i)->datalog);

  check_writer(d);
  /* Outputs alone change every cycle: write them now and then, not always. */
  if (++seconds < OUTPUT_SAVE_INTERVAL_S || !d->cfg->state_file[0])
    return;
  seconds = 0;
  n = collect_state(d, &s);
  if (n < 0)
    return;
  {
    STF_Calibration cal;

    collect_cal(d, &cal);
    if (n != d->n_saved || memcmp(s, d->saved, (size_t)n * sizeof *s) != 0 ||
        cal.present != d->saved_cal.present || cal.eps != d->saved_cal.eps)
      save_now(d, "outputs", 0);
  }
  free(s);
}

/* ---- start-up -------------------------------------------------------------------- */

static void
usage(FILE *f)
{
  fprintf(f,
          "Usage: wavelockd [options]\n"
          "Keeps lab lasers locked to their frequency setpoints.\n\n"
          "  -c, --config FILE     config file (default %s/wavelockd.conf)\n"
          "  -f, --foreground      stay in the foreground, log to stderr\n"
          "  -d, --debug           log debug messages\n"
          "  -t, --test            check the config file and what start-up needs (listen\n"
          "                        addresses, state file directory, wavemeter library),\n"
          "                        touching no actuator; exit 0 good, 78 bad config,\n"
          "                        1 start-up would fail\n"
          "  -T, --test-config     check the config file only (0 good, 78 bad)\n"
          "  -P, --port-file FILE  write the bound protocol port to FILE\n"
          "  -V, --version         print the version and exit\n"
          "  -h, --help            this help\n\n"
          "Signals: SIGHUP reloads the config, SIGTERM/SIGINT stop (outputs are held).\n"
          "See wavelockd(8) and wavelockd.conf(5).\n",
          SYSCONFDIR);
}

static int
write_pid_or_port(const char *path, long value)
{
  char tmp[CNF_PATH_MAX + 8];
  FILE *f;

  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  f = fopen(tmp, "w");
  if (!f)
    return -1;
  fprintf(f, "%ld\n", value);
  if (fclose(f) != 0 || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int
drop_privileges(const char *user)
{
  struct passwd *pw;

  if (!user[0] || geteuid() != 0)
    return 0;
  pw = getpwnam(user);
  if (!pw) {
    log_error("user %s: no such user", user);
    return -1;
  }
  if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
      setuid(pw->pw_uid) != 0) {
    log_error("cannot become user %s: %s", user, strerror(errno));
    return -1;
  }
  log_info("running as user %s", user);
  return 0;
}

/* Many clients need many descriptors: use the hard limit. */
static void
raise_fd_limit(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      log_warn("cannot raise the open-file limit: %s", strerror(errno));
  }
}

static void
warn_token_permissions(const CNF_Config *cfg)
{
  struct stat st;

  if (cfg->server.n_tokens > 0 && stat(cfg->path, &st) == 0 && (st.st_mode & S_IROTH))
    log_warn("%s holds tokens and is readable by others: chmod o-r it", cfg->path);
}

/* -t: what start-up would fail on, short of touching an actuator: the
   wavemeter backend (for wlmdata, the library loads and has its symbols),
   the state file's directory, the user to become, the set-up of the lasers
   and devices (no I/O) and every listener, bound and released.  Each
   failure is printed; returns 0, or 1 if anything failed. */
static int
check_startup(WLD_Daemon *d)
{
  char err[1024];
  struct event_base *base;
  SRV_Server *srv;
  CTL_Ctx *ctl;
  int failed = 0;

  LOG_SetLevel(LOG_LV_ERROR);     /* no progress lines from the modules here */
  if (WM_Check(&d->cfg->wavemeter, err, sizeof err) != 0) {
    fprintf(stderr, "wavelockd: %s\n", err);
    failed = 1;
  }
  if (STF_CheckWritable(d->cfg->state_file, err, sizeof err) != 0) {
    fprintf(stderr, "wavelockd: state_file: %s\n", err);
    failed = 1;
  }
  if (d->cfg->user[0] && !getpwnam(d->cfg->user)) {
    fprintf(stderr, "wavelockd: user %s: no such user\n", d->cfg->user);
    failed = 1;
  }
  base = event_base_new();
  if (!base) {
    fprintf(stderr, "wavelockd: cannot create the event loop\n");
    return 1;
  }
  ctl = CTL_Create(base, d->cfg, NULL);
  if (!ctl) {
    fprintf(stderr, "wavelockd: cannot set up the lasers and devices: %s\n", strerror(errno));
    failed = 1;
  }
  CTL_Destroy(ctl);
  srv = SRV_Create(base, &d->cfg->server, WLD_Commands, WLD_NumCommands, d, err, sizeof err);
  if (!srv) {
    fprintf(stderr, "wavelockd: %s%s\n", err, strstr(err, strerror(EADDRINUSE)) ?
            " (a wavelockd already running? -T checks the file alone)" : "");
    failed = 1;
  }
  SRV_Destroy(srv);
  {
    HTP_Server *http = HTP_Create(base, d->cfg, d, err, sizeof err);

    if (!http && err[0]) {
      fprintf(stderr, "wavelockd: %s\n", err);
      failed = 1;
    }
    HTP_Destroy(http);
  }
  event_base_free(base);
  return failed;
}

int
main(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "config", required_argument, NULL, 'c' },
    { "foreground", no_argument, NULL, 'f' },
    { "debug", no_argument, NULL, 'd' },
    { "test", no_argument, NULL, 't' },
    { "test-config", no_argument, NULL, 'T' },
    { "port-file", required_argument, NULL, 'P' },
    { "version", no_argument, NULL, 'V' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  WLD_Daemon *d = &daemon_state;
  d->host = &daemon_host;
  const char *cfg_arg = SYSCONFDIR "/wavelockd.conf";
  const char *port_file = NULL;
  int foreground = 0, debug = 0, test_only = 0, opt, status = 0, started = 0;
  char err[1024];
  LOG_Level level = LOG_LV_INFO;

  /* A SIGHUP before the event loop handles it (a reload right after the
     start) must not kill the daemon: ignore it until then. */
  signal(SIGHUP, SIG_IGN);
  /* A daemon started by a process that blocks these (a supervisor, a
     script) would never see a reload or stop request: unblock them.  A
     SIGHUP already pending is dropped by SIG_IGN above. */
  sigset_t ctl_sigs;
  sigemptyset(&ctl_sigs);
  sigaddset(&ctl_sigs, SIGHUP);
  sigaddset(&ctl_sigs, SIGTERM);
  sigaddset(&ctl_sigs, SIGINT);
  sigprocmask(SIG_UNBLOCK, &ctl_sigs, NULL);
  while ((opt = getopt_long(argc, argv, "c:fdtTP:Vh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c': cfg_arg = optarg; break;
    case 'f': foreground = 1; break;
    case 'd': debug = 1; break;
    case 't': test_only = 2; break;
    case 'T': test_only = test_only ? test_only : 1; break;
    case 'P': port_file = optarg; break;
    case 'V':
      printf("wavelockd %s (protocol %d)\n", PACKAGE_VERSION, WL_PROTOCOL_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "wavelockd: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }

  /* Config: checked completely before anything starts. */
  if (!realpath(cfg_arg, d->cfg_path))
    UTL_Strlcpy(d->cfg_path, cfg_arg, sizeof d->cfg_path);
  d->cfg = CNF_Load(d->cfg_path, err, sizeof err);
  if (!d->cfg) {
    fprintf(stderr, "wavelockd: %s\n", err);
    return EXIT_CONFIG;
  }
  if (test_only) {
    /* -T: the file alone (for a running daemon, whose listeners are bound);
       -t: also everything start-up would fail on. */
    status = test_only == 2 ? check_startup(d) : 0;
    if (status == 0)
      printf("%s: configuration OK (%d lasers, %d devices)%s\n", d->cfg_path, d->cfg->n_lasers,
             d->cfg->n_devices, test_only == 2 ? "; start-up checks passed" : "");
    CNF_Free(d->cfg);
    return status;
  }

  LOG_ParseLevel(d->cfg->log_level, &level);
  if (debug)
    level = LOG_LV_DEBUG;
  /* In the background stderr goes nowhere: log to syslog. */
  LOG_Open("wavelockd", !foreground || strcmp(d->cfg->log_target, "syslog") == 0, level);
  warn_token_permissions(d->cfg);
  raise_fd_limit();

  if (!foreground && daemon(0, 0) != 0) {
    log_error("cannot detach: %s", strerror(errno));
    return 1;
  }

  signal(SIGPIPE, SIG_IGN);
  if (evthread_use_pthreads() != 0) {
    log_error("libevent has no thread support");
    return 1;
  }
  d->base = PRI_NewBase();
  if (!d->base) {
    log_error("cannot create the event loop");
    return 1;
  }
  d->bg = BG_Create(d->base);
  if (!d->bg)
    log_warn("cannot set up helper threads: reloads and saves wait on the event loop");

  /* Timers and signals exist before anything can schedule them. */
  struct timeval tick = { 0, 100000 }, slow = { 1, 0 };
  d->save_ev = evtimer_new(d->base, save_cb, d);
  d->tick_ev = event_new(d->base, -1, EV_PERSIST, tick_cb, d);
  d->slow_ev = event_new(d->base, -1, EV_PERSIST, slow_cb, d);
  d->sig_hup = evsignal_new(d->base, SIGHUP, signal_cb, d);
  d->sig_term = evsignal_new(d->base, SIGTERM, signal_cb, d);
  d->sig_int = evsignal_new(d->base, SIGINT, signal_cb, d);
  if (!d->save_ev || !d->tick_ev || !d->slow_ev || !d->sig_hup || !d->sig_term || !d->sig_int) {
    log_error("cannot create timers");
    status = 1;
    goto out;
  }
  /* Caught from here on: a stop or reload asked for during the rest of the
     start-up (by a supervisor that saw the port file) waits for the loop
     instead of killing the daemon half-started. */
  event_add(d->sig_hup, NULL);
  event_add(d->sig_term, NULL);
  event_add(d->sig_int, NULL);

  static const CTL_Hooks hooks = { .state_changed = hook_state, .reading = hook_reading,
                                   .dirty = hook_dirty, .railed = hook_railed,
                                   .relock = hook_relock, .arg = &daemon_state };
  d->ctl = CTL_Create(d->base, d->cfg, &hooks);
  if (!d->ctl) {
    log_error("cannot set up the lasers and devices: %s", strerror(errno));
    status = 1;
    goto out;
  }
  d->cal_last_s = -1.0;
  cal_setup(d, NULL);
  restore_state(d);

  d->srv = SRV_Create(d->base, &d->cfg->server, WLD_Commands, WLD_NumCommands, d, err, sizeof err);
  if (!d->srv) {
    log_error("%s", err);
    status = 1;
    goto out;
  }
  d->n_bound = d->cfg->server.n_listen;
  memcpy(d->bound, d->cfg->server.listen, sizeof d->bound);
  d->http = HTP_Create(d->base, d->cfg, d, err, sizeof err);
  if (!d->http && err[0]) {
    log_error("%s", err);
    status = 1;
    goto out;
  }
  if (port_file && write_pid_or_port(port_file, SRV_BoundPort(d->srv, 0)) != 0)
    log_warn("cannot write port file %s: %s", port_file, strerror(errno));
  if (drop_privileges(d->cfg->user) != 0) {
    status = 1;
    goto out;
  }
  /* The daemon runs without a writable state file (the lasers matter
     more), but says so now rather than at the first save. */
  if (STF_CheckWritable(d->cfg->state_file, err, sizeof err) != 0)
    log_error("state file not writable: %s; wavelockd runs, but run-time changes are not "
              "saved until this is fixed", err);
  if (d->cfg->pid_file[0] && write_pid_or_port(d->cfg->pid_file, (long)getpid()) != 0)
    log_warn("cannot write pid file %s: %s", d->cfg->pid_file, strerror(errno));
  d->writer = STF_WriterCreate();
  if (!d->writer)
    log_warn("cannot start the state-file writer (%s): the state file is written on the event "
             "loop", strerror(errno));

  /* The wavemeter first: a start-up that fails on it (a missing library or
     symbol) must not have touched any actuator.  Readings reach the lasers
     only from the event loop, which runs after CTL_Start. */
  d->wm = WM_Create(&d->cfg->wavemeter, d->base, on_reading, d, err, sizeof err);
  if (!d->wm) {
    log_error("wavemeter: %s", err);
    status = 1;
    goto out;
  }
  if (d->cfg->calibration.present && d->cfg->calibration.mode == CNF_CAL_WLMDATA &&
      !WM_CalibrationFn(d->wm)) {
    log_error("calibration: mode \"wlmdata\" needs Calibration() in %s, which lacks it "
              "(use mode \"correct\")", d->cfg->wavemeter.library);
    status = 1;
    goto out;
  }
  if (CTL_Start(d->ctl, err, sizeof err) != 0) {
    log_error("%s", err);
    status = 1;
    goto out;
  }

  if (d->cfg->mqtt.present) {
    d->mqtt = MQT_Create(d->base, &d->cfg->mqtt, d->srv, err, sizeof err);
    if (!d->mqtt) {
      log_error("%s", err);
      status = 1;
      goto out;
    }
    mqtt_states(d);
  }

  started = 1;
  event_add(d->tick_ev, &tick);
  event_add(d->slow_ev, &slow);

  log_info("wavelockd %s started: %d lasers, %d devices, port %d", PACKAGE_VERSION,
           d->cfg->n_lasers, d->cfg->n_devices, SRV_BoundPort(d->srv, 0));
  for (int i = 0; i < HTP_ListenCount(d->http); i++)
    log_info("dashboard: http://%s/", HTP_ListenAddress(d->http, i));
  event_base_dispatch(d->base);

out:
  /* Reverse order: readings, devices (running cycles finish), state, clients. */
  WM_Destroy(d->wm);
  d->wm = NULL;
  if (WM_Reap(2.0) > 0)
    log_warn("the wavemeter library did not return within 2 s at exit");
  BG_Destroy(d->bg, 2.0);   /* a reload or save still waiting is abandoned */
  d->bg = NULL;
  if (d->ctl) {
    int busy = CTL_Busy(d->ctl);
    if (busy)
      log_warn("%d cycle%s still running at exit", busy, busy == 1 ? "" : "s");
  }
  /* Only a daemon that ran has state to save: a start-up that failed (e.g.
     at the privilege drop, still root) must not rewrite the state file. */
  if (started)
    save_now(d, "shutdown", 1);
  STF_WriterDestroy(d->writer);
  d->writer = NULL;
  CTL_Destroy(d->ctl);
  CAL_Destroy(d->cal);
  d->cal = NULL;
  HTP_Destroy(d->http);
  d->http = NULL;
  MQT_Destroy(d->mqtt, 1, 1.0);  /* says offline; waits up to 1 s for the broker */
  d->mqtt = NULL;
  SRV_Destroy(d->srv);
  if (d->cfg && d->cfg->pid_file[0])
    unlink(d->cfg->pid_file);
  free(d->saved);
  free(d->held);
  if (d->stop_ev) event_free(d->stop_ev);
  if (d->save_ev) event_free(d->save_ev);
  if (d->tick_ev) event_free(d->tick_ev);
  if (d->slow_ev) event_free(d->slow_ev);
  if (d->sig_hup) event_free(d->sig_hup);
  if (d->sig_term) event_free(d->sig_term);
  if (d->sig_int) event_free(d->sig_int);
  if (d->base) event_base_free(d->base);
  CNF_Free(d->cfg);
  log_info("wavelockd stopped");
  LOG_Close();
  return status;
}
