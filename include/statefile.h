/* statefile.h - the runtime state file: what users changed at run time.
 *
 * Text, one "laser" line per laser with key=value fields, closed by an "end"
 * line carrying the count and a CRC-32 of everything before it, so a
 * truncated or garbage file is recognised and ignored.  Written atomically:
 * temp file in the same directory, fsync, rename, fsync of the directory.
 *
 *   # wavelock runtime state, format 2 (written by wavelockd; do not edit)
 *   laser name=cool780 engaged=1 piezo_v=5.25 current_v=-0.125 set.setpoint_thz=384.2304844 file.setpoint_thz=384.2304844 set.kp=0 file.kp=0 set.ki=0.005 file.ki=0.002 set.kd=0 file.kd=0
 *   end count=1 crc32=89abcdef
 *
 * Doubles are written in the shortest form that reads back exactly; current_v only for
 * lasers with a current actuator; ramp_to_thz and ramp_mhz_s (both or
 * neither) only for a laser whose setpoint was ramping.  Every run-time
 * parameter (the setpoint setpoint_thz, then being the point the ramp had
 * reached, the gains kp, ki, kd, and those of get/set: polarity, limits,
 * ...) is set.<key>=value, optionally followed by file.<key>=value, the
 * config file's value at the save: one the file changed while the daemon
 * was down comes from the file at the next start.  crc32 (8 hex digits) is
 * the CRC-32 of zlib (Python: zlib.crc32) over every byte before the end
 * line.  Comment and empty lines may precede it; unknown fields in a laser
 * line are ignored.  Format 1 files (no format line, or "format 1": the
 * setpoint and gains in fields setpoint_thz, kp, ki, kd with file_<key>
 * partners) load as format 2 (statefile.c has both formats).
 *
 * One optional "calibration" line (not counted by the end line) keeps the
 * correction against the reference laser (calib.h) across a restart:
 *   calibration ref_thz=384.2304844 eps=2.5e-08 unix_s=1764900000.5
 * eps is the relative correction, ref_thz the reference frequency it belongs
 * to, unix_s when the reference last updated it.  Files without it (older
 * ones) load as before.
 */
#ifndef WL_STATEFILE_H
#define WL_STATEFILE_H

#include <stddef.h>
#include "conf.h"

#define STF_FORMAT 2               /* the format written (1 and 2 are read) */
#define STF_MAX_PARAMS 48          /* run-time parameters per laser */
#define STF_KEY_MAX 32             /* their names: [a-z0-9_], 1 to 31 characters */
#define STF_KEY_SETPOINT "setpoint_thz"   /* the setpoint's parameter (required) */

/* A run-time parameter: set.<key>=value, file.<key>=file. */
typedef struct {
  char key[STF_KEY_MAX];
  double value;              /* in force at the save */
  double file;               /* the config file's value at the save (has_file) */
  int has_file;
} STF_Param;

typedef struct {
  char name[CNF_NAME_MAX];
  int engaged;
  double piezo_v;
  int has_current;
  double current_v;
  int ramp;                  /* a ramp was running: resume it */
  double ramp_to_thz, ramp_mhz_s;
  /* The run-time parameters: the setpoint (STF_KEY_SETPOINT), the gains
     and those of get/set, one rule for all (see above). */
  int n_params;
  STF_Param params[STF_MAX_PARAMS];
} STF_Laser;

/* The parameter key of l, or NULL. */
STF_Param *STF_FindParam(const STF_Laser *l, const char *key);

/* Append a parameter to l; 0, or -1 if the key is not a valid name, is
   there already or l is full. */
int STF_AddParam(STF_Laser *l, const char *key, double value, int has_file, double file);

/* The calibration record (the "calibration" line). */
typedef struct {
  int present;
  double ref_thz;            /* the reference frequency the correction belongs to */
  double eps;                /* the relative correction */
  double unix_s;             /* when the reference last updated it (wall clock) */
} STF_Calibration;

/* Write n lasers atomically to path; 0, or -1 with a message in err. */
int STF_Save(const char *path, const STF_Laser *lasers, int n, char *err, size_t errlen);

/* STF_Save with a calibration record (cal NULL or not present: none). */
int STF_SaveCal(const char *path, const STF_Laser *lasers, int n, const STF_Calibration *cal,
                char *err, size_t errlen);

/* Load path: returns the count and a malloc'ed array in *out (free()), 0 if
   the file does not exist, or -1 with a message in err if it is unreadable,
   truncated or malformed (then nothing is returned). */
int STF_Load(const char *path, STF_Laser **out, char *err, size_t errlen);

/* STF_Load that also returns the calibration record in *cal (present = 0:
   none; cal may be NULL). */
int STF_LoadCal(const char *path, STF_Laser **out, STF_Calibration *cal, char *err,
                size_t errlen);

/* Remove temporary files a save left behind when the process died between
   creating and renaming one (path.tmpXXXXXX in path's directory).  For the
   start, before any save.  Returns how many were removed. */
int STF_RemoveStaleTemps(const char *path);

/* Whether a state file could be saved at path, without writing anything:
   its directory exists and this process may create files in it, and path,
   if it exists, is a regular file.  0 (also for an empty path), or -1 with
   a message in err. */
int STF_CheckWritable(const char *path, char *err, size_t errlen);

/* A background writer: STF_Save on a thread of its own, so the caller (the
   event loop) never waits for the disk (an fsync can take seconds on a busy
   disk).  Snapshots are written in order; one submitted while another is
   waiting replaces it (only the newest state matters). */
typedef struct STF_Writer STF_Writer;

/* NULL with errno set if the thread cannot be started. */
STF_Writer *STF_WriterCreate(void);

/* Queue lasers[0..n-1] for path; the writer takes the array (malloc'ed;
   freed by the writer).  0, or -1 (ENOMEM, or the writer is stopping; the
   array is freed either way). */
int STF_WriterSubmit(STF_Writer *w, const char *path, STF_Laser *lasers, int n);

/* STF_WriterSubmit with a calibration record (copied; NULL: none). */
int STF_WriterSubmitCal(STF_Writer *w, const char *path, STF_Laser *lasers, int n,
                        const STF_Calibration *cal);

/* Wait until everything submitted so far is written.  0 if the last write
   succeeded (or there was none), else -1 with its message in err. */
int STF_WriterFlush(STF_Writer *w, char *err, size_t errlen);

/* The outcome of the last finished write, without waiting: 0 ok (or none
   yet), -1 failed (message in err).  *writes, if not NULL, gets the number
   of finished writes. */
int STF_WriterStatus(STF_Writer *w, char *err, size_t errlen, unsigned long *writes);

/* Write what is queued, stop the thread and free the writer. */
void STF_WriterDestroy(STF_Writer *w);

#endif
