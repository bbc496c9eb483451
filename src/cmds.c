/* cmds.c - wavelockd's text-protocol commands (DESIGN.md section 3).
 *
 * Every handler runs on the event loop thread, answers at once and never
 * waits for hardware: it reads or changes the loop-owned laser state, and
 * the control runtime carries changes to the devices.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <modbus.h>

#include "bg.h"
#include "calib.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "mqtt.h"
#include "units.h"
#include "util.h"

#define D(ctx) ((WLD_Daemon *)(ctx))

/* ---- helpers -------------------------------------------------------------- */

static int
need_control(SRV_Conn *c)
{
  if (SRV_Role(c) >= CNF_ROLE_CONTROL)
    return 1;
  SRV_Err(c, 403, "not permitted for role monitor");
  return 0;
}

static CTL_Laser *
laser_arg(WLD_Daemon *d, SRV_Conn *c, const char *name)
{
  CTL_Laser *l = CTL_FindLaser(d->ctl, name);

  if (!l)
    SRV_Err(c, 404, "unknown laser '%s'", name);
  return l;
}

static double
age_ms(const WM_Reading *r)
{
  return (UTL_Now() - r->rx_s) * 1000.0;
}

static void
status_line(SRV_Conn *c, const WLD_Daemon *d, const CTL_Laser *l)
{
  char reading[200] = "freq_thz=none error_mhz=none";
  char current[48] = "", railed[LSR_RAIL_NAME_MAX], relock[96] = "";

  if (l->have_reading) {
    if (l->last.value > 0.0 && WLD_CalApplies(d, l->cfg.channel) &&
        d->channels[l->cfg.channel].value > 0.0)
      snprintf(reading, sizeof reading, "freq_thz=%.9f raw_freq_thz=%.9f error_mhz=%.4f "
               "age_ms=%.0f", l->last.value, d->channels[l->cfg.channel].value,
               l->last_error_mhz, age_ms(&l->last));
    else if (l->last.value > 0.0)
      snprintf(reading, sizeof reading, "freq_thz=%.9f error_mhz=%.4f age_ms=%.0f",
               l->last.value, l->last_error_mhz, age_ms(&l->last));
    else
      snprintf(reading, sizeof reading, "freq_thz=none error_mhz=none wm_status=%s age_ms=%.0f",
               WM_ErrorName(l->last.value), age_ms(&l->last));
  }
  if (l->current_dev)
    snprintf(current, sizeof current, " current_v=%.6f", l->current_v);
  /* relock search: relocks=, and search= (step) search_pass= while searching;
     reason= for a fault of the search ("relock failed", one word here) */
  if (l->search.active)
    snprintf(relock, sizeof relock, " search=%d search_pass=%d", l->search.step,
             l->search.pass);
  else if (l->sm.relock_failed)
    snprintf(relock, sizeof relock, " reason=relock_failed");
  SRV_Data(c, "name=%s state=%s setpoint_thz=%.9f %s piezo_v=%.6f%s channel=%d ramp=%d"
           " cycles=%lu coalesced=%lu write_errors=%lu railed=%s glitches=%lu relocks=%lu%s",
           l->cfg.name, LSR_StateName(l->sm.state), l->setpoint_thz, reading, l->piezo_v, current,
           l->cfg.channel, l->ramp.active, l->cycles, l->coalesced, l->write_errors,
           LSR_RailName(l->rail.railed, railed, sizeof railed), l->glitch.glitches,
           l->sm.relocks, relock);
}

/* ---- commands ---------------------------------------------------------------- */

static void
cmd_version(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Data(c, "wavelock=%s protocol=%d libevent=%s libmodbus=%s", PACKAGE_VERSION,
           WL_PROTOCOL_VERSION, event_get_version(), LIBMODBUS_VERSION_STRING);
  SRV_Ok(c, NULL);
}

static void
cmd_lasers(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);

  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    CTL_Laser *l = CTL_Laser_(d->ctl, i);
    SRV_Data(c, "name=%s state=%s channel=%d", l->cfg.name, LSR_StateName(l->sm.state),
             l->cfg.channel);
  }
  SRV_Ok(c, NULL);
}

static void
cmd_status(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l;

  if (argc < 2 || strcasecmp(argv[1], "all") == 0) {
    for (int i = 0; i < CTL_LaserCount(d->ctl); i++)
      status_line(c, d, CTL_Laser_(d->ctl, i));
    SRV_Ok(c, NULL);
    return;
  }
  for (int i = 1; i < argc; i++)
    if (!CTL_FindLaser(d->ctl, argv[i])) {
      SRV_Err(c, 404, "unknown laser '%s'", argv[i]);
      return;
    }
  for (int i = 1; i < argc; i++) {
    l = CTL_FindLaser(d->ctl, argv[i]);
    status_line(c, d, l);
  }
  SRV_Ok(c, NULL);
}

