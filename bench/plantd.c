/* plantd.c - benchmark stand-in for the lab: a wavemeter stream publisher and
 * Modbus TCP servers in one single-threaded epoll loop, which time-stamps
 * every reading it publishes and every register write that arrives.
 *
 * It lets bench/run.py measure wavelockd from the outside:
 *
 *   latency = t(write request for laser i arrives here)
 *           - t(reading for laser i handed to send() here)
 *
 * which is the stream leg (publisher -> daemon) + the daemon's own work +
 * the request leg of the Modbus write.  The reply leg (server -> daemon,
 * which "acknowledges" the write) is not seen here; on loopback it is the
 * same kind of one-way hop as the stream leg, so the figure equals the
 * daemon's "reading arrival -> write acknowledged" time to within the
 * difference of two loopback hops.  bench/mbping measures the raw libmodbus
 * round trip (request leg + reply leg) against this same server.
 *
 * Layout (run.py writes the matching wavelockd config): laser i (0-based)
 * reads on wavemeter channel i+1 and has one u16 piezo register on device
 * i % D at register i / D.  Writes are matched to readings per laser in
 * order (a FIFO of send times), which is exact as long as the daemon neither
 * coalesces nor drops readings (run.py checks its counters).
 *
 * Readings: laser i gets `rate` readings per second, the lasers in turn,
 * evenly spaced; value = setpoint + gaussian noise.  Readings due within
 * one tick (--tick-us) go out in one send().
 *
 * Commands on stdin, one per line, answered on stdout:
 *   reset           forget samples and counters (matching state is kept)
 *   stats           per-laser and pooled figures, then "end"
 *   pause / resume  stop / restart publishing
 *   quit            exit (so does EOF on stdin)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEVICES 256
#define MAX_LASERS 4096
#define NREGS 4096
#define RING 16
#define RXBUF 65536
#define OUT_MAX (4 * 1024 * 1024)

enum { K_STDIN = 1, K_TIMER, K_STREAM_LISTEN, K_STREAM, K_MB_LISTEN, K_MB };

typedef struct Conn {
  int kind;
  int fd;
  int dev;                   /* Modbus: device index */
  uint8_t *in;
  size_t in_len;
  char *out;
  size_t out_len, out_cap;
  int want_out;
  int dead;                  /* closed; freed after the current epoll batch */
  struct Conn *next_dead;
  struct Conn *prev, *next;  /* every open connection, for the exit */
} Conn;

typedef struct {
  double *v;
  size_t n, cap;
} Samples;

typedef struct {
  double ring[RING];         /* send times of readings not yet answered */
  int head, count;
  double last_write;         /* arrival of the previous write, 0 = none */
  unsigned long sent, matched, unmatched, lost, late;
  Samples lat, per;
} Laser;

static int n_lasers = 1, n_devices = 1;
static double rate_hz = 100.0, setpoint_thz = 384.0, noise_mhz = 0.5;
static long tick_us = 0;
static int epfd;
static Conn *dead_list;
static Conn *all_conns;
static Laser *lasers;
static uint16_t regs[MAX_DEVICES][NREGS];
static Conn *stream_clients[64];
static int n_stream_clients;
static unsigned long published;
static int paused = 1;         /* until the first stream client connects */
static int paused_by_user;
static int one_per_tick;      /* each timer tick publishes one reading */
static double pub_origin;      /* schedule origin (after resume) */
static unsigned long pub_base; /* published at pub_origin */
static unsigned long skipped, stream_drops, mb_requests, mb_bad;
static uint64_t rng_state = 88172645463325252ULL;

static double
now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double
uniform(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static double
gauss(void)
{
  return sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform());
}

