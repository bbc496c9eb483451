/* params.h - the run-time parameters of a laser: what get and set read and
 * change (DESIGN.md section 3), and what the state file keeps besides the
 * setpoint.
 *
 * One table (src/params.c): a name, where the value lives in CTL_Laser, where
 * the config file's value lives in CNF_Laser, the range set allows, and
 * whether it needs a current actuator.  Parameters are numbered
 * 0..PRM_Count()-1 in table order.
 */
#ifndef WL_PARAMS_H
#define WL_PARAMS_H

#include <stddef.h>

#include "ctl.h"

/* How many parameters there are. */
int PRM_Count(void);

/* The name of parameter i (as get/set and the state file spell it). */
const char *PRM_Name(int i);

/* The index of the parameter called name (any case), or -1. */
int PRM_Find(const char *name);

/* Whether parameter i exists for laser l (the current ones need a current
   actuator). */
int PRM_Applies(const CTL_Laser *l, int i);

/* The value in force, and the config file's value (l->base_cfg). */
double PRM_Value(const CTL_Laser *l, int i);
double PRM_FileValue(const CTL_Laser *l, int i);

/* The value in force as get prints it (len: UTL_DOUBLE_LEN or more). */
void PRM_Format(const CTL_Laser *l, int i, char *buf, size_t len);

/* Set parameter i to v with every check of the set command (range, integer,
   polarity, limits that only narrow the configured ones and keep a
   non-empty range, window below capture), bumplessly; 0, or -1 with the
   reason in err (answered with 422). */
int PRM_Set(CTL_Ctx *ctx, CTL_Laser *l, int i, double v, char *err, size_t errlen);

#endif
