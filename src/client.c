/* client.c - wavelock, the command-line client of wavelockd.
 *
 *   wavelock [options] COMMAND [ARGS...]     one command
 *   wavelock [options] -m 'CMD ...' ...      several commands (also split at ';')
 *   wavelock [options] -                     commands from standard input
 *
 * Data lines go to stdout, an ERR line to stderr.  `wait` and `watch` are
 * carried out here on top of the protocol commands `lasers` and `subscribe`.
 * Exit statuses are the CLT_EXIT_ codes of clt.h, documented in wavelock(1).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clt.h"
#include "util.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 7470
#define DEFAULT_TIMEOUT 5.0
#define WAIT_INTERVAL 0.25
#define MAX_COMMANDS 256
#define MAX_WORDS 64
#define TOKEN_MAX 512

/* Returned by run_line when a signal ended `watch`: stop, keep the status. */
#define RUN_INTERRUPTED (-1)

static struct {
  const char *host;
  int port;
  char token[TOKEN_MAX];
  double timeout;              /* per request, seconds; 0 = none */
  int multi;                   /* -m */
  int keep_going;              /* -c */
  int align;                   /* -1 auto (terminal), 0 plain, 1 aligned */
  const char *as;             /* --as / WAVELOCK_AS: sent as "iam NAME" first */
} opt;

static CLT_Conn conn;
static volatile sig_atomic_t stop_flag;

/* Data lines of one response. */
typedef struct {
  char **line;
  int n, cap;
} Lines;

static void
lines_clear(Lines *l)
{
  for (int i = 0; i < l->n; i++)
    free(l->line[i]);
  free(l->line);
  l->line = NULL;
  l->n = l->cap = 0;
}

static int
lines_add(Lines *l, const char *s)
{
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **p = realloc(l->line, (size_t)cap * sizeof(*p));
    if (!p)
      return -1;
    l->line = p;
    l->cap = cap;
  }
  if (!(l->line[l->n] = strdup(s)))
    return -1;
  l->n++;
  return 0;
}

/* ---- messages ----------------------------------------------------------- */

