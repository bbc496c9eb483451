/* srv.c - the line-based text protocol server (DESIGN.md section 3).
 *
 * Everything here runs on the event loop thread.  Each connection is a
 * bufferevent; its input goes through the telnet filter into a line buffer
 * (lines), is framed with evbuffer_search_eol(EVBUFFER_EOL_CRLF), split into
 * words and dispatched to a built-in or to the daemon's table.
 *
 * Bounds: the line buffer never holds more than SRV_LINE_MAX plus one read
 * chunk (longer lines are answered 413 and discarded up to the next newline);
 * requests are not read while a client's output is at SRV_OUTPUT_PAUSE or
 * more; events to a subscriber are dropped (and counted) rather than let its
 * output pass SRV_OUTPUT_MAX.
 *
 * A connection goes OPEN -> FLUSH (after quit, EOF or a 429: answer nothing
 * more, wait for the output to drain) -> LINGER (write side shut down, read
 * and discard until EOF or a short timeout, so unread requests cannot turn
 * the close into a reset that loses the last answer) -> freed.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "conf.h"
#include "log.h"
#include "srv.h"
#include "util.h"

#define MAX_WORDS (SRV_LINE_MAX / 2 + 1)
#define READ_CHUNK 4096
#define FLUSH_TIMEOUT_S 10     /* no output progress while closing: give up */
#define LINGER_S 2             /* after shutdown(SHUT_WR), wait for EOF this long */
#define MAX_REJECTING 64       /* 429 connections flushing at once; more: plain close */
#define ACCEPT_RETRY_S 1       /* after an accept error (EMFILE...) pause listening */
#define LISTEN_BACKLOG 1024

typedef enum { CONN_OPEN = 0, CONN_FLUSH, CONN_LINGER } ConnState;

struct SRV_Conn {
  SRV_Server *s;
  SRV_Conn *prev, *next;
  struct bufferevent *bev;
  struct evbuffer *lines;      /* filtered input not yet framed */
  struct evbuffer *held;       /* events published during a response */
  struct event *timer;
  char peer[INET6_ADDRSTRLEN + 10];
  char name[SRV_NAME_MAX];     /* set by iam; default "conn<N>@<peer>" */
  int named;                   /* name was set by iam */
  ConnState state;
  int rejected;                /* a 429 connection: not counted as a client */
  int telnet;                  /* SRV_StripTelnet state */
  int discarding;              /* dropping the rest of a too-long line */
  int paused;                  /* not reading requests: output over the bound */
  int eof;                     /* the peer has shut down its side */
  int in_response, final_sent;
  double line_since;           /* when the pending partial line began; 0 none */
  double last_request;         /* when the last line arrived */
  double auth_since;           /* when it became unauthenticated (accept, reload) */
  double linger_until;
  double armed;                /* deadline the timer is set for; 0 none */
  CNF_Role role;
  char secret[sizeof ((CNF_Token *)0)->secret]; /* token authenticated with */
  int auth_failures;
  double auth_blocked_until;
  int subscribed, sub_all;
  SRV_Conn *sub_prev, *sub_next; /* in the server's subscriber list */
  unsigned char *mask;
  int mask_n;
  int congested;               /* dropping events until drained to SRV_OUTPUT_LOW */
  unsigned long dropped;
  SRV_Pending *pending;        /* a deferred answer: requests wait for it */
  int in_handler;              /* inside a command handler now */
  struct evbuffer *capture;    /* SRV_Exec: the answer goes here (no socket);
                                  a socket's handler: the server's batch */
  int final_code;              /* SRV_Exec: the ERR code (0 for OK) */
  char *err_out;               /* SRV_Exec: the ERR text goes here */
  size_t err_len;
  /* A virtual connection (SRV_VirtualNew): no socket, answers go to vout. */
  int virt;
  struct evbuffer *vout;
  SRV_VirtualDone vdone;
  void *varg;
};

struct SRV_Pending {
  SRV_Conn *c;                 /* NULL once the connection has closed */
};

struct SRV_Server {
  struct event_base *base;
  CNF_Server cfg;
  const SRV_Command **cmds;    /* built-ins and table, sorted by name */
  int n_cmds;
  void *ctx;
  struct evconnlistener **listeners;
  int n_listeners;
  struct event *relisten;
  SRV_Conn *conns;
  SRV_Conn *subs;              /* subscribers, so publishing skips the rest */
  int n_clients, n_rejecting, n_subscribers;
  size_t out_peak;
  unsigned long events_dropped, rejected_total;
  unsigned long conn_seq;      /* numbers connections for their default names */
  /* A handler's answer is gathered here and moved to the socket's output
     at once: each add to a bufferevent's output runs its callback (and
     takes the base's lock), which for a 512-line `status` was most of the
     cost of sending it. */
  struct evbuffer *batch;
  int batch_busy;
};

static void builtin_auth(SRV_Conn *c, int argc, char **argv, void *ctx);
static void builtin_help(SRV_Conn *c, int argc, char **argv, void *ctx);
static void builtin_ping(SRV_Conn *c, int argc, char **argv, void *ctx);
static void builtin_quit(SRV_Conn *c, int argc, char **argv, void *ctx);
static void builtin_version(SRV_Conn *c, int argc, char **argv, void *ctx);

/* Always ours. */
static const SRV_Command fixed_cmds[] = {
  { "auth", CNF_ROLE_NONE, 1, 1, "auth <token>", "authenticate this connection", builtin_auth },
  { "help", CNF_ROLE_NONE, 0, 1, "help [command]", "list commands, or one command's usage", builtin_help },
  { "quit", CNF_ROLE_NONE, 0, 0, "quit", "close the connection", builtin_quit },
};

/* Defaults the daemon's table may replace. */
static const SRV_Command default_cmds[] = {
  { "ping", CNF_ROLE_NONE, 0, 0, "ping", "check the connection", builtin_ping },
  { "version", CNF_ROLE_NONE, 0, 0, "version", "versions of wavelock and the protocol", builtin_version },
};

/* ------------------------------------------------------------------------ */
/* Pure helpers */

enum { TN_DATA = 0, TN_IAC, TN_OPT, TN_SB, TN_SB_IAC };

#define TEL_IAC 255
#define TEL_SB 250
#define TEL_SE 240
#define TEL_WILL 251
#define TEL_DONT 254

size_t
SRV_StripTelnet(unsigned char *buf, size_t len, int *state)
{
  size_t out = 0;
  int st = *state;

  for (size_t i = 0; i < len; i++) {
    unsigned char b = buf[i];

    switch (st) {
    case TN_DATA:
      if (b == TEL_IAC)
        st = TN_IAC;
      else
        buf[out++] = b;
      break;
    case TN_IAC:
      if (b == TEL_IAC) {
        buf[out++] = b;             /* escaped 255: a literal data byte */
        st = TN_DATA;
      } else if (b >= TEL_WILL && b <= TEL_DONT) {
        st = TN_OPT;
      } else if (b == TEL_SB) {
        st = TN_SB;
      } else {
        st = TN_DATA;               /* two-byte command (NOP, AYT, IP, ...) */
      }
      break;
    case TN_OPT:
      st = TN_DATA;                 /* the option byte */
      break;
    case TN_SB:
      if (b == TEL_IAC)
        st = TN_SB_IAC;
      break;
    case TN_SB_IAC:
      st = b == TEL_SE ? TN_DATA : TN_SB;
      break;
    default:
      st = TN_DATA;
      break;
    }
  }
  *state = st;
  return out;
}

