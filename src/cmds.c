/* cmds.c - wavelockd's text-protocol commands (DESIGN.md section 3).
 *
 * Every handler runs on the event loop thread, answers at once and never
 * waits for hardware: it reads or changes the loop-owned laser state, and
 * the control runtime carries changes to the devices.  What only the daemon
 * can do (reload, save, calibrate) the handlers reach through d->host
 * (host.h); the run-time parameters of get/set are params.h's.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <modbus.h>

#include "bg.h"
#include "calib.h"
#include "ctl.h"
#include "cmds.h"
#include "daemon.h"
#include "log.h"
#include "mqtt.h"
#include "params.h"
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

/* ---- names and claims (DESIGN.md section 8) ------------------------------ */

#define CLAIM_DEFAULT_S 300.0
#define CLAIM_MAX_S 604800.0       /* a week */
#define HOLD_MAX_S 86400.0

/* The owner of l's claim, or NULL if unclaimed (or expired: then dropped). */
static const char *
claim_owner(WLD_Daemon *d, CTL_Laser *l)
{
  if (!l->owner[0])
    return NULL;
  if (UTL_WallNow() >= l->claim_until) {
    log_info("laser %s: claim by %s expired", l->cfg.name, l->owner);
    l->owner[0] = '\0';
    l->claim_until = 0.0;
    d->host->schedule_save(d);
    return NULL;
  }
  return l->owner;
}

/* Whether connection c may change laser l: yes if l is unclaimed or claimed
   by c's name (then the claim is renewed); else 409 is answered.  Every
   command that changes a laser goes through here. */
static int
claim_check(WLD_Daemon *d, SRV_Conn *c, CTL_Laser *l)
{
  const char *owner = claim_owner(d, l);

  if (!owner)
    return 1;
  if (SRV_Named(c) && strcmp(owner, SRV_Name(c)) == 0) {
    l->claim_until = UTL_WallNow() + l->claim_len_s;
    d->host->schedule_save(d);
    return 1;
  }
  SRV_Err(c, 409, "claimed by %s for %.0f s more (laser %s; you are %s)", owner,
          ceil(l->claim_until - UTL_WallNow()), l->cfg.name, SRV_Name(c));
  return 0;
}

/* claim_check for every laser, or for the one named. */
static int
claim_check_name(WLD_Daemon *d, SRV_Conn *c, const char *name)
{
  if (strcasecmp(name, "all") != 0) {
    CTL_Laser *l = CTL_FindLaser(d->ctl, name);
    return !l || claim_check(d, c, l);
  }
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++)
    if (!claim_check(d, c, CTL_Laser_(d->ctl, i)))
      return 0;
  return 1;
}

/* laser_arg for a command that changes the laser: also the claim check. */
static CTL_Laser *
changing_laser_arg(WLD_Daemon *d, SRV_Conn *c, const char *name)
{
  CTL_Laser *l = laser_arg(d, c, name);

  if (l && !claim_check(d, c, l))
    return NULL;
  return l;
}

/* The laser of a command that changes it: control role, a known laser, not
   claimed by another name (claim_check).  Every changing command that
   takes one laser looks it up here. */
static CTL_Laser *
changing_laser(WLD_Daemon *d, SRV_Conn *c, const char *name)
{
  if (!need_control(c))
    return NULL;
  return changing_laser_arg(d, c, name);
}

static double
age_ms(const WM_Reading *r)
{
  return (UTL_Now() - r->rx_s) * 1000.0;
}

/* Everything a `status` line shows but the reading's age and the claim's
   seconds left: the line is formatted from this alone, so an equal key
   means an equal line.  Zeroed before filling (memcmp sees the padding). */
typedef struct {
  char name[CNF_NAME_MAX];
  char owner[sizeof ((CTL_Laser *)0)->owner];   /* "" = no claim */
  const char *hold_reason;
  double value, error_mhz, raw, current_v, setpoint_thz, piezo_v;
  unsigned long cycles, coalesced, write_errors, glitches, relocks;
  int have_reading, has_raw, has_current, state, channel, ramp;
  int search_active, search_step, search_pass, relock_failed, railed;
  int scan_active, scan_wave, tune_active;
} StatusKey;

/* A laser's status line as last formatted: head, then the age in ms (if
   there is a reading), then tail, then the claim's seconds (if claimed). */
