/* jsonfmt.c - the JSON encoding of lasers, readings and state changes. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calib.h"
#include "daemon.h"
#include "jsonfmt.h"
#include "util.h"

double
JSF_UnixNow(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Set key to a number, or to null for a NaN or infinity (not JSON). */
static void
set_num(json_t *o, const char *key, double v)
{
  json_object_set_new(o, key, isfinite(v) ? json_real(v) : json_null());
}

static void
add_outputs(json_t *o, const CTL_Laser *l)
{
  set_num(o, "piezo_v", l->piezo_v);
  if (l->current_dev)
    set_num(o, "current_v", l->current_v);
}

json_t *
JSF_Laser(const void *dp, const CTL_Laser *l)
{
  const WLD_Daemon *d = dp;
  json_t *o = json_object(), *lim;
  char railed[LSR_RAIL_NAME_MAX];

  if (!o)
    return NULL;
  json_object_set_new(o, "name", json_string(l->cfg.name));
  json_object_set_new(o, "state", json_string(LSR_StateName(l->sm.state)));
  json_object_set_new(o, "channel", json_integer(l->cfg.channel));
  set_num(o, "setpoint_thz", l->setpoint_thz);
  json_object_set_new(o, "engaged", json_boolean(l->sm.engaged));
  if (l->have_reading && l->last.value > 0.0) {
    set_num(o, "freq_thz", l->last.value);
    set_num(o, "error_mhz", l->last_error_mhz);
    if (d->host->cal_applies(d, l->cfg.channel) && d->channels[l->cfg.channel].value > 0.0)
      set_num(o, "raw_freq_thz", d->channels[l->cfg.channel].value);
  } else {
    json_object_set_new(o, "freq_thz", json_null());
    json_object_set_new(o, "error_mhz", json_null());
    if (l->have_reading)
      json_object_set_new(o, "wm_status", json_string(WM_ErrorName(l->last.value)));
  }
  if (l->have_reading)
    set_num(o, "age_ms", (UTL_Now() - l->last.rx_s) * 1000.0);
  else
    json_object_set_new(o, "age_ms", json_null());
  add_outputs(o, l);
  /* Limits in force (runtime, inside the configured ones). */
  lim = json_object();
  set_num(lim, "piezo_min_v", l->piezo_lo);
  set_num(lim, "piezo_max_v", l->piezo_hi);
  if (l->current_dev) {
    set_num(lim, "current_min_v", l->current_lo);
    set_num(lim, "current_max_v", l->current_hi);
  }
  set_num(lim, "min_thz", l->cfg.min_thz);
  set_num(lim, "max_thz", l->cfg.max_thz);
  set_num(lim, "window_mhz", l->cfg.window_mhz);
  json_object_set_new(o, "limits", lim);
  json_object_set_new(o, "railed", json_string(LSR_RailName(l->rail.railed, railed,
                                                            sizeof railed)));
  json_object_set_new(o, "ramp", json_boolean(l->ramp.active));
  json_object_set_new(o, "cycles", json_integer((json_int_t)l->cycles));
  json_object_set_new(o, "write_errors", json_integer((json_int_t)l->write_errors));
  json_object_set_new(o, "glitches", json_integer((json_int_t)l->glitch.glitches));
  json_object_set_new(o, "relocks", json_integer((json_int_t)l->sm.relocks));
  if (l->search.active)
    json_object_set_new(o, "search", json_integer(l->search.step));
  if (l->sm.relock_failed)
    json_object_set_new(o, "reason", json_string("relock failed"));
  json_object_set_new(o, "calibrated", json_boolean(d->host->cal_applies(d, l->cfg.channel)));
  /* The claim (DESIGN.md section 8): owner null when unclaimed. */
  double wall_now = UTL_WallNow();

  if (l->owner[0] && l->claim_until > wall_now) {
    json_object_set_new(o, "owner", json_string(l->owner));
    json_object_set_new(o, "claim_s", json_integer((json_int_t)ceil(l->claim_until - wall_now)));
  } else {
    json_object_set_new(o, "owner", json_null());
    json_object_set_new(o, "claim_s", json_integer(0));
  }
  if (CTL_HoldReason(l))
    json_object_set_new(o, "hold", json_string(CTL_HoldReason(l)));
  return o;
}

json_t *
JSF_Reading(const void *dp, const CTL_Laser *l, const WM_Reading *r, double t)
{
  const WLD_Daemon *d = dp;
  json_t *o = json_object();

  if (!o)
    return NULL;
  json_object_set_new(o, "laser", json_string(l->cfg.name));
  json_object_set_new(o, "t", json_real(t));
  if (r->value > 0.0) {
    set_num(o, "freq_thz", r->value);
    set_num(o, "error_mhz", l->last_error_mhz);
    if (d->host->cal_applies(d, l->cfg.channel))
      set_num(o, "raw_freq_thz", d->channels[l->cfg.channel].value);
  } else {
    json_object_set_new(o, "freq_thz", json_null());
    json_object_set_new(o, "error_mhz", json_null());
    json_object_set_new(o, "wm_status", json_string(WM_ErrorName(r->value)));
  }
  add_outputs(o, l);
  json_object_set_new(o, "state", json_string(LSR_StateName(l->sm.state)));
  return o;
}

