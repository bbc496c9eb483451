/* test_mbdev.c - Modbus device threads (MB_*) against tests/fault_server:
 * function codes, exception replies, a slow device next to a healthy one,
 * dropped connections, a server that goes down and comes back, back-off,
 * MB_Stop bounded, thread-safe error texts. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <modbus.h>

#include "conf.h"
#include "hwchild.h"
#include "mbdev.h"
#include "util.h"

/* ---- a fault server child ---- */

typedef struct {
  HWT_Child child;
  int port;
} Server;

/* Children still running when a test fails are stopped by the teardown.
   Kept by pid: the Server that started one lives on the test's stack,
   gone by the time the teardown runs. */
static pid_t running[8];

static void
track(HWT_Child *c)
{
  for (int i = 0; i < 8; i++) {
    if (running[i] <= 0) {             /* the teardown frees every slot */
      running[i] = c->pid;
      return;
    }
  }
}

static int
stop_servers(void **state)
{
  (void)state;
  for (int i = 0; i < 8; i++) {
    /* Only a child of ours that has not been reaped (HWT_Stop reaps). */
    if (running[i] > 0 && waitpid(running[i], NULL, WNOHANG) == 0) {
      kill(running[i], SIGKILL);
      waitpid(running[i], NULL, 0);
    }
    running[i] = 0;
  }
  return 0;
}

static void
server_start(Server *s)
{
  char path[1024], line[256], opt_p[] = "-p", zero[] = "0";
  char *argv[] = { path, opt_p, zero, NULL };

  HWT_BuildPath("tests/fault_server", path, sizeof path);
  assert_int_equal(HWT_Spawn(&s->child, argv), 0);
  track(&s->child);
  assert_int_equal(HWT_ReadLine(&s->child, line, sizeof line, 10), 0);
  assert_int_equal(sscanf(line, "listening 127.0.0.1:%d", &s->port), 1);
}

static void server_cmd(Server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
server_cmd(Server *s, const char *fmt, ...)
{
  char cmd[256], reply[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (HWT_Command(&s->child, cmd, reply, sizeof reply, 10) < 0)
    fail_msg("fault_server command '%s': %s", cmd, reply);
}

/* One counter of the "stats" answer. */
static unsigned long
server_stat(Server *s, const char *key)
{
  char reply[512], pat[64];
  const char *p;

  if (HWT_Command(&s->child, "stats", reply, sizeof reply, 10) < 0)
    fail_msg("stats: %s", reply);
  snprintf(pat, sizeof pat, " %s=", key);
  p = strstr(reply, pat);
  assert_non_null(p);
  return strtoul(p + strlen(pat), NULL, 10);
}

/* ---- a device with its status history ---- */

typedef struct {
  MB_Device *dev;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int ups, downs, state;
  char why[128];
} Dev;

static void
status_cb(MB_Device *dev, int up, const char *why, void *arg)
{
  Dev *d = arg;

  pthread_mutex_lock(&d->lock);
  if (up)
    d->ups++;
  else
    d->downs++;
  d->state = up;
  snprintf(d->why, sizeof d->why, "%s", why);
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

/* The combine option of the devices dev_open_probe opens. */
static int open_combine;

static void
dev_open_probe(Dev *d, int port, int timeout_ms, int backoff_min, int backoff_max,
               CNF_ProbeFn probe_fn, int probe_reg)
{
  CNF_Device cfg;
  MB_Options opt;
  char url[64], err[256];

  memset(d, 0, sizeof *d);
  d->state = -1;
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, NULL);
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.name, sizeof cfg.name, "dev%d", port);
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  snprintf(cfg.url, sizeof cfg.url, "%s", url);
  if (CNF_ParseUrl(url, &cfg.parsed, err, sizeof err) < 0)
    fail_msg("CNF_ParseUrl(%s): %s", url, err);
  cfg.unit = 1;
  cfg.timeout_ms = timeout_ms;
  MB_DefaultOptions(&opt);
  opt.backoff_min_ms = backoff_min;
  opt.backoff_max_ms = backoff_max;
  opt.probe_fn = probe_fn;
  opt.probe_reg = probe_reg;
  opt.combine = open_combine;
  d->dev = MB_Create(&cfg, &opt, status_cb, d);
  assert_non_null(d->dev);
  assert_string_equal(MB_Name(d->dev), cfg.name);
  assert_int_equal(MB_Start(d->dev), 0);
}

static void
dev_open(Dev *d, int port, int timeout_ms, int backoff_min, int backoff_max)
{
  dev_open_probe(d, port, timeout_ms, backoff_min, backoff_max, CNF_PROBE_HOLDING, 0);
}

static void
dev_close(Dev *d)
{
  MB_Destroy(d->dev);
  pthread_cond_destroy(&d->cond);
  pthread_mutex_destroy(&d->lock);
}

/* Wait until the device has reported state up (1) or down (0). */
static int
dev_wait(Dev *d, int up, double timeout_s)
{
  double end = UTL_Now() + timeout_s;
  int ok;

  pthread_mutex_lock(&d->lock);
  while (d->state != up && UTL_Now() < end) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 10 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&d->cond, &d->lock, &ts);
  }
  ok = d->state == up;
  pthread_mutex_unlock(&d->lock);
  return ok && MB_IsUp(d->dev) == up;
}

/* ---- synchronous jobs ---- */

typedef struct {
  int write;
  int addr, n;
  uint16_t regs[40];
  int rc, err;
  double elapsed;
  int done;
  pthread_mutex_t lock;
  pthread_cond_t cond;
} Req;

static void
req_job(MB_Io *io, void *arg)
{
  Req *r = arg;
  double t0 = UTL_Now();
  int rc = r->write ? MB_Write(io, r->addr, r->regs, r->n) : MB_Read(io, r->addr, r->regs, r->n);

  pthread_mutex_lock(&r->lock);
  r->err = rc < 0 ? errno : 0;
  r->rc = rc;
  r->elapsed = UTL_Now() - t0;
  r->done = 1;
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->lock);
}

