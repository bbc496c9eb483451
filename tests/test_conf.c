/* test_conf.c - the config loader (CNF_): values, defaults, every error
 * class with its "file:line: key: message", URL and address parsing, and the
 * shipped config files. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "regenc.h"
#include "units.h"

/* cmocka 1.1's assert_float_equal works in float; compare doubles here. */
#define assert_dbl(a, b, eps) do {                                            \
    double a_ = (a), b_ = (b);                                                \
    if (!(fabs(a_ - b_) <= (eps)))                                            \
      fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);                     \
  } while (0)

#define FIX(name) TEST_SRCDIR "/conf/" name
#define SHIPPED(name) TEST_SRCDIR "/../conf/" name

static char errbuf[1024];

static CNF_Config *
load(const char *path)
{
  errbuf[0] = '\0';
  return CNF_Load(path, errbuf, sizeof errbuf);
}

/* Load a fixture that must fail and compare the whole message. */
static void
expect_error(const char *path, const char *rest)
{
  char want[1024];
  CNF_Config *cfg = load(path);

  if (cfg)
    fail_msg("%s loaded, expected error \"%s\"", path, rest);
  snprintf(want, sizeof want, "%s%s", path, rest);
  assert_string_equal(errbuf, want);
  assert_null(strchr(errbuf, '\n'));
}

/* ---- good configs -------------------------------------------------------- */

static void
test_good_values(void **state)
{
  CNF_Config *cfg = load(FIX("good.conf"));
  char dir[PATH_MAX], want[PATH_MAX + 64];
  const CNF_Laser *l;

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_string_equal(cfg->path, FIX("good.conf"));
  assert_int_equal(cfg->server.n_listen, 3);
  assert_string_equal(cfg->server.listen[0], "127.0.0.1:7470");
  assert_string_equal(cfg->server.listen[1], "[::1]:7471");
  assert_string_equal(cfg->server.listen[2], "192.0.2.10:7470");
  assert_int_equal(cfg->server.max_clients, 10);
  assert_int_equal(cfg->server.idle_timeout_s, 600);
  assert_int_equal(cfg->server.line_timeout_s, 15);
  assert_int_equal(cfg->server.auth_timeout_s, 20);
  assert_int_equal(cfg->server.n_tokens, 2);
  assert_string_equal(cfg->server.tokens[0].secret, "s3cret-control");
  assert_int_equal(cfg->server.tokens[0].role, CNF_ROLE_CONTROL);
  assert_string_equal(cfg->server.tokens[1].secret, "look-only");
  assert_int_equal(cfg->server.tokens[1].role, CNF_ROLE_MONITOR);

  /* relative paths are resolved against the config file's directory */
  assert_non_null(realpath(TEST_SRCDIR "/conf", dir));
  snprintf(want, sizeof want, "%s/test.state", dir);
  assert_string_equal(cfg->state_file, want);
  assert_string_equal(cfg->log_target, "syslog");
  assert_string_equal(cfg->log_level, "debug");
  assert_string_equal(cfg->pid_file, "/run/wavelockd-test.pid");
  assert_string_equal(cfg->user, "nobody");

  assert_int_equal(cfg->wavemeter.backend, CNF_WM_WLMDATA);
  assert_string_equal(cfg->wavemeter.library, "/opt/hf/libwlmData.so");
  assert_string_equal(cfg->wavemeter.address, "10.0.0.5:7480");
  assert_int_equal(cfg->wavemeter.stale_ms, 1500);
  assert_int_equal(cfg->wavemeter.poll_ms, 50);
  assert_int_equal(cfg->wavemeter.callback_silence_ms, 3000);

  assert_int_equal(cfg->n_devices, 2);
  assert_string_equal(cfg->devices[0].name, "ao1");
  assert_int_equal(cfg->devices[0].parsed.kind, CNF_URL_TCP);
  assert_string_equal(cfg->devices[0].parsed.host, "127.0.0.1");
  assert_int_equal(cfg->devices[0].parsed.port, 1502);
  assert_int_equal(cfg->devices[0].unit, 1);
  assert_int_equal(cfg->devices[0].timeout_ms, 250);
  assert_int_equal(cfg->devices[0].combine_writes, 1);
  assert_int_equal(cfg->devices[0].line, 24);
  assert_string_equal(cfg->devices[1].url, "rtu:/dev/ttyUSB0?baud=9600&parity=E&data=8&stop=2");
  assert_int_equal(cfg->devices[1].parsed.kind, CNF_URL_RTU);
  assert_string_equal(cfg->devices[1].parsed.host, "/dev/ttyUSB0");
  assert_int_equal(cfg->devices[1].parsed.baud, 9600);
  assert_int_equal(cfg->devices[1].parsed.parity, 'E');
  assert_int_equal(cfg->devices[1].parsed.data_bits, 8);
  assert_int_equal(cfg->devices[1].parsed.stop_bits, 2);
  assert_int_equal(cfg->devices[1].unit, 3);
  assert_int_equal(cfg->devices[1].timeout_ms, 200);
  assert_int_equal(cfg->devices[1].combine_writes, 0);       /* the default */

  assert_int_equal(cfg->n_lasers, 2);
  l = &cfg->lasers[0];
  assert_string_equal(l->name, "cool780");
  assert_int_equal(l->line, 28);
  assert_int_equal(l->channel, 1);
  assert_dbl(l->setpoint_thz, 384.2304844, 1e-12);
  assert_int_equal(l->autolock, 1);
  assert_dbl(l->window_mhz, 4.5, 0);
  assert_dbl(l->capture_mhz, 1500.0, 0);
  assert_dbl(l->modehop_mhz, 800.0, 0);
  assert_int_equal(l->lock_n, 7);
  assert_int_equal(l->unlock_m, 2);
  assert_dbl(l->min_thz, 384.0, 0);
  assert_dbl(l->max_thz, 384.5, 0);
  assert_dbl(l->kp, 0.001, 0);
  assert_dbl(l->ki, 0.004, 0);
  assert_dbl(l->kd, 0.0005, 0);
  assert_dbl(l->d_tau_s, 0.1, 0);
  assert_int_equal(l->polarity, -1);
  assert_dbl(l->max_dt_s, 2.0, 0);
  assert_int_equal(l->piezo.present, 1);
  assert_string_equal(l->piezo.device, "ao1");
  assert_int_equal(l->piezo.device_index, 0);
  assert_int_equal(l->piezo.reg, 0);
  assert_int_equal(l->piezo.enc.format, REG_U16);
  assert_dbl(l->piezo.enc.scale, 6553.5, 0);
  assert_dbl(l->piezo.enc.offset, 0.0, 0);
  assert_dbl(l->piezo.min_v, 0.0, 0);
  assert_dbl(l->piezo.max_v, 10.0, 0);
  assert_dbl(l->piezo.start_v, 4.0, 0);
  assert_dbl(l->piezo.max_step_v, 0.25, 0);
  assert_int_equal(l->current.present, 1);
  assert_int_equal(l->current.reg, 1);
  assert_int_equal(l->current.enc.format, REG_S16);
  assert_dbl(l->current.enc.scale, 3276.7, 0);
  assert_dbl(l->current.min_v, -1.0, 0);
  assert_dbl(l->current.max_v, 1.0, 0);
  assert_dbl(l->current.start_v, 0.0, 0);      /* mid-range default */
  assert_dbl(l->current.feedforward, -0.2, 0);
  snprintf(want, sizeof want, "%s/logs/cool780.dat", dir);
  assert_string_equal(l->datalog, want);
  assert_dbl(l->sim.offset_mhz, 250, 0);
  assert_dbl(l->sim.piezo_mhz_per_v, -300, 0);
  assert_dbl(l->sim.current_mhz_per_v, -400, 0);
  assert_dbl(l->sim.piezo_lag_ms, 2, 0);
  assert_dbl(l->sim.current_lag_ms, 80, 0);
  assert_dbl(l->sim.walk_mhz_rts, 1.5, 0);
  assert_dbl(l->sim.sine_mhz, 3, 0);
  assert_dbl(l->sim.sine_period_s, 300, 0);
  assert_dbl(l->sim.linear_mhz_per_h, -10, 0);
  assert_dbl(l->sim.modehop_per_h, 0.5, 0);
  assert_dbl(l->sim.modehop_mhz, 9000, 0);
  assert_dbl(l->sim.modehop_s, 2, 0);
  assert_dbl(l->sim.noise_mhz, 0.8, 0);
  assert_dbl(l->sim.exposure_ms, 12, 0);
  assert_dbl(l->sim.error_rate, 0.01, 0);

  l = &cfg->lasers[1];
  assert_string_equal(l->name, "repump795");
  /* "794.978851 nm" in vacuum */
  assert_dbl(l->setpoint_thz, 299792.458 / 794.978851, 1e-9);
  assert_int_equal(l->piezo.device_index, 1);
  assert_int_equal(l->piezo.reg, 10);
  assert_int_equal(l->piezo.enc.format, REG_F32);
  assert_int_equal(l->piezo.enc.order, REG_CDAB);
  assert_dbl(l->piezo.start_v, 0.0, 0);
  assert_int_equal(l->current.present, 0);
  assert_string_equal(l->datalog, "");

  assert_int_equal(cfg->sim.seed, 42);
  assert_string_equal(cfg->sim.control, "127.0.0.1:0");
  assert_dbl(cfg->sim.switch_ms, 0.5, 0);
  assert_dbl(cfg->sim.speed, 4.0, 0);

  assert_int_equal(CNF_FindLaser(cfg, "repump795"), 1);
  assert_int_equal(CNF_FindLaser(cfg, "COOL780"), 0);
  assert_int_equal(CNF_FindLaser(cfg, "nope"), -1);
  assert_int_equal(CNF_FindDevice(cfg, "ao2"), 1);
  assert_int_equal(CNF_FindDevice(cfg, "ao3"), -1);
  CNF_Free(cfg);
}

