/* mbdev.c - Modbus analog-output devices, each driven by its own thread.
 *
 * Every device has one thread.  A TCP device owns its modbus_t; RTU devices
 * on the same serial port share one modbus_t (a "bus": the wire carries one
 * request at a time, and two contexts on one port would garble each other's
 * frames), taken under the bus mutex for each request with the device's unit
 * id and timeouts.  A unit that times out or answers badly on a bus only
 * marks that device down (the bus is flushed); a failing port closes the bus
 * for everyone.  Jobs are kept in a
 * FIFO protected by a mutex and a condition variable; the thread runs them in
 * order.  A failed request closes the connection and marks the device down;
 * while down, writes fail at once and the thread reconnects with capped
 * exponential back-off and jitter, probing the device with a one-register
 * read (FC03 or FC04, or none for a write-only module) before it declares
 * it up again.  libmodbus's link recovery stays off,
 * so no libmodbus call blocks for longer than the response timeout (plus the
 * byte timeout), and MB_Stop is bounded by that too.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

#include "log.h"
#include "mbdev.h"
#include "util.h"

#define MB_MAX_READ 125

typedef struct Job {
  MB_JobFn fn;
  void *arg;
  struct Job *next;
} Job;

struct MB_Io {
  MB_Device *dev;
};

/* A write waiting in a device's batch (MB_WriteLater). */
typedef struct {
  MB_FillFn fill;
  MB_DoneFn done;
  void *arg;
} Later;

struct MB_Device {
  CNF_Device cfg;
  MB_Options opt;
  MB_StatusFn status;
  void *status_arg;

  /* Device thread only (or before MB_Start / after the join). */
  modbus_t *ctx;              /* TCP: our own context; RTU: bus->ctx */
  struct Bus *bus;            /* RTU only */
  int timeout_ms;
  MB_Io io;
  unsigned int seed;
  Later batch[MB_MAX_BATCH];  /* MB_WriteLater: writes waiting to go out */
  int n_batch;
  int backoff_ms;             /* next nominal retry delay */
  double up_since;            /* when the device last came up */
  int reported;               /* last state reported: -1 none yet, 0, 1 */
  int ever_up;

  /* Protected by lock. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  Job *head, *tail;
  int up;
  int stopping;
  int started;
  int joined;
  int exited;                  /* the thread has left its loop */
  double next_try;            /* monotonic time of the next connect attempt */
  MB_Stats stats;
  MB_JobFn poll_fn;           /* MB_SetPoll: run every poll_s while up and idle */
  void *poll_arg;
  double poll_s, next_poll;

  pthread_t thread;
};


/* A device counts as working again once it has stayed up this long. */
#define MB_STABLE_S 2.0

/* ------------------------------------------------------------------ */

static const char *const exception_names[] = {
  NULL,
  "illegal function",
  "illegal data address",
  "illegal data value",
  "server device failure",
  "acknowledge",
  "server device busy",
  "negative acknowledge",
  "memory parity error",
  NULL,
  "gateway path unavailable",
  "gateway target failed to respond",
};

const char *
MB_StrError(int errnum, char *buf, size_t len)
{
  const char *text = NULL;

  if (!buf || len == 0)
    return "";
  if (errnum > MODBUS_ENOBASE && errnum < MODBUS_ENOBASE + MODBUS_EXCEPTION_MAX) {
    int code = errnum - MODBUS_ENOBASE;
    const char *name = exception_names[code] ? exception_names[code] : "unknown";
    snprintf(buf, len, "Modbus exception %d (%s)", code, name);
    return buf;
  }
  switch (errnum) {
    case EMBBADCRC: text = "invalid CRC"; break;
    case EMBBADDATA: text = "invalid data"; break;
    case EMBBADEXC: text = "invalid exception code"; break;
    case EMBUNKEXC: text = "unknown exception code"; break;
    case EMBMDATA: text = "too many data"; break;
    case EMBBADSLAVE: text = "response from an unexpected unit id"; break;
    default: break;
  }
  if (text) {
    snprintf(buf, len, "%s", text);
    return buf;
  }
  /* _GNU_SOURCE: the GNU strerror_r, which may return a static string. */
  text = strerror_r(errnum, buf, len);
  if (text != buf)
    snprintf(buf, len, "%s", text);
  return buf;
}