/* Run one write or read on the device thread and wait for it. */
static int
dev_io(Dev *d, int write, int addr, uint16_t *regs, int n, int *err, double *elapsed)
{
  Req r;

  memset(&r, 0, sizeof r);
  pthread_mutex_init(&r.lock, NULL);
  pthread_cond_init(&r.cond, NULL);
  r.write = write;
  r.addr = addr;
  r.n = n;
  if (write)
    memcpy(r.regs, regs, sizeof(uint16_t) * (size_t)(n > 0 && n <= 40 ? n : 0));
  assert_int_equal(MB_Submit(d->dev, req_job, &r), 0);
  pthread_mutex_lock(&r.lock);
  while (!r.done)
    pthread_cond_wait(&r.cond, &r.lock);
  pthread_mutex_unlock(&r.lock);
  if (!write && r.rc == 0)
    memcpy(regs, r.regs, sizeof(uint16_t) * (size_t)n);
  if (err)
    *err = r.err;
  if (elapsed)
    *elapsed = r.elapsed;
  pthread_cond_destroy(&r.cond);
  pthread_mutex_destroy(&r.lock);
  return r.rc;
}

static int
dev_write1(Dev *d, int addr, uint16_t v, int *err, double *elapsed)
{
  return dev_io(d, 1, addr, &v, 1, err, elapsed);
}

/* ---- tests ---- */

static void
test_strerror(void **state)
{
  char buf[128], small[8];

  assert_non_null(strstr(MB_StrError(EMBXILADD, buf, sizeof buf), "illegal data address"));
  assert_non_null(strstr(MB_StrError(EMBXSFAIL, buf, sizeof buf), "exception 4"));
  assert_non_null(strstr(MB_StrError(EMBXGTAR, buf, sizeof buf), "gateway target"));
  assert_string_equal(MB_StrError(EMBBADCRC, buf, sizeof buf), "invalid CRC");
  assert_string_equal(MB_StrError(EMBBADSLAVE, buf, sizeof buf),
                      "response from an unexpected unit id");
  assert_string_equal(MB_StrError(ETIMEDOUT, buf, sizeof buf), "Connection timed out");
  assert_string_equal(MB_StrError(ECONNREFUSED, buf, sizeof buf), "Connection refused");
  assert_non_null(strstr(MB_StrError(987654, buf, sizeof buf), "987654"));
  /* truncation is safe */
  MB_StrError(EMBXILADD, small, sizeof small);
  assert_int_equal(strlen(small), sizeof small - 1);
  MB_StrError(ETIMEDOUT, small, sizeof small);
  assert_true(strlen(small) < sizeof small);
}

static void
count_job(MB_Io *io, void *arg)
{
  uint16_t v = 1;
  int *n = arg;

  /* never started: the job runs at MB_Stop, its write fails fast */
  if (MB_Write(io, 0, &v, 1) < 0 && errno == ENOTCONN)
    (*n)++;
  else
    (*n) += 1000;
}

static void
test_create_errors(void **state)
{
  CNF_Device cfg;
  MB_Options opt;
  MB_Device *dev;
  MB_Stats st;
  char err[256];
  int n = 0;

  MB_DefaultOptions(&opt);
  assert_int_equal(opt.backoff_min_ms, 100);
  assert_int_equal(opt.backoff_max_ms, 5000);
  assert_int_equal(opt.probe_reg, 0);

  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.name, sizeof cfg.name, "x");
  assert_int_equal(CNF_ParseUrl("tcp://127.0.0.1:1", &cfg.parsed, err, sizeof err), 0);
  cfg.unit = 300;
  errno = 0;
  assert_null(MB_Create(&cfg, NULL, NULL, NULL));
  assert_int_equal(errno, EINVAL);
  cfg.parsed.port = 0;
  cfg.unit = 1;
  assert_null(MB_Create(&cfg, NULL, NULL, NULL));
  assert_int_equal(errno, EINVAL);

  /* an RTU device can be created without the port existing */
  assert_int_equal(CNF_ParseUrl("rtu:/dev/nonexistent-tty?baud=19200&parity=E",
                                &cfg.parsed, err, sizeof err), 0);
  dev = MB_Create(&cfg, NULL, NULL, NULL);
  assert_non_null(dev);
  MB_Destroy(dev);

  /* queued jobs of a device never started run exactly once at MB_Stop */
  assert_int_equal(CNF_ParseUrl("tcp://127.0.0.1:1", &cfg.parsed, err, sizeof err), 0);
  dev = MB_Create(&cfg, NULL, NULL, NULL);
  assert_non_null(dev);
  assert_int_equal(MB_Submit(dev, count_job, &n), 0);
  assert_int_equal(MB_Submit(dev, count_job, &n), 0);
  MB_Stop(dev);
  assert_int_equal(n, 2);
  assert_int_equal(MB_Submit(dev, count_job, &n), -1);
  assert_int_equal(errno, ESHUTDOWN);
  MB_GetStats(dev, &st);
  assert_int_equal(st.jobs_queued, 2);
  assert_int_equal(st.jobs_run, 2);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.write_errors, 2);
  MB_Stop(dev);                 /* twice is fine */
  MB_Destroy(dev);
}

/* fc 06 for one register, fc 16 for several; values land; reads work;
   bad arguments fail without touching the link. */
