/* test_wm_wlmdata.c - the `wlmdata` wavemeter backend against
 * tests/.libs/fake_wlmdata.so: callbacks become readings on the loop thread
 * (nm -> THz, channel mapping), error codes pass through, only newer readings
 * are delivered, silent or refused callbacks fall back to polling and back,
 * the callback is removed once a destroyed backend's thread is done (WM_Reap), and a missing library or symbol is
 * a one-line error. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "util.h"
#include "wm.h"

/* cmocka's assert_float_equal works in single precision: compare doubles. */
#define assert_close(a, b, eps) do { \
    double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (eps))) \
      fail_msg("%s = %.15g, want %.15g (+-%g)", #a, a_, b_, (double)(eps)); \
  } while (0)

#define MAXR 8192
#define ANY nan("")          /* any value */

typedef struct {
  WM_Reading r[MAXR];
  int n;
  int wrong_thread;
} Got;

static struct event_base *base;
static Got got;
static pthread_t loop_thread;
static char fake_path[1024], nofreq_path[1024], control_path[1024], log_path[1024], tmpdir[256];
static unsigned long (*fake_count)(const char *what);

static void
on_reading(const WM_Reading *r, void *arg)
{
  Got *g = arg;

  if (!pthread_equal(pthread_self(), loop_thread))
    g->wrong_thread++;
  if (g->n < MAXR)
    g->r[g->n++] = *r;
}

/* Replace the fake's control file atomically. */
static void control(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
control(const char *fmt, ...)
{
  char tmp[1100];
  va_list ap;
  FILE *f;

  snprintf(tmp, sizeof tmp, "%s.tmp", control_path);
  f = fopen(tmp, "w");
  assert_non_null(f);
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(rename(tmp, control_path), 0);
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

/* Run the loop until pred() or timeout. */
static int
loop_until(int (*pred)(void *), void *arg, double timeout_s)
{
  double end = UTL_Now() + timeout_s;

  for (;;) {
    event_base_loop(base, EVLOOP_NONBLOCK);
    if (pred(arg))
      return 1;
    if (UTL_Now() > end)
      return 0;
    usleep(2000);
  }
}

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

static int
status_has(const WM_Backend *wm, const char *text)
{
  char buf[512];

  WM_Status(wm, buf, sizeof buf);
  return strstr(buf, text) != NULL;
}

static WM_Backend *
open_wlm(const char *lib, int silence_ms, int poll_ms, char *err, size_t errlen)
{
  CNF_Wavemeter cfg;

  memset(&cfg, 0, sizeof cfg);
  cfg.backend = CNF_WM_WLMDATA;
  snprintf(cfg.library, sizeof cfg.library, "%s", lib);
  cfg.stale_ms = 1000;
  cfg.poll_ms = poll_ms;
  cfg.callback_silence_ms = silence_ms;
  return WM_Create(&cfg, base, on_reading, &got, err, errlen);
}

static WM_Backend *
open_fake(int silence_ms, int poll_ms)
{
  char err[512];
  WM_Backend *wm = open_wlm(fake_path, silence_ms, poll_ms, err, sizeof err);

  if (!wm)
    fail_msg("WM_Create: %s", err);
  return wm;
}

/* Index of the last reading of channel ch at or after index from, or -1. */
static int
last_of(int ch, int from)
{
  int k = -1;

  for (int i = from; i < got.n; i++)
    if (got.r[i].channel == ch)
      k = i;
  return k;
}

typedef struct {
  int ch;
  int from;
  double value;       /* wanted value, or ANY for any */
  int want_time;      /* 1: t_s >= 0 (callback), 0: t_s < 0 (poll), -1 any */
} Want;

static int
has_reading(void *arg)
{
  const Want *w = arg;

  for (int i = w->from; i < got.n; i++) {
    const WM_Reading *r = &got.r[i];

    if (r->channel != w->ch)
      continue;
    if (!isnan(w->value) && r->value != w->value)
      continue;
    if (w->want_time == 1 && r->t_s < 0)
      continue;
    if (w->want_time == 0 && r->t_s >= 0)
      continue;
    return 1;
  }
  return 0;
}

static int
wait_reading(int ch, double value, int want_time, double timeout_s)
{
  Want w = { ch, got.n, value, want_time };

  return loop_until(has_reading, &w, timeout_s);
}

static int
setup(void **state)
{
  memset(&got, 0, sizeof got);
  base = event_base_new();
  assert_non_null(base);
  loop_thread = pthread_self();
  return 0;
}

static int
teardown(void **state)
{
  event_base_free(base);
  base = NULL;
  return 0;
}

/* ---- tests ---- */

static void
test_callbacks_become_readings(void **state)
{
  unsigned long removes;
  WM_Backend *wm;
  double t0 = UTL_Now();
  int i1, i2, i10;

  control("channels=1,2,10 nm1=780.241 nm2=1064.5 nm10=399.0 period_ms=10");
  removes = fake_count("removes");
  wm = open_fake(2000, 50);
  assert_true(wait_reading(1, ANY, 1, 10));
  assert_true(wait_reading(2, ANY, 1, 10));
  assert_true(wait_reading(10, ANY, 1, 10));
  loop_for(0.2);
  i1 = last_of(1, 0);
  i2 = last_of(2, 0);
  i10 = last_of(10, 0);
  assert_true(i1 >= 0 && i2 >= 0 && i10 >= 0);
  assert_close(got.r[i1].value, 299792.458 / 780.241, 1e-9);
  assert_close(got.r[i2].value, 299792.458 / 1064.5, 1e-9);
  assert_close(got.r[i10].value, 299792.458 / 399.0, 1e-9);
  assert_true(got.r[i1].rx_s >= t0 && got.r[i1].rx_s <= UTL_Now());
  assert_true(got.r[i1].t_s >= 0 && got.r[i1].t_s < 3600);
  /* nothing but the configured channels (mode 203 events are ignored) */
  for (int i = 0; i < got.n; i++)
    assert_true(got.r[i].channel == 1 || got.r[i].channel == 2 || got.r[i].channel == 10);
  assert_int_equal(got.wrong_thread, 0);
  assert_true(status_has(wm, "backend=wlmdata"));
  assert_true(status_has(wm, "mode=callback"));
  assert_true(status_has(wm, "connected=1"));
  assert_true(stat_of(wm, "callbacks") > 0);
  assert_int_equal(stat_of(wm, "polls"), 0);

  /* every channel's time stamps only go forward */
  for (int ch = 1; ch <= 10; ch++) {
    double last = -1;

    for (int i = 0; i < got.n; i++) {
      if (got.r[i].channel != ch)
        continue;
      assert_true(got.r[i].t_s > last);
      last = got.r[i].t_s;
    }
  }

  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
  assert_int_equal(fake_count("removes"), removes + 1);
  assert_int_equal(fake_count("running"), 0);

  /* the event log for tests that cannot call FakeWlm_Count */
  {
    char text[4096];
    FILE *f = fopen(log_path, "r");
    size_t n;

    assert_non_null(f);
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "install\n"));
    assert_true(n >= 7 && !strcmp(text + n - 7, "remove\n"));
  }
}

