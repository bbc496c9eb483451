/* slowcalls.c - an LD_PRELOAD library for tests: makes the calls a daemon
 * may block in (fsync, fdatasync, getaddrinfo) as slow as the test says, so
 * a test can show that the event loop never waits for them.
 *
 *   WL_SLOW_FILE=PATH   a file with "fsync_ms=N gai_ms=N" (either may be
 *                       missing), read at every call (the test changes it
 *                       while the daemon runs); no file: no delay
 *   WL_SLOW_HOST=NAME   getaddrinfo() of this host name sleeps gai_ms and
 *                       then resolves 127.0.0.1 instead (so a test can use
 *                       a name without a resolver); other names: untouched
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int
setting(const char *key)
{
  const char *path = getenv("WL_SLOW_FILE");
  char buf[256], *p;
  size_t n;
  FILE *f;

  if (!path || !(f = fopen(path, "r")))
    return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  p = strstr(buf, key);
  return p && p[strlen(key)] == '=' ? atoi(p + strlen(key) + 1) : 0;
}

static void
pause_ms(int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

  if (ms > 0)
    nanosleep(&ts, NULL);
}

int
fsync(int fd)
{
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

  pause_ms(setting("fsync_ms"));
  return real(fd);
}

int
fdatasync(int fd)
{
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

  pause_ms(setting("fsync_ms"));
  return real(fd);
}

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
  typedef int (*Fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
  Fn real = (Fn)dlsym(RTLD_NEXT, "getaddrinfo");
  const char *slow = getenv("WL_SLOW_HOST");

  if (node && slow && strcmp(node, slow) == 0) {
    pause_ms(setting("gai_ms"));
    node = "127.0.0.1";
  }
  return real(node, service, hints, res);
}