static void
test_function_codes(void **state)
{
  Server s;
  Dev d;
  uint16_t two[2] = { 0x4049, 0x0fdb }, back[3], big[33] = { 0 };
  char reply[256];
  int err;
  MB_Stats st;

  server_start(&s);
  dev_open(&d, s.port, 500, 50, 400);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "reset");

  assert_int_equal(dev_write1(&d, 5, 54321, &err, NULL), 0);
  assert_int_equal(server_stat(&s, "fc06"), 1);
  assert_int_equal(server_stat(&s, "fc16"), 0);
  assert_int_equal(dev_io(&d, 1, 10, two, 2, &err, NULL), 0);
  assert_int_equal(server_stat(&s, "fc06"), 1);
  assert_int_equal(server_stat(&s, "fc16"), 1);
  assert_int_equal(HWT_Command(&s.child, "regs 10 2", reply, sizeof reply, 10), 0);
  assert_string_equal(reply, "ok regs 10 16457 4059");
  assert_int_equal(HWT_Command(&s.child, "regs 5", reply, sizeof reply, 10), 0);
  assert_string_equal(reply, "ok regs 5 54321");

  assert_int_equal(dev_io(&d, 0, 9, back, 3, &err, NULL), 0);
  assert_int_equal(back[0], 0);
  assert_int_equal(back[1], 0x4049);
  assert_int_equal(back[2], 0x0fdb);

  /* out-of-range requests: EINVAL, device stays up, nothing sent */
  server_cmd(&s, "reset");
  assert_int_equal(dev_io(&d, 1, 0, big, 0, &err, NULL), -1);
  assert_int_equal(err, EINVAL);
  assert_int_equal(dev_io(&d, 1, 0, big, 33, &err, NULL), -1);
  assert_int_equal(err, EINVAL);
  assert_int_equal(dev_io(&d, 1, 65535, big, 2, &err, NULL), -1);
  assert_int_equal(err, EINVAL);
  assert_true(MB_IsUp(d.dev));
  assert_int_equal(server_stat(&s, "requests"), 0);

  MB_GetStats(d.dev, &st);
  assert_int_equal(st.writes, 2);
  assert_int_equal(st.downs, 0);
  assert_int_equal(d.ups, 1);
  assert_int_equal(d.downs, 0);
  dev_close(&d);
  HWT_Stop(&s.child);
}

/* An exception reply fails the write, marks the device down; the probe
   brings it back. */
static void
test_exception(void **state)
{
  Server s;
  Dev d;
  int err;
  double elapsed;
  MB_Stats st;

  server_start(&s);
  dev_open(&d, s.port, 500, 300, 400);
  assert_true(dev_wait(&d, 1, 10));

  server_cmd(&s, "exception code=2 count=1 writes");
  assert_int_equal(dev_write1(&d, 0, 1, &err, NULL), -1);
  assert_int_equal(err, EMBXILADD);
  /* down was reported from inside the write, before it returned */
  pthread_mutex_lock(&d.lock);
  assert_int_equal(d.state, 0);
  assert_int_equal(d.downs, 1);
  assert_non_null(strstr(d.why, "exception 2"));
  pthread_mutex_unlock(&d.lock);

  /* while down (the first retry is >= 225 ms away), writes fail at once */
  assert_int_equal(dev_write1(&d, 0, 2, &err, &elapsed), -1);
  assert_int_equal(err, ENOTCONN);
  assert_true(elapsed < 0.2);   /* at once: far below any timeout */

  assert_true(dev_wait(&d, 1, 10));
  assert_int_equal(dev_write1(&d, 0, 3, &err, NULL), 0);
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.downs, 1);
  assert_int_equal(st.reconnects, 1);
  assert_int_equal(st.write_errors, 2);
  assert_int_equal(server_stat(&s, "exceptions"), 1);

  /* exceptions on every write: the device flaps, and each write fails
     with the exception, never hangs */
  server_cmd(&s, "exception code=4 writes");
  for (int i = 0; i < 3; i++) {
    assert_true(dev_wait(&d, 1, 10));
    assert_int_equal(dev_write1(&d, 0, 4, &err, NULL), -1);
    assert_int_equal(err, EMBXSFAIL);
  }
  server_cmd(&s, "normal");
  assert_true(dev_wait(&d, 1, 10));
  assert_int_equal(dev_write1(&d, 0, 5, &err, NULL), 0);
  dev_close(&d);
  HWT_Stop(&s.child);
}

/* A healthy device's writes, paced by a thread, while another device is slow. */
typedef struct {
  Dev *d;
  _Atomic int stop;
  double period_s;
  double times[4096];
  int n;
  int failures;
} Pacer;

static void *
pacer_thread(void *arg)
{
  Pacer *p = arg;
  double next = UTL_Now();

  while (!p->stop) {
    int err;

    if (dev_write1(p->d, 1, (uint16_t)p->n, &err, NULL) == 0) {
      if (p->n < 4096)
        p->times[p->n++] = UTL_Now();
    } else {
      p->failures++;
    }
    next += p->period_s;
    {
      double wait = next - UTL_Now();

      if (wait > 0)
        usleep((useconds_t)(wait * 1e6));
      else
        next = UTL_Now();
    }
  }
  return NULL;
}

static int
count_between(const Pacer *p, double t0, double t1, double *max_gap)
{
  int n = 0;
  double last = t0;

  *max_gap = 0;
  for (int i = 0; i < p->n; i++) {
    if (p->times[i] < t0 || p->times[i] > t1)
      continue;
    if (p->times[i] - last > *max_gap)
      *max_gap = p->times[i] - last;
    last = p->times[i];
    n++;
  }
  if (t1 - last > *max_gap)
    *max_gap = t1 - last;
  return n;
}

static void
test_slow_device_isolated(void **state)
{
  Server slow, good;
  Dev ds, dg;
  Pacer p;
  pthread_t th;
  double t0, t1, t2, t3, gap_base, gap_fault, elapsed;
  int n_base, n_fault, err, timeouts = 0;

  server_start(&slow);
  server_start(&good);
  dev_open(&ds, slow.port, 1000, 50, 400);
  dev_open(&dg, good.port, 1000, 50, 400);
  assert_true(dev_wait(&ds, 1, 10));
  assert_true(dev_wait(&dg, 1, 10));

  memset(&p, 0, sizeof p);
  p.d = &dg;
  p.period_s = 0.02;
  assert_int_equal(pthread_create(&th, NULL, pacer_thread, &p), 0);

  t0 = UTL_Now();
  usleep(1000000);
  t1 = UTL_Now();

  /* the slow device answers 2 s late: its writes time out after ~1 s */
  server_cmd(&slow, "delay ms=2000 writes");
  for (int i = 0; i < 2; i++) {
    assert_true(dev_wait(&ds, 1, 10));
    assert_int_equal(dev_write1(&ds, 0, 7, &err, &elapsed), -1);
    assert_int_equal(err, ETIMEDOUT);
    assert_true(elapsed >= 0.8);
    assert_true(elapsed < 1.9);
    timeouts++;
    assert_false(MB_IsUp(ds.dev));
  }
  t2 = UTL_Now();
  p.stop = 1;
  pthread_join(th, NULL);
  t3 = UTL_Now();
  (void)t3;

  n_base = count_between(&p, t0, t1, &gap_base);
  n_fault = count_between(&p, t1, t2, &gap_fault);
  print_message("# healthy device: %d writes in %.2f s before, %d in %.2f s during the fault; "
                "longest gap %.3f s / %.3f s\n", n_base, t1 - t0, n_fault, t2 - t1,
                gap_base, gap_fault);
  assert_int_equal(timeouts, 2);
  assert_int_equal(p.failures, 0);
  /* the healthy device keeps its rate (generous: at least half of it) and
     is never stalled for anything like the slow device's timeout */
  assert_true(n_base > 10);
  assert_true(n_fault / (t2 - t1) >= 0.5 * n_base / (t1 - t0));
  assert_true(gap_fault < 0.6);
  assert_true(MB_IsUp(dg.dev));

  server_cmd(&slow, "normal");
  assert_true(dev_wait(&ds, 1, 15));
  assert_int_equal(dev_write1(&ds, 0, 8, &err, NULL), 0);

  dev_close(&ds);
  dev_close(&dg);
  HWT_Stop(&slow.child);
  HWT_Stop(&good.child);
}