static void
lock_common(SRV_Conn *c, void *ctx, const char *name, int lock)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *one;

  if (strcasecmp(name, "all") != 0) {
    one = laser_arg(d, c, name);
    if (!one)
      return;
    if (lock)
      CTL_Lock(d->ctl, one);
    else
      CTL_Unlock(d->ctl, one);
    SRV_Ok(c, NULL);
    return;
  }
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    if (lock)
      CTL_Lock(d->ctl, CTL_Laser_(d->ctl, i));
    else
      CTL_Unlock(d->ctl, CTL_Laser_(d->ctl, i));
  }
  SRV_Ok(c, "%d laser%s", CTL_LaserCount(d->ctl), CTL_LaserCount(d->ctl) == 1 ? "" : "s");
}

static void
cmd_lock(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  lock_common(c, ctx, argv[1], 1);
}

static void
cmd_unlock(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  lock_common(c, ctx, argv[1], 0);
}

/* A setpoint or ramp target: "<number>[unit]", or the unit as a separate
   word (unit may be NULL).  A leading sign makes it relative to the present
   setpoint.  The unit is checked before the value; the result must be in
   the allowed range.  0, or -1 after answering 422. */
static int
frequency_arg(SRV_Conn *c, const CTL_Laser *l, const char *number, const char *unit,
              double *thz)
{
  char err[160];

  if (UNI_ParseSetpoint(number, unit, l->setpoint_thz, thz, NULL, err, sizeof err) != 0) {
    SRV_Err(c, 422, "%s", err);
    return -1;
  }
  if (*thz < l->cfg.min_thz || *thz > l->cfg.max_thz) {
    SRV_Err(c, 422, "%.9f THz is outside the allowed range %.9f..%.9f THz of %s", *thz,
            l->cfg.min_thz, l->cfg.max_thz, l->cfg.name);
    return -1;
  }
  return 0;
}

static void
cmd_setpoint(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  double thz;

  if (!l)
    return;
  if (argc == 2) {
    SRV_Data(c, "name=%s setpoint_thz=%.9f setpoint_nm=%.7f target_thz=%.9f ramp=%d"
             " min_thz=%.9f max_thz=%.9f", l->cfg.name, l->setpoint_thz,
             UNI_FromTHz(l->setpoint_thz, UNI_NM),
             l->ramp.active ? l->ramp.target_thz : l->setpoint_thz, l->ramp.active,
             l->cfg.min_thz, l->cfg.max_thz);
    SRV_Ok(c, NULL);
    return;
  }
  if (!need_control(c))
    return;
  if (argc > 4) {
    SRV_Err(c, 400, "usage: setpoint <laser> [<value> [unit]]");
    return;
  }
  if (frequency_arg(c, l, argv[2], argc == 4 ? argv[3] : NULL, &thz) != 0)
    return;
  CTL_SetSetpoint(d->ctl, l, thz);
  log_info("laser %s: setpoint %.9f THz", l->cfg.name, thz);
  SRV_Ok(c, "setpoint_thz=%.9f", thz);
}

static void
cmd_ramp(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  char num[UTL_DOUBLE_LEN];
  double thz, rate;

  if (!l)
    return;
  /* ramp <laser> <value>[unit] <rate>  or  ramp <laser> <value> <unit> <rate> */
  if (frequency_arg(c, l, argv[2], argc == 5 ? argv[3] : NULL, &thz) != 0)
    return;
  if (UTL_ParseDouble(argv[argc - 1], &rate) != 0 || !(rate > 0.0) || rate > 1e9) {
    SRV_Err(c, 422, "rate must be a number of MHz/s above 0, got '%s'", argv[argc - 1]);
    return;
  }
  CTL_Ramp(d->ctl, l, thz, rate);
  UTL_FormatDouble(num, sizeof num, rate);
  log_info("laser %s: ramp to %.9f THz at %s MHz/s", l->cfg.name, thz, num);
  SRV_Ok(c, "target_thz=%.9f rate_mhz_s=%s", thz, num);
}

/* Run-time parameters for get/set, also kept in the state file (kp, ki and
   kd have fields of their own there). */
enum { P_DOUBLE, P_INT, P_POLARITY };
typedef struct {
  const char *name;
  int type;
  size_t off;            /* offset in CTL_Laser */
  size_t file_off;       /* the config file's value: offset in CNF_Laser */
  double lo, hi;         /* allowed range (set) */
  int current;           /* needs a current actuator */
  int pid;               /* a PID parameter: bumpless retune */
  int own_field;         /* a state-file field of its own */
} Param;