static void
warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
warnx_(const char *fmt, ...)
{
  va_list ap;

  fflush(stdout);
  fputs("wavelock: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* Long options without a short form. */
enum { OPT_MQTT = 0x100, OPT_MQTT_USER, OPT_MQTT_PASSWORD_FILE, OPT_MQTT_CAFILE };

static void
usage_hint(void)
{
  fputs("Try 'wavelock --help' for more information.\n", stderr);
}

static void
print_help(void)
{
  printf("Usage: wavelock [OPTION]... COMMAND [ARG]...\n"
         "       wavelock [OPTION]... -m 'COMMAND [ARG]...' ...\n"
         "       wavelock [OPTION]... -\n"
         "Send commands to the laser lock daemon wavelockd and print the replies.\n"
         "\n"
         "Options:\n"
         "  -H, --host HOST        daemon host (WAVELOCK_HOST, default %s)\n"
         "  -p, --port PORT        daemon port (WAVELOCK_PORT, default %d)\n"
         "  -k, --token TOKEN      authenticate with TOKEN (visible in ps: prefer\n"
         "                         WAVELOCK_TOKEN or a token file)\n"
         "  -K, --token-file FILE  read the token from FILE (WAVELOCK_TOKEN_FILE)\n"
         "      --as NAME          name the connection (iam NAME) for claims\n"
         "                         (WAVELOCK_AS)\n"
         "  -t, --timeout SEC      give up on the daemon after SEC seconds (default %g;\n"
         "                         0 waits forever)\n"
         "  -m, --multi            every argument is a command; ';' also separates\n"
         "  -c, --continue         with -m or -: go on after a failed command\n"
         "  -a, --align            aligned columns even when stdout is not a terminal\n"
         "  -r, --raw              plain key=value lines even on a terminal\n"
         "  -h, --help             show this help and exit\n"
         "  -V, --version          show the version and exit\n"
         "      --mqtt URL lab     every instance's lasers from an MQTT broker's\n"
         "                         retained state (mqtt://host[:port], mqtts://...);\n"
         "                         with --mqtt-user USER, --mqtt-password-file FILE,\n"
         "                         --mqtt-cafile FILE\n"
         "\n"
         "A single '-' as the command reads commands from standard input, one per line.\n"
         "\n"
         "Commands carried out by the client:\n"
         "  wait <laser...|all> [--timeout SEC] [--interval SEC]\n"
         "                         wait until the lasers are locked\n"
         "  watch [laser...] [--csv] [--count N] [--duration SEC]\n"
         "                         print events until interrupted\n"
         "Every other command goes to the daemon; 'wavelock help' lists them.\n"
         "\n"
         "Exit status: 0 OK, 1 ERR reply, 2 usage error, 3 daemon unreachable,\n"
         "timed out or connection lost, 4 'wait' timed out.\n",
         DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIMEOUT);
}

/* ---- talking to the daemon ---------------------------------------------- */

static double
request_deadline(void)
{
  return opt.timeout > 0.0 ? UTL_Now() + opt.timeout : -1.0;
}

/* Report a read that did not give a line; returns CLT_EXIT_CONN. */
static int
read_failed(CLT_ReadResult r, const char *what, const char *err)
{
  if (r == CLT_READ_TIMEOUT)
    warnx_("no %s from %s within %g s", what, conn.peer, opt.timeout);
  else
    warnx_("%s", err);
  return CLT_EXIT_CONN;
}

/* Send one request and collect its data lines in out (events are skipped).
   Returns CLT_EXIT_OK with the final line in final, CLT_EXIT_ERR with the
   ERR line in final (not printed), or CLT_EXIT_CONN (message printed). */
static int
request(const char *line, Lines *out, char *final, size_t finalsize)
{
  char err[512], buf[CLT_LINE_MAX];
  double deadline = request_deadline();

  if (CLT_Send(&conn, line, deadline, err, sizeof(err)) < 0) {
    warnx_("%s", err);
    return CLT_EXIT_CONN;
  }
  for (;;) {
    CLT_ReadResult r = CLT_ReadLine(&conn, buf, sizeof(buf), deadline, NULL, err, sizeof(err));

    if (r != CLT_READ_LINE)
      return read_failed(r, "reply", err);
    switch (CLT_Classify(buf)) {
    case CLT_LINE_EVENT:
      break;
    case CLT_LINE_DATA:
      if (out && lines_add(out, buf) < 0) {
        warnx_("out of memory");
        return CLT_EXIT_ERR;
      }
      break;
    case CLT_LINE_OK:
      UTL_Strlcpy(final, buf, finalsize);
      return CLT_EXIT_OK;
    case CLT_LINE_ERR:
      UTL_Strlcpy(final, buf, finalsize);
      return CLT_EXIT_ERR;
    }
  }
}

/* Print data lines: aligned when asked and every line is key=value. */
static void
print_lines(const Lines *l)
{
  if (opt.align == 1 && l->n > 0) {
    CLT_Table *t = CLT_TableNew();
    int ok = t != NULL;

    for (int i = 0; ok && i < l->n; i++)
      ok = CLT_TableAdd(t, l->line[i]) == 1;
    if (ok) {
      CLT_TablePrint(t, stdout);
      CLT_TableFree(t);
      return;
    }
    CLT_TableFree(t);
  }
  for (int i = 0; i < l->n; i++)
    puts(l->line[i]);
}

/* A protocol command: print its data lines and the text of its OK line. */
static int
run_remote(const char *line)
{
  char final[CLT_LINE_MAX];
  Lines l = { 0 };
  int rc = request(line, &l, final, sizeof(final));

  if (rc == CLT_EXIT_CONN) {
    lines_clear(&l);
    return rc;
  }
  print_lines(&l);
  lines_clear(&l);
  if (rc == CLT_EXIT_OK && final[2] == ' ' && final[3])
    puts(final + 3);
  fflush(stdout);
  if (rc == CLT_EXIT_ERR)
    fprintf(stderr, "%s\n", final);
  return rc;
}

/* ---- wait --------------------------------------------------------------- */

typedef struct {
  int all;
  char *names[MAX_WORDS];
  int n;
  double timeout;              /* 0 = forever */
  double interval;
} WaitArgs;

typedef struct {
  char *names[MAX_WORDS];
  int n;
  int csv;
  long count;                  /* 0 = no limit */
  double duration;             /* 0 = no limit */
} WatchArgs;

/* Value of option word i ("--x V" or "--x=V"); advances *i. */
static const char *
option_value(char **w, int n, int *i, const char *name)
{
  size_t len = strlen(name);

  if (strncmp(w[*i], name, len) == 0 && w[*i][len] == '=')
    return w[*i] + len + 1;
  if (strcmp(w[*i], name) == 0 && *i + 1 < n)
    return w[++*i];
  return NULL;
}

/* Parse `wait` arguments (words after the command); 0 or -1 (message printed). */
static int
parse_wait(char **w, int n, WaitArgs *a)
{
  memset(a, 0, sizeof(*a));
  a->interval = WAIT_INTERVAL;
  for (int i = 0; i < n; i++) {
    const char *v;

    if (strncmp(w[i], "--timeout", 9) == 0 && (w[i][9] == '\0' || w[i][9] == '=')) {
      if (!(v = option_value(w, n, &i, "--timeout")) || CLT_ParseSeconds(v, &a->timeout) < 0) {
        warnx_("wait: --timeout needs a number of seconds");
        return -1;
      }
    } else if (strncmp(w[i], "--interval", 10) == 0 && (w[i][10] == '\0' || w[i][10] == '=')) {
      if (!(v = option_value(w, n, &i, "--interval")) ||
          CLT_ParseSeconds(v, &a->interval) < 0 || a->interval < 0.01) {
        warnx_("wait: --interval needs a number of seconds >= 0.01");
        return -1;
      }
    } else if (w[i][0] == '-') {
      warnx_("wait: unknown option '%s'", w[i]);
      return -1;
    } else if (strcasecmp(w[i], "all") == 0) {
      a->all = 1;
    } else {
      a->names[a->n++] = w[i];
    }
  }
  if (!a->all && a->n == 0) {
    warnx_("wait: name the lasers to wait for, or 'all'");
    return -1;
  }
  if (a->all && a->n > 0) {
    warnx_("wait: give either 'all' or laser names, not both");
    return -1;
  }
  return 0;
}

/* Parse `watch` arguments; 0 or -1 (message printed). */
static int
parse_watch(char **w, int n, WatchArgs *a)
{
  memset(a, 0, sizeof(*a));
  for (int i = 0; i < n; i++) {
    const char *v;

    if (strcmp(w[i], "--csv") == 0) {
      a->csv = 1;
    } else if (strncmp(w[i], "--count", 7) == 0 && (w[i][7] == '\0' || w[i][7] == '=')) {
      if (!(v = option_value(w, n, &i, "--count")) || CLT_ParseCount(v, &a->count) < 0) {
        warnx_("watch: --count needs a positive number");
        return -1;
      }
    } else if (strncmp(w[i], "--duration", 10) == 0 && (w[i][10] == '\0' || w[i][10] == '=')) {
      if (!(v = option_value(w, n, &i, "--duration")) ||
          CLT_ParseSeconds(v, &a->duration) < 0 || a->duration <= 0.0) {
        warnx_("watch: --duration needs a positive number of seconds");
        return -1;
      }
    } else if (w[i][0] == '-') {
      warnx_("watch: unknown option '%s'", w[i]);
      return -1;
    } else if (strcasecmp(w[i], "all") != 0) {
      a->names[a->n++] = w[i];
    }
  }
  return 0;
}

/* Sleep up to sec seconds (interruptible by a signal). */
static void
sleep_for(double sec)
{
  struct timespec ts;

  if (sec <= 0.0)
    return;
  ts.tv_sec = (time_t)sec;
  ts.tv_nsec = (long)((sec - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
}

static int
run_wait(const WaitArgs *a)
{
  double start = UTL_Now();
  double deadline = a->timeout > 0.0 ? start + a->timeout : -1.0;
  char final[CLT_LINE_MAX], pending[1024];
  Lines l = { 0 };

  for (;;) {
    int rc = request("lasers", &l, final, sizeof(final));
    int all_locked = 1;
    size_t plen = 0;

    if (rc != CLT_EXIT_OK) {
      if (rc == CLT_EXIT_ERR)
        fprintf(stderr, "%s\n", final);
      lines_clear(&l);
      return rc;
    }
    pending[0] = '\0';
    /* Every laser asked for must be listed and locked. */
    for (int k = 0; k < (a->all ? l.n : a->n); k++) {
      const char *name = a->all ? NULL : a->names[k], *state = NULL, *lname = NULL;

      for (int i = 0; i < l.n; i++) {
        CLT_Kv kv[MAX_WORDS];
        char copy[1024];
        int nw;

        if (a->all && i != k)
          continue;
        UTL_Strlcpy(copy, l.line[i], sizeof(copy));
        nw = CLT_SplitKv(copy, kv, MAX_WORDS);
        lname = CLT_KvGet(kv, nw, "name");
        if (!lname || (name && strcmp(lname, name) != 0)) {
          lname = NULL;
          continue;
        }
        state = CLT_KvGet(kv, nw, "state");
        if (!state || strcmp(state, "locked") != 0) {
          all_locked = 0;
          if (plen < sizeof(pending))
            plen += (size_t)snprintf(pending + plen, sizeof(pending) - plen, " %s=%s",
                                     lname, state ? state : "?");
        }
        break;
      }
      if (!a->all && !lname) {
        /* Let the daemon say what is wrong with the name. */
        char line[CLT_REQUEST_MAX];

        lines_clear(&l);
        snprintf(line, sizeof(line), "status %s", name);
        rc = request(line, NULL, final, sizeof(final));
        if (rc == CLT_EXIT_ERR)
          fprintf(stderr, "%s\n", final);
        else if (rc == CLT_EXIT_OK)
          warnx_("wait: laser '%s' is not in the daemon's laser list", name);
        return rc == CLT_EXIT_CONN ? rc : CLT_EXIT_ERR;
      }
    }
    lines_clear(&l);
    if (all_locked)
      return CLT_EXIT_OK;
    if (deadline >= 0.0 && UTL_Now() >= deadline) {
      warnx_("wait: timed out after %g s; not locked:%s", a->timeout, pending);
      return CLT_EXIT_WAIT;
    }
    if (deadline >= 0.0 && deadline - UTL_Now() < a->interval)
      sleep_for(deadline - UTL_Now());
    else
      sleep_for(a->interval);
  }
}

/* ---- watch -------------------------------------------------------------- */

static void
on_stop_signal(int sig)
{
  (void)sig;
  stop_flag = 1;
}

static void
set_stop_handlers(int install)
{
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = install ? on_stop_signal : SIG_DFL;
  sa.sa_flags = 0;             /* no SA_RESTART: poll() returns EINTR */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

static int
run_watch(const WatchArgs *a)
{
  char line[CLT_REQUEST_MAX + 64], final[CLT_LINE_MAX], buf[CLT_LINE_MAX], err[512];
  size_t len;
  double deadline;
  long readings = 0;
  CLT_Csv *csv = NULL;
  int rc, interrupted = 0;

  len = (size_t)snprintf(line, sizeof(line), "subscribe");
  for (int i = 0; i < a->n && len < sizeof(line); i++)
    len += (size_t)snprintf(line + len, sizeof(line) - len, " %s", a->names[i]);
  if (len >= sizeof(line)) {
    warnx_("watch: too many laser names");
    return CLT_EXIT_USAGE;
  }
  stop_flag = 0;
  set_stop_handlers(1);
  rc = request(line, NULL, final, sizeof(final));
  if (rc != CLT_EXIT_OK) {
    set_stop_handlers(0);
    if (rc == CLT_EXIT_ERR)
      fprintf(stderr, "%s\n", final);
    return rc;
  }
  if (!(csv = CLT_CsvNew())) {
    set_stop_handlers(0);
    warnx_("out of memory");
    return CLT_EXIT_ERR;
  }
  if (a->csv) {
    puts(CLT_CsvHeader());
    fflush(stdout);
  }
  deadline = a->duration > 0.0 ? UTL_Now() + a->duration : -1.0;
  for (;;) {
    CLT_ReadResult r = CLT_ReadLine(&conn, buf, sizeof(buf), deadline, &stop_flag,
                                    err, sizeof(err));
    const char *ev;
    int reading;

    if (r == CLT_READ_INTR) {
      interrupted = 1;
      break;
    }
    if (r == CLT_READ_TIMEOUT)
      break;
    if (r == CLT_READ_CLOSED) {
      set_stop_handlers(0);
      CLT_CsvFree(csv);
      warnx_("%s", err);
      return CLT_EXIT_CONN;
    }
    if (CLT_Classify(buf) != CLT_LINE_EVENT)
      continue;                /* nothing but events is expected here */
    ev = buf[1] == ' ' ? buf + 2 : buf + 1;
    reading = CLT_CsvEvent(csv, ev, UTL_WallNow(), a->csv ? stdout : NULL);
    if (reading < 0) {
      set_stop_handlers(0);
      CLT_CsvFree(csv);
      warnx_("out of memory");
      return CLT_EXIT_ERR;
    }
    if (!a->csv)
      puts(ev);
    else if (strncmp(ev, "dropped", 7) == 0 && (ev[7] == ' ' || !ev[7]))
      warnx_("watch: the daemon skipped events for this slow client (%s)", ev);
    fflush(stdout);
    if (reading && a->count > 0 && ++readings >= a->count)
      break;
  }
  CLT_CsvFree(csv);
  fflush(stdout);
  if (interrupted) {
    set_stop_handlers(0);
    return RUN_INTERRUPTED;
  }
  /* Ended by --count or --duration: leave the connection usable. */
  rc = request("unsubscribe", NULL, final, sizeof(final));
  set_stop_handlers(0);
  return rc == CLT_EXIT_CONN ? rc : CLT_EXIT_OK;
}

/* ---- one command line ---------------------------------------------------- */

/* Check a command line before connecting: local commands' arguments.
   Returns 0, or CLT_EXIT_USAGE (message printed). */
static int
check_line(const char *line)
{
  char copy[CLT_LINE_MAX], *w[MAX_WORDS + 1];
  int n = 0;
  char *save = NULL, *p;

  UTL_Strlcpy(copy, line, sizeof(copy));
  for (p = strtok_r(copy, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
    if (n == MAX_WORDS + 1)
      break;
    w[n++] = p;
  }
  if (n == 0)
    return 0;
  if (strcasecmp(w[0], "wait") == 0 || strcasecmp(w[0], "watch") == 0) {
    if (n > MAX_WORDS) {
      warnx_("%s: too many arguments", w[0]);
      return CLT_EXIT_USAGE;
    }
    if (strcasecmp(w[0], "wait") == 0) {
      WaitArgs a;
      return parse_wait(w + 1, n - 1, &a) < 0 ? CLT_EXIT_USAGE : 0;
    } else {
      WatchArgs a;
      return parse_watch(w + 1, n - 1, &a) < 0 ? CLT_EXIT_USAGE : 0;
    }
  }
  return 0;
}

/* Run one command line; returns an exit status or RUN_INTERRUPTED. */
static int
run_line(const char *line)
{
  char copy[CLT_LINE_MAX], *w[MAX_WORDS + 1];
  char *save = NULL, *p;
  int n = 0;

  if (check_line(line) != 0)
    return CLT_EXIT_USAGE;
  UTL_Strlcpy(copy, line, sizeof(copy));
  for (p = strtok_r(copy, " \t", &save); p && n < MAX_WORDS + 1; p = strtok_r(NULL, " \t", &save))
    w[n++] = p;
  if (n > 0 && strcasecmp(w[0], "wait") == 0) {
    WaitArgs a;
    parse_wait(w + 1, n - 1, &a);
    return run_wait(&a);
  }
  if (n > 0 && strcasecmp(w[0], "watch") == 0) {
    WatchArgs a;
    parse_watch(w + 1, n - 1, &a);
    return run_watch(&a);
  }
  return run_remote(line);
}

/* ---- set-up -------------------------------------------------------------- */

/* Read a token from the first line of path; 0 or -1 (message printed). */
static int
read_token_file(const char *path)
{
  FILE *f = fopen(path, "r");
  size_t len, lead;

  if (!f) {
    warnx_("cannot read token file %s: %s", path, strerror(errno));
    return -1;
  }
  if (!fgets(opt.token, sizeof(opt.token), f))
    opt.token[0] = '\0';
  fclose(f);
  len = strcspn(opt.token, "\r\n");
  opt.token[len] = '\0';
  while (len > 0 && (opt.token[len - 1] == ' ' || opt.token[len - 1] == '\t'))
    opt.token[--len] = '\0';
  lead = strspn(opt.token, " \t");
  memmove(opt.token, opt.token + lead, len - lead + 1);
  if (!opt.token[0]) {
    warnx_("token file %s is empty", path);
    return -1;
  }
  return 0;
}

static int
set_token(const char *token, const char *from)
{
  if (strlen(token) >= sizeof(opt.token) || !token[0]) {
    warnx_("%s: the token must be 1 to %d characters", from, TOKEN_MAX - 1);
    return -1;
  }
  UTL_Strlcpy(opt.token, token, sizeof(opt.token));
  return 0;
}

static int
connect_and_greet(void)
{
  char err[512], buf[CLT_LINE_MAX], final[CLT_LINE_MAX];
  double deadline = request_deadline();
  CLT_ReadResult r;

  if (CLT_Connect(&conn, opt.host, opt.port, deadline, err, sizeof(err)) < 0) {
    warnx_("%s", err);
    return CLT_EXIT_CONN;
  }
  r = CLT_ReadLine(&conn, buf, sizeof(buf), deadline, NULL, err, sizeof(err));
  if (r != CLT_READ_LINE)
    return read_failed(r, "greeting", err);
  if (CLT_Classify(buf) == CLT_LINE_ERR) {
    /* e.g. "ERR 429 too many connections" instead of the greeting */
    warnx_("%s refused the connection: %s", conn.peer, buf);
    return CLT_EXIT_CONN;
  }
  if (CLT_Classify(buf) != CLT_LINE_EVENT) {
    warnx_("%s does not look like wavelockd (greeting '%.60s')", conn.peer, buf);
    return CLT_EXIT_CONN;
  }
  if (opt.token[0]) {
    char line[TOKEN_MAX + 8];
    int rc;

    snprintf(line, sizeof(line), "auth %s", opt.token);
    rc = request(line, NULL, final, sizeof(final));
    if (rc == CLT_EXIT_ERR)
      fprintf(stderr, "%s\n", final);
    if (rc != CLT_EXIT_OK)
      return rc;
  }
  if (opt.as) {
    char line[128];
    int rc;

    snprintf(line, sizeof(line), "iam %s", opt.as);
    rc = request(line, NULL, final, sizeof(final));
    if (rc == CLT_EXIT_ERR)
      fprintf(stderr, "%s\n", final);
    return rc;
  }
  return CLT_EXIT_OK;
}

/* Fold one command's status into the run's status; whether to go on. */
static int
account(int rc, int *status)
{
  if (rc == RUN_INTERRUPTED)
    return 0;
  if (rc == CLT_EXIT_CONN) {
    *status = rc;
    return 0;
  }
  if (rc != CLT_EXIT_OK) {
    if (*status == CLT_EXIT_OK)
      *status = rc;
    return opt.keep_going;
  }
  return 1;
}

static int
run_stdin(void)
{
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long lineno = 0;
  int status = CLT_EXIT_OK;

  while ((len = getline(&line, &cap, stdin)) >= 0) {
    char *p = line;
    int rc;

    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    while (*p == ' ' || *p == '\t')
      p++;
    if (!*p || *p == '#')
      continue;
    rc = run_line(p);
    if (rc == CLT_EXIT_USAGE)
      warnx_("(standard input, line %ld)", lineno);
    if (!account(rc, &status))
      break;
  }
  free(line);
  return status;
}

int
main(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "host", required_argument, NULL, 'H' },
    { "port", required_argument, NULL, 'p' },
    { "token", required_argument, NULL, 'k' },
    { "token-file", required_argument, NULL, 'K' },
    { "timeout", required_argument, NULL, 't' },
    { "multi", no_argument, NULL, 'm' },
    { "continue", no_argument, NULL, 'c' },
    { "align", no_argument, NULL, 'a' },
    { "raw", no_argument, NULL, 'r' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "as", required_argument, NULL, 'A' },
    { "mqtt", required_argument, NULL, OPT_MQTT },
    { "mqtt-user", required_argument, NULL, OPT_MQTT_USER },
    { "mqtt-password-file", required_argument, NULL, OPT_MQTT_PASSWORD_FILE },
    { "mqtt-cafile", required_argument, NULL, OPT_MQTT_CAFILE },
    { NULL, 0, NULL, 0 }
  };
  const char *mqtt_url = NULL, *mqtt_user = NULL, *mqtt_pwfile = NULL, *mqtt_cafile = NULL;
  const char *token_arg = NULL, *token_file = NULL, *env;
  char *cmds[MAX_COMMANDS], *joined = NULL;
  int ncmds = 0, from_stdin = 0, status = CLT_EXIT_OK, c;

  opt.host = DEFAULT_HOST;
  opt.port = DEFAULT_PORT;
  opt.timeout = DEFAULT_TIMEOUT;
  opt.align = -1;

  if ((env = getenv("WAVELOCK_HOST")) && *env)
    opt.host = env;
  if ((env = getenv("WAVELOCK_PORT")) && *env && CLT_ParsePort(env, &opt.port) < 0) {
    warnx_("WAVELOCK_PORT: invalid port '%s'", env);
    return CLT_EXIT_USAGE;
  }

  opterr = 0;
  while ((c = getopt_long(argc, argv, "+H:p:k:K:t:mcarhV", longopts, NULL)) != -1) {
    switch (c) {
    case 'H':
      if (!*optarg) {
        warnx_("-H: empty host name");
        return CLT_EXIT_USAGE;
      }
      opt.host = optarg;
      break;
    case 'p':
      if (CLT_ParsePort(optarg, &opt.port) < 0) {
        warnx_("-p: invalid port '%s'", optarg);
        return CLT_EXIT_USAGE;
      }
      break;
    case 'k':
      token_arg = optarg;
      break;
    case 'K':
      token_file = optarg;
      break;
    case 't':
      if (CLT_ParseSeconds(optarg, &opt.timeout) < 0) {
        warnx_("-t: invalid timeout '%s' (seconds, 0 for none)", optarg);
        return CLT_EXIT_USAGE;
      }
      break;
    case 'A':
      opt.as = optarg;
      break;
    case 'm':
      opt.multi = 1;
      break;
    case 'c':
      opt.keep_going = 1;
      break;
    case 'a':
      opt.align = 1;
      break;
    case 'r':
      opt.align = 0;
      break;
    case 'h':
      print_help();
      return CLT_EXIT_OK;
    case 'V':
      printf("wavelock %s (protocol %d)\n", PACKAGE_VERSION, WL_PROTOCOL_VERSION);
      return CLT_EXIT_OK;
    case OPT_MQTT:
      mqtt_url = optarg;
      break;
    case OPT_MQTT_USER:
      mqtt_user = optarg;
      break;
    case OPT_MQTT_PASSWORD_FILE:
      mqtt_pwfile = optarg;
      break;
    case OPT_MQTT_CAFILE:
      mqtt_cafile = optarg;
      break;
    default:
      if (optopt == 'A')
        warnx_("option --as needs an argument");
      else if (optopt && strchr("HpkKt", optopt))
        warnx_("option -%c needs an argument", optopt);
      else if (optopt)
        warnx_("unknown option -%c", optopt);
      else
        warnx_("unknown option '%s'", argv[optind - 1]);
      usage_hint();
      return CLT_EXIT_USAGE;
    }
  }

  if (!opt.as && (env = getenv("WAVELOCK_AS")) && *env)
    opt.as = env;
  if (opt.as && (!*opt.as || strlen(opt.as) > 63 || strpbrk(opt.as, " \t\r\n"))) {
    warnx_("--as: the name must be 1..63 characters without blanks");
    return CLT_EXIT_USAGE;
  }

  /* The token: command line, then environment. */
  if (token_arg && token_file) {
    warnx_("give either -k or -K, not both");
    return CLT_EXIT_USAGE;
  }
  if (token_arg) {
    if (set_token(token_arg, "-k") < 0)
      return CLT_EXIT_USAGE;
  } else if (token_file) {
    if (read_token_file(token_file) < 0)
      return CLT_EXIT_USAGE;
  } else if ((env = getenv("WAVELOCK_TOKEN")) && *env) {
    if (set_token(env, "WAVELOCK_TOKEN") < 0)
      return CLT_EXIT_USAGE;
  } else if ((env = getenv("WAVELOCK_TOKEN_FILE")) && *env) {
    if (read_token_file(env) < 0)
      return CLT_EXIT_USAGE;
  }
  if (strpbrk(opt.token, " \t\r\n")) {
    warnx_("the token must not contain blanks");
    return CLT_EXIT_USAGE;
  }

  /* The lab-wide view from an MQTT broker. */
  if (mqtt_url) {
    if (argc - optind != 1 || strcmp(argv[optind], "lab") != 0) {
      warnx_("--mqtt: the only command is 'lab'");
      usage_hint();
      return CLT_EXIT_USAGE;
    }
    return CLT_MqttLab(mqtt_url, mqtt_user, mqtt_pwfile, mqtt_cafile, opt.timeout);
  }

  /* The commands. */
  if (optind >= argc) {
    warnx_("no command given");
    usage_hint();
    return CLT_EXIT_USAGE;
  }
  if (argc - optind == 1 && strcmp(argv[optind], "-") == 0) {
    from_stdin = 1;
  } else if (opt.multi) {
    for (int i = optind; i < argc; i++) {
      int n = CLT_SplitCommands(argv[i], cmds + ncmds, MAX_COMMANDS - ncmds);
      if (n < 0) {
        warnx_("-m: more than %d commands", MAX_COMMANDS);
        return CLT_EXIT_USAGE;
      }
      ncmds += n;
    }
    if (ncmds == 0) {
      warnx_("-m: no command given");
      return CLT_EXIT_USAGE;
    }
  } else {
    size_t len = 0;

    for (int i = optind; i < argc; i++)
      len += strlen(argv[i]) + 1;
    if (!(joined = malloc(len + 1))) {
      warnx_("out of memory");
      return CLT_EXIT_ERR;
    }
    joined[0] = '\0';
    for (int i = optind; i < argc; i++) {
      if (i > optind)
        strcat(joined, " ");
      strcat(joined, argv[i]);
    }
    if (strpbrk(joined, "\r\n")) {
      warnx_("a command must not contain a newline (use -m or - for several)");
      free(joined);
      return CLT_EXIT_USAGE;
    }
    if (!joined[strspn(joined, " \t")]) {
      warnx_("empty command");
      free(joined);
      return CLT_EXIT_USAGE;
    }
    cmds[ncmds++] = joined;
  }
  for (int i = 0; i < ncmds; i++) {
    if (check_line(cmds[i]) != 0) {
      free(joined);
      return CLT_EXIT_USAGE;
    }
  }
  if (opt.align < 0)
    opt.align = isatty(STDOUT_FILENO) ? 1 : 0;

  status = connect_and_greet();
  if (status == CLT_EXIT_OK) {
    if (from_stdin) {
      status = run_stdin();
    } else {
      for (int i = 0; i < ncmds; i++)
        if (!account(run_line(cmds[i]), &status))
          break;
    }
  }
  CLT_Close(&conn);
  free(joined);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    warnx_("error writing the output: %s", strerror(errno));
    if (status == CLT_EXIT_OK)
      status = CLT_EXIT_ERR;
  }
  return status;
}