static void
test_env_settings(void **state)
{
  WM_Backend *wm;

  /* FAKE_WLM_SETTINGS gives defaults under the control file */
  control("channels=7");
  wm = open_fake(2000, 50);
  assert_true(wait_reading(7, 299792.458 / 700.5, 1, 10));
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_error_codes(void **state)
{
  static const int codes[] = { 0, -1, -2, -3, -4, -5, -6, -8, -13, -26 };
  WM_Backend *wm;

  control("channels=3 nm3=850.0");
  wm = open_fake(2000, 50);
  assert_true(wait_reading(3, 299792.458 / 850.0, 1, 10));
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    control("channels=3 nm3=850.0 err3=%d", codes[i]);
    if (!wait_reading(3, (double)codes[i], 1, 10))
      fail_msg("error code %d not delivered", codes[i]);
  }
  control("channels=3 nm3=850.0 err3=none");
  assert_true(wait_reading(3, 299792.458 / 850.0, 1, 10));
  assert_true(stat_of(wm, "errors") >= (long)(sizeof codes / sizeof codes[0]));
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_only_newer(void **state)
{
  WM_Backend *wm;
  double last = -1;
  int n = 0;

  /* every callback is sent three times with the same time stamp */
  control("channels=1 repeat=3 period_ms=20");
  wm = open_fake(2000, 50);
  loop_for(1.0);
  for (int i = 0; i < got.n; i++) {
    assert_int_equal(got.r[i].channel, 1);
    assert_true(got.r[i].t_s > last);
    last = got.r[i].t_s;
    n++;
  }
  print_message("# %d readings delivered, %ld stale callbacks dropped\n", n,
                stat_of(wm, "old_dropped"));
  assert_true(n >= 5);
  assert_true(stat_of(wm, "old_dropped") >= n);
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_silent_callbacks_poll(void **state)
{
  WM_Backend *wm;
  int from, polled = 0;

  control("channels=1,4 nm1=780.0 nm4=689.0 step_nm=1e-6 period_ms=10");
  wm = open_fake(300, 50);
  assert_true(wait_reading(4, ANY, 1, 10));

  /* the callback goes silent: after 300 ms, polling delivers readings */
  control("channels=1,4 nm1=780.0 nm4=689.0 step_nm=1e-6 callbacks=off");
  assert_true(wait_reading(1, ANY, 0, 10));
  assert_true(wait_reading(4, ANY, 0, 10));
  assert_true(status_has(wm, "mode=polling"));
  from = got.n;
  loop_for(1.0);
  for (int i = from; i < got.n; i++) {
    const WM_Reading *r = &got.r[i];
    double nm = r->channel == 1 ? 780.0 : 689.0;

    assert_true(r->t_s < 0);            /* polled readings carry no time stamp */
    assert_true(r->value <= 299792.458 / nm + 1e-9);
    assert_true(r->value >= 299792.458 / (nm + 1e-3) - 1e-9);
    polled++;
  }
  print_message("# %d polled readings in 1 s (poll_ms=50, 2 channels)\n", polled);
  assert_true(polled >= 10);
  assert_true(stat_of(wm, "polls") > 0);

  /* error codes pass through polling too */
  control("channels=1,4 nm1=780.0 nm4=689.0 step_nm=1e-6 callbacks=off err4=-4");
  assert_true(wait_reading(4, -4.0, 0, 10));

  /* callbacks resume: back to callback mode */
  control("channels=1,4 nm1=780.0 nm4=689.0 step_nm=1e-6 callbacks=on");
  assert_true(wait_reading(1, ANY, 1, 10));
  loop_for(0.3);
  assert_true(status_has(wm, "mode=callback"));
  {
    long polls = stat_of(wm, "polls");

    loop_for(0.5);
    assert_int_equal(stat_of(wm, "polls"), polls);
  }
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_constant_poll_not_repeated(void **state)
{
  WM_Backend *wm;
  int n1 = 0;

  /* a value that never changes is delivered once, not at every poll */
  control("channels=1 nm1=780.0 install=fail");
  wm = open_fake(200, 20);
  assert_true(wait_reading(1, 299792.458 / 780.0, 0, 10));
  loop_for(0.5);
  for (int i = 0; i < got.n; i++)
    n1 += got.r[i].channel == 1;
  assert_int_equal(n1, 1);
  assert_true(stat_of(wm, "polls") >= 10);
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_install_refused_polls(void **state)
{
  WM_Backend *wm;

  control("channels=2 nm2=1550.0 step_nm=1e-6 install=fail");
  wm = open_fake(300, 50);
  assert_true(wait_reading(2, ANY, 0, 10));
  assert_true(status_has(wm, "mode=polling"));
  assert_int_equal(stat_of(wm, "callbacks"), 0);
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
  assert_int_equal(fake_count("running"), 0);
}

/* A slow library call blocks the polling thread, never the loop. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
  double *t = arg;
  double now = UTL_Now();

  if (t[0] > 0 && now - t[0] > t[1])
    t[1] = now - t[0];
  t[0] = now;
}

static void
test_slow_library_does_not_block_loop(void **state)
{
  struct timeval tv = { 0, 10000 };
  double ticks[2] = { 0, 0 };
  struct event *tick;
  WM_Backend *wm;

  control("channels=1 step_nm=1e-6 callbacks=off get_delay_ms=400");
  wm = open_fake(100, 20);
  tick = event_new(base, -1, EV_PERSIST, tick_cb, ticks);
  event_add(tick, &tv);
  assert_true(wait_reading(1, ANY, 0, 10));
  loop_for(1.0);
  print_message("# longest loop stall while GetFrequencyNum takes 400 ms: %.3f s\n", ticks[1]);
  assert_true(ticks[1] < 0.3);
  event_free(tick);
  WM_Destroy(wm);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
}

static void
test_missing_library_or_symbol(void **state)
{
  char err[512];

  err[0] = '\0';
  assert_null(open_wlm("/nonexistent/dir/libwlmData.so", 2000, 100, err, sizeof err));
  print_message("# %s\n", err);
  assert_non_null(strstr(err, "wavemeter.library"));
  assert_non_null(strstr(err, "/nonexistent/dir/libwlmData.so"));
  assert_null(strchr(err, '\n'));

  err[0] = '\0';
  assert_null(open_wlm("libwlmData-does-not-exist.so", 2000, 100, err, sizeof err));
  assert_non_null(strstr(err, "cannot load 'libwlmData-does-not-exist.so'"));

  err[0] = '\0';
  assert_null(open_wlm(nofreq_path, 2000, 100, err, sizeof err));
  print_message("# %s\n", err);
  assert_non_null(strstr(err, "GetFrequencyNum"));
  assert_non_null(strstr(err, nofreq_path));
  assert_null(strchr(err, '\n'));

  /* a real library that is not wlmData */
  err[0] = '\0';
  assert_null(open_wlm("libm.so.6", 2000, 100, err, sizeof err));
  assert_non_null(strstr(err, "'Instantiate'"));
}

static void
test_two_backends(void **state)
{
  WM_Backend *a, *b;
  unsigned long removes;

  /* a reload may create the new backend before destroying the old one:
     destroying the first must not remove the second's callback */
  control("channels=5 nm5=633.0 period_ms=10");
  removes = fake_count("removes");
  a = open_fake(2000, 50);
  b = open_fake(2000, 50);
  assert_true(wait_reading(5, ANY, 1, 10));
  WM_Destroy(a);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
  assert_int_equal(fake_count("removes"), removes);
  got.n = 0;
  assert_true(wait_reading(5, ANY, 1, 10));
  WM_Destroy(b);
  assert_int_equal(WM_Reap(5.0), 0);   /* its thread removes the callback */
  assert_int_equal(fake_count("removes"), removes + 1);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_callbacks_become_readings, setup, teardown),
    cmocka_unit_test_setup_teardown(test_env_settings, setup, teardown),
    cmocka_unit_test_setup_teardown(test_error_codes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_only_newer, setup, teardown),
    cmocka_unit_test_setup_teardown(test_silent_callbacks_poll, setup, teardown),
    cmocka_unit_test_setup_teardown(test_constant_poll_not_repeated, setup, teardown),
    cmocka_unit_test_setup_teardown(test_install_refused_polls, setup, teardown),
    cmocka_unit_test_setup_teardown(test_slow_library_does_not_block_loop, setup, teardown),
    cmocka_unit_test_setup_teardown(test_missing_library_or_symbol, setup, teardown),
    cmocka_unit_test_setup_teardown(test_two_backends, setup, teardown),
  };
  const char *bd = getenv("WL_BUILDDIR");
  void *dl;
  int rc;

  if (!bd || !*bd)
    bd = HW_BUILDDIR;
  snprintf(fake_path, sizeof fake_path, "%s/tests/.libs/fake_wlmdata.so", bd);
  snprintf(nofreq_path, sizeof nofreq_path, "%s/tests/.libs/fake_wlmdata_nofreq.so", bd);
  snprintf(tmpdir, sizeof tmpdir, "/tmp/wltest-wlm.XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(control_path, sizeof control_path, "%s/control", tmpdir);
  /* set once, before the fake library is loaded or any thread exists */
  snprintf(log_path, sizeof log_path, "%s/log", tmpdir);
  setenv("FAKE_WLM_CONTROL", control_path, 1);
  setenv("FAKE_WLM_LOG", log_path, 1);
  setenv("FAKE_WLM_SETTINGS", "nm7=700.5 period_ms=5", 1);
  evthread_use_pthreads();

  dl = dlopen(fake_path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    fprintf(stderr, "cannot load %s: %s\n", fake_path, dlerror());
    return 1;
  }
  {
    void *p = dlsym(dl, "FakeWlm_Count");

    if (!p) {
      fprintf(stderr, "no FakeWlm_Count in %s\n", fake_path);
      return 1;
    }
    memcpy(&fake_count, &p, sizeof p);
  }

  rc = cmocka_run_group_tests(tests, NULL, NULL);
  unlink(control_path);
  unlink(log_path);
  rmdir(tmpdir);
  return rc;
}
