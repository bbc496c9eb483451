/* http.c - the HTTP server: the dashboard, the JSON API, server-sent
 * events and /metrics on the daemon's event loop (see http.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <jansson.h>

#include "ctl.h"
#include "daemon.h"
#include "http.h"
#include "jsonfmt.h"
#include "log.h"
#include "metrics.h"
#include "mqtt.h"
#include "srv.h"
#include "util.h"

#define COOKIE "wlsession"
#define QUEUE_MAX 1024          /* events waiting for the flush */
#define PING_S 15               /* a comment line to idle readers */
#define HTP_BATCH_MS 10         /* events reach readers at most this much later */

typedef struct Reader {
  struct HTP_Server *s;
  struct evhttp_request *req;
  struct evhttp_connection *evcon;
  struct Reader *prev, *next;
  unsigned long dropped;        /* events dropped since the last notice */
  int congested;
} Reader;

typedef struct {
  char id[65];                  /* hex; "" = free */
  char secret[sizeof ((CNF_Token *)0)->secret];
  double expires;               /* UTL_Now() */
} Session;

/* Failed token attempts of one peer address (as the text protocol's auth). */
#define MAX_PEERS 64
typedef struct {
  char addr[64];                /* "" = free */
  int failures;
  double blocked_until, last;   /* UTL_Now() */
} Peer;

typedef struct {
  char laser[CNF_NAME_MAX];
  double t;
  int state;                    /* 0: a reading; 1: a state change */
  int from;
} Queued;

struct HTP_Server {
  struct event_base *base;
  struct evhttp *http;
  WLD_Daemon *d;
  CNF_Server srv;               /* tokens */
  CNF_Http cfg;
  int ports[CNF_MAX_LISTEN];
  int n_ports;
  Reader *readers;
  int n_readers;
  Session sessions[HTP_MAX_SESSIONS];
  Peer peers[MAX_PEERS];
  Queued queue[QUEUE_MAX];
  int n_queued;
  struct event *flush_ev, *ping_ev;
  unsigned long requests, dropped, closed;
};

/* ---- replies ------------------------------------------------------------- */

static void
common_headers(struct evhttp_request *req, const char *type)
{
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);

  if (type)
    evhttp_add_header(h, "Content-Type", type);
  evhttp_add_header(h, "Cache-Control", "no-store");
  evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(h, "X-Frame-Options", "DENY");
  evhttp_add_header(h, "Referrer-Policy", "no-referrer");
}

static const char *
reason(int code)
{
  switch (code) {
  case 200: return "OK";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 413: return "Payload Too Large";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 503: return "Service Unavailable";
  default: return "Internal Server Error";
  }
}

static void
reply_json(struct evhttp_request *req, int code, json_t *o)
{
  struct evbuffer *b = evbuffer_new();
  char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

  common_headers(req, "application/json");
  if (b && text) {
    evbuffer_add(b, text, strlen(text));
    evbuffer_add(b, "\n", 1);
  }
  evhttp_send_reply(req, code, reason(code), b);
  free(text);
  json_decref(o);
  if (b)
    evbuffer_free(b);
}

static void
reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static void
reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
  char text[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (code == 401)
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer realm=\"wavelock\"");
  if (code == 405)
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, POST, PUT, DELETE");
  reply_json(req, code, json_pack("{s:s}", "error", text));
}

/* ---- authentication ------------------------------------------------------- */

static const CNF_Token *
find_token(const HTP_Server *s, const char *secret)
{
  const CNF_Token *found = NULL;

  /* Compare with every token, in time independent of where they differ. */
  for (int i = 0; i < s->srv.n_tokens; i++)
    if (SRV_TokenEqual(s->srv.tokens[i].secret, secret))
      found = &s->srv.tokens[i];
  return found;
}

static Session *
find_session(HTP_Server *s, const char *id)
{
  double now = UTL_Now();
  Session *found = NULL;

  for (int i = 0; i < HTP_MAX_SESSIONS; i++) {
    Session *x = &s->sessions[i];

    if (!x->id[0])
      continue;
    if (x->expires < now) {
      memset(x, 0, sizeof *x);
      continue;
    }
    if (SRV_TokenEqual(x->id, id))
      found = x;
  }
  return found;
}