static void
test_defaults(void **state)
{
  CNF_Config *cfg = load(FIX("minimal.conf"));
  const CNF_Laser *l;

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->server.n_listen, 1);
  assert_string_equal(cfg->server.listen[0], "127.0.0.1:7470");
  assert_int_equal(cfg->server.max_clients, 64);
  assert_int_equal(cfg->server.idle_timeout_s, 0);
  assert_int_equal(cfg->server.line_timeout_s, 30);
  assert_int_equal(cfg->server.auth_timeout_s, 60);
  assert_int_equal(cfg->server.n_tokens, 0);
  assert_string_equal(cfg->state_file, "");
  assert_string_equal(cfg->log_target, "stderr");
  assert_string_equal(cfg->log_level, "info");
  assert_string_equal(cfg->pid_file, "");
  assert_string_equal(cfg->user, "");
  assert_int_equal(cfg->wavemeter.backend, CNF_WM_STREAM);
  assert_string_equal(cfg->wavemeter.library, "libwlmData.so");
  assert_string_equal(cfg->wavemeter.address, "127.0.0.1:7480");
  assert_int_equal(cfg->wavemeter.stale_ms, 1000);
  assert_int_equal(cfg->wavemeter.poll_ms, 100);
  assert_int_equal(cfg->wavemeter.callback_silence_ms, 2000);
  assert_int_equal(cfg->devices[0].parsed.port, 502);
  assert_string_equal(cfg->devices[0].parsed.host, "localhost");
  assert_int_equal(cfg->devices[0].unit, 1);
  assert_int_equal(cfg->devices[0].timeout_ms, 200);

  l = &cfg->lasers[0];
  assert_int_equal(l->channel, 64);
  assert_dbl(l->setpoint_thz, 384.23, 0);     /* plain number: THz */
  assert_int_equal(l->autolock, 0);
  assert_dbl(l->window_mhz, 5.0, 0);
  assert_dbl(l->capture_mhz, 2000.0, 0);
  assert_dbl(l->modehop_mhz, 1000.0, 0);
  assert_dbl(l->glitch_mhz, 500.0, 0);
  assert_int_equal(l->lock_n, 5);
  assert_int_equal(l->unlock_m, 3);
  assert_dbl(l->kp, 0.0, 0);
  assert_dbl(l->ki, 0.002, 0);
  assert_dbl(l->kd, 0.0, 0);
  assert_dbl(l->d_tau_s, 0.05, 0);
  assert_int_equal(l->polarity, 1);
  assert_dbl(l->max_dt_s, 1.0, 0);
  assert_int_equal(l->piezo.reg, 5);
  assert_int_equal(l->piezo.enc.format, REG_U16);
  assert_int_equal(l->piezo.enc.order, REG_ABCD);
  assert_dbl(l->piezo.enc.scale, 6553.5, 0);
  assert_dbl(l->piezo.enc.offset, 0.0, 0);
  assert_dbl(l->piezo.min_v, 0.0, 0);
  assert_dbl(l->piezo.max_v, 10.0, 0);
  assert_dbl(l->piezo.start_v, 5.0, 0);
  assert_dbl(l->piezo.max_step_v, 0.0, 0);
  assert_dbl(l->piezo.feedforward, 0.0, 0);
  assert_int_equal(l->current.present, 0);
  assert_dbl(l->sim.offset_mhz, 0, 0);
  assert_dbl(l->sim.piezo_mhz_per_v, 300, 0);
  assert_dbl(l->sim.current_mhz_per_v, 50, 0);
  assert_dbl(l->sim.piezo_lag_ms, 1, 0);
  assert_dbl(l->sim.current_lag_ms, 100, 0);
  assert_dbl(l->sim.walk_mhz_rts, 2, 0);
  assert_dbl(l->sim.sine_mhz, 5, 0);
  assert_dbl(l->sim.sine_period_s, 600, 0);
  assert_dbl(l->sim.linear_mhz_per_h, 20, 0);
  assert_dbl(l->sim.modehop_per_h, 0, 0);
  assert_dbl(l->sim.modehop_mhz, 8000, 0);
  assert_dbl(l->sim.modehop_s, 3, 0);
  assert_dbl(l->sim.noise_mhz, 1, 0);
  assert_dbl(l->sim.exposure_ms, 10, 0);
  assert_dbl(l->sim.error_rate, 0, 0);
  assert_dbl(l->sim.modehop_free_v, 0, 0);
  assert_dbl(l->sim.hysteresis_v, 0.3, 0);
  assert_dbl(l->relock.after_s, 2.0, 0);
  assert_dbl(l->relock.piezo_span_v, 1.0, 0);
  assert_dbl(l->relock.piezo_step_v, 0.1, 0);
  assert_dbl(l->relock.current_span_v, 0.0, 0);
  assert_dbl(l->relock.current_step_v, 0.0, 0);
  assert_int_equal(l->relock.settle_readings, 1);
  assert_int_equal(l->relock.tries, 3);
  assert_int_equal(cfg->sim.seed, 1);
  assert_string_equal(cfg->sim.control, "127.0.0.1:7481");
  assert_dbl(cfg->sim.switch_ms, 1.0, 0);
  assert_dbl(cfg->sim.speed, 1.0, 0);
  CNF_Free(cfg);
}

