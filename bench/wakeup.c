/* wakeup.c - what one thread handoff costs on this machine: the floor under
 * the part of wavelockd's control latency that its design adds.
 *
 *   wakeup [-n COUNT] [-i INTERVAL_US]
 *
 * wavelockd's loop thread hands every cycle to a device thread by queueing a
 * job under a mutex and signalling a condition variable (src/mbdev.c,
 * MB_Submit).  This program does the same between two threads of its own:
 * every INTERVAL_US (default 5000, like readings spaced in time) the main
 * thread stamps the time and signals; the waiting thread stamps the time it
 * runs.  Prints the distribution of that delay in microseconds:
 *
 *   n=2000 p50_us=... p99_us=... max_us=... mean_us=...
 *
 * Two variants, as one line each: "locked" signals while holding the mutex
 * (as MB_Submit does: the woken thread may block on the mutex and need a
 * second wake-up), "unlocked" signals after releasing it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static double posted_at, *delays;
static int pending, done, count;

static double
now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static void *
waiter(void *arg)
{
  int n = 0;

  (void)arg;
  pthread_mutex_lock(&lock);
  while (!done) {
    if (pending) {
      delays[n++ % count] = now_us() - posted_at;
      pending = 0;
      continue;
    }
    pthread_cond_wait(&cond, &lock);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void
run(const char *name, int signal_locked, long interval_us)
{
  pthread_t t;
  double mean = 0.0;

  done = 0;
  pending = 0;
  pthread_create(&t, NULL, waiter, NULL);
  usleep(10000);
  for (int i = 0; i < count; i++) {
    usleep((useconds_t)interval_us);
    pthread_mutex_lock(&lock);
    posted_at = now_us();
    pending = 1;
    if (signal_locked) {
      pthread_cond_signal(&cond);
      pthread_mutex_unlock(&lock);
    } else {
      pthread_mutex_unlock(&lock);
      pthread_cond_signal(&cond);
    }
  }
  usleep((useconds_t)interval_us);
  pthread_mutex_lock(&lock);
  done = 1;
  pthread_cond_signal(&cond);
  pthread_mutex_unlock(&lock);
  pthread_join(t, NULL);
  for (int i = 0; i < count; i++)
    mean += delays[i];
  mean /= count;
  qsort(delays, (size_t)count, sizeof *delays, cmp_double);
  printf("variant=%s n=%d p50_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f\n", name, count,
         delays[(count - 1) / 2], delays[(int)ceil(0.99 * count) - 1], delays[count - 1], mean);
  fflush(stdout);
}

int
main(int argc, char **argv)
{
  long interval_us = 5000;
  int opt;

  count = 2000;
  while ((opt = getopt(argc, argv, "n:i:")) != -1) {
    switch (opt) {
    case 'n': count = atoi(optarg); break;
    case 'i': interval_us = atol(optarg); break;
    default:
      fprintf(stderr, "usage: wakeup [-n COUNT] [-i INTERVAL_US]\n");
      return 2;
    }
  }
  if (count < 1 || interval_us < 0)
    return 2;
  delays = calloc((size_t)count, sizeof *delays);
  if (!delays)
    return 1;
  pthread_cond_init(&cond, NULL);
  run("locked", 1, interval_us);
  run("unlocked", 0, interval_us);
  free(delays);
  return 0;
}
