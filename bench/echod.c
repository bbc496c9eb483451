/* echod.c - a bare libevent line-echo server: the floor under wavelockd's
 * protocol throughput.
 *
 *   echod [-p PORT] [-P PORT_FILE]
 *
 * Listens on 127.0.0.1:PORT (0, the default, picks a free port and writes it
 * to PORT_FILE), and answers every LF- or CRLF-terminated line with the same
 * line.  One thread, one event loop, one bufferevent per connection: the
 * least any libevent line server does per request, so bench/loadgen can put
 * wavelockd's figures next to it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static void
read_cb(struct bufferevent *bev, void *arg)
{
  struct evbuffer *in = bufferevent_get_input(bev);
  struct evbuffer *out = bufferevent_get_output(bev);
  size_t n;
  char *line;

  (void)arg;
  while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF))) {
    evbuffer_add(out, line, n);
    evbuffer_add(out, "\n", 1);
    free(line);
  }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
  (void)what;
  (void)arg;
  bufferevent_free(bev);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
  struct event_base *base = arg;
  struct bufferevent *bev;
  int one = 1;

  (void)l;
  (void)sa;
  (void)len;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) {
    close(fd);
    return;
  }
  bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
  (void)sig;
  (void)what;
  event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
  struct sockaddr_in sa;
  socklen_t salen = sizeof sa;
  struct event_base *base;
  struct evconnlistener *l;
  struct event *sig_term, *sig_int;
  const char *port_file = NULL;
  int port = 0, opt;

  while ((opt = getopt(argc, argv, "p:P:")) != -1) {
    switch (opt) {
    case 'p': port = atoi(optarg); break;
    case 'P': port_file = optarg; break;
    default:
      fprintf(stderr, "usage: echod [-p PORT] [-P PORT_FILE]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  base = event_base_new();
  if (!base)
    return 1;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  l = evconnlistener_new_bind(base, accept_cb, base,
                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                              -1, (struct sockaddr *)&sa, sizeof sa);
  if (!l) {
    perror("echod: listen");
    return 1;
  }
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sa, &salen);
  port = ntohs(sa.sin_port);
  if (port_file) {
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
      perror("echod: port file");
      return 1;
    }
  } else {
    printf("%d\n", port);
    fflush(stdout);
  }
  sig_term = evsignal_new(base, SIGTERM, stop_cb, base);
  sig_int = evsignal_new(base, SIGINT, stop_cb, base);
  event_add(sig_term, NULL);
  event_add(sig_int, NULL);
  event_base_dispatch(base);
  event_free(sig_term);
  event_free(sig_int);
  evconnlistener_free(l);
  event_base_free(base);
  return 0;
}