json_t *
JSF_State(const CTL_Laser *l, LSR_StateId from, double t)
{
  json_t *o = json_object();

  if (!o)
    return NULL;
  json_object_set_new(o, "laser", json_string(l->cfg.name));
  json_object_set_new(o, "state", json_string(LSR_StateName(l->sm.state)));
  json_object_set_new(o, "from", json_string(LSR_StateName(from)));
  json_object_set_new(o, "t", json_real(t));
  return o;
}

json_t *
JSF_KeyValues(const char *line)
{
  json_t *o = json_object();
  char buf[1024], *save = NULL;

  if (!o)
    return NULL;
  UTL_Strlcpy(buf, line, sizeof buf);
  for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(w, '='), *end;
    double v;

    if (!eq || eq == w)
      continue;
    *eq++ = '\0';
    v = strtod(eq, &end);
    if (*eq && !*end && isfinite(v))
      json_object_set_new(o, w, json_real(v));
    else
      json_object_set_new(o, w, json_string(eq));
  }
  return o;
}

static json_t *
calibration(const WLD_Daemon *d)
{
  json_t *o = json_object();
  CAL_Report r;
  double now = UTL_Now();

  if (!o)
    return NULL;
  if (!d->cal) {
    json_object_set_new(o, "mode", json_string("none"));
    json_object_set_new(o, "state", json_string("off"));
    return o;
  }
  CAL_GetReport(d->cal, now, &r);
  json_object_set_new(o, "mode", json_string(d->cfg->calibration.mode == CNF_CAL_WLMDATA ?
                                             "wlmdata" : "correct"));
  json_object_set_new(o, "state", json_string(CAL_StateName(r.state)));
  json_object_set_new(o, "reason", json_string(CAL_ReasonName(r.reason)));
  set_num(o, "ppb", r.ppb);
  set_num(o, "offset_mhz", r.offset_mhz);
  if (r.age_s >= 0)
    set_num(o, "age_s", r.age_s);
  else
    json_object_set_new(o, "age_s", json_null());
  json_object_set_new(o, "channel", json_integer(d->cfg->calibration.channel));
  json_object_set_new(o, "applied", json_boolean(r.applies));
  return o;
}

json_t *
JSF_Status(const void *dp)
{
  const WLD_Daemon *d = dp;
  json_t *o = json_object(), *lasers = json_array(), *devs = json_array(), *sum = json_object();
  int n = CTL_LaserCount(d->ctl), locked = 0, up = 0;
  double newest = -1.0;
  char buf[512];

  if (!o || !lasers || !devs || !sum) {
    json_decref(o);
    json_decref(lasers);
    json_decref(devs);
    json_decref(sum);
    return NULL;
  }
  json_object_set_new(o, "version", json_string(PACKAGE_VERSION));
  json_object_set_new(o, "t", json_real(JSF_UnixNow()));
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    if (l->sm.state == LSR_LOCKED)
      locked++;
    json_array_append_new(lasers, JSF_Laser(d, l));
  }
  for (int i = 0; i < CTL_DeviceCount(d->ctl); i++) {
    json_t *dev;

    CTL_DeviceStatus(d->ctl, i, buf, sizeof buf);
    dev = JSF_KeyValues(buf);
    if (dev && json_real_value(json_object_get(dev, "up")) > 0.5)
      up++;
    json_array_append_new(devs, dev);
  }
  for (int ch = 1; ch <= CNF_MAX_CHANNEL; ch++)
    if (d->have_channel[ch] && d->channels[ch].rx_s > newest)
      newest = d->channels[ch].rx_s;
  json_object_set_new(sum, "lasers", json_integer(n));
  json_object_set_new(sum, "locked", json_integer(locked));
  json_object_set_new(sum, "devices", json_integer(CTL_DeviceCount(d->ctl)));
  json_object_set_new(sum, "devices_up", json_integer(up));
  if (newest >= 0)
    set_num(sum, "wavemeter_age_ms", (UTL_Now() - newest) * 1000.0);
  else
    json_object_set_new(sum, "wavemeter_age_ms", json_null());
  json_object_set_new(o, "summary", sum);
  json_object_set_new(o, "lasers", lasers);
  json_object_set_new(o, "devices", devs);
  json_object_set_new(o, "calibration", calibration(d));
  return o;
}