/* 5 and 5.0 are both accepted, for integers and for numbers. */
static void
test_autoconvert(void **state)
{
  CNF_Config *cfg = load(FIX("autoconvert.conf"));
  const CNF_Laser *l;

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->server.max_clients, 8);
  assert_int_equal(cfg->server.line_timeout_s, 5);
  assert_int_equal(cfg->wavemeter.stale_ms, 500);
  assert_int_equal(cfg->devices[0].unit, 2);
  assert_int_equal(cfg->devices[0].timeout_ms, 100);
  l = &cfg->lasers[0];
  assert_int_equal(l->channel, 3);
  assert_dbl(l->setpoint_thz, 384.0, 0);
  assert_dbl(l->min_thz, 383.0, 0);
  assert_dbl(l->window_mhz, 5.0, 0);
  assert_dbl(l->capture_mhz, 100.0, 0);
  assert_int_equal(l->lock_n, 4);
  assert_int_equal(l->unlock_m, 2);
  assert_dbl(l->ki, 1.0, 0);
  assert_int_equal(l->polarity, 1);
  assert_int_equal(l->piezo.reg, 2);
  assert_dbl(l->piezo.enc.scale, 6553.0, 0);
  assert_dbl(l->piezo.start_v, 5.0, 0);
  assert_dbl(l->sim.offset_mhz, 100.0, 0);
  assert_int_equal(cfg->sim.seed, 7);
  assert_dbl(cfg->sim.speed, 2.0, 0);
  CNF_Free(cfg);
}

static void
test_include(void **state)
{
  CNF_Config *cfg = load(FIX("include.conf"));

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->n_lasers, 1);
  assert_string_equal(cfg->lasers[0].name, "inc");
  assert_int_equal(cfg->lasers[0].channel, 9);
  CNF_Free(cfg);
}

/* An error inside an included file names that file and its line. */
static void
test_include_error(void **state)
{
  CNF_Config *cfg = load(FIX("include-bad.conf"));

  char dir[PATH_MAX], want[PATH_MAX + 128];

  assert_null(cfg);
  /* The include is resolved to a canonical path; TEST_SRCDIR may hold "..". */
  assert_non_null(realpath(TEST_SRCDIR "/conf", dir));
  snprintf(want, sizeof want, "%s/include-bad.inc:3: lasers.[0].channel: "
           "must be between 1 and 64 (is 99)", dir);
  assert_string_equal(errbuf, want);
}

/* ---- the error classes of the acceptance list, exact messages ---------- */

static void
test_err_missing_file(void **state)
{
  expect_error(FIX("does-not-exist.conf"), ": cannot read: No such file or directory");
  expect_error(TEST_SRCDIR "/conf", ": cannot read: Is a directory");
}

static void
test_err_syntax(void **state)
{
  expect_error(FIX("syntax.conf"), ":4: syntax error");
}

static void
test_err_wrong_type(void **state)
{
  expect_error(FIX("wrong-type.conf"),
               ":5: lasers.[0].channel: must be an integer, not a string");
}

static void
test_err_unknown_device(void **state)
{
  expect_error(FIX("unknown-device.conf"),
               ":9: lasers.[1].current.device: unknown device \"ao9\" (not in devices)");
}

static void
test_err_out_of_range(void **state)
{
  expect_error(FIX("out-of-range.conf"), ":11: lasers.[2].pid.ki: must be >= 0 (is -0.002)");
}

static void
test_err_duplicate_laser(void **state)
{
  expect_error(FIX("dup-laser.conf"),
               ":7: lasers.[1].name: duplicate laser name \"cool780\" (also line 4)");
}

static void
test_err_unknown_key(void **state)
{
  expect_error(FIX("unknown-key.conf"),
               ":6: lasers.[0].pid.kj: unknown key (did you mean \"kp\", \"ki\" or \"kd\"?)");
}

static void
test_err_open_without_tokens(void **state)
{
  expect_error(FIX("open-no-tokens.conf"),
               ":4: server.listen.[1]: \"0.0.0.0:7470\" is not a loopback address: "
               "configure server.tokens so that clients must authenticate");
}

/* ---- table of further checks, each on a small generated file ---------- */

static char tmpdir[PATH_MAX];

