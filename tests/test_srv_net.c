/* test_srv_net.c - the protocol server over real TCP (TAP output).
 *
 * Runs several SRV servers with a small command table on one libevent base
 * in a thread, bound to 127.0.0.1 port 0, and talks to them over sockets as
 * nc/telnet users, pipelining scripts, slow readers and slowloris clients
 * would.  Server-side figures (buffered output, dropped events) come from a
 * "stats" command that calls SRV_GetStats on the loop thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "log.h"
#include "srv.h"
#include "util.h"

#define LINE 8192
#define N_MANY 1000
#define TIMEOUT_MS 10000

/* ---- TAP ------------------------------------------------------------------ */

static int n_tests, n_failed;
static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
diag(const char *fmt, ...)
{
  va_list ap;

  pthread_mutex_lock(&tap_lock);
  fputs("# ", stdout);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&tap_lock);
}

static int ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
ok(int cond, const char *fmt, ...)
{
  va_list ap;

  pthread_mutex_lock(&tap_lock);
  n_tests++;
  if (!cond)
    n_failed++;
  printf("%sok %d - ", cond ? "" : "not ", n_tests);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&tap_lock);
  return cond;
}

static int
is(const char *got, const char *want, const char *name)
{
  if (!ok(got && strcmp(got, want) == 0, "%s", name))
    diag("got '%s', want '%s'", got ? got : "(nothing)", want);
  return got && strcmp(got, want) == 0;
}

static int
starts(const char *got, const char *prefix)
{
  return got && strncmp(got, prefix, strlen(prefix)) == 0;
}

static void
sleep_ms(int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

  nanosleep(&ts, NULL);
}

/* ---- the server side (everything below runs on the loop thread) ----------- */

typedef struct {
  SRV_Server *srv;
  struct event *flood;
  unsigned long seq;
} Ctx;

static struct event_base *base;
static Ctx ctx_open, ctx_auth, ctx_small, ctx_idle, ctx_stop, ctx_many;
static CNF_Server cfg_open, cfg_auth, cfg_small, cfg_idle, cfg_small3, cfg_tokens, cfg_many;
static char flood_pad[201];

static void
cmd_echo(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  char out[LINE] = "";
  size_t o = 0;

  for (int i = 1; i < argc && o < sizeof out - 1; i++)
    o += (size_t)snprintf(out + o, sizeof out - o, "%s%s", i > 1 ? " " : "", argv[i]);
  SRV_Ok(c, "%s", out);
}

static void
cmd_slow_data(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  long n, size = 0;
  char pad[1001];

  if (UTL_ParseInt(argv[1], 0, 100000, &n) != 0 ||
      (argc > 2 && UTL_ParseInt(argv[2], 0, 1000, &size) != 0)) {
    SRV_Err(c, 422, "bad number");
    return;
  }
  memset(pad, 'p', (size_t)size);
  pad[size] = '\0';
  for (long i = 0; i < n; i++)
    SRV_Data(c, "i=%ld pad=%s", i, pad);
  SRV_Ok(c, NULL);
}

static void
cmd_ctl(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, "ctl");
}

static void
cmd_forget(SRV_Conn *c, int argc, char **argv, void *ctx)
{
}

static void
cmd_twice(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, "first");
  SRV_Ok(c, "second");
  SRV_Data(c, "late=1");
}

static void
cmd_baddata(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Data(c, "OK fake");
  SRV_Data(c, "ERR 500 fake");
  SRV_Data(c, "* fake");
  SRV_Data(c, "%s", "");
  SRV_Data(c, "a=1\nOK b=2");
  {
    char text[] = "b=1\tc=2 OK";

    SRV_Sanitize(text);
    SRV_DataLine(c, text, strlen(text));
    SRV_DataLine(c, "OK preformatted", 15);
    SRV_DataLine(c, "d=3 ignored", 3);
  }
  SRV_Ok(c, "x\ry");
}

static void
cmd_sub(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  unsigned char mask[8] = { 0 };

  for (int i = 1; i < argc; i++) {
    long k;

    if (UTL_ParseInt(argv[i], 0, 7, &k) != 0) {
      SRV_Err(c, 404, "unknown laser '%s'", argv[i]);
      return;
    }
    mask[k] = 1;
  }
  SRV_Subscribe(c, argc == 1, mask, 8);
  SRV_Ok(c, NULL);
}

static void
cmd_unsub(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Unsubscribe(c);
  SRV_Ok(c, NULL);
}

static void
cmd_pub(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  long laser;

  if (UTL_ParseInt(argv[1], -1, 7, &laser) != 0) {
    SRV_Err(c, 422, "bad laser");
    return;
  }
  SRV_Publish(SRV_ConnServer(c), (int)laser, "%s", argv[2]);
  SRV_Ok(c, NULL);
}

/* Publish (possibly to this very connection) in the middle of a response. */
static void
cmd_pubdata(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Data(c, "before=1");
  SRV_Publish(SRV_ConnServer(c), atoi(argv[1]), "%s", argv[2]);
  SRV_Data(c, "after=1");
  SRV_Data(c, "after=2");
  SRV_Ok(c, NULL);
}

static void
flood_cb(evutil_socket_t fd, short what, void *arg)
{
  Ctx *x = arg;

  for (int i = 0; i < 40; i++) {
    SRV_Publish(x->srv, (int)(x->seq % 4), "ev seq=%lu pad=%s", x->seq, flood_pad);
    x->seq++;
  }
}

static void
cmd_flood(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  Ctx *x = ctx;
  struct timeval tv = { 0, 2000 };

  if (strcmp(argv[1], "on") == 0) {
    event_add(x->flood, &tv);
  } else if (strcmp(argv[1], "off") == 0) {
    event_del(x->flood);
  } else if (strcmp(argv[1], "tick") == 0) {
    unsigned long s = x->seq;
    SRV_Publish(x->srv, -1, "ev seq=%lu pad=%s", x->seq, flood_pad);
    x->seq++;
    SRV_Ok(c, "seq=%lu", s);
    return;
  }
  SRV_Ok(c, "seq=%lu", x->seq);
}

static void
cmd_stats(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Stats st;

  SRV_GetStats(SRV_ConnServer(c), &st, argc > 1);
  SRV_Data(c, "clients=%d subscribers=%d out_bytes=%zu out_max=%zu out_peak=%zu "
           "dropped=%lu rejected=%lu", st.clients, st.subscribers, st.out_bytes,
           st.out_max, st.out_peak, st.events_dropped, st.rejected);
  SRV_Ok(c, NULL);
}

static void
cmd_reconf(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  const CNF_Server *cfg = NULL;

  if (strcmp(argv[1], "max3") == 0)
    cfg = &cfg_small3;
  else if (strcmp(argv[1], "tokens") == 0)
    cfg = &cfg_tokens;
  else if (strcmp(argv[1], "small") == 0)
    cfg = &cfg_small;
  if (!cfg) {
    SRV_Err(c, 404, "no such config");
    return;
  }
  SRV_Reconfigure(SRV_ConnServer(c), cfg);
  SRV_Ok(c, NULL);
}

static void
cmd_role(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, "role=%s", SRV_RoleName(SRV_Role(c)));
}

static void
cmd_peer(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, "peer=%s", SRV_Peer(c));
}

static void
cmd_stoplisten(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_StopListening(SRV_ConnServer(c));
  SRV_Ok(c, NULL);
}