#define STATUS_TEXT_MAX 640
typedef struct {
  StatusKey key;
  int valid;
  size_t head_len, tail_len;
  char head[STATUS_TEXT_MAX];
  char tail[STATUS_TEXT_MAX];
} StatusMemo;

static void
status_key(StatusKey *k, const WLD_Daemon *d, const CTL_Laser *l, double now_wall)
{
  memset(k, 0, sizeof *k);
  UTL_Strlcpy(k->name, l->cfg.name, sizeof k->name);
  if (l->owner[0] && l->claim_until > now_wall)
    UTL_Strlcpy(k->owner, l->owner, sizeof k->owner);
  k->hold_reason = CTL_HoldReason(l);
  k->have_reading = l->have_reading;
  if (l->have_reading) {
    k->value = l->last.value;
    if (l->last.value > 0.0) {
      k->error_mhz = l->last_error_mhz;
      if (d->host->cal_applies(d, l->cfg.channel) && d->channels[l->cfg.channel].value > 0.0) {
        k->has_raw = 1;
        k->raw = d->channels[l->cfg.channel].value;
      }
    }
  }
  if (l->current_dev) {
    k->has_current = 1;
    k->current_v = l->current_v;
  }
  k->setpoint_thz = l->setpoint_thz;
  k->piezo_v = l->piezo_v;
  k->cycles = l->cycles;
  k->coalesced = l->coalesced;
  k->write_errors = l->write_errors;
  k->glitches = l->glitch.glitches;
  k->relocks = l->sm.relocks;
  k->state = (int)l->sm.state;
  k->channel = l->cfg.channel;
  k->ramp = l->ramp.active;
  k->search_active = l->search.active;
  k->search_step = l->search.step;
  k->search_pass = l->search.pass;
  k->relock_failed = l->sm.relock_failed;
  k->railed = l->rail.railed;
  k->scan_active = l->scan.active;
  k->scan_wave = (int)l->scan.wave;
  k->tune_active = l->tune.active;
}

/* Format the memo's head and tail from its key.  Numbers by UTL_Fixed
   (integer arithmetic, printf's text): %.Nf was half of a `status`
   answer's cost before the memo. */
static void
status_format(StatusMemo *m)
{
  const StatusKey *k = &m->key;
  char reading[200] = "freq_thz=none error_mhz=none";
  char current[64] = "", railed[LSR_RAIL_NAME_MAX], relock[96] = "", claim[160];
  char f_thz[40], f_raw[40], f_err[40], f_sp[40], f_pz[40], f_cur[40];

  if (k->have_reading) {
    if (k->value > 0.0) {
      UTL_Fixed(f_thz, sizeof f_thz, k->value, 9);
      UTL_Fixed(f_err, sizeof f_err, k->error_mhz, 4);
    }
    if (k->has_raw) {
      UTL_Fixed(f_raw, sizeof f_raw, k->raw, 9);
      snprintf(reading, sizeof reading, "freq_thz=%s raw_freq_thz=%s error_mhz=%s age_ms=",
               f_thz, f_raw, f_err);
    } else if (k->value > 0.0) {
      snprintf(reading, sizeof reading, "freq_thz=%s error_mhz=%s age_ms=", f_thz, f_err);
    } else {
      snprintf(reading, sizeof reading, "freq_thz=none error_mhz=none wm_status=%s age_ms=",
               WM_ErrorName(k->value));
    }
  }
  if (k->has_current) {
    UTL_Fixed(f_cur, sizeof f_cur, k->current_v, 6);
    snprintf(current, sizeof current, " current_v=%s", f_cur);
  }
  UTL_Fixed(f_sp, sizeof f_sp, k->setpoint_thz, 9);
  UTL_Fixed(f_pz, sizeof f_pz, k->piezo_v, 6);
  /* relock search: relocks=, and search= (step) search_pass= while searching;
     reason= for a fault of the search ("relock failed", one word here) */
  if (k->search_active)
    snprintf(relock, sizeof relock, " search=%d search_pass=%d", k->search_step,
             k->search_pass);
  else if (k->relock_failed)
    snprintf(relock, sizeof relock, " reason=relock_failed");
  else if (k->hold_reason)
    snprintf(relock, sizeof relock, " reason=%s", k->hold_reason);
  /* claims: owner= and claim_s= (seconds left, added per answer) */
  if (k->owner[0])
    snprintf(claim, sizeof claim, " owner=%s claim_s=", k->owner);
  else
    snprintf(claim, sizeof claim, " owner=none claim_s=0");
  snprintf(m->head, sizeof m->head, "name=%s state=%s setpoint_thz=%s %s", k->name,
           LSR_StateName((LSR_StateId)k->state), f_sp, reading);
  snprintf(m->tail, sizeof m->tail,
           " piezo_v=%s%s channel=%d ramp=%d cycles=%lu coalesced=%lu write_errors=%lu"
           " railed=%s glitches=%lu relocks=%lu%s scan=%s%s%s",
           f_pz, current, k->channel, k->ramp, k->cycles, k->coalesced, k->write_errors,
           LSR_RailName(k->railed, railed, sizeof railed), k->glitches, k->relocks, relock,
           k->scan_active ? SCN_WaveName((SCN_Wave)k->scan_wave) : "none",
           k->tune_active ? " tune=running" : "", claim);
  SRV_Sanitize(m->head);
  SRV_Sanitize(m->tail);
  m->head_len = strlen(m->head);
  m->tail_len = strlen(m->tail);
}