static int
setup_tmpdir(void **state)
{
  snprintf(tmpdir, sizeof tmpdir, "/tmp/wl-test-conf-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown_tmpdir(void **state)
{
  char p[PATH_MAX + 16];

  snprintf(p, sizeof p, "%s/t.conf", tmpdir);
  unlink(p);
  return rmdir(tmpdir);
}

static CNF_Config *
load_text(const char *text, char *path, size_t pathlen)
{
  FILE *f;

  snprintf(path, pathlen, "%s/t.conf", tmpdir);
  f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
  return load(path);
}

/* Line 1: a device; lines 2-4 open a laser; extra lines from 5; then the
   piezo group and the end. */
#define DEV "devices = ( { name = \"ao1\"; url = \"tcp://127.0.0.1:1502\"; } );\n"
#define OPEN "lasers = ( {\n  name = \"a\"; channel = 1; setpoint = \"384.23 THz\";\n" \
             "  min_thz = 384.0; max_thz = 384.5;\n"
#define PIEZO "  piezo = { device = \"ao1\"; register = 0; };\n"
#define CLOSE "} );\n"
#define L5(x) DEV OPEN x "\n" PIEZO CLOSE
#define LASER_B(name, ch, reg) \
  ", { name = \"" name "\"; channel = " #ch "; setpoint = 384.2; min_thz = 384.0; " \
  "max_thz = 384.5; piezo = { device = \"ao1\"; register = " #reg "; }; }\n"

typedef struct {
  const char *text;
  int line;                 /* expected line, 0: no line */
  const char *key;          /* expected key path */
  const char *msg;          /* expected message substring */
} ErrCase;

static const ErrCase err_cases[] = {
  /* server */
  { "server = { max_clients = 0; };\n", 1, "server.max_clients", "must be between 1 and 100000" },
  { "server = { listen = []; };\n", 1, "server.listen", "at least one" },
  { "server = { listen = [\"127.0.0.1\"]; };\n", 1, "server.listen.[0]", "missing ':port'" },
  { "server = { listen = [\"127.0.0.1:99999\"]; };\n", 1, "server.listen.[0]", "port must be" },
  { "server = { listen = [\"::1:7470\"]; };\n", 1, "server.listen.[0]", "brackets" },
  { "server = { listen = 7470; };\n", 1, "server.listen", "must be a list" },
  { "server = { listen = [\"192.168.1.2:7470\"];\n tokens = ( { secret = \"x y\"; role = \"control\"; } ); };\n",
    2, "server.tokens.[0].secret", "spaces" },
  { "server = { tokens = ( { secret = \"abc\"; role = \"admin\"; } ); };\n", 1,
    "server.tokens.[0].role", "must be \"monitor\" or \"control\"" },
  { "server = { tokens = ( { secret = \"abc\"; } ); };\n", 1, "server.tokens.[0].role",
    "missing (required)" },
  { "server = { tokens = ( { secret = \"abc\"; role = \"control\"; },\n { secret = \"abc\"; role = \"monitor\"; } ); };\n",
    2, "server.tokens.[1].secret", "same secret" },
  { "server = { listen = [\"[2001:db8::1]:7470\"]; };\n", 1, "server.listen.[0]", "not a loopback" },
  { "server = { idle_timeout_s = -1; };\n", 1, "server.idle_timeout_s", "between 0 and" },
  { "server = { auth_timeout_s = 86401; };\n", 1, "server.auth_timeout_s", "between 0 and" },
  { "server = { max_clients = 4.5; };\n", 1, "server.max_clients", "must be a whole number" },
  { "server = 5;\n", 1, "server", "must be a group" },
  /* http */
  { "http = { listen = [\"0.0.0.0:7471\"]; };\n", 1, "http.listen.[0]", "not a loopback address" },
  { "http = { listen = [\"127.0.0.1\"]; };\n", 1, "http.listen.[0]", "missing ':port'" },
  { "http = { listen = 7471; };\n", 1, "http.listen", "must be a list" },
  { "http = { max_event_readers = -1; };\n", 1, "http.max_event_readers", "between 0 and" },
  { "http = { session_s = 10; };\n", 1, "http.session_s", "between 60 and" },
  { "http = { lisen = [\"127.0.0.1:7471\"]; };\n", 1, "http.lisen", "did you mean \"listen\"" },
  /* top level */
  { "state_file = 5;\n", 1, "state_file", "must be a string" },
  { "log = \"file\";\n", 1, "log", "must be \"stderr\" or \"syslog\"" },
  { "log_level = \"loud\";\n", 1, "log_level", "must be \"error\"" },
  { "lazers = ();\n", 1, "lazers", "unknown key (did you mean \"lasers\"?)" },
  /* wavemeter */
  { "wavemeter = { backend = \"serial\"; };\n", 1, "wavemeter.backend", "\"stream\" or \"wlmdata\"" },
  { "wavemeter = { address = \"localhost\"; };\n", 1, "wavemeter.address", "missing ':port'" },
  { "wavemeter = { address = \"localhost:0\"; };\n", 1, "wavemeter.address", "port must be a number 1..65535" },
  { "wavemeter = { stale_ms = 0; };\n", 1, "wavemeter.stale_ms", "between 1 and" },
  /* devices */
  { "devices = ( { url = \"tcp://h:1\"; } );\n", 1, "devices.[0].name", "missing (required)" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = { function = \"coils\"; }; } );\n",
    2, "devices.[0].probe.function", "must be \"holding\" (FC03), \"input\" (FC04) or \"none\"" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = { register = 65536; }; } );\n",
    2, "devices.[0].probe.register", "must be between 0 and 65535 (is 65536)" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = { register = -1; }; } );\n",
    2, "devices.[0].probe.register", "must be between 0 and 65535 (is -1)" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = { function = \"none\";\n"
    " register = 3; }; } );\n", 3, "devices.[0].probe.register", "no register is read" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = { reg = 3; }; } );\n",
    2, "devices.[0].probe.reg", "unknown key" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\";\n probe = \"none\"; } );\n",
    2, "devices.[0].probe", "must be a group" },
  { "devices = ( { name = \"a\"; } );\n", 1, "devices.[0].url", "missing (required)" },
  { "devices = ( { name = \"a\"; url = \"udp://h:1\"; } );\n", 1, "devices.[0].url", "unknown kind of URL" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\"; unit = 248; } );\n", 1, "devices.[0].unit",
    "between 0 and 247" },
  { "devices = ( { name = \"a b\"; url = \"tcp://h:1\"; } );\n", 1, "devices.[0].name", "only letters" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\"; },\n { name = \"A\"; url = \"tcp://h:2\"; } );\n",
    2, "devices.[1].name", "duplicate device name \"A\" (also line 1)" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\"; },\n { name = \"b\"; url = \"tcp://h:1\"; } );\n",
    2, "devices.[1].url", "same url and unit" },
  { "devices = { name = \"a\"; };\n", 1, "devices", "must be a list" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\"; timeout_ms = 0; } );\n", 1,
    "devices.[0].timeout_ms", "between 1 and 60000" },
  { "devices = ( { name = \"a\"; url = \"tcp://h:1\"; combine_writes = 3; } );\n", 1,
    "devices.[0].combine_writes", "must be true or false" },
  /* lasers: required keys */
  { DEV "lasers = ( {\n channel = 1; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    2, "lasers.[0].name", "missing (required)" },
  { DEV "lasers = ( {\n name = \"a\"; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    2, "lasers.[0].channel", "missing (required)" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    2, "lasers.[0].setpoint", "missing (required)" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = 384.2; max_thz = 385;\n" PIEZO CLOSE,
    2, "lasers.[0].min_thz", "missing (required)" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = 384.2; min_thz = 384;\n" PIEZO CLOSE,
    2, "lasers.[0].max_thz", "missing (required)" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" CLOSE,
    2, "lasers.[0].piezo", "missing (required)" },
  { L5("piezo2 = { };"), 5, "lasers.[0].piezo2", "unknown key (did you mean \"piezo\"?)" },
  { DEV OPEN "  piezo = { register = 0; };\n" CLOSE, 5, "lasers.[0].piezo.device", "missing (required)" },
  { DEV OPEN "  piezo = { device = \"ao1\"; };\n" CLOSE, 5, "lasers.[0].piezo.register",
    "missing (required)" },
  /* lasers: values */
  { DEV "lasers = ( {\n name = \"a\"; channel = 65; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    3, "lasers.[0].channel", "between 1 and 64" },
  /* the wlmdata backend reads channels 1..17 only */
  { "wavemeter = { backend = \"wlmdata\"; };\n" DEV "lasers = ( {\n name = \"a\";\n"
    " channel = 18; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    5, "lasers.[0].channel", "the wlmdata backend reads channels 1 to 17 only (is 18)" },
  { DEV "lasers = ( {\n name = \"all\"; channel = 1; setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
    3, "lasers.[0].name", "reserved" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"384.6 THz\"; min_thz = 384.0; max_thz = 384.5;\n" PIEZO CLOSE,
    3, "lasers.[0].setpoint", "outside min_thz..max_thz" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"384.2 furlongs\"; min_thz = 384.0; max_thz = 384.5;\n" PIEZO CLOSE,
    3, "lasers.[0].setpoint", "unit" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"fast\"; min_thz = 384.0; max_thz = 384.5;\n" PIEZO CLOSE,
    3, "lasers.[0].setpoint", "\"fast\"" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = true; min_thz = 384.0; max_thz = 384.5;\n" PIEZO CLOSE,
    3, "lasers.[0].setpoint", "must be a frequency" },
  { DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = 384.2; min_thz = 384.5; max_thz = 384.0;\n" PIEZO CLOSE,
    3, "lasers.[0].max_thz", "must be above min_thz" },
  { L5("autolock = \"yes\";"), 5, "lasers.[0].autolock", "must be true or false" },
  { L5("window_mhz = 0;"), 5, "lasers.[0].window_mhz", "must be > 0" },
  { L5("window_mhz = 50; capture_mhz = 40;"), 5, "lasers.[0].capture_mhz",
    "capture_mhz (40) must be larger than window_mhz (50)" },
  { L5("modehop_mhz = -1;"), 5, "lasers.[0].modehop_mhz", "must be between 0 and" },
  { L5("glitch_mhz = -1;"), 5, "lasers.[0].glitch_mhz", "must be between 0 and" },
  { L5("glitch_mhz = 1e9;"), 5, "lasers.[0].glitch_mhz", "must be between 0 and" },
  { L5("lock_n = 0;"), 5, "lasers.[0].lock_n", "between 1 and" },
  { L5("unlock_m = 0;"), 5, "lasers.[0].unlock_m", "between 1 and" },
  { L5("pid = { kp = -1; };"), 5, "lasers.[0].pid.kp", "must be >= 0" },
  { L5("pid = { kd = -1; };"), 5, "lasers.[0].pid.kd", "must be >= 0" },
  { L5("pid = { polarity = 0; };"), 5, "lasers.[0].pid.polarity", "must be 1 or -1" },
  { L5("pid = { polarity = 2; };"), 5, "lasers.[0].pid.polarity", "between -1 and 1" },
  { L5("pid = { max_dt_s = 0; };"), 5, "lasers.[0].pid.max_dt_s", "must be > 0" },
  { L5("pid = { ki = \"0.1\"; };"), 5, "lasers.[0].pid.ki", "must be a number, not a string" },
  { L5("pid = 0.1;"), 5, "lasers.[0].pid", "must be a group" },
  { L5("datalog = 1;"), 5, "lasers.[0].datalog", "must be a string" },
  /* actuators */
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 65536; };\n" CLOSE, 5,
    "lasers.[0].piezo.register", "between 0 and 65535" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 65535; format = \"f32\"; };\n" CLOSE, 5,
    "lasers.[0].piezo.register", "between 0 and 65534" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = -1; };\n" CLOSE, 5,
    "lasers.[0].piezo.register", "between 0 and 65535" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; format = \"u32\"; };\n" CLOSE, 5,
    "lasers.[0].piezo.format", "must be \"u16\", \"s16\" or \"f32\"" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; format = \"f32\"; word_order = \"bacd\"; };\n" CLOSE, 5,
    "lasers.[0].piezo.word_order", "must be \"abcd\"" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; min_v = 5; max_v = 5; };\n" CLOSE, 5,
    "lasers.[0].piezo.max_v", "min_v (5) must be below max_v (5)" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; min_v = 0; max_v = 10; start_v = 10.5; };\n" CLOSE, 5,
    "lasers.[0].piezo.start_v", "outside min_v..max_v" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; scale = 0; };\n" CLOSE, 5,
    "lasers.[0].piezo.scale", "must not be 0" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; format = \"s16\"; scale = 6553.5; min_v = 0; max_v = 10; };\n" CLOSE, 5,
    "lasers.[0].piezo.scale", "outside the s16 range" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; min_v = -1; max_v = 10; };\n" CLOSE, 5,
    "lasers.[0].piezo", "outside the u16 range" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; max_step_v = -0.1; };\n" CLOSE, 5,
    "lasers.[0].piezo.max_step_v", "must be >= 0" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; feedforward = 0.1; };\n" CLOSE, 5,
    "lasers.[0].piezo.feedforward", "unknown key" },
  { DEV OPEN PIEZO "  current = { device = \"ao1\"; register = 0; };\n" CLOSE, 6,
    "lasers.[0].current.register", "overlaps the registers of this laser's piezo" },
  /* between lasers */
  { DEV OPEN PIEZO "}\n" LASER_B("b", 1, 1) ");\n", 7, "lasers.[1].channel",
    "channel 1 is already used by laser \"a\" (line 2)" },
  { DEV OPEN PIEZO "}\n" LASER_B("A", 2, 1) ");\n", 7, "lasers.[1].name",
    "duplicate laser name \"A\" (also line 2)" },
  { DEV OPEN PIEZO "}\n" LASER_B("b", 2, 0) ");\n", 7, "lasers.[1].piezo.register",
    "register 0 of device \"ao1\" is already driven by a.piezo" },
  { DEV OPEN "  piezo = { device = \"ao1\"; register = 0; format = \"f32\"; scale = 1; };\n}\n"
    LASER_B("b", 2, 1) ");\n", 7, "lasers.[1].piezo.register", "already driven by a.piezo" },
  { DEV OPEN "  datalog = \"/tmp/x.dat\";\n" PIEZO "}\n"
    ", { name = \"b\"; channel = 2; setpoint = 384.2; min_thz = 384.0; max_thz = 384.5;\n"
    "  datalog = \"/tmp/x.dat\"; piezo = { device = \"ao1\"; register = 1; }; }\n);\n",
    9, "lasers.[1].datalog", "the same file as laser \"a\"" },
  /* a key given twice is a parse error from libconfig */
  { L5("channel = 2;"), 5, "", "duplicate setting name" },
  { "lasers = { };\n", 1, "lasers", "must be a list" },
  /* sim groups */
  { L5("sim = { noise_mhz = -1; };"), 5, "lasers.[0].sim.noise_mhz", "must be between 0 and" },
  { L5("sim = { exposure_ms = 0; };"), 5, "lasers.[0].sim.exposure_ms", "must be > 0" },
  { L5("sim = { error_rate = 1.5; };"), 5, "lasers.[0].sim.error_rate", "between 0 and 1" },
  { L5("sim = { piezo_mhz_per_v = 0; };"), 5, "lasers.[0].sim.piezo_mhz_per_v", "must not be 0" },
  { L5("sim = { modehop_free_v = -1; };"), 5, "lasers.[0].sim.modehop_free_v", "must be between 0 and" },
  { L5("sim = { hysteresis_v = -0.1; };"), 5, "lasers.[0].sim.hysteresis_v", "must be between 0 and" },
  /* relock groups */
  { L5("relock = { after_s = -1; };"), 5, "lasers.[0].relock.after_s", "must be between 0 and" },
  { L5("relock = { tries = 0; };"), 5, "lasers.[0].relock.tries", "" },
  { L5("relock = { settle_readings = -1; };"), 5, "lasers.[0].relock.settle_readings", "" },
  { L5("relock = { piezo_step_v = 0; };"), 5, "lasers.[0].relock.piezo_step_v",
    "must be > 0 when piezo_span_v is" },
  { L5("relock = { piezo_step_v = 2; };"), 5, "lasers.[0].relock.piezo_step_v",
    "must not be larger than piezo_span_v" },
  { L5("relock = { piezo_span_v = 5; piezo_step_v = 0.001; };"), 5,
    "lasers.[0].relock.piezo_step_v", "at most 1000 steps" },
  { L5("relock = { current_span_v = 0.1; current_step_v = 0.01; };"), 5,
    "lasers.[0].relock.current_span_v", "needs a current actuator" },
  { L5("relock = { current_span_v = 0.1; };"), 5, "lasers.[0].relock.current_step_v",
    "must be > 0 when current_span_v is" },
  { L5("relock = { step = 1; };"), 5, "lasers.[0].relock.step", "unknown key" },
  { L5("relock = 1;"), 5, "lasers.[0].relock", "" },
  { L5("sim = { noise = 1; };"), 5, "lasers.[0].sim.noise", "unknown key" },
  { "sim = { speed = 0; };\n", 1, "sim.speed", "must be > 0" },
  { "sim = { seed = -1; };\n", 1, "sim.seed", "must be >= 0" },
  { "sim = { control = \"7481\"; };\n", 1, "sim.control", "missing ':port'" },
};