#define LO(f) offsetof(CTL_Laser, f)
#define FO(f) offsetof(CNF_Laser, f)
static const Param params[] = {
  { "kp", P_DOUBLE, LO(cfg.kp), FO(kp), 0.0, 1e6, 0, 1, 1 },
  { "ki", P_DOUBLE, LO(cfg.ki), FO(ki), 0.0, 1e6, 0, 1, 1 },
  { "kd", P_DOUBLE, LO(cfg.kd), FO(kd), 0.0, 1e6, 0, 1, 1 },
  { "d_filter_s", P_DOUBLE, LO(cfg.d_tau_s), FO(d_tau_s), 0.0, 100.0, 0, 1, 0 },
  { "polarity", P_POLARITY, LO(cfg.polarity), FO(polarity), -1, 1, 0, 1, 0 },
  { "max_dt_s", P_DOUBLE, LO(cfg.max_dt_s), FO(max_dt_s), 1e-3, 3600.0, 0, 1, 0 },
  { "window_mhz", P_DOUBLE, LO(cfg.window_mhz), FO(window_mhz), 1e-6, 1e7, 0, 0, 0 },
  { "capture_mhz", P_DOUBLE, LO(cfg.capture_mhz), FO(capture_mhz), 1e-6, 1e9, 0, 0, 0 },
  { "modehop_mhz", P_DOUBLE, LO(cfg.modehop_mhz), FO(modehop_mhz), 0.0, 1e9, 0, 0, 0 },
  { "glitch_mhz", P_DOUBLE, LO(cfg.glitch_mhz), FO(glitch_mhz), 0.0, 1e8, 0, 0, 0 },
  { "lock_n", P_INT, LO(cfg.lock_n), FO(lock_n), 1, 100000, 0, 0, 0 },
  { "unlock_m", P_INT, LO(cfg.unlock_m), FO(unlock_m), 1, 100000, 0, 0, 0 },
  { "max_step_v", P_DOUBLE, LO(cfg.piezo.max_step_v), FO(piezo.max_step_v), 0.0, 1e6, 0, 1, 0 },
  { "piezo_min_v", P_DOUBLE, LO(piezo_lo), FO(piezo.min_v), -1e6, 1e6, 0, 1, 0 },
  { "piezo_max_v", P_DOUBLE, LO(piezo_hi), FO(piezo.max_v), -1e6, 1e6, 0, 1, 0 },
  { "current_min_v", P_DOUBLE, LO(current_lo), FO(current.min_v), -1e6, 1e6, 1, 0, 0 },
  { "current_max_v", P_DOUBLE, LO(current_hi), FO(current.max_v), -1e6, 1e6, 1, 0, 0 },
  { "feedforward", P_DOUBLE, LO(cfg.current.feedforward), FO(current.feedforward), -1e6, 1e6,
    1, 0, 0 },
};
#define NPARAMS ((int)(sizeof params / sizeof params[0]))

static const Param *
find_param(const char *name)
{
  for (int i = 0; i < NPARAMS; i++)
    if (strcasecmp(params[i].name, name) == 0)
      return &params[i];
  return NULL;
}

static double
param_get(const CTL_Laser *l, const Param *p)
{
  const char *base = (const char *)l;

  if (p->type == P_DOUBLE)
    return *(const double *)(const void *)(base + p->off);
  return *(const int *)(const void *)(base + p->off);
}

static void
param_value(const CTL_Laser *l, const Param *p, char *buf, size_t len)
{
  if (p->type == P_DOUBLE)
    UTL_FormatDouble(buf, len, param_get(l, p));
  else
    snprintf(buf, len, "%d", (int)param_get(l, p));
}

/* Set p to v with every check of the set command; 0, or -1 with the reason
   (answered with 422). */