static const SRV_Command table[] = {
  { "echo", CNF_ROLE_MONITOR, 0, -1, "echo [word...]", "answer OK with the words", cmd_echo },
  { "slow-data", CNF_ROLE_MONITOR, 1, 2, "slow-data <n> [size]", "n data lines", cmd_slow_data },
  { "ctl", CNF_ROLE_CONTROL, 0, 0, "ctl", "a changing command", cmd_ctl },
  { "forget", CNF_ROLE_MONITOR, 0, 0, "forget", "no final line (a bug)", cmd_forget },
  { "twice", CNF_ROLE_MONITOR, 0, 0, "twice", "two final lines (a bug)", cmd_twice },
  { "baddata", CNF_ROLE_MONITOR, 0, 0, "baddata", "data lines that look final", cmd_baddata },
  { "sub", CNF_ROLE_MONITOR, 0, -1, "sub [laser...]", "subscribe", cmd_sub },
  { "unsub", CNF_ROLE_MONITOR, 0, 0, "unsub", "unsubscribe", cmd_unsub },
  { "pub", CNF_ROLE_MONITOR, 2, 2, "pub <laser> <word>", "publish an event", cmd_pub },
  { "pubdata", CNF_ROLE_MONITOR, 2, 2, "pubdata <laser> <word>", "publish inside a response", cmd_pubdata },
  { "flood", CNF_ROLE_MONITOR, 1, 1, "flood on|off|tick", "publish continuously", cmd_flood },
  { "stats", CNF_ROLE_MONITOR, 0, 1, "stats [reset]", "server figures", cmd_stats },
  { "reconf", CNF_ROLE_CONTROL, 1, 1, "reconf <name>", "apply another config", cmd_reconf },
  { "role", CNF_ROLE_MONITOR, 0, 0, "role", "this connection's role", cmd_role },
  { "peer", CNF_ROLE_MONITOR, 0, 0, "peer", "this connection's peer", cmd_peer },
  { "stoplisten", CNF_ROLE_CONTROL, 0, 0, "stoplisten", "stop accepting", cmd_stoplisten },
  /* Built-in names: ignored with a warning. */
  { "quit", CNF_ROLE_CONTROL, 0, 0, "quit", "not used", cmd_ctl },
};
#define N_TABLE ((int)(sizeof table / sizeof table[0]))

static struct event *stop_ev;

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
  Ctx *all[] = { &ctx_open, &ctx_auth, &ctx_small, &ctx_idle, &ctx_stop, &ctx_many };

  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (all[i]->flood)
      event_free(all[i]->flood);
    SRV_Destroy(all[i]->srv);
  }
  event_base_loopbreak(base);
}

static void *
loop_thread(void *arg)
{
  event_base_dispatch(base);
  return NULL;
}

static void
base_cfg(CNF_Server *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->listen[0], sizeof cfg->listen[0], "127.0.0.1:0");
  cfg->n_listen = 1;
  cfg->max_clients = 200;
  cfg->idle_timeout_s = 0;
  cfg->line_timeout_s = 1;
}

static void
add_tokens(CNF_Server *cfg)
{
  snprintf(cfg->tokens[0].secret, sizeof cfg->tokens[0].secret, "mon-secret");
  cfg->tokens[0].role = CNF_ROLE_MONITOR;
  snprintf(cfg->tokens[1].secret, sizeof cfg->tokens[1].secret, "ctl-secret");
  cfg->tokens[1].role = CNF_ROLE_CONTROL;
  cfg->n_tokens = 2;
}

static int
start_server(Ctx *x, const CNF_Server *cfg)
{
  char err[256] = "";

  x->srv = SRV_Create(base, cfg, table, N_TABLE, x, err, sizeof err);
  if (!x->srv) {
    diag("SRV_Create: %s", err);
    return -1;
  }
  x->flood = event_new(base, -1, EV_PERSIST, flood_cb, x);
  return SRV_BoundPort(x->srv, 0);
}

/* ---- the client side -------------------------------------------------------- */

typedef struct {
  int fd;
  char buf[1 << 16];
  size_t len;
  int eof;
} Cli;

