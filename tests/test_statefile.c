/* test_statefile.c - the runtime state file (STF_): exact round trip, the
 * on-disk format (2, and 1 still loaded), rejection of truncated, damaged and garbage files, the
 * background writer and the removal of stale temporary files. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statefile.h"
#include "util.h"

/* cmocka 1.1's assert_float_equal works in float; compare doubles here. */
#define assert_dbl(a, b, eps) do {                                            \
    double a_ = (a), b_ = (b);                                                \
    if (!(fabs(a_ - b_) <= (eps)))                                            \
      fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);                     \
  } while (0)

static char dir[PATH_MAX];
static char path[PATH_MAX + 32];
static char err[1024];

/* An independent CRC-32 (the one of zlib and Python's zlib.crc32). */
static uint32_t
ref_crc32(const char *p, size_t n)
{
  uint32_t c = 0xFFFFFFFFu;

  for (size_t i = 0; i < n; i++) {
    c ^= (unsigned char)p[i];
    for (int k = 0; k < 8; k++)
      c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

static int
setup(void **state)
{
  snprintf(dir, sizeof dir, "/tmp/wl-test-stf-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/wavelock.state", dir);
  return 0;
}

/* Remove everything in dir (tests leave nothing else behind), then dir. */
static int
teardown(void **state)
{
  DIR *d = opendir(dir);
  struct dirent *e;

  if (d) {
    while ((e = readdir(d))) {
      char p[PATH_MAX + 300];

      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  return rmdir(dir);
}

/* Number of directory entries other than . and .. */
static int
count_entries(void)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;

  assert_non_null(d);
  while ((e = readdir(d)))
    n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

static char *
read_all(const char *p, size_t *len)
{
  FILE *f = fopen(p, "rb");
  char *buf;
  long n;

  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  rewind(f);
  buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void
write_all(const char *p, const char *data, size_t len)
{
  FILE *f = fopen(p, "wb");

  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* Write a body and a correct end line for it. */
static void
write_with_end(const char *body, int count)
{
  char buf[4096];
  int n = snprintf(buf, sizeof buf, "%s", body);

  snprintf(buf + n, sizeof buf - (size_t)n, "end count=%d crc32=%08x\n", count,
           (unsigned int)ref_crc32(body, strlen(body)));
  write_all(path, buf, strlen(buf));
}

static STF_Laser sample[3];

/* Append a parameter (has_file: with the file's value f). */
static void
add_param(STF_Laser *l, const char *key, double v, int has_file, double f)
{
  assert_int_equal(STF_AddParam(l, key, v, has_file, f), 0);
}

/* The value of parameter key of l (which must be there). */
static double
param(const STF_Laser *l, const char *key)
{
  const STF_Param *p = STF_FindParam(l, key);

  if (!p)
    fail_msg("laser %s has no parameter %s", l->name, key);
  return p->value;
}

static void
fill_sample(void)
{
  memset(sample, 0, sizeof sample);
  strcpy(sample[0].name, "cool780");
  sample[0].engaged = 1;
  sample[0].piezo_v = 5.123456789012345;
  sample[0].has_current = 1;
  sample[0].current_v = -0.2;
  add_param(&sample[0], STF_KEY_SETPOINT, 384.2304844, 0, 0);
  add_param(&sample[0], "kp", 0.1, 0, 0);
  add_param(&sample[0], "ki", 1.0 / 3.0, 0, 0);
  add_param(&sample[0], "kd", 0.0, 0, 0);
  add_param(&sample[0], "polarity", -1.0, 1, 1.0);
  add_param(&sample[0], "piezo_max_v", 8.000000000000002, 0, 0);
  strcpy(sample[1].name, "repump_795.b-2");
  sample[1].engaged = 0;
  sample[1].piezo_v = -0.0;
  sample[1].has_current = 0;
  /* with the config's own values at the save */
  add_param(&sample[1], STF_KEY_SETPOINT, 377.10746338, 1, 377.1074635);
  add_param(&sample[1], "kp", 4.9e-324, 1, 0.0);      /* smallest subnormal */
  add_param(&sample[1], "ki", DBL_MAX, 1, 1.0 / 7.0);
  add_param(&sample[1], "kd", 1e-300, 1, 5e-324);
  strcpy(sample[2].name, "x");
  sample[2].engaged = 1;
  sample[2].piezo_v = 9.999999999999998;
  sample[2].has_current = 1;
  sample[2].current_v = 1e-17;
  sample[2].ramp = 1;                     /* ramping: the point reached, and where to */
  sample[2].ramp_to_thz = 650.6;
  sample[2].ramp_mhz_s = 0.1;
  add_param(&sample[2], STF_KEY_SETPOINT, nextafter(650.503225, 1000.0), 1, 650.503225);
  add_param(&sample[2], "kp", 2.0 / 3.0, 1, 2.0 / 3.0);
  add_param(&sample[2], "ki", 0.002, 1, 0.001);
  add_param(&sample[2], "kd", 0.0001, 1, 0.0);
}

static void
assert_same_bits(double a, double b)
{
  assert_memory_equal(&a, &b, sizeof a);
}

static void
assert_same_laser(const STF_Laser *out, const STF_Laser *want)
{
  assert_string_equal(out->name, want->name);
  assert_int_equal(out->engaged, want->engaged);
  assert_same_bits(out->piezo_v, want->piezo_v);
  assert_int_equal(out->has_current, want->has_current);
  if (want->has_current)
    assert_same_bits(out->current_v, want->current_v);
  assert_int_equal(out->ramp, want->ramp);
  if (want->ramp) {
    assert_same_bits(out->ramp_to_thz, want->ramp_to_thz);
    assert_same_bits(out->ramp_mhz_s, want->ramp_mhz_s);
  }
  assert_int_equal(out->n_params, want->n_params);
  for (int k = 0; k < want->n_params; k++) {
    assert_string_equal(out->params[k].key, want->params[k].key);
    assert_same_bits(out->params[k].value, want->params[k].value);
    assert_int_equal(out->params[k].has_file, want->params[k].has_file);
    if (want->params[k].has_file)
      assert_same_bits(out->params[k].file, want->params[k].file);
  }
}

static void
test_round_trip(void **state)
{
  STF_Laser *out = NULL;

  fill_sample();
  assert_int_equal(STF_Save(path, sample, 3, err, sizeof err), 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 3);
  assert_non_null(out);
  for (int i = 0; i < 3; i++)
    assert_same_laser(&out[i], &sample[i]);
  free(out);

  /* saving again replaces the file */
  STF_FindParam(&sample[0], STF_KEY_SETPOINT)->value = 384.0;
  assert_int_equal(STF_Save(path, sample, 1, err, sizeof err), 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_dbl(param(&out[0], STF_KEY_SETPOINT), 384.0, 0);
  free(out);
  assert_int_equal(count_entries(), 1);
}

/* The format documented in statefile.h (format 2), checked with an
   independent CRC. */
static void
test_format(void **state)
{
  size_t len;
  char *text, *end, want[256], num[UTL_DOUBLE_LEN];

  fill_sample();
  assert_int_equal(STF_Save(path, sample, 2, err, sizeof err), 0);
  text = read_all(path, &len);
  assert_true(len > 0 && text[len - 1] == '\n');
  assert_int_equal(strncmp(text, "# wavelock runtime state, format 2 ", 35), 0);
  /* Doubles in the shortest form that reads back exactly; every parameter
     alike, the setpoint and the gains included. */
  snprintf(want, sizeof want, "\nlaser name=cool780 engaged=1 piezo_v=5.123456789012345 "
           "current_v=-0.2 set.setpoint_thz=384.2304844 set.kp=0.1 set.ki=0.3333333333333333 "
           "set.kd=0 set.polarity=-1 file.polarity=1 set.piezo_max_v=%s\n",
           UTL_FormatDouble(num, sizeof num, sample[0].params[5].value));
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof want, "\nlaser name=repump_795.b-2 engaged=0 piezo_v=-0 "
           "set.setpoint_thz=377.10746338 file.setpoint_thz=377.1074635 set.kp=%s file.kp=0 ",
           UTL_FormatDouble(num, sizeof num, 4.9e-324));
  assert_non_null(strstr(text, want));
  assert_null(strstr(text, "384.23048440000002"));
  assert_null(strstr(strstr(text, "name=repump_795.b-2"), "current_v"));
  /* no field of format 1 */
  assert_null(strstr(text, " kp="));
  assert_null(strstr(text, " setpoint_thz="));
  assert_null(strstr(text, "file_"));
  text[len - 1] = '\0';
  end = strrchr(text, '\n') + 1;
  snprintf(want, sizeof want, "end count=2 crc32=%08x",
           (unsigned int)ref_crc32(text, (size_t)(end - text)));
  assert_string_equal(end, want);
  free(text);
}

/* A state file written by a wavelockd of format 1 (tests/conf/format1.state,
   as it wrote it): the setpoint and gains, with the file's values where it
   had them, load as the parameters of format 2, before the others. */
static void
test_format1_sample(void **state)
{
  STF_Laser *out = NULL;
  STF_Calibration cal;
  const STF_Param *p;

  assert_int_equal(STF_LoadCal(TEST_SRCDIR "/conf/format1.state", &out, &cal, err, sizeof err),
                   2);
  assert_string_equal(out[0].name, "cool780");
  assert_int_equal(out[0].engaged, 1);
  assert_dbl(out[0].piezo_v, 5.25, 0);
  assert_int_equal(out[0].has_current, 1);
  assert_dbl(out[0].current_v, -0.125, 0);
  assert_int_equal(out[0].ramp, 0);
  assert_int_equal(out[0].n_params, 7);
  {
    static const struct { const char *key; double v, f; } want[] = {
      { "setpoint_thz", 384.2304944, 384.2304844 }, { "kp", 0.002, 0.001 },
      { "ki", 0.005, 0.002 }, { "kd", 0, 0 }, { "polarity", -1, 1 },
      { "piezo_max_v", 8, 10 }, { "feedforward", 0.01, 0 },
    };
    for (int k = 0; k < 7; k++) {
      assert_string_equal(out[0].params[k].key, want[k].key);
      assert_dbl(out[0].params[k].value, want[k].v, 0);
      assert_int_equal(out[0].params[k].has_file, 1);
      assert_dbl(out[0].params[k].file, want[k].f, 0);
    }
  }
  /* no file_ fields: the saved values, without the file's */
  assert_string_equal(out[1].name, "repump795");
  assert_int_equal(out[1].engaged, 0);
  assert_int_equal(out[1].has_current, 0);
  assert_int_equal(out[1].ramp, 1);
  assert_dbl(out[1].ramp_to_thz, 377.1074635, 0);
  assert_dbl(out[1].ramp_mhz_s, 50, 0);
  assert_int_equal(out[1].n_params, 4);
  p = STF_FindParam(&out[1], STF_KEY_SETPOINT);
  assert_non_null(p);
  assert_dbl(p->value, 377.1, 0);
  assert_int_equal(p->has_file, 0);
  assert_dbl(param(&out[1], "ki"), 0.002, 0);
  assert_int_equal(STF_FindParam(&out[1], "ki")->has_file, 0);
  assert_int_equal(cal.present, 1);
  assert_dbl(cal.eps, 2.5e-8, 0);
  free(out);

  /* saved again: format 2 with the same content */
  {
    STF_Laser *first = NULL, *again = NULL;

    assert_int_equal(STF_Load(TEST_SRCDIR "/conf/format1.state", &first, err, sizeof err), 2);
    assert_int_equal(STF_Save(path, first, 2, err, sizeof err), 0);
    assert_int_equal(STF_Load(path, &again, err, sizeof err), 2);
    for (int i = 0; i < 2; i++)
      assert_same_laser(&again[i], &first[i]);
    free(first);
    free(again);
  }
}

/* The format line: format 1 and 2 are read with their own fields; a newer
   or unreadable one is refused. */
static void
test_format_line(void **state)
{
  STF_Laser *out = NULL;

  /* "format 1" named: the fields of format 1 */
  write_with_end("# wavelock runtime state, format 1 (written by wavelockd; do not edit)\n"
                 "laser name=a setpoint_thz=384.5 engaged=1 kp=1 ki=2 kd=3 piezo_v=4\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_dbl(param(&out[0], STF_KEY_SETPOINT), 384.5, 0);
  assert_dbl(param(&out[0], "kd"), 3, 0);
  free(out);
  /* format 2: the fields of format 1 are unknown ones (ignored), so the
     setpoint is missing */
  write_with_end("# wavelock runtime state, format 2\n"
                 "laser name=a setpoint_thz=384.5 engaged=1 kp=1 ki=2 kd=3 piezo_v=4\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, ":2: a laser line lacks a required field"));
  write_with_end("# wavelock runtime state, format 2\n"
                 "laser name=a engaged=1 piezo_v=4 set.setpoint_thz=384.5 kp=7\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_int_equal(out[0].n_params, 1);
  assert_null(STF_FindParam(&out[0], "kp"));
  free(out);
  /* newer and unreadable format lines */
  write_with_end("# wavelock runtime state, format 3\n", 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, ":1: state file format too new"));
  write_with_end("# wavelock runtime state, format two\n", 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, "format unreadable"));
  write_with_end("# wavelock runtime state, format 0\n", 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  /* only the first such line before any record counts */
  write_with_end("# wavelock runtime state, format 2\n# wavelock runtime state, format 1\n"
                 "laser name=a engaged=1 piezo_v=4 set.setpoint_thz=384.5\n"
                 "# wavelock runtime state, format 9\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  free(out);
}

/* The calibration record: round trip, old files (none) load, bad ones fail. */
static void
test_calibration_record(void **state)
{
  STF_Calibration cal = { 1, 384.2281152, 2.5e-8, 1764900000.5 }, back;
  STF_Laser *out = NULL;
  size_t len;
  char *text;

  fill_sample();
  assert_int_equal(STF_SaveCal(path, sample, 2, &cal, err, sizeof err), 0);
  text = read_all(path, &len);
  assert_non_null(strstr(text, "\ncalibration ref_thz=384.2281152 eps=2.5e-08 "
                         "unix_s=1764900000.5\nend count=2 "));
  free(text);
  memset(&back, 0x5a, sizeof back);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), 2);
  assert_int_equal(back.present, 1);
  assert_true(back.ref_thz == cal.ref_thz && back.eps == cal.eps && back.unix_s == cal.unix_s);
  free(out);
  /* STF_Load of the same file: the lasers, the record ignored. */
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 2);
  free(out);
  /* A file without it (as older versions wrote): present = 0. */
  assert_int_equal(STF_Save(path, sample, 2, err, sizeof err), 0);
  memset(&back, 0x5a, sizeof back);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), 2);
  assert_int_equal(back.present, 0);
  free(out);
  /* No file at all: nothing, present = 0. */
  unlink(path);
  memset(&back, 0x5a, sizeof back);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), 0);
  assert_int_equal(back.present, 0);
  /* Bad records are errors with the line. */
  write_with_end("calibration ref_thz=384.2 eps=nan unix_s=1\n", 0);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), -1);
  assert_non_null(strstr(err, ":1: calibration"));
  write_with_end("calibration ref_thz=384.2 eps=1e-9\n", 0);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), -1);
  write_with_end("calibration ref_thz=384.2 eps=1e-9 unix_s=1\n"
                 "calibration ref_thz=384.2 eps=1e-9 unix_s=1\n", 0);
  assert_int_equal(STF_LoadCal(path, &out, &back, err, sizeof err), -1);
  assert_non_null(strstr(err, "second calibration"));
  cal.eps = NAN;
  assert_int_equal(STF_SaveCal(path, sample, 2, &cal, err, sizeof err), -1);
}