static int
param_set(WLD_Daemon *d, CTL_Laser *l, const Param *p, double v, char *err, size_t errlen)
{
  double lo = p->lo, hi = p->hi;
  PID_Params before;

  /* Run-time limits only narrow the configured ones. */
  if (p->off == LO(piezo_lo) || p->off == LO(piezo_hi)) {
    lo = l->cfg.piezo.min_v;
    hi = l->cfg.piezo.max_v;
  } else if (p->off == LO(current_lo) || p->off == LO(current_hi)) {
    lo = l->cfg.current.min_v;
    hi = l->cfg.current.max_v;
  }
  if (v < lo || v > hi || (p->type != P_DOUBLE && v != floor(v)) ||
      (p->type == P_POLARITY && v != 1.0 && v != -1.0)) {
    if (p->type == P_POLARITY)
      snprintf(err, errlen, "polarity must be 1 or -1");
    else
      snprintf(err, errlen, "%s must be %s in %g..%g", p->name,
               p->type == P_INT ? "an integer" : "a number", lo, hi);
    return -1;
  }
  if ((p->off == LO(piezo_lo) && v >= l->piezo_hi) || (p->off == LO(piezo_hi) && v <= l->piezo_lo) ||
      (p->off == LO(current_lo) && v >= l->current_hi) ||
      (p->off == LO(current_hi) && v <= l->current_lo)) {
    snprintf(err, errlen, "%s would leave an empty output range", p->name);
    return -1;
  }
  if ((p->off == LO(cfg.capture_mhz) && v <= l->cfg.window_mhz) ||
      (p->off == LO(cfg.window_mhz) && v >= l->cfg.capture_mhz)) {
    snprintf(err, errlen, "window_mhz must stay below capture_mhz");
    return -1;
  }
  CTL_PidParams(l, &before);
  char *base = (char *)l;
  if (p->type == P_DOUBLE)
    *(double *)(void *)(base + p->off) = v;
  else
    *(int *)(void *)(base + p->off) = (int)v;
  CTL_ParamsChanged(d->ctl, l, &before);
  return 0;
}

/* ---- the parameters for the state file (daemon.h) ---- */

int
WLD_ParamCount(void)
{
  return NPARAMS;
}

const char *
WLD_ParamName(int i)
{
  return params[i].name;
}

int
WLD_ParamSaved(const CTL_Laser *l, int i)
{
  return !params[i].own_field && (!params[i].current || l->current_dev);
}

double
WLD_ParamValue(const CTL_Laser *l, int i)
{
  return param_get(l, &params[i]);
}

double
WLD_ParamFileValue(const CTL_Laser *l, int i)
{
  const char *base = (const char *)&l->base_cfg;

  if (params[i].type == P_DOUBLE)
    return *(const double *)(const void *)(base + params[i].file_off);
  return *(const int *)(const void *)(base + params[i].file_off);
}

int
WLD_ParamFind(const char *name)
{
  const Param *p = find_param(name);

  return p ? (int)(p - params) : -1;
}

int
WLD_ParamSet(WLD_Daemon *d, CTL_Laser *l, int i, double v, char *err, size_t errlen)
{
  return param_set(d, l, &params[i], v, err, errlen);
}

static void
cmd_get(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  char v[64];

  if (!l)
    return;
  if (strcasecmp(argv[2], "all") == 0) {
    char line[1024];
    size_t n = (size_t)snprintf(line, sizeof line, "name=%s", l->cfg.name);
    for (int i = 0; i < NPARAMS && n < sizeof line; i++) {
      if (params[i].current && !l->current_dev)
        continue;
      param_value(l, &params[i], v, sizeof v);
      n += (size_t)snprintf(line + n, sizeof line - n, " %s=%s", params[i].name, v);
    }
    SRV_Data(c, "%s", line);
    SRV_Ok(c, NULL);
    return;
  }
  const Param *p = find_param(argv[2]);
  if (!p || (p->current && !l->current_dev)) {
    SRV_Err(c, 404, "unknown parameter '%s' for %s", argv[2], l->cfg.name);
    return;
  }
  param_value(l, p, v, sizeof v);
  SRV_Data(c, "name=%s %s=%s", l->cfg.name, p->name, v);
  SRV_Ok(c, NULL);
}

static void
cmd_set(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  const Param *p;
  double v;
  char err[160], num[UTL_DOUBLE_LEN];

  if (!l)
    return;
  p = find_param(argv[2]);
  if (!p || (p->current && !l->current_dev)) {
    SRV_Err(c, 404, "unknown parameter '%s' for %s", argv[2], l->cfg.name);
    return;
  }
  if (UTL_ParseDouble(argv[3], &v) != 0) {
    SRV_Err(c, 422, "%s: '%s' is not a number", p->name, argv[3]);
    return;
  }
  if (param_set(d, l, p, v, err, sizeof err) != 0) {
    SRV_Err(c, 422, "%s", err);
    return;
  }
  UTL_FormatDouble(num, sizeof num, v);
  log_info("laser %s: %s = %s", l->cfg.name, p->name, num);
  SRV_Ok(c, "%s=%s", p->name, num);
}