/* The value of cookie name in a Cookie header, into out. */
static int
cookie_value(const char *header, const char *name, char *out, size_t len)
{
  size_t n = strlen(name);

  for (const char *p = header; p && *p;) {
    while (*p == ' ' || *p == ';')
      p++;
    if (strncmp(p, name, n) == 0 && p[n] == '=') {
      size_t m = strcspn(p + n + 1, "; ");

      if (m == 0 || m >= len)
        return -1;
      memcpy(out, p + n + 1, m);
      out[m] = '\0';
      return 0;
    }
    p = strchr(p, ';');
  }
  return -1;
}

static Peer *
peer_of(HTP_Server *s, struct evhttp_request *req, int create)
{
  char *addr = NULL;
  ev_uint16_t port = 0;
  Peer *p = NULL, *old = NULL;

  evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
  if (!addr)
    return NULL;
  for (int i = 0; i < MAX_PEERS; i++) {
    if (strcmp(s->peers[i].addr, addr) == 0)
      return &s->peers[i];
    if (!old || s->peers[i].last < old->last)
      old = &s->peers[i];
  }
  if (create && old) {
    p = old;
    memset(p, 0, sizeof *p);
    UTL_Strlcpy(p->addr, addr, sizeof p->addr);
  }
  return p;
}

/* A wrong token from this peer: after SRV_AUTH_FREE_TRIES, token checks are
   refused (429) for SRV_AUTH_DELAY_S, doubling up to SRV_AUTH_DELAY_MAX_S. */
static void
auth_failed(HTP_Server *s, struct evhttp_request *req)
{
  Peer *p = peer_of(s, req, 1);
  double delay = SRV_AUTH_DELAY_S;

  if (!p)
    return;
  p->last = UTL_Now();
  if (++p->failures < SRV_AUTH_FREE_TRIES)
    return;
  for (int i = SRV_AUTH_FREE_TRIES; i < p->failures && delay < SRV_AUTH_DELAY_MAX_S; i++)
    delay *= 2;
  if (delay > SRV_AUTH_DELAY_MAX_S)
    delay = SRV_AUTH_DELAY_MAX_S;
  p->blocked_until = p->last + delay;
  log_warn("http: %s: %d failed token attempts: token checks refused for %.0f s", p->addr,
           p->failures, delay);
}

static int
auth_blocked(HTP_Server *s, struct evhttp_request *req)
{
  Peer *p = peer_of(s, req, 0);

  return p && p->blocked_until > UTL_Now();
}

static void
auth_ok(HTP_Server *s, struct evhttp_request *req)
{
  Peer *p = peer_of(s, req, 0);

  if (p)
    memset(p, 0, sizeof *p);
}

/* The role of a request: 0, or 401 for a wrong token, 429 while this
   peer's token checks are refused. */
static int
request_role(HTP_Server *s, struct evhttp_request *req, CNF_Role *role)
{
  struct evkeyvalq *h = evhttp_request_get_input_headers(req);
  const char *auth = evhttp_find_header(h, "Authorization");
  const char *cookie = evhttp_find_header(h, "Cookie");
  char id[80];

  *role = CNF_ROLE_NONE;
  if (s->srv.n_tokens == 0) {
    *role = CNF_ROLE_CONTROL;
    return 0;
  }
  if (auth) {
    const CNF_Token *t;

    if (auth_blocked(s, req))
      return 429;
    if (strncasecmp(auth, "Bearer ", 7) != 0) {
      auth_failed(s, req);
      return 401;
    }
    t = find_token(s, auth + 7);
    if (!t) {
      auth_failed(s, req);
      return 401;
    }
    auth_ok(s, req);
    *role = t->role;
    return 0;
  }
  if (cookie && cookie_value(cookie, COOKIE, id, sizeof id) == 0) {
    Session *x = find_session(s, id);
    const CNF_Token *t = x ? find_token(s, x->secret) : NULL;

    if (t)
      *role = t->role;
  }
  return 0;
}

/* Host (and port) of a Host header a loopback name? */
static int
host_is_loopback(const char *host)
{
  char h[256];
  size_t n;

  if (!host)
    return 0;
  if (host[0] == '[') {
    n = strcspn(host, "]");
    if (host[n] != ']' || n - 1 >= sizeof h)
      return 0;
    memcpy(h, host + 1, n - 1);
    h[n - 1] = '\0';
  } else {
    n = strcspn(host, ":");
    if (n >= sizeof h)
      return 0;
    memcpy(h, host, n);
    h[n] = '\0';
  }
  return CNF_IsLoopback(h);
}