/* Append n bytes of src to buf at *len (truncating at size). */
static void
put(char *buf, size_t size, size_t *len, const char *src, size_t n)
{
  if (*len + n >= size)
    n = size - 1 - *len;
  memcpy(buf + *len, src, n);
  *len += n;
  buf[*len] = '\0';
}

/* Append v with no decimals (as %.0f) to buf at *len. */
static void
put_int(char *buf, size_t size, size_t *len, double v)
{
  char num[40];
  int n = UTL_Fixed(num, sizeof num, v, 0);

  if (n < 0)
    n = 0;
  if (n >= (int)sizeof num)
    n = (int)sizeof num - 1;
  put(buf, size, len, num, (size_t)n);
}

/* The clocks a `status` answer reads, once per answer. */
typedef struct {
  double now, wall;
} StatusClock;

static void
status_clock(StatusClock *t)
{
  t->now = UTL_Now();
  t->wall = UTL_WallNow();
}

/* One laser's `status` line.  Formatted again only when something it shows
   changed (a reading, a cycle, a command): a flood of `status` requests
   between two readings costs copies, not formatting. */
static void
status_line(SRV_Conn *c, const WLD_Daemon *d, CTL_Laser *l, const StatusClock *t)
{
  StatusMemo *m = l->status_memo;
  StatusKey k;
  char line[2 * STATUS_TEXT_MAX + 64];
  size_t len = 0;

  if (!m) {
    m = l->status_memo = calloc(1, sizeof *m);
    if (!m) {
      SRV_Data(c, "name=%s state=%s (out of memory)", l->cfg.name,
               LSR_StateName(l->sm.state));
      return;
    }
  }
  status_key(&k, d, l, t->wall);
  if (!m->valid || memcmp(&k, &m->key, sizeof k) != 0) {
    m->key = k;
    status_format(m);
    m->valid = 1;
  }
  put(line, sizeof line, &len, m->head, m->head_len);
  if (k.have_reading)
    put_int(line, sizeof line, &len, (t->now - l->last.rx_s) * 1000.0);
  put(line, sizeof line, &len, m->tail, m->tail_len);
  if (k.owner[0])
    put_int(line, sizeof line, &len, ceil(l->claim_until - t->wall));
  SRV_DataLine(c, line, len);
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

  StatusClock t;

  status_clock(&t);
  if (argc < 2 || strcasecmp(argv[1], "all") == 0) {
    for (int i = 0; i < CTL_LaserCount(d->ctl); i++)
      status_line(c, d, CTL_Laser_(d->ctl, i), &t);
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
    status_line(c, d, l, &t);
  }
  SRV_Ok(c, NULL);
}

static void
lock_common(SRV_Conn *c, void *ctx, const char *name, int lock)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *one;

  if (!claim_check_name(d, c, name))
    return;
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
  if (!need_control(c) || !claim_check(d, c, l))
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
  CTL_Laser *l = changing_laser_arg(d, c, argv[1]);
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