static int
tcp_connect(int port, int rcvbuf)
{
  struct sockaddr_in sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  if (rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Connect or give up the whole run: every test needs its connections. */
static Cli *cli_new(int port, int rcvbuf) __attribute__((returns_nonnull));
static Cli *cli_open(int port, char *greeting, size_t glen) __attribute__((returns_nonnull));

static Cli *
cli_new(int port, int rcvbuf)
{
  Cli *c = calloc(1, sizeof *c);

  if (!c || (c->fd = tcp_connect(port, rcvbuf)) < 0) {
    printf("Bail out! cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
    exit(1);
  }
  return c;
}

static void
cli_close(Cli *c)
{
  if (c) {
    close(c->fd);
    free(c);
  }
}

static int
cli_send(Cli *c, const void *data, size_t n)
{
  const char *p = data;

  while (n > 0) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int
cli_sends(Cli *c, const char *s)
{
  return cli_send(c, s, strlen(s));
}

/* One line without its LF (and CR).  1 = line, 0 = EOF, -1 = timeout/error. */
static int
cli_line(Cli *c, char *out, size_t outlen, int timeout_ms)
{
  double end = UTL_Now() + timeout_ms / 1000.0;

  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);

    if (nl) {
      size_t n = (size_t)(nl - c->buf), m = n;
      if (m > 0 && c->buf[m - 1] == '\r')
        m--;
      if (m >= outlen)
        m = outlen - 1;
      memcpy(out, c->buf, m);
      out[m] = '\0';
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return 1;
    }
    if (c->eof)
      return 0;
    if (c->len == sizeof c->buf)
      return -1;

    int left = (int)((end - UTL_Now()) * 1000.0);
    struct pollfd p = { c->fd, POLLIN, 0 };
    if (left <= 0 || poll(&p, 1, left) <= 0)
      return -1;
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      if (errno == ECONNRESET) {
        c->eof = 1;
        continue;
      }
      return -1;
    }
    if (r == 0)
      c->eof = 1;
    c->len += (size_t)r;
  }
}

static int
is_final(const char *l)
{
  return strcmp(l, "OK") == 0 || starts(l, "OK ") || starts(l, "ERR ");
}

typedef struct {
  int n, nev;
  char data[64][512];
  char ev[16][512];
  char final[LINE];
  int ev_before_final;       /* an event line arrived between data lines */
} Resp;

/* Read one response; 0 on success, -1 on EOF/timeout. */
static int
cli_response(Cli *c, Resp *r)
{
  char line[LINE];

  memset(r, 0, sizeof *r);
  for (;;) {
    if (cli_line(c, line, sizeof line, TIMEOUT_MS) != 1) {
      snprintf(r->final, sizeof r->final, "(no answer)");
      return -1;
    }
    if (starts(line, "* ")) {
      if (r->n > 0)
        r->ev_before_final = 1;
      if (r->nev < 16)
        snprintf(r->ev[r->nev], sizeof r->ev[0], "%.511s", line);
      r->nev++;
      continue;
    }
    if (is_final(line)) {
      snprintf(r->final, sizeof r->final, "%s", line);
      return 0;
    }
    if (r->n < 64)
      snprintf(r->data[r->n], sizeof r->data[0], "%.511s", line);
    r->n++;
  }
}

/* Send a request (a newline is added) and return its final line. */
static const char *
cmd(Cli *c, const char *req, Resp *r)
{
  static __thread Resp mine;
  char line[LINE];

  if (!r)
    r = &mine;
  snprintf(line, sizeof line, "%s\n", req);
  if (cli_sends(c, line) != 0) {
    snprintf(r->final, sizeof r->final, "(send failed)");
    return r->final;
  }
  cli_response(c, r);
  return r->final;
}

static Cli *
cli_open(int port, char *greeting, size_t glen)
{
  Cli *c = cli_new(port, 0);
  char line[LINE];

  if (cli_line(c, line, sizeof line, TIMEOUT_MS) != 1) {
    printf("Bail out! no greeting from 127.0.0.1:%d\n", port);
    exit(1);
  }
  if (greeting)
    snprintf(greeting, glen, "%s", line);
  return c;
}

/* Wait for the server to close: 1 if EOF came within timeout (lines read on
   the way are discarded; the first one is kept in first). */
static int
cli_wait_eof(Cli *c, int timeout_ms, char *first, size_t flen)
{
  char line[LINE];
  double end = UTL_Now() + timeout_ms / 1000.0;
  int got_first = 0;

  if (first)
    first[0] = '\0';
  for (;;) {
    int left = (int)((end - UTL_Now()) * 1000.0);
    int r;

    if (left <= 0)
      return 0;
    r = cli_line(c, line, sizeof line, left);
    if (r == 0)
      return 1;
    if (r < 0)
      return 0;
    if (first && !got_first) {
      snprintf(first, flen, "%s", line);
      got_first = 1;
    }
  }
}

static long
kv_long(const char *line, const char *key)
{
  char pat[64];
  const char *p;

  snprintf(pat, sizeof pat, "%s=", key);
  for (p = line; (p = strstr(p, pat)) != NULL; p++)
    if (p == line || p[-1] == ' ')
      return strtol(p + strlen(pat), NULL, 10);
  return -1;
}

static long
stat_of(Cli *c, const char *key, int reset)
{
  Resp r;

  cmd(c, reset ? "stats reset" : "stats", &r);
  if (strcmp(r.final, "OK") != 0 || r.n != 1)
    return -1;
  return kv_long(r.data[0], key);
}

/* ---- tests ------------------------------------------------------------------ */

static int port_open, port_auth, port_small, port_idle, port_stop, port_many;

static void
test_greeting(void)
{
  char g[LINE];
  Cli *c = cli_open(port_open, g, sizeof g);

  ok(c != NULL, "connect and read a greeting");
  is(g, "* wavelock " PACKAGE_VERSION " protocol 1 ready", "greeting names version and protocol");
  ok(starts(cmd(c, "peer", NULL), "OK peer=127.0.0.1:"), "SRV_Peer gives the client's address");
  cli_close(c);
}

static void
test_framing(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  Resp r;

  cli_sends(c, "ping\n");
  cli_response(c, &r);
  is(r.final, "OK", "ping with LF");
  cli_sends(c, "ping\r\n");
  cli_response(c, &r);
  is(r.final, "OK", "ping with CRLF");
  is(cmd(c, "PING", NULL), "OK", "upper case command");
  is(cmd(c, "PiNg\r", NULL), "OK", "mixed case command with CRLF");
  is(cmd(c, "ECHO a B", NULL), "OK a B", "command word case-insensitive, arguments kept");
  is(cmd(c, " \t echo\t\t a  \t b \t", NULL), "OK a b", "extra spaces and tabs");

  cli_sends(c, "\n\r\n   \n\t\r\n \t \necho end\n");
  cli_response(c, &r);
  ok(strcmp(r.final, "OK end") == 0 && r.n == 0 && r.nev == 0,
     "empty and blank lines are ignored (first answer is the next command's)");

  cli_sends(c, "echo 1\necho 2\r\necho 3\n");
  cli_response(c, &r);
  is(r.final, "OK 1", "three requests in one packet: first");
  cli_response(c, &r);
  is(r.final, "OK 2", "three requests in one packet: second");
  cli_response(c, &r);
  is(r.final, "OK 3", "three requests in one packet: third");

  cli_sends(c, "ec");
  sleep_ms(50);
  cli_sends(c, "ho sp");
  sleep_ms(50);
  cli_sends(c, "lit\r");
  sleep_ms(50);
  cli_sends(c, "\n");
  cli_response(c, &r);
  is(r.final, "OK split", "a request split over several packets, CR and LF apart");

  is(cmd(c, "echo a\rb", NULL), "OK a?b", "a CR inside a line is data, echoed as '?'");
  cli_close(c);
}

static void
test_long_lines(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  static char big[200000];
  char want[1100];
  Resp r;

  memset(big, 'x', 5000);
  memcpy(big + 5000, "\nping\n", 6);
  cli_send(c, big, 5006);
  cli_response(c, &r);
  is(r.final, "ERR 413 line too long", "5000-byte line: 413");
  cli_response(c, &r);
  is(r.final, "OK", "the next request on the same connection works");

  memset(big, 'y', 3000);
  cli_send(c, big, 3000);
  sleep_ms(100);
  cli_send(c, big, 2999);
  cli_send(c, "\r", 1);
  sleep_ms(100);
  cli_sends(c, "\necho after\n");
  cli_response(c, &r);
  is(r.final, "ERR 413 line too long", "long line over several reads: one 413");
  cli_response(c, &r);
  is(r.final, "OK after", "the rest of the long line was discarded up to the newline");

  /* exactly SRV_LINE_MAX bytes is allowed, with LF or CRLF */
  memcpy(big, "echo ", 5);
  memset(big + 5, 'z', SRV_LINE_MAX - 5);
  memcpy(big + SRV_LINE_MAX, "\r\n", 2);
  cli_send(c, big, SRV_LINE_MAX + 2);
  cli_response(c, &r);
  snprintf(want, sizeof want, "OK %.*s", SRV_LINE_MAX - 5, big + 5);
  is(r.final, want, "a line of exactly 1024 bytes (CRLF) is accepted");
  big[SRV_LINE_MAX] = 'z';
  big[SRV_LINE_MAX + 1] = '\n';
  cli_send(c, big, SRV_LINE_MAX + 2);
  cli_response(c, &r);
  is(r.final, "ERR 413 line too long", "a line of 1025 bytes gets 413");

  memset(big, 'w', sizeof big);
  big[sizeof big - 1] = '\n';
  cli_send(c, big, sizeof big);
  cli_sends(c, "echo still\n");
  cli_response(c, &r);
  is(r.final, "ERR 413 line too long", "a 200 kB line: one 413");
  cli_response(c, &r);
  is(r.final, "OK still", "connection usable after the 200 kB line");
  cli_close(c);
}

/* Every kind of line the server formats (OK text, data lines, ERR text,
   events) comes out whole at any length: short lines are formatted on the
   stack, long ones on the heap, and the boundary between them is 511/512
   characters of text. */
static void
test_line_lengths(void)
{
  static const int lens[] = { 1, 509, 510, 511, 512, 513, 1000, SRV_LINE_MAX - 5 };
  Cli *c = cli_open(port_open, NULL, 0), *s = cli_open(port_open, NULL, 0);
  char word[SRV_LINE_MAX + 1], req[LINE], want[LINE], line[LINE];
  int bad_ok = 0, bad_data = 0, bad_event = 0, bad_err = 0;

  is(cmd(s, "sub", NULL), "OK", "a subscriber for the long events");
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    int n = lens[i];

    memset(word, 'a' + (int)i, (size_t)n);
    word[n] = '\0';
    snprintf(req, sizeof req, "echo %s", word);
    snprintf(want, sizeof want, "OK %s", word);
    if (strcmp(cmd(c, req, NULL), want) != 0)
      bad_ok++;

    /* "i=0 pad=" + n - 8 pads: a data line of exactly n characters */
    if (n >= 8 && n - 8 <= 1000) {
      char got[LINE];

      snprintf(req, sizeof req, "slow-data 1 %d\n", n - 8);
      cli_sends(c, req);
      if (cli_line(c, got, sizeof got, TIMEOUT_MS) != 1 || strlen(got) != (size_t)n ||
          strncmp(got, "i=0 pad=", 8) != 0 || strspn(got + 8, "p") != (size_t)n - 8)
        bad_data++;
      if (cli_line(c, got, sizeof got, TIMEOUT_MS) != 1 || strcmp(got, "OK") != 0)
        bad_data++;
    }

    /* an unknown command of n characters: the ERR quotes its first 32 */
    snprintf(want, sizeof want, "ERR 404 unknown command '%.32s", word);
    if (!starts(cmd(c, word, NULL), want))
      bad_err++;

    if (n <= SRV_LINE_MAX - 9) {
      snprintf(req, sizeof req, "pub -1 %s", word);
      cmd(c, req, NULL);
      snprintf(want, sizeof want, "* %s", word);
      if (cli_line(s, line, sizeof line, TIMEOUT_MS) != 1 || strcmp(line, want) != 0)
        bad_event++;
    }
  }
  ok(bad_ok == 0, "OK lines of 1..1019 characters of text come back whole (%d wrong)", bad_ok);
  ok(bad_data == 0, "data lines of 8..1008 characters come back whole (%d wrong)", bad_data);
  ok(bad_err == 0, "ERR lines quote unknown commands of 1..1019 characters (%d wrong)", bad_err);
  ok(bad_event == 0, "events of 1..1015 characters reach a subscriber whole (%d wrong)", bad_event);
  cli_close(s);
  cli_close(c);
}