/* A dropped connection: down, then up again by itself. */
static void
test_dropped_connection(void **state)
{
  Server s;
  Dev d;
  int err;
  MB_Stats st;

  server_start(&s);
  dev_open(&d, s.port, 500, 50, 400);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "drop count=1 writes");
  assert_int_equal(dev_write1(&d, 0, 1, &err, NULL), -1);
  assert_true(err == ECONNRESET || err == EPIPE || err == ETIMEDOUT);
  assert_int_equal(d.downs, 1);
  assert_true(dev_wait(&d, 1, 10));
  assert_int_equal(dev_write1(&d, 0, 2, &err, NULL), 0);
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.reconnects, 1);
  assert_int_equal(server_stat(&s, "dropped"), 1);
  assert_true(server_stat(&s, "accepted") >= 2);
  dev_close(&d);
  HWT_Stop(&s.child);
}

/* The server goes away: down (reported once), refused reconnects with
   back-off, back up once the server listens again. */
static void
test_server_down_up(void **state)
{
  Server s;
  Dev d;
  int err;
  double t_up, elapsed;
  MB_Stats st;

  server_start(&s);
  dev_open(&d, s.port, 500, 50, 800);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "down");
  assert_int_equal(dev_write1(&d, 0, 1, &err, NULL), -1);
  assert_false(MB_IsUp(d.dev));
  usleep(1500000);
  /* many refused attempts, one down report */
  pthread_mutex_lock(&d.lock);
  assert_int_equal(d.downs, 1);
  assert_int_equal(d.ups, 1);
  pthread_mutex_unlock(&d.lock);
  assert_int_equal(dev_write1(&d, 0, 1, &err, &elapsed), -1);
  assert_int_equal(err, ENOTCONN);
  assert_true(elapsed < 0.1);   /* at once, not after a back-off */

  server_cmd(&s, "up");
  t_up = UTL_Now();
  assert_true(dev_wait(&d, 1, 10));
  /* back within the capped back-off (0.8 s) plus generous slack */
  assert_true(UTL_Now() - t_up < 3.0);
  assert_int_equal(dev_write1(&d, 0, 3, &err, NULL), 0);
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.reconnects, 1);
  assert_int_equal(st.downs, 1);
  dev_close(&d);
  HWT_Stop(&s.child);
}

/* Retries back off exponentially: a server whose probes all fail sees
   few attempts, not one per backoff_min. */
static void
test_backoff(void **state)
{
  Server s;
  Dev d;
  unsigned long attempts;
  int err;

  server_start(&s);
  dev_open(&d, s.port, 500, 50, 400);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "exception");          /* every request, probes too */
  server_cmd(&s, "reset");
  assert_int_equal(dev_write1(&d, 0, 1, &err, NULL), -1);
  usleep(2500000);
  attempts = server_stat(&s, "reads");
  print_message("# probe attempts in 2.5 s: %lu\n", attempts);
  /* nominal delays 50,100,200,400,400,... (minus up to 25% jitter):
     about 9 attempts; without back-off there would be about 50 */
  assert_true(attempts >= 4);
  assert_true(attempts <= 16);
  assert_int_equal(d.ups, 1);
  assert_int_equal(d.downs, 1);
  server_cmd(&s, "normal");
  assert_true(dev_wait(&d, 1, 5));
  dev_close(&d);
  HWT_Stop(&s.child);
}

/* The probe: a module that refuses FC03 (a write-only output module) never
   comes up with the default probe, comes up with probe none (and a failed
   write still marks it down) or with an FC04 probe of the register given. */
static void
test_probe_options(void **state)
{
  Server s;
  Dev held, none, input;
  uint16_t v = 1234;
  int err;

  server_start(&s);
  server_cmd(&s, "exception code=1 fc=3");     /* illegal function: no FC03 */
  dev_open(&held, s.port, 300, 50, 400);
  assert_true(dev_wait(&held, 0, 5));
  print_message("# FC03 probe of a module without FC03: down (%s)\n", held.why);
  assert_non_null(strstr(held.why, "probe: exception 1"));

  dev_open_probe(&none, s.port, 300, 50, 400, CNF_PROBE_NONE, 0);
  assert_true(dev_wait(&none, 1, 5));
  assert_string_equal(none.why, "connected, no probe");
  server_cmd(&s, "reset");
  assert_int_equal(dev_write1(&none, 3, v, &err, NULL), 0);
  assert_int_equal(server_stat(&s, "fc06"), 1);
  assert_true(MB_IsUp(none.dev));

  dev_open_probe(&input, s.port, 300, 50, 400, CNF_PROBE_INPUT, 7);
  assert_true(dev_wait(&input, 1, 5));
  assert_string_equal(input.why, "connected");
  assert_true(server_stat(&s, "fc04") >= 1);
  assert_int_equal(held.ups, 0);               /* refused all along */
  assert_false(MB_IsUp(held.dev));
  dev_close(&held);

  /* Without a probe a failed write still marks the device down. */
  pthread_mutex_lock(&none.lock);
  int downs = none.downs;
  pthread_mutex_unlock(&none.lock);
  server_cmd(&s, "exception code=4 writes");
  assert_int_equal(dev_write1(&none, 3, v, &err, NULL), -1);
  pthread_mutex_lock(&none.lock);
  assert_int_equal(none.downs, downs + 1);
  pthread_mutex_unlock(&none.lock);
  assert_true(dev_wait(&none, 1, 5));          /* connected again, no probe */

  dev_close(&none);
  dev_close(&input);
  HWT_Stop(&s.child);
}

