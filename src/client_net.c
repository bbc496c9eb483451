/* client_net.c - the client's connection to wavelockd: sockets and poll(). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clt.h"
#include "util.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* Longest single poll() slice, so a signal that lands just before poll()
   is still noticed promptly. */
#define POLL_SLICE_MS 250

/* Milliseconds until deadline for poll(), capped at POLL_SLICE_MS; 0 when
   it has passed. */
static int
poll_ms(double deadline)
{
  double left;

  if (deadline < 0.0)
    return POLL_SLICE_MS;
  left = deadline - UTL_Now();
  if (left <= 0.0)
    return 0;
  if (left * 1000.0 >= POLL_SLICE_MS)
    return POLL_SLICE_MS;
  return (int)(left * 1000.0) + 1;
}

static int
expired(double deadline)
{
  return deadline >= 0.0 && UTL_Now() >= deadline;
}

/* Try one address; 0 connected, -1 failed (errno set). */
static int
connect_one(const struct addrinfo *ai, double deadline)
{
  int fd, flags, soerr = 0;
  socklen_t len = sizeof(soerr);

  fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -1;
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    goto fail;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    if (errno != EINPROGRESS && errno != EINTR)
      goto fail;
    for (;;) {
      struct pollfd p = { .fd = fd, .events = POLLOUT };
      int r;

      if (expired(deadline)) {
        errno = ETIMEDOUT;
        goto fail;
      }
      r = poll(&p, 1, poll_ms(deadline));
      if (r < 0 && errno != EINTR)
        goto fail;
      if (r > 0)
        break;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
      goto fail;
    if (soerr) {
      errno = soerr;
      goto fail;
    }
  }
  return fd;

fail:
  {
    int e = errno;
    close(fd);
    errno = e;
  }
  return -1;
}

int
CLT_Connect(CLT_Conn *c, const char *host, int port, double deadline,
            char *err, size_t errlen)
{
  struct addrinfo hints, *res, *ai;
  char hostbuf[256], service[16];
  const char *h = host;
  size_t hl = strlen(host);
  int rc, e = 0;

  c->fd = -1;
  c->len = 0;
  /* Accept "[::1]" as well as "::1". */
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(hostbuf)) {
    memcpy(hostbuf, host + 1, hl - 2);
    hostbuf[hl - 2] = '\0';
    h = hostbuf;
  }
  snprintf(c->peer, sizeof(c->peer), strchr(h, ':') ? "[%s]:%d" : "%s:%d", h, port);
  snprintf(service, sizeof(service), "%d", port);
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
  rc = getaddrinfo(h, service, &hints, &res);
  if (rc == EAI_BADFLAGS || rc == EAI_NONAME) {
    /* AI_ADDRCONFIG hides loopback on hosts with no other address. */
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(h, service, &hints, &res);
  }
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", h, gai_strerror(rc));
    return -1;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    c->fd = connect_one(ai, deadline);
    if (c->fd >= 0)
      break;
    e = errno;
    if (e == ETIMEDOUT)
      break;
  }
  freeaddrinfo(res);
  if (c->fd < 0) {
    if (e == ETIMEDOUT)
      snprintf(err, errlen, "cannot connect to %s: timed out", c->peer);
    else
      snprintf(err, errlen, "cannot connect to %s: %s", c->peer, strerror(e));
    return -1;
  }
  {
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return 0;
}

int
CLT_Send(CLT_Conn *c, const char *line, double deadline, char *err, size_t errlen)
{
  char buf[CLT_REQUEST_MAX + 64];
  size_t len = strlen(line), off = 0;
  const char *data = buf;

  if (len + 1 <= sizeof(buf)) {
    memcpy(buf, line, len);
    buf[len++] = '\n';
  } else {
    /* Longer than the protocol allows: send it anyway, the daemon
       answers ERR 413; the newline follows separately. */
    data = line;
  }
  for (int part = 0; part < 2; part++) {
    while (off < len) {
      struct pollfd p = { .fd = c->fd, .events = POLLOUT };
      ssize_t w;
      int r;

      if (expired(deadline)) {
        snprintf(err, errlen, "timed out sending to %s", c->peer);
        return -1;
      }
      r = poll(&p, 1, poll_ms(deadline));
      if (r < 0 && errno != EINTR) {
        snprintf(err, errlen, "poll: %s", strerror(errno));
        return -1;
      }
      if (r <= 0)
        continue;
      w = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
          continue;
        snprintf(err, errlen, "connection to %s lost: %s", c->peer, strerror(errno));
        return -1;
      }
      off += (size_t)w;
    }
    if (data == buf)
      break;
    data = "\n";
    len = 1;
    off = 0;
  }
  return 0;
}

CLT_ReadResult
CLT_ReadLine(CLT_Conn *c, char *line, size_t size, double deadline,
             volatile sig_atomic_t *stop, char *err, size_t errlen)
{
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    ssize_t r;
    int pr;

    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      size_t keep = n;

      if (keep > 0 && c->buf[keep - 1] == '\r')
        keep--;
      if (keep >= size)
        keep = size - 1;
      memcpy(line, c->buf, keep);
      line[keep] = '\0';
      /* A NUL byte inside a line ends it early; never seen from wavelockd. */
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return CLT_READ_LINE;
    }
    if (c->len == sizeof(c->buf)) {
      snprintf(err, errlen, "line from %s longer than %d bytes", c->peer, CLT_LINE_MAX);
      return CLT_READ_CLOSED;
    }
    if (stop && *stop)
      return CLT_READ_INTR;
    if (expired(deadline))
      return CLT_READ_TIMEOUT;
    pr = poll(&p, 1, poll_ms(deadline));
    if (pr < 0) {
      if (errno == EINTR)
        continue;
      snprintf(err, errlen, "poll: %s", strerror(errno));
      return CLT_READ_CLOSED;
    }
    if (pr == 0)
      continue;
    r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      snprintf(err, errlen, "connection to %s lost: %s", c->peer, strerror(errno));
      return CLT_READ_CLOSED;
    }
    if (r == 0) {
      snprintf(err, errlen, "connection to %s closed by the daemon", c->peer);
      return CLT_READ_CLOSED;
    }
    c->len += (size_t)r;
  }
}

void
CLT_Close(CLT_Conn *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->len = 0;
}