static void
test_garbage(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  unsigned char junk[600];
  unsigned int x = 12345;
  Resp r;
  int printable = 1;

  for (int round = 0; round < 5; round++) {
    for (size_t i = 0; i < sizeof junk - 1; i++) {
      unsigned char b;
      do {
        x = x * 1103515245u + 12345u;
        b = (unsigned char)(x >> 16);
      } while (b == '\n' || b == 0xff || (b == 0 && round < 3));
      junk[i] = b;
    }
    junk[0] = 0x80 + (unsigned char)round;   /* never a real command word */
    junk[sizeof junk - 1] = '\n';
    cli_send(c, junk, sizeof junk);
    cli_sends(c, "ping\n");
    cli_response(c, &r);
    ok(starts(r.final, round < 3 ? "ERR 404 unknown command '\\x8" : "ERR 400 NUL byte") && r.n == 0,
       "binary garbage %d: one ERR (%.40s)", round, r.final);
    cli_response(c, &r);
    is(r.final, "OK", "connection alive after binary garbage");
  }

  /* A command word made of control and high bytes is echoed escaped. */
  {
    unsigned char w[64];
    size_t n = 0;

    for (unsigned b = 1; b < 32 && n < 40; b++)
      if (b != '\n' && b != ' ' && b != '\t')
        w[n++] = (unsigned char)b;
    w[n++] = 0xc3;
    w[n++] = '\n';
    cli_send(c, w, n);
    cli_response(c, &r);
    for (const char *p = r.final; *p; p++)
      if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
        printable = 0;
    ok(starts(r.final, "ERR 404 unknown command '\\x01\\x02") && printable,
       "unknown command with control bytes: 404, name escaped to printable ASCII");
  }

  cli_send(c, "pi\0ng\n", 6);
  cli_response(c, &r);
  is(r.final, "ERR 400 NUL byte in request", "NUL byte in a line: 400");
  cli_send(c, "echo a\0\r\n", 9);
  cli_response(c, &r);
  is(r.final, "ERR 400 NUL byte in request", "NUL byte at the end of a line: 400");
  is(cmd(c, "ping", NULL), "OK", "connection alive after NUL bytes");
  cli_close(c);
}

static void
test_telnet(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  Resp r;

  cli_sends(c, "\xff\xfd\x03\xff\xfb\x18\xff\xfb\x1fpi\xff\xf1ng\r\n");
  cli_response(c, &r);
  is(r.final, "OK", "telnet negotiation and NOP inside a command are ignored");
  {
    static const char sb[] = "\xff\xfa\x18\x00xterm\xff\xf0""echo t\n";
    cli_send(c, sb, sizeof sb - 1);
  }
  cli_response(c, &r);
  is(r.final, "OK t", "telnet subnegotiation (with a NUL in it) is ignored");
  cli_sends(c, "\xff");
  sleep_ms(50);
  cli_sends(c, "\xfb");
  sleep_ms(50);
  cli_sends(c, "\x01""echo s\n");
  cli_response(c, &r);
  is(r.final, "OK s", "a telnet command split over three packets is ignored");
  cli_send(c, "\xff\xfa\x1f\x00\x50", 5);
  sleep_ms(50);
  cli_send(c, "\x00\x18\xff", 3);
  sleep_ms(50);
  cli_sends(c, "\xf0""echo sb\n");
  cli_response(c, &r);
  is(r.final, "OK sb", "a subnegotiation split over packets is ignored");
  is(cmd(c, "echo a\xff\xff" "b", NULL), "OK a\xff" "b", "IAC IAC is a literal 255 byte");
  cli_close(c);
}

static void
test_errors(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  Resp r;
  int all_cmd = 1, sorted = 1, has_auth = 0, has_echo = 0, has_version = 0;

  is(cmd(c, "frobnicate", NULL), "ERR 404 unknown command 'frobnicate'", "unknown command: 404");
  is(cmd(c, "ctl x", NULL), "ERR 400 usage: ctl", "too many arguments: 400 with usage");
  is(cmd(c, "slow-data", NULL), "ERR 400 usage: slow-data <n> [size]", "too few arguments: 400 with usage");
  is(cmd(c, "ping extra", NULL), "ERR 400 usage: ping", "built-in with an argument: 400");
  is(cmd(c, "forget", NULL), "ERR 500 internal error", "handler without a final line: ERR 500");
  is(cmd(c, "ping", NULL), "OK", "next request after 500");
  cmd(c, "twice", &r);
  ok(strcmp(r.final, "OK first") == 0 && r.n == 0, "handler answering twice: only the first final line");
  is(cmd(c, "echo next", NULL), "OK next", "nothing extra was sent after it");

  cmd(c, "baddata", &r);
  {
    int fine = r.n == 8;
    for (int i = 0; i < r.n && i < 64; i++)
      if (r.data[i][0] == '\0' || starts(r.data[i], "OK") || starts(r.data[i], "ERR") ||
          starts(r.data[i], "*"))
        fine = 0;
    ok(fine && strcmp(r.final, "OK x?y") == 0,
       "data lines never empty or beginning with OK/ERR/*; newlines cannot split a line");
    if (!fine)
      for (int i = 0; i < r.n && i < 64; i++)
        diag("data: '%s'", r.data[i]);
  }
  is(r.data[4], "a=1?OK b=2", "a newline in a data line is sent as '?'");
  is(r.data[5], "b=1?c=2 OK", "SRV_Sanitize + SRV_DataLine: a tab sent as '?'");
  is(r.data[6], "data=OK preformatted", "SRV_DataLine: a line beginning with OK gets data=");
  is(r.data[7], "d=3", "SRV_DataLine sends len bytes and a newline");

  cmd(c, "help", &r);
  for (int i = 0; i < r.n && i < 64; i++) {
    if (!starts(r.data[i], "command="))
      all_cmd = 0;
    if (i > 0 && strcmp(r.data[i - 1], r.data[i]) >= 0)
      sorted = 0;
    has_auth |= starts(r.data[i], "command=auth role=any help=");
    has_echo |= strcmp(r.data[i], "command=echo role=monitor help=answer OK with the words") == 0;
    has_version |= starts(r.data[i], "command=version role=any");
  }
  ok(strcmp(r.final, "OK") == 0 && all_cmd && sorted && r.n == N_TABLE - 1 + 5,
     "help: one 'command=<name> role=<role> help=<text>' line per command, sorted (%d lines)", r.n);
  ok(has_auth && has_echo && has_version, "help lists built-ins and the table");

  cmd(c, "HELP Slow-Data", &r);
  ok(strcmp(r.final, "OK") == 0 && r.n == 3 &&
     strcmp(r.data[0], "command=slow-data role=monitor") == 0 &&
     strcmp(r.data[1], "usage=slow-data <n> [size]") == 0 &&
     strcmp(r.data[2], "help=n data lines") == 0, "help <command>: command, usage and help lines");
  is(cmd(c, "help nosuch", NULL), "ERR 404 unknown command 'nosuch'", "help for an unknown command: 404");

  cmd(c, "version", &r);
  ok(strcmp(r.final, "OK") == 0 && r.n == 1 &&
     strcmp(r.data[0], "version=" PACKAGE_VERSION " protocol=1") == 0, "version data line");
  is(cmd(c, "role", NULL), "OK role=control", "no tokens: every connection is control");
  is(cmd(c, "auth anything", NULL), "OK role=control", "auth without tokens configured: OK role=control");
  is(cmd(c, "ctl", NULL), "OK ctl", "control command allowed");
  cli_close(c);
}