/* MB_Stop returns promptly while the device never answers, and every
   queued job still runs (first write times out, the rest fail fast). */
typedef struct {
  int n;
  int errs[8];
} Seen;

static void
seen_job(MB_Io *io, void *arg)
{
  Seen *s = arg;
  uint16_t v = 9;

  errno = 0;
  s->errs[s->n++] = MB_Write(io, 0, &v, 1) < 0 ? errno : 0;
}

static void
test_stop_never_hangs(void **state)
{
  Server s;
  Dev d;
  Seen seen;
  double t0, took;

  server_start(&s);
  dev_open(&d, s.port, 300, 50, 400);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "silent");
  memset(&seen, 0, sizeof seen);
  for (int i = 0; i < 5; i++)
    assert_int_equal(MB_Submit(d.dev, seen_job, &seen), 0);
  t0 = UTL_Now();
  MB_Stop(d.dev);
  took = UTL_Now() - t0;
  print_message("# MB_Stop with 5 jobs on a silent device: %.3f s\n", took);
  assert_true(took < 2.0);
  assert_int_equal(seen.n, 5);
  assert_int_equal(seen.errs[0], ETIMEDOUT);
  for (int i = 1; i < 5; i++)
    assert_int_equal(seen.errs[i], ENOTCONN);
  dev_close(&d);

  /* stopping a device that is waiting to reconnect is immediate */
  server_cmd(&s, "normal");
  dev_open(&d, s.port, 300, 5000, 5000);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "down");
  assert_int_equal(dev_write1(&d, 0, 1, NULL, NULL), -1);
  t0 = UTL_Now();
  MB_Stop(d.dev);
  assert_true(UTL_Now() - t0 < 0.5);
  dev_close(&d);

  /* and so is stopping one whose server never existed */
  server_cmd(&s, "up");
  HWT_Stop(&s.child);
  dev_open(&d, s.port, 300, 50, 400);
  assert_true(dev_wait(&d, 0, 10));
  assert_non_null(strstr(d.why, "connect"));
  t0 = UTL_Now();
  MB_Stop(d.dev);
  assert_true(UTL_Now() - t0 < 1.0);
  dev_close(&d);
}

/* RTU: two units on one serial bus (a socat pty pair) share one context;
   each keeps its own registers and state; a dead unit does not take the
   other down; a port shared with other line settings is refused. */
static int
wait_path(const char *path, double timeout_s)
{
  double end = UTL_Now() + timeout_s;

  while (access(path, F_OK) != 0) {
    if (UTL_Now() > end)
      return 0;
    usleep(10000);
  }
  return 1;
}

static void
rtu_open(Dev *d, const char *path, int unit, int timeout_ms)
{
  CNF_Device cfg;
  MB_Options opt;
  char err[256];

  memset(d, 0, sizeof *d);
  d->state = -1;
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, NULL);
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.name, sizeof cfg.name, "rtu%d", unit);
  snprintf(cfg.url, sizeof cfg.url, "rtu:%s?baud=115200&parity=N", path);
  if (CNF_ParseUrl(cfg.url, &cfg.parsed, err, sizeof err) < 0)
    fail_msg("CNF_ParseUrl(%s): %s", cfg.url, err);
  cfg.unit = unit;
  cfg.timeout_ms = timeout_ms;
  MB_DefaultOptions(&opt);
  opt.backoff_min_ms = 50;
  opt.backoff_max_ms = 400;
  d->dev = MB_Create(&cfg, &opt, status_cb, d);
  assert_non_null(d->dev);
  assert_int_equal(MB_Start(d->dev), 0);
}

