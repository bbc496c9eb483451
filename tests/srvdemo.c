/* srvdemo.c - a protocol server with a toy command table, for trying the
   framing, telnet handling, auth and subscriptions by hand:

     tests/srvdemo [-t] [-p PORT] [-d]      (-t: tokens "mon" and "ctl")
     telnet 127.0.0.1 PORT    or    nc 127.0.0.1 PORT

   Commands besides the built-ins: echo [word...], ctl (needs control),
   sub [laser...], unsub, tick (publish one event to subscribers). */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "log.h"
#include "srv.h"

static unsigned long ticks;

static void
cmd_echo(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  for (int i = 1; i < argc; i++)
    SRV_Data(c, "word=%s", argv[i]);
  SRV_Ok(c, "n=%d", argc - 1);
}

static void
cmd_ctl(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Ok(c, "changed=1");
}

static void
cmd_sub(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  unsigned char mask[8] = { 0 };

  for (int i = 1; i < argc; i++) {
    int k = atoi(argv[i]);
    if (k < 0 || k > 7) {
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
cmd_tick(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  SRV_Publish(SRV_ConnServer(c), (int)(ticks % 8), "tick n=%lu laser=%lu", ticks, ticks % 8);
  ticks++;
  SRV_Ok(c, NULL);
}

static const SRV_Command table[] = {
  { "echo", CNF_ROLE_MONITOR, 0, -1, "echo [word...]", "one data line per word", cmd_echo },
  { "ctl", CNF_ROLE_CONTROL, 0, 0, "ctl", "a command that needs the control role", cmd_ctl },
  { "sub", CNF_ROLE_MONITOR, 0, 8, "sub [laser...]", "subscribe to tick events (lasers 0..7)", cmd_sub },
  { "unsub", CNF_ROLE_MONITOR, 0, 0, "unsub", "unsubscribe", cmd_unsub },
  { "tick", CNF_ROLE_MONITOR, 0, 0, "tick", "publish one event", cmd_tick },
};

int
main(int argc, char **argv)
{
  CNF_Server cfg;
  char err[256];
  struct event_base *base;
  SRV_Server *s;
  int opt, port = 0, tokens = 0, debug = 0;

  while ((opt = getopt(argc, argv, "tp:d")) != -1) {
    switch (opt) {
    case 't':
      tokens = 1;
      break;
    case 'p':
      port = atoi(optarg);
      break;
    case 'd':
      debug = 1;
      break;
    default:
      fprintf(stderr, "usage: srvdemo [-t] [-p PORT] [-d]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  LOG_Open("srvdemo", 0, debug ? LOG_LV_DEBUG : LOG_LV_INFO);
  evthread_use_pthreads();
  base = event_base_new();

  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.listen[0], sizeof cfg.listen[0], "127.0.0.1:%d", port);
  cfg.n_listen = 1;
  cfg.max_clients = 16;
  cfg.line_timeout_s = 30;
  if (tokens) {
    snprintf(cfg.tokens[0].secret, sizeof cfg.tokens[0].secret, "mon");
    cfg.tokens[0].role = CNF_ROLE_MONITOR;
    snprintf(cfg.tokens[1].secret, sizeof cfg.tokens[1].secret, "ctl");
    cfg.tokens[1].role = CNF_ROLE_CONTROL;
    cfg.n_tokens = 2;
  }
  s = SRV_Create(base, &cfg, table, (int)(sizeof table / sizeof table[0]), NULL, err, sizeof err);
  if (!s) {
    fprintf(stderr, "srvdemo: %s\n", err);
    return 1;
  }
  printf("%d\n", SRV_BoundPort(s, 0));
  fflush(stdout);
  event_base_dispatch(base);
  SRV_Destroy(s);
  event_base_free(base);
  return 0;
}