static void
test_auth(void)
{
  char g[LINE];
  Cli *c = cli_open(port_auth, g, sizeof g), *d, *e;
  Resp r;

  ok(c && starts(g, "* wavelock "), "auth server greets before authentication");
  is(cmd(c, "echo x", NULL), "ERR 401 authentication required (auth <token>)",
     "monitor command before auth: 401");
  is(cmd(c, "ctl", NULL), "ERR 401 authentication required (auth <token>)",
     "control command before auth: 401");
  is(cmd(c, "ping", NULL), "OK", "ping needs no auth");
  cmd(c, "help", &r);
  is(r.final, "OK", "help needs no auth");
  cmd(c, "version", &r);
  is(r.final, "OK", "version needs no auth");
  is(cmd(c, "auth", NULL), "ERR 400 usage: auth <token>", "auth without a token: 400");
  is(cmd(c, "auth wrong-secret", NULL), "ERR 401 invalid token", "wrong token: 401");
  is(cmd(c, "AUTH mon-secret", NULL), "OK role=monitor", "monitor token: OK role=monitor");
  is(cmd(c, "echo x", NULL), "OK x", "monitor may read");
  is(cmd(c, "ctl", NULL), "ERR 403 not permitted for role monitor", "monitor on a control command: 403");
  is(cmd(c, "auth ctl-secret", NULL), "OK role=control", "control token: OK role=control");
  is(cmd(c, "ctl", NULL), "OK ctl", "control may change");
  is(cmd(c, "auth mon-secret", NULL), "OK role=monitor", "auth again with the monitor token lowers the role");
  is(cmd(c, "ctl", NULL), "ERR 403 not permitted for role monitor", "and control commands are refused again");
  cli_close(c);

  /* Rate limit: after SRV_AUTH_FREE_TRIES failures, refused for a while. */
  d = cli_open(port_auth, NULL, 0);
  e = cli_open(port_auth, NULL, 0);
  for (int i = 0; i < SRV_AUTH_FREE_TRIES; i++)
    is(cmd(d, "auth guess", NULL), "ERR 401 invalid token", "failed attempt answered 401");
  ok(starts(cmd(d, "auth ctl-secret", NULL), "ERR 429 too many failed auth attempts, retry in "),
     "after 3 failures even the right token is refused (429)");
  is(cmd(d, "echo x", NULL), "ERR 401 authentication required (auth <token>)",
     "still unauthenticated while blocked");
  is(cmd(e, "auth ctl-secret", NULL), "OK role=control", "the limit is per connection");
  sleep_ms(SRV_AUTH_DELAY_S * 1000 + 500);
  is(cmd(d, "auth guess2", NULL), "ERR 401 invalid token", "after the delay attempts are heard again");
  {
    const char *f = cmd(d, "auth ctl-secret", NULL);
    const char *p = strstr(f, "retry in ");
    long wait = p ? strtol(p + 9, NULL, 10) : 0;

    ok(starts(f, "ERR 429") && wait > SRV_AUTH_DELAY_S && wait <= 2 * SRV_AUTH_DELAY_S,
       "another failure blocks for longer (%s)", f);
  }
  cli_close(d);
  cli_close(e);
}

static void
test_max_clients(void)
{
  Cli *c1 = cli_open(port_small, NULL, 0), *c2 = cli_open(port_small, NULL, 0);
  Cli *c3 = cli_new(port_small, 0), *c4, *c5, *c6;
  char first[LINE];

  ok(c1 && c2, "max_clients=2: two clients connect");
  ok(c3 && cli_wait_eof(c3, TIMEOUT_MS, first, sizeof first), "the third is closed");
  is(first, "ERR 429 too many connections", "... after ERR 429 too many connections");
  cli_close(c3);
  ok(stat_of(c1, "clients", 0) == 2 && stat_of(c1, "rejected", 0) == 1,
     "the refused connection was not counted as a client");
  cli_close(c1);
  {
    double end = UTL_Now() + 10;
    while (stat_of(c2, "clients", 0) != 1 && UTL_Now() < end)
      sleep_ms(20);
  }
  ok(stat_of(c2, "clients", 0) == 1, "a closed client is forgotten");
  c4 = cli_open(port_small, first, sizeof first);
  ok(c4 && starts(first, "* wavelock"), "a new client fits again");

  is(cmd(c2, "reconf max3", NULL), "OK", "reconfigure max_clients=3");
  c5 = cli_open(port_small, first, sizeof first);
  ok(c5 && starts(first, "* wavelock"), "a third client now fits");
  c6 = cli_new(port_small, 0);
  ok(c6 && cli_wait_eof(c6, TIMEOUT_MS, first, sizeof first) &&
     strcmp(first, "ERR 429 too many connections") == 0, "the fourth is refused");
  cli_close(c6);

  is(cmd(c2, "reconf tokens", NULL), "OK", "reconfigure with tokens");
  is(cmd(c2, "echo x", NULL), "ERR 401 authentication required (auth <token>)",
     "connections that were control without tokens must now authenticate");
  is(cmd(c2, "auth ctl-secret", NULL), "OK role=control", "and can");
  is(cmd(c2, "reconf max3", NULL), "OK", "reconfigure back without tokens");
  is(cmd(c4, "role", NULL), "OK role=control", "without tokens everyone is control again");
  is(cmd(c2, "reconf tokens", NULL), "OK", "tokens once more");
  is(cmd(c2, "role", NULL), "OK role=control", "a connection keeps the role of a token that still exists");
  is(cmd(c5, "echo", NULL), "ERR 401 authentication required (auth <token>)",
     "an unauthenticated one does not");
  is(cmd(c2, "reconf small", NULL), "OK", "back to the original config");
  cli_close(c2);
  cli_close(c4);
  cli_close(c5);
}

/* 50 clients, each pipelining many requests in one write. */
#define N_PIPE 50
#define N_REQ 400

static void *
pipeline_client(void *arg)
{
  long id = (long)arg, bad = 0;
  Cli *c = cli_open(port_open, NULL, 0);
  static __thread char out[N_REQ * 32];
  size_t o = 0;
  Resp r;

  for (int k = 0; k < N_REQ; k++) {
    if (k % 10 == 3)
      o += (size_t)snprintf(out + o, sizeof out - o, "slow-data 3\n");
    else if (k % 10 == 7)
      o += (size_t)snprintf(out + o, sizeof out - o, "nosuch %d\r\n", k);
    else
      o += (size_t)snprintf(out + o, sizeof out - o, "%s %ld %d\n", k & 1 ? "ECHO" : "echo", id, k);
  }
  if (cli_send(c, out, o) != 0)
    bad = N_REQ;
  for (int k = 0; k < N_REQ && !bad; k++) {
    char want[64];

    if (cli_response(c, &r) != 0) {
      bad += N_REQ - k;
      break;
    }
    if (k % 10 == 3) {
      if (strcmp(r.final, "OK") != 0 || r.n != 3 || strcmp(r.data[2], "i=2 pad=") != 0)
        bad++;
      continue;
    }
    if (k % 10 == 7)
      snprintf(want, sizeof want, "ERR 404 unknown command 'nosuch'");
    else
      snprintf(want, sizeof want, "OK %ld %d", id, k);
    if (strcmp(r.final, want) != 0 || r.n != 0) {
      if (bad == 0)
        diag("client %ld request %d: got '%s' want '%s'", id, k, r.final, want);
      bad++;
    }
  }
  cli_close(c);
  return (void *)bad;
}

static void
test_pipelining(void)
{
  pthread_t th[N_PIPE];
  long bad = 0;

  for (long i = 0; i < N_PIPE; i++)
    pthread_create(&th[i], NULL, pipeline_client, (void *)i);
  for (int i = 0; i < N_PIPE; i++) {
    void *ret;
    pthread_join(th[i], &ret);
    bad += (long)ret;
  }
  ok(bad == 0, "%d concurrent clients x %d pipelined requests: exactly one final line each, in order (%ld wrong)",
     N_PIPE, N_REQ, bad);
}

/* A client that pipelines requests but never reads: the server stops
   reading from it instead of buffering its answers without bound.  Answers
   are 10 kB so that the kernel's socket buffers (megabytes on loopback)
   fill and the server's own buffer is reached. */