int
SRV_Split(char *line, char **argv, int max)
{
  int n = 0;
  char *p = line;

  for (;;) {
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '\0')
      return n;
    if (n >= max)
      return -1;
    argv[n++] = p;
    while (*p != '\0' && *p != ' ' && *p != '\t')
      p++;
    if (*p == '\0')
      return n;
    *p++ = '\0';
  }
}

int
SRV_TokenEqual(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  size_t n = la > lb ? la : lb;
  volatile unsigned char diff = la != lb;

  for (size_t i = 0; i < n; i++) {
    unsigned char x = i < la ? (unsigned char)a[i] : 0;
    unsigned char y = i < lb ? (unsigned char)b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

const char *
SRV_RoleName(CNF_Role role)
{
  switch (role) {
  case CNF_ROLE_MONITOR:
    return "monitor";
  case CNF_ROLE_CONTROL:
    return "control";
  default:
    return "any";
  }
}

/* ------------------------------------------------------------------------ */
/* Output */

static void conn_free(SRV_Conn *c, const char *why);
static void process_input(SRV_Conn *c);

/* Where a connection's answers go. */
static struct evbuffer *
conn_out(SRV_Conn *c)
{
  return c->virt ? c->vout : bufferevent_get_output(c->bev);
}

static void
note_peak(SRV_Conn *c)
{
  size_t n;

  if (c->capture || c->virt)
    return;
  n = evbuffer_get_length(bufferevent_get_output(c->bev));

  if (n > c->s->out_peak)
    c->s->out_peak = n;
}

/* Control characters (and DEL) would let text break the framing or a
   terminal: send them as '?'. */
void
SRV_Sanitize(char *text)
{
  for (unsigned char *p = (unsigned char *)text; *p; p++)
    if (*p < 32 || *p == 127)
      *p = '?';
}

/* A formatted line: in buf when it fits (every line but long help or
   status tables), else on the heap; fmt_free releases it. */
typedef struct {
  char buf[512];
  char *text;                     /* buf, the heap copy, or NULL (no memory) */
} Fmt;

static const char *vformat(Fmt *f, const char *fmt, va_list ap)
  __attribute__((format(printf, 2, 0)));

static const char *
vformat(Fmt *f, const char *fmt, va_list ap)
{
  va_list again;
  int n;

  f->text = f->buf;
  f->buf[0] = '\0';
  if (!fmt)
    return f->text;
  va_copy(again, ap);
  n = vsnprintf(f->buf, sizeof f->buf, fmt, ap);
  if (n >= (int)sizeof f->buf) {
    f->text = malloc((size_t)n + 1);
    if (f->text)
      vsnprintf(f->text, (size_t)n + 1, fmt, again);
  } else if (n < 0) {
    f->text = NULL;
  }
  va_end(again);
  if (f->text)
    SRV_Sanitize(f->text);
  return f->text;
}

static void
fmt_free(Fmt *f)
{
  if (f->text != f->buf)
    free(f->text);
  f->text = NULL;
}

static void
write_line(SRV_Conn *c, const char *a, const char *b)
{
  struct evbuffer *out = c->capture ? c->capture : conn_out(c);

  evbuffer_add(out, a, strlen(a));
  if (b)
    evbuffer_add(out, b, strlen(b));
  evbuffer_add(out, "\n", 1);
  note_peak(c);
}

static int
response_open(SRV_Conn *c, const char *what)
{
  if (c->state != CONN_OPEN)
    return 0;
  if (!c->in_response) {
    log_error("SRV: %s outside a request (client %s): dropped", what, c->peer);
    return 0;
  }
  if (c->final_sent) {
    log_error("SRV: %s after the final line (client %s): dropped", what, c->peer);
    return 0;
  }
  return 1;
}

/* A sanitized data line out (the checks of SRV_Data). */
static void
data_line(SRV_Conn *c, const char *text, size_t len)
{
  struct evbuffer *out = c->capture ? c->capture : conn_out(c);

  if (len == 0 || text[0] == '*' || strncmp(text, "OK", 2) == 0 ||
      strncmp(text, "ERR", 3) == 0) {
    log_error("SRV: data line '%.*s' is empty or begins with OK/ERR/*",
              (int)(len < 40 ? len : 40), text);
    evbuffer_add(out, "data=", 5);
  }
  evbuffer_add(out, text, len);
  evbuffer_add(out, "\n", 1);
  note_peak(c);
}

void
SRV_Data(SRV_Conn *c, const char *fmt, ...)
{
  va_list ap;
  Fmt f;
  const char *text;

  if (!response_open(c, "data line"))
    return;
  va_start(ap, fmt);
  text = vformat(&f, fmt, ap);
  va_end(ap);
  if (!text) {
    log_error("SRV: out of memory formatting a data line");
    return;
  }
  data_line(c, text, strlen(text));
  fmt_free(&f);
}

void
SRV_DataLine(SRV_Conn *c, const char *text, size_t len)
{
  if (!response_open(c, "data line"))
    return;
  data_line(c, text, len);
}

void
SRV_Ok(SRV_Conn *c, const char *fmt, ...)
{
  va_list ap;
  Fmt f;
  const char *text;

  if (!response_open(c, "OK"))
    return;
  va_start(ap, fmt);
  text = vformat(&f, fmt, ap);
  va_end(ap);
  c->final_sent = 1;
  if (text && text[0] != '\0')
    write_line(c, "OK ", text);
  else
    write_line(c, "OK", NULL);
  fmt_free(&f);
}

static void
send_err(SRV_Conn *c, int code, const char *text)
{
  char head[16];

  if (code < 100 || code > 599) {
    log_error("SRV: bad error code %d", code);
    code = 500;
  }
  snprintf(head, sizeof head, "ERR %d ", code);
  c->final_sent = 1;
  c->final_code = code;
  if (c->err_out)
    UTL_Strlcpy(c->err_out, text && text[0] ? text : "error", c->err_len);
  write_line(c, head, text && text[0] ? text : "error");
}

void
SRV_Err(SRV_Conn *c, int code, const char *fmt, ...)
{
  va_list ap;
  Fmt f;

  if (!response_open(c, "ERR"))
    return;
  va_start(ap, fmt);
  send_err(c, code, vformat(&f, fmt, ap));
  va_end(ap);
  fmt_free(&f);
}

CNF_Role
SRV_Role(const SRV_Conn *c)
{
  return c->role;
}

const char *
SRV_Peer(const SRV_Conn *c)
{
  return c->peer;
}

const char *
SRV_Name(const SRV_Conn *c)
{
  return c->name;
}

int
SRV_Named(const SRV_Conn *c)
{
  return c->named;
}

void
SRV_SetName(SRV_Conn *c, const char *name)
{
  if (!name || !name[0]) {      /* unnamed: the default name stays */
    c->named = 0;
    return;
  }
  UTL_Strlcpy(c->name, name, sizeof c->name);
  c->named = 1;
}

SRV_Server *
SRV_ConnServer(const SRV_Conn *c)
{
  return c->s;
}

/* ------------------------------------------------------------------------ */
/* Subscriptions */

void
SRV_Subscribe(SRV_Conn *c, int all, const unsigned char *mask, int n)
{
  unsigned char *copy = NULL;

  if (c->virt)
    return;                 /* no socket to stream to */

  if (!all && n > 0) {
    copy = malloc((size_t)n);
    if (!copy) {
      log_error("SRV: out of memory for a subscription");
      return;
    }
    memcpy(copy, mask, (size_t)n);
  }
  free(c->mask);
  c->mask = copy;
  c->mask_n = all ? 0 : n;
  c->sub_all = all != 0;
  if (!c->subscribed) {
    c->subscribed = 1;
    c->s->n_subscribers++;
    c->sub_prev = NULL;
    c->sub_next = c->s->subs;
    if (c->s->subs)
      c->s->subs->sub_prev = c;
    c->s->subs = c;
  }
}

void
SRV_Unsubscribe(SRV_Conn *c)
{
  if (c->subscribed) {
    c->subscribed = 0;
    c->s->n_subscribers--;
    if (c->sub_prev)
      c->sub_prev->sub_next = c->sub_next;
    else
      c->s->subs = c->sub_next;
    if (c->sub_next)
      c->sub_next->sub_prev = c->sub_prev;
    c->sub_prev = c->sub_next = NULL;
  }
  free(c->mask);
  c->mask = NULL;
  c->mask_n = 0;
  c->sub_all = 0;
}

void
SRV_RemapLasers(SRV_Server *s, const int *map, int n_old, int n_new)
{
  for (SRV_Conn *c = s->subs; c; c = c->sub_next) {
    unsigned char *copy;

    if (c->sub_all)
      continue;
    copy = calloc((size_t)n_new + 1, 1);
    if (!copy) {
      log_error("SRV: out of memory remapping a subscription");
      continue;
    }
    for (int i = 0; i < c->mask_n && i < n_old; i++)
      if (c->mask[i] && map[i] >= 0 && map[i] < n_new)
        copy[map[i]] = 1;
    free(c->mask);
    c->mask = copy;
    c->mask_n = n_new;
  }
}

static void
drop_event(SRV_Conn *c)
{
  c->congested = 1;
  c->dropped++;
  c->s->events_dropped++;
}

static void
deliver(SRV_Conn *c, const char *line, size_t len)
{
  size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));

  if (c->in_response) {
    /* Never inside a response: hold it until the final line is out.  The
       answer gathered so far counts too (c->capture: the batch). */
    size_t held = evbuffer_get_length(c->held) +
                  (c->capture ? evbuffer_get_length(c->capture) : 0);

    if (c->congested || out + held + len > SRV_OUTPUT_MAX)
      drop_event(c);
    else
      evbuffer_add(c->held, line, len);
    return;
  }
  if (c->congested || out + len > SRV_OUTPUT_MAX) {
    drop_event(c);
    return;
  }
  evbuffer_add(bufferevent_get_output(c->bev), line, len);
  note_peak(c);
}