static void
test_err_table(void **state)
{
  char path[PATH_MAX + 16];

  for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
    const ErrCase *c = &err_cases[i];
    CNF_Config *cfg = load_text(c->text, path, sizeof path);
    char prefix[PATH_MAX + 300];

    if (cfg) {
      CNF_Free(cfg);
      fail_msg("case %zu (%s): loaded, expected an error", i, c->key);
    }
    if (!c->key[0])
      snprintf(prefix, sizeof prefix, "%s:%d: ", path, c->line);
    else if (c->line > 0)
      snprintf(prefix, sizeof prefix, "%s:%d: %s: ", path, c->line, c->key);
    else
      snprintf(prefix, sizeof prefix, "%s: %s: ", path, c->key);
    if (strncmp(errbuf, prefix, strlen(prefix)) != 0)
      fail_msg("case %zu: got \"%s\", want prefix \"%s\"", i, errbuf, prefix);
    if (!strstr(errbuf, c->msg))
      fail_msg("case %zu: got \"%s\", want \"%s\" in it", i, errbuf, c->msg);
    assert_null(strchr(errbuf, '\n'));
  }
}

/* Variants that must load. */
static const char *const ok_cases[] = {
  "",                                                   /* empty file: no lasers */
  "server = { listen = \"127.0.0.1:7470\"; };\n",       /* a single string */
  "server = { listen = [\"localhost:0\", \"[::1]:0\", \"127.1.2.3:7470\"]; };\n",
  "server = { listen = [\"0.0.0.0:7470\"]; tokens = ( { secret = \"k\"; role = \"monitor\"; } ); };\n",
  "http = { listen = \"127.0.0.1:0\"; };\n",
  "server = { tokens = ( { secret = \"k\"; role = \"monitor\"; } ); };\n"
  "http = { listen = [\"0.0.0.0:7471\", \"[::1]:7471\"]; max_event_readers = 0; session_s = 60; };\n",
  "devices = ( { name = \"a\"; url = \"tcp://h:1\"; unit = 1; }, { name = \"b\"; url = \"tcp://h:1\"; unit = 2; } );\n",
  DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"384.23THz\"; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
  DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"384230 GHz\"; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
  DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"12816.5 cm-1\"; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
  DEV "lasers = ( {\n name = \"a\"; channel = 1; setpoint = \"780.241nm\"; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
  L5("autolock = 1; pid = { polarity = -1; };"),
  DEV OPEN "  piezo = { device = \"AO1\"; register = 0; format = \"S16\"; min_v = -10; max_v = 10; };\n" CLOSE,
  DEV OPEN "  piezo = { device = \"ao1\"; register = 65534; format = \"f32\"; word_order = \"DCBA\"; };\n" CLOSE,
  DEV OPEN "  piezo = { device = \"ao1\"; register = 4; format = \"u16\"; offset = 32767.5; scale = 3276.75; min_v = -10; max_v = 10; };\n" CLOSE,
  DEV OPEN PIEZO "  current = { device = \"ao1\"; register = 1; format = \"s16\"; min_v = -1; max_v = 1; feedforward = 0.3; };\n" CLOSE,
  DEV OPEN PIEZO "}\n" LASER_B("b", 2, 1) ");\n",
  /* every channel the backend reads: wlmdata 1..17, stream 1..64 */
  "wavemeter = { backend = \"wlmdata\"; };\n" DEV "lasers = ( {\n name = \"a\"; channel = 17;"
  " setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
  "wavemeter = { backend = \"stream\"; };\n" DEV "lasers = ( {\n name = \"a\"; channel = 64;"
  " setpoint = 384.2; min_thz = 384; max_thz = 385;\n" PIEZO CLOSE,
};