static void
cmd_output(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  int piezo;
  double v, lo, hi;
  char lo_s[UTL_DOUBLE_LEN], hi_s[UTL_DOUBLE_LEN];

  if (!l)
    return;
  if (strcasecmp(argv[2], "piezo") == 0) {
    piezo = 1;
  } else if (strcasecmp(argv[2], "current") == 0 && l->current_dev) {
    piezo = 0;
  } else {
    SRV_Err(c, 404, "%s has no actuator '%s' (piezo%s)", l->cfg.name, argv[2],
            l->current_dev ? " or current" : "");
    return;
  }
  lo = piezo ? l->piezo_lo : l->current_lo;
  hi = piezo ? l->piezo_hi : l->current_hi;
  if (argc == 3) {
    SRV_Data(c, "name=%s %s_v=%.6f min_v=%s max_v=%s", l->cfg.name, piezo ? "piezo" : "current",
             piezo ? l->piezo_v : l->current_v, UTL_FormatDouble(lo_s, sizeof lo_s, lo),
             UTL_FormatDouble(hi_s, sizeof hi_s, hi));
    SRV_Ok(c, NULL);
    return;
  }
  if (!need_control(c))
    return;
  if (l->sm.engaged) {
    SRV_Err(c, 409, "%s is engaged (state %s): unlock it first", l->cfg.name,
            LSR_StateName(l->sm.state));
    return;
  }
  if (l->sm.state == LSR_FAULT) {
    SRV_Err(c, 503, "%s: actuator device unreachable", l->cfg.name);
    return;
  }
  if (UTL_ParseDouble(argv[3], &v) != 0 || v < lo || v > hi) {
    SRV_Err(c, 422, "%s output must be a number of volts in %s..%s, got '%s'",
            piezo ? "piezo" : "current", UTL_FormatDouble(lo_s, sizeof lo_s, lo),
            UTL_FormatDouble(hi_s, sizeof hi_s, hi), argv[3]);
    return;
  }
  CTL_SetOutput(d->ctl, l, piezo, v, !piezo, v);
  UTL_FormatDouble(lo_s, sizeof lo_s, v);
  log_info("laser %s: %s output set to %s V by hand", l->cfg.name, piezo ? "piezo" : "current",
           lo_s);
  SRV_Ok(c, "%s_v=%s", piezo ? "piezo" : "current", lo_s);
}

static void
wavemeter_line(SRV_Conn *c, WLD_Daemon *d, int ch)
{
  const WM_Reading *r = &d->channels[ch];
  const char *laser = "-";

  for (int i = 0; i < CTL_LaserCount(d->ctl); i++)
    if (CTL_Laser_(d->ctl, i)->cfg.channel == ch)
      laser = CTL_Laser_(d->ctl, i)->cfg.name;
  if (r->value > 0.0)
    SRV_Data(c, "channel=%d laser=%s freq_thz=%.9f status=ok age_ms=%.0f", ch, laser, r->value,
             age_ms(r));
  else
    SRV_Data(c, "channel=%d laser=%s freq_thz=none status=%s code=%g age_ms=%.0f", ch, laser,
             WM_ErrorName(r->value), r->value, age_ms(r));
}

static void
cmd_wavemeter(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  char buf[512];

  if (argc == 2) {
    long ch;
    if (UTL_ParseInt(argv[1], 1, CNF_MAX_CHANNEL, &ch) != 0) {
      SRV_Err(c, 422, "channel must be 1..%d", CNF_MAX_CHANNEL);
      return;
    }
    if (!d->have_channel[ch]) {
      SRV_Err(c, 404, "no reading on channel %ld yet", ch);
      return;
    }
    wavemeter_line(c, d, (int)ch);
    SRV_Ok(c, NULL);
    return;
  }
  if (d->wm) {
    WM_Status(d->wm, buf, sizeof buf);
    SRV_Data(c, "%s", buf);
  }
  for (int ch = 1; ch <= CNF_MAX_CHANNEL; ch++)
    if (d->have_channel[ch])
      wavemeter_line(c, d, ch);
  SRV_Ok(c, NULL);
}

static void
cmd_devices(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  char buf[512];

  for (int i = 0; i < CTL_DeviceCount(d->ctl); i++) {
    CTL_DeviceStatus(d->ctl, i, buf, sizeof buf);
    SRV_Data(c, "%s", buf);
  }
  SRV_Ok(c, NULL);
}