#define BP_LINES 10
#define BP_ANSWER (BP_LINES * 1012 + 8)
static void
test_backpressure(void)
{
  Cli *p = cli_new(port_open, 4096), *s = cli_open(port_open, NULL, 0);
  char req[160], line[LINE];
  long sent_req = 0, answered = 0, bad = 0, peak, cur;
  size_t reqlen, partial = 0;
  int flags;

  snprintf(req, sizeof req, "slow-data %d 1000%*s\n", BP_LINES, 100, "");
  reqlen = strlen(req);
  cli_line(p, line, sizeof line, TIMEOUT_MS);          /* greeting */
  stat_of(s, "out_peak", 1);
  flags = fcntl(p->fd, F_GETFL);
  fcntl(p->fd, F_SETFL, flags | O_NONBLOCK);
  for (;;) {
    struct pollfd pf = { p->fd, POLLOUT, 0 };
    ssize_t w;

    if (sent_req >= 1000)
      break;
    if (poll(&pf, 1, 500) <= 0)
      break;                                       /* stalled: the server stopped reading */
    w = send(p->fd, req + partial, reqlen - partial, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR)
        continue;
      break;
    }
    partial += (size_t)w;
    if (partial == reqlen) {
      partial = 0;
      sent_req++;
    }
  }
  {
    double end = UTL_Now() + 10;
    while ((peak = stat_of(s, "out_peak", 0)) < SRV_OUTPUT_PAUSE && UTL_Now() < end)
      sleep_ms(20);
  }
  cur = stat_of(s, "out_max", 0);
  diag("non-reader: %ld requests sent before the send stalled; server output now %ld, peak %ld",
       sent_req, cur, peak);
  ok(peak >= SRV_OUTPUT_PAUSE, "the non-reading client's answers did back up in the server (peak %ld bytes)", peak);
  ok(peak > 0 && peak <= SRV_OUTPUT_PAUSE + BP_ANSWER,
     "its buffered output stayed under SRV_OUTPUT_PAUSE plus one answer (%ld <= %d)",
     peak, SRV_OUTPUT_PAUSE + BP_ANSWER);
  is(cmd(s, "ping", NULL), "OK", "other clients are served meanwhile");

  /* Now read everything: every request sent gets its whole answer. */
  fcntl(p->fd, F_SETFL, flags);
  if (partial > 0 && cli_send(p, req + partial, reqlen - partial) == 0) {
    partial = 0;
    sent_req++;
  }
  while (answered < sent_req) {
    Resp r;

    if (cli_response(p, &r) != 0)
      break;
    if (strcmp(r.final, "OK") != 0 || r.n != BP_LINES)
      bad++;
    answered++;
  }
  ok(answered == sent_req && bad == 0, "after draining, all %ld requests were answered in full (%ld, %ld bad)",
     sent_req, answered, bad);
  peak = stat_of(s, "out_peak", 0);
  ok(peak <= SRV_OUTPUT_PAUSE + BP_ANSWER, "output peak over the whole exchange %ld", peak);
  cli_close(p);
  cli_close(s);
}

static void
test_subscribe(void)
{
  Cli *s = cli_open(port_open, NULL, 0), *p = cli_open(port_open, NULL, 0);
  Resp r;
  char line[LINE];

  is(cmd(s, "sub 1", NULL), "OK", "subscribe to laser 1");
  ok(stat_of(p, "subscribers", 0) == 1, "one subscriber");
  cmd(p, "pub 0 a", NULL);
  cmd(p, "pub 1 b", NULL);
  cmd(p, "pub -1 c", NULL);
  cmd(p, "pub 2 d", NULL);
  cmd(s, "ping", &r);
  ok(strcmp(r.final, "OK") == 0 && r.nev == 2 && strcmp(r.ev[0], "* b") == 0 &&
     strcmp(r.ev[1], "* c") == 0, "events filtered by laser; -1 goes to all (%d events)", r.nev);

  cmd(s, "pubdata 1 self", &r);
  ok(strcmp(r.final, "OK") == 0 && r.n == 3 && r.nev == 0,
     "an event published during a response is not written inside it");
  ok(cli_line(s, line, sizeof line, TIMEOUT_MS) == 1 && strcmp(line, "* self") == 0,
     "it follows the final line");

  is(cmd(s, "unsub", NULL), "OK", "unsubscribe");
  cmd(p, "pub 1 e", NULL);
  cmd(s, "ping", &r);
  ok(r.nev == 0, "no events after unsubscribe");
  ok(stat_of(p, "subscribers", 0) == 0, "no subscribers");
  cmd(s, "sub", NULL);
  cmd(s, "sub", NULL);
  ok(stat_of(p, "subscribers", 0) == 1, "subscribing twice counts once");
  cmd(p, "pub 3 f", NULL);
  cmd(s, "ping", &r);
  ok(r.nev == 1 && strcmp(r.ev[0], "* f") == 0, "subscribe to all lasers");
  cli_close(s);
  {
    double end = UTL_Now() + 10;
    while (stat_of(p, "subscribers", 0) != 0 && UTL_Now() < end)
      sleep_ms(20);
  }
  ok(stat_of(p, "subscribers", 0) == 0, "a closed subscriber is removed");
  cli_close(p);
}

/* A subscriber that never reads while events pour out. */
static void
test_slow_subscriber(void)
{
  Cli *sl = cli_new(port_open, 4096), *p = cli_open(port_open, NULL, 0);
  char line[LINE];
  long dropped = 0, peak = 0, pings_bad = 0, seen_dropped = 0, expected = -1;
  long lost = 0, events = 0, final_seq;
  double t0, end;
  Resp r;

  cli_line(sl, line, sizeof line, TIMEOUT_MS);
  is(cmd(sl, "sub", NULL), "OK", "slow subscriber subscribes, then stops reading");
  stat_of(p, "out_peak", 1);
  is(cmd(p, "flood on", NULL), "OK seq=0", "events published continuously");
  t0 = UTL_Now();
  end = t0 + 30;
  while (UTL_Now() < end) {
    long pk;

    sleep_ms(100);
    if (strcmp(cmd(p, "echo alive", NULL), "OK alive") != 0)
      pings_bad++;
    dropped = stat_of(p, "dropped", 0);
    pk = stat_of(p, "out_peak", 0);
    if (pk > peak)
      peak = pk;
    if (dropped > 5000 && UTL_Now() - t0 > 1.5)
      break;
  }
  cmd(p, "flood off", &r);
  diag("flood: %s events published, %ld dropped, output peak %ld bytes", r.final + 7, dropped, peak);
  ok(dropped > 0, "events to the non-reading subscriber were dropped (%ld)", dropped);
  ok(peak > SRV_OUTPUT_MAX / 2 && peak <= SRV_OUTPUT_MAX,
     "its buffered output filled up to but never beyond SRV_OUTPUT_MAX (%ld <= %d)", peak, SRV_OUTPUT_MAX);
  ok(pings_bad == 0, "other clients were served throughout");

  /* Drain: events arrive in order, with every gap announced by a dropped line. */
  end = UTL_Now() + 30;
  while (seen_dropped == 0 && UTL_Now() < end) {
    if (cli_line(sl, line, sizeof line, TIMEOUT_MS) != 1)
      break;
    if (starts(line, "* ev seq=")) {
      long seq = strtol(line + 9, NULL, 10);
      if (expected >= 0 && seq != expected)
        lost++;
      expected = seq + 1;
      events++;
    } else if (starts(line, "* dropped n=")) {
      seen_dropped++;
      expected += strtol(line + 12, NULL, 10);
    }
  }
  ok(seen_dropped > 0, "after draining, the subscriber is told '* dropped n=<count>'");
  {
    const char *f = cmd(p, "flood tick", NULL);
    final_seq = starts(f, "OK seq=") ? strtol(f + 7, NULL, 10) : -2;
  }
  while (UTL_Now() < end) {
    if (cli_line(sl, line, sizeof line, TIMEOUT_MS) != 1)
      break;
    if (starts(line, "* ev seq=")) {
      long seq = strtol(line + 9, NULL, 10);
      if (seq != expected)
        lost++;
      expected = seq + 1;
      events++;
      if (seq == final_seq)
        break;
    } else if (starts(line, "* dropped n=")) {
      seen_dropped++;
      expected += strtol(line + 12, NULL, 10);
    }
  }
  diag("subscriber received %ld events and %ld dropped notices", events, seen_dropped);
  ok(lost == 0 && expected == final_seq + 1,
     "every event was either delivered in order or counted in a dropped line (%ld unaccounted)", lost);
  is(cmd(sl, "ping", NULL), "OK", "the slow subscriber works normally afterwards");
  cli_close(sl);
  cli_close(p);
}