static void
test_rtu_shared_bus(void **state)
{
  static Server srv;
  static HWT_Child socat;
  char dir[] = "/tmp/wltest-rtu.XXXXXX", bus[64], end2[64], a1[128], a2[128];
  char path[1024], line[256], o_r[] = "-R", o_u[] = "-U", u34[] = "3,4", o_b[] = "-b",
    b115[] = "115200", socat_bin[] = "/usr/bin/socat";
  char *socat_argv[] = { socat_bin, a1, a2, NULL };
  char *srv_argv[] = { path, o_r, end2, o_u, u34, o_b, b115, NULL };
  char reply[256], err[256];
  Dev d3, d4;
  Pacer p3, p4;
  pthread_t t3, t4;
  CNF_Device other;
  MB_Stats st;
  int e;

  if (access(socat_bin, X_OK) != 0)
    skip();
  assert_non_null(mkdtemp(dir));
  snprintf(bus, sizeof bus, "%s/bus", dir);
  snprintf(end2, sizeof end2, "%s/srv", dir);
  snprintf(a1, sizeof a1, "pty,raw,echo=0,link=%s", bus);
  snprintf(a2, sizeof a2, "pty,raw,echo=0,link=%s", end2);
  assert_int_equal(HWT_Spawn(&socat, socat_argv), 0);
  track(&socat);
  assert_true(wait_path(bus, 10));
  assert_true(wait_path(end2, 10));

  HWT_BuildPath("tests/fault_server", path, sizeof path);
  assert_int_equal(HWT_Spawn(&srv.child, srv_argv), 0);
  track(&srv.child);
  assert_int_equal(HWT_ReadLine(&srv.child, line, sizeof line, 10), 0);
  assert_non_null(strstr(line, "listening rtu:"));

  rtu_open(&d3, bus, 3, 300);
  rtu_open(&d4, bus, 4, 300);
  assert_true(dev_wait(&d3, 1, 10));
  assert_true(dev_wait(&d4, 1, 10));

  /* each unit has its own registers */
  assert_int_equal(dev_write1(&d3, 0, 111, &e, NULL), 0);
  assert_int_equal(dev_write1(&d4, 0, 222, &e, NULL), 0);
  assert_int_equal(HWT_Command(&srv.child, "regs 0 unit=3", reply, sizeof reply, 10), 0);
  assert_string_equal(reply, "ok regs 0 111");
  assert_int_equal(HWT_Command(&srv.child, "regs 0 unit=4", reply, sizeof reply, 10), 0);
  assert_string_equal(reply, "ok regs 0 222");

  /* the same port with other line settings is refused */
  memset(&other, 0, sizeof other);
  snprintf(other.name, sizeof other.name, "other");
  snprintf(other.url, sizeof other.url, "rtu:%s?baud=9600", bus);
  assert_int_equal(CNF_ParseUrl(other.url, &other.parsed, err, sizeof err), 0);
  other.unit = 5;
  other.timeout_ms = 100;
  errno = 0;
  assert_null(MB_Create(&other, NULL, NULL, NULL));
  assert_int_equal(errno, EINVAL);

  /* both units written at once from two threads: no garbled frames */
  memset(&p3, 0, sizeof p3);
  memset(&p4, 0, sizeof p4);
  p3.d = &d3;
  p4.d = &d4;
  p3.period_s = p4.period_s = 0.005;
  assert_int_equal(pthread_create(&t3, NULL, pacer_thread, &p3), 0);
  assert_int_equal(pthread_create(&t4, NULL, pacer_thread, &p4), 0);
  usleep(1000000);
  p3.stop = 1;
  p4.stop = 1;
  pthread_join(t3, NULL);
  pthread_join(t4, NULL);
  print_message("# shared bus, 1 s: unit 3 %d writes, unit 4 %d writes, %d+%d failures\n",
                p3.n, p4.n, p3.failures, p4.failures);
  assert_int_equal(p3.failures + p4.failures, 0);
  assert_true(p3.n > 10 && p4.n > 10);

  /* unit 3 dies: it goes down, unit 4 keeps working and stays up */
  server_cmd(&srv, "silent unit=3");
  memset(&p4, 0, sizeof p4);
  p4.d = &d4;
  p4.period_s = 0.01;
  assert_int_equal(pthread_create(&t4, NULL, pacer_thread, &p4), 0);
  assert_int_equal(dev_write1(&d3, 0, 1, &e, NULL), -1);
  assert_int_equal(e, ETIMEDOUT);
  assert_true(dev_wait(&d3, 0, 5));
  usleep(1500000);                      /* unit 3 keeps failing its probes */
  p4.stop = 1;
  pthread_join(t4, NULL);
  print_message("# unit 3 dead: unit 4 did %d writes in 1.5 s, %d failures\n", p4.n, p4.failures);
  assert_int_equal(p4.failures, 0);
  assert_true(p4.n > 10);
  assert_int_equal(d4.downs, 0);
  assert_true(MB_IsUp(d4.dev));
  assert_false(MB_IsUp(d3.dev));

  server_cmd(&srv, "normal");
  assert_true(dev_wait(&d3, 1, 10));
  assert_int_equal(dev_write1(&d3, 1, 333, &e, NULL), 0);
  MB_GetStats(d3.dev, &st);
  assert_int_equal(st.reconnects, 1);

  dev_close(&d3);
  dev_close(&d4);
  HWT_Stop(&srv.child);
  HWT_Stop(&socat);
  unlink(bus);
  unlink(end2);
  rmdir(dir);
}

/* MB_StrError from many threads at once gives intact texts. */
static void *
strerror_thread(void *arg)
{
  int *bad = arg;
  char buf[128];

  for (int i = 0; i < 20000; i++) {
    int e = (i & 1) ? EMBXILADD : ETIMEDOUT;
    const char *want = (i & 1) ? "Modbus exception 2 (illegal data address)" : "Connection timed out";

    if (strcmp(MB_StrError(e, buf, sizeof buf), want) != 0)
      (*bad)++;
  }
  return NULL;
}

static void
test_strerror_threads(void **state)
{
  pthread_t th[4];
  int bad[4] = { 0 };

  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&th[i], NULL, strerror_thread, &bad[i]), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(bad[i], 0);
  }
}

/* A poll reading one coil and one discrete input on the device thread. */
typedef struct {
  pthread_mutex_t lock;
  int runs, coil, input, err;
} Poll;

static void
poll_fn(MB_Io *io, void *arg)
{
  Poll *p = arg;
  int c = -1, i = -1, err = 0;

  if (MB_ReadBit(io, 3, 1, &c) != 0 || MB_ReadBit(io, 5, 0, &i) != 0)
    err = errno;
  pthread_mutex_lock(&p->lock);
  p->runs++;
  p->coil = c;
  p->input = i;
  p->err = err;
  pthread_mutex_unlock(&p->lock);
}

static int
poll_sees(Poll *p, int coil, int input, double timeout_s)
{
  double end = UTL_Now() + timeout_s;

  for (;;) {
    int ok;

    pthread_mutex_lock(&p->lock);
    ok = p->coil == coil && p->input == input && p->err == 0;
    pthread_mutex_unlock(&p->lock);
    if (ok)
      return 1;
    if (UTL_Now() > end)
      return 0;
    usleep(2000);
  }
}

static int
poll_runs(Poll *p)
{
  int n;

  pthread_mutex_lock(&p->lock);
  n = p->runs;
  pthread_mutex_unlock(&p->lock);
  return n;
}

/* MB_SetPoll runs its function about every interval while up; MB_ReadBit
   reads coils (01) and discrete inputs (02); interval 0 ends the poll. */