void
SRV_Publish(SRV_Server *s, int laser, const char *fmt, ...)
{
  va_list ap;
  Fmt f;
  const char *text;
  char buf[sizeof f.buf + 4], *line = buf;
  size_t len;

  if (s->n_subscribers == 0)
    return;
  va_start(ap, fmt);
  text = vformat(&f, fmt, ap);
  va_end(ap);
  len = text ? strlen(text) + 3 : 0;      /* "* " text "\n" */
  if (text && len >= sizeof buf)
    line = malloc(len + 1);
  if (!text || !line) {
    fmt_free(&f);
    log_error("SRV: out of memory formatting an event");
    return;
  }
  line[0] = '*';
  line[1] = ' ';
  memcpy(line + 2, text, len - 3);
  line[len - 1] = '\n';
  line[len] = '\0';
  fmt_free(&f);

  for (SRV_Conn *c = s->subs; c; c = c->sub_next) {
    if (c->state != CONN_OPEN)
      continue;
    if (laser >= 0 && !c->sub_all &&
        (laser >= c->mask_n || !c->mask[laser]))
      continue;
    deliver(c, line, len);
  }
  if (line != buf)
    free(line);
}

int
SRV_ClientCount(const SRV_Server *s)
{
  return s->n_clients;
}

int
SRV_SubscriberCount(const SRV_Server *s)
{
  return s->n_subscribers;
}

void
SRV_GetStats(SRV_Server *s, SRV_Stats *st, int reset_peak)
{
  memset(st, 0, sizeof *st);
  st->clients = s->n_clients;
  st->subscribers = s->n_subscribers;
  for (SRV_Conn *c = s->conns; c; c = c->next) {
    size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));

    st->out_bytes += n;
    if (n > st->out_max)
      st->out_max = n;
  }
  st->out_peak = s->out_peak;
  st->events_dropped = s->events_dropped;
  st->rejected = s->rejected_total;
  if (reset_peak)
    s->out_peak = st->out_max;
}

/* ------------------------------------------------------------------------ */
/* Timers */

/* Tokens are configured, the connection has not authenticated, and it may
   not hold a slot for ever without (auth_timeout_s). */
static int
auth_pending(const SRV_Conn *c)
{
  const CNF_Server *cfg = &c->s->cfg;

  return cfg->n_tokens > 0 && cfg->auth_timeout_s > 0 && c->role == CNF_ROLE_NONE;
}

static void
arm_timer(SRV_Conn *c)
{
  const CNF_Server *cfg = &c->s->cfg;
  double next = 0.0, now, d;
  struct timeval tv;

  if (c->state == CONN_LINGER) {
    next = c->linger_until;
  } else if (c->state == CONN_OPEN) {
    if (cfg->line_timeout_s > 0 && c->line_since > 0.0)
      next = c->line_since + cfg->line_timeout_s;
    /* A subscriber may listen quietly for as long as it reads; a stuck one
       is caught by the bufferevent's write timeout. */
    if (cfg->idle_timeout_s > 0 && !c->subscribed) {
      d = c->last_request + cfg->idle_timeout_s;
      if (next == 0.0 || d < next)
        next = d;
    }
    if (auth_pending(c)) {
      d = c->auth_since + cfg->auth_timeout_s;
      if (next == 0.0 || d < next)
        next = d;
    }
  }
  if (next == 0.0 || (c->armed != 0.0 && c->armed <= next))
    return;                 /* a timer at or before next re-evaluates then */

  now = UTL_Now();
  d = next - now;
  tv = UTL_Timeval((d > 0.0 ? d : 0.0) + 0.001, 1e7);   /* 1 ms late, never early */
  event_add(c->timer, &tv);
  c->armed = next;
}

