/* loadgen.c - a load generator for line protocols (wavelockd's, or a plain
 * line echo), one thread, epoll, many connections.
 *
 * Request mode (default): each of CONNS connections keeps DEPTH copies of
 * REQUEST outstanding for DURATION seconds and times each one from the
 * send() of the request to the arrival of its final line.  With the
 * wavelock framing (the default) a connection first waits for the "* "
 * greeting, a response is any number of data lines closed by a line
 * beginning with "OK" or "ERR", and "* " event lines are skipped; with
 * --echo every line read is one complete response.  Prints one line:
 *
 *   conns=16 depth=1 request=ping reqs=... secs=... rps=... p50_us=... p99_us=...
 *   max_us=... mean_us=... errors=... lines=...
 *
 * (errors: ERR responses, refused or dropped connections; lines: all lines
 * read, so lines/reqs is the response size.)  Requests answered during the
 * first WARMUP seconds are not counted.
 *
 * Hold mode (--hold): open CONNS connections (each sends --send LINE first
 * if given, e.g. "subscribe", and waits for its OK), print
 * "held n=<open> failed=<n>" once every connection is settled, then keep
 * reading and discarding until stdin reaches EOF or DURATION has passed;
 * finally print "lines=<events read> dropped_conns=<n>".  This measures the
 * daemon's memory per idle or per subscribed connection.
 *
 *   loadgen [-h HOST] -p PORT [-c CONNS] [-d SECONDS] [-w WARMUP] [-D DEPTH]
 *           [-r REQUEST] [--echo] [--hold [--send LINE]]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INBUF 65536
#define MAX_DEPTH 64

enum { C_CONNECTING, C_GREETING, C_RUNNING, C_WAIT_OK, C_HELD, C_DEAD };

typedef struct {
  int fd;
  int state;
  char in[INBUF];
  size_t in_len;
  double sent[MAX_DEPTH];      /* send times of outstanding requests (FIFO) */
  int head, outstanding;
} Conn;

static const char *host = "127.0.0.1";
static int port, n_conns = 1, depth = 1, echo_mode, hold_mode;
static double duration = 5.0, warmup = 0.5;
static char request[1100] = "ping\n";
static size_t request_len = 5;
static char send_line[1100];
static size_t send_len;

static int epfd;
static Conn *conns;
static double t_start, t_measure, t_end;
static int stopping;
static unsigned long reqs, errors, lines, dropped_conns, failed_conns;
static int settled, held;
static float *samples;
static size_t n_samples, cap_samples;