static void
cmd_get(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  char v[64];
  int i;

  if (!l)
    return;
  if (strcasecmp(argv[2], "all") == 0) {
    char line[1024];
    size_t n = (size_t)snprintf(line, sizeof line, "name=%s", l->cfg.name);
    for (i = 0; i < PRM_Count() && n < sizeof line; i++) {
      if (!PRM_Applies(l, i))
        continue;
      PRM_Format(l, i, v, sizeof v);
      n += (size_t)snprintf(line + n, sizeof line - n, " %s=%s", PRM_Name(i), v);
    }
    SRV_Data(c, "%s", line);
    SRV_Ok(c, NULL);
    return;
  }
  i = PRM_Find(argv[2]);
  if (i < 0 || !PRM_Applies(l, i)) {
    SRV_Err(c, 404, "unknown parameter '%s' for %s", argv[2], l->cfg.name);
    return;
  }
  PRM_Format(l, i, v, sizeof v);
  SRV_Data(c, "name=%s %s=%s", l->cfg.name, PRM_Name(i), v);
  SRV_Ok(c, NULL);
}

static void
cmd_set(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = changing_laser_arg(d, c, argv[1]);
  double v;
  char err[160], num[UTL_DOUBLE_LEN];
  int i;

  if (!l)
    return;
  i = PRM_Find(argv[2]);
  if (i < 0 || !PRM_Applies(l, i)) {
    SRV_Err(c, 404, "unknown parameter '%s' for %s", argv[2], l->cfg.name);
    return;
  }
  if (UTL_ParseDouble(argv[3], &v) != 0) {
    SRV_Err(c, 422, "%s: '%s' is not a number", PRM_Name(i), argv[3]);
    return;
  }
  if (PRM_Set(d->ctl, l, i, v, err, sizeof err) != 0) {
    SRV_Err(c, 422, "%s", err);
    return;
  }
  UTL_FormatDouble(num, sizeof num, v);
  log_info("laser %s: %s = %s", l->cfg.name, PRM_Name(i), num);
  SRV_Ok(c, "%s=%s", PRM_Name(i), num);
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
  if (!need_control(c) || !claim_check(d, c, l))
    return;
  if (CTL_HoldReason(l)) {
    SRV_Err(c, 409, "%s is held (%s): resume it first", l->cfg.name, CTL_HoldReason(l));
    return;
  }
  if (l->sm.engaged) {
    SRV_Err(c, 409, "%s is engaged (state %s): unlock it first", l->cfg.name,
            LSR_StateName(l->sm.state));
    return;
  }
  if (l->tune.active) {
    SRV_Err(c, 409, "%s is being tuned: wait for the tune to end", l->cfg.name);
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
run_later(SRV_Conn *c, WLD_Daemon *d, void (*start)(WLD_Daemon *, WLD_Done, void *),
          WLD_Done done)
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
  run_later(c, d, d->host->save, saved);
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
  if (d->host->calibrate(d, calibrated, w, &code, err, sizeof err) != 0)
    later_answer(w, -1, code, err, "");
}

static void
cmd_reload(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  run_later(c, D(ctx), D(ctx)->host->reload, reloaded);
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

static void
cmd_iam(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  const char *n = argv[1];
  size_t len = strlen(n);

  if (len < 1 || len > 63 || strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789._-@+:") != len) {
    SRV_Err(c, 422, "a name is 1..63 letters, digits or ._-@+: (got '%.64s')", n);
    return;
  }
  if (strcasecmp(n, "none") == 0 || strcasecmp(n, "all") == 0 || strcasecmp(n, "steal") == 0) {
    SRV_Err(c, 422, "'%s' is reserved", n);
    return;
  }
  log_info("client %s (%s) is %s", SRV_Peer(c), SRV_Name(c), n);
  SRV_SetName(c, n);
  SRV_Ok(c, "name=%s", n);
}

/* claim <laser|all> [<seconds>] [steal] */
static void
cmd_claim(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  double secs = CLAIM_DEFAULT_S, now = UTL_WallNow();
  int steal = 0, n = 0;
  CTL_Laser *one = NULL;

  /* claim <laser> steal | claim <laser> <seconds> [steal] */
  if (argc > 2 && strcasecmp(argv[2], "steal") == 0) {
    steal = 1;
    if (argc > 3) {
      SRV_Err(c, 400, "usage: claim <laser|all> [<seconds>] [steal]");
      return;
    }
  } else if (argc > 2) {
    if (UTL_ParseDouble(argv[2], &secs) != 0 || !(secs >= 1.0 && secs <= CLAIM_MAX_S)) {
      SRV_Err(c, 422, "claim time must be a number of seconds in 1..%.0f, got '%s'",
              CLAIM_MAX_S, argv[2]);
      return;
    }
    if (argc > 3 && strcasecmp(argv[3], "steal") != 0) {
      SRV_Err(c, 400, "usage: claim <laser|all> [<seconds>] [steal]");
      return;
    }
    steal = argc > 3;
  }
  if (strcasecmp(argv[1], "all") != 0 && !(one = laser_arg(d, c, argv[1])))
    return;
  if (!SRV_Named(c)) {
    SRV_Err(c, 409, "name this connection first: iam <name> (it is %s)", SRV_Name(c));
    return;
  }
  if (!steal && !claim_check_name(d, c, argv[1]))
    return;
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    CTL_Laser *l = CTL_Laser_(d->ctl, i);
    const char *was;

    if (one && l != one)
      continue;
    was = claim_owner(d, l);
    if (was && strcmp(was, SRV_Name(c)) != 0)
      log_warn("laser %s: claim of %s stolen by %s (%s)", l->cfg.name, was, SRV_Name(c),
               SRV_Peer(c));
    else if (!was)
      log_info("laser %s: claimed by %s for %.0f s", l->cfg.name, SRV_Name(c), secs);
    UTL_Strlcpy(l->owner, SRV_Name(c), sizeof l->owner);
    l->claim_len_s = secs;
    l->claim_until = now + secs;
    n++;
  }
  d->host->schedule_save(d);
  SRV_Ok(c, "owner=%s claim_s=%.0f lasers=%d", SRV_Name(c), secs, n);
}

/* release <laser|all>: only the owner's own claims (all: those of its name). */
static void
cmd_release(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *one = NULL;
  int n = 0;

  if (strcasecmp(argv[1], "all") != 0) {
    if (!(one = laser_arg(d, c, argv[1])))
      return;
    if (!claim_check(d, c, one))
      return;
  }
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    CTL_Laser *l = CTL_Laser_(d->ctl, i);
    const char *owner = claim_owner(d, l);

    if ((one && l != one) || !owner || !SRV_Named(c) || strcmp(owner, SRV_Name(c)) != 0)
      continue;
    log_info("laser %s: released by %s", l->cfg.name, owner);
    l->owner[0] = '\0';
    l->claim_until = 0.0;
    n++;
  }
  d->host->schedule_save(d);
  SRV_Ok(c, "released=%d", n);
}