static void
test_empty_list(void **state)
{
  STF_Laser *out = (STF_Laser *)&out;

  assert_int_equal(STF_Save(path, NULL, 0, err, sizeof err), 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 0);
  assert_null(out);
}

static void
test_missing_file(void **state)
{
  STF_Laser *out = (STF_Laser *)&out;

  assert_int_equal(STF_Load(path, &out, err, sizeof err), 0);
  assert_null(out);
}

/* Every proper prefix of a good file is rejected, with a message naming
   the file: a crash in the middle of any write is never taken for state. */
static void
test_truncated(void **state)
{
  size_t len;
  char *text;

  fill_sample();
  assert_int_equal(STF_Save(path, sample, 3, err, sizeof err), 0);
  text = read_all(path, &len);
  for (size_t cut = 0; cut < len; cut++) {
    STF_Laser *out = (STF_Laser *)&out;

    write_all(path, text, cut);
    err[0] = '\0';
    if (STF_Load(path, &out, err, sizeof err) != -1)
      fail_msg("prefix of %zu of %zu bytes accepted", cut, len);
    assert_null(out);
    assert_true(strncmp(err, path, strlen(path)) == 0);
  }
  {
    STF_Laser *out = NULL;

    write_all(path, text, len);                 /* the whole file is fine */
    assert_int_equal(STF_Load(path, &out, err, sizeof err), 3);
    free(out);
  }
  free(text);
}