/* Short reason for status messages: "timeout", "connection refused"... */
static void
short_reason(const char *what, int err, char *buf, size_t len)
{
  char tmp[96];
  const char *text;

  switch (err) {
    case ETIMEDOUT: text = "timeout"; break;
    case ECONNREFUSED: text = "connection refused"; break;
    case ECONNRESET: text = "connection reset"; break;
    case EPIPE: text = "connection closed"; break;
    case ENOTCONN: text = "not connected"; break;
    case EHOSTUNREACH: text = "host unreachable"; break;
    case ENETUNREACH: text = "network unreachable"; break;
    default:
      if (err > MODBUS_ENOBASE && err < MODBUS_ENOBASE + MODBUS_EXCEPTION_MAX) {
        int code = err - MODBUS_ENOBASE;
        snprintf(tmp, sizeof tmp, "exception %d (%s)", code,
                 exception_names[code] ? exception_names[code] : "unknown");
        text = tmp;
      } else {
        text = MB_StrError(err, tmp, sizeof tmp);
      }
      break;
  }
  snprintf(buf, len, "%s: %s", what, text);
}


/* ------------------------------------------------------------------ */
/* RTU buses: one shared context per serial port */

typedef struct Bus {
  CNF_Url url;
  modbus_t *ctx;
  pthread_mutex_t lock;       /* held for every request on the bus */
  int open;                   /* under lock */
  int refs;                   /* under buses_lock */
  struct Bus *next;
} Bus;

static pthread_mutex_t buses_lock = PTHREAD_MUTEX_INITIALIZER;
static Bus *buses;

static int
set_timeouts(modbus_t *ctx, int timeout_ms)
{
  uint32_t sec = (uint32_t)(timeout_ms / 1000), usec = (uint32_t)(timeout_ms % 1000) * 1000;

  return modbus_set_response_timeout(ctx, sec, usec) < 0 ||
         modbus_set_byte_timeout(ctx, sec, usec) < 0 ? -1 : 0;
}

/* The bus of an RTU URL, created on first use; NULL with errno set
   (EINVAL if the port is already used with other line settings). */
static Bus *
bus_get(const CNF_Url *u)
{
  Bus *b;

  pthread_mutex_lock(&buses_lock);
  for (b = buses; b; b = b->next) {
    if (strcmp(b->url.host, u->host) != 0)
      continue;
    if (b->url.baud != u->baud || b->url.parity != u->parity ||
        b->url.data_bits != u->data_bits || b->url.stop_bits != u->stop_bits) {
      pthread_mutex_unlock(&buses_lock);
      errno = EINVAL;
      return NULL;
    }
    b->refs++;
    pthread_mutex_unlock(&buses_lock);
    return b;
  }
  b = calloc(1, sizeof *b);
  if (!b) {
    pthread_mutex_unlock(&buses_lock);
    errno = ENOMEM;
    return NULL;
  }
  b->url = *u;
  b->ctx = modbus_new_rtu(u->host, u->baud, u->parity, u->data_bits, u->stop_bits);
  if (!b->ctx || modbus_set_error_recovery(b->ctx, MODBUS_ERROR_RECOVERY_NONE) < 0) {
    int err = errno ? errno : EINVAL;

    if (b->ctx)
      modbus_free(b->ctx);
    free(b);
    pthread_mutex_unlock(&buses_lock);
    errno = err;
    return NULL;
  }
  pthread_mutex_init(&b->lock, NULL);
  b->refs = 1;
  b->next = buses;
  buses = b;
  pthread_mutex_unlock(&buses_lock);
  return b;
}

static void
bus_put(Bus *b)
{
  Bus **pp;

  pthread_mutex_lock(&buses_lock);
  if (--b->refs > 0) {
    pthread_mutex_unlock(&buses_lock);
    return;
  }
  for (pp = &buses; *pp; pp = &(*pp)->next) {
    if (*pp == b) {
      *pp = b->next;
      break;
    }
  }
  pthread_mutex_unlock(&buses_lock);
  if (b->open)
    modbus_close(b->ctx);
  modbus_free(b->ctx);
  pthread_mutex_destroy(&b->lock);
  free(b);
}

/* Errors that concern one unit, not the wire: the bus stays open. */
static int
unit_error(int err)
{
  return err == ETIMEDOUT || (err > MODBUS_ENOBASE && err <= EMBBADSLAVE);
}