/* hold <laser> [<seconds>] */
static void
cmd_hold(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = laser_arg(d, c, argv[1]);
  double secs = 0.0;

  if (!l)
    return;
  if (argc == 3 && (UTL_ParseDouble(argv[2], &secs) != 0 || !(secs > 0.0 && secs <= HOLD_MAX_S))) {
    SRV_Err(c, 422, "hold time must be a number of seconds in 0..%.0f (above 0), got '%s'",
            HOLD_MAX_S, argv[2]);
    return;
  }
  if (!claim_check(d, c, l))
    return;
  CTL_Hold(d->ctl, l, 1, secs);
  log_info("laser %s: held by %s%s", l->cfg.name, SRV_Name(c), secs > 0.0 ? " for a time" : "");
  SRV_Ok(c, "state=%s hold_s=%g", LSR_StateName(l->sm.state), secs);
}

static void
cmd_resume(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = changing_laser_arg(d, c, argv[1]);

  if (!l)
    return;
  if (l->hold_cmd)
    log_info("laser %s: resumed by %s", l->cfg.name, SRV_Name(c));
  CTL_Hold(d->ctl, l, 0, 0.0);
  if (l->hold_in)
    SRV_Ok(c, "state=%s still held by hold_input", LSR_StateName(l->sm.state));
  else
    SRV_Ok(c, "state=%s", LSR_StateName(l->sm.state));
}

/* ---- scan and tune (DESIGN.md section 8) ---------------------------------- */