static void
cmd_stats(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  SRV_Stats st;
  unsigned long cycles = 0, coalesced = 0, errors = 0;

  SRV_GetStats(d->srv, &st, 0);
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);
    cycles += l->cycles;
    coalesced += l->coalesced;
    errors += l->write_errors;
  }
  SRV_Data(c, "clients=%d subscribers=%d out_bytes=%zu out_max_bytes=%zu out_peak_bytes=%zu"
           " events_dropped=%lu rejected=%lu", st.clients, st.subscribers, st.out_bytes,
           st.out_max, st.out_peak, st.events_dropped, st.rejected);
  SRV_Data(c, "lasers=%d devices=%d cycles=%lu coalesced=%lu write_errors=%lu in_flight=%d"
           " reloads=%lu reload_failures=%lu", CTL_LaserCount(d->ctl), CTL_DeviceCount(d->ctl),
           cycles, coalesced, errors, CTL_Busy(d->ctl), d->reloads, d->reload_failures);
  if (d->mqtt) {
    MQT_Stats ms;

    MQT_GetStats(d->mqtt, &ms);
    SRV_Data(c, "mqtt=%s mqtt_protocol=%s mqtt_published=%lu mqtt_dropped=%lu mqtt_queued=%lu"
             " mqtt_queue_peak=%lu mqtt_queue_max=%lu mqtt_connects=%lu mqtt_republished=%lu"
             " mqtt_commands=%lu mqtt_commands_dropped=%lu", ms.link,
             ms.protocol == 5 ? "5" : ms.protocol == 4 ? "3.1.1" : "none", ms.published,
             ms.dropped, ms.queued, ms.queue_peak, ms.queue_max, ms.connects, ms.republished,
             ms.commands, ms.commands_dropped);
  }
  SRV_Ok(c, NULL);
}

static void
cmd_subscribe(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  int n = CTL_LaserCount(d->ctl);
  unsigned char *mask;

  if (argc == 1 || (argc == 2 && strcasecmp(argv[1], "all") == 0)) {
    SRV_Subscribe(c, 1, NULL, 0);
    SRV_Ok(c, "subscribed to all lasers");
    return;
  }
  mask = calloc((size_t)n + 1, 1);
  if (!mask) {
    SRV_Err(c, 500, "out of memory");
    return;
  }
  for (int i = 1; i < argc; i++) {
    CTL_Laser *l = laser_arg(d, c, argv[i]);
    if (!l) {
      free(mask);
      return;
    }
    mask[l->index] = 1;
  }
  SRV_Subscribe(c, 0, mask, n);
  free(mask);
  SRV_Ok(c, "subscribed to %d laser%s", argc - 1, argc == 2 ? "" : "s");
}

static void
cmd_unsubscribe(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Unsubscribe(c);
  SRV_Ok(c, NULL);
}

/* A save or reload answered once it is done; the loop serves everyone else
   meanwhile. */
typedef struct {
  SRV_Pending *p;
  WLD_Daemon *d;
  char path[CNF_PATH_MAX];
} Later;

/* The deferred answer: ERR code err (rc != 0) or OK ok, to the connection
   if it is still there; frees w. */
static void
later_answer(Later *w, int rc, int code, const char *err, const char *ok)
{
  SRV_Conn *c = SRV_PendingConn(w->p);

  if (c && rc != 0)
    SRV_Err(c, code, "%s", err);
  else if (c)
    SRV_Ok(c, "%s", ok);
  SRV_Complete(w->p);
  free(w);
}

static void
saved(int rc, const char *err, void *arg)
{
  Later *w = arg;
  char ok[CNF_PATH_MAX + 8];

  snprintf(ok, sizeof ok, "saved %s", w->path);
  later_answer(w, rc, 500, err, ok);
}

static void
reloaded(int rc, const char *err, void *arg)
{
  Later *w = arg;
  char ok[CNF_PATH_MAX + 12], text[1200];

  snprintf(ok, sizeof ok, "reloaded %s", w->d->cfg_path);
  snprintf(text, sizeof text, "reload failed, old config kept: %s", err);
  later_answer(w, rc, strcmp(err, "a reload is in progress") == 0 ? 409 : 422, text, ok);
}

/* Run start(d, done, w) with the answer deferred. */
static void
run_later(SRV_Conn *c, WLD_Daemon *d, void (*start)(WLD_Daemon *, WLD_ReloadDone, void *),
          WLD_ReloadDone done)
{
  Later *w = calloc(1, sizeof *w);

  if (w)
    w->p = SRV_Defer(c);
  if (!w || !w->p) {
    free(w);
    SRV_Err(c, 500, "out of memory");
    return;
  }
  w->d = d;
  UTL_Strlcpy(w->path, d->cfg->state_file, sizeof w->path);
  start(d, done, w);
}

static void
cmd_save(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);

  if (!d->cfg->state_file[0]) {
    SRV_Err(c, 409, "no state_file configured");
    return;
  }
  /* "OK" means on disk: answered when the writer has finished. */
  run_later(c, d, WLD_SaveAsync, saved);
}

