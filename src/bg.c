/* bg.c - blocking work kept off the event loop (see bg.h). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "bg.h"
#include "util.h"

typedef struct Job {
  BG_Fn work, done;
  void *arg;
  struct Job *next;
} Job;

struct BG_Ctx {
  struct event *ev;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  Job *finished;           /* work done, done() not yet run */
  int running;             /* threads not yet finished with their work */
  int busy;                /* jobs started, done() not yet run */
  int closing;
};

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
  BG_Ctx *bg = arg;
  Job *list;

  (void)fd;
  (void)what;
  pthread_mutex_lock(&bg->lock);
  list = bg->finished;
  bg->finished = NULL;
  pthread_mutex_unlock(&bg->lock);
  /* Oldest first: the list was built newest first. */
  {
    Job *rev = NULL;
    while (list) {
      Job *next = list->next;
      list->next = rev;
      rev = list;
      list = next;
    }
    list = rev;
  }
  while (list) {
    Job *next = list->next;

    pthread_mutex_lock(&bg->lock);
    bg->busy--;
    pthread_mutex_unlock(&bg->lock);
    if (list->done)
      list->done(list->arg);
    free(list);
    list = next;
  }
}

static void *
thread_main(void *arg)
{
  Job *j = arg;
  BG_Ctx *bg = (BG_Ctx *)j->next;    /* carried in next until queued */

  j->work(j->arg);
  pthread_mutex_lock(&bg->lock);
  bg->running--;
  if (!bg->closing) {
    j->next = bg->finished;
    bg->finished = j;
    event_active(bg->ev, EV_READ, 0);
    j = NULL;
  }
  pthread_cond_broadcast(&bg->cond);
  pthread_mutex_unlock(&bg->lock);
  free(j);
  return NULL;
}

BG_Ctx *
BG_Create(struct event_base *base)
{
  BG_Ctx *bg = calloc(1, sizeof *bg);

  if (!bg)
    return NULL;
  bg->ev = event_new(base, -1, 0, done_cb, bg);
  if (!bg->ev) {
    free(bg);
    return NULL;
  }
  pthread_mutex_init(&bg->lock, NULL);
  pthread_cond_init(&bg->cond, NULL);
  return bg;
}

int
BG_Run(BG_Ctx *bg, BG_Fn work, BG_Fn done, void *arg)
{
  pthread_attr_t ta;
  pthread_t t;
  Job *j;
  int rc;

  if (!bg || !work) {
    errno = EINVAL;
    return -1;
  }
  j = calloc(1, sizeof *j);
  if (!j) {
    errno = ENOMEM;
    return -1;
  }
  j->work = work;
  j->done = done;
  j->arg = arg;
  j->next = (Job *)(void *)bg;
  pthread_attr_init(&ta);
  pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock(&bg->lock);
  rc = pthread_create(&t, &ta, thread_main, j);
  if (rc == 0) {
    bg->running++;
    bg->busy++;
  }
  pthread_mutex_unlock(&bg->lock);
  pthread_attr_destroy(&ta);
  if (rc != 0) {
    free(j);
    errno = rc;
    return -1;
  }
  return 0;
}

int
BG_Busy(BG_Ctx *bg)
{
  int n;

  pthread_mutex_lock(&bg->lock);
  n = bg->busy;
  pthread_mutex_unlock(&bg->lock);
  return n;
}

void
BG_Destroy(BG_Ctx *bg, double timeout_s)
{
  struct timespec ts;
  int left;

  if (!bg)
    return;
  UTL_AbsTime(CLOCK_REALTIME, timeout_s, &ts);
  pthread_mutex_lock(&bg->lock);
  bg->closing = 1;
  while (bg->running > 0 && pthread_cond_timedwait(&bg->cond, &bg->lock, &ts) == 0)
    ;
  left = bg->running;
  while (bg->finished) {
    Job *next = bg->finished->next;
    free(bg->finished);
    bg->finished = next;
  }
  pthread_mutex_unlock(&bg->lock);
  event_free(bg->ev);
  bg->ev = NULL;
  if (left > 0)
    return;         /* abandoned threads still use bg->lock */
  pthread_cond_destroy(&bg->cond);
  pthread_mutex_destroy(&bg->lock);
  free(bg);
}