static double
now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
die(const char *what)
{
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void
add_sample(double us)
{
  if (n_samples == cap_samples) {
    size_t cap = cap_samples ? cap_samples * 2 : 65536;
    float *p = realloc(samples, cap * sizeof *p);
    if (!p)
      die("realloc");
    samples = p;
    cap_samples = cap;
  }
  samples[n_samples++] = (float)us;
}

static int
cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

static double
pct(double p)
{
  size_t k;

  if (n_samples == 0)
    return 0.0;
  k = (size_t)ceil(p / 100.0 * (double)n_samples);
  if (k < 1)
    k = 1;
  return (double)samples[k - 1];
}

static void
conn_close(Conn *c, int failed)
{
  if (c->state == C_DEAD)
    return;
  if (failed) {
    if (c->state == C_CONNECTING || c->state == C_GREETING || c->state == C_WAIT_OK)
      failed_conns++;
    else
      dropped_conns++;
    errors++;
  }
  if (c->state == C_CONNECTING || c->state == C_GREETING || c->state == C_WAIT_OK)
    settled++;
  else if (c->state == C_HELD)
    held--;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->state = C_DEAD;
}

static int
send_all(Conn *c, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        /* Rare with small requests: wait for room. */
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
        continue;
      }
      conn_close(c, 1);
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static void
send_request(Conn *c)
{
  double t = now_s();

  c->sent[(c->head + c->outstanding) % MAX_DEPTH] = t;
  c->outstanding++;
  send_all(c, request, request_len);
}

static void
start_requests(Conn *c)
{
  c->state = C_RUNNING;
  for (int i = 0; i < depth && c->state == C_RUNNING; i++)
    send_request(c);
}

static void
became_ready(Conn *c)
{
  if (hold_mode) {
    if (send_len) {
      c->state = C_WAIT_OK;
      send_all(c, send_line, send_len);
      return;
    }
    c->state = C_HELD;
    held++;
    settled++;
    return;
  }
  start_requests(c);
}

static void
response_done(Conn *c, int is_err)
{
  double t = now_s();

  if (c->outstanding == 0)
    return;                       /* unsolicited: ignore */
  if (t >= t_measure && t < t_end) {
    reqs++;
    if (is_err)
      errors++;
    add_sample((t - c->sent[c->head]) * 1e6);
  }
  c->head = (c->head + 1) % MAX_DEPTH;
  c->outstanding--;
  if (!stopping)
    send_request(c);
}

static void
handle_line(Conn *c, const char *line, size_t n)
{
  int final, is_err;

  if (t_measure <= now_s())
    lines++;
  if (echo_mode) {
    if (c->state == C_RUNNING)
      response_done(c, 0);
    return;
  }
  if (n >= 2 && line[0] == '*' && line[1] == ' ') {
    if (c->state == C_GREETING)
      became_ready(c);
    return;
  }
  is_err = n >= 3 && memcmp(line, "ERR", 3) == 0;
  final = (n >= 2 && memcmp(line, "OK", 2) == 0 && (n == 2 || line[2] == ' ')) || is_err;
  if (!final)
    return;
  if (c->state == C_GREETING) {
    conn_close(c, 1);             /* e.g. "ERR 429 too many connections" */
    return;
  }
  if (c->state == C_WAIT_OK) {
    if (is_err) {
      conn_close(c, 1);
      return;
    }
    c->state = C_HELD;
    held++;
    settled++;
    return;
  }
  if (c->state == C_RUNNING)
    response_done(c, is_err);
}

static void
conn_read(Conn *c)
{
  for (;;) {
    ssize_t n = recv(c->fd, c->in + c->in_len, INBUF - c->in_len, 0);
    size_t off = 0;
    char *nl;

    if (n == 0) {
      conn_close(c, !stopping);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      conn_close(c, !stopping);
      return;
    }
    c->in_len += (size_t)n;
    while (c->state != C_DEAD && (nl = memchr(c->in + off, '\n', c->in_len - off))) {
      size_t len = (size_t)(nl - (c->in + off));
      if (len > 0 && c->in[off + len - 1] == '\r')
        len--;
      handle_line(c, c->in + off, len);
      off = (size_t)(nl - c->in) + 1;
    }
    if (c->state == C_DEAD)
      return;
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->in_len == INBUF)
      c->in_len = 0;              /* an absurd line: forget it */
    if ((size_t)n < INBUF / 2)
      return;
  }
}

static void
conn_open(Conn *c)
{
  struct sockaddr_in sa = { 0 };
  struct epoll_event ev = { 0 };
  int one = 1;

  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    die("socket");
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "loadgen: %s: not an IPv4 address\n", host);
    exit(2);
  }
  c->state = C_CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
    die("connect");
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
    die("epoll_ctl");
}

static void
conn_connected(Conn *c)
{
  struct epoll_event ev = { 0 };
  int err = 0;
  socklen_t len = sizeof err;

  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) {
    conn_close(c, 1);
    return;
  }
  ev.events = EPOLLIN;
  ev.data.ptr = c;
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  if (echo_mode)
    became_ready(c);
  else
    c->state = C_GREETING;
}

static void
usage(void)
{
  fprintf(stderr,
          "usage: loadgen [-h HOST] -p PORT [-c CONNS] [-d SECONDS] [-w WARMUP] [-D DEPTH]\n"
          "               [-r REQUEST] [--echo] [--hold [--send LINE]]\n");
  exit(2);
}

static void
set_line(char *dst, size_t *len, const char *src)
{
  size_t n = strlen(src);

  if (n > 1024) {
    fprintf(stderr, "loadgen: request too long\n");
    exit(2);
  }
  memcpy(dst, src, n);
  dst[n] = '\n';
  *len = n + 1;
}

