/* sim.c - wavelock-sim: the laser lab in a box.
 *
 * Reads the daemon's config file, builds the plant of every laser
 * (plant.h), serves the actuator registers as Modbus TCP servers, publishes
 * wavemeter readings in the stream format and takes fault-injection commands
 * on a control port.  See doc/wavelock-sim.1.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "log.h"
#include "plant.h"
#include "sim.h"
#include "util.h"

#define EXIT_USAGE 64
#define EXIT_CONFIG 78

SIM_Context SIM;

double
SIM_Time(void)
{
  return (UTL_Now() - SIM.t0) * SIM.speed;
}

double
SIM_Sync(void)
{
  double t = SIM_Time();

  SIM_StreamPump(t);
  return t;
}

struct evconnlistener *
SIM_Listen(const char *host, int port, evconnlistener_cb cb, void *arg, const char *what)
{
  struct addrinfo hints, *res = NULL, *ai;
  struct evconnlistener *l = NULL;
  char service[16];
  int rc, err = 0;

  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(service, sizeof service, "%d", port);
  if (!host[0] || strcmp(host, "*") == 0)
    host = NULL;
  rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0) {
    log_error("%s: cannot resolve %s: %s", what, host ? host : "*", gai_strerror(rc));
    return NULL;
  }
  for (ai = res; ai && !l; ai = ai->ai_next) {
    l = evconnlistener_new_bind(SIM.base, cb, arg,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                -1, ai->ai_addr, (int)ai->ai_addrlen);
    if (!l)
      err = errno;
  }
  freeaddrinfo(res);
  if (!l)
    log_error("%s: cannot listen on %s:%d: %s", what, host ? host : "*", port,
              strerror(err ? err : EADDRNOTAVAIL));
  return l;
}

void
SIM_ListenerName(struct evconnlistener *l, char *buf, size_t len)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

      inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
      port = ntohs(sin->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

      inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
      port = ntohs(sin6->sin6_port);
      snprintf(buf, len, "[%s]:%d", host, port);
      return;
    }
  }
  snprintf(buf, len, "%s:%d", host, port);
}

static void
usage(FILE *f)
{
  fprintf(f,
          "usage: wavelock-sim -c FILE [--seed N] [--control HOST:PORT] [--speed X] [-d]\n"
          "       wavelock-sim -c FILE [--seed N] --dump N\n"
          "       wavelock-sim -V | --help\n"
          "Simulates the lasers of a wavelock config: Modbus TCP actuator servers,\n"
          "the wavemeter stream and a control port for fault injection.\n"
          "  -c, --config FILE      config file (the daemon's; required)\n"
          "      --seed N           random seed (default: sim.seed of the config)\n"
          "      --control HOST:PORT  control port (default: sim.control)\n"
          "      --speed X          simulated seconds per second (default: sim.speed)\n"
          "      --dump N           print the first N readings at once, then exit\n"
          "  -d, --debug            debug logging\n"
          "  -V, --version          print the version\n"
          "  -h, --help             this help\n");
}

static int
parse_seed(const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (!s || !*s || *s == '-' || *s == '+')
    return -1;
  errno = 0;
  v = strtoull(s, &end, 0);
  if (*end || errno)
    return -1;
  *out = (uint64_t)v;
  return 0;
}

/* Build the actuator table: piezo then current of each laser. */
static int
make_actuators(void)
{
  const CNF_Config *cfg = SIM.cfg;

  SIM.acts = calloc((size_t)cfg->n_lasers * 2 + 1, sizeof *SIM.acts);
  if (!SIM.acts)
    return -1;
  SIM.n_acts = 0;
  for (int i = 0; i < cfg->n_lasers; i++) {
    const CNF_Laser *l = &cfg->lasers[i];

    for (int k = 0; k < 2; k++) {
      const CNF_Actuator *a = k ? &l->current : &l->piezo;
      SIM_Actuator *sa;

      if (!a->present)
        continue;
      sa = &SIM.acts[SIM.n_acts++];
      snprintf(sa->name, sizeof sa->name, "%s.%s", l->name, k ? "current" : "piezo");
      sa->laser = i;
      sa->is_current = k;
      sa->cfg = a;
      sa->nregs = REG_Count(&a->enc);
      sa->min_v = sa->max_v = sa->last_v = (double)NAN;
      sa->in_lo = a->min_v;
      sa->in_hi = a->max_v;
    }
  }
  return 0;
}