/* A request that changes something: from the page's own origin, and
   JSON (a form or a "simple" cross-site request cannot send that). */
static int
csrf_ok(struct evhttp_request *req, char *why, size_t len)
{
  struct evkeyvalq *h = evhttp_request_get_input_headers(req);
  const char *type = evhttp_find_header(h, "Content-Type");
  const char *origin = evhttp_find_header(h, "Origin");
  const char *site = evhttp_find_header(h, "Sec-Fetch-Site");
  const char *host = evhttp_find_header(h, "Host");

  if (!type || strncasecmp(type, "application/json", 16) != 0 ||
      (type[16] && type[16] != ';' && type[16] != ' ')) {
    snprintf(why, len, "Content-Type must be application/json");
    return 415;
  }
  if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0) {
    snprintf(why, len, "cross-site request refused");
    return 403;
  }
  if (origin) {
    if (!host || strncmp(origin, "http://", 7) != 0 || strcmp(origin + 7, host) != 0) {
      snprintf(why, len, "cross-origin request refused");
      return 403;
    }
  }
  return 0;
}

/* ---- the event stream ----------------------------------------------------- */

static void
reader_unlink(Reader *r)
{
  HTP_Server *s = r->s;

  if (r->prev)
    r->prev->next = r->next;
  else
    s->readers = r->next;
  if (r->next)
    r->next->prev = r->prev;
  s->n_readers--;
}

static void
reader_closed(struct evhttp_connection *evcon, void *arg)
{
  Reader *r = arg;

  if (r->congested)
    r->s->closed++;
  reader_unlink(r);
  free(r);
}

static void
reader_send(Reader *r, const char *text, size_t len)
{
  struct bufferevent *bev = evhttp_connection_get_bufferevent(r->evcon);
  size_t queued = bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
  struct evbuffer *b;

  if (r->congested && queued <= HTP_EVENTS_LOW) {
    char notice[96];
    int n = snprintf(notice, sizeof notice, "event: dropped\ndata: {\"n\":%lu}\n\n", r->dropped);

    b = evbuffer_new();
    if (b) {
      evbuffer_add(b, notice, (size_t)n);
      evhttp_send_reply_chunk(r->req, b);
      evbuffer_free(b);
    }
    r->congested = 0;
    r->dropped = 0;
  }
  if (r->congested || queued + len > HTP_EVENTS_MAX) {
    r->congested = 1;
    r->dropped++;
    r->s->dropped++;
    return;
  }
  b = evbuffer_new();
  if (!b)
    return;
  evbuffer_add(b, text, len);
  evhttp_send_reply_chunk(r->req, b);
  evbuffer_free(b);
}

/* Append "event: <event>" with o as its data to b (takes o). */
static void
add_event(struct evbuffer *b, const char *event, json_t *o)
{
  char *text;

  if (!o)
    return;
  text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
  json_decref(o);
  if (!text)
    return;
  evbuffer_add_printf(b, "event: %s\ndata: %s\n\n", event, text);
  free(text);
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
  HTP_Server *s = arg;
  int n = s->n_queued;
  struct evbuffer *batch;

  s->n_queued = 0;
  if (!s->readers)
    return;
  /* One chunk per reader for everything queued since the last flush. */
  batch = evbuffer_new();
  if (!batch)
    return;
  for (int i = 0; i < n; i++) {
    const Queued *q = &s->queue[i];
    CTL_Laser *l = CTL_FindLaser(s->d->ctl, q->laser);

    if (!l)
      continue;
    if (q->state)
      add_event(batch, "state", JSF_State(l, (LSR_StateId)q->from, q->t));
    else if (l->have_reading)
      add_event(batch, "reading", JSF_Reading(s->d, l, &l->last, q->t));
  }
  if (evbuffer_get_length(batch) > 0) {
    size_t len = evbuffer_get_length(batch);
    const char *flat = (const char *)evbuffer_pullup(batch, -1);

    for (Reader *r = s->readers, *next; r; r = next) {
      next = r->next;
      reader_send(r, flat, len);
    }
  }
  evbuffer_free(batch);
}