static void
test_ok_table(void **state)
{
  char path[PATH_MAX + 16];

  for (size_t i = 0; i < sizeof ok_cases / sizeof ok_cases[0]; i++) {
    CNF_Config *cfg = load_text(ok_cases[i], path, sizeof path);

    if (!cfg)
      fail_msg("ok case %zu: %s", i, errbuf);
    CNF_Free(cfg);
  }
}

/* probe: which register and function code a device is probed with. */
static void
test_probe(void **state)
{
  char path[PATH_MAX + 16];
  CNF_Config *cfg = load_text(
    "devices = ( { name = \"a\"; url = \"tcp://h:1\"; },\n"
    " { name = \"b\"; url = \"tcp://h:2\"; probe = { function = \"none\"; }; },\n"
    " { name = \"c\"; url = \"tcp://h:3\"; probe = { function = \"Input\"; register = 100; }; },\n"
    " { name = \"d\"; url = \"tcp://h:4\"; probe = { register = 65535; }; } );\n",
    path, sizeof path);

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->devices[0].probe_fn, CNF_PROBE_HOLDING);   /* defaults */
  assert_int_equal(cfg->devices[0].probe_reg, -1);
  assert_int_equal(cfg->devices[1].probe_fn, CNF_PROBE_NONE);
  assert_int_equal(cfg->devices[2].probe_fn, CNF_PROBE_INPUT);
  assert_int_equal(cfg->devices[2].probe_reg, 100);
  assert_int_equal(cfg->devices[3].probe_fn, CNF_PROBE_HOLDING);
  assert_int_equal(cfg->devices[3].probe_reg, 65535);
  CNF_Free(cfg);
}

