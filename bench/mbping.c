/* mbping.c - the raw round trip of a libmodbus register write: the floor
 * under wavelockd's control latency.
 *
 *   mbping [-h HOST] -p PORT [-n COUNT] [-w WARMUP] [-r REG] [-u UNIT] [-i INTERVAL_US]
 *
 * Connects with libmodbus (as wavelockd's device threads do), writes one
 * holding register (function 06) COUNT times and prints the distribution of
 * the round trip (request sent -> reply parsed) in microseconds:
 *
 *   n=20000 p50_us=... p99_us=... max_us=... mean_us=... errors=0
 *
 * With -i the writes are spaced (the default 0 sends the next at once).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

static double
now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double
pct(const double *v, int n, double p)
{
  int k = (int)ceil(p / 100.0 * n);

  if (k < 1)
    k = 1;
  return v[k - 1];
}

int
main(int argc, char **argv)
{
  const char *host = "127.0.0.1";
  int port = 0, count = 20000, warmup = 500, reg = 1000, unit = 1, opt, errors = 0;
  long interval_us = 0;
  double *v, mean = 0.0;
  modbus_t *ctx;

  while ((opt = getopt(argc, argv, "h:p:n:w:r:u:i:")) != -1) {
    switch (opt) {
    case 'h': host = optarg; break;
    case 'p': port = atoi(optarg); break;
    case 'n': count = atoi(optarg); break;
    case 'w': warmup = atoi(optarg); break;
    case 'r': reg = atoi(optarg); break;
    case 'u': unit = atoi(optarg); break;
    case 'i': interval_us = atol(optarg); break;
    default:
      fprintf(stderr, "usage: mbping [-h HOST] -p PORT [-n COUNT] [-w WARMUP] [-r REG] "
              "[-u UNIT] [-i INTERVAL_US]\n");
      return 2;
    }
  }
  if (port <= 0 || count < 1 || warmup < 0) {
    fprintf(stderr, "mbping: need -p PORT and COUNT >= 1\n");
    return 2;
  }
  v = calloc((size_t)count, sizeof *v);
  ctx = modbus_new_tcp(host, port);
  if (!v || !ctx || modbus_set_slave(ctx, unit) < 0) {
    fprintf(stderr, "mbping: cannot set up: %s\n", strerror(errno));
    return 1;
  }
  modbus_set_response_timeout(ctx, 1, 0);
  if (modbus_connect(ctx) < 0) {
    fprintf(stderr, "mbping: connect %s:%d: %s\n", host, port, modbus_strerror(errno));
    return 1;
  }
  for (int i = 0; i < warmup + count; i++) {
    double t = now_us();
    int rc = modbus_write_register(ctx, reg, (uint16_t)i);
    double dt = now_us() - t;

    if (rc < 0) {
      errors++;
      dt = 1e6;
    }
    if (i >= warmup)
      v[i - warmup] = dt;
    if (interval_us > 0)
      usleep((useconds_t)interval_us);
  }
  modbus_close(ctx);
  modbus_free(ctx);
  for (int i = 0; i < count; i++)
    mean += v[i];
  mean /= count;
  qsort(v, (size_t)count, sizeof *v, cmp_double);
  printf("n=%d p50_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f errors=%d\n", count,
         pct(v, count, 50), pct(v, count, 99), v[count - 1], mean, errors);
  free(v);
  return errors ? 1 : 0;
}