static void
cmd_calibration(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  const CNF_Calibration *cc = &d->cfg->calibration;
  CAL_Report r;
  double now = UTL_Now();
  char wlm[160] = "";

  if (!d->cal) {
    SRV_Data(c, "mode=none state=off ppb=0 offset_mhz=0 age_s=none reason=none");
    SRV_Ok(c, NULL);
    return;
  }
  CAL_Check(d->cal, now);
  CAL_GetReport(d->cal, now, &r);
  if (cc->mode == CNF_CAL_WLMDATA) {
    char last[32] = "none";

    if (d->cal_last_s >= 0)
      snprintf(last, sizeof last, "%.0f", now - d->cal_last_s);
    snprintf(wlm, sizeof wlm, " calibrations=%lu failures=%lu last_s=%s last_rc=%ld next_s=%.0f "
             "running=%d", d->cal_calls, d->cal_failures, last, d->cal_last_rc,
             d->cal_next_s > now ? d->cal_next_s - now : 0.0, d->cal_running);
  }
  {
    char measured[48] = "none", age[32] = "none";

    if (!isnan(r.measured_mhz))
      snprintf(measured, sizeof measured, "%.4f", r.measured_mhz);
    if (r.age_s >= 0)
      snprintf(age, sizeof age, "%.1f", r.age_s);
    SRV_Data(c, "mode=%s state=%s ppb=%.4f offset_mhz=%.4f age_s=%s reason=%s channel=%d "
             "reference_thz=%.9f measured_mhz=%s applied=%d%s",
             cc->mode == CNF_CAL_WLMDATA ? "wlmdata" : "correct", CAL_StateName(r.state),
             r.ppb, r.offset_mhz, age, CAL_ReasonName(r.reason), cc->channel, cc->thz, measured,
             r.applies, wlm);
  }
  SRV_Ok(c, NULL);
}

static void
calibrated(int rc, const char *msg, void *arg)
{
  later_answer(arg, rc, 503, msg, msg);
}

static void
cmd_calibrate(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  Later *w = calloc(1, sizeof *w);
  char err[200];
  int code;

  if (w)
    w->p = SRV_Defer(c);
  if (!w || !w->p) {
    free(w);
    SRV_Err(c, 500, "out of memory");
    return;
  }
  w->d = d;
  if (WLD_Calibrate(d, calibrated, w, &code, err, sizeof err) != 0)
    later_answer(w, -1, code, err, "");
}

static void
cmd_reload(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  run_later(c, D(ctx), WLD_Reload, reloaded);
}

/* exposure <channel> [<ms>|auto]: the library calls run on a helper thread
   (they may block on the vendor's TCP link), the answer is deferred. */
typedef struct {
  SRV_Pending *p;
  WM_ExposureOp op;
  int rc;
  char err[256];
} ExposureJob;

static void
exposure_work(void *arg)
{
  ExposureJob *j = arg;

  j->rc = WM_ExposureRun(&j->op, j->err, sizeof j->err);
}

static void
exposure_done(void *arg)
{
  ExposureJob *j = arg;
  SRV_Conn *c = SRV_PendingConn(j->p);
  const char *mode = j->op.auto_on < 0 ? "unknown" : j->op.auto_on ? "on" : "off";

  if (j->rc != 0)
    log_warn("wavemeter channel %d: exposure: %s", j->op.channel, j->err);
  else if (j->op.set_ms > 0 || j->op.set_auto)
    log_info("wavemeter channel %d: exposure set: %d ms, auto exposure %s", j->op.channel,
             j->op.ms, mode);
  if (c && j->rc != 0) {
    SRV_Err(c, 503, "wavemeter: %s", j->err);
  } else if (c) {
    SRV_Data(c, "channel=%d exposure_ms=%d auto=%s", j->op.channel, j->op.ms, mode);
    SRV_Ok(c, NULL);
  }
  SRV_Complete(j->p);
  free(j);
}