static void
enqueue(HTP_Server *s, const CTL_Laser *l, int state, int from, double t)
{
  Queued *q;

  if (!s || !s->readers)
    return;
  if (s->n_queued >= QUEUE_MAX) {
    s->dropped++;
    return;
  }
  q = &s->queue[s->n_queued++];
  UTL_Strlcpy(q->laser, l->cfg.name, sizeof q->laser);
  q->state = state;
  q->from = from;
  q->t = t;
  if (s->n_queued == 1) {
    /* Batched: readers get one chunk per HTP_BATCH_MS, sent after the
       cycles of these readings have started. */
    struct timeval tv = { 0, HTP_BATCH_MS * 1000 };

    event_add(s->flush_ev, &tv);
  }
}

void
HTP_OnReading(HTP_Server *s, const CTL_Laser *l, double t)
{
  enqueue(s, l, 0, 0, t);
}

void
HTP_OnState(HTP_Server *s, const CTL_Laser *l, int from, double t)
{
  enqueue(s, l, 1, from, t);
}

static void
ping_cb(evutil_socket_t fd, short what, void *arg)
{
  HTP_Server *s = arg;

  for (Reader *r = s->readers, *next; r; r = next) {
    next = r->next;
    reader_send(r, ": ping\n\n", 8);
  }
}

static void
serve_events(HTP_Server *s, struct evhttp_request *req)
{
  struct evhttp_connection *evcon = evhttp_request_get_connection(req);
  struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  struct timeval stall = { HTP_STALL_S, 0 };
  struct evbuffer *b;
  Reader *r;

  if (s->n_readers >= s->cfg.max_event_readers) {
    reply_error(req, 429, "too many event-stream readers (http.max_event_readers = %d)",
                s->cfg.max_event_readers);
    return;
  }
  r = calloc(1, sizeof *r);
  if (!r) {
    reply_error(req, 500, "out of memory");
    return;
  }
  r->s = s;
  r->req = req;
  r->evcon = evcon;
  evhttp_add_header(h, "Content-Type", "text/event-stream");
  evhttp_add_header(h, "Cache-Control", "no-cache");
  evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
  evhttp_send_reply_start(req, 200, "OK");
  if (bev) {
    int sndbuf = SRV_SOCKET_SNDBUF;

    setsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    /* No request comes on this connection any more: only writing counts,
       and a reader that takes nothing for HTP_STALL_S is closed. */
    bufferevent_set_timeouts(bev, NULL, &stall);
  }
  evhttp_connection_set_closecb(evcon, reader_closed, r);
  r->next = s->readers;
  if (s->readers)
    s->readers->prev = r;
  s->readers = r;
  s->n_readers++;
  b = evbuffer_new();
  if (b) {
    evbuffer_add_printf(b, "retry: 2000\n: wavelock %s\n\n", PACKAGE_VERSION);
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);
  }
}

/* ---- handlers ------------------------------------------------------------- */

static void
serve_page(struct evhttp_request *req)
{
  struct evbuffer *b = evbuffer_new();
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);

  common_headers(req, "text/html; charset=utf-8");
  /* Nothing from outside the daemon, and no framing by other sites. */
  evhttp_add_header(h, "Content-Security-Policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                    "form-action 'none'; frame-ancestors 'none'");
  if (b)
    evbuffer_add_reference(b, HTP_Page, strlen(HTP_Page), NULL, NULL);
  evhttp_send_reply(req, 200, "OK", b);
  if (b)
    evbuffer_free(b);
}

static void
serve_metrics(HTP_Server *s, struct evhttp_request *req)
{
  struct evbuffer *b = evbuffer_new();

  common_headers(req, "text/plain; version=0.0.4; charset=utf-8");
  if (b)
    MET_Write(b, s->d, s->n_readers, s->dropped);
  evhttp_send_reply(req, 200, "OK", b);
  if (b)
    evbuffer_free(b);
}