/* Take the link for one request: on a bus, lock it and select our unit and
   timeouts.  Returns the context, or NULL (errno ENOTCONN) if the bus is
   closed and open_bus is 0 (or opening it failed). */
static modbus_t *
link_begin(MB_Device *d, int open_bus)
{
  Bus *b = d->bus;

  if (!b)
    return d->ctx;
  pthread_mutex_lock(&b->lock);
  if (!b->open) {
    if (!open_bus) {
      errno = ENOTCONN;
      return NULL;
    }
    if (modbus_connect(b->ctx) < 0)
      return NULL;
    b->open = 1;
  }
  modbus_set_slave(b->ctx, d->cfg.unit);
  set_timeouts(b->ctx, d->timeout_ms);
  return b->ctx;
}

/* After a failed request (bus locked): flush late bytes of a unit error,
   close the port on anything else. */
static void
link_failed(MB_Device *d, int err)
{
  Bus *b = d->bus;

  if (!b || !b->open)
    return;
  if (unit_error(err)) {
    modbus_flush(b->ctx);
  } else {
    modbus_close(b->ctx);
    b->open = 0;
  }
}

static void
link_end(MB_Device *d)
{
  if (d->bus)
    pthread_mutex_unlock(&d->bus->lock);
}

/* ------------------------------------------------------------------ */

void
MB_DefaultOptions(MB_Options *opt)
{
  opt->backoff_min_ms = 100;
  opt->backoff_max_ms = 5000;
  opt->probe_reg = 0;
  opt->probe_fn = CNF_PROBE_HOLDING;
  opt->combine = 0;
}

static int
is_ipv4_literal(const char *host)
{
  struct in_addr a;

  return inet_pton(AF_INET, host, &a) == 1;
}

static modbus_t *
new_tcp_context(const CNF_Url *u)
{
  char service[16];

  if (u->port < 1 || u->port > 65535 || !u->host[0]) {
    errno = EINVAL;
    return NULL;
  }
  if (is_ipv4_literal(u->host))
    return modbus_new_tcp(u->host, u->port);
  snprintf(service, sizeof service, "%d", u->port);
  return modbus_new_tcp_pi(u->host, service);
}

MB_Device *
MB_Create(const CNF_Device *cfg, const MB_Options *opt,
          MB_StatusFn status, void *status_arg)
{
  MB_Device *d;
  pthread_condattr_t ca;
  int timeout_ms;

  if (!cfg || cfg->unit < 0 || cfg->unit > 247) {
    errno = EINVAL;
    return NULL;
  }
  d = calloc(1, sizeof *d);
  if (!d) {
    errno = ENOMEM;
    return NULL;
  }
  d->cfg = *cfg;
  MB_DefaultOptions(&d->opt);
  if (opt) {
    if (opt->backoff_min_ms > 0)
      d->opt.backoff_min_ms = opt->backoff_min_ms;
    if (opt->backoff_max_ms > 0)
      d->opt.backoff_max_ms = opt->backoff_max_ms;
    if (opt->probe_reg >= 0 && opt->probe_reg <= 65535)
      d->opt.probe_reg = opt->probe_reg;
    if (opt->probe_fn == CNF_PROBE_INPUT || opt->probe_fn == CNF_PROBE_NONE)
      d->opt.probe_fn = opt->probe_fn;
    d->opt.combine = opt->combine != 0;
  }
  if (d->opt.backoff_max_ms < d->opt.backoff_min_ms)
    d->opt.backoff_max_ms = d->opt.backoff_min_ms;
  d->status = status;
  d->status_arg = status_arg;
  d->io.dev = d;
  d->seed = (unsigned int)getpid() ^ (unsigned int)(uintptr_t)d ^
            (unsigned int)(uint64_t)(UTL_Now() * 1e6);   /* > UINT_MAX after 72 min */
  d->backoff_ms = d->opt.backoff_min_ms;
  d->reported = -1;

  timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 200;
  d->timeout_ms = timeout_ms;
  errno = 0;
  if (cfg->parsed.kind == CNF_URL_RTU) {
    CNF_Url u = cfg->parsed;

    if (!u.host[0]) {
      free(d);
      errno = EINVAL;
      return NULL;
    }
    if (u.baud <= 0)
      u.baud = 19200;
    if (!u.parity)
      u.parity = 'N';
    if (u.data_bits <= 0)
      u.data_bits = 8;
    if (u.stop_bits <= 0)
      u.stop_bits = 1;
    d->bus = bus_get(&u);
    if (!d->bus) {
      int err = errno ? errno : EINVAL;

      free(d);
      errno = err;
      return NULL;
    }
    d->ctx = d->bus->ctx;
  } else {
    d->ctx = new_tcp_context(&cfg->parsed);
    if (!d->ctx || modbus_set_slave(d->ctx, cfg->unit) < 0 ||
        set_timeouts(d->ctx, timeout_ms) < 0 ||
        modbus_set_error_recovery(d->ctx, MODBUS_ERROR_RECOVERY_NONE) < 0) {
      int err = errno ? errno : EINVAL;

      if (d->ctx)
        modbus_free(d->ctx);
      free(d);
      errno = err;
      return NULL;
    }
  }

  pthread_mutex_init(&d->lock, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&d->cond, &ca);
  pthread_condattr_destroy(&ca);
  return d;
}

