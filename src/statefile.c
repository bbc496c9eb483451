/* statefile.c - the runtime state file: atomic save, checked load.
 *
 * Format 2 (text, one record per line; written since wavelock has gained
 * one rule for every saved parameter):
 *
 *   # wavelock runtime state, format 2 (written by wavelockd; do not edit)
 *   laser name=cool780 engaged=1 piezo_v=5.25 current_v=-0.125 set.setpoint_thz=384.2304944 file.setpoint_thz=384.2304844 set.kp=0.002 file.kp=0.001 set.ki=0.005 file.ki=0.002 set.kd=0 file.kd=0 set.polarity=-1 file.polarity=1
 *   calibration ref_thz=384.2304844 eps=2.5e-08 unix_s=1764900000.5
 *   end count=1 crc32=89abcdef
 *
 * The first line names the format; a file without it is format 1.  A laser
 * line holds the laser's own state (name, engaged, piezo_v; current_v only
 * for lasers with a current actuator; ramp_to_thz and ramp_mhz_s, both or
 * neither, only for a ramping laser) and its run-time parameters, every one
 * alike: set.<key>=value is the value in force at the save and
 * file.<key>=value (optional, after its set.<key>) the config file's value
 * at the save.  The setpoint is the parameter setpoint_thz (required; for a
 * ramping laser the point the ramp had reached), the gains are kp, ki and
 * kd, the others those of get/set.  At the start a saved value wins unless
 * the config file's value differs from its file.<key> (the file was edited
 * while the daemon was down): then the file's value is used, and logged.
 * Keys are [a-z0-9_], at most STF_KEY_MAX - 1 characters, at most
 * STF_MAX_PARAMS per laser.
 *
 * Format 1 (still loaded) had the setpoint and gains in fields of their own
 * (setpoint_thz, kp, ki, kd, required) and the file's values of those in
 * file_setpoint_thz, file_kp, file_ki and file_kd (all or none):
 *
 *   # wavelock runtime state, format 1 (written by wavelockd; do not edit)
 *   laser name=cool780 setpoint_thz=384.2304844 engaged=1 kp=0 ki=0.002 kd=0 piezo_v=5.25 current_v=-0.125 set.polarity=-1 file.polarity=1
 *   end count=1 crc32=89abcdef
 *
 * They load as the parameters setpoint_thz, kp, ki and kd of format 2, with
 * the same meaning.
 *
 * Doubles are written in the shortest form that reads back exactly
 * (UTL_FormatDouble: %.15g, %.16g or %.17g).  The end line must be the last
 * line; its count is the number of laser lines and its crc32 is the CRC-32
 * (IEEE 802.3, as zlib) of every byte before the end line.  Comment lines
 * (#) and empty lines are allowed before it; unknown key=value fields in a
 * laser line are ignored (written by a newer wavelock); a format newer than
 * STF_FORMAT is refused.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statefile.h"
#include "util.h"

#define STF_MAX_BYTES (4 * 1024 * 1024)   /* far more than 64 lasers need */
#define STF_MAX_LINE 8192   /* the longest line STF_Save can write is about 6200 */