static void
serve_status(HTP_Server *s, struct evhttp_request *req, CNF_Role role)
{
  json_t *o = JSF_Status(s->d), *h = json_object();

  if (!o) {
    json_decref(h);
    reply_error(req, 500, "out of memory");
    return;
  }
  json_object_set_new(h, "event_readers", json_integer(s->n_readers));
  json_object_set_new(h, "events_dropped", json_integer((json_int_t)s->dropped));
  json_object_set_new(o, "http", h);
  json_object_set_new(o, "role", json_string(SRV_RoleName(role)));
  json_object_set_new(o, "tokens", json_boolean(s->srv.n_tokens > 0));
  /* What the control endpoints can do here (hold and resume come with the
     commands of the same name). */
  json_object_set_new(o, "actions", json_pack("{s:b,s:b,s:b,s:b}", "lock", 1, "unlock", 1,
                                              "hold", SRV_HasCommand(s->d->srv, "hold"),
                                              "resume", SRV_HasCommand(s->d->srv, "resume")));
  /* The other instances on the MQTT broker (read-only; mqtt.remote). */
  if (s->d->mqtt)
    MQT_AddRemote(s->d->mqtt, o);
  reply_json(req, 200, o);
}

/* The body as a NUL-terminated copy in buf (evhttp has bounded it). */
static size_t
body_text(struct evhttp_request *req, char *buf, size_t len)
{
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);

  if (n >= len)
    n = len - 1;
  evbuffer_copyout(in, buf, n);
  buf[n] = '\0';
  return n;
}

static void
new_session_id(char *id, size_t len)
{
  unsigned char raw[32];
  size_t got = 0;

  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);

    if (n <= 0) {
      if (n < 0 && errno == EINTR)
        continue;
      /* Never a predictable session: an empty id is refused by the caller. */
      id[0] = '\0';
      return;
    }
    got += (size_t)n;
  }
  for (size_t i = 0; i < sizeof raw && 2 * i + 2 < len; i++)
    snprintf(id + 2 * i, 3, "%02x", raw[i]);
}

