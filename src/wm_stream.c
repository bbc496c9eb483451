/* wm_stream.c - the `stream` wavemeter backend: a TCP client of the reading
 * stream of DESIGN.md section 5, on the event loop thread.
 *
 * Lines are "<channel> <value> [<time_ms>]".  Malformed lines are counted and
 * skipped; a line longer than WM_LINE_MAX bytes is counted and discarded up
 * to its newline, so a broken publisher cannot make us buffer without bound.
 * The connection is re-established with back-off (100 ms doubling to 5 s,
 * with jitter) whenever it fails, is closed, or stays silent for
 * STREAM_IDLE_S seconds (a half-open connection after the publisher's host
 * went away).  The connect itself is done by hand (non-blocking socket plus
 * an EV_WRITE event with a timeout) so every outcome arrives the same way.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "util.h"
#include "wm_int.h"
#include "prio.h"

#define WM_LINE_MAX 256
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_S 5
#define STREAM_IDLE_S 30
#define STABLE_S 2.0            /* a connection this old resets the back-off */

typedef struct {
  WM_Backend hdr;
  struct event_base *base;
  WM_ReadingFn fn;
  void *arg;
  char address[128];
  struct sockaddr_storage sa;
  socklen_t salen;

  int fd;                       /* connecting socket, -1 if none */
  struct event *connect_ev;     /* EV_WRITE on fd while connecting */
  struct event *retry_ev;       /* back-off timer */
  struct bufferevent *bev;      /* the connection once established */
  int connected;
  int discarding;               /* dropping the rest of an over-long line */
  int backoff_ms;
  double connected_at;
  int ever_connected;
  int warned;                   /* a failure has been logged since the last success */
  unsigned int seed;

  unsigned long readings, errors, malformed, overlong, reconnects, connects;
} Stream;

static void start_connect(Stream *s);

static void
schedule_retry(Stream *s)
{
  double u = (double)rand_r(&s->seed) / ((double)RAND_MAX + 1.0);
  double ms = s->backoff_ms * (1.0 - 0.25 * u);
  struct timeval tv = UTL_Timeval(ms / 1000.0, 3600.0);

  event_add(s->retry_ev, &tv);
  s->backoff_ms *= 2;
  if (s->backoff_ms > BACKOFF_MAX_MS)
    s->backoff_ms = BACKOFF_MAX_MS;
}

static void
connection_lost(Stream *s, const char *why)
{
  if (s->bev) {
    bufferevent_free(s->bev);
    s->bev = NULL;
  }
  if (s->connect_ev) {
    event_free(s->connect_ev);
    s->connect_ev = NULL;
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  if (s->connected) {
    log_warn("wavemeter stream %s: connection lost (%s)", s->address, why);
    if (UTL_Now() - s->connected_at >= STABLE_S)
      s->backoff_ms = BACKOFF_MIN_MS;
    s->warned = 1;
  } else if (!s->warned) {
    log_warn("wavemeter stream %s: cannot connect (%s), retrying", s->address, why);
    s->warned = 1;
  } else {
    log_debug("wavemeter stream %s: cannot connect (%s)", s->address, why);
  }
  s->connected = 0;
  s->discarding = 0;
  schedule_retry(s);
}

static void
deliver_line(Stream *s, const char *line, size_t len)
{
  WM_Reading r;

  if (WM_ParseLine(line, len, &r) < 0) {
    s->malformed++;
    log_debug("wavemeter stream: malformed line skipped");
    return;
  }
  r.rx_s = UTL_Now();
  s->readings++;
  if (r.value <= 0)
    s->errors++;
  s->fn(&r, s->arg);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
  Stream *s = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  char line[WM_LINE_MAX + 2];

  PRI_EnterBev(bev);
  for (;;) {
    size_t eol_len = 0, avail = evbuffer_get_length(in);
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);

    if (p.pos < 0) {
      /* No newline yet: give up on this line once it cannot fit any more
         (WM_LINE_MAX bytes plus a possible CR). */
      if (s->discarding) {
        evbuffer_drain(in, avail);
      } else if (avail > WM_LINE_MAX + 1) {
        s->overlong++;
        s->discarding = 1;
        evbuffer_drain(in, avail);
      }
      return;
    }
    if (s->discarding) {
      s->discarding = 0;
      evbuffer_drain(in, (size_t)p.pos + eol_len);
      continue;
    }
    if ((size_t)p.pos > WM_LINE_MAX + 1) {
      s->overlong++;
      evbuffer_drain(in, (size_t)p.pos + eol_len);
      continue;
    }
    evbuffer_remove(in, line, (size_t)p.pos);
    evbuffer_drain(in, eol_len);
    {
      size_t n = (size_t)p.pos;

      if (n > 0 && line[n - 1] == '\r')
        n--;
      if (n > WM_LINE_MAX) {
        s->overlong++;
        continue;
      }
      if (n == 0)
        continue;          /* an empty line is not a reading, nor an error */
      deliver_line(s, line, n);
    }
    if (!s->bev)           /* the callback destroyed nothing we use, but be safe */
      return;
  }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
  Stream *s = arg;
  char buf[96];

  if (what & BEV_EVENT_EOF)
    connection_lost(s, "closed by the publisher");
  else if (what & BEV_EVENT_TIMEOUT)
    connection_lost(s, "idle timeout");
  else if (what & BEV_EVENT_ERROR)
    connection_lost(s, strerror_r(EVUTIL_SOCKET_ERROR(), buf, sizeof buf));
}