int
main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "echo", no_argument, NULL, 'E' },
    { "hold", no_argument, NULL, 'H' },
    { "send", required_argument, NULL, 'S' },
    { NULL, 0, NULL, 0 }
  };
  struct epoll_event evs[256];
  struct rlimit rl;
  int opt;

  while ((opt = getopt_long(argc, argv, "h:p:c:d:w:D:r:", opts, NULL)) != -1) {
    switch (opt) {
    case 'h': host = optarg; break;
    case 'p': port = atoi(optarg); break;
    case 'c': n_conns = atoi(optarg); break;
    case 'd': duration = atof(optarg); break;
    case 'w': warmup = atof(optarg); break;
    case 'D': depth = atoi(optarg); break;
    case 'r': set_line(request, &request_len, optarg); break;
    case 'E': echo_mode = 1; break;
    case 'H': hold_mode = 1; break;
    case 'S': set_line(send_line, &send_len, optarg); break;
    default: usage();
    }
  }
  if (port <= 0 || n_conns < 1 || depth < 1 || depth > MAX_DEPTH || duration <= 0)
    usage();
  signal(SIGPIPE, SIG_IGN);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n_conns + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  conns = calloc((size_t)n_conns, sizeof *conns);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!conns || epfd < 0)
    die("setup");
  if (hold_mode) {
    struct epoll_event ev = { 0 };
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;           /* stdin */
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
  }

  t_start = now_s();
  t_measure = t_start + warmup;
  t_end = t_measure + duration;
  for (int i = 0; i < n_conns; i++)
    conn_open(&conns[i]);

  int announced = 0;
  for (;;) {
    double t = now_s();
    int timeout_ms, n;

    if (hold_mode && !announced && settled >= n_conns) {
      printf("held n=%d failed=%lu\n", held, failed_conns);
      fflush(stdout);
      announced = 1;
      t_measure = t;
      t_end = t + duration;
    }
    if (t >= t_end)
      break;
    timeout_ms = (int)((t_end - t) * 1000.0) + 1;
    if (timeout_ms > 100)
      timeout_ms = 100;
    n = epoll_wait(epfd, evs, 256, timeout_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      Conn *c = evs[i].data.ptr;

      if (!c) {
        char junk[256];
        ssize_t k = read(0, junk, sizeof junk);
        if (k == 0 || (k < 0 && errno != EAGAIN)) {
          t_end = now_s();
          epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        }
        continue;
      }
      if (c->state == C_DEAD)
        continue;
      if (c->state == C_CONNECTING) {
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
          conn_connected(c);
        if (c->state == C_DEAD || !(evs[i].events & EPOLLIN))
          continue;
      }
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_read(c);
    }
  }
  stopping = 1;

  if (hold_mode) {
    printf("lines=%lu dropped_conns=%lu\n", lines, dropped_conns);
  } else {
    double mean = 0.0, secs = t_end - t_measure;
    for (size_t i = 0; i < n_samples; i++)
      mean += (double)samples[i];
    if (n_samples)
      mean /= (double)n_samples;
    qsort(samples, n_samples, sizeof *samples, cmp_float);
    request[request_len - 1] = '\0';
    for (char *q = request; *q; q++)
      if (*q == ' ' || *q == '\t')
        *q = '+';               /* keep the output one key=value per word */
    printf("conns=%d depth=%d request=%s reqs=%lu secs=%.3f rps=%.0f p50_us=%.1f p99_us=%.1f "
           "max_us=%.1f mean_us=%.1f errors=%lu lines=%lu failed_conns=%lu dropped_conns=%lu\n",
           n_conns, depth, request, reqs, secs, (double)reqs / secs, pct(50), pct(99),
           n_samples ? (double)samples[n_samples - 1] : 0.0, mean, errors, lines, failed_conns,
           dropped_conns);
  }
  fflush(stdout);
  for (int i = 0; i < n_conns; i++)
    if (conns[i].state != C_DEAD)
      close(conns[i].fd);
  return 0;
}