static void
serve_session(HTP_Server *s, struct evhttp_request *req)
{
  char body[HTP_MAX_BODY + 1], token[sizeof ((CNF_Token *)0)->secret], err[200], cookie[256];
  struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
  const CNF_Token *t;
  Session *slot = NULL;
  size_t n;

  if (evhttp_request_get_command(req) == EVHTTP_REQ_DELETE) {
    const char *c = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
    char id[80];
    Session *x;

    if (c && cookie_value(c, COOKIE, id, sizeof id) == 0 && (x = find_session(s, id)) != NULL)
      memset(x, 0, sizeof *x);
    evhttp_add_header(oh, "Set-Cookie", COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    common_headers(req, NULL);
    evhttp_send_reply(req, 204, "No Content", NULL);
    return;
  }
  if (s->srv.n_tokens == 0) {
    reply_json(req, 200, json_pack("{s:s,s:b}", "role", "control", "tokens", 0));
    return;
  }
  n = body_text(req, body, sizeof body);
  if (HTP_ParseToken(body, n, token, sizeof token, err, sizeof err) != 0) {
    reply_error(req, 400, "%s", err);
    return;
  }
  if (auth_blocked(s, req)) {
    reply_error(req, 429, "too many failed attempts: try again later");
    return;
  }
  t = find_token(s, token);
  if (!t) {
    auth_failed(s, req);
    reply_error(req, 401, "wrong token");
    return;
  }
  auth_ok(s, req);
  for (int i = 0; i < HTP_MAX_SESSIONS; i++) {
    Session *x = &s->sessions[i];

    if (!x->id[0] || x->expires < UTL_Now()) {
      slot = x;
      break;
    }
    if (!slot || x->expires < slot->expires)
      slot = x;                 /* the oldest goes */
  }
  memset(slot, 0, sizeof *slot);
  new_session_id(slot->id, sizeof slot->id);
  if (!slot->id[0]) {
    reply_error(req, 500, "no random numbers for a session");
    return;
  }
  UTL_Strlcpy(slot->secret, t->secret, sizeof slot->secret);
  slot->expires = UTL_Now() + s->cfg.session_s;
  snprintf(cookie, sizeof cookie, COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d",
           slot->id, s->cfg.session_s);
  evhttp_add_header(oh, "Set-Cookie", cookie);
  reply_json(req, 200, json_pack("{s:s,s:b}", "role", SRV_RoleName(t->role), "tokens", 1));
}

/* Run a text-protocol request line as a client of this role. */
static void
run_command(HTP_Server *s, struct evhttp_request *req, CNF_Role role, char *line)
{
  struct evbuffer *out = evbuffer_new();
  char err[600];
  int code;

  if (!out) {
    reply_error(req, 500, "out of memory");
    return;
  }
  code = SRV_Exec(s->d->srv, role, "http", line, out, err, sizeof err);
  evbuffer_free(out);
  if (code == 0) {
    common_headers(req, NULL);
    evhttp_send_reply(req, 204, "No Content", NULL);
  } else {
    reply_error(req, code, "%s", err);
  }
}

static void
serve_action(HTP_Server *s, struct evhttp_request *req, const HTP_Route *rt, CNF_Role role)
{
  char line[128];

  if (!CTL_FindLaser(s->d->ctl, rt->laser)) {
    reply_error(req, 404, "unknown laser '%s'", rt->laser);
    return;
  }
  snprintf(line, sizeof line, "%s %s", rt->action, rt->laser);
  run_command(s, req, role, line);
}

static void
serve_setpoint(HTP_Server *s, struct evhttp_request *req, const HTP_Route *rt, CNF_Role role)
{
  char body[HTP_MAX_BODY + 1], value[64], unit[16], err[200], line[160];
  size_t n = body_text(req, body, sizeof body);

  if (!CTL_FindLaser(s->d->ctl, rt->laser)) {
    reply_error(req, 404, "unknown laser '%s'", rt->laser);
    return;
  }
  if (HTP_ParseSetpoint(body, n, value, sizeof value, unit, sizeof unit, err, sizeof err) != 0) {
    reply_error(req, 422, "%s", err);
    return;
  }
  snprintf(line, sizeof line, "setpoint %s %s %s", rt->laser, value, unit);
  run_command(s, req, role, line);
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
  HTP_Server *s = arg;
  const char *uri = evhttp_request_get_uri(req);
  struct evhttp_uri *u = uri ? evhttp_uri_parse_with_flags(uri, 0) : NULL;
  const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
  int method = (int)evhttp_request_get_command(req);
  HTP_Route rt;
  CNF_Role role, need;
  char why[128];
  int code;

  s->requests++;
  if (!u || !evhttp_uri_get_path(u)) {
    if (u)
      evhttp_uri_free(u);
    reply_error(req, 400, "malformed request target");
    return;
  }
  code = HTP_Match(method, evhttp_uri_get_path(u), &rt);
  evhttp_uri_free(u);
  if (code != 200) {
    reply_error(req, code, "%s", code == 404 ? "no such resource" :
                code == 405 ? "method not allowed here" : "malformed path");
    return;
  }
  /* Without tokens only loopback may connect; a page of another site
     reached through a name that resolves to 127.0.0.1 (DNS rebinding)
     still names its own host. */
  if (s->srv.n_tokens == 0 && !host_is_loopback(host)) {
    reply_error(req, 403, "Host must be a loopback address (no server.tokens configured)");
    return;
  }
  if (method & (HTP_POST | HTP_PUT | HTP_DELETE)) {
    code = csrf_ok(req, why, sizeof why);
    if (code) {
      reply_error(req, code, "%s", why);
      return;
    }
  }
  code = request_role(s, req, &role);
  if (code == 429) {
    reply_error(req, 429, "too many failed attempts: try again later");
    return;
  }
  if (code != 0) {
    reply_error(req, 401, "invalid token");
    return;
  }
  switch (rt.id) {
  case HTP_R_PAGE:
  case HTP_R_SESSION:
    need = CNF_ROLE_NONE;
    break;
  case HTP_R_ACTION:
  case HTP_R_SETPOINT:
    need = CNF_ROLE_CONTROL;
    break;
  default:
    need = CNF_ROLE_MONITOR;
    break;
  }
  if (role < need) {
    if (role == CNF_ROLE_NONE)
      reply_error(req, 401, "authentication required (Authorization: Bearer <token>, or a "
                  "session from POST /api/session)");
    else
      reply_error(req, 403, "not permitted for role %s", SRV_RoleName(role));
    return;
  }
  switch (rt.id) {
  case HTP_R_PAGE: serve_page(req); break;
  case HTP_R_STATUS: serve_status(s, req, role); break;
  case HTP_R_EVENTS: serve_events(s, req); break;
  case HTP_R_METRICS: serve_metrics(s, req); break;
  case HTP_R_SESSION: serve_session(s, req); break;
  case HTP_R_ACTION: serve_action(s, req, &rt, role); break;
  case HTP_R_SETPOINT: serve_setpoint(s, req, &rt, role); break;
  }
}

/* ---- life cycle ------------------------------------------------------------ */

static int
bind_one(HTP_Server *s, const char *text, char *err, size_t errlen)
{
  char host[256];
  int port;
  struct evhttp_bound_socket *bs;
  struct sockaddr_storage ss;
  ev_socklen_t len = sizeof ss;

  if (CNF_ParseHostPort(text, host, sizeof host, &port) != 0) {
    snprintf(err, errlen, "http.listen: \"%s\": expected host:port", text);
    return -1;
  }
  bs = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
  if (!bs) {
    snprintf(err, errlen, "http: cannot listen on %s: %s", text, strerror(errno));
    return -1;
  }
  s->ports[s->n_ports] = port;
  if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET)
      s->ports[s->n_ports] = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
      s->ports[s->n_ports] = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  evutil_make_socket_closeonexec(evhttp_bound_socket_get_fd(bs));
  s->n_ports++;
  return 0;
}

