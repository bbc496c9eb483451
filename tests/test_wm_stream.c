/* test_wm_stream.c - the `stream` wavemeter backend against
 * tests/stream_pub.py: readings and error codes intact, malformed and
 * over-long lines counted and skipped, publisher loss and restart. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "hwchild.h"
#include "util.h"
#include "wm.h"

/* cmocka's assert_float_equal works in single precision: compare doubles. */
#define assert_close(a, b, eps) do { \
    double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (eps))) \
      fail_msg("%s = %.15g, want %.15g (+-%g)", #a, a_, b_, (double)(eps)); \
  } while (0)

#define MAXR 4096

typedef struct {
  WM_Reading r[MAXR];
  int n;
} Got;

static struct event_base *base;
static HWT_Child pub;
static int pub_port;
static Got got;

static void
on_reading(const WM_Reading *r, void *arg)
{
  Got *g = arg;

  if (g->n < MAXR)
    g->r[g->n++] = *r;
}

static void
pub_start(int port)
{
  char py[512], script[1024], portarg[16], line[256], opt_port[] = "--port";
  char *argv[] = { py, script, opt_port, portarg, NULL };

  snprintf(py, sizeof py, "%s", HW_PYTHON3);
  HWT_SrcPath("tests/stream_pub.py", script, sizeof script);
  snprintf(portarg, sizeof portarg, "%d", port);
  assert_int_equal(HWT_Spawn(&pub, argv), 0);
  assert_int_equal(HWT_ReadLine(&pub, line, sizeof line, 20), 0);
  assert_int_equal(sscanf(line, "listening 127.0.0.1:%d", &pub_port), 1);
}