static void start_close(SRV_Conn *c);

/* Say why and close; 1 if c is gone already (nothing left to send). */
static int
close_with_notice(SRV_Conn *c, const char *notice, const char *why)
{
  write_line(c, notice, NULL);
  start_close(c);
  if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
    conn_free(c, why);
    return 1;
  }
  return 0;
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
  SRV_Conn *c = arg;
  const CNF_Server *cfg = &c->s->cfg;
  double now = UTL_Now();

  c->armed = 0.0;
  if (c->state == CONN_LINGER) {
    if (now >= c->linger_until) {
      conn_free(c, "closed");
      return;
    }
  } else if (c->state == CONN_OPEN) {
    if (cfg->line_timeout_s > 0 && c->line_since > 0.0 &&
        now >= c->line_since + cfg->line_timeout_s) {
      log_info("SRV: client %s sent a partial line and stalled for %d s: closed",
               c->peer, cfg->line_timeout_s);
      conn_free(c, "line timeout");
      return;
    }
    if (auth_pending(c) && now >= c->auth_since + cfg->auth_timeout_s) {
      log_info("SRV: client %s did not authenticate within %d s: closing", c->peer,
               cfg->auth_timeout_s);
      if (close_with_notice(c, "* closing: not authenticated", "auth timeout"))
        return;
    } else if (cfg->idle_timeout_s > 0 && !c->subscribed &&
        now >= c->last_request + cfg->idle_timeout_s) {
      log_debug("SRV: client %s idle for %d s: closing", c->peer, cfg->idle_timeout_s);
      if (close_with_notice(c, "* closing: idle timeout", "idle timeout"))
        return;
    }
  }
  arm_timer(c);
}

static void
set_write_timeout(SRV_Conn *c)
{
  struct timeval tv = { 0, 0 };
  int secs = c->state != CONN_OPEN ? FLUSH_TIMEOUT_S : c->s->cfg.idle_timeout_s;

  tv.tv_sec = secs;
  bufferevent_set_timeouts(c->bev, NULL, secs > 0 ? &tv : NULL);
}

/* ------------------------------------------------------------------------ */
/* Connection life */

static void
conn_free(SRV_Conn *c, const char *why)
{
  SRV_Server *s = c->s;

  if (c->rejected)
    s->n_rejecting--;
  else {
    s->n_clients--;
    log_debug("SRV: client %s disconnected (%s), %d left", c->peer, why, s->n_clients);
  }
  SRV_Unsubscribe(c);
  if (c->pending)
    c->pending->c = NULL;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  bufferevent_free(c->bev);
  event_free(c->timer);
  evbuffer_free(c->lines);
  evbuffer_free(c->held);
  explicit_bzero(c->secret, sizeof c->secret);
  free(c);
}

/* Answer nothing more; close once the output has drained. */
static void
start_close(SRV_Conn *c)
{
  if (c->state != CONN_OPEN || c->virt)
    return;
  c->state = CONN_FLUSH;
  c->paused = 0;
  evbuffer_drain(c->lines, evbuffer_get_length(c->lines));
  if (!c->eof)
    bufferevent_enable(c->bev, EV_READ);   /* read and discard */
  set_write_timeout(c);
}

/* In FLUSH with the output gone: shut down our side and linger (or free).
   Returns 1 if c was freed. */