/* Any change of a byte before the end line is caught by the checksum. */
static void
test_crc_mismatch(void **state)
{
  size_t len;
  char *text, *p;
  STF_Laser *out = NULL;

  fill_sample();
  assert_int_equal(STF_Save(path, sample, 3, err, sizeof err), 0);
  text = read_all(path, &len);
  p = strstr(text, "piezo_v=5.1");
  assert_non_null(p);
  p[9] = '2';                              /* 5.123... -> 5.223... */
  write_all(path, text, len);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_null(out);
  assert_non_null(strstr(err, "checksum mismatch"));
  assert_non_null(strstr(err, path));

  /* one flipped bit anywhere in the body */
  p[9] = '1';
  for (size_t i = 0; i < (size_t)(strstr(text, "\nend ") - text); i += 7) {
    text[i] ^= 0x01;
    write_all(path, text, len);
    if (STF_Load(path, &out, err, sizeof err) != -1)
      fail_msg("bit flip at %zu accepted", i);
    text[i] ^= 0x01;
  }
  free(text);
}

static void
test_garbage(void **state)
{
  static const char *const junk[] = {
    "hello\n",
    "\n",
    "end\n",
    "end count=0 crc32=12345678\n",          /* wrong CRC of an empty body */
    "end count=0 crc32=zzzzzzzz\n",
    "laser name=a setpoint_thz=1 engaged=1 kp=0 ki=0 kd=0 piezo_v=0\n",
    "\177ELF\002\001\001\n",
  };
  STF_Laser *out = NULL;
  char bin[256];

  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    write_all(path, junk[i], strlen(junk[i]));
    if (STF_Load(path, &out, err, sizeof err) != -1)
      fail_msg("junk %zu accepted", i);
    assert_null(out);
    assert_true(strlen(err) > strlen(path));
  }
  for (int i = 0; i < 256; i++)
    bin[i] = (char)(i * 37 + 11);
  bin[255] = '\n';
  write_all(path, bin, sizeof bin);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);

  /* an empty body with its correct checksum is a valid, empty state */
  write_with_end("", 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 0);
}