static void
test_poll_bits(void **state)
{
  Server s;
  Dev d;
  Poll p;
  char reply[128];
  int n0, n1, bit;

  (void)state;
  memset(&p, 0, sizeof p);
  pthread_mutex_init(&p.lock, NULL);
  p.coil = p.input = -2;
  server_start(&s);
  dev_open(&d, s.port, 500, 50, 400);
  assert_true(dev_wait(&d, 1, 10));
  MB_SetPoll(d.dev, 0.01, poll_fn, &p);
  assert_true(poll_sees(&p, 0, 0, 5));
  assert_int_equal(HWT_Command(&s.child, "bit coil 3 1", reply, sizeof reply, 10), 0);
  assert_string_equal(reply, "ok bit 3 1");
  assert_true(poll_sees(&p, 1, 0, 5));
  assert_int_equal(HWT_Command(&s.child, "bit input 5 1", reply, sizeof reply, 10), 0);
  assert_true(poll_sees(&p, 1, 1, 5));
  assert_int_equal(HWT_Command(&s.child, "bit coil 3 0", reply, sizeof reply, 10), 0);
  assert_true(poll_sees(&p, 0, 1, 5));
  /* about every 10 ms: runs in 200 ms, but not hundreds */
  n0 = poll_runs(&p);
  usleep(200000);
  n1 = poll_runs(&p);
  print_message("# poll runs in 200 ms at a 10 ms interval: %d\n", n1 - n0);
  assert_true(n1 - n0 >= 1 && n1 - n0 <= 40);      /* not a busy loop */
  /* ended: no more runs */
  MB_SetPoll(d.dev, 0.0, NULL, NULL);
  usleep(50000);
  n0 = poll_runs(&p);
  usleep(100000);
  assert_int_equal(poll_runs(&p), n0);
  errno = 0;
  assert_int_equal(MB_ReadBit(NULL, 3, 1, &bit), -1);
  assert_int_equal(errno, EINVAL);
  dev_close(&d);
  HWT_Stop(&s.child);
  pthread_mutex_destroy(&p.lock);
}

/* ---- combined writes (MB_WriteLater) ---- */

/* One write of a job: its registers, whether its fill refuses, and what
   done was told. */
typedef struct {
  int addr, n;
  uint16_t v[2];
  int refuse;
  int fills, dones, rc, err, order;
  int sync;               /* the job writes addr with MB_Write instead */
} Later;

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int open;               /* the blocker job may return */
  int running;            /* the blocker job has started */
  int dones;              /* done calls so far (the order counter) */
} Batch;

static Batch batch;

static int
later_fill(void *arg, int *addr, uint16_t regs[MB_MAX_WRITE])
{
  Later *w = arg;

  w->fills++;
  if (w->refuse)
    return -1;
  *addr = w->addr;
  memcpy(regs, w->v, sizeof(uint16_t) * (size_t)w->n);
  return w->n;
}

static void
later_done(MB_Io *io, void *arg, int rc, int err)
{
  Later *w = arg;

  (void)io;
  pthread_mutex_lock(&batch.lock);
  w->dones++;
  w->rc = rc;
  w->err = err;
  w->order = ++batch.dones;
  pthread_cond_broadcast(&batch.cond);
  pthread_mutex_unlock(&batch.lock);
}

static void
later_job(MB_Io *io, void *arg)
{
  Later *w = arg;

  if (w->sync) {
    int rc = MB_Write(io, w->addr, w->v, w->n);

    later_done(io, w, rc, rc < 0 ? errno : 0);
    return;
  }
  MB_WriteLater(io, later_fill, later_done, w);
}

/* Holds the device thread until batch.open, so that the jobs submitted
   meanwhile are all queued when it returns. */
static void
blocker_job(MB_Io *io, void *arg)
{
  (void)io;
  (void)arg;
  pthread_mutex_lock(&batch.lock);
  batch.running = 1;
  pthread_cond_broadcast(&batch.cond);
  while (!batch.open)
    pthread_cond_wait(&batch.cond, &batch.lock);
  pthread_mutex_unlock(&batch.lock);
}

/* Queue the writes w[0..n-1] behind a blocker, let them run, wait for
   every done. */
static void
run_batch(Dev *d, Later *w, int n)
{
  pthread_mutex_lock(&batch.lock);
  batch.open = batch.running = batch.dones = 0;
  pthread_mutex_unlock(&batch.lock);
  assert_int_equal(MB_Submit(d->dev, blocker_job, NULL), 0);
  pthread_mutex_lock(&batch.lock);
  while (!batch.running)
    pthread_cond_wait(&batch.cond, &batch.lock);
  pthread_mutex_unlock(&batch.lock);
  for (int i = 0; i < n; i++)
    assert_int_equal(MB_Submit(d->dev, later_job, &w[i]), 0);
  pthread_mutex_lock(&batch.lock);
  batch.open = 1;
  pthread_cond_broadcast(&batch.cond);
  while (batch.dones < n)
    pthread_cond_wait(&batch.cond, &batch.lock);
  pthread_mutex_unlock(&batch.lock);
}

static Later
later(int addr, uint16_t v)
{
  Later w;

  memset(&w, 0, sizeof w);
  w.addr = addr;
  w.n = 1;
  w.v[0] = v;
  return w;
}

/* n writes of values v0, v0 + 1, ... to registers addr, addr + 1, ...,
   queued and run as run_batch does. */
static void
run_consecutive(Dev *d, Later *w, int n, int addr, int v0)
{
  for (int i = 0; i < n; i++)
    w[i] = later(addr + i, (uint16_t)(v0 + i));
  run_batch(d, w, n);
}

static void
expect_regs(Server *s, int addr, int n, const char *want)
{
  char cmd[32], reply[512];

  snprintf(cmd, sizeof cmd, "regs %d %d", addr, n);
  assert_int_equal(HWT_Command(&s->child, cmd, reply, sizeof reply, 10), 0);
  assert_string_equal(reply, want);
}