static void
cmd_exposure(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  ExposureJob *j;
  WM_ExposureOp op;
  long ch, ms = 0;
  char err[256];

  if (UTL_ParseInt(argv[1], 1, CNF_MAX_CHANNEL, &ch) < 0) {
    SRV_Err(c, 422, "channel must be a whole number in 1..%d, got '%s'", CNF_MAX_CHANNEL,
            argv[1]);
    return;
  }
  memset(&op, 0, sizeof op);
  op.channel = (int)ch;
  if (argc > 2) {
    if (!need_control(c))
      return;
    if (strcasecmp(argv[2], "auto") == 0) {
      op.set_auto = 1;
    } else if (UTL_ParseInt(argv[2], WM_EXPOSURE_MIN_MS, WM_EXPOSURE_MAX_MS, &ms) == 0) {
      op.set_ms = (int)ms;
    } else {
      SRV_Err(c, 422, "exposure must be auto or a whole number of ms in %d..%d, got '%s'",
              WM_EXPOSURE_MIN_MS, WM_EXPOSURE_MAX_MS, argv[2]);
      return;
    }
  }
  if (WM_ExposureBegin(d->wm, &op, err, sizeof err) != 0) {
    SRV_Err(c, errno == EINVAL ? 422 : 503, "%s", err);
    return;
  }
  j = calloc(1, sizeof *j);
  if (j)
    j->p = SRV_Defer(c);
  if (!j || !j->p) {
    free(j);
    SRV_Err(c, 500, "out of memory");
    return;
  }
  j->op = op;
  if (BG_Run(d->bg, exposure_work, exposure_done, j) != 0) {
    SRV_Err(SRV_PendingConn(j->p), 500, "cannot start a helper thread");
    SRV_Complete(j->p);
    free(j);
  }
}

const SRV_Command WLD_Commands[] = {
  { "version", CNF_ROLE_NONE, 0, 0, "version", "versions of wavelock and the protocol", cmd_version },
  { "lasers", CNF_ROLE_MONITOR, 0, 0, "lasers", "one line per laser: name, state, channel", cmd_lasers },
  { "status", CNF_ROLE_MONITOR, 0, -1, "status [<laser>...|all]", "state, setpoint, reading, error and outputs", cmd_status },
  { "lock", CNF_ROLE_CONTROL, 1, 1, "lock <laser|all>", "engage regulation (bumpless)", cmd_lock },
  { "unlock", CNF_ROLE_CONTROL, 1, 1, "unlock <laser|all>", "disengage, holding the last output", cmd_unlock },
  { "setpoint", CNF_ROLE_MONITOR, 1, 3, "setpoint <laser> [[+|-]<value>[unit]]", "read or change the setpoint (THz, GHz, MHz, nm, cm-1; a sign: relative)", cmd_setpoint },
  { "ramp", CNF_ROLE_CONTROL, 3, 4, "ramp <laser> [+|-]<value>[unit] <rate_mhz_per_s>", "move the setpoint at a rate (a sign: relative)", cmd_ramp },
  { "get", CNF_ROLE_MONITOR, 2, 2, "get <laser> <param|all>", "read a run-time parameter", cmd_get },
  { "set", CNF_ROLE_CONTROL, 3, 3, "set <laser> <param> <value>", "change a gain or limit (bumpless)", cmd_set },
  { "output", CNF_ROLE_MONITOR, 2, 3, "output <laser> <piezo|current> [<volts>]", "read an output, or set it by hand while unlocked", cmd_output },
  { "wavemeter", CNF_ROLE_MONITOR, 0, 1, "wavemeter [<channel>]", "latest raw readings with age and status", cmd_wavemeter },
  { "exposure", CNF_ROLE_MONITOR, 1, 2, "exposure <channel> [<ms>|auto]", "read or set the wavemeter's exposure (wlmdata backend; setting: control)", cmd_exposure },
  { "devices", CNF_ROLE_MONITOR, 0, 0, "devices", "Modbus devices: up/down and counters", cmd_devices },
  { "stats", CNF_ROLE_MONITOR, 0, 0, "stats", "server and control counters (buffers, drops, cycles)", cmd_stats },
  { "subscribe", CNF_ROLE_MONITOR, 0, -1, "subscribe [<laser>...]", "stream '* ' events for readings and state changes", cmd_subscribe },
  { "unsubscribe", CNF_ROLE_MONITOR, 0, 0, "unsubscribe", "stop the event stream", cmd_unsubscribe },
  { "save", CNF_ROLE_CONTROL, 0, 0, "save", "write the runtime state file now", cmd_save },
  { "calibration", CNF_ROLE_MONITOR, 0, 0, "calibration", "the correction against the reference laser: mode, state, ppb, offset", cmd_calibration },
  { "calibrate", CNF_ROLE_CONTROL, 0, 0, "calibrate", "wlmdata mode: calibrate the wavemeter on the reference now", cmd_calibrate },
  { "reload", CNF_ROLE_CONTROL, 0, 0, "reload", "re-read the config file (an invalid one is refused)", cmd_reload },
};
const int WLD_NumCommands = (int)(sizeof WLD_Commands / sizeof WLD_Commands[0]);