static void
scan_line(SRV_Conn *c, const CTL_Laser *l)
{
  char amp[UTL_DOUBLE_LEN] = "0", per[UTL_DOUBLE_LEN] = "0";

  if (l->scan.active) {
    UTL_FormatDouble(amp, sizeof amp, l->scan.amplitude_mhz);
    UTL_FormatDouble(per, sizeof per, l->scan.period_s);
  }
  SRV_Data(c, "name=%s scan=%s centre_thz=%.9f amplitude_mhz=%s period_s=%s cycles=%ld"
           " setpoint_thz=%.9f", l->cfg.name,
           l->scan.active ? SCN_WaveName(l->scan.wave) : "none",
           l->scan.active ? l->scan.centre_thz : l->setpoint_thz, amp, per,
           l->scan.active ? l->scan.cycles : 0L, l->setpoint_thz);
}

static void
cmd_scan(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l;
  SCN_Wave w;
  double amp, period, cyc = 0.0;
  char err[200];

  if (argc == 2) {
    if (!(l = laser_arg(d, c, argv[1])))
      return;
    scan_line(c, l);
    SRV_Ok(c, NULL);
    return;
  }
  if (!(l = changing_laser(d, c, argv[1])))
    return;
  if (argc == 3 && strcasecmp(argv[2], "stop") == 0) {
    if (l->scan.active)
      log_info("laser %s: scan stopped, setpoint back at %.9f THz", l->cfg.name,
               l->scan.centre_thz);
    CTL_ScanStop(d->ctl, l);
    SRV_Ok(c, "scan=none setpoint_thz=%.9f", l->setpoint_thz);
    return;
  }
  if (SCN_ParseWave(argv[2], &w) != 0) {
    SRV_Err(c, 422, "unknown waveform '%s' (triangle, sawtooth, sine, square or stop)",
            argv[2]);
    return;
  }
  if (argc < 5) {
    SRV_Err(c, 400, "usage: scan <laser> <triangle|sawtooth|sine|square> <amplitude_mhz>"
            " <period_s> [<cycles>]");
    return;
  }
  if (UTL_ParseDouble(argv[3], &amp) != 0 || !(amp >= SCN_MIN_AMPLITUDE_MHZ) ||
      amp > SCN_MAX_AMPLITUDE_MHZ) {
    SRV_Err(c, 422, "amplitude must be a number of MHz in %g..%g, got '%s'",
            SCN_MIN_AMPLITUDE_MHZ, SCN_MAX_AMPLITUDE_MHZ, argv[3]);
    return;
  }
  if (UTL_ParseDouble(argv[4], &period) != 0 || !(period >= SCN_MIN_PERIOD_S) ||
      period > SCN_MAX_PERIOD_S) {
    SRV_Err(c, 422, "period must be a number of seconds in %g..%g, got '%s'",
            SCN_MIN_PERIOD_S, SCN_MAX_PERIOD_S, argv[4]);
    return;
  }
  if (argc == 6 && (UTL_ParseDouble(argv[5], &cyc) != 0 || !(cyc >= 1.0) ||
                    cyc > SCN_MAX_CYCLES || cyc != floor(cyc))) {
    SRV_Err(c, 422, "cycles must be a whole number in 1..%d, got '%s'", SCN_MAX_CYCLES,
            argv[5]);
    return;
  }
  if (!l->sm.engaged || l->sm.relock_failed) {
    SRV_Err(c, 409, "%s is %s: a scan needs a locked laser (lock it first)", l->cfg.name,
            LSR_StateName(l->sm.state));
    return;
  }
  if (l->ramp.active) {
    SRV_Err(c, 409, "%s is ramping: wait for the ramp to end", l->cfg.name);
    return;
  }
  if (CTL_Scan(d->ctl, l, w, amp, period, (long)cyc, err, sizeof err) != 0) {
    SRV_Err(c, 422, "%s", err);
    return;
  }
  log_info("laser %s: scan %s %g MHz %g s %ld cycles around %.9f THz", l->cfg.name,
           SCN_WaveName(w), amp, period, (long)cyc, l->scan.centre_thz);
  scan_line(c, l);
  SRV_Ok(c, NULL);
}

typedef struct {
  SRV_Pending *p;
  WLD_Daemon *d;
  int apply;
} TuneLater;

