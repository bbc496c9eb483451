/* log.c - logging to stderr or syslog with levels; thread-safe. */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

static int use_syslog;
/* The level is written by the loop thread (reload) while device, backend and
   loop threads read it: an atomic, relaxed (it orders nothing else).
   use_syslog and ident_buf are set by LOG_Open before any thread starts. */
static atomic_int max_level = LOG_LV_INFO;
static char ident_buf[32] = "wavelock";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
LOG_Open(const char *ident, int to_syslog, LOG_Level level)
{
  snprintf(ident_buf, sizeof ident_buf, "%s", ident);
  use_syslog = to_syslog;
  atomic_store_explicit(&max_level, (int)level, memory_order_relaxed);
  if (use_syslog)
    openlog(ident_buf, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
LOG_SetLevel(LOG_Level level)
{
  atomic_store_explicit(&max_level, (int)level, memory_order_relaxed);
}

int
LOG_ParseLevel(const char *name, LOG_Level *level)
{
  for (int i = 0; i <= LOG_LV_DEBUG; i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      *level = (LOG_Level)i;
      return 0;
    }
  }
  if (strcasecmp(name, "warning") == 0) {
    *level = LOG_LV_WARN;
    return 0;
  }
  return -1;
}

int
LOG_Enabled(LOG_Level level)
{
  return (int)level <= atomic_load_explicit(&max_level, memory_order_relaxed);
}

void
LOG_Msg(LOG_Level level, const char *fmt, ...)
{
  static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
  char msg[1024];
  va_list ap;

  if (!LOG_Enabled(level))
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  if (use_syslog) {
    syslog(prio[level], "%s", msg);
    return;
  }

  struct timespec ts;
  struct tm tm;
  char stamp[32];

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  pthread_mutex_lock(&log_lock);
  fprintf(stderr, "%s.%03ldZ %s[%s] %s\n", stamp, ts.tv_nsec / 1000000L, ident_buf,
          level_names[level], msg);
  fflush(stderr);
  pthread_mutex_unlock(&log_lock);
}

void
LOG_Close(void)
{
  if (use_syslog)
    closelog();
}