/* The lasers, then the reference lasers, and the wavemeter over them all. */
static int
make_plant(void)
{
  const CNF_Config *cfg = SIM.cfg;
  const CNF_Sim *sim = &cfg->sim;
  PLT_CalibParams cal;
  int n = cfg->n_lasers + sim->n_references;

  SIM.lasers = calloc((size_t)n + 1, sizeof *SIM.lasers);
  if (!SIM.lasers)
    return -1;
  for (int i = 0; i < n; i++) {
    if (i < cfg->n_lasers) {
      SIM.lasers[i] = PLT_CreateLaser(&cfg->lasers[i], SIM.seed);
    } else {
      const CNF_SimReference *r = &sim->references[i - cfg->n_lasers];

      SIM.lasers[i] = PLT_CreateReference(r->name, r->channel, r->thz, r->noise_mhz,
                                          r->exposure_ms, SIM.seed);
    }
    if (!SIM.lasers[i])
      return -1;
    SIM.n_plant = i + 1;
  }
  SIM.wm = PLT_CreateWavemeter(SIM.lasers, n, sim->switch_ms, SIM.seed);
  if (!SIM.wm)
    return -1;
  cal.offset_ppb = sim->calib_offset_ppb;
  cal.rate_ppb_per_min = sim->calib_drift_ppb_per_min;
  cal.walk_ppb_rts = sim->calib_walk_ppb_rts;
  PLT_SetCalibration(SIM.wm, &cal, SIM.seed);
  return 0;
}

static void
free_plant(void)
{
  PLT_DestroyWavemeter(SIM.wm);
  if (SIM.lasers)
    for (int i = 0; i < SIM.n_plant; i++)
      PLT_DestroyLaser(SIM.lasers[i]);
  free(SIM.lasers);
  free(SIM.acts);
}