static void pub_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
pub_cmd(const char *fmt, ...)
{
  char cmd[1024], reply[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (HWT_Command(&pub, cmd, reply, sizeof reply, 20) < 0)
    fail_msg("stream_pub '%s': %s", cmd, reply);
}

/* Run the loop until got.n >= n or timeout; returns whether reached. */
static int
loop_until_n(int n, double timeout_s)
{
  double end = UTL_Now() + timeout_s;

  while (got.n < n && UTL_Now() < end) {
    event_base_loop(base, EVLOOP_NONBLOCK);
    usleep(2000);
  }
  return got.n >= n;
}

static void
loop_for(double s)
{
  double end = UTL_Now() + s;

  while (UTL_Now() < end) {
    event_base_loop(base, EVLOOP_NONBLOCK);
    usleep(2000);
  }
}

/* A counter of WM_Status, e.g. stat(wm, "malformed"). */
static long
stat_of(const WM_Backend *wm, const char *key)
{
  char buf[512], pat[64];
  const char *p;

  WM_Status(wm, buf, sizeof buf);
  snprintf(pat, sizeof pat, " %s=", key);
  p = strstr(buf, pat);
  if (!p)
    fail_msg("no %s in '%s'", key, buf);
  return strtol(p + strlen(pat), NULL, 10);
}

static WM_Backend *
open_stream(int port)
{
  CNF_Wavemeter cfg;
  char err[256];
  WM_Backend *wm;

  memset(&cfg, 0, sizeof cfg);
  cfg.backend = CNF_WM_STREAM;
  snprintf(cfg.address, sizeof cfg.address, "127.0.0.1:%d", port);
  cfg.stale_ms = 1000;
  wm = WM_Create(&cfg, base, on_reading, &got, err, sizeof err);
  if (!wm)
    fail_msg("WM_Create: %s", err);
  return wm;
}

static int
setup(void **state)
{
  memset(&got, 0, sizeof got);
  base = event_base_new();
  assert_non_null(base);
  pub_start(0);
  return 0;
}

static int
teardown(void **state)
{
  if (pub.pid > 0)
    HWT_Stop(&pub);
  event_base_free(base);
  base = NULL;
  return 0;
}

static void
test_readings_intact(void **state)
{
  WM_Backend *wm = open_stream(pub_port);
  double t0 = UTL_Now();
  char buf[512];

  pub_cmd("wait-clients 1 10");
  pub_cmd("reading 1 384.230484468 1000");
  pub_cmd("reading 12 281.634942123 1001");
  pub_cmd("reading 64 1000.000000001");
  pub_cmd("sendraw %s", "35203435302e3132333435363738392031300d0a");  /* "5 450.123456789 10\r\n" */
  assert_true(loop_until_n(4, 10));
  assert_int_equal(got.r[0].channel, 1);
  assert_close(got.r[0].value, 384.230484468, 1e-12);
  assert_close(got.r[0].t_s, 1.0, 1e-12);
  assert_true(got.r[0].rx_s >= t0 && got.r[0].rx_s <= UTL_Now());
  assert_int_equal(got.r[1].channel, 12);
  assert_close(got.r[1].value, 281.634942123, 1e-12);
  assert_close(got.r[1].t_s, 1.001, 1e-12);
  assert_int_equal(got.r[2].channel, 64);
  assert_close(got.r[2].value, 1000.000000001, 1e-12);
  assert_true(got.r[2].t_s < 0);
  assert_int_equal(got.r[3].channel, 5);
  assert_close(got.r[3].value, 450.123456789, 1e-12);
  assert_close(got.r[3].t_s, 0.010, 1e-12);

  WM_Status(wm, buf, sizeof buf);
  assert_non_null(strstr(buf, "backend=stream"));
  assert_non_null(strstr(buf, "connected=1"));
  assert_int_equal(stat_of(wm, "readings"), 4);
  assert_int_equal(stat_of(wm, "malformed"), 0);
  assert_int_equal(stat_of(wm, "reconnects"), 0);

  /* a steady stream keeps its order and values */
  got.n = 0;
  pub_cmd("periodic 2 384.5 200");
  assert_true(loop_until_n(100, 20));
  pub_cmd("periodic off");
  for (int i = 0; i < 100; i++) {
    assert_int_equal(got.r[i].channel, 2);
    assert_close(got.r[i].value, 384.5, 0);
    if (i > 0)
      assert_true(got.r[i].t_s >= got.r[i - 1].t_s);
  }
  WM_Destroy(wm);
}

static void
test_error_codes(void **state)
{
  static const int codes[] = { 0, -1, -2, -3, -4, -5, -6, -8 };
  WM_Backend *wm = open_stream(pub_port);
  int n = (int)(sizeof codes / sizeof codes[0]);

  pub_cmd("wait-clients 1 10");
  for (int i = 0; i < n; i++)
    pub_cmd("reading 3 %d %d", codes[i], 100 + i);
  assert_true(loop_until_n(n, 10));
  for (int i = 0; i < n; i++) {
    assert_int_equal(got.r[i].channel, 3);
    assert_close(got.r[i].value, (double)codes[i], 0);
    assert_close(got.r[i].t_s, (100 + i) / 1000.0, 1e-12);
  }
  assert_int_equal(stat_of(wm, "errors"), n);
  assert_int_equal(stat_of(wm, "malformed"), 0);
  WM_Destroy(wm);
}

static void
test_malformed_and_overlong(void **state)
{
  WM_Backend *wm = open_stream(pub_port);
  char pad[300];

  pub_cmd("wait-clients 1 10");
  pub_cmd("send garbage");
  pub_cmd("send 1 abc 5");
  pub_cmd("send 99 384.2 5");
  pub_cmd("send 1 384.2 5 junk");
  pub_cmd("sendraw %s", "3120333834003220350a");       /* "1 384\0 2 5\n" */
  pub_cmd("send ");                                    /* empty line: ignored */
  pub_cmd("reading 1 384.1 1");
  assert_true(loop_until_n(1, 10));
  loop_for(0.1);
  assert_int_equal(got.n, 1);
  assert_close(got.r[0].value, 384.1, 1e-12);
  assert_int_equal(stat_of(wm, "malformed"), 5);

  /* over-long lines: sent whole, and trickled in pieces before the newline */
  pub_cmd("long 300");
  pub_cmd("reading 1 384.2 2");
  pub_cmd("longchunks 5000 20");
  pub_cmd("reading 1 384.3 3");
  pub_cmd("long 257");
  /* exactly 256 bytes is still a line */
  memset(pad, ' ', sizeof pad);
  memcpy(pad, "1 384.4 4", 9);
  pad[256] = '\0';
  pub_cmd("send %s", pad);
  pub_cmd("reading 1 384.5 5");
  assert_true(loop_until_n(5, 10));
  loop_for(0.1);
  assert_int_equal(got.n, 5);
  assert_close(got.r[1].value, 384.2, 1e-12);
  assert_close(got.r[2].value, 384.3, 1e-12);
  assert_close(got.r[3].value, 384.4, 1e-12);
  assert_close(got.r[4].value, 384.5, 1e-12);
  assert_int_equal(stat_of(wm, "overlong"), 3);
  assert_int_equal(stat_of(wm, "malformed"), 5);
  assert_int_equal(stat_of(wm, "connected"), 1);
  WM_Destroy(wm);
}

static void
test_reconnect(void **state)
{
  WM_Backend *wm = open_stream(pub_port);
  int port = pub_port;

  pub_cmd("wait-clients 1 10");
  pub_cmd("reading 1 384.1 1");
  assert_true(loop_until_n(1, 10));

  /* the publisher drops the connection: we come back by ourselves */
  pub_cmd("drop");
  loop_for(0.3);
  pub_cmd("wait-clients 1 10");
  pub_cmd("reading 1 384.2 2");
  assert_true(loop_until_n(2, 10));
  assert_close(got.r[1].value, 384.2, 1e-12);
  assert_int_equal(stat_of(wm, "reconnects"), 1);

  /* the publisher dies; a new one starts on the same port 1.5 s later */
  HWT_Stop(&pub);
  loop_for(0.2);
  assert_int_equal(stat_of(wm, "connected"), 0);
  loop_for(1.3);
  assert_int_equal(stat_of(wm, "connected"), 0);
  pub_start(port);
  assert_int_equal(pub_port, port);
  {
    double t0 = UTL_Now();

    while (stat_of(wm, "connected") != 1 && UTL_Now() - t0 < 10)
      loop_for(0.01);
    print_message("# reconnected %.2f s after the publisher came back\n", UTL_Now() - t0);
    /* back-off is capped at 5 s: generous bound */
    assert_true(UTL_Now() - t0 < 8);
  }
  pub_cmd("wait-clients 1 10");
  pub_cmd("reading 4 384.3 3");
  assert_true(loop_until_n(3, 10));
  assert_int_equal(got.r[2].channel, 4);
  assert_close(got.r[2].value, 384.3, 1e-12);
  assert_int_equal(stat_of(wm, "reconnects"), 2);
  WM_Destroy(wm);
}

static void
test_bad_address(void **state)
{
  CNF_Wavemeter cfg;
  char err[256];

  memset(&cfg, 0, sizeof cfg);
  cfg.backend = CNF_WM_STREAM;
  snprintf(cfg.address, sizeof cfg.address, "no-port-here");
  err[0] = '\0';
  assert_null(WM_Create(&cfg, base, on_reading, &got, err, sizeof err));
  assert_non_null(strstr(err, "wavemeter.address"));
  assert_null(strchr(err, '\n'));
  snprintf(cfg.address, sizeof cfg.address, "127.0.0.1:99999");
  assert_null(WM_Create(&cfg, base, on_reading, &got, err, sizeof err));
  assert_non_null(strstr(err, "wavemeter.address"));

  /* nobody listening: no error at creation, connected=0, retries */
  {
    WM_Backend *wm;

    HWT_Stop(&pub);
    wm = open_stream(pub_port);
    loop_for(0.3);
    assert_int_equal(stat_of(wm, "connected"), 0);
    WM_Destroy(wm);
  }
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_readings_intact, setup, teardown),
    cmocka_unit_test_setup_teardown(test_error_codes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_malformed_and_overlong, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bad_address, setup, teardown),
  };

  signal(SIGPIPE, SIG_IGN);
  evthread_use_pthreads();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
