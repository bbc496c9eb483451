/* mbtool.c - write actuator volts (or raw registers) to a Modbus device
 * through wavelock's own device layer (MB_*) and register encoding (REG_*).
 *
 *   mbtool [options] URL write REG VOLTS [VOLTS...]
 *       encode each value with the format and write them all in one request
 *       starting at REG (one u16/s16 register: function 06; otherwise 16);
 *       prints "wrote addr=REG n=N regs=R,R,..."
 *   mbtool [options] URL raw REG VALUE [VALUE...]
 *       write raw register values (0..65535) the same way
 *   mbtool [options] URL read REG [N]
 *       prints "read addr=REG n=N regs=R,R,..."
 *
 * Options: -u UNIT (1), -t TIMEOUT_MS (500), -W WAIT_S for the device to come
 * up (5), -f u16|s16|f32 (u16), -w abcd|cdab|badc|dcba (abcd), -s SCALE (1),
 * -o OFFSET (0).  Options come before URL, so negative values need no "--".
 * Exit status 0 on success, 1 on a device error, 2 on usage.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "mbdev.h"
#include "regenc.h"
#include "util.h"

#define MAX_REGS 32

typedef struct {
  int write;
  int addr, n;
  uint16_t regs[MAX_REGS + 2];
  int rc, err, done;
} Req;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int dev_up = -1;
static char dev_why[128];

static void
status_cb(MB_Device *dev, int up, const char *why, void *arg)
{
  pthread_mutex_lock(&lock);
  dev_up = up;
  snprintf(dev_why, sizeof dev_why, "%s", why);
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
}

static void
job(MB_Io *io, void *arg)
{
  Req *r = arg;
  int rc;

  if (r->write)
    rc = MB_Write(io, r->addr, r->regs, r->n);
  else
    rc = MB_Read(io, r->addr, r->regs, r->n);
  pthread_mutex_lock(&lock);
  r->rc = rc;
  r->err = rc < 0 ? errno : 0;
  r->done = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
}

static void usage(void) __attribute__((noreturn));

static void
usage(void)
{
  fprintf(stderr,
          "usage: mbtool [-u UNIT] [-t TIMEOUT_MS] [-W WAIT_S] [-f u16|s16|f32] [-w ORDER]\n"
          "              [-s SCALE] [-o OFFSET] URL write|raw|read REG [VALUE...]\n");
  exit(2);
}

static void
print_regs(const char *what, const Req *r)
{
  printf("%s addr=%d n=%d regs=", what, r->addr, r->n);
  for (int i = 0; i < r->n; i++)
    printf("%s%u", i ? "," : "", r->regs[i]);
  printf("\n");
}

int
main(int argc, char **argv)
{
  REG_Encoding enc = { REG_U16, REG_ABCD, 1.0, 0.0 };
  CNF_Device cfg;
  Req req;
  MB_Device *dev;
  char err[256];
  const char *mode;
  double wait_s = 5, deadline;
  long v;
  int opt, rc = 0;

  LOG_Open("mbtool", 0, LOG_LV_WARN);
  memset(&cfg, 0, sizeof cfg);
  cfg.unit = 1;
  cfg.timeout_ms = 500;
  while ((opt = getopt(argc, argv, "+u:t:W:f:w:s:o:h")) != -1) {
    switch (opt) {
      case 'u':
        if (UTL_ParseInt(optarg, 0, 247, &v) < 0)
          usage();
        cfg.unit = (int)v;
        break;
      case 't':
        if (UTL_ParseInt(optarg, 1, 60000, &v) < 0)
          usage();
        cfg.timeout_ms = (int)v;
        break;
      case 'W':
        if (UTL_ParseDouble(optarg, &wait_s) < 0)
          usage();
        break;
      case 'f':
        if (REG_ParseFormat(optarg, &enc.format) < 0)
          usage();
        break;
      case 'w':
        if (REG_ParseWordOrder(optarg, &enc.order) < 0)
          usage();
        break;
      case 's':
        if (UTL_ParseDouble(optarg, &enc.scale) < 0)
          usage();
        break;
      case 'o':
        if (UTL_ParseDouble(optarg, &enc.offset) < 0)
          usage();
        break;
      default:
        usage();
    }
  }
  if (argc - optind < 3)
    usage();
  snprintf(cfg.name, sizeof cfg.name, "mbtool");
  snprintf(cfg.url, sizeof cfg.url, "%s", argv[optind]);
  if (CNF_ParseUrl(cfg.url, &cfg.parsed, err, sizeof err) < 0) {
    fprintf(stderr, "mbtool: %s\n", err);
    return 2;
  }
  mode = argv[optind + 1];
  memset(&req, 0, sizeof req);
  if (UTL_ParseInt(argv[optind + 2], 0, 65535, &v) < 0)
    usage();
  req.addr = (int)v;

  if (!strcmp(mode, "write") || !strcmp(mode, "raw")) {
    req.write = 1;
    for (int i = optind + 3; i < argc; i++) {
      if (req.n + REG_Count(&enc) > MAX_REGS)
        usage();
      if (!strcmp(mode, "raw")) {
        if (UTL_ParseInt(argv[i], 0, 65535, &v) < 0)
          usage();
        req.regs[req.n++] = (uint16_t)v;
      } else {
        double volts;
        int k;

        if (UTL_ParseDouble(argv[i], &volts) < 0 ||
            (k = REG_Encode(&enc, volts, &req.regs[req.n])) < 0)
          usage();
        req.n += k;
      }
    }
    if (req.n == 0)
      usage();
  } else if (!strcmp(mode, "read")) {
    req.n = 1;
    if (argc - optind > 3) {
      if (UTL_ParseInt(argv[optind + 3], 1, MAX_REGS, &v) < 0)
        usage();
      req.n = (int)v;
    }
  } else {
    usage();
  }

  dev = MB_Create(&cfg, NULL, status_cb, NULL);
  if (!dev) {
    fprintf(stderr, "mbtool: cannot create device: %s\n", strerror(errno));
    return 1;
  }
  if (MB_Start(dev) < 0) {
    fprintf(stderr, "mbtool: cannot start device thread\n");
    MB_Destroy(dev);
    return 1;
  }
  deadline = UTL_Now() + wait_s;
  pthread_mutex_lock(&lock);
  while (dev_up != 1 && UTL_Now() < deadline) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&cond, &lock, &ts);
  }
  if (dev_up != 1) {
    fprintf(stderr, "mbtool: device %s not reachable: %s\n", cfg.url,
            dev_why[0] ? dev_why : "no answer");
    pthread_mutex_unlock(&lock);
    MB_Destroy(dev);
    return 1;
  }
  pthread_mutex_unlock(&lock);

  if (MB_Submit(dev, job, &req) < 0) {
    fprintf(stderr, "mbtool: cannot queue the request\n");
    MB_Destroy(dev);
    return 1;
  }
  pthread_mutex_lock(&lock);
  while (!req.done)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  MB_Stop(dev);

  if (req.rc < 0) {
    char buf[128];

    fprintf(stderr, "mbtool: %s failed: %s\n", req.write ? "write" : "read",
            MB_StrError(req.err, buf, sizeof buf));
    rc = 1;
  } else {
    print_regs(req.write ? "wrote" : "read", &req);
  }
  MB_Destroy(dev);
  return rc;
}
