/* statefile.h - the runtime state file: what users changed at run time.
 *
 * Text, one "laser" line per laser with key=value fields, closed by an "end"
 * line carrying the count and a CRC-32 of everything before it, so a
 * truncated or garbage file is recognised and ignored.  Written atomically:
 * temp file in the same directory, fsync, rename, fsync of the directory.
 *
 *   # wavelock runtime state, format 1 (written by wavelockd; do not edit)
 *   laser name=cool780 setpoint_thz=384.23048440000002 engaged=1 kp=0 ki=0.002 kd=0 piezo_v=5.25 current_v=-0.125
 *   end count=1 crc32=89abcdef
 *
 * Doubles are written with %.17g and read back exactly; current_v only for
 * lasers with a current actuator; ramp_to_thz and ramp_mhz_s (both or
 * neither) only for a laser whose setpoint was ramping, setpoint_thz then
 * being the point the ramp had reached.  crc32 (8 hex digits) is the CRC-32 of
 * zlib (Python: zlib.crc32) over every byte before the end line.  Comment
 * and empty lines may precede it; unknown fields in a laser line are ignored.
 */
#ifndef WL_STATEFILE_H
#define WL_STATEFILE_H

#include <stddef.h>
#include "conf.h"

typedef struct {
  char name[CNF_NAME_MAX];
  double setpoint_thz;
  int engaged;
  double kp, ki, kd;
  double piezo_v;
  int has_current;
  double current_v;
  int ramp;                  /* a ramp was running: resume it */
  double ramp_to_thz, ramp_mhz_s;
} STF_Laser;

/* Write n lasers atomically to path; 0, or -1 with a message in err. */
int STF_Save(const char *path, const STF_Laser *lasers, int n, char *err, size_t errlen);

/* Load path: returns the count and a malloc'ed array in *out (free()), 0 if
   the file does not exist, or -1 with a message in err if it is unreadable,
   truncated or malformed (then nothing is returned). */
int STF_Load(const char *path, STF_Laser **out, char *err, size_t errlen);

#endif