/* ------------------------------------------------------------------ */
/* Device thread */

static double
jittered_delay_s(MB_Device *d)
{
  double u = (double)rand_r(&d->seed) / ((double)RAND_MAX + 1.0);
  double delay_ms = d->backoff_ms * (1.0 - 0.25 * u);

  if (d->backoff_ms < d->opt.backoff_max_ms) {
    d->backoff_ms *= 2;
    if (d->backoff_ms > d->opt.backoff_max_ms)
      d->backoff_ms = d->opt.backoff_max_ms;
  }
  return delay_ms / 1000.0;
}

static void
report(MB_Device *d, int up, const char *why)
{
  if (d->reported == up)
    return;
  d->reported = up;
  if (up)
    log_info("device %s: up (%s)", d->cfg.name, why);
  else
    log_warn("device %s: down (%s)", d->cfg.name, why);
  if (d->status)
    d->status(d, up, why, d->status_arg);
}

/* An I/O error on an up device: close, mark down, schedule the retry. */
static void
mark_down(MB_Device *d, const char *what, int err)
{
  char why[128];
  double delay;

  if (!d->bus)
    modbus_close(d->ctx);       /* a bus was flushed or closed by link_failed */
  /* Back-off starts again only after the device has worked for a while: one
     that answers probes but fails every write must not be hammered. */
  if (UTL_Now() - d->up_since >= MB_STABLE_S)
    d->backoff_ms = d->opt.backoff_min_ms;
  delay = jittered_delay_s(d);
  pthread_mutex_lock(&d->lock);
  if (d->up)
    d->stats.downs++;
  d->up = 0;
  d->next_try = UTL_Now() + delay;
  pthread_mutex_unlock(&d->lock);
  short_reason(what, err, why, sizeof why);
  report(d, 0, why);
}

/* The probe read of one register (FC03 or FC04); 0 when there is none. */
static int
probe(MB_Device *d, modbus_t *ctx)
{
  uint16_t v;

  switch (d->opt.probe_fn) {
    case CNF_PROBE_NONE:
      return 0;
    case CNF_PROBE_INPUT:
      return modbus_read_input_registers(ctx, d->opt.probe_reg, 1, &v) < 0 ? -1 : 0;
    case CNF_PROBE_HOLDING:
      break;
  }
  return modbus_read_registers(ctx, d->opt.probe_reg, 1, &v) < 0 ? -1 : 0;
}

static void
try_connect(MB_Device *d)
{
  const char *up_why = d->opt.probe_fn == CNF_PROBE_NONE ? "connected, no probe" : "connected";
  char why[128];
  int ok = 0;

  if (d->bus) {
    modbus_t *ctx = link_begin(d, 1);

    if (!ctx) {
      short_reason("open", errno, why, sizeof why);
    } else if (probe(d, ctx) < 0) {
      int err = errno;

      link_failed(d, err);
      short_reason("probe", err, why, sizeof why);
    } else {
      ok = 1;
      snprintf(why, sizeof why, "%s", up_why);
    }
    link_end(d);
  } else if (modbus_connect(d->ctx) < 0) {
    short_reason("connect", errno, why, sizeof why);
  } else if (probe(d, d->ctx) < 0) {
    short_reason("probe", errno, why, sizeof why);
    modbus_close(d->ctx);
  } else {
    ok = 1;
    snprintf(why, sizeof why, "%s", up_why);
  }

  if (ok) {
    pthread_mutex_lock(&d->lock);
    d->up = 1;
    if (d->ever_up)
      d->stats.reconnects++;
    pthread_mutex_unlock(&d->lock);
    d->ever_up = 1;
    d->up_since = UTL_Now();
  } else {
    double delay = jittered_delay_s(d);

    pthread_mutex_lock(&d->lock);
    d->next_try = UTL_Now() + delay;
    pthread_mutex_unlock(&d->lock);
    log_debug("device %s: %s, next attempt in %.0f ms", d->cfg.name, why, delay * 1e3);
  }
  report(d, ok, why);
}