static void
established(Stream *s)
{
  struct timeval idle = { STREAM_IDLE_S, 0 };
  int fd = s->fd;

  s->fd = -1;
  s->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!s->bev) {
    close(fd);
    connection_lost(s, "out of memory");
    return;
  }
  bufferevent_setcb(s->bev, read_cb, NULL, event_cb, s);
  PRI_SetUrgentBev(s->bev);
  bufferevent_set_timeouts(s->bev, &idle, NULL);
  bufferevent_enable(s->bev, EV_READ);
  s->connected = 1;
  s->connected_at = UTL_Now();
  s->connects++;
  if (s->ever_connected)
    s->reconnects++;
  s->ever_connected = 1;
  s->warned = 0;
  log_info("wavemeter stream %s: connected", s->address);
}

static void
connect_cb(evutil_socket_t fd, short what, void *arg)
{
  Stream *s = arg;
  int err = 0;
  socklen_t len = sizeof err;
  char buf[96];

  event_free(s->connect_ev);
  s->connect_ev = NULL;
  if (what & EV_TIMEOUT) {
    connection_lost(s, "connect timeout");
    return;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err) {
    connection_lost(s, strerror_r(err, buf, sizeof buf));
    return;
  }
  established(s);
}

static void
start_connect(Stream *s)
{
  struct timeval tv = { CONNECT_TIMEOUT_S, 0 };
  char buf[96];
  int one = 1;

  s->fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) {
    connection_lost(s, strerror_r(errno, buf, sizeof buf));
    return;
  }
  setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (connect(s->fd, (struct sockaddr *)&s->sa, s->salen) == 0) {
    established(s);
    return;
  }
  if (errno != EINPROGRESS) {
    connection_lost(s, strerror_r(errno, buf, sizeof buf));
    return;
  }
  s->connect_ev = event_new(s->base, s->fd, EV_WRITE, connect_cb, s);
  if (!s->connect_ev || event_add(s->connect_ev, &tv) < 0)
    connection_lost(s, "cannot watch the socket");
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
  start_connect(arg);
}

static void
stream_status(const WM_Backend *wm, char *buf, size_t len)
{
  const Stream *s = (const Stream *)wm;

  snprintf(buf, len, "backend=stream address=%s connected=%d readings=%lu errors=%lu "
           "malformed=%lu overlong=%lu reconnects=%lu",
           s->address, s->connected, s->readings, s->errors, s->malformed,
           s->overlong, s->reconnects);
}

static void
stream_destroy(WM_Backend *wm)
{
  Stream *s = (Stream *)wm;

  if (s->bev)
    bufferevent_free(s->bev);
  if (s->connect_ev)
    event_free(s->connect_ev);
  if (s->fd >= 0)
    close(s->fd);
  if (s->retry_ev)
    event_free(s->retry_ev);
  free(s);
}

/* The publisher's address, resolved (the first address); 0, or -1 with err. */
static int
resolve_address(const CNF_Wavemeter *cfg, struct sockaddr_storage *sa, socklen_t *salen,
                char *err, size_t errlen)
{
  struct addrinfo hints, *res = NULL;
  char host[256], service[16];
  int port = 0, rc;

  if (CNF_ParseHostPort(cfg->address, host, sizeof host, &port) < 0 ||
      port < 1 || port > 65535) {
    snprintf(err, errlen, "wavemeter.address: '%s' is not host:port", cfg->address);
    return -1;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(service, sizeof service, "%d", port);
  rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0 || !res) {
    snprintf(err, errlen, "wavemeter.address: cannot resolve '%s': %s", host,
             rc ? gai_strerror(rc) : "no address");
    if (res)
      freeaddrinfo(res);
    return -1;
  }
  memcpy(sa, res->ai_addr, res->ai_addrlen);
  *salen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

int
WM_StreamCheck(const CNF_Wavemeter *cfg, char *err, size_t errlen)
{
  struct sockaddr_storage sa;
  socklen_t salen;

  return resolve_address(cfg, &sa, &salen, err, errlen);
}

static int
stream_start(WM_Backend *wm, struct event_base *base, char *err, size_t errlen)
{
  Stream *s = (Stream *)wm;

  s->base = base;
  s->retry_ev = evtimer_new(base, retry_cb, s);
  if (!s->retry_ev) {
    snprintf(err, errlen, "wavemeter: cannot create an event");
    return -1;
  }
  start_connect(s);
  return 0;
}

WM_Backend *
WM_StreamPrepare(const CNF_Wavemeter *cfg, WM_ReadingFn fn, void *arg,
                 char *err, size_t errlen)
{
  struct sockaddr_storage sa;
  socklen_t salen;
  Stream *s;

  if (resolve_address(cfg, &sa, &salen, err, errlen) < 0)
    return NULL;
  s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "wavemeter: out of memory");
    return NULL;
  }
  s->hdr.name = "stream";
  s->hdr.start = stream_start;
  s->hdr.destroy = stream_destroy;
  s->hdr.status = stream_status;
  s->fn = fn;
  s->arg = arg;
  s->fd = -1;
  s->backoff_ms = BACKOFF_MIN_MS;
  s->seed = (unsigned int)getpid() ^ (unsigned int)(uintptr_t)s;
  UTL_Strlcpy(s->address, cfg->address, sizeof s->address);
  memcpy(&s->sa, &sa, salen);
  s->salen = salen;
  return &s->hdr;
}