/* Files whose checksum is right but whose content is wrong. */
static void
test_malformed_with_good_crc(void **state)
{
  static const struct { const char *body; int count; const char *why; } cases[] = {
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 2,
      "counts 2" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 0,
      "more laser lines" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0\n", 1, "lacks" },
    { "laser name=a setpoint_thz=nan engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 1, "finite" },
    { "laser name=a setpoint_thz=384 engaged=2 kp=0 ki=0 kd=0 piezo_v=1\n", 1, "engaged" },
    { "laser name=a setpoint_thz=384x engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 1, "finite" },
    { "laser name=a setpoint_thz=384 setpoint_thz=385 engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 1,
      "twice" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 junk\n", 1,
      "key=value" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n"
      "laser name=a setpoint_thz=385 engaged=1 kp=0 ki=0 kd=0 piezo_v=1\n", 2, "twice" },
    { "lasers name=a\n", 0, "unknown record" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 ramp_to_thz=384.1\n", 1,
      "go together" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 ramp_mhz_s=5\n", 1,
      "go together" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 ramp_to_thz=384.1"
      " ramp_mhz_s=0\n", 1, "above 0" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 ramp_to_thz=inf"
      " ramp_mhz_s=1\n", 1, "finite" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 file_kp=1"
      " file_ki=1 file_kd=1\n", 1, "go together" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 file_setpoint_thz=384"
      " file_kp=1 file_ki=nan file_kd=1\n", 1, "finite" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.Polarity=1\n", 1,
      "bad parameter name" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.=1\n", 1,
      "bad parameter name" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 file.polarity=1\n", 1,
      "without" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.lock_n=3"
      " set.lock_n=4\n", 1, "twice" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.lock_n=3"
      " file.lock_n=4 file.lock_n=4\n", 1, "twice" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.lock_n=inf\n", 1,
      "finite" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 set.kp=1\n", 1,
      "twice" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1 kp=1\n", 1, "twice" },
    { "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 piezo_v=1\n", 1, "lacks" },
  };
  /* The same rules in format 2, and its own. */
#define F2 "# wavelock runtime state, format 2\n"
  static const struct { const char *body; int count; const char *why; } cases2[] = {
    { F2 "laser name=a engaged=1 piezo_v=1\n", 1, "lacks" },
    { F2 "laser name=a engaged=1 set.setpoint_thz=384\n", 1, "lacks" },
    { F2 "laser engaged=1 piezo_v=1 set.setpoint_thz=384\n", 1, "lacks" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=nan\n", 1, "finite" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=384 set.setpoint_thz=385\n", 1,
      "twice" },
    { F2 "laser name=a engaged=1 piezo_v=1 file.setpoint_thz=384 set.setpoint_thz=384\n", 1,
      "without" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=384 file.kp=1\n", 1, "without" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=384 set.kp=1 file.kp=x\n", 1,
      "finite" },
    { F2 "laser name=a engaged=3 piezo_v=1 set.setpoint_thz=384\n", 1, "engaged" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=384 ramp_mhz_s=5\n", 1,
      "go together" },
    { F2 "laser name=a engaged=1 piezo_v=1 set.setpoint_thz=384 set.KP=1\n", 1,
      "bad parameter name" },
  };
  STF_Laser *out = NULL;

  for (size_t i = 0; i < sizeof cases2 / sizeof cases2[0]; i++) {
    write_with_end(cases2[i].body, cases2[i].count);
    if (STF_Load(path, &out, err, sizeof err) != -1)
      fail_msg("format 2 case %zu accepted", i);
    if (!strstr(err, cases2[i].why))
      fail_msg("format 2 case %zu: \"%s\" lacks \"%s\"", i, err, cases2[i].why);
    assert_null(out);
  }

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_with_end(cases[i].body, cases[i].count);
    if (STF_Load(path, &out, err, sizeof err) != -1)
      fail_msg("case %zu accepted", i);
    if (!strstr(err, cases[i].why))
      fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].why);
    assert_null(out);
  }

  /* comments, empty lines and fields of a newer format are fine */
  write_with_end("# comment\n\nlaser name=a setpoint_thz=384.5 engaged=0 kp=1 ki=2 kd=3 "
                 "piezo_v=4 future_field=xyz\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_string_equal(out[0].name, "a");
  assert_dbl(param(&out[0], STF_KEY_SETPOINT), 384.5, 0);
  assert_int_equal(out[0].engaged, 0);
  assert_dbl(param(&out[0], "kd"), 3.0, 0);
  assert_int_equal(out[0].has_current, 0);
  free(out);
  write_with_end(F2 "# comment\n\nlaser name=a engaged=0 piezo_v=4 future_field=xyz "
                 "set.setpoint_thz=384.5 set.future_param=1 file.future_param=2\n", 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_dbl(param(&out[0], STF_KEY_SETPOINT), 384.5, 0);
  assert_dbl(STF_FindParam(&out[0], "future_param")->file, 2.0, 0);
  free(out);
#undef F2
}

/* Saving leaves exactly one file, and failed saves leave nothing. */
static void
test_atomic_no_temp_files(void **state)
{
  STF_Laser bad;
  char nodir[PATH_MAX + 64];

  fill_sample();
  for (int i = 0; i < 20; i++) {
    sample[0].piezo_v = i * 0.5;
    assert_int_equal(STF_Save(path, sample, 3, err, sizeof err), 0);
  }
  assert_int_equal(count_entries(), 1);

  /* values that cannot be stored: refused before anything is written */
  memset(&bad, 0, sizeof bad);
  strcpy(bad.name, "a");
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);   /* no setpoint */
  assert_non_null(strstr(err, "no setpoint_thz"));
  add_param(&bad, STF_KEY_SETPOINT, nan(""), 0, 0);
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "cannot be stored"));
  bad.params[0].value = 384.0;
  bad.params[0].has_file = 1;
  bad.params[0].file = INFINITY;
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  bad.params[0].file = 384.0;
  bad.piezo_v = HUGE_VAL;
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "finite"));
  bad.piezo_v = 1.0;
  strcpy(bad.name, "two words");
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  strcpy(bad.name, "a=b");
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  bad.name[0] = '\0';
  assert_int_equal(STF_Save(path, &bad, 1, err, sizeof err), -1);
  assert_int_equal(count_entries(), 1);

  /* the previous state is still there, intact */
  {
    STF_Laser *out = NULL;

    assert_int_equal(STF_Load(path, &out, err, sizeof err), 3);
    assert_dbl(out[0].piezo_v, 9.5, 0);
    free(out);
  }

  /* a directory that does not exist */
  snprintf(nodir, sizeof nodir, "%s/missing/wavelock.state", dir);
  assert_int_equal(STF_Save(nodir, sample, 3, err, sizeof err), -1);
  assert_non_null(strstr(err, nodir));
  assert_int_equal(count_entries(), 1);
}