/* CRC-32, reflected polynomial 0xEDB88320 (the zlib/PNG/Ethernet CRC). */
static uint32_t
crc32_update(uint32_t crc, const char *data, size_t len)
{
  crc = ~crc;
  for (size_t i = 0; i < len; i++) {
    crc ^= (unsigned char)data[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* ------------------------------------------------------------------ */
/* Save                                                                 */

typedef struct {
  char *data;
  size_t len, cap;
  int failed;
} Buf;

static void __attribute__((format(printf, 2, 3)))
buf_printf(Buf *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (b->failed)
    return;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->failed = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    {
      size_t cap = 2 * b->cap + (size_t)n + 1;
      char *d = realloc(b->data, cap);

      if (!d) {
        b->failed = 1;
        return;
      }
      b->data = d;
      b->cap = cap;
    }
  }
}

/* " key=value", the value in the shortest form that reads back exactly. */
static void
buf_double(Buf *b, const char *key, double v)
{
  char num[UTL_DOUBLE_LEN];

  buf_printf(b, " %s=%s", key, UTL_FormatDouble(num, sizeof num, v));
}

/* A laser name goes into a space-separated key=value line. */
static int
name_ok(const char *name)
{
  if (!name[0] || strlen(name) >= CNF_NAME_MAX)
    return 0;
  for (const char *c = name; *c; c++) {
    if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '=')
      return 0;
  }
  return 1;
}

/* A run-time parameter's name: [a-z0-9_], 1 to STF_KEY_MAX - 1 characters. */
/* A claim's owner: a name iam accepts (1..63 of [A-Za-z0-9._@+:-]). */
#define STF_CLAIM_MAX_S 604800.0
static int
claim_owner_ok(const char *o)
{
  size_t n = strlen(o);

  return n >= 1 && n <= 63 &&
         strspn(o, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@+:") == n;
}

static int
param_key_ok(const char *key)
{
  size_t n = strnlen(key, STF_KEY_MAX);

  if (n == 0 || n >= STF_KEY_MAX)
    return 0;
  return strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

STF_Param *
STF_FindParam(const STF_Laser *l, const char *key)
{
  for (int k = 0; k < l->n_params; k++)
    if (strcmp(l->params[k].key, key) == 0)
      return (STF_Param *)&l->params[k];
  return NULL;
}

int
STF_AddParam(STF_Laser *l, const char *key, double value, int has_file, double file)
{
  STF_Param *p;

  if (!param_key_ok(key) || STF_FindParam(l, key) || l->n_params >= STF_MAX_PARAMS)
    return -1;
  p = &l->params[l->n_params++];
  memset(p, 0, sizeof *p);
  UTL_Strlcpy(p->key, key, sizeof p->key);
  p->value = value;
  p->has_file = has_file != 0;
  p->file = has_file ? file : 0.0;
  return 0;
}

static int
write_all(int fd, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, data, len);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Directory part of path ("." if none). */
static void
dir_of(const char *path, char *dir, size_t dirlen)
{
  const char *slash = strrchr(path, '/');

  if (!slash)
    UTL_Strlcpy(dir, ".", dirlen);
  else if (slash == path)
    UTL_Strlcpy(dir, "/", dirlen);
  else {
    size_t n = (size_t)(slash - path);

    if (n >= dirlen)
      n = dirlen - 1;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
}

int
STF_Save(const char *path, const STF_Laser *lasers, int n, char *err, size_t errlen)
{
  return STF_SaveCal(path, lasers, n, NULL, err, errlen);
}

int
STF_SaveCal(const char *path, const STF_Laser *lasers, int n, const STF_Calibration *cal,
            char *err, size_t errlen)
{
  Buf b = { NULL, 0, 0, 0 };
  char tmp[CNF_PATH_MAX + 16], dir[CNF_PATH_MAX], ebuf[128];
  uint32_t crc;
  int fd, dfd;

  if (!path || !path[0] || strlen(path) >= CNF_PATH_MAX) {
    UTL_SetErr(err, errlen, "bad state file path");
    return -1;
  }
  if (n < 0 || (n > 0 && !lasers)) {
    UTL_SetErr(err, errlen, "%s: bad laser count %d", path, n);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    const STF_Laser *l = &lasers[i];

    if (!name_ok(l->name)) {
      UTL_SetErr(err, errlen, "%s: laser %d: name \"%s\" cannot be stored", path, i, l->name);
      return -1;
    }
    if (!isfinite(l->piezo_v) || (l->has_current && !isfinite(l->current_v)) ||
        (l->ramp && (!isfinite(l->ramp_to_thz) || !(l->ramp_mhz_s > 0.0) ||
                     !isfinite(l->ramp_mhz_s)))) {
      UTL_SetErr(err, errlen, "%s: laser %s: a value is not a finite number", path, l->name);
      return -1;
    }
    if (l->n_params < 0 || l->n_params > STF_MAX_PARAMS) {
      UTL_SetErr(err, errlen, "%s: laser %s: bad parameter count", path, l->name);
      return -1;
    }
    for (int k = 0; k < l->n_params; k++) {
      if (!param_key_ok(l->params[k].key) || !isfinite(l->params[k].value) ||
          (l->params[k].has_file && !isfinite(l->params[k].file))) {
        UTL_SetErr(err, errlen, "%s: laser %s: parameter %d cannot be stored", path, l->name, k);
        return -1;
      }
      for (int m = 0; m < k; m++)
        if (strcmp(l->params[m].key, l->params[k].key) == 0) {
          UTL_SetErr(err, errlen, "%s: laser %s: parameter %s twice", path, l->name,
                     l->params[k].key);
          return -1;
        }
    }
    if (!STF_FindParam(l, STF_KEY_SETPOINT)) {
      UTL_SetErr(err, errlen, "%s: laser %s: no %s parameter", path, l->name, STF_KEY_SETPOINT);
      return -1;
    }
  }

  if (cal && cal->present &&
      (!(cal->ref_thz > 0.0) || !isfinite(cal->ref_thz) || !isfinite(cal->eps) ||
       !isfinite(cal->unix_s))) {
    UTL_SetErr(err, errlen, "%s: calibration: a value is not a finite number", path);
    return -1;
  }

  b.cap = 256 + 512 * (size_t)n;
  b.data = malloc(b.cap);
  if (!b.data) {
    UTL_SetErr(err, errlen, "%s: out of memory", path);
    return -1;
  }
  buf_printf(&b, "# wavelock runtime state, format %d (written by wavelockd; do not edit)\n",
             STF_FORMAT);
  for (int i = 0; i < n; i++) {
    const STF_Laser *l = &lasers[i];

    buf_printf(&b, "laser name=%s", l->name);
    buf_printf(&b, " engaged=%d", l->engaged ? 1 : 0);
    buf_double(&b, "piezo_v", l->piezo_v);
    if (l->has_current)
      buf_double(&b, "current_v", l->current_v);
    if (l->ramp) {
      buf_double(&b, "ramp_to_thz", l->ramp_to_thz);
      buf_double(&b, "ramp_mhz_s", l->ramp_mhz_s);
    }
    for (int k = 0; k < l->n_params; k++) {
      char key[STF_KEY_MAX + 8];

      snprintf(key, sizeof key, "set.%s", l->params[k].key);
      buf_double(&b, key, l->params[k].value);
      if (l->params[k].has_file) {
        snprintf(key, sizeof key, "file.%s", l->params[k].key);
        buf_double(&b, key, l->params[k].file);
      }
    }
    buf_printf(&b, "\n");
    if (l->owner[0]) {
      if (!claim_owner_ok(l->owner) || !isfinite(l->claim_expires) ||
          !(l->claim_len_s >= 1.0 && l->claim_len_s <= STF_CLAIM_MAX_S)) {
        free(b.data);
        UTL_SetErr(err, errlen, "%s: laser %s: bad claim", path, l->name);
        return -1;
      }
      buf_printf(&b, "claim laser=%s owner=%s", l->name, l->owner);
      buf_double(&b, "expires", l->claim_expires);
      buf_double(&b, "len_s", l->claim_len_s);
      buf_printf(&b, "\n");
    }
  }
  if (cal && cal->present) {
    buf_printf(&b, "calibration");
    buf_double(&b, "ref_thz", cal->ref_thz);
    buf_double(&b, "eps", cal->eps);
    buf_double(&b, "unix_s", cal->unix_s);
    buf_printf(&b, "\n");
  }
  crc = crc32_update(0, b.data, b.failed ? 0 : b.len);
  buf_printf(&b, "end count=%d crc32=%08x\n", n, (unsigned int)crc);
  if (b.failed) {
    free(b.data);
    UTL_SetErr(err, errlen, "%s: out of memory", path);
    return -1;
  }

  snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
  fd = mkstemp(tmp);
  if (fd < 0) {
    UTL_SetErr(err, errlen, "%s: cannot create a temporary file: %s", path,
            strerror_r(errno, ebuf, sizeof ebuf));
    free(b.data);
    return -1;
  }
  if (write_all(fd, b.data, b.len) < 0 || fsync(fd) < 0) {
    UTL_SetErr(err, errlen, "%s: cannot write %s: %s", path, tmp,
            strerror_r(errno, ebuf, sizeof ebuf));
    close(fd);
    unlink(tmp);
    free(b.data);
    return -1;
  }
  free(b.data);
  if (close(fd) < 0) {
    UTL_SetErr(err, errlen, "%s: cannot write %s: %s", path, tmp,
            strerror_r(errno, ebuf, sizeof ebuf));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) < 0) {
    UTL_SetErr(err, errlen, "%s: cannot rename %s into place: %s", path, tmp,
            strerror_r(errno, ebuf, sizeof ebuf));
    unlink(tmp);
    return -1;
  }
  /* Make the rename itself durable.  The new file is in place already, so a
     directory that cannot be synced (some file systems refuse) is no error. */
  dir_of(path, dir, sizeof dir);
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Load                                                                 */

/* Read the whole file; 1 if it does not exist, 0 ok, -1 error. */
static int
read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
  char ebuf[128];
  struct stat st;
  size_t cap, used = 0;
  char *d;
  int fd;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return 1;
    UTL_SetErr(err, errlen, "%s: cannot read: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
    return -1;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    UTL_SetErr(err, errlen, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  if (st.st_size > STF_MAX_BYTES) {
    UTL_SetErr(err, errlen, "%s: too large to be a state file (%lld bytes)", path,
            (long long)st.st_size);
    close(fd);
    return -1;
  }
  cap = (size_t)st.st_size + 1;
  d = malloc(cap);
  if (!d) {
    UTL_SetErr(err, errlen, "%s: out of memory", path);
    close(fd);
    return -1;
  }
  for (;;) {
    ssize_t n;

    if (used + 1 >= cap) {
      char *nd;

      if (cap > STF_MAX_BYTES) {
        UTL_SetErr(err, errlen, "%s: too large to be a state file", path);
        free(d);
        close(fd);
        return -1;
      }
      nd = realloc(d, cap * 2);
      if (!nd) {
        UTL_SetErr(err, errlen, "%s: out of memory", path);
        free(d);
        close(fd);
        return -1;
      }
      d = nd;
      cap *= 2;
    }
    n = read(fd, d + used, cap - 1 - used);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      UTL_SetErr(err, errlen, "%s: cannot read: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
      free(d);
      close(fd);
      return -1;
    }
    if (n == 0)
      break;
    used += (size_t)n;
  }
  close(fd);
  d[used] = '\0';
  *data = d;
  *len = used;
  return 0;
}

/* A whole word as a finite double.  Unlike UTL_ParseDouble this accepts
   subnormal values (strtod reports ERANGE for them), which STF_Save writes. */
static int
parse_double(const char *s, double *out)
{
  char *end;
  double v;

  if (!s[0] || isspace((unsigned char)s[0]))
    return -1;
  errno = 0;
  v = strtod(s, &end);
  if (*end != '\0' || !isfinite(v) || (errno == ERANGE && fabs(v) >= 1.0))
    return -1;
  *out = v;
  return 0;
}

/* Parse the end line "end count=N crc32=XXXXXXXX" (without newline). */
static int
parse_end(const char *line, long *count, uint32_t *crc)
{
  char cbuf[16], xbuf[16];
  long c;
  char *e;
  unsigned long x;
  int used = 0;

  if (sscanf(line, "end count=%15[0-9] crc32=%15[0-9a-fA-F]%n", cbuf, xbuf, &used) != 2 ||
      line[used] != '\0' || strlen(xbuf) != 8)
    return -1;
  if (UTL_ParseInt(cbuf, 0, 1000000, &c) < 0)
    return -1;
  errno = 0;
  x = strtoul(xbuf, &e, 16);
  if (*e || errno)
    return -1;
  *count = c;
  *crc = (uint32_t)x;
  return 0;
}

enum {
  F_NAME = 1, F_ENGAGED = 2, F_PIEZO = 4, F_CURRENT = 8, F_RAMP_TO = 16, F_RAMP_RATE = 32
};
#define F_REQUIRED (F_NAME | F_ENGAGED | F_PIEZO)

/* Format 1 kept the setpoint and the gains in fields of their own, with the
   config file's values at the save in file_<key> fields (all four or none).
   They load as the parameters of format 2. */
static const char *const legacy_keys[] = { STF_KEY_SETPOINT, "kp", "ki", "kd" };
#define N_LEGACY ((int)(sizeof legacy_keys / sizeof legacy_keys[0]))

/* The index of a format-1 field of its own (0..N_LEGACY-1) or of its
   file_ partner (N_LEGACY..2*N_LEGACY-1); -1 for anything else. */
static int
legacy_field(const char *key)
{
  int file = strncmp(key, "file_", 5) == 0;

  for (int i = 0; i < N_LEGACY; i++)
    if (strcmp(key + (file ? 5 : 0), legacy_keys[i]) == 0)
      return i + (file ? N_LEGACY : 0);
  return -1;
}

/* set.<key>=value or file.<key>=value of one line into l.  0 or -1. */
static int
parse_param(STF_Laser *l, const char *kv, const char *val, const char **why)
{
  int is_file = kv[0] == 'f';
  const char *key = kv + (is_file ? 5 : 4);
  int k;

  if (!param_key_ok(key)) {
    *why = "bad parameter name";
    return -1;
  }
  for (k = 0; k < l->n_params && strcmp(l->params[k].key, key) != 0; k++)
    ;
  if (k == l->n_params) {
    if (is_file) {
      *why = "file.<key> without set.<key> before it";
      return -1;
    }
    if (l->n_params == STF_MAX_PARAMS) {
      *why = "too many parameters";
      return -1;
    }
    l->n_params++;
    UTL_Strlcpy(l->params[k].key, key, sizeof l->params[k].key);
  } else if (!is_file || l->params[k].has_file) {
    *why = "a field appears twice";
    return -1;
  }
  if (is_file)
    l->params[k].has_file = 1;
  if (parse_double(val, is_file ? &l->params[k].file : &l->params[k].value) < 0) {
    *why = "a value is not a finite number";
    return -1;
  }
  return 0;
}

/* Format 1: the setpoint and gains (values[0..3], the file's values in
   values[4..7] when has_file) become the first parameters of l. */
static int
legacy_to_params(STF_Laser *l, const double *values, int has_file, const char **why)
{
  if (l->n_params + N_LEGACY > STF_MAX_PARAMS) {
    *why = "too many parameters";
    return -1;
  }
  for (int k = 0; k < l->n_params; k++)
    for (int i = 0; i < N_LEGACY; i++)
      if (strcmp(l->params[k].key, legacy_keys[i]) == 0) {
        *why = "a field appears twice";
        return -1;
      }
  memmove(&l->params[N_LEGACY], &l->params[0], (size_t)l->n_params * sizeof l->params[0]);
  for (int i = 0; i < N_LEGACY; i++) {
    STF_Param *p = &l->params[i];

    memset(p, 0, sizeof *p);
    UTL_Strlcpy(p->key, legacy_keys[i], sizeof p->key);
    p->value = values[i];
    p->has_file = has_file;
    p->file = has_file ? values[N_LEGACY + i] : 0.0;
  }
  l->n_params += N_LEGACY;
  return 0;
}

/* Parse the fields of one laser line (after "laser") of a file of the
   given format.  0 or -1 with why. */
static int
parse_laser(char *fields, int format, STF_Laser *l, const char **why)
{
  char *save = NULL;
  unsigned int seen = 0, legacy_seen = 0;
  double legacy[2 * N_LEGACY] = { 0 };

  memset(l, 0, sizeof *l);
  for (char *kv = strtok_r(fields, " \t", &save); kv; kv = strtok_r(NULL, " \t", &save)) {
    char *eq = strchr(kv, '=');
    const char *val;
    unsigned int bit = 0;
    double *dst = NULL;
    int lf;

    if (!eq || eq == kv) {
      *why = "a field is not key=value";
      return -1;
    }
    *eq = '\0';
    val = eq + 1;
    if (strcmp(kv, "name") == 0) {
      bit = F_NAME;
      if (!val[0] || strlen(val) >= sizeof l->name) {
        *why = "bad laser name";
        return -1;
      }
      UTL_Strlcpy(l->name, val, sizeof l->name);
    } else if (strcmp(kv, "engaged") == 0) {
      bit = F_ENGAGED;
      if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0) {
        *why = "engaged must be 0 or 1";
        return -1;
      }
      l->engaged = val[0] == '1';
    } else if (strcmp(kv, "piezo_v") == 0) {
      bit = F_PIEZO;
      dst = &l->piezo_v;
    } else if (strcmp(kv, "current_v") == 0) {
      bit = F_CURRENT;
      dst = &l->current_v;
      l->has_current = 1;
    } else if (strcmp(kv, "ramp_to_thz") == 0) {
      bit = F_RAMP_TO;
      dst = &l->ramp_to_thz;
    } else if (strcmp(kv, "ramp_mhz_s") == 0) {
      bit = F_RAMP_RATE;
      dst = &l->ramp_mhz_s;
    } else if (strncmp(kv, "set.", 4) == 0 || strncmp(kv, "file.", 5) == 0) {
      if (parse_param(l, kv, val, why) < 0)
        return -1;
      continue;
    } else if (format == 1 && (lf = legacy_field(kv)) >= 0) {
      if (legacy_seen & (1u << lf)) {
        *why = "a field appears twice";
        return -1;
      }
      legacy_seen |= 1u << lf;
      if (parse_double(val, &legacy[lf]) < 0) {
        *why = "a value is not a finite number";
        return -1;
      }
      continue;
    } else {
      continue;       /* a field of a newer format: ignore */
    }
    if (seen & bit) {
      *why = "a field appears twice";
      return -1;
    }
    seen |= bit;
    if (dst && parse_double(val, dst) < 0) {
      *why = "a value is not a finite number";
      return -1;
    }
  }
  if (format == 1) {
    unsigned int own = (1u << N_LEGACY) - 1, file = own << N_LEGACY;

    if ((seen & F_REQUIRED) != F_REQUIRED || (legacy_seen & own) != own) {
      *why = "a laser line lacks a required field";
      return -1;
    }
    if ((legacy_seen & file) != 0 && (legacy_seen & file) != file) {
      *why = "file_setpoint_thz, file_kp, file_ki and file_kd go together";
      return -1;
    }
    if (legacy_to_params(l, legacy, (legacy_seen & file) != 0, why) < 0)
      return -1;
  } else if ((seen & F_REQUIRED) != F_REQUIRED || !STF_FindParam(l, STF_KEY_SETPOINT)) {
    *why = "a laser line lacks a required field";
    return -1;
  }
  if (!(seen & F_RAMP_TO) != !(seen & F_RAMP_RATE)) {
    *why = "ramp_to_thz and ramp_mhz_s go together";
    return -1;
  }
  l->ramp = (seen & F_RAMP_TO) != 0;
  if (l->ramp && !(l->ramp_mhz_s > 0.0)) {
    *why = "ramp_mhz_s must be above 0";
    return -1;
  }
  return 0;
}

/* The format named by a comment line "# wavelock runtime state, format N",
   or 0 if line is no such line. */
static int
header_format(const char *line)
{
  static const char prefix[] = "# wavelock runtime state, format ";
  long f;
  char *end;

  if (strncmp(line, prefix, sizeof prefix - 1) != 0)
    return 0;
  errno = 0;
  f = strtol(line + sizeof prefix - 1, &end, 10);
  if (errno || end == line + sizeof prefix - 1 || f < 1 || f > 1000000 ||
      (*end != '\0' && *end != ' '))
    return -1;
  return (int)f;
}

/* The fields of a claim line (after "claim") into the laser it names
   among lasers[0..n-1].  0 or -1. */
static int
parse_claim(char *fields, STF_Laser *lasers, int n, const char **why)
{
  char *save = NULL, laser[CNF_NAME_MAX] = "", owner[96] = "";
  double expires = (double)NAN, len_s = (double)NAN;
  STF_Laser *l = NULL;

  for (char *kv = strtok_r(fields, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(kv, '=');

    if (!eq) {
      *why = "claim: field without '='";
      return -1;
    }
    *eq = '\0';
    if (strcmp(kv, "laser") == 0) {
      if (strlen(eq + 1) >= sizeof laser)
        break;
      UTL_Strlcpy(laser, eq + 1, sizeof laser);
    } else if (strcmp(kv, "owner") == 0) {
      if (strlen(eq + 1) >= sizeof owner)
        break;
      UTL_Strlcpy(owner, eq + 1, sizeof owner);
    } else if (strcmp(kv, "expires") == 0 || strcmp(kv, "len_s") == 0) {
      double v;
      if (parse_double(eq + 1, &v) < 0) {
        *why = "claim: bad number";
        return -1;
      }
      if (kv[0] == 'e')
        expires = v;
      else
        len_s = v;
    }
  }
  if (!claim_owner_ok(owner) || !isfinite(expires) ||
      !(len_s >= 1.0 && len_s <= STF_CLAIM_MAX_S)) {
    *why = "claim: needs laser, owner, expires and len_s (1..604800)";
    return -1;
  }
  for (int i = 0; i < n; i++)
    if (strcmp(lasers[i].name, laser) == 0)
      l = &lasers[i];
  if (!l) {
    *why = "claim: not after the line of its laser";
    return -1;
  }
  if (l->owner[0]) {
    *why = "claim: a second claim for one laser";
    return -1;
  }
  UTL_Strlcpy(l->owner, owner, sizeof l->owner);
  l->claim_expires = expires;
  l->claim_len_s = len_s;
  return 0;
}

/* The fields of the calibration line (after "calibration").  0 or -1. */
static int
parse_calibration(char *fields, STF_Calibration *cal, const char **why)
{
  char *save = NULL;
  int have = 0;

  memset(cal, 0, sizeof *cal);
  for (char *kv = strtok_r(fields, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(kv, '=');
    double v;
    int bit;

    if (!eq) {
      *why = "calibration: field without '='";
      return -1;
    }
    *eq = '\0';
    if (strcmp(kv, "ref_thz") == 0)
      bit = 1;
    else if (strcmp(kv, "eps") == 0)
      bit = 2;
    else if (strcmp(kv, "unix_s") == 0)
      bit = 4;
    else
      continue;   /* a field of a later version */
    if (parse_double(eq + 1, &v) < 0) {
      *why = "calibration: bad number";
      return -1;
    }
    if (bit == 1)
      cal->ref_thz = v;
    else if (bit == 2)
      cal->eps = v;
    else
      cal->unix_s = v;
    have |= bit;
  }
  if (have != 7 || !(cal->ref_thz > 0.0) || !isfinite(cal->ref_thz) ||
      !(fabs(cal->eps) < 1e-3) || !isfinite(cal->unix_s)) {
    *why = "calibration: needs ref_thz > 0, eps (|eps| < 1e-3) and unix_s";
    return -1;
  }
  cal->present = 1;
  return 0;
}

int
STF_Load(const char *path, STF_Laser **out, char *err, size_t errlen)
{
  return STF_LoadCal(path, out, NULL, err, errlen);
}

int
STF_LoadCal(const char *path, STF_Laser **out, STF_Calibration *cal, char *err, size_t errlen)
{
  STF_Calibration cal_read = { 0 };
  char *data = NULL, *end_line, *p, *body_end;
  size_t len = 0;
  STF_Laser *lasers = NULL;
  long count;
  uint32_t crc;
  int n = 0, r, lineno = 0, format = 1, seen_format = 0;

  *out = NULL;
  if (cal)
    memset(cal, 0, sizeof *cal);
  if (!path || !path[0]) {
    UTL_SetErr(err, errlen, "bad state file path");
    return -1;
  }
  r = read_file(path, &data, &len, err, errlen);
  if (r == 1)
    return 0;
  if (r < 0)
    return -1;

  if (len == 0) {
    UTL_SetErr(err, errlen, "%s: empty (truncated state file)", path);
    goto bad;
  }
  if (memchr(data, '\0', len)) {
    UTL_SetErr(err, errlen, "%s: contains NUL bytes (not a state file)", path);
    goto bad;
  }
  if (data[len - 1] != '\n') {
    UTL_SetErr(err, errlen, "%s: truncated (last line incomplete)", path);
    goto bad;
  }
  /* The last line must be the end line. */
  data[len - 1] = '\0';
  end_line = strrchr(data, '\n');
  end_line = end_line ? end_line + 1 : data;
  if (strncmp(end_line, "end ", 4) != 0) {
    UTL_SetErr(err, errlen, "%s: truncated or not a state file (no end line)", path);
    goto bad;
  }
  if (parse_end(end_line, &count, &crc) < 0) {
    UTL_SetErr(err, errlen, "%s: malformed end line", path);
    goto bad;
  }
  body_end = end_line;
  if (crc32_update(0, data, (size_t)(body_end - data)) != crc) {
    UTL_SetErr(err, errlen, "%s: checksum mismatch (file damaged or edited)", path);
    goto bad;
  }
  if (count > 0) {
    /* A laser a line: no more than the body has lines (before allocating). */
    long lines = 0;
    for (const char *q = data; q < body_end; q++)
      lines += *q == '\n';
    if (count > lines) {
      UTL_SetErr(err, errlen, "%s: end line counts %ld lasers, the file has %ld lines", path,
                 count, lines);
      goto bad;
    }
    lasers = calloc((size_t)count, sizeof *lasers);
    if (!lasers) {
      UTL_SetErr(err, errlen, "%s: out of memory", path);
      goto bad;
    }
  }

  /* Body: lines up to the end line. */
  p = data;
  while (p < body_end) {
    char *nl = memchr(p, '\n', (size_t)(body_end - p)), *line = p;
    const char *why = NULL;

    lineno++;
    if (!nl)      /* cannot happen: the body ends with a newline */
      break;
    *nl = '\0';
    p = nl + 1;
    if ((size_t)(nl - line) > STF_MAX_LINE) {
      UTL_SetErr(err, errlen, "%s:%d: line too long", path, lineno);
      goto bad;
    }
    if (line[0] == '#' && n == 0 && !cal_read.present && !seen_format) {
      int f = header_format(line);

      if (f < 0 || f > STF_FORMAT) {
        UTL_SetErr(err, errlen, "%s:%d: state file format %s (this wavelockd reads 1 to %d)",
                   path, lineno, f < 0 ? "unreadable" : "too new", STF_FORMAT);
        goto bad;
      }
      if (f > 0) {
        format = f;
        seen_format = 1;
      }
    }
    if (line[0] == '\0' || line[0] == '#')
      continue;
    if (strncmp(line, "calibration ", 12) == 0) {
      if (cal_read.present) {
        UTL_SetErr(err, errlen, "%s:%d: a second calibration line", path, lineno);
        goto bad;
      }
      if (parse_calibration(line + 12, &cal_read, &why) < 0) {
        UTL_SetErr(err, errlen, "%s:%d: %s", path, lineno, why);
        goto bad;
      }
      continue;
    }
    if (strncmp(line, "claim ", 6) == 0) {
      if (parse_claim(line + 6, lasers, n, &why) < 0) {
        UTL_SetErr(err, errlen, "%s:%d: %s", path, lineno, why);
        goto bad;
      }
      continue;
    }
    if (strncmp(line, "laser ", 6) != 0) {
      UTL_SetErr(err, errlen, "%s:%d: unknown record", path, lineno);
      goto bad;
    }
    if (n >= count) {
      UTL_SetErr(err, errlen, "%s:%d: more laser lines than the end line counts", path, lineno);
      goto bad;
    }
    if (parse_laser(line + 6, format, &lasers[n], &why) < 0) {
      UTL_SetErr(err, errlen, "%s:%d: %s", path, lineno, why);
      goto bad;
    }
    for (int i = 0; i < n; i++) {
      if (strcmp(lasers[i].name, lasers[n].name) == 0) {
        UTL_SetErr(err, errlen, "%s:%d: laser %s appears twice", path, lineno, lasers[n].name);
        goto bad;
      }
    }
    n++;
  }
  if (n != count) {
    UTL_SetErr(err, errlen, "%s: %d laser lines but the end line counts %ld", path, n, count);
    goto bad;
  }
  free(data);
  *out = lasers;
  if (cal)
    *cal = cal_read;
  return n;

bad:
  free(data);
  free(lasers);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Stale temporary files                                                */

int
STF_RemoveStaleTemps(const char *path)
{
  char dir[CNF_PATH_MAX], full[CNF_PATH_MAX + 300];
  const char *base;
  size_t blen;
  DIR *dh;
  struct dirent *de;
  int removed = 0;

  if (!path || !path[0] || strlen(path) >= CNF_PATH_MAX)
    return 0;
  base = strrchr(path, '/');
  base = base ? base + 1 : path;
  blen = strlen(base);
  dir_of(path, dir, sizeof dir);
  dh = opendir(dir);
  if (!dh)
    return 0;
  while ((de = readdir(dh)) != NULL) {
    /* exactly "<base>.tmp" and the six characters mkstemp put there */
    if (strncmp(de->d_name, base, blen) != 0 || strncmp(de->d_name + blen, ".tmp", 4) != 0 ||
        strlen(de->d_name + blen + 4) != 6)
      continue;
    snprintf(full, sizeof full, "%s/%s", dir, de->d_name);
    if (unlink(full) == 0)
      removed++;
  }
  closedir(dh);
  return removed;
}

int
STF_CheckWritable(const char *path, char *err, size_t errlen)
{
  char dir[CNF_PATH_MAX];
  struct stat st;

  if (!path || !path[0])
    return 0;
  if (strlen(path) >= CNF_PATH_MAX) {
    UTL_SetErr(err, errlen, "%s: path too long", path);
    return -1;
  }
  dir_of(path, dir, sizeof dir);
  if (stat(dir, &st) != 0) {
    UTL_SetErr(err, errlen, "%s: directory %s: %s", path, dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    UTL_SetErr(err, errlen, "%s: %s is not a directory", path, dir);
    return -1;
  }
  /* A save creates a temporary file there and renames it over path. */
  if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0) {
    UTL_SetErr(err, errlen, "%s: directory %s is not writable: %s", path, dir,
               strerror(errno));
    return -1;
  }
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    UTL_SetErr(err, errlen, "%s: not a regular file", path);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Background writer                                                    */

struct STF_Writer {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;           /* work queued, a write done, or stop */
  int stop;
  /* The snapshot waiting to be written (the newest one). */
  char path[CNF_PATH_MAX];
  STF_Laser *lasers;
  int n;
  STF_Calibration cal;
  int queued;
  int busy;                      /* a write in progress */
  unsigned long writes;          /* finished writes */
  int failed;                    /* the last one failed */
  char err[512];
};

static void *
writer_main(void *arg)
{
  STF_Writer *w = arg;
  char path[CNF_PATH_MAX], err[512];

  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (!w->queued && !w->stop)
      pthread_cond_wait(&w->cond, &w->lock);
    if (!w->queued)
      break;   /* stopping, and nothing left to write */
    STF_Laser *lasers = w->lasers;
    STF_Calibration cal = w->cal;
    int n = w->n, rc;

    UTL_Strlcpy(path, w->path, sizeof path);
    w->lasers = NULL;
    w->queued = 0;
    w->busy = 1;
    pthread_mutex_unlock(&w->lock);

    err[0] = '\0';
    rc = STF_SaveCal(path, lasers, n, &cal, err, sizeof err);
    free(lasers);

    pthread_mutex_lock(&w->lock);
    w->busy = 0;
    w->writes++;
    w->failed = rc != 0;
    UTL_Strlcpy(w->err, err, sizeof w->err);
    pthread_cond_broadcast(&w->cond);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

STF_Writer *
STF_WriterCreate(void)
{
  STF_Writer *w = calloc(1, sizeof *w);
  int rc;

  if (!w)
    return NULL;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  rc = pthread_create(&w->thread, NULL, writer_main, w);
  if (rc != 0) {
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    errno = rc;
    return NULL;
  }
  return w;
}

int
STF_WriterSubmit(STF_Writer *w, const char *path, STF_Laser *lasers, int n)
{
  return STF_WriterSubmitCal(w, path, lasers, n, NULL);
}

int
STF_WriterSubmitCal(STF_Writer *w, const char *path, STF_Laser *lasers, int n,
                    const STF_Calibration *cal)
{
  STF_Laser *old = NULL;
  int rc = 0;

  pthread_mutex_lock(&w->lock);
  if (w->stop || !path || strlen(path) >= sizeof w->path) {
    errno = w->stop ? ESHUTDOWN : EINVAL;
    old = lasers;
    rc = -1;
  } else {
    old = w->lasers;   /* replaced: never written, a newer state is here */
    UTL_Strlcpy(w->path, path, sizeof w->path);
    w->lasers = lasers;
    w->n = n;
    if (cal)
      w->cal = *cal;
    else
      memset(&w->cal, 0, sizeof w->cal);
    w->queued = 1;
    pthread_cond_broadcast(&w->cond);
  }
  pthread_mutex_unlock(&w->lock);
  free(old);
  return rc;
}

int
STF_WriterFlush(STF_Writer *w, char *err, size_t errlen)
{
  int rc;

  pthread_mutex_lock(&w->lock);
  while (w->queued || w->busy)
    pthread_cond_wait(&w->cond, &w->lock);
  rc = w->failed ? -1 : 0;
  if (rc && err)
    UTL_Strlcpy(err, w->err, errlen);
  pthread_mutex_unlock(&w->lock);
  return rc;
}

int
STF_WriterStatus(STF_Writer *w, char *err, size_t errlen, unsigned long *writes)
{
  int rc;

  pthread_mutex_lock(&w->lock);
  rc = w->failed ? -1 : 0;
  if (rc && err)
    UTL_Strlcpy(err, w->err, errlen);
  if (writes)
    *writes = w->writes;
  pthread_mutex_unlock(&w->lock);
  return rc;
}

void
STF_WriterDestroy(STF_Writer *w)
{
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  free(w->lasers);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->lock);
  free(w);
}