/* The tune's answer, and with apply its figures in force (bumpless). */
static void
tuned(CTL_Laser *l, int rc, int code, const char *why, const TUN_Result *r, void *arg)
{
  TuneLater *w = arg;
  SRV_Conn *c = SRV_PendingConn(w->p);
  char g[5][UTL_DOUBLE_LEN], err[160];
  int applied = 0;

  if (rc == 0 && w->apply) {
    const char *names[] = { "kp", "ki", "kd", "polarity", "sensitivity_mhz_per_v" };
    double v[] = { r->kp, r->ki, r->kd, r->polarity, r->sensitivity_mhz_per_v };

    applied = 1;
    for (int i = 0; i < 5; i++) {
      if (PRM_Set(w->d->ctl, l, PRM_Find(names[i]), v[i], err, sizeof err) != 0) {
        rc = -1;
        code = 422;
        why = err;
        break;
      }
    }
    if (rc == 0)
      log_info("laser %s: tune applied: kp=%g ki=%g kd=%g polarity=%d sensitivity %g MHz/V",
               l->cfg.name, r->kp, r->ki, r->kd, r->polarity, r->sensitivity_mhz_per_v);
  }
  if (c && rc != 0) {
    SRV_Err(c, code, "tune %s: %s", l->cfg.name, why);
  } else if (c) {
    UTL_FormatDouble(g[0], sizeof g[0], r->sensitivity_mhz_per_v);
    UTL_FormatDouble(g[1], sizeof g[1], r->kp);
    UTL_FormatDouble(g[2], sizeof g[2], r->ki);
    UTL_FormatDouble(g[3], sizeof g[3], r->kd);
    SRV_Data(c, "name=%s sensitivity_mhz_per_v=%s polarity=%d noise_mhz=%.3f drift_mhz_rts=%.3f"
             " interval_s=%.3f kp=%s ki=%s kd=%s applied=%d", l->cfg.name, g[0], r->polarity,
             r->noise_mhz, r->drift_mhz_rts, r->interval_s, g[1], g[2], g[3], applied);
    SRV_Ok(c, NULL);
  }
  SRV_Complete(w->p);
  free(w);
}

static void
cmd_tune(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  WLD_Daemon *d = D(ctx);
  CTL_Laser *l = changing_laser(d, c, argv[1]);
  TuneLater *w;
  char err[200];
  int code;

  if (!l)
    return;
  if (argc == 3 && strcasecmp(argv[2], "apply") != 0) {
    SRV_Err(c, 422, "tune: unknown option '%s' (apply)", argv[2]);
    return;
  }
  w = calloc(1, sizeof *w);
  if (w)
    w->p = SRV_Defer(c);
  if (!w || !w->p) {
    free(w);
    SRV_Err(c, 500, "out of memory");
    return;
  }
  w->d = d;
  w->apply = argc == 3;
  if (CTL_Tune(d->ctl, l, tuned, w, err, sizeof err, &code) != 0) {
    SRV_Err(SRV_PendingConn(w->p), code, "%s", err);
    SRV_Complete(w->p);
    free(w);
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
  { "scan", CNF_ROLE_MONITOR, 1, 5, "scan <laser> [<triangle|sawtooth|sine|square> <amplitude_mhz> <period_s> [<cycles>]|stop]", "read, start or stop a setpoint scan around the present setpoint (starting, stopping: control)", cmd_scan },
  { "tune", CNF_ROLE_CONTROL, 1, 2, "tune <laser> [apply]", "measure an unlocked laser's sensitivity, noise and drift and propose gains (apply: set them)", cmd_tune },
  { "reload", CNF_ROLE_CONTROL, 0, 0, "reload", "re-read the config file (an invalid one is refused)", cmd_reload },
  { "iam", CNF_ROLE_MONITOR, 1, 1, "iam <name>", "name this connection (for claims and the log)", cmd_iam },
  { "claim", CNF_ROLE_CONTROL, 1, 3, "claim <laser|all> [<seconds>] [steal]", "reserve lasers for this name (default 300 s; steal: take over)", cmd_claim },
  { "release", CNF_ROLE_CONTROL, 1, 1, "release <laser|all>", "end this name's claims", cmd_release },
  { "hold", CNF_ROLE_CONTROL, 1, 2, "hold <laser> [<seconds>]", "freeze a laser: output held, readings not used (until resume or the time)", cmd_hold },
  { "resume", CNF_ROLE_CONTROL, 1, 1, "resume <laser>", "end a hold (bumpless)", cmd_resume },
};
const int WLD_NumCommands = (int)(sizeof WLD_Commands / sizeof WLD_Commands[0]);