/* At most STF_MAX_PARAMS parameters per laser, both ways; Save refuses
   names it could not read back and a name given twice. */
static void
test_param_limits(void **state)
{
  char body[8192];
  size_t n = (size_t)snprintf(body, sizeof body,
                              "laser name=a setpoint_thz=384 engaged=1 kp=0 ki=0 kd=0 piezo_v=1");
  STF_Laser *out = NULL, l;

  for (int k = 0; k <= STF_MAX_PARAMS; k++)
    n += (size_t)snprintf(body + n, sizeof body - n, " set.p%d=%d", k, k);
  snprintf(body + n, sizeof body - n, "\n");
  write_with_end(body, 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, "too many"));

  /* the same in format 2 */
  n = (size_t)snprintf(body, sizeof body, "# wavelock runtime state, format 2\n"
                       "laser name=a engaged=1 piezo_v=1");
  for (int k = 0; k <= STF_MAX_PARAMS; k++)
    n += (size_t)snprintf(body + n, sizeof body - n, " set.p%d=%d", k, k);
  snprintf(body + n, sizeof body - n, "\n");
  write_with_end(body, 1);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, "too many"));

  memset(&l, 0, sizeof l);
  strcpy(l.name, "a");
  /* STF_AddParam refuses what Save would */
  assert_int_equal(STF_AddParam(&l, "bad key", 1, 0, 0), -1);
  assert_int_equal(STF_AddParam(&l, "", 1, 0, 0), -1);
  assert_int_equal(STF_AddParam(&l, "lock_n", 1, 0, 0), 0);
  assert_int_equal(STF_AddParam(&l, "lock_n", 2, 0, 0), -1);
  assert_int_equal(l.n_params, 1);
  l.n_params = 1;
  strcpy(l.params[0].key, "bad key");
  assert_int_equal(STF_Save(path, &l, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "cannot be stored"));
  l.n_params = 2;
  strcpy(l.params[0].key, "lock_n");
  strcpy(l.params[1].key, "lock_n");
  assert_int_equal(STF_Save(path, &l, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "twice"));
  l.n_params = STF_MAX_PARAMS;
  for (int k = 0; k < STF_MAX_PARAMS; k++) {
    /* long names and values: the longest lines Save writes */
    snprintf(l.params[k].key, sizeof l.params[k].key, "p%02d_%.27s", k % 100,
             "abcdefghijklmnopqrstuvwxyz0123456789");
    l.params[k].value = -1.2345678901234567e-300;
    l.params[k].has_file = 1;
    l.params[k].file = -DBL_MAX;
  }
  strcpy(l.params[0].key, STF_KEY_SETPOINT);
  assert_int_equal(STF_AddParam(&l, "one_more", 1, 0, 0), -1);
  assert_int_equal(STF_Save(path, &l, 1, err, sizeof err), 0);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 1);
  assert_int_equal(out[0].n_params, STF_MAX_PARAMS);
  assert_same_laser(&out[0], &l);
  free(out);
}