static int
maybe_finish_close(SRV_Conn *c)
{
  if (c->state != CONN_FLUSH ||
      evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
    return 0;
  if (c->eof) {
    conn_free(c, c->rejected ? "rejected" : "closed");
    return 1;
  }
  shutdown(bufferevent_getfd(c->bev), SHUT_WR);
  c->state = CONN_LINGER;
  c->linger_until = UTL_Now() + LINGER_S;
  c->armed = 0.0;
  event_del(c->timer);
  arm_timer(c);
  return 0;
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
  SRV_Conn *c = arg;

  if (c->state != CONN_OPEN) {
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    return;
  }
  process_input(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
  SRV_Conn *c = arg;

  /* Called when the output has drained to SRV_OUTPUT_LOW or below. */
  if (c->state != CONN_OPEN) {
    maybe_finish_close(c);
    return;
  }
  if (c->congested) {
    char line[64];

    snprintf(line, sizeof line, "* dropped n=%lu", c->dropped);
    write_line(c, line, NULL);
    log_debug("SRV: subscriber %s was too slow: %lu events dropped", c->peer, c->dropped);
    c->congested = 0;
    c->dropped = 0;
  }
  if (c->paused) {
    c->paused = 0;
    if (!c->eof && !c->pending)
      bufferevent_enable(c->bev, EV_READ);
    process_input(c);
  }
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
  SRV_Conn *c = arg;

  if (what & BEV_EVENT_EOF) {
    c->eof = 1;
    if (c->state == CONN_OPEN) {
      process_input(c);
      return;
    }
    if (c->state == CONN_LINGER) {
      conn_free(c, "closed");
      return;
    }
    return;                 /* FLUSH: keep writing to the half-closed peer */
  }
  if (what & BEV_EVENT_TIMEOUT) {
    log_info("SRV: client %s stopped reading its output: closed", c->peer);
    conn_free(c, "write timeout");
    return;
  }
  conn_free(c, (what & BEV_EVENT_ERROR) ? evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())
            : "error");
}

/* ------------------------------------------------------------------------ */
/* Requests */

static const SRV_Command *
find_command(const SRV_Server *s, const char *word)
{
  for (int i = 0; i < s->n_cmds; i++)
    if (strcasecmp(s->cmds[i]->name, word) == 0)
      return s->cmds[i];
  return NULL;
}

/* A command word for an error message: printable ASCII, at most 32 chars. */
static void
quote_word(const char *w, char *out, size_t outlen)
{
  size_t o = 0;

  for (size_t i = 0; w[i] && o + 8 < outlen; i++) {
    unsigned char b = (unsigned char)w[i];

    if (i >= 32) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    if (b > 0x20 && b < 0x7f && b != '\'' && b != '\\')
      out[o++] = (char)b;
    else
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", b);
  }
  out[o] = '\0';
}

static void
begin_response(SRV_Conn *c)
{
  c->in_response = 1;
  c->final_sent = 0;
}

static void
end_response(SRV_Conn *c, const char *name)
{
  if (c->pending && !c->final_sent)
    return;                 /* deferred: SRV_Complete ends it */
  if (!c->final_sent && c->state == CONN_OPEN) {
    log_error("SRV: command '%s' gave no final line", name);
    send_err(c, 500, "internal error");
  }
  c->in_response = 0;
  c->final_sent = 0;
  if (evbuffer_get_length(c->held) > 0) {
    if (c->state == CONN_OPEN)
      evbuffer_add_buffer(conn_out(c), c->held);
    else
      evbuffer_drain(c->held, evbuffer_get_length(c->held));
    note_peak(c);
  }
}

static void
reply_err(SRV_Conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
reply_err(SRV_Conn *c, int code, const char *fmt, ...)
{
  va_list ap;
  Fmt f;

  begin_response(c);
  va_start(ap, fmt);
  send_err(c, code, vformat(&f, fmt, ap));
  va_end(ap);
  fmt_free(&f);
  end_response(c, "");
}

static void
handle_line(SRV_Conn *c, char *line, size_t n)
{
  char *argv[MAX_WORDS];
  const SRV_Command *cmd;
  int argc, nargs, batched;

  c->last_request = UTL_Now();
  if (memchr(line, '\0', n)) {
    reply_err(c, 400, "NUL byte in request");
    return;
  }
  line[n] = '\0';
  argc = SRV_Split(line, argv, MAX_WORDS);
  if (argc == 0)
    return;                 /* empty lines are ignored */
  if (argc < 0) {
    reply_err(c, 400, "too many words");
    return;
  }
  cmd = find_command(c->s, argv[0]);
  if (!cmd) {
    char q[160];

    quote_word(argv[0], q, sizeof q);
    reply_err(c, 404, "unknown command '%s'", q);
    return;
  }
  if (cmd->role > c->role) {
    if (c->role == CNF_ROLE_NONE)
      reply_err(c, 401, "authentication required (auth <token>)");
    else
      reply_err(c, 403, "not permitted for role %s", SRV_RoleName(c->role));
    return;
  }
  nargs = argc - 1;
  if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
    reply_err(c, 400, "usage: %s", cmd->usage ? cmd->usage : cmd->name);
    return;
  }
  begin_response(c);
  c->in_handler = 1;
  batched = !c->virt && !c->capture && c->s->batch && !c->s->batch_busy;
  if (batched) {
    c->s->batch_busy = 1;
    c->capture = c->s->batch;
  }
  cmd->fn(c, argc, argv, c->s->ctx);
  c->in_handler = 0;
  if (batched) {
    /* Also after quit (CONN_FLUSH): its OK goes out before the close. */
    c->capture = NULL;
    c->s->batch_busy = 0;
    if (c->state == CONN_OPEN || c->state == CONN_FLUSH)
      evbuffer_add_buffer(conn_out(c), c->s->batch);
    /* Whatever was not moved (closed, or no memory) never reaches the
       next answer. */
    evbuffer_drain(c->s->batch, evbuffer_get_length(c->s->batch));
    note_peak(c);
  }
  end_response(c, cmd->name);
}

int
SRV_HasCommand(const SRV_Server *s, const char *name)
{
  return s && find_command(s, name) != NULL;
}

int
SRV_Exec(SRV_Server *s, CNF_Role role, const char *peer, char *line, struct evbuffer *out,
         char *err, size_t errlen)
{
  char *argv[MAX_WORDS];
  const SRV_Command *cmd;
  SRV_Conn c;
  int argc, nargs;

  memset(&c, 0, sizeof c);
  c.s = s;
  c.role = role;
  c.state = CONN_OPEN;
  c.capture = out;
  c.err_out = err;
  c.err_len = errlen;
  UTL_Strlcpy(c.peer, peer ? peer : "internal", sizeof c.peer);
  UTL_Strlcpy(c.name, c.peer, sizeof c.name);     /* unnamed: claims refuse it */
  err[0] = '\0';
  argc = SRV_Split(line, argv, MAX_WORDS);
  if (argc <= 0) {
    snprintf(err, errlen, "malformed request");
    return 400;
  }
  cmd = find_command(s, argv[0]);
  if (!cmd) {
    snprintf(err, errlen, "%s is not supported by this wavelockd", argv[0]);
    return 404;
  }
  if (cmd->role > role) {
    if (role == CNF_ROLE_NONE) {
      snprintf(err, errlen, "authentication required");
      return 401;
    }
    snprintf(err, errlen, "not permitted for role %s", SRV_RoleName(role));
    return 403;
  }
  nargs = argc - 1;
  if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
    snprintf(err, errlen, "usage: %s", cmd->usage ? cmd->usage : cmd->name);
    return 400;
  }
  begin_response(&c);
  c.in_handler = 1;
  cmd->fn(&c, argc, argv, s->ctx);
  c.in_handler = 0;
  if (c.pending) {
    /* An answer that comes later has no socket to go to here. */
    c.pending->c = NULL;
    c.pending = NULL;
    snprintf(err, errlen, "'%s' answers later: not available here", cmd->name);
    return 500;
  }
  if (!c.final_sent) {
    snprintf(err, errlen, "internal error");
    return 500;
  }
  return c.final_code;
}

/* Frame one line out of c->lines.  Returns 1 if a line (or a too-long line)
   was consumed, 0 if more input is needed. */
static int
take_line(SRV_Conn *c)
{
  struct evbuffer *b = c->lines;
  size_t len = evbuffer_get_length(b), eol_len = 0;
  struct evbuffer_ptr p;
  char line[SRV_LINE_MAX + 1];

  if (len == 0)
    return 0;
  p = evbuffer_search_eol(b, NULL, &eol_len, EVBUFFER_EOL_CRLF);
  if (c->discarding) {
    if (p.pos < 0) {
      /* Keep a trailing CR: it may be the start of the CRLF. */
      evbuffer_drain(b, len - 1);
      return 0;
    }
    evbuffer_drain(b, (size_t)p.pos + eol_len);
    c->discarding = 0;
    c->line_since = 0.0;
    return 1;
  }
  if (p.pos < 0) {
    if (len <= SRV_LINE_MAX + 1)    /* room for the CR of a CRLF */
      return 0;
    c->discarding = 1;
    evbuffer_drain(b, len - 1);
    c->last_request = UTL_Now();
    reply_err(c, 413, "line too long");
    return 1;
  }
  c->line_since = 0.0;
  if ((size_t)p.pos > SRV_LINE_MAX) {
    evbuffer_drain(b, (size_t)p.pos + eol_len);
    c->last_request = UTL_Now();
    reply_err(c, 413, "line too long");
    return 1;
  }
  evbuffer_remove(b, line, (size_t)p.pos);
  evbuffer_drain(b, eol_len);
  handle_line(c, line, (size_t)p.pos);
  return 1;
}

static int
over_pause(SRV_Conn *c)
{
  return evbuffer_get_length(bufferevent_get_output(c->bev)) >= SRV_OUTPUT_PAUSE;
}

/* Run every complete request in the input; stop at the output bound.
   May free c (then it returns having done nothing further with it). */
