/* hwchild.c - helper processes for the hardware tests (see hwchild.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hwchild.h"

extern char **environ;

static double
now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int
HWT_Spawn(HWT_Child *c, char *const argv[])
{
  posix_spawn_file_actions_t fa;
  int in[2], out[2], rc;

  memset(c, 0, sizeof *c);
  c->pid = -1;
  if (pipe2(in, O_CLOEXEC) < 0)
    return -1;
  if (pipe2(out, O_CLOEXEC) < 0) {
    close(in[0]);
    close(in[1]);
    return -1;
  }
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  rc = posix_spawn(&c->pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    c->pid = -1;
    errno = rc;
    return -1;
  }
  c->in_fd = in[1];
  c->out_fd = out[0];
  return 0;
}

int
HWT_ReadLine(HWT_Child *c, char *line, size_t len, double timeout_s)
{
  double end = now_s() + timeout_s;

  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);

    if (nl) {
      size_t n = (size_t)(nl - c->buf);

      if (len) {
        size_t k = n < len - 1 ? n : len - 1;

        memcpy(line, c->buf, k);
        line[k] = '\0';
      }
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return 0;
    }
    if (c->len == sizeof c->buf)
      c->len = 0;                         /* absurd line: drop it */
    {
      double left = end - now_s();
      struct pollfd p = { c->out_fd, POLLIN, 0 };
      ssize_t r;

      if (left <= 0)
        return -1;
      if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
        continue;
      r = read(c->out_fd, c->buf + c->len, sizeof c->buf - c->len);
      if (r <= 0)
        return -1;
      c->len += (size_t)r;
    }
  }
}

int
HWT_Command(HWT_Child *c, const char *cmd, char *reply, size_t len, double timeout_s)
{
  char line[1024];
  double end = now_s() + timeout_s;
  size_t n = strlen(cmd);

  if (write(c->in_fd, cmd, n) != (ssize_t)n || write(c->in_fd, "\n", 1) != 1)
    return -1;
  while (HWT_ReadLine(c, line, sizeof line, end - now_s()) == 0) {
    if (!strncmp(line, "ok", 2) || !strncmp(line, "err", 3)) {
      if (reply && len)
        snprintf(reply, len, "%s", line);
      return strncmp(line, "ok", 2) == 0 ? 0 : -1;
    }
  }
  if (reply && len)
    snprintf(reply, len, "(no answer)");
  return -1;
}

int
HWT_Stop(HWT_Child *c)
{
  int status = -1;
  double end;

  if (c->pid <= 0)
    return -1;
  kill(c->pid, SIGTERM);
  end = now_s() + 5;
  while (waitpid(c->pid, &status, WNOHANG) == 0) {
    if (now_s() > end) {
      kill(c->pid, SIGKILL);
      waitpid(c->pid, &status, 0);
      break;
    }
    usleep(10000);
  }
  close(c->in_fd);
  close(c->out_fd);
  c->pid = -1;
  return status;
}

const char *
HWT_BuildPath(const char *rel, char *buf, size_t len)
{
  const char *dir = getenv("WL_BUILDDIR");

  snprintf(buf, len, "%s/%s", dir && *dir ? dir : HW_BUILDDIR, rel);
  return buf;
}

const char *
HWT_SrcPath(const char *rel, char *buf, size_t len)
{
  const char *dir = getenv("WL_SRCDIR");

  snprintf(buf, len, "%s/%s", dir && *dir ? dir : HW_SRCDIR, rel);
  return buf;
}