static void
test_timeouts(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  char first[LINE];
  double t0, dt;
  int sends = 0;

  /* partial line then silence (line_timeout_s = 1) */
  cli_sends(c, "pin");
  t0 = UTL_Now();
  ok(cli_wait_eof(c, TIMEOUT_MS, NULL, 0), "a partial line stalled for line_timeout_s: closed");
  dt = UTL_Now() - t0;
  ok(dt > 0.8, "... not before the timeout (%.2f s)", dt);
  cli_close(c);

  /* slowloris: one byte every 250 ms never completes a line */
  c = cli_open(port_open, NULL, 0);
  for (sends = 0; sends < 40; sends++) {
    char line[LINE];
    if (cli_sends(c, "x") != 0)
      break;
    if (cli_line(c, line, sizeof line, 250) == 0)
      break;
  }
  ok(sends < 40, "a line dribbled one byte at a time is timed out (after %d bytes)", sends);
  cli_close(c);

  /* the same inside a too-long line being discarded */
  c = cli_open(port_open, NULL, 0);
  {
    char big[2000];
    Resp r;

    memset(big, 'q', sizeof big);
    cli_send(c, big, sizeof big);
    cli_response(c, &r);
    is(r.final, "ERR 413 line too long", "413 for the long line");
    for (sends = 0; sends < 40; sends++) {
      char line[LINE];
      if (cli_sends(c, "q") != 0)
        break;
      if (cli_line(c, line, sizeof line, 250) == 0)
        break;
    }
    ok(sends < 40, "a too-long line that never ends is timed out too (after %d bytes)", sends);
  }
  cli_close(c);

  /* complete lines at a slow pace are fine */
  c = cli_open(port_open, NULL, 0);
  {
    int good = 0;
    for (int i = 0; i < 6; i++) {
      sleep_ms(400);
      good += strcmp(cmd(c, "ping", NULL), "OK") == 0;
    }
    ok(good == 6, "complete requests every 0.4 s for 2.4 s keep the connection");
  }
  cli_close(c);

  /* idle timeout (idle_timeout_s = 2) */
  c = cli_open(port_idle, NULL, 0);
  t0 = UTL_Now();
  ok(cli_wait_eof(c, TIMEOUT_MS, first, sizeof first), "an idle connection is closed");
  dt = UTL_Now() - t0;
  is(first, "* closing: idle timeout", "... with a notice");
  ok(dt > 1.8, "... not before idle_timeout_s (%.2f s)", dt);
  cli_close(c);
  c = cli_open(port_idle, NULL, 0);
  {
    int good = 0;
    for (int i = 0; i < 9; i++) {
      sleep_ms(300);
      good += strcmp(cmd(c, "ping", NULL), "OK") == 0;
    }
    ok(good == 9, "requests every 0.3 s for 2.7 s keep an idle_timeout_s=2 connection");
  }
  is(cmd(c, "sub", NULL), "OK", "subscribe");
  sleep_ms(3500);
  is(cmd(c, "ping", NULL), "OK", "a subscriber that reads is not closed for being quiet");
  cli_close(c);
}

static void
test_quit(void)
{
  Cli *c = cli_open(port_open, NULL, 0);
  char first[LINE];

  cli_sends(c, "quit\nping\n");
  ok(cli_wait_eof(c, TIMEOUT_MS, first, sizeof first), "quit closes the connection");
  is(first, "OK", "... after OK, and nothing after it is answered");
  cli_close(c);

  c = cli_open(port_open, NULL, 0);
  {
    Resp r;
    char line[LINE];

    cli_sends(c, "QUIT\r\n");
    cli_response(c, &r);
    is(r.final, "OK", "QUIT in capitals");
    ok(cli_line(c, line, sizeof line, TIMEOUT_MS) == 0, "then EOF");
  }
  cli_close(c);

  c = cli_open(port_open, NULL, 0);
  {
    Resp r;
    char line[LINE];

    cli_sends(c, "echo a\necho b");
    shutdown(c->fd, SHUT_WR);
    cli_response(c, &r);
    is(r.final, "OK a", "after the client shuts down its side, pending requests are answered");
    cli_response(c, &r);
    is(r.final, "OK b", "... including a last line without a newline");
    ok(cli_line(c, line, sizeof line, TIMEOUT_MS) == 0, "then the server closes");
  }
  cli_close(c);
}

static void
test_stop_listening(void)
{
  Cli *c = cli_open(port_stop, NULL, 0);
  int fd;

  ok(c != NULL, "connect to a fourth server");
  is(cmd(c, "stoplisten", NULL), "OK", "SRV_StopListening from a handler");
  fd = tcp_connect(port_stop, 0);
  ok(fd < 0, "new connections are refused");
  if (fd >= 0)
    close(fd);
  is(cmd(c, "ping", NULL), "OK", "existing connections carry on");
  cli_close(c);
}

/* Many connections held open at once; the server keeps serving. */
static void
test_many(void)
{
  static int fds[N_MANY];
  struct rlimit rl;
  int opened = 0, greeted = 0, answered = 0;
  Cli *c;

  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * N_MANY + 200) {
    rl.rlim_cur = rl.rlim_max < 2 * N_MANY + 200 ? rl.rlim_max : 2 * N_MANY + 200;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 2 * N_MANY + 100) {
    ok(1, "# SKIP %d connections: file descriptor limit %lu", N_MANY, (unsigned long)rl.rlim_cur);
    return;
  }
  for (int i = 0; i < N_MANY; i++) {
    fds[i] = tcp_connect(port_many, 0);
    if (fds[i] >= 0)
      opened++;
  }
  for (int i = 0; i < N_MANY; i++) {
    char buf[128];
    struct pollfd p = { fds[i], POLLIN, 0 };

    if (fds[i] >= 0 && poll(&p, 1, TIMEOUT_MS) == 1 && recv(fds[i], buf, sizeof buf, 0) > 0 &&
        buf[0] == '*')
      greeted++;
  }
  ok(opened == N_MANY && greeted == N_MANY, "%d simultaneous connections accepted and greeted (%d, %d)",
     N_MANY, opened, greeted);
  c = cli_open(port_many, NULL, 0);
  is(cmd(c, "ping", NULL), "OK", "one more client is served");
  ok(stat_of(c, "clients", 0) == N_MANY + 1, "the server counts them all");
  for (int i = 0; i < N_MANY; i += N_MANY / 20) {
    char buf[128];
    struct pollfd p = { fds[i], POLLIN, 0 };
    ssize_t r;

    if (send(fds[i], "ping\n", 5, MSG_NOSIGNAL) == 5 && poll(&p, 1, TIMEOUT_MS) == 1 &&
        (r = recv(fds[i], buf, sizeof buf - 1, 0)) == 3 && memcmp(buf, "OK\n", 3) == 0)
      answered++;
  }
  ok(answered == 20, "every 50th of them answers ping (%d of 20)", answered);
  for (int i = 0; i < N_MANY; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  {
    double end = UTL_Now() + 20;
    while (stat_of(c, "clients", 0) != 1 && UTL_Now() < end)
      sleep_ms(50);
  }
  ok(stat_of(c, "clients", 0) == 1, "all of them are gone after they close");
  cli_close(c);
}