static void
process_input(SRV_Conn *c)
{
  struct evbuffer *in = bufferevent_get_input(c->bev);
  unsigned char chunk[READ_CHUNK];

  for (;;) {
    while (c->state == CONN_OPEN && !c->pending && !over_pause(c) && take_line(c))
      ;
    if (c->state != CONN_OPEN)
      break;
    if (c->pending) {
      /* A deferred answer: read nothing more until it is done. */
      bufferevent_disable(c->bev, EV_READ);
      arm_timer(c);
      return;
    }
    if (over_pause(c)) {
      if (!c->paused) {
        c->paused = 1;
        bufferevent_disable(c->bev, EV_READ);
      }
      break;
    }
    int n = evbuffer_remove(in, chunk, sizeof chunk);
    if (n > 0) {
      size_t m = SRV_StripTelnet(chunk, (size_t)n, &c->telnet);
      if (m > 0)
        evbuffer_add(c->lines, chunk, m);
      continue;
    }
    if (!c->eof)
      break;
    /* The peer is done sending: a last line without a newline still counts. */
    if (evbuffer_get_length(c->lines) > 0 && !c->discarding) {
      evbuffer_add(c->lines, "\n", 1);
      continue;
    }
    start_close(c);
    break;
  }

  if (c->state == CONN_OPEN) {
    if (c->paused || (evbuffer_get_length(c->lines) == 0 && !c->discarding))
      c->line_since = 0.0;
    else if (c->line_since == 0.0)
      c->line_since = UTL_Now();
    arm_timer(c);
    return;
  }
  maybe_finish_close(c);
}

SRV_Pending *
SRV_Defer(SRV_Conn *c)
{
  SRV_Pending *p;

  if (!c || c->pending || !c->in_response || c->final_sent || c->state != CONN_OPEN)
    return NULL;
  p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->c = c;
  c->pending = p;
  return p;
}

SRV_Conn *
SRV_PendingConn(SRV_Pending *p)
{
  return p ? p->c : NULL;
}

void
SRV_Complete(SRV_Pending *p)
{
  SRV_Conn *c;

  if (!p)
    return;
  c = p->c;
  free(p);
  if (!c)
    return;
  c->pending = NULL;
  if (c->in_handler)
    return;                 /* finished before the handler returned: it ends the response */
  end_response(c, "deferred");
  if (c->virt) {
    if (c->vdone)
      c->vdone(c, c->varg);
    return;
  }
  if (c->state != CONN_OPEN)
    return;
  if (!c->paused && !c->eof)
    bufferevent_enable(c->bev, EV_READ);
  /* The requests that waited run from the loop, not from inside the
     caller (which may be another connection's handler). */
  bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* ------------------------------------------------------------------------ */
/* Built-in commands */

static void
builtin_ping(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, NULL);
}

static void
builtin_version(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Data(c, "version=%s protocol=%d", PACKAGE_VERSION, WL_PROTOCOL_VERSION);
  SRV_Ok(c, NULL);
}

static void
builtin_quit(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, NULL);
  start_close(c);
}

static void
builtin_help(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  const SRV_Server *s = c->s;

  if (argc == 2) {
    const SRV_Command *cmd = find_command(s, argv[1]);

    if (!cmd) {
      char q[160];

      quote_word(argv[1], q, sizeof q);
      SRV_Err(c, 404, "unknown command '%s'", q);
      return;
    }
    SRV_Data(c, "command=%s role=%s", cmd->name, SRV_RoleName(cmd->role));
    SRV_Data(c, "usage=%s", cmd->usage ? cmd->usage : cmd->name);
    SRV_Data(c, "help=%s", cmd->help ? cmd->help : "");
    SRV_Ok(c, NULL);
    return;
  }
  for (int i = 0; i < s->n_cmds; i++)
    SRV_Data(c, "command=%s role=%s help=%s", s->cmds[i]->name,
             SRV_RoleName(s->cmds[i]->role), s->cmds[i]->help ? s->cmds[i]->help : "");
  SRV_Ok(c, NULL);
}

static double
auth_delay(int failures)
{
  double d = SRV_AUTH_DELAY_S;

  for (int i = SRV_AUTH_FREE_TRIES; i < failures && d < SRV_AUTH_DELAY_MAX_S; i++)
    d *= 2.0;
  return d < SRV_AUTH_DELAY_MAX_S ? d : SRV_AUTH_DELAY_MAX_S;
}

static void
builtin_auth(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  const CNF_Server *cfg = &c->s->cfg;
  double now = UTL_Now();
  int match = -1;

  if (cfg->n_tokens == 0) {
    c->role = CNF_ROLE_CONTROL;
    SRV_Ok(c, "role=%s", SRV_RoleName(c->role));
    return;
  }
  if (now < c->auth_blocked_until) {
    int wait = (int)(c->auth_blocked_until - now + 0.999);

    log_debug("SRV: client %s: auth attempt refused while blocked", c->peer);
    SRV_Err(c, 429, "too many failed auth attempts, retry in %d s", wait > 0 ? wait : 1);
    return;
  }
  for (int i = 0; i < cfg->n_tokens; i++) {
    int eq = SRV_TokenEqual(argv[1], cfg->tokens[i].secret);

    if (eq && match < 0)
      match = i;
  }
  if (match < 0) {
    c->auth_failures++;
    if (c->auth_failures >= SRV_AUTH_FREE_TRIES)
      c->auth_blocked_until = now + auth_delay(c->auth_failures);
    log_warn("SRV: client %s: authentication failed (%d in a row)", c->peer,
             c->auth_failures);
    SRV_Err(c, 401, "invalid token");
    return;
  }
  c->auth_failures = 0;
  c->auth_blocked_until = 0.0;
  c->role = cfg->tokens[match].role;
  UTL_Strlcpy(c->secret, cfg->tokens[match].secret, sizeof c->secret);
  log_info("SRV: client %s authenticated as %s", c->peer, SRV_RoleName(c->role));
  SRV_Ok(c, "role=%s", SRV_RoleName(c->role));
}

/* ------------------------------------------------------------------------ */
/* Accepting */

static void
format_peer(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen)
{
  char host[INET6_ADDRSTRLEN], serv[8];

  if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(out, outlen, "?");
    return;
  }
  if (sa->sa_family == AF_INET6)
    snprintf(out, outlen, "[%s]:%s", host, serv);
  else
    snprintf(out, outlen, "%s:%s", host, serv);
}

