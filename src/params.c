/* params.c - the run-time parameters of get/set and the state file. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <strings.h>

#include "params.h"
#include "util.h"

enum { P_DOUBLE, P_INT, P_POLARITY };
typedef struct {
  const char *name;
  int type;
  size_t off;            /* offset in CTL_Laser */
  size_t file_off;       /* the config file's value: offset in CNF_Laser */
  double lo, hi;         /* allowed range (set) */
  int current;           /* needs a current actuator */
  int pid;               /* a PID parameter: bumpless retune */
} Param;

#define LO(f) offsetof(CTL_Laser, f)
#define FO(f) offsetof(CNF_Laser, f)
static const Param params[] = {
  { "kp", P_DOUBLE, LO(cfg.kp), FO(kp), 0.0, 1e6, 0, 1 },
  { "ki", P_DOUBLE, LO(cfg.ki), FO(ki), 0.0, 1e6, 0, 1 },
  { "kd", P_DOUBLE, LO(cfg.kd), FO(kd), 0.0, 1e6, 0, 1 },
  { "d_filter_s", P_DOUBLE, LO(cfg.d_tau_s), FO(d_tau_s), 0.0, 100.0, 0, 1 },
  { "polarity", P_POLARITY, LO(cfg.polarity), FO(polarity), -1, 1, 0, 1 },
  { "max_dt_s", P_DOUBLE, LO(cfg.max_dt_s), FO(max_dt_s), 1e-3, 3600.0, 0, 1 },
  { "window_mhz", P_DOUBLE, LO(cfg.window_mhz), FO(window_mhz), 1e-6, 1e7, 0, 0 },
  { "capture_mhz", P_DOUBLE, LO(cfg.capture_mhz), FO(capture_mhz), 1e-6, 1e9, 0, 0 },
  { "modehop_mhz", P_DOUBLE, LO(cfg.modehop_mhz), FO(modehop_mhz), 0.0, 1e9, 0, 0 },
  { "glitch_mhz", P_DOUBLE, LO(cfg.glitch_mhz), FO(glitch_mhz), 0.0, 1e8, 0, 0 },
  { "lock_n", P_INT, LO(cfg.lock_n), FO(lock_n), 1, 100000, 0, 0 },
  { "unlock_m", P_INT, LO(cfg.unlock_m), FO(unlock_m), 1, 100000, 0, 0 },
  { "max_step_v", P_DOUBLE, LO(cfg.piezo.max_step_v), FO(piezo.max_step_v), 0.0, 1e6, 0, 1 },
  { "piezo_min_v", P_DOUBLE, LO(piezo_lo), FO(piezo.min_v), -1e6, 1e6, 0, 1 },
  { "piezo_max_v", P_DOUBLE, LO(piezo_hi), FO(piezo.max_v), -1e6, 1e6, 0, 1 },
  { "current_min_v", P_DOUBLE, LO(current_lo), FO(current.min_v), -1e6, 1e6, 1, 0 },
  { "current_max_v", P_DOUBLE, LO(current_hi), FO(current.max_v), -1e6, 1e6, 1, 0 },
  { "feedforward", P_DOUBLE, LO(cfg.current.feedforward), FO(current.feedforward), -1e6, 1e6,
    1, 0 },
  { "sensitivity_mhz_per_v", P_DOUBLE, LO(cfg.sensitivity_mhz_per_v),
    FO(sensitivity_mhz_per_v), -CNF_MAX_SENSITIVITY, CNF_MAX_SENSITIVITY, 0, 0 },
};
#define NPARAMS ((int)(sizeof params / sizeof params[0]))

static double
get_at(const void *base, size_t off, int type)
{
  const char *b = base;

  if (type == P_DOUBLE)
    return *(const double *)(const void *)(b + off);
  return *(const int *)(const void *)(b + off);
}

int
PRM_Count(void)
{
  return NPARAMS;
}

const char *
PRM_Name(int i)
{
  return params[i].name;
}

int
PRM_Find(const char *name)
{
  for (int i = 0; i < NPARAMS; i++)
    if (strcasecmp(params[i].name, name) == 0)
      return i;
  return -1;
}

int
PRM_Applies(const CTL_Laser *l, int i)
{
  return !params[i].current || l->current_dev;
}

double
PRM_Value(const CTL_Laser *l, int i)
{
  return get_at(l, params[i].off, params[i].type);
}

double
PRM_FileValue(const CTL_Laser *l, int i)
{
  return get_at(&l->base_cfg, params[i].file_off, params[i].type);
}

void
PRM_Format(const CTL_Laser *l, int i, char *buf, size_t len)
{
  if (params[i].type == P_DOUBLE)
    UTL_FormatDouble(buf, len, PRM_Value(l, i));
  else
    snprintf(buf, len, "%d", (int)PRM_Value(l, i));
}

int
PRM_Set(CTL_Ctx *ctx, CTL_Laser *l, int i, double v, char *err, size_t errlen)
{
  const Param *p = &params[i];
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
  CTL_ParamsChanged(ctx, l, &before);
  return 0;
}
