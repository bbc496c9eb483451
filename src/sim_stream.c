/* sim_stream.c - wavelock-sim's wavemeter stream publisher (DESIGN.md section 5).
 *
 * A timer follows the wavemeter's schedule in simulated time; every due
 * reading goes to every connected client as "<channel> <THz> <time_ms>"
 * ("<channel> <code> <time_ms>" for an error code), time_ms being the
 * simulated time of the end of the exposure (an integer unless the schedule
 * has fractions of a millisecond).  A client whose output backs
 * up beyond STREAM_OUT_MAX loses lines (counted) rather than slowing anyone.
 */
#include "config.h"

#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "log.h"
#include "sim.h"
#include "util.h"

#define STREAM_OUT_MAX (64 * 1024)
#define STREAM_MAX_CLIENTS 64
#define STREAM_BATCH 5000        /* readings per timer run before yielding */

typedef struct StreamClient {
  struct bufferevent *bev;
  unsigned long dropped;
  char peer[80];                 /* host (up to 63) ":" port */
  struct StreamClient *next;
} StreamClient;

static struct evconnlistener *listener;
static struct event *tick;
static StreamClient *clients;
static int n_clients;
static struct {
  double mhz;
  int count;
} glitch[CNF_MAX_CHANNEL + 1];  /* readings still to publish wrong, per channel */

int
SIM_FormatReading(const PLT_Reading *r, char *buf, size_t len)
{
  double ms = r->t * 1e3;
  char stamp[32];

  /* whole milliseconds as an integer; finer schedules keep microseconds, so
     that two readings of one channel never carry the same time stamp */
  if (fabs(ms - round(ms)) < 1e-6)
    snprintf(stamp, sizeof stamp, "%lld", llround(ms));
  else
    snprintf(stamp, sizeof stamp, "%.3f", ms);
  if (r->value > 0.0)
    return snprintf(buf, len, "%d %.9f %s\n", r->channel, r->value, stamp);
  return snprintf(buf, len, "%d %d %s\n", r->channel, (int)r->value, stamp);
}

int
SIM_StreamClients(void)
{
  return n_clients;
}

static void
client_free(StreamClient *c)
{
  StreamClient **pp;

  for (pp = &clients; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  n_clients--;
  log_debug("stream: client %s gone (%lu lines dropped)", c->peer, c->dropped);
  bufferevent_free(c->bev);
  free(c);
}

static void
client_read(struct bufferevent *bev, void *arg)
{
  /* the stream is one-way: discard whatever the client sends */
  evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
    client_free(arg);
}

static void
peer_name(const struct sockaddr *sa, char *buf, size_t len)
{
  char host[64] = "?";
  int port = 0;

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

    evutil_inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    port = ntohs(sin->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

    evutil_inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    port = ntohs(sin6->sin6_port);
  }
  snprintf(buf, len, "%s:%d", host, port);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
  StreamClient *c;

  if (n_clients >= STREAM_MAX_CLIENTS) {
    log_warn("stream: too many clients, closing a new one");
    evutil_closesocket(fd);
    return;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    evutil_closesocket(fd);
    return;
  }
  c->bev = bufferevent_socket_new(SIM.base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!c->bev) {
    evutil_closesocket(fd);
    free(c);
    return;
  }
  peer_name(sa, c->peer, sizeof c->peer);
  bufferevent_setcb(c->bev, client_read, NULL, client_event, c);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  c->next = clients;
  clients = c;
  n_clients++;
  log_debug("stream: client %s connected", c->peer);
}

int
SIM_StreamGlitch(int channel, double mhz, int count)
{
  int used = 0;

  for (int i = 0; i < SIM.cfg->n_lasers; i++)
    used |= SIM.cfg->lasers[i].channel == channel;
  for (int i = 0; i < SIM.cfg->sim.n_references; i++)
    used |= SIM.cfg->sim.references[i].channel == channel;
  if (!used || channel < 1 || channel > CNF_MAX_CHANNEL)
    return -1;
  glitch[channel].mhz = mhz;
  glitch[channel].count = count;
  return 0;
}

static void
publish(const PLT_Reading *r0)
{
  char line[128];
  PLT_Reading g = *r0;
  const PLT_Reading *r = r0;
  int n;

  if (r0->value > 0.0 && r0->channel >= 1 && r0->channel <= CNF_MAX_CHANNEL &&
      glitch[r0->channel].count > 0) {
    glitch[r0->channel].count--;
    g.value += glitch[r0->channel].mhz * 1e-6;
    if (!(g.value > 0.0))
      g.value = 1e-6;             /* still a frequency, however wrong */
    r = &g;
    log_info("wavemeter channel %d: glitch reading %.9f THz (%+.1f MHz off)", r->channel,
             r->value, glitch[r0->channel].mhz);
  }
  n = SIM_FormatReading(r, line, sizeof line);

  SIM.readings++;
  for (StreamClient *c = clients; c; c = c->next) {
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (evbuffer_get_length(out) > STREAM_OUT_MAX) {
      if (c->dropped++ == 0)
        log_warn("stream: client %s does not keep up: dropping lines", c->peer);
      continue;
    }
    bufferevent_write(c->bev, line, (size_t)n);
  }
}

/* Publish due readings (at most max); returns how many. */
static int
pump(double t, int max)
{
  PLT_Reading r;
  int n = 0;

  while (n < max && PLT_NextReadingTime(SIM.wm) <= t && PLT_TakeReading(SIM.wm, &r) == 0) {
    publish(&r);
    n++;
  }
  return n;
}

void
SIM_StreamPump(double t)
{
  pump(t, 1 << 30);
}

static void
schedule(double delay_s)
{
  struct timeval tv = UTL_Timeval(delay_s, 3600.0);

  evtimer_add(tick, &tv);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
  double t = SIM_Time();
  double next;

  if (pump(t, STREAM_BATCH) >= STREAM_BATCH) {
    schedule(0.0);                /* far behind: let the loop breathe */
    return;
  }
  next = PLT_NextReadingTime(SIM.wm);
  if (isinf(next))
    return;
  schedule((next - t) / SIM.speed);
}

int
SIM_StreamInit(void)
{
  char host[256], name[300];
  int port;

  if (CNF_ParseHostPort(SIM.cfg->wavemeter.address, host, sizeof host, &port) < 0) {
    log_error("wavemeter.address: not host:port: %s", SIM.cfg->wavemeter.address);
    return -1;
  }
  listener = SIM_Listen(host, port, on_accept, NULL, "wavemeter stream");
  if (!listener)
    return -1;
  SIM_ListenerName(listener, name, sizeof name);
  log_info("wavemeter stream on %s", name);
  tick = evtimer_new(SIM.base, on_tick, NULL);
  if (!tick)
    return -1;
  on_tick(-1, 0, NULL);
  return 0;
}

void
SIM_StreamFini(void)
{
  while (clients)
    client_free(clients);
  if (tick)
    event_free(tick);
  tick = NULL;
  if (listener)
    evconnlistener_free(listener);
  listener = NULL;
}