/* A path that is not a regular file is an error, not "missing". */
static void
test_not_a_file(void **state)
{
  STF_Laser *out = NULL;

  assert_int_equal(STF_Load(dir, &out, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
}

/* ---- the background writer and stale temporary files ---- */

static STF_Laser *
sample_copy(double setpoint)
{
  STF_Laser *c = malloc(sizeof sample);

  assert_non_null(c);
  fill_sample();
  memcpy(c, sample, sizeof sample);
  STF_FindParam(&c[0], STF_KEY_SETPOINT)->value = setpoint;
  return c;
}

/* Many snapshots in a row: after a flush the file holds the last one, and
   no temporary file is left. */
static void
test_writer_latest_wins(void **state)
{
  STF_Writer *w = STF_WriterCreate();
  STF_Laser *out = NULL;
  unsigned long writes = 0;

  assert_non_null(w);
  for (int i = 0; i < 200; i++)
    assert_int_equal(STF_WriterSubmit(w, path, sample_copy(384.0 + i * 1e-6), 3), 0);
  assert_int_equal(STF_WriterFlush(w, err, sizeof err), 0);
  assert_int_equal(STF_WriterStatus(w, err, sizeof err, &writes), 0);
  assert_true(writes >= 1 && writes <= 200);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 3);
  assert_same_bits(param(&out[0], STF_KEY_SETPOINT), 384.0 + 199 * 1e-6);
  assert_string_equal(out[2].name, "x");
  free(out);
  assert_int_equal(count_entries(), 1);
  STF_WriterDestroy(w);
}

/* A write that fails is reported by Flush and Status with the path, and a
   later good write clears it. */
static void
test_writer_failure(void **state)
{
  STF_Writer *w = STF_WriterCreate();
  char bad[PATH_MAX + 64];
  unsigned long writes = 0;

  assert_non_null(w);
  snprintf(bad, sizeof bad, "%s/no-such-dir/wavelock.state", dir);
  assert_int_equal(STF_WriterSubmit(w, bad, sample_copy(384.1), 3), 0);
  assert_int_equal(STF_WriterFlush(w, err, sizeof err), -1);
  assert_non_null(strstr(err, "no-such-dir"));
  err[0] = '\0';
  assert_int_equal(STF_WriterStatus(w, err, sizeof err, &writes), -1);
  assert_non_null(strstr(err, "no-such-dir"));
  assert_int_equal(writes, 1);
  assert_int_equal(STF_WriterSubmit(w, path, sample_copy(384.2), 3), 0);
  assert_int_equal(STF_WriterFlush(w, err, sizeof err), 0);
  assert_int_equal(STF_WriterStatus(w, err, sizeof err, &writes), 0);
  assert_int_equal(writes, 2);
  STF_WriterDestroy(w);
}

/* Destroy writes what is still queued. */
static void
test_writer_destroy_writes(void **state)
{
  STF_Writer *w = STF_WriterCreate();
  STF_Laser *out = NULL;

  assert_non_null(w);
  assert_int_equal(STF_WriterSubmit(w, path, sample_copy(384.3), 3), 0);
  STF_WriterDestroy(w);
  assert_int_equal(STF_Load(path, &out, err, sizeof err), 3);
  assert_same_bits(param(&out[0], STF_KEY_SETPOINT), 384.3);
  free(out);
}

/* Only <state>.tmpXXXXXX (six characters, as mkstemp makes them) goes. */
static void
test_remove_stale_temps(void **state)
{
  static const char *const names[] = {
    "wavelock.state.tmpAbC123",      /* removed */
    "wavelock.state.tmpq9Z_x0",      /* removed */
    "wavelock.state.tmp12345",       /* five: kept */
    "wavelock.state.tmpABCDEFG",     /* seven: kept */
    "other.state.tmpABCDEF",         /* another file's: kept */
    "wavelock.statetmpABCDEF",       /* no dot: kept */
  };
  char p[PATH_MAX + 64];

  fill_sample();
  assert_int_equal(STF_Save(path, sample, 3, err, sizeof err), 0);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    write_all(p, "x", 1);
  }
  assert_int_equal(STF_RemoveStaleTemps(path), 2);
  assert_int_equal(count_entries(), 5);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(p, sizeof p, "%s/%s", dir, names[2]);
  assert_int_equal(access(p, F_OK), 0);
  assert_int_equal(STF_RemoveStaleTemps(path), 0);
  snprintf(p, sizeof p, "%s/nothing-here/wavelock.state", dir);
  assert_int_equal(STF_RemoveStaleTemps(p), 0);
}