/* ---- URLs and addresses -------------------------------------------------- */

static void
test_parse_url(void **state)
{
  CNF_Url u;
  char err[256];
  static const char *const bad[] = {
    "", "udp://h:1", "tcp://", "tcp://:502", "tcp://h:0", "tcp://h:65536", "tcp://h:12x",
    "tcp://h:1502/path", "tcp://h :1502", "tcp://::1:502", "tcp://[::1", "rtu:",
    "rtu:dev/ttyS0", "rtu:/dev/ttyS0?baud=abc", "rtu:/dev/ttyS0?baud=10",
    "rtu:/dev/ttyS0?parity=X", "rtu:/dev/ttyS0?data=9", "rtu:/dev/ttyS0?stop=3",
    "rtu:/dev/ttyS0?foo=1", "rtu:/dev/ttyS0?baud", "rtu:/dev/ttyS0?baud=9600&baud=19200",
    "serial:/dev/ttyS0",
  };

  assert_int_equal(CNF_ParseUrl("tcp://192.168.1.20:1502", &u, err, sizeof err), 0);
  assert_int_equal(u.kind, CNF_URL_TCP);
  assert_string_equal(u.host, "192.168.1.20");
  assert_int_equal(u.port, 1502);
  assert_int_equal(CNF_ParseUrl("TCP://plc.lab.example", &u, err, sizeof err), 0);
  assert_string_equal(u.host, "plc.lab.example");
  assert_int_equal(u.port, 502);
  assert_int_equal(CNF_ParseUrl("tcp://[fe80::1]:1503", &u, err, sizeof err), 0);
  assert_string_equal(u.host, "fe80::1");
  assert_int_equal(u.port, 1503);

  assert_int_equal(CNF_ParseUrl("rtu:/dev/ttyUSB0", &u, err, sizeof err), 0);
  assert_int_equal(u.kind, CNF_URL_RTU);
  assert_string_equal(u.host, "/dev/ttyUSB0");
  assert_int_equal(u.baud, 19200);
  assert_int_equal(u.parity, 'N');
  assert_int_equal(u.data_bits, 8);
  assert_int_equal(u.stop_bits, 1);
  assert_int_equal(CNF_ParseUrl("rtu:/dev/ttyS1?baud=115200&parity=o&data=7&stop=2", &u, err,
                                sizeof err), 0);
  assert_string_equal(u.host, "/dev/ttyS1");
  assert_int_equal(u.baud, 115200);
  assert_int_equal(u.parity, 'O');
  assert_int_equal(u.data_bits, 7);
  assert_int_equal(u.stop_bits, 2);
  assert_int_equal(CNF_ParseUrl("rtu:///dev/serial/by-id/usb-FTDI-if00?parity=even", &u, err,
                                sizeof err), 0);
  assert_string_equal(u.host, "/dev/serial/by-id/usb-FTDI-if00");
  assert_int_equal(u.parity, 'E');

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    if (CNF_ParseUrl(bad[i], &u, err, sizeof err) != -1)
      fail_msg("\"%s\" parsed", bad[i]);
    if (strlen(err) < 8)
      fail_msg("\"%s\": no message", bad[i]);
  }
  assert_int_equal(CNF_ParseUrl("rtu:/dev/ttyS0?foo=1", &u, err, sizeof err), -1);
  assert_string_equal(err, "unknown parameter \"foo\" (baud, parity, data, stop)");
  assert_int_equal(CNF_ParseUrl("tcp://h:0", &u, err, sizeof err), -1);
  assert_string_equal(err, "port must be a number 1..65535");
}