static void
abs_time(double mono_s, struct timespec *ts)
{
  if (mono_s < 0)
    mono_s = 0;
  ts->tv_sec = (time_t)mono_s;
  ts->tv_nsec = (long)((mono_s - (double)ts->tv_sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void flush_batch(MB_Device *d);

/* Set on device threads: MB_Submit called there (a job for a second device)
   signals under the lock, see MB_Submit. */
static __thread int on_device_thread;

static void *
device_thread(void *arg)
{
  MB_Device *d = arg;

  on_device_thread = 1;
  pthread_setname_np(pthread_self(), "wl-dev");   /* for top -H and the benchmark */
  pthread_mutex_lock(&d->lock);
  for (;;) {
    if (d->n_batch > 0) {
      /* Writes waiting to be combined never wait for a reconnect (they
         fail at once while the device is down). */
      pthread_mutex_unlock(&d->lock);
      flush_batch(d);
      pthread_mutex_lock(&d->lock);
      continue;
    }
    if (!d->up && !d->stopping && UTL_Now() >= d->next_try) {
      pthread_mutex_unlock(&d->lock);
      try_connect(d);
      pthread_mutex_lock(&d->lock);
      continue;
    }
    if (d->head) {
      /* Queued jobs run back to back while their writes wait to be
         combined; the writes go out (at the top) once no job is left to
         join them, or the device went down. */
      do {
        Job *job = d->head;

        d->head = job->next;
        if (!d->head)
          d->tail = NULL;
        d->stats.pending--;
        pthread_mutex_unlock(&d->lock);
        job->fn(&d->io, job->arg);
        free(job);
        pthread_mutex_lock(&d->lock);
        d->stats.jobs_run++;
      } while (d->n_batch > 0 && d->head && d->up);
      continue;
    }
    if (d->stopping)
      break;
    if (d->up && d->poll_fn && UTL_Now() >= d->next_poll) {
      MB_JobFn fn = d->poll_fn;
      void *parg = d->poll_arg;

      d->next_poll = UTL_Now() + d->poll_s;
      pthread_mutex_unlock(&d->lock);
      fn(&d->io, parg);
      pthread_mutex_lock(&d->lock);
      continue;
    }
    if (!d->up || d->poll_fn) {
      struct timespec ts;

      abs_time(!d->up ? d->next_try : d->next_poll, &ts);
      pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    } else {
      pthread_cond_wait(&d->cond, &d->lock);
    }
  }
  d->up = 0;
  pthread_mutex_unlock(&d->lock);
  if (!d->bus)
    modbus_close(d->ctx);
  pthread_mutex_lock(&d->lock);
  d->exited = 1;
  pthread_mutex_unlock(&d->lock);
  return NULL;
}

/* ------------------------------------------------------------------ */

int
MB_Start(MB_Device *dev)
{
  int rc;

  pthread_mutex_lock(&dev->lock);
  if (dev->started || dev->stopping) {
    pthread_mutex_unlock(&dev->lock);
    errno = EALREADY;
    return -1;
  }
  dev->next_try = 0;
  rc = pthread_create(&dev->thread, NULL, device_thread, dev);
  if (rc == 0)
    dev->started = 1;
  pthread_mutex_unlock(&dev->lock);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  return 0;
}

void
MB_SetPoll(MB_Device *dev, double interval_s, MB_JobFn fn, void *arg)
{
  pthread_mutex_lock(&dev->lock);
  dev->poll_fn = interval_s > 0.0 ? fn : NULL;
  dev->poll_arg = arg;
  dev->poll_s = interval_s;
  dev->next_poll = 0.0;
  pthread_cond_signal(&dev->cond);
  pthread_mutex_unlock(&dev->lock);
}

int
MB_Submit(MB_Device *dev, MB_JobFn fn, void *arg)
{
  Job *job;

  if (!fn) {
    errno = EINVAL;
    return -1;
  }
  job = malloc(sizeof *job);
  if (!job) {
    errno = ENOMEM;
    return -1;
  }
  job->fn = fn;
  job->arg = arg;
  job->next = NULL;
  pthread_mutex_lock(&dev->lock);
  if (dev->stopping) {
    pthread_mutex_unlock(&dev->lock);
    free(job);
    errno = ESHUTDOWN;
    return -1;
  }
  if (dev->tail)
    dev->tail->next = job;
  else
    dev->head = job;
  dev->tail = job;
  dev->stats.jobs_queued++;
  dev->stats.pending++;
  /* The device thread drains every queued job per wake-up.  From the loop
     thread, signal after unlocking so that the woken thread does not block
     at once on the mutex still held here (one wake-up per cycle instead of
     two): safe because devices are destroyed only by the loop thread, the
     caller itself.  A device thread may submit to a second device that the
     loop may destroy as soon as that job is done, so there the signal stays
     under the lock. */
  if (on_device_thread) {
    pthread_cond_signal(&dev->cond);
    pthread_mutex_unlock(&dev->lock);
  } else {
    pthread_mutex_unlock(&dev->lock);
    pthread_cond_signal(&dev->cond);
  }
  return 0;
}

/* Common checks of MB_Write/MB_Read; 0 if the request may go out. */
static int
io_ready(MB_Device *d)
{
  int up;

  pthread_mutex_lock(&d->lock);
  up = d->up;
  if (!up)
    d->stats.write_errors++;
  pthread_mutex_unlock(&d->lock);
  if (!up) {
    errno = ENOTCONN;
    return -1;
  }
  return 0;
}

/* The one write path: fill (if any) decides the registers once the link is
   taken. */
static int
write_regs(MB_Io *io, int addr, const uint16_t *regs, int n, MB_FillFn fill, void *arg)
{
  MB_Device *d;
  modbus_t *ctx;
  uint16_t buf[MB_MAX_WRITE];
  int rc, err;

  if (!io || (!fill && (!regs || n < 1 || n > MB_MAX_WRITE || addr < 0 || addr + n > 65536))) {
    errno = EINVAL;
    return -1;
  }
  d = io->dev;
  flush_batch(d);               /* requests go out in the order they were made */
  if (io_ready(d) < 0)
    return -1;
  ctx = link_begin(d, 0);
  if (ctx && fill) {
    n = fill(arg, &addr, buf);
    if (n < 1 || n > MB_MAX_WRITE || addr < 0 || addr + n > 65536) {
      link_end(d);
      errno = ECANCELED;
      return -1;
    }
    regs = buf;
  }
  if (!ctx)
    rc = -1;
  else if (n == 1)
    rc = modbus_write_register(ctx, addr, regs[0]);
  else
    rc = modbus_write_registers(ctx, addr, n, regs);
  err = rc < 0 ? (errno ? errno : EIO) : 0;
  if (rc < 0)
    link_failed(d, err);
  link_end(d);
  if (rc < 0) {
    pthread_mutex_lock(&d->lock);
    d->stats.write_errors++;
    pthread_mutex_unlock(&d->lock);
    mark_down(d, "write", err);
    errno = err;
    return -1;
  }
  pthread_mutex_lock(&d->lock);
  d->stats.writes++;
  d->stats.requests++;
  pthread_mutex_unlock(&d->lock);
  return 0;
}

/* One request of the batch, from b[i]: the link is taken, then the fills
   run in order while their registers follow on from the request's so far
   (a refused one is marked ECANCELED and skipped); the request goes out and
   err[] gets each carried write's outcome.  Returns the index of the first
   write not handled (its fill runs again for the next request). */
static int
flush_run(MB_Device *d, const Later *b, int i, int n, int *err)
{
  uint16_t regs[MB_MAX_RUN], one[MB_MAX_WRITE];
  int addr = 0, cnt = 0, carried = 0, k, rc, e;
  modbus_t *ctx;

  if (io_ready(d) < 0) {
    err[i] = ENOTCONN;
    return i + 1;
  }
  ctx = link_begin(d, 0);
  if (!ctx) {
    e = errno ? errno : ENOTCONN;
    link_end(d);
    pthread_mutex_lock(&d->lock);
    d->stats.write_errors++;
    pthread_mutex_unlock(&d->lock);
    mark_down(d, "write", e);
    err[i] = e;
    return i + 1;
  }
  for (k = i; k < n && cnt + MB_MAX_WRITE <= MB_MAX_RUN && (cnt == 0 || d->opt.combine); k++) {
    int a = 0, m = b[k].fill(b[k].arg, &a, one);

    if (m < 1 || m > MB_MAX_WRITE || a < 0 || a + m > 65536) {
      err[k] = ECANCELED;
      continue;
    }
    if (cnt > 0 && a != addr + cnt)
      break;
    if (cnt == 0)
      addr = a;
    memcpy(regs + cnt, one, (size_t)m * sizeof *one);
    cnt += m;
    err[k] = 0;
    carried++;
  }
  if (cnt == 0) {
    link_end(d);
    return k;
  }
  rc = cnt == 1 ? modbus_write_register(ctx, addr, regs[0])
                : modbus_write_registers(ctx, addr, cnt, regs);
  e = rc < 0 ? (errno ? errno : EIO) : 0;
  if (rc < 0 && carried > 1 && (e == EMBXILFUN || e == EMBXILADD || e == EMBXILVAL)) {
    /* The module refuses a write over several lasers' registers (nothing
       of it was written): combining ends for this device, and the writes
       go out again one request each. */
    char why[96];

    if (d->bus)
      modbus_flush(ctx);
    link_end(d);
    d->opt.combine = 0;
    log_warn("device %s: a combined write of registers %d-%d was refused (%s): combine_writes "
             "is off for this device until it is started anew", d->cfg.name, addr,
             addr + cnt - 1, MB_StrError(e, why, sizeof why));
    return i;
  }
  if (rc < 0)
    link_failed(d, e);
  link_end(d);
  pthread_mutex_lock(&d->lock);
  if (rc < 0) {
    d->stats.write_errors += (unsigned long)carried;
  } else {
    d->stats.writes += (unsigned long)carried;
    d->stats.requests++;
  }
  pthread_mutex_unlock(&d->lock);
  if (rc < 0) {
    for (int j = i; j < k; j++)
      if (err[j] == 0)
        err[j] = e;
    mark_down(d, "write", e);
  }
  return k;
}

/* Send the writes waiting in the batch, and tell each one its outcome. */
static void
flush_batch(MB_Device *d)
{
  Later b[MB_MAX_BATCH];
  int err[MB_MAX_BATCH];
  int n = d->n_batch, i = 0;

  if (n == 0)
    return;
  /* The done functions may queue jobs, never writes here, but the batch is
     taken whole first all the same. */
  memcpy(b, d->batch, (size_t)n * sizeof *b);
  d->n_batch = 0;
  while (i < n) {
    int next = flush_run(d, b, i, n, err);

    for (int j = i; j < next; j++)
      b[j].done(&d->io, b[j].arg, err[j] ? -1 : 0, err[j]);
    i = next;
  }
}

void
MB_WriteLater(MB_Io *io, MB_FillFn fill, MB_DoneFn done, void *arg)
{
  MB_Device *d;

  if (!io || !done)
    return;
  if (!fill) {
    done(io, arg, -1, EINVAL);
    return;
  }
  d = io->dev;
  if (!d->opt.combine || !MB_IsUp(d)) {
    int rc = write_regs(io, 0, NULL, 0, fill, arg);

    done(io, arg, rc, rc < 0 ? errno : 0);
    return;
  }
  if (d->n_batch == MB_MAX_BATCH)
    flush_batch(d);
  d->batch[d->n_batch].fill = fill;
  d->batch[d->n_batch].done = done;
  d->batch[d->n_batch].arg = arg;
  d->n_batch++;
}

int
MB_Write(MB_Io *io, int addr, const uint16_t *regs, int n)
{
  return write_regs(io, addr, regs, n, NULL, NULL);
}

int
MB_WriteGated(MB_Io *io, MB_FillFn fill, void *arg)
{
  if (!fill) {
    errno = EINVAL;
    return -1;
  }
  return write_regs(io, 0, NULL, 0, fill, arg);
}

/* What read_io reads. */
enum { READ_REGS, READ_COIL, READ_INPUT_BIT };

/* One read on the device of io, from the thread that owns its link: n
   holding registers into dst (uint16_t[n]), or one coil or discrete input
   into dst (uint8_t).  A failed read marks the device down.  0, or -1 with
   errno (ENOTCONN: the device is down). */
static int
read_io(MB_Io *io, int what, int addr, int n, void *dst)
{
  MB_Device *d = io->dev;
  modbus_t *ctx;
  int rc, err;

  flush_batch(d);
  pthread_mutex_lock(&d->lock);
  rc = d->up;
  pthread_mutex_unlock(&d->lock);
  if (!rc) {
    errno = ENOTCONN;
    return -1;
  }
  ctx = link_begin(d, 0);
  if (!ctx)
    rc = -1;
  else if (what == READ_REGS)
    rc = modbus_read_registers(ctx, addr, n, dst);
  else if (what == READ_COIL)
    rc = modbus_read_bits(ctx, addr, 1, dst);
  else
    rc = modbus_read_input_bits(ctx, addr, 1, dst);
  err = rc < 0 ? (errno ? errno : EIO) : 0;
  if (rc < 0)
    link_failed(d, err);
  link_end(d);
  if (rc < 0) {
    mark_down(d, "read", err);
    errno = err;
    return -1;
  }
  return 0;
}

int
MB_Read(MB_Io *io, int addr, uint16_t *regs, int n)
{
  if (!io || !regs || n < 1 || n > MB_MAX_READ || addr < 0 || addr + n > 65536) {
    errno = EINVAL;
    return -1;
  }
  return read_io(io, READ_REGS, addr, n, regs);
}

MB_Device *
MB_IoDevice(MB_Io *io)
{
  return io->dev;
}

int
MB_IsUp(const MB_Device *dev)
{
  MB_Device *d = (MB_Device *)dev;
  int up;

  pthread_mutex_lock(&d->lock);
  up = d->up;
  pthread_mutex_unlock(&d->lock);
  return up;
}

const char *
MB_Name(const MB_Device *dev)
{
  return dev->cfg.name;
}

void
MB_GetStats(const MB_Device *dev, MB_Stats *st)
{
  MB_Device *d = (MB_Device *)dev;

  pthread_mutex_lock(&d->lock);
  *st = d->stats;
  pthread_mutex_unlock(&d->lock);
}

void
MB_RequestStop(MB_Device *dev)
{
  pthread_mutex_lock(&dev->lock);
  dev->stopping = 1;
  pthread_cond_broadcast(&dev->cond);
  pthread_mutex_unlock(&dev->lock);
}

int
MB_Exited(MB_Device *dev)
{
  int done;

  pthread_mutex_lock(&dev->lock);
  done = !dev->started || dev->exited;
  pthread_mutex_unlock(&dev->lock);
  return done;
}

void
MB_Stop(MB_Device *dev)
{
  int join = 0;

  if (!dev)
    return;
  pthread_mutex_lock(&dev->lock);
  dev->stopping = 1;
  if (dev->started && !dev->joined) {
    dev->joined = 1;
    join = 1;
  }
  pthread_cond_broadcast(&dev->cond);
  pthread_mutex_unlock(&dev->lock);

  if (join) {
    pthread_join(dev->thread, NULL);
    return;
  }
  /* Never started: run the queued jobs here, their writes failing fast. */
  for (;;) {
    Job *job;

    pthread_mutex_lock(&dev->lock);
    job = dev->head;
    if (job) {
      dev->head = job->next;
      if (!dev->head)
        dev->tail = NULL;
      dev->stats.pending--;
    }
    pthread_mutex_unlock(&dev->lock);
    if (!job)
      break;
    job->fn(&dev->io, job->arg);
    free(job);
    flush_batch(dev);
    pthread_mutex_lock(&dev->lock);
    dev->stats.jobs_run++;
    pthread_mutex_unlock(&dev->lock);
  }
}

void
MB_Destroy(MB_Device *dev)
{
  if (!dev)
    return;
  MB_Stop(dev);
  if (dev->bus)
    bus_put(dev->bus);
  else
    modbus_free(dev->ctx);
  pthread_cond_destroy(&dev->cond);
  pthread_mutex_destroy(&dev->lock);
  free(dev);
}

int
MB_ReadBit(MB_Io *io, int addr, int coil, int *bit)
{
  uint8_t b = 0;

  if (!io || !bit || addr < 0 || addr > 65535) {
    errno = EINVAL;
    return -1;
  }
  if (read_io(io, coil ? READ_COIL : READ_INPUT_BIT, addr, 1, &b) < 0)
    return -1;
  *bit = b ? 1 : 0;
  return 0;
}