static void
test_write_later(void **state)
{
  Server s;
  Dev d;
  Later w[8], many[70];
  MB_Stats st;

  (void)state;
  pthread_mutex_init(&batch.lock, NULL);
  pthread_cond_init(&batch.cond, NULL);
  server_start(&s);
  open_combine = 1;
  dev_open(&d, s.port, 500, 300, 400);
  open_combine = 0;
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "reset");

  /* 20, 21 and 22 follow one another: one function-16 request; 30 starts
     the next one, the refused write sends nothing, 31 joins 30, and a
     two-register write 40-41 is followed by 42. */
  w[0] = later(20, 1001);
  w[1] = later(21, 1002);
  w[2] = later(22, 1003);
  w[3] = later(30, 2001);
  w[4] = later(31, 9999);
  w[4].refuse = 1;
  w[5] = later(31, 2002);
  w[6] = later(40, 3001);
  w[6].n = 2;
  w[6].v[1] = 3002;
  w[7] = later(42, 3003);
  run_batch(&d, w, 8);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(w[i].dones, 1);
    assert_int_equal(w[i].order, i + 1);          /* told in the order made */
    assert_int_equal(w[i].rc, i == 4 ? -1 : 0);
    assert_int_equal(w[i].err, i == 4 ? ECANCELED : 0);
  }
  /* each fill ran once but 30's, which ran again for its own request */
  assert_int_equal(w[3].fills, 2);
  assert_int_equal(w[6].fills, 2);
  assert_int_equal(w[0].fills + w[1].fills + w[2].fills + w[4].fills + w[5].fills, 5);
  assert_int_equal(server_stat(&s, "fc16"), 3);
  assert_int_equal(server_stat(&s, "fc06"), 0);
  expect_regs(&s, 20, 3, "ok regs 20 1001 1002 1003");
  expect_regs(&s, 30, 2, "ok regs 30 2001 2002");
  expect_regs(&s, 40, 3, "ok regs 40 3001 3002 3003");
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.writes, 7);
  assert_int_equal(st.requests, 3);

  /* A write made without MB_WriteLater sends the waiting ones first: the
     later value of register 50 is the one that stays. */
  server_cmd(&s, "reset");
  w[0] = later(50, 111);
  w[1] = later(50, 222);
  w[1].sync = 1;
  w[2] = later(51, 333);
  run_batch(&d, w, 3);
  assert_int_equal(w[0].order, 1);
  assert_int_equal(w[1].order, 2);
  assert_int_equal(w[2].order, 3);
  expect_regs(&s, 50, 2, "ok regs 50 222 333");
  assert_int_equal(server_stat(&s, "requests"), 3);

  /* A full batch goes out before the next write joins: 70 writes to
     consecutive registers take two requests, every value arrives. */
  server_cmd(&s, "reset");
  run_consecutive(&d, many, 70, 100, 5000);
  assert_int_equal(server_stat(&s, "fc16"), 2);
  assert_int_equal(server_stat(&s, "requests"), 2);
  for (int i = 0; i < 70; i++) {
    char want[64];

    assert_int_equal(many[i].rc, 0);
    snprintf(want, sizeof want, "ok regs %d %d", 100 + i, 5000 + i);
    expect_regs(&s, 100 + i, 1, want);
  }

  /* A failed request fails every write it carries; the writes after it
     find the device down. */
  server_cmd(&s, "exception code=4 count=1 writes");
  w[0] = later(60, 1);
  w[1] = later(61, 2);
  w[2] = later(70, 3);
  run_batch(&d, w, 3);
  assert_int_equal(w[0].err, EMBXSFAIL);
  assert_int_equal(w[1].err, EMBXSFAIL);
  assert_int_equal(w[2].err, ENOTCONN);
  /* 70 was looked at for the failed request (it did not follow), and not
     again: nothing is decided for a device that is down */
  assert_int_equal(w[2].fills, 1);
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.downs, 1);
  assert_int_equal(d.downs, 1);
  assert_true(dev_wait(&d, 1, 10));

  /* A module that refuses function 16 (illegal function): the combined
     write's values go out again one request each, the device stays up,
     and combining stays off. */
  server_cmd(&s, "exception code=1 fc=16");
  server_cmd(&s, "reset");
  run_consecutive(&d, w, 3, 80, 41);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(w[i].rc, 0);
    assert_int_equal(w[i].fills, 2);              /* once for the refused request */
  }
  expect_regs(&s, 80, 3, "ok regs 80 41 42 43");
  assert_int_equal(server_stat(&s, "exceptions"), 1);
  assert_int_equal(server_stat(&s, "fc06"), 3);
  assert_true(MB_IsUp(d.dev));
  assert_int_equal(d.downs, 1);
  server_cmd(&s, "reset");
  run_consecutive(&d, w, 2, 80, 51);
  assert_int_equal(server_stat(&s, "fc16"), 0);
  assert_int_equal(server_stat(&s, "fc06"), 2);
  expect_regs(&s, 80, 2, "ok regs 80 51 52");
  server_cmd(&s, "normal");
  dev_close(&d);

  /* Without the option every write is its own request, done at once. */
  dev_open(&d, s.port, 500, 300, 400);
  assert_true(dev_wait(&d, 1, 10));
  server_cmd(&s, "normal");
  server_cmd(&s, "reset");
  run_consecutive(&d, w, 3, 20, 7);
  assert_int_equal(server_stat(&s, "fc06"), 3);
  assert_int_equal(server_stat(&s, "fc16"), 0);
  expect_regs(&s, 20, 3, "ok regs 20 7 8 9");
  MB_GetStats(d.dev, &st);
  assert_int_equal(st.requests, 3);
  dev_close(&d);
  HWT_Stop(&s.child);
  pthread_cond_destroy(&batch.cond);
  pthread_mutex_destroy(&batch.lock);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_strerror, stop_servers),
    cmocka_unit_test_teardown(test_strerror_threads, stop_servers),
    cmocka_unit_test_teardown(test_create_errors, stop_servers),
    cmocka_unit_test_teardown(test_function_codes, stop_servers),
    cmocka_unit_test_teardown(test_write_later, stop_servers),
    cmocka_unit_test_teardown(test_poll_bits, stop_servers),
    cmocka_unit_test_teardown(test_exception, stop_servers),
    cmocka_unit_test_teardown(test_slow_device_isolated, stop_servers),
    cmocka_unit_test_teardown(test_dropped_connection, stop_servers),
    cmocka_unit_test_teardown(test_server_down_up, stop_servers),
    cmocka_unit_test_teardown(test_backoff, stop_servers),
    cmocka_unit_test_teardown(test_probe_options, stop_servers),
    cmocka_unit_test_teardown(test_stop_never_hangs, stop_servers),
    cmocka_unit_test_teardown(test_rtu_shared_bus, stop_servers),
  };

  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