static void
test_host_port(void **state)
{
  char host[64];
  int port;

  assert_int_equal(CNF_ParseHostPort("127.0.0.1:7470", host, sizeof host, &port), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 7470);
  assert_int_equal(CNF_ParseHostPort("localhost:0", host, sizeof host, &port), 0);
  assert_string_equal(host, "localhost");
  assert_int_equal(port, 0);
  assert_int_equal(CNF_ParseHostPort("[::1]:65535", host, sizeof host, &port), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 65535);
  assert_int_equal(CNF_ParseHostPort("127.0.0.1", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort(":7470", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("h:", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("h:-1", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("h:+1", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("h:65536", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("::1:7470", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("[::1]7470", host, sizeof host, &port), -1);
  assert_int_equal(CNF_ParseHostPort("a-very-long-host-name-that-does-not-fit-in-this-buffer-at-all:1",
                                     host, 16, &port), -1);
}

static void
test_loopback(void **state)
{
  assert_true(CNF_IsLoopback("127.0.0.1"));
  assert_true(CNF_IsLoopback("127.8.9.10"));
  assert_true(CNF_IsLoopback("localhost"));
  assert_true(CNF_IsLoopback("LocalHost"));
  assert_true(CNF_IsLoopback("::1"));
  assert_true(CNF_IsLoopback("[::1]"));
  assert_true(CNF_IsLoopback("::ffff:127.0.0.1"));
  assert_false(CNF_IsLoopback("0.0.0.0"));
  assert_false(CNF_IsLoopback("::"));
  assert_false(CNF_IsLoopback("128.0.0.1"));
  assert_false(CNF_IsLoopback("192.168.1.1"));
  assert_false(CNF_IsLoopback("10.127.0.1"));
  assert_false(CNF_IsLoopback("example.org"));
  assert_false(CNF_IsLoopback("localhost.example.org"));
  assert_false(CNF_IsLoopback(""));
  assert_false(CNF_IsLoopback(NULL));
}

/* ---- the shipped config files ----------------------------------------- */

static void
test_shipped_example(void **state)
{
  CNF_Config *cfg = load(SHIPPED("wavelockd.conf"));
  int rtu = 0, tcp = 0, open_listen = 0;

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->wavemeter.backend, CNF_WM_WLMDATA);
  for (int i = 0; i < cfg->n_devices; i++) {
    rtu += cfg->devices[i].parsed.kind == CNF_URL_RTU;
    tcp += cfg->devices[i].parsed.kind == CNF_URL_TCP;
  }
  assert_true(rtu >= 1);
  assert_true(tcp >= 1);
  /* As shipped it listens on loopback only, and its placeholder secrets
     stay commented out (they are printed in every copy: they must never be
     in force by accident); opening it to the network needs tokens, so the
     user meets the warning next to them. */
  assert_int_equal(cfg->server.n_tokens, 0);
  assert_true(cfg->server.n_listen >= 1);
  for (int i = 0; i < cfg->server.n_listen; i++) {
    char host[256];
    int port;

    assert_int_equal(CNF_ParseHostPort(cfg->server.listen[i], host, sizeof host, &port), 0);
    open_listen += !CNF_IsLoopback(host);
  }
  assert_int_equal(open_listen, 0);
  assert_true(cfg->n_lasers >= 2);
  assert_true(cfg->state_file[0] == '/');
  CNF_Free(cfg);
}

/* Poles of the sampled loop "frequency = x0 + G * (output)" under a PI
   step with one reading per wavemeter cycle T:
     x[n+1] = (1 - a - b) x[n] + a x[n-1],  a = |G| kp, b = |G| ki T.
   Returns the larger pole magnitude. */
static double
pi_pole(double a, double b)
{
  double p = 1.0 - a - b, disc = p * p + 4.0 * a;    /* >= 0 for a >= 0 */
  double r1 = fabs((p + sqrt(disc)) / 2.0), r2 = fabs((p - sqrt(disc)) / 2.0);

  return r1 > r2 ? r1 : r2;
}

static void
test_shipped_sim(void **state)
{
  CNF_Config *cfg = load(SHIPPED("sim.conf"));
  int channels[CNF_MAX_CHANNEL + 1] = { 0 };
  int fmt_count[3] = { 0 }, order_seen[4] = { 0 }, with_current = 0, orders = 0;
  int dev_used[8] = { 0 };
  double cycle_ms = 0;

  if (!cfg)
    fail_msg("%s", errbuf);
  assert_int_equal(cfg->server.n_listen, 1);
  assert_string_equal(cfg->server.listen[0], "127.0.0.1:7470");
  assert_int_equal(cfg->server.n_tokens, 0);
  assert_int_equal(cfg->wavemeter.backend, CNF_WM_STREAM);
  assert_string_equal(cfg->wavemeter.address, "127.0.0.1:7480");
  assert_string_equal(cfg->sim.control, "127.0.0.1:7481");
  assert_true(cfg->state_file[0] != '\0');
  assert_int_equal(cfg->n_devices, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(cfg->devices[i].parsed.kind, CNF_URL_TCP);
    assert_string_equal(cfg->devices[i].parsed.host, "127.0.0.1");
    assert_int_equal(cfg->devices[i].parsed.port, 1502 + i);
    assert_int_equal(cfg->devices[i].unit, 1);
  }
  assert_int_equal(cfg->n_lasers, 14);

  for (int i = 0; i < cfg->n_lasers; i++)
    cycle_ms += cfg->lasers[i].sim.exposure_ms + cfg->sim.switch_ms;

  for (int i = 0; i < cfg->n_lasers; i++) {
    const CNF_Laser *l = &cfg->lasers[i];
    const CNF_SimLaser *s = &l->sim;
    double g = s->piezo_mhz_per_v, a, b, volts;

    assert_true(l->channel >= 1 && l->channel <= 14);
    assert_int_equal(channels[l->channel]++, 0);
    assert_true(l->autolock);
    assert_true(l->setpoint_thz > l->min_thz && l->setpoint_thz < l->max_thz);
    assert_true(fabs(g) >= 70 && fabs(g) <= 900);
    assert_true(s->noise_mhz >= 0.3 && s->noise_mhz <= 3);
    assert_true(s->exposure_ms >= 5 && s->exposure_ms <= 30);
    assert_true(fabs(s->offset_mhz) >= 100 && fabs(s->offset_mhz) <= 1000);
    fmt_count[l->piezo.enc.format]++;
    if (l->piezo.enc.format == REG_F32)
      order_seen[l->piezo.enc.order] = 1;
    dev_used[l->piezo.device_index] = 1;
    if (l->current.present) {
      with_current++;
      fmt_count[l->current.enc.format]++;
      /* the current follows the piezo so that both tune the same way */
      g += l->current.feedforward * s->current_mhz_per_v;
      assert_true(fabs(l->current.feedforward * s->current_mhz_per_v) < fabs(s->piezo_mhz_per_v));
    }
    /* polarity matches the sign of the tuning */
    assert_int_equal(l->polarity, g > 0 ? 1 : -1);
    /* the lock point is inside the piezo range, with room to spare */
    volts = l->piezo.start_v - s->offset_mhz / g;
    assert_true(volts > l->piezo.min_v + 1.0 && volts < l->piezo.max_v - 1.0);
    /* the PI loop is stable and well damped at the wavemeter's cycle */
    a = fabs(g) * l->kp;
    b = fabs(g) * l->ki * cycle_ms / 1000.0;
    if (!(b > 0.2 && b < 0.8 && a < 0.3 && pi_pole(a, b) < 0.8))
      fail_msg("laser %s: loop gains a=%g b=%g pole=%g", l->name, a, b, pi_pole(a, b));
    /* the window is several times the expected reading noise */
    assert_true(l->window_mhz >= 4.0 * s->noise_mhz);
    assert_true(l->capture_mhz > 2.0 * fabs(s->offset_mhz));
  }
  for (int i = 0; i < 4; i++)
    orders += order_seen[i];
  assert_true(fmt_count[REG_U16] >= 2 && fmt_count[REG_S16] >= 2 && fmt_count[REG_F32] >= 3);
  assert_true(orders >= 3);
  assert_true(with_current >= 3 && with_current <= 11);
  assert_true(dev_used[0] && dev_used[1] && dev_used[2] && dev_used[3]);
  CNF_Free(cfg);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_good_values),
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_autoconvert),
    cmocka_unit_test(test_include),
    cmocka_unit_test(test_include_error),
    cmocka_unit_test(test_err_missing_file),
    cmocka_unit_test(test_err_syntax),
    cmocka_unit_test(test_err_wrong_type),
    cmocka_unit_test(test_err_unknown_device),
    cmocka_unit_test(test_err_out_of_range),
    cmocka_unit_test(test_err_duplicate_laser),
    cmocka_unit_test(test_err_unknown_key),
    cmocka_unit_test(test_err_open_without_tokens),
    cmocka_unit_test_setup_teardown(test_err_table, setup_tmpdir, teardown_tmpdir),
    cmocka_unit_test_setup_teardown(test_ok_table, setup_tmpdir, teardown_tmpdir),
    cmocka_unit_test_setup_teardown(test_probe, setup_tmpdir, teardown_tmpdir),
    cmocka_unit_test(test_parse_url),
    cmocka_unit_test(test_host_port),
    cmocka_unit_test(test_loopback),
    cmocka_unit_test(test_shipped_example),
    cmocka_unit_test(test_shipped_sim),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