/* What -t checks of a state file, without writing anything. */
static void
test_check_writable(void **state)
{
  char p[PATH_MAX + 64];
  FILE *f;

  assert_int_equal(STF_CheckWritable(path, err, sizeof err), 0);   /* not there yet: fine */
  assert_int_equal(STF_CheckWritable("", err, sizeof err), 0);     /* no state file */
  assert_int_equal(count_entries(), 0);                            /* nothing written */
  snprintf(p, sizeof p, "%s/missing/wavelock.state", dir);
  assert_int_equal(STF_CheckWritable(p, err, sizeof err), -1);
  assert_non_null(strstr(err, "/missing: No such file or directory"));
  /* the directory is a file */
  snprintf(p, sizeof p, "%s/file", dir);
  f = fopen(p, "w");
  assert_non_null(f);
  fclose(f);
  snprintf(p, sizeof p, "%s/file/wavelock.state", dir);
  assert_int_equal(STF_CheckWritable(p, err, sizeof err), -1);
  assert_non_null(strstr(err, "is not a directory"));
  /* the state file is a directory */
  snprintf(p, sizeof p, "%s/sub", dir);
  assert_int_equal(mkdir(p, 0700), 0);
  assert_int_equal(STF_CheckWritable(p, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
  assert_int_equal(rmdir(p), 0);
  snprintf(p, sizeof p, "%s/file", dir);
  unlink(p);
  /* a directory this process may not write (root may write anywhere) */
  if (geteuid() != 0) {
    assert_int_equal(chmod(dir, 0500), 0);
    assert_int_equal(STF_CheckWritable(path, err, sizeof err), -1);
    assert_non_null(strstr(err, "not writable"));
    assert_int_equal(chmod(dir, 0700), 0);
  }
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_format, setup, teardown),
    cmocka_unit_test_setup_teardown(test_format1_sample, setup, teardown),
    cmocka_unit_test_setup_teardown(test_format_line, setup, teardown),
    cmocka_unit_test_setup_teardown(test_calibration_record, setup, teardown),
    cmocka_unit_test_setup_teardown(test_empty_list, setup, teardown),
    cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
    cmocka_unit_test_setup_teardown(test_crc_mismatch, setup, teardown),
    cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
    cmocka_unit_test_setup_teardown(test_malformed_with_good_crc, setup, teardown),
    cmocka_unit_test_setup_teardown(test_atomic_no_temp_files, setup, teardown),
    cmocka_unit_test_setup_teardown(test_not_a_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_param_limits, setup, teardown),
    cmocka_unit_test_setup_teardown(test_writer_latest_wins, setup, teardown),
    cmocka_unit_test_setup_teardown(test_writer_failure, setup, teardown),
    cmocka_unit_test_setup_teardown(test_writer_destroy_writes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_remove_stale_temps, setup, teardown),
    cmocka_unit_test_setup_teardown(test_check_writable, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