HTP_Server *
HTP_Create(struct event_base *base, const CNF_Config *cfg, void *d, char *err, size_t errlen)
{
  HTP_Server *s;
  struct timeval ping = { PING_S, 0 };

  err[0] = '\0';
  if (cfg->http.n_listen == 0)
    return NULL;
  s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "http: out of memory");
    return NULL;
  }
  s->base = base;
  s->d = d;
  s->srv = cfg->server;
  s->cfg = cfg->http;
  s->http = evhttp_new(base);
  s->flush_ev = event_new(base, -1, 0, flush_cb, s);
  s->ping_ev = event_new(base, -1, EV_PERSIST, ping_cb, s);
  if (!s->http || !s->flush_ev || !s->ping_ev) {
    snprintf(err, errlen, "http: out of memory");
    HTP_Destroy(s);
    return NULL;
  }
  evhttp_set_max_headers_size(s->http, HTP_MAX_HEADERS);
  evhttp_set_max_body_size(s->http, HTP_MAX_BODY);
  evhttp_set_timeout(s->http, HTP_STALL_S);
  evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
  evhttp_set_gencb(s->http, request_cb, s);
  for (int i = 0; i < cfg->http.n_listen; i++)
    if (bind_one(s, cfg->http.listen[i], err, errlen) != 0) {
      HTP_Destroy(s);
      return NULL;
    }
  event_add(s->ping_ev, &ping);
  return s;
}

int
HTP_BoundPort(const HTP_Server *s, int i)
{
  return s && i >= 0 && i < s->n_ports ? s->ports[i] : -1;
}

int
HTP_ListenCount(const HTP_Server *s)
{
  return s ? s->cfg.n_listen : 0;
}

const char *
HTP_ListenAddress(const HTP_Server *s, int i)
{
  return s && i >= 0 && i < s->cfg.n_listen ? s->cfg.listen[i] : "";
}

int
HTP_Reconfigure(HTP_Server *s, const CNF_Config *cfg)
{
  int changed;

  if (!s)
    return cfg->http.n_listen > 0;
  changed = cfg->http.n_listen != s->cfg.n_listen ||
            memcmp(cfg->http.listen, s->cfg.listen, sizeof s->cfg.listen) != 0;
  s->srv = cfg->server;
  s->cfg.max_event_readers = cfg->http.max_event_readers;
  s->cfg.session_s = cfg->http.session_s;
  /* Sessions whose token is gone end now. */
  for (int i = 0; i < HTP_MAX_SESSIONS; i++)
    if (s->sessions[i].id[0] && !find_token(s, s->sessions[i].secret))
      memset(&s->sessions[i], 0, sizeof s->sessions[i]);
  return changed;
}

void
HTP_GetStats(const HTP_Server *s, HTP_Stats *st)
{
  memset(st, 0, sizeof *st);
  if (!s)
    return;
  st->readers = s->n_readers;
  st->requests = s->requests;
  st->events_dropped = s->dropped;
  st->readers_closed = s->closed;
}

void
HTP_Destroy(HTP_Server *s)
{
  if (!s)
    return;
  /* evhttp_free closes the readers' connections: their close callbacks
     free them. */
  if (s->http)
    evhttp_free(s->http);
  while (s->readers) {
    Reader *r = s->readers;

    reader_unlink(r);
    free(r);
  }
  if (s->flush_ev)
    event_free(s->flush_ev);
  if (s->ping_ev)
    event_free(s->ping_ev);
  free(s);
}
