/* jsonfmt.h - JSON objects for a laser, a reading, a state change and the
 * whole status (jansson), for the doors that speak JSON (HTTP, and later
 * MQTT): one encoding, written once.  Loop thread only; every function
 * returns a new reference (NULL if out of memory).
 *
 * Field names are those of the text protocol (DESIGN.md sections 3 and 9):
 * name, state, setpoint_thz, freq_thz (null without a valid reading),
 * error_mhz, piezo_v, current_v (only with a current actuator), ...
 */
#ifndef WL_JSONFMT_H
#define WL_JSONFMT_H

#include <jansson.h>

#include "ctl.h"
#include "lsr.h"
#include "wm.h"

/* Wall-clock time now, Unix seconds (the t of events). */
double JSF_UnixNow(void);

/* Everything about one laser that the status carries (d: the daemon, for
   the calibration and raw readings; a const WLD_Daemon *). */
json_t *JSF_Laser(const void *d, const CTL_Laser *l);

/* A reading event: laser, t, freq_thz (null for an error code, then
   wm_status), error_mhz, piezo_v, current_v, state. */
json_t *JSF_Reading(const void *d, const CTL_Laser *l, const WM_Reading *r, double t);

/* A state change: laser, state, from, t. */
json_t *JSF_State(const CTL_Laser *l, LSR_StateId from, double t);

/* The whole status: version, t, summary, lasers, devices, calibration. */
json_t *JSF_Status(const void *d);

/* A text-protocol data line "k=v k=v" as an object (numbers as numbers). */
json_t *JSF_KeyValues(const char *line);

#endif