/* Before the loop runs: SRV_Create's errors and listen variants. */
static void
test_create_errors(void)
{
  CNF_Server cfg;
  char err[256];
  SRV_Server *s;
  char busy[64];

  base_cfg(&cfg);
  snprintf(cfg.listen[0], sizeof cfg.listen[0], "nonsense");
  err[0] = '\0';
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  ok(!s && strstr(err, "server.listen") && strstr(err, "nonsense"),
     "a listen entry without a port is refused: %s", err);
  SRV_Destroy(s);

  snprintf(busy, sizeof busy, "127.0.0.1:%d", port_open);
  snprintf(cfg.listen[0], sizeof cfg.listen[0], "%s", busy);
  err[0] = '\0';
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  ok(!s && strstr(err, busy) != NULL, "a busy port is refused: %s", err);
  SRV_Destroy(s);

  {
    SRV_Command dup[2] = { table[0], table[0] };
    snprintf(cfg.listen[0], sizeof cfg.listen[0], "127.0.0.1:0");
    err[0] = '\0';
    s = SRV_Create(base, &cfg, dup, 2, NULL, err, sizeof err);
    ok(!s && strstr(err, "twice"), "a command listed twice is refused: %s", err);
    SRV_Destroy(s);
  }

  snprintf(cfg.listen[0], sizeof cfg.listen[0], "127.0.0.1:0");
  snprintf(cfg.listen[1], sizeof cfg.listen[1], "127.0.0.1:0");
  cfg.n_listen = 2;
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  ok(s && SRV_ListenerCount(s) == 2 && SRV_BoundPort(s, 0) > 0 && SRV_BoundPort(s, 1) > 0 &&
     SRV_BoundPort(s, 0) != SRV_BoundPort(s, 1) && SRV_BoundPort(s, 2) == -1,
     "two listen entries with port 0: two listeners on their own ports");
  SRV_Destroy(s);

  cfg.n_listen = 1;
  snprintf(cfg.listen[0], sizeof cfg.listen[0], "localhost:0");
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  {
    int same = s != NULL;
    for (int i = 1; s && i < SRV_ListenerCount(s); i++)
      same &= SRV_BoundPort(s, i) == SRV_BoundPort(s, 0);
    ok(same && SRV_ListenerCount(s) >= 1, "localhost:0 binds each address of localhost (%d) on one port",
       s ? SRV_ListenerCount(s) : 0);
  }
  SRV_Destroy(s);

  snprintf(cfg.listen[0], sizeof cfg.listen[0], "[::1]:0");
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  if (!s)
    diag("skip: no IPv6 loopback here (%s)", err);
  else
    ok(SRV_ListenerCount(s) == 1 && SRV_BoundPort(s, 0) > 0, "[::1]:0 listens on IPv6");
  SRV_Destroy(s);
}

/* Virtual connections (as MQTT commands use): the same parser, role checks
   and handlers, answers collected in memory. */
static const char *
vrun(SRV_Conn *v, const char *line, char *out, size_t outlen)
{
  int rc = SRV_VirtualRun(v, line, strlen(line));

  SRV_VirtualTake(v, out, outlen);
  return rc == 1 ? out : "(not answered)";
}

static void
test_virtual(void)
{
  CNF_Server cfg;
  char err[256], out[4096], longline[SRV_LINE_MAX + 64];
  SRV_Server *s;
  SRV_Conn *v;

  base_cfg(&cfg);
  s = SRV_Create(base, &cfg, table, N_TABLE, NULL, err, sizeof err);
  if (!s) {
    ok(0, "virtual: server: %s", err);
    return;
  }
  v = SRV_VirtualNew(s, CNF_ROLE_MONITOR, "mqtt", NULL, NULL);
  ok(v != NULL, "a virtual connection is made");
  ok(strcmp(vrun(v, "echo a  b", out, sizeof out), "OK a b\n") == 0,
     "virtual: a command runs through the table: %s", out);
  ok(strncmp(vrun(v, "ctl", out, sizeof out), "ERR 403 ", 8) == 0,
     "virtual: roles are checked (monitor may not ctl): %s", out);
  ok(strncmp(vrun(v, "nosuch", out, sizeof out), "ERR 404 ", 8) == 0,
     "virtual: an unknown command gets 404: %s", out);
  memset(longline, 'x', sizeof longline - 1);
  longline[sizeof longline - 1] = '\0';
  ok(strncmp(vrun(v, longline, out, sizeof out), "ERR 413 ", 8) == 0,
     "virtual: a line over %d bytes gets 413: %s", SRV_LINE_MAX, out);
  ok(strncmp(vrun(v, "sub", out, sizeof out), "OK", 2) == 0 && SRV_SubscriberCount(s) == 0,
     "virtual: subscribing makes no subscriber");
  ok(strncmp(vrun(v, "forget", out, sizeof out), "ERR 500 ", 8) == 0,
     "virtual: a handler without a final line gets 500: %s", out);
  ok(strcmp(vrun(v, "quit", out, sizeof out), "OK\n") == 0 &&
     strcmp(vrun(v, "echo still", out, sizeof out), "OK still\n") == 0,
     "virtual: quit answers OK and the connection stays usable");
  ok(strncmp(vrun(v, "slow-data 3", out, sizeof out), "", 0) == 0 &&
     strstr(out, "\nOK") != NULL, "virtual: data lines then the final line are collected");
  SRV_SetName(v, "alice");
  ok(strcmp(SRV_Name(v), "alice") == 0, "virtual: the connection carries a name for claims");
  ok(SRV_ClientCount(s) == 0, "virtual: not counted as a client");
  SRV_VirtualFree(v);
  v = SRV_VirtualNew(s, CNF_ROLE_CONTROL, "mqtt", NULL, NULL);
  ok(v && strcmp(vrun(v, "ctl", out, sizeof out), "OK ctl\n") == 0,
     "virtual: with the control role ctl runs: %s", out);
  SRV_VirtualFree(v);
  SRV_Destroy(s);
}

int
main(void)
{
  pthread_t th;
  LOG_Level level = getenv("WL_TEST_DEBUG") ? LOG_LV_DEBUG : LOG_LV_ERROR;

  signal(SIGPIPE, SIG_IGN);
  LOG_Open("test_srv_net", 0, level);
  evthread_use_pthreads();
  base = event_base_new();
  memset(flood_pad, 'f', sizeof flood_pad - 1);

  base_cfg(&cfg_open);
  base_cfg(&cfg_auth);
  add_tokens(&cfg_auth);
  base_cfg(&cfg_small);
  cfg_small.max_clients = 2;
  cfg_small3 = cfg_small;
  cfg_small3.max_clients = 3;
  cfg_tokens = cfg_small3;
  add_tokens(&cfg_tokens);
  base_cfg(&cfg_idle);
  cfg_idle.idle_timeout_s = 2;
  cfg_idle.line_timeout_s = 30;

  port_open = start_server(&ctx_open, &cfg_open);
  port_auth = start_server(&ctx_auth, &cfg_auth);
  port_small = start_server(&ctx_small, &cfg_small);
  port_idle = start_server(&ctx_idle, &cfg_idle);
  port_stop = start_server(&ctx_stop, &cfg_open);
  base_cfg(&cfg_many);
  cfg_many.max_clients = N_MANY + 10;
  cfg_many.line_timeout_s = 30;
  port_many = start_server(&ctx_many, &cfg_many);
  if (port_open <= 0 || port_auth <= 0 || port_small <= 0 || port_idle <= 0 || port_stop <= 0 ||
      port_many <= 0) {
    printf("Bail out! servers did not start\n");
    return 1;
  }
  test_create_errors();
  test_virtual();

  stop_ev = event_new(base, -1, 0, stop_cb, NULL);
  pthread_create(&th, NULL, loop_thread, NULL);

  {
    static const struct { const char *name; void (*fn)(void); } tests[] = {
      { "greeting", test_greeting }, { "framing", test_framing },
      { "long lines", test_long_lines }, { "line lengths", test_line_lengths },
      { "garbage", test_garbage },
      { "telnet", test_telnet }, { "errors", test_errors }, { "auth", test_auth },
      { "max_clients", test_max_clients }, { "pipelining", test_pipelining },
      { "backpressure", test_backpressure }, { "subscribe", test_subscribe },
      { "slow subscriber", test_slow_subscriber }, { "timeouts", test_timeouts },
      { "quit", test_quit }, { "stop listening", test_stop_listening },
      { "many connections", test_many },
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
      double t0 = UTL_Now();
      tests[i].fn();
      diag("%s: %.2f s", tests[i].name, UTL_Now() - t0);
    }
  }

  event_active(stop_ev, EV_TIMEOUT, 0);
  pthread_join(th, NULL);
  event_free(stop_ev);
  event_base_free(base);
  libevent_global_shutdown();
  LOG_Close();

  printf("1..%d\n", n_tests);
  return n_failed > 0;
}