static CNF_Role
initial_role(const SRV_Server *s)
{
  return s->cfg.n_tokens > 0 ? CNF_ROLE_NONE : CNF_ROLE_CONTROL;
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
  SRV_Server *s = arg;
  int reject = s->cfg.max_clients > 0 && s->n_clients >= s->cfg.max_clients;
  SRV_Conn *c;
  int one = 1;
  char greeting[128];

  if (reject) {
    s->rejected_total++;
    if (s->n_rejecting >= MAX_REJECTING) {
      evutil_closesocket(fd);
      return;
    }
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    log_error("SRV: out of memory accepting a connection");
    evutil_closesocket(fd);
    return;
  }
  c->s = s;
  /* A fixed kernel send buffer: without it the kernel's autotuning lets a
     client that never reads park megabytes in the socket, out of sight of
     the daemon's own output bound. */
  {
    int sndbuf = SRV_SOCKET_SNDBUF;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
  c->lines = evbuffer_new();
  c->held = evbuffer_new();
  c->timer = evtimer_new(s->base, conn_timer_cb, c);
  if (!c->bev || !c->lines || !c->held || !c->timer) {
    log_error("SRV: out of memory accepting a connection");
    if (c->bev)
      bufferevent_free(c->bev);
    else
      evutil_closesocket(fd);
    if (c->lines)
      evbuffer_free(c->lines);
    if (c->held)
      evbuffer_free(c->held);
    if (c->timer)
      event_free(c->timer);
    free(c);
    return;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  format_peer(sa, (socklen_t)salen, c->peer, sizeof c->peer);
  snprintf(c->name, sizeof c->name, "conn%lu@%s", ++s->conn_seq, c->peer);
  c->role = initial_role(s);
  c->last_request = UTL_Now();
  c->auth_since = c->last_request;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;

  bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
  bufferevent_setwatermark(c->bev, EV_WRITE, SRV_OUTPUT_LOW, 0);

  if (reject) {
    c->rejected = 1;
    s->n_rejecting++;
    log_info("SRV: client %s refused: already %d clients (max_clients)", c->peer,
             s->n_clients);
    write_line(c, "ERR 429 too many connections", NULL);
    start_close(c);
    return;
  }
  s->n_clients++;
  log_debug("SRV: client %s connected, %d clients", c->peer, s->n_clients);
  snprintf(greeting, sizeof greeting, "* wavelock %s protocol %d ready",
           PACKAGE_VERSION, WL_PROTOCOL_VERSION);
  write_line(c, greeting, NULL);
  set_write_timeout(c);
  bufferevent_enable(c->bev, EV_READ);
  arm_timer(c);
}

static void
relisten_cb(evutil_socket_t fd, short what, void *arg)
{
  SRV_Server *s = arg;

  for (int i = 0; i < s->n_listeners; i++)
    evconnlistener_enable(s->listeners[i]);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
  SRV_Server *s = arg;
  struct timeval tv = { ACCEPT_RETRY_S, 0 };
  int err = EVUTIL_SOCKET_ERROR();

  log_error("SRV: accept failed: %s; not accepting for %d s",
            evutil_socket_error_to_string(err), ACCEPT_RETRY_S);
  for (int i = 0; i < s->n_listeners; i++)
    evconnlistener_disable(s->listeners[i]);
  event_add(s->relisten, &tv);
}

static int
add_listener(SRV_Server *s, struct evconnlistener *l)
{
  struct evconnlistener **n = realloc(s->listeners, sizeof *n * (size_t)(s->n_listeners + 1));

  if (!n)
    return -1;
  s->listeners = n;
  s->listeners[s->n_listeners++] = l;
  evconnlistener_set_error_cb(l, accept_error_cb);
  return 0;
}

static int
port_of(evutil_socket_t fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -1;
}

static void
set_port(struct sockaddr *sa, int port)
{
  uint16_t p = htons((uint16_t)port);

  if (sa->sa_family == AF_INET)
    memcpy((char *)sa + offsetof(struct sockaddr_in, sin_port), &p, sizeof p);
  else if (sa->sa_family == AF_INET6)
    memcpy((char *)sa + offsetof(struct sockaddr_in6, sin6_port), &p, sizeof p);
}

/* Bind every address of one listen entry. */
static int
listen_on(SRV_Server *s, const char *text, char *err, size_t errlen)
{
  char host[256], serv[16], addr[INET6_ADDRSTRLEN + 10], failed[512] = "";
  struct addrinfo hints, *res = NULL;
  int port, rc, bound = 0, shared_port = 0, last_errno = 0;
  const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;

  if (CNF_ParseHostPort(text, host, sizeof host, &port) != 0 || port < 0 || port > 65535) {
    snprintf(err, errlen, "server.listen: bad address '%s' (want host:port)", text);
    return -1;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  snprintf(serv, sizeof serv, "%d", port);
  rc = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, serv, &hints, &res);
  if (rc != 0) {
    snprintf(err, errlen, "server.listen: cannot resolve '%s': %s", text, gai_strerror(rc));
    return -1;
  }
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    struct evconnlistener *l;

    if (port == 0 && shared_port > 0)
      set_port(ai->ai_addr, shared_port);
    format_peer(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr);
    l = evconnlistener_new_bind(s->base, accept_cb, s, flags, LISTEN_BACKLOG,
                                ai->ai_addr, (int)ai->ai_addrlen);
    if (!l) {
      size_t used = strlen(failed);

      /* Told below: in the error when nothing of the entry binds, else in a
         warning (logged once either way). */
      last_errno = errno;
      snprintf(failed + used, sizeof failed - used, "%s%s: %s", used ? "; " : "", addr,
               strerror(errno));
      continue;
    }
    if (add_listener(s, l) != 0) {
      evconnlistener_free(l);
      freeaddrinfo(res);
      snprintf(err, errlen, "server.listen: out of memory");
      return -1;
    }
    if (bound++ == 0)
      shared_port = port_of(evconnlistener_get_fd(l));
    set_port(ai->ai_addr, port_of(evconnlistener_get_fd(l)));
    format_peer(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr);
    log_info("SRV: listening on %s", addr);
  }
  freeaddrinfo(res);
  if (bound == 0) {
    snprintf(err, errlen, "server.listen: cannot listen on %s: %s", text,
             strerror(last_errno ? last_errno : EADDRNOTAVAIL));
    return -1;
  }
  if (failed[0])
    log_warn("SRV: %s: cannot listen on %s (its other addresses are bound)", text, failed);
  return 0;
}

static int
cmp_cmd(const void *a, const void *b)
{
  const SRV_Command *x = *(const SRV_Command *const *)a;
  const SRV_Command *y = *(const SRV_Command *const *)b;

  return strcmp(x->name, y->name);
}

static int
in_table(const SRV_Command *t, int n, const char *name)
{
  for (int i = 0; i < n; i++)
    if (strcasecmp(t[i].name, name) == 0)
      return 1;
  return 0;
}

static int
build_commands(SRV_Server *s, const SRV_Command *table, int n, char *err, size_t errlen)
{
  int nf = (int)(sizeof fixed_cmds / sizeof fixed_cmds[0]);
  int nd = (int)(sizeof default_cmds / sizeof default_cmds[0]);

  s->cmds = calloc((size_t)(nf + nd + n), sizeof *s->cmds);
  if (!s->cmds) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (int i = 0; i < nf; i++)
    s->cmds[s->n_cmds++] = &fixed_cmds[i];
  for (int i = 0; i < nd; i++)
    if (!in_table(table, n, default_cmds[i].name))
      s->cmds[s->n_cmds++] = &default_cmds[i];
  for (int i = 0; i < n; i++) {
    const SRV_Command *t = &table[i];

    if (!t->name || !t->name[0] || !t->fn || t->min_args < 0 ||
        (t->max_args >= 0 && t->max_args < t->min_args)) {
      snprintf(err, errlen, "command table entry %d (%s) is malformed", i,
               t->name ? t->name : "no name");
      return -1;
    }
    if (in_table(fixed_cmds, nf, t->name)) {
      log_warn("SRV: command '%s' is built in; the table's entry is ignored", t->name);
      continue;
    }
    if (in_table(table, i, t->name)) {
      snprintf(err, errlen, "command '%s' is in the table twice", t->name);
      return -1;
    }
    s->cmds[s->n_cmds++] = t;
  }
  qsort(s->cmds, (size_t)s->n_cmds, sizeof *s->cmds, cmp_cmd);
  return 0;
}

SRV_Server *
SRV_Create(struct event_base *base, const CNF_Server *cfg,
           const SRV_Command *commands, int n, void *ctx,
           char *err, size_t errlen)
{
  SRV_Server *s = calloc(1, sizeof *s);

  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->base = base;
  s->cfg = *cfg;
  s->ctx = ctx;
  s->relisten = evtimer_new(base, relisten_cb, s);
  s->batch = evbuffer_new();
  if (!s->relisten || !s->batch) {
    snprintf(err, errlen, "out of memory");
    SRV_Destroy(s);
    return NULL;
  }
  if (build_commands(s, commands, n, err, errlen) != 0) {
    SRV_Destroy(s);
    return NULL;
  }
  if (cfg->n_listen <= 0) {
    snprintf(err, errlen, "server.listen: no address to listen on");
    SRV_Destroy(s);
    return NULL;
  }
  for (int i = 0; i < cfg->n_listen && i < CNF_MAX_LISTEN; i++) {
    if (listen_on(s, cfg->listen[i], err, errlen) != 0) {
      SRV_Destroy(s);
      return NULL;
    }
  }
  return s;
}

int
SRV_BoundPort(const SRV_Server *s, int i)
{
  if (i < 0 || i >= s->n_listeners)
    return -1;
  return port_of(evconnlistener_get_fd(s->listeners[i]));
}

int
SRV_ListenerCount(const SRV_Server *s)
{
  return s->n_listeners;
}

void
SRV_Reconfigure(SRV_Server *s, const CNF_Server *cfg)
{
  char listen[CNF_MAX_LISTEN][128];
  int n_listen = s->cfg.n_listen;

  memcpy(listen, s->cfg.listen, sizeof listen);
  explicit_bzero(s->cfg.tokens, sizeof s->cfg.tokens);
  s->cfg = *cfg;
  memcpy(s->cfg.listen, listen, sizeof listen);
  s->cfg.n_listen = n_listen;

  for (SRV_Conn *c = s->conns; c; c = c->next) {
    if (c->rejected)
      continue;
    /* Re-derive each role: a token that is gone no longer counts. */
    if (s->cfg.n_tokens == 0) {
      c->role = CNF_ROLE_CONTROL;
    } else {
      CNF_Role role = CNF_ROLE_NONE;

      if (c->secret[0])
        for (int i = 0; i < s->cfg.n_tokens; i++)
          if (SRV_TokenEqual(c->secret, s->cfg.tokens[i].secret) && role == CNF_ROLE_NONE)
            role = s->cfg.tokens[i].role;
      if (role == CNF_ROLE_NONE)
        explicit_bzero(c->secret, sizeof c->secret);
      if (role == CNF_ROLE_NONE && c->role != CNF_ROLE_NONE)
        c->auth_since = UTL_Now();   /* its auth_timeout_s starts now */
      c->role = role;
    }
    set_write_timeout(c);
    c->armed = 0.0;
    event_del(c->timer);
    arm_timer(c);
  }
  log_info("SRV: reconfigured: max_clients=%d idle_timeout=%d line_timeout=%d "
           "auth_timeout=%d tokens=%d", s->cfg.max_clients, s->cfg.idle_timeout_s,
           s->cfg.line_timeout_s, s->cfg.auth_timeout_s, s->cfg.n_tokens);
}

void
SRV_StopListening(SRV_Server *s)
{
  for (int i = 0; i < s->n_listeners; i++)
    evconnlistener_free(s->listeners[i]);
  free(s->listeners);
  s->listeners = NULL;
  s->n_listeners = 0;
  if (s->relisten)
    event_del(s->relisten);
}

void
SRV_Destroy(SRV_Server *s)
{
  if (!s)
    return;
  SRV_StopListening(s);
  while (s->conns)
    conn_free(s->conns, "server shut down");
  if (s->relisten)
    event_free(s->relisten);
  if (s->batch)
    evbuffer_free(s->batch);
  free(s->cmds);
  explicit_bzero(s->cfg.tokens, sizeof s->cfg.tokens);
  free(s);
}

/* ------------------------------------------------------------------------ */
/* Virtual connections */

SRV_Conn *
SRV_VirtualNew(SRV_Server *s, CNF_Role role, const char *peer, SRV_VirtualDone done, void *arg)
{
  SRV_Conn *c = calloc(1, sizeof *c);

  if (!c)
    return NULL;
  c->vout = evbuffer_new();
  c->held = evbuffer_new();
  if (!c->vout || !c->held) {
    if (c->vout)
      evbuffer_free(c->vout);
    if (c->held)
      evbuffer_free(c->held);
    free(c);
    return NULL;
  }
  c->s = s;
  c->virt = 1;
  c->role = role;
  c->vdone = done;
  c->varg = arg;
  c->state = CONN_OPEN;
  UTL_Strlcpy(c->peer, peer ? peer : "virtual", sizeof c->peer);
  UTL_Strlcpy(c->name, c->peer, sizeof c->name);   /* until SRV_SetName */
  return c;
}

int
SRV_VirtualRun(SRV_Conn *c, const char *line, size_t n)
{
  char buf[SRV_LINE_MAX + 1];

  if (!c->virt || c->pending)
    return -1;
  if (n > SRV_LINE_MAX) {
    c->last_request = UTL_Now();
    reply_err(c, 413, "line too long");
    return 1;
  }
  memcpy(buf, line, n);
  buf[n] = '\0';
  handle_line(c, buf, n);
  return c->pending ? 0 : 1;
}

size_t
SRV_VirtualTake(SRV_Conn *c, char *out, size_t outlen)
{
  size_t n = evbuffer_get_length(c->vout);

  if (outlen == 0)
    return n;
  if (n >= outlen)
    n = outlen - 1;
  evbuffer_remove(c->vout, out, n);
  out[n] = '\0';
  evbuffer_drain(c->vout, evbuffer_get_length(c->vout));
  return n;
}

void
SRV_VirtualFree(SRV_Conn *c)
{
  if (!c)
    return;
  if (c->pending)
    c->pending->c = NULL;
  evbuffer_free(c->vout);
  evbuffer_free(c->held);
  free(c);
}