static void
die(const char *what)
{
  fprintf(stderr, "plantd: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void
add_sample(Samples *s, double v)
{
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    double *p = realloc(s->v, cap * sizeof *p);
    if (!p)
      die("realloc");
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = v;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double
pct(const double *v, size_t n, double p)
{
  size_t k;

  if (n == 0)
    return (double)NAN;
  k = (size_t)ceil(p / 100.0 * (double)n);
  if (k < 1)
    k = 1;
  return v[k - 1];
}

static void
describe(const char *prefix, Samples *s, char *buf, size_t len)
{
  double mean = 0, sd = 0;

  qsort(s->v, s->n, sizeof *s->v, cmp_double);
  for (size_t i = 0; i < s->n; i++)
    mean += s->v[i];
  if (s->n)
    mean /= (double)s->n;
  for (size_t i = 0; i < s->n; i++)
    sd += (s->v[i] - mean) * (s->v[i] - mean);
  if (s->n > 1)
    sd = sqrt(sd / (double)(s->n - 1));
  snprintf(buf, len, "%s_n=%zu %s_p50=%.1f %s_p99=%.1f %s_max=%.1f %s_mean=%.1f %s_sd=%.1f",
           prefix, s->n, prefix, pct(s->v, s->n, 50), prefix, pct(s->v, s->n, 99), prefix,
           s->n ? s->v[s->n - 1] : (double)NAN, prefix, mean, prefix, sd);
}

/* ---- connections ------------------------------------------------------- */

static Conn *
conn_new(int kind, int fd, int dev)
{
  Conn *c = calloc(1, sizeof *c);
  struct epoll_event ev = { 0 };

  if (!c)
    die("calloc");
  c->kind = kind;
  c->fd = fd;
  c->dev = dev;
  c->next = all_conns;
  if (all_conns)
    all_conns->prev = c;
  all_conns = c;
  ev.events = EPOLLIN;
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
    die("epoll_ctl");
  return c;
}

static void
conn_free(Conn *c)
{
  if (c->kind == K_STREAM) {
    for (int i = 0; i < n_stream_clients; i++)
      if (stream_clients[i] == c) {
        stream_clients[i] = stream_clients[--n_stream_clients];
        break;
      }
  }
  if (c->dead)
    return;
  if (c->prev)
    c->prev->next = c->next;
  else
    all_conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->dead = 1;
  c->next_dead = dead_list;
  dead_list = c;
}

static void
reap(void)
{
  while (dead_list) {
    Conn *c = dead_list;
    dead_list = c->next_dead;
    free(c->in);
    free(c->out);
    free(c);
  }
}

static void
set_want_out(Conn *c, int want)
{
  struct epoll_event ev = { 0 };

  if (c->want_out == want)
    return;
  c->want_out = want;
  ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
  ev.data.ptr = c;
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send what is buffered; 0, or -1 if the connection was freed. */
static int
flush_out(Conn *c)
{
  while (c->out_len > 0) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      if (errno == EINTR)
        continue;
      conn_free(c);
      return -1;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
  set_want_out(c, c->out_len > 0);
  return 0;
}

static int
append_out(Conn *c, const void *data, size_t len)
{
  if (c->out_len + len > OUT_MAX)
    return -1;
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + len)
      cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
      die("realloc");
    c->out = p;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
  return 0;
}

static int
listen_on(int port)
{
  struct sockaddr_in sa = { 0 };
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  socklen_t len = sizeof sa;

  if (fd < 0)
    die("socket");
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    die("bind");
  if (listen(fd, 128) < 0)
    die("listen");
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
    die("getsockname");
  return fd;
}

static int
bound_port(int fd)
{
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;

  getsockname(fd, (struct sockaddr *)&sa, &len);
  return ntohs(sa.sin_port);
}

static void
accept_all(Conn *l)
{
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;

    if (fd < 0)
      return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (l->kind == K_STREAM_LISTEN) {
      if (n_stream_clients == (int)(sizeof stream_clients / sizeof stream_clients[0])) {
        close(fd);
        continue;
      }
      stream_clients[n_stream_clients++] = conn_new(K_STREAM, fd, 0);
      if (paused && !paused_by_user) {
        paused = 0;
        pub_origin = now_s();
        pub_base = published;
      }
    } else {
      Conn *c = conn_new(K_MB, fd, l->dev);
      c->in = malloc(RXBUF);
      if (!c->in)
        die("malloc");
    }
  }
}

/* ---- readings ---------------------------------------------------------- */

/* Publish the readings due now: `ticks` of them when each tick carries one
   reading, else as many as the schedule says.  Each reading's time stamp is
   its scheduled time, so no two readings of a channel share one (wavelockd
   rightly ignores a repeated time stamp). */
static void
publish_due(uint64_t ticks)
{
  static char buf[1 << 20];
  double t = now_s(), total = rate_hz * n_lasers;
  unsigned long due, from = published;
  size_t len = 0;

  if (paused || n_stream_clients == 0)
    return;
  if (one_per_tick)
    due = published + (unsigned long)ticks;
  else
    due = pub_base + (unsigned long)((t - pub_origin) * total);
  if (due <= published)
    return;
  if (due - published > (unsigned long)n_lasers * 2) {
    /* We fell behind (the machine is loaded): skip rather than burst. */
    skipped += due - published - (unsigned long)n_lasers;
    published = due - (unsigned long)n_lasers;
    from = published;
  }
  for (unsigned long k = from; k < due && len < sizeof buf - 64; k++) {
    int i = (int)(k % (unsigned long)n_lasers);
    double v = setpoint_thz + noise_mhz * gauss() * 1e-6;
    double tms = (double)k / total * 1e3;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%d %.9f %.3f\n", i + 1, v, tms + 1.0);
    published = k + 1;
  }
  /* Record before sending: the daemon may answer before send() returns. */
  for (unsigned long k = from; k < published; k++) {
    Laser *L = &lasers[k % (unsigned long)n_lasers];
    if (L->count == RING) {
      L->head = (L->head + 1) % RING;
      L->count--;
      L->lost++;
    }
    if (L->count > 0)
      L->late++;
    L->ring[(L->head + L->count) % RING] = t;
    L->count++;
    L->sent++;
  }
  for (int i = n_stream_clients - 1; i >= 0; i--) {
    Conn *c = stream_clients[i];
    if (append_out(c, buf, len) < 0)
      stream_drops++;          /* the daemon stopped reading: drop this batch */
    else
      flush_out(c);
  }
}

/* ---- Modbus ------------------------------------------------------------- */

static void
on_write(int dev, int reg, double t)
{
  long li = (long)reg * n_devices + dev;
  Laser *L;

  if (li < 0 || li >= n_lasers)
    return;
  L = &lasers[li];
  if (L->count > 0) {
    double ts = L->ring[L->head];
    L->head = (L->head + 1) % RING;
    L->count--;
    L->matched++;
    add_sample(&L->lat, (t - ts) * 1e6);
  } else {
    L->unmatched++;
  }
  if (L->last_write > 0)
    add_sample(&L->per, (t - L->last_write) * 1e6);
  L->last_write = t;
}

static void
mb_exception(uint8_t *rsp, size_t *rlen, const uint8_t *req, int code)
{
  memcpy(rsp, req, 7);
  rsp[4] = 0;
  rsp[5] = 3;
  rsp[7] = (uint8_t)(req[7] | 0x80);
  rsp[8] = (uint8_t)code;
  *rlen = 9;
  mb_bad++;
}

/* Answer one complete request (len bytes at req). */
static void
mb_handle(Conn *c, const uint8_t *req, size_t len, double t)
{
  uint8_t rsp[260];
  size_t rlen = 0;
  uint16_t *r = regs[c->dev];
  int fn = req[7];
  int addr = len >= 10 ? (req[8] << 8) | req[9] : 0;

  mb_requests++;
  if (fn == 3 && len >= 12) {
    int n = (req[10] << 8) | req[11];
    if (n < 1 || n > 125 || addr + n > NREGS) {
      mb_exception(rsp, &rlen, req, 2);
    } else {
      memcpy(rsp, req, 8);
      rsp[8] = (uint8_t)(2 * n);
      for (int i = 0; i < n; i++) {
        rsp[9 + 2 * i] = (uint8_t)(r[addr + i] >> 8);
        rsp[10 + 2 * i] = (uint8_t)r[addr + i];
      }
      rlen = 9 + 2 * (size_t)n;
    }
  } else if (fn == 6 && len >= 12) {
    if (addr >= NREGS) {
      mb_exception(rsp, &rlen, req, 2);
    } else {
      r[addr] = (uint16_t)((req[10] << 8) | req[11]);
      on_write(c->dev, addr, t);
      memcpy(rsp, req, 12);
      rlen = 12;
    }
  } else if (fn == 16 && len >= 13) {
    int n = (req[10] << 8) | req[11];
    if (n < 1 || n > 123 || addr + n > NREGS || len < 13 + 2 * (size_t)n) {
      mb_exception(rsp, &rlen, req, 3);
    } else {
      /* One register per laser here: a request carrying several (the
         daemon's combined writes) is a write for each of their lasers. */
      for (int i = 0; i < n; i++) {
        r[addr + i] = (uint16_t)((req[13 + 2 * i] << 8) | req[14 + 2 * i]);
        on_write(c->dev, addr + i, t);
      }
      memcpy(rsp, req, 12);
      rlen = 12;
    }
  } else {
    mb_exception(rsp, &rlen, req, 1);
  }
  {
    size_t pdu = rlen - 6;
    rsp[4] = (uint8_t)(pdu >> 8);
    rsp[5] = (uint8_t)pdu;
  }
  append_out(c, rsp, rlen);
}

static void
mb_read(Conn *c)
{
  size_t off = 0;
  double t;
  ssize_t n = recv(c->fd, c->in + c->in_len, RXBUF - c->in_len, 0);

  t = now_s();
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    conn_free(c);
    return;
  }
  c->in_len += (size_t)n;
  while (c->in_len - off >= 8) {
    const uint8_t *p = c->in + off;
    size_t flen = 6 + (size_t)((p[4] << 8) | p[5]);
    if (flen < 8 || flen > 260) {
      conn_free(c);
      return;
    }
    if (c->in_len - off < flen)
      break;
    mb_handle(c, p, flen, t);
    off += flen;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  flush_out(c);
}

/* ---- commands ------------------------------------------------------------ */

static void
cmd_stats(void)
{
  Samples all_lat = { 0 }, all_per = { 0 };
  unsigned long sent = 0, matched = 0, unmatched = 0, lost = 0, late = 0;
  double worst_lat_p99 = 0, worst_per_p99 = 0, worst_lat_max = 0;
  double min_per_p01 = (double)INFINITY;
  char a[256], b[256];

  for (int i = 0; i < n_lasers; i++) {
    Laser *L = &lasers[i];
    for (size_t k = 0; k < L->lat.n; k++)
      add_sample(&all_lat, L->lat.v[k]);
    for (size_t k = 0; k < L->per.n; k++)
      add_sample(&all_per, L->per.v[k]);
    describe("lat", &L->lat, a, sizeof a);
    describe("per", &L->per, b, sizeof b);
    if (L->lat.n) {
      double p = pct(L->lat.v, L->lat.n, 99);
      if (p > worst_lat_p99) worst_lat_p99 = p;
      if (L->lat.v[L->lat.n - 1] > worst_lat_max) worst_lat_max = L->lat.v[L->lat.n - 1];
    }
    if (L->per.n) {
      double p = pct(L->per.v, L->per.n, 99), q = pct(L->per.v, L->per.n, 1);
      if (p > worst_per_p99) worst_per_p99 = p;
      if (q < min_per_p01) min_per_p01 = q;
    }
    if (n_lasers <= 64)
      printf("laser i=%d sent=%lu matched=%lu unmatched=%lu lost=%lu late=%lu %s %s\n", i,
             L->sent, L->matched, L->unmatched, L->lost, L->late, a, b);
    sent += L->sent;
    matched += L->matched;
    unmatched += L->unmatched;
    lost += L->lost;
    late += L->late;
  }
  describe("lat", &all_lat, a, sizeof a);
  describe("per", &all_per, b, sizeof b);
  printf("all lasers=%d sent=%lu matched=%lu unmatched=%lu lost=%lu late=%lu skipped=%lu "
         "stream_drops=%lu mb_requests=%lu mb_bad=%lu worst_lat_p99=%.1f worst_lat_max=%.1f "
         "worst_per_p99=%.1f min_per_p01=%.1f %s %s\n",
         n_lasers, sent, matched, unmatched, lost, late, skipped, stream_drops, mb_requests,
         mb_bad, worst_lat_p99, worst_lat_max, worst_per_p99,
         isfinite(min_per_p01) ? min_per_p01 : 0.0, a, b);
  printf("end\n");
  fflush(stdout);
  free(all_lat.v);
  free(all_per.v);
}

static void
cmd_reset(void)
{
  for (int i = 0; i < n_lasers; i++) {
    Laser *L = &lasers[i];
    L->sent = L->matched = L->unmatched = L->lost = L->late = 0;
    L->lat.n = L->per.n = 0;
    L->last_write = 0;
  }
  skipped = stream_drops = mb_requests = mb_bad = 0;
}

static int
command(char *line)
{
  if (strcmp(line, "reset") == 0)
    cmd_reset();
  else if (strcmp(line, "stats") == 0) {
    cmd_stats();
    return 0;
  } else if (strcmp(line, "pause") == 0) {
    paused = paused_by_user = 1;
  } else if (strcmp(line, "resume") == 0) {
    paused_by_user = 0;
    paused = n_stream_clients == 0;
    pub_origin = now_s();
    pub_base = published;
  } else if (strcmp(line, "quit") == 0) {
    return -1;
  } else if (line[0]) {
    printf("error unknown command\n");
    fflush(stdout);
    return 0;
  } else {
    return 0;
  }
  printf("ok\n");
  fflush(stdout);
  return 0;
}

static int
stdin_read(void)
{
  static char buf[4096];
  static size_t len;
  ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
  char *nl;

  if (n <= 0)
    return -1;
  len += (size_t)n;
  buf[len] = '\0';
  while ((nl = strchr(buf, '\n'))) {
    *nl = '\0';
    if (command(buf) < 0)
      return -1;
    len -= (size_t)(nl + 1 - buf);
    memmove(buf, nl + 1, len + 1);
  }
  if (len == sizeof buf - 1)
    len = 0;
  return 0;
}

/* ---- main ---------------------------------------------------------------- */

static void
usage(void)
{
  fprintf(stderr,
          "usage: plantd [--lasers N] [--devices D] [--rate HZ] [--setpoint THZ]\n"
          "              [--noise MHZ] [--tick-us US] [--stream-port P] [--seed N]\n"
          "Prints \"ready stream=<port> mb=<port>,<port>...\" and reads commands on stdin:\n"
          "reset, stats, pause, resume, quit.\n");
  exit(2);
}

int
main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "lasers", required_argument, NULL, 'n' },
    { "devices", required_argument, NULL, 'D' },
    { "rate", required_argument, NULL, 'r' },
    { "setpoint", required_argument, NULL, 's' },
    { "noise", required_argument, NULL, 'N' },
    { "tick-us", required_argument, NULL, 'T' },
    { "stream-port", required_argument, NULL, 'p' },
    { "seed", required_argument, NULL, 'S' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  int opt, stream_port = 0, tfd;
  struct epoll_event evs[64];
  struct itimerspec its = { { 0, 0 }, { 0, 0 } };
  double interval_s;

  while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (opt) {
    case 'n': n_lasers = atoi(optarg); break;
    case 'D': n_devices = atoi(optarg); break;
    case 'r': rate_hz = atof(optarg); break;
    case 's': setpoint_thz = atof(optarg); break;
    case 'N': noise_mhz = atof(optarg); break;
    case 'T': tick_us = atol(optarg); break;
    case 'p': stream_port = atoi(optarg); break;
    case 'S': rng_state = strtoull(optarg, NULL, 10) * 2654435761ULL + 1; break;
    default: usage();
    }
  }
  if (n_lasers < 1 || n_lasers > MAX_LASERS || n_devices < 1 || n_devices > MAX_DEVICES ||
      rate_hz <= 0 || (n_lasers + n_devices - 1) / n_devices > NREGS)
    usage();
  lasers = calloc((size_t)n_lasers, sizeof *lasers);
  if (!lasers)
    die("calloc");

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0)
    die("epoll_create1");
  conn_new(K_STDIN, 0, 0);

  /* Pacing: one reading per tick when they are at least 0.5 ms apart,
     else whatever is due every tick (default 1 ms). */
  interval_s = 1.0 / (rate_hz * n_lasers);
  if (tick_us <= 0) {
    one_per_tick = interval_s >= 0.0005;
    tick_us = one_per_tick ? (long)(interval_s * 1e6 + 0.5) : 1000;
  }
  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0)
    die("timerfd_create");
  its.it_interval.tv_sec = tick_us / 1000000;
  its.it_interval.tv_nsec = (tick_us % 1000000) * 1000;
  its.it_value = its.it_interval;
  if (timerfd_settime(tfd, 0, &its, NULL) < 0)
    die("timerfd_settime");
  conn_new(K_TIMER, tfd, 0);

  {
    Conn *sl = conn_new(K_STREAM_LISTEN, listen_on(stream_port), 0);
    printf("ready stream=%d mb=", bound_port(sl->fd));
    for (int d = 0; d < n_devices; d++) {
      Conn *ml = conn_new(K_MB_LISTEN, listen_on(0), d);
      printf("%s%d", d ? "," : "", bound_port(ml->fd));
    }
    printf(" tick_us=%ld\n", tick_us);
    fflush(stdout);
  }

  for (;;) {
    int n = epoll_wait(epfd, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      Conn *c = evs[i].data.ptr;
      if (c->dead)
        continue;
      switch (c->kind) {
      case K_STDIN:
        if (stdin_read() < 0) {
          while (all_conns)
            conn_free(all_conns);
          reap();
          for (int k = 0; k < n_lasers; k++) {
            free(lasers[k].lat.v);
            free(lasers[k].per.v);
          }
          free(lasers);
          close(epfd);
          return 0;
        }
        break;
      case K_TIMER: {
        uint64_t exp;
        if (read(c->fd, &exp, sizeof exp) > 0)
          publish_due(exp);
        break;
      }
      case K_STREAM_LISTEN:
      case K_MB_LISTEN:
        accept_all(c);
        break;
      case K_STREAM:
        if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
          conn_free(c);
          break;
        }
        if (evs[i].events & EPOLLIN) {
          char junk[512];
          ssize_t k = recv(c->fd, junk, sizeof junk, 0);
          if (k == 0 || (k < 0 && errno != EAGAIN)) {
            conn_free(c);
            break;
          }
        }
        if (evs[i].events & EPOLLOUT)
          flush_out(c);
        break;
      case K_MB:
        if (evs[i].events & EPOLLIN)
          mb_read(c);
        else if (evs[i].events & EPOLLOUT)
          flush_out(c);
        else if (evs[i].events & (EPOLLHUP | EPOLLERR))
          conn_free(c);
        break;
      }
    }
    reap();
  }
}