/* --dump: the first n readings, computed at once, in the stream format. */
static int
dump_readings(long n)
{
  char line[128];
  PLT_Reading r;

  for (long i = 0; i < n; i++) {
    if (PLT_TakeReading(SIM.wm, &r) < 0)
      break;
    SIM_FormatReading(&r, line, sizeof line);
    if (fputs(line, stdout) == EOF)
      return 1;
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
  log_info("signal %d: shutting down", (int)sig);
  event_base_loopbreak(SIM.base);
}

int
main(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "config", required_argument, NULL, 'c' },
    { "seed", required_argument, NULL, 'S' },
    { "control", required_argument, NULL, 'C' },
    { "speed", required_argument, NULL, 'X' },
    { "dump", required_argument, NULL, 'D' },
    { "debug", no_argument, NULL, 'd' },
    { "version", no_argument, NULL, 'V' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *conf_path = NULL, *control = NULL;
  int debug = 0, have_seed = 0, opt, status = 0;
  long dump = -1;
  double speed = 0.0;
  uint64_t seed = 0;
  char err[1024];
  struct event *sigint = NULL, *sigterm = NULL;
  LOG_Level level = LOG_LV_INFO;

  while ((opt = getopt_long(argc, argv, "c:dVh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      conf_path = optarg;
      break;
    case 'S':
      if (parse_seed(optarg, &seed) < 0) {
        fprintf(stderr, "wavelock-sim: --seed: not an unsigned integer: %s\n", optarg);
        return EXIT_USAGE;
      }
      have_seed = 1;
      break;
    case 'C':
      control = optarg;
      break;
    case 'X':
      if (UTL_ParseDouble(optarg, &speed) < 0 || speed <= 0.0 || speed > 1e4) {
        fprintf(stderr, "wavelock-sim: --speed: want a number in (0, 10000]: %s\n", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'D':
      if (UTL_ParseInt(optarg, 0, 100000000L, &dump) < 0) {
        fprintf(stderr, "wavelock-sim: --dump: want a count 0..100000000: %s\n", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'd':
      debug = 1;
      break;
    case 'V':
      printf("wavelock-sim %s\n", PACKAGE_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "wavelock-sim: unexpected argument: %s\n", argv[optind]);
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!conf_path) {
    fprintf(stderr, "wavelock-sim: no config file given (-c FILE)\n");
    usage(stderr);
    return EXIT_USAGE;
  }

  SIM.cfg = CNF_Load(conf_path, err, sizeof err);
  if (!SIM.cfg) {
    fprintf(stderr, "wavelock-sim: %s\n", err);
    return EXIT_CONFIG;
  }
  for (int i = 0; i < SIM.cfg->n_devices; i++) {
    const CNF_Device *d = &SIM.cfg->devices[i];

    if (d->parsed.kind != CNF_URL_TCP) {
      fprintf(stderr,
              "wavelock-sim: %s:%d: devices.[%d].url: wavelock-sim serves only tcp:// devices, "
              "not %s\n", SIM.cfg->path, d->line, i, d->url);
      CNF_Free(SIM.cfg);
      return EXIT_CONFIG;
    }
  }

  if (debug)
    level = LOG_LV_DEBUG;
  else if (SIM.cfg->log_level[0] && LOG_ParseLevel(SIM.cfg->log_level, &level) < 0)
    level = LOG_LV_INFO;
  LOG_Open("wavelock-sim", 0, level);

  SIM.seed = have_seed ? seed : (uint64_t)SIM.cfg->sim.seed;
  SIM.speed = speed > 0.0 ? speed : SIM.cfg->sim.speed;
  if (!(SIM.speed > 0.0))
    SIM.speed = 1.0;
  if (make_actuators() < 0 || make_plant() < 0) {
    fprintf(stderr, "wavelock-sim: out of memory\n");
    free_plant();
    CNF_Free(SIM.cfg);
    return 1;
  }
  if (dump >= 0) {
    status = dump_readings(dump);
    free_plant();
    CNF_Free(SIM.cfg);
    return status;
  }

  signal(SIGPIPE, SIG_IGN);
  SIM.base = event_base_new();
  if (!SIM.base) {
    log_error("cannot create the event loop");
    free_plant();
    CNF_Free(SIM.cfg);
    return 1;
  }
  sigint = evsignal_new(SIM.base, SIGINT, on_signal, NULL);
  sigterm = evsignal_new(SIM.base, SIGTERM, on_signal, NULL);
  if (!sigint || !sigterm || event_add(sigint, NULL) < 0 || event_add(sigterm, NULL) < 0) {
    log_error("cannot install signal handlers");
    status = 1;
    goto out;
  }

  SIM.t0 = UTL_Now();
  if (SIM_ModbusInit() < 0 || SIM_StreamInit() < 0 ||
      SIM_ControlInit(control ? control : SIM.cfg->sim.control) < 0) {
    status = 1;
    goto out;
  }
  log_info("wavelock-sim %s: %d lasers, %d reference lasers, %d actuators, seed %llu, speed %g",
           PACKAGE_VERSION, SIM.cfg->n_lasers, SIM.cfg->sim.n_references, SIM.n_acts,
           (unsigned long long)SIM.seed, SIM.speed);
  if (SIM.cfg->sim.calib_offset_ppb != 0.0 || SIM.cfg->sim.calib_drift_ppb_per_min != 0.0 ||
      SIM.cfg->sim.calib_walk_ppb_rts != 0.0)
    log_info("wavemeter calibration error: %g ppb + %g ppb/min + walk %g ppb/sqrt(s)",
             SIM.cfg->sim.calib_offset_ppb, SIM.cfg->sim.calib_drift_ppb_per_min,
             SIM.cfg->sim.calib_walk_ppb_rts);

  if (event_base_dispatch(SIM.base) < 0) {
    log_error("event loop failed");
    status = 1;
  }

out:
  SIM_ControlFini();
  SIM_StreamFini();
  SIM_ModbusFini();
  if (sigint)
    event_free(sigint);
  if (sigterm)
    event_free(sigterm);
  event_base_free(SIM.base);
  free_plant();
  CNF_Free(SIM.cfg);
  log_info("stopped");
  LOG_Close();
  return status;
}
