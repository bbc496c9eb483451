/* sim_control.c - wavelock-sim's control port for tests and demos.
 *
 * The same line framing as wavelockd's text protocol: a greeting
 * "* wavelock-sim <version> ready", one request per line (LF or CRLF, at
 * most CTL_LINE_MAX bytes, telnet IAC sequences ignored), zero or more
 * key=value data lines, then "OK" or "ERR <code> <message>".
 *
 *   truth [laser|all]                       true frequencies and outputs
 *   hop <laser> [mhz [hysteresis_v]]       mode hop now
 *   dropout <channel|all> <seconds> [code]  error-code readings for a while
 *   glitch <channel> <mhz> [count]          the next readings published wrong
 *   outage <device|all> <silent|drop|refuse|off> [seconds]
 *   drift <laser> <mhz>                     step of the free-running frequency
 *   calib [step <ppb> | rate <ppb/min>]     the wavemeter's calibration error
 *   writes [device]                         actuator write statistics
 *   info, help, ping, quit
 *
 * Durations are real seconds (the plant's share is scaled by sim.speed).
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "log.h"
#include "plant.h"
#include "sim.h"
#include "util.h"

#define CTL_LINE_MAX 1024
#define CTL_MAX_CLIENTS 32
#define CTL_OUT_MAX (1024 * 1024)
#define CTL_MAX_ARGS 8

typedef struct CtlConn {
  struct bufferevent *bev;
  int discarding;                 /* skipping the rest of a too-long line */
  int closing;                    /* quit: close once the output is sent */
  int iac;                        /* telnet IAC parser state */
  struct CtlConn *next;
} CtlConn;

typedef struct {
  const char *name;
  int min_args, max_args;
  const char *usage;
  const char *help;
  void (*fn)(CtlConn *c, int argc, char **argv);
} CtlCommand;

static struct evconnlistener *listener;
static CtlConn *conns;
static int n_conns;

static void reply(CtlConn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
reply(CtlConn *c, const char *fmt, ...)
{
  struct evbuffer *out = bufferevent_get_output(c->bev);
  va_list ap;

  va_start(ap, fmt);
  evbuffer_add_vprintf(out, fmt, ap);
  va_end(ap);
  evbuffer_add(out, "\n", 1);
}

static void
conn_free(CtlConn *c)
{
  for (CtlConn **pp = &conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  n_conns--;
  bufferevent_free(c->bev);
  free(c);
}

/* ---- commands ----------------------------------------------------------------- */

/* A laser or a reference laser (sim.references) by name: index into SIM.lasers. */
static int
find_laser(CtlConn *c, const char *name)
{
  for (int i = 0; i < SIM.n_plant; i++)
    if (UTL_StrEqCase(PLT_LaserName(SIM.lasers[i]), name))
      return i;
  reply(c, "ERR 404 unknown laser: %s", name);
  return -1;
}

static void
truth_line(CtlConn *c, int i, double now)
{
  PLT_Truth t;

  PLT_GetTruth(SIM.lasers[i], now, &t);
  reply(c,
        "name=%s true_thz=%.9f error_mhz=%.6f piezo_v=%.6f current_v=%.6f mode_hop=%d "
        "channel=%d drift_mhz=%.6f hop_mhz=%.3f hops=%lu time_s=%.3f reference=%d mode=%d "
        "tuning_v=%.6f",
        PLT_LaserName(SIM.lasers[i]), t.true_thz, t.error_mhz, t.piezo_v, t.current_v,
        t.mode_hop, PLT_LaserChannel(SIM.lasers[i]), t.drift_mhz, t.hop_mhz, t.hops, t.t,
        PLT_LaserIsReference(SIM.lasers[i]), t.mode, t.tuning_v);
}

static void
cmd_truth(CtlConn *c, int argc, char **argv)
{
  double now = SIM_Sync();

  if (argc > 1 && !UTL_StrEqCase(argv[1], "all")) {
    int i = find_laser(c, argv[1]);

    if (i < 0)
      return;
    truth_line(c, i, now);
  } else {
    for (int i = 0; i < SIM.n_plant; i++)
      truth_line(c, i, now);
  }
  reply(c, "OK");
}

static void
cmd_hop(CtlConn *c, int argc, char **argv)
{
  int i = find_laser(c, argv[1]);
  double mhz, hyst;

  if (i < 0)
    return;
  mhz = PLT_LaserParams(SIM.lasers[i])->modehop_mhz;
  hyst = PLT_LaserParams(SIM.lasers[i])->hysteresis_v;
  if (argc > 2 && (UTL_ParseDouble(argv[2], &mhz) < 0 || fabs(mhz) > 1e7)) {
    reply(c, "ERR 422 bad size in MHz: %s", argv[2]);
    return;
  }
  if (argc > 3 && (UTL_ParseDouble(argv[3], &hyst) < 0 || !(hyst >= 0.0) || hyst > 1e6)) {
    reply(c, "ERR 422 bad hysteresis in volts: %s", argv[3]);
    return;
  }
  PLT_StartHopHysteresis(SIM.lasers[i], SIM_Sync(), mhz, hyst);
  if (PLT_LaserParams(SIM.lasers[i])->modehop_free_v > 0.0)
    log_info("%s: mode hop of %.1f MHz until the tuning moves back by %g V",
             PLT_LaserName(SIM.lasers[i]), mhz, hyst);
  else
    log_info("%s: mode hop of %.1f MHz for %g s", PLT_LaserName(SIM.lasers[i]), mhz,
             PLT_LaserParams(SIM.lasers[i])->modehop_s);
  reply(c, "OK");
}

static void
cmd_drift(CtlConn *c, int argc, char **argv)
{
  int i = find_laser(c, argv[1]);
  double mhz;

  if (i < 0)
    return;
  if (UTL_ParseDouble(argv[2], &mhz) < 0 || fabs(mhz) > 1e7) {
    reply(c, "ERR 422 bad step in MHz: %s", argv[2]);
    return;
  }
  PLT_StepDrift(SIM.lasers[i], SIM_Sync(), mhz);
  log_info("%s: drift step of %.3f MHz", PLT_LaserName(SIM.lasers[i]), mhz);
  reply(c, "OK");
}

/* The calibration error as eps and as MHz at 384 THz (about 780 nm). */
#define CALIB_AT_THZ 384.0
#define CALIB_MAX_PPB 1e5

static void
calib_line(CtlConn *c, double now)
{
  PLT_CalibState cs;

  PLT_GetCalibration(SIM.wm, now, &cs);
  reply(c,
        "ppb=%.6f mhz_at_384thz=%.6f rate_ppb_per_min=%.6f rate_mhz_per_min_at_384thz=%.6f "
        "walk_ppb_rts=%.6f offset_ppb=%.6f linear_ppb=%.6f walk_ppb=%.6f steps_ppb=%.6f "
        "time_s=%.3f",
        cs.ppb, PLT_PPB_TO_MHZ(cs.ppb, CALIB_AT_THZ), cs.rate_ppb_per_min,
        PLT_PPB_TO_MHZ(cs.rate_ppb_per_min, CALIB_AT_THZ), cs.walk_ppb_rts, cs.offset_ppb,
        cs.linear_ppb, cs.walk_ppb, cs.steps_ppb, cs.t);
}

/* calib: the calibration error now; calib step <ppb>: a step of it now;
   calib rate <ppb/min>: its linear rate from now on. */
static void
cmd_calib(CtlConn *c, int argc, char **argv)
{
  double v;

  if (argc == 1) {
    calib_line(c, SIM_Sync());
    reply(c, "OK");
    return;
  }
  if (argc != 3 || (!UTL_StrEqCase(argv[1], "step") && !UTL_StrEqCase(argv[1], "rate"))) {
    reply(c, "ERR 400 usage: calib [step <ppb> | rate <ppb_per_min>]");
    return;
  }
  if (UTL_ParseDouble(argv[2], &v) < 0 || !(fabs(v) <= CALIB_MAX_PPB)) {
    reply(c, "ERR 422 bad %s in ppb%s (want -%g..%g): %s",
          UTL_StrEqCase(argv[1], "step") ? "step" : "rate",
          UTL_StrEqCase(argv[1], "step") ? "" : " per minute", CALIB_MAX_PPB, CALIB_MAX_PPB,
          argv[2]);
    return;
  }
  if (UTL_StrEqCase(argv[1], "step")) {
    PLT_StepCalibration(SIM.wm, SIM_Sync(), v);
    log_info("wavemeter calibration: step of %g ppb (%.3f MHz at 384 THz)", v,
             PLT_PPB_TO_MHZ(v, CALIB_AT_THZ));
  } else {
    PLT_SetCalibrationRate(SIM.wm, SIM_Sync(), v);
    log_info("wavemeter calibration: drift of %g ppb/min (%.3f MHz/min at 384 THz)", v,
             PLT_PPB_TO_MHZ(v, CALIB_AT_THZ));
  }
  reply(c, "OK");
}

/* limits <laser>.<piezo|current> <lo> <hi> | reset: the limits in force
   in the daemon now (run-time or reloaded), for the `writes` check. */
static void
cmd_limits(CtlConn *c, int argc, char **argv)
{
  SIM_Actuator *sa = NULL;
  double lo, hi;

  for (int i = 0; i < SIM.n_acts && !sa; i++)
    if (UTL_StrEqCase(SIM.acts[i].name, argv[1]))
      sa = &SIM.acts[i];
  if (!sa) {
    reply(c, "ERR 404 unknown actuator: %s (laser.piezo or laser.current)", argv[1]);
    return;
  }
  if (argc == 3 && UTL_StrEqCase(argv[2], "reset")) {
    lo = sa->cfg->min_v;
    hi = sa->cfg->max_v;
  } else if (argc != 4 || UTL_ParseDouble(argv[2], &lo) < 0 || UTL_ParseDouble(argv[3], &hi) < 0 ||
             !(lo <= hi)) {
    reply(c, "ERR 422 usage: limits <laser>.<piezo|current> <lo> <hi> | reset");
    return;
  }
  sa->in_lo = lo;
  sa->in_hi = hi;
  sa->in_since = UTL_Now();
  reply(c, "OK");
}

static int
parse_seconds(CtlConn *c, const char *text, double *s)
{
  if (UTL_ParseDouble(text, s) < 0 || *s < 0.0 || *s > 86400.0 * 365) {
    reply(c, "ERR 422 bad duration in seconds: %s", text);
    return -1;
  }
  return 0;
}

static void
cmd_dropout(CtlConn *c, int argc, char **argv)
{
  long channel = 0, code = -1;
  double s;

  if (!UTL_StrEqCase(argv[1], "all") &&
      UTL_ParseInt(argv[1], 1, CNF_MAX_CHANNEL, &channel) < 0) {
    reply(c, "ERR 422 bad channel: %s", argv[1]);
    return;
  }
  if (parse_seconds(c, argv[2], &s) < 0)
    return;
  if (argc > 3 && UTL_ParseInt(argv[3], -99, 0, &code) < 0) {
    reply(c, "ERR 422 bad error code (want -99..0): %s", argv[3]);
    return;
  }
  if (PLT_Dropout(SIM.wm, (int)channel, SIM_Sync() + s * SIM.speed, (int)code) < 0) {
    reply(c, "ERR 404 no laser on channel %ld", channel);
    return;
  }
  if (channel)
    log_info("wavemeter channel %ld: dropout (code %ld) for %g s", channel, code, s);
  else
    log_info("wavemeter: dropout on every channel (code %ld) for %g s", code, s);
  reply(c, "OK");
}

static void
cmd_glitch(CtlConn *c, int argc, char **argv)
{
  long channel, count = 1;
  double mhz;

  if (UTL_ParseInt(argv[1], 1, CNF_MAX_CHANNEL, &channel) < 0) {
    reply(c, "ERR 422 bad channel: %s", argv[1]);
    return;
  }
  if (UTL_ParseDouble(argv[2], &mhz) < 0 || fabs(mhz) > 1e7) {
    reply(c, "ERR 422 bad offset in MHz (want -1e7..1e7): %s", argv[2]);
    return;
  }
  if (argc > 3 && UTL_ParseInt(argv[3], 0, 1000000, &count) < 0) {
    reply(c, "ERR 422 bad count (want 0..1000000): %s", argv[3]);
    return;
  }
  SIM_Sync();                   /* readings already due are published right */
  if (SIM_StreamGlitch((int)channel, mhz, (int)count) < 0) {
    reply(c, "ERR 404 no laser on channel %ld", channel);
    return;
  }
  log_info("wavemeter channel %ld: the next %ld readings %+.1f MHz off", channel, count, mhz);
  reply(c, "OK");
}

static void
cmd_outage(CtlConn *c, int argc, char **argv)
{
  SIM_Outage mode;
  double s = 0.0;
  int dev = -1;

  if (!UTL_StrEqCase(argv[1], "all")) {
    dev = CNF_FindDevice(SIM.cfg, argv[1]);
    if (dev < 0) {
      reply(c, "ERR 404 unknown device: %s", argv[1]);
      return;
    }
  }
  if (SIM_ParseOutage(argv[2], &mode) < 0) {
    reply(c, "ERR 422 unknown outage mode (silent, drop, refuse or off): %s", argv[2]);
    return;
  }
  if (mode != SIM_OUTAGE_NONE && argc < 4) {
    reply(c, "ERR 400 usage: outage <device|all> <silent|drop|refuse|off> <seconds>");
    return;
  }
  if (argc > 3 && parse_seconds(c, argv[3], &s) < 0)
    return;
  SIM_ModbusOutage(dev, mode, s);
  reply(c, "OK");
}

/* input|coil <device> <addr> [0|1]: set or read a discrete input or coil. */
static void
cmd_bit(CtlConn *c, int argc, char **argv)
{
  int coil = UTL_StrEqCase(argv[0], "coil");
  int dev = CNF_FindDevice(SIM.cfg, argv[1]), v = -1;
  long addr, val;

  if (dev < 0) {
    reply(c, "ERR 404 unknown device: %s", argv[1]);
    return;
  }
  if (UTL_ParseInt(argv[2], 0, SIM_BITS - 1, &addr) < 0) {
    reply(c, "ERR 422 address must be 0..%d: %s", SIM_BITS - 1, argv[2]);
    return;
  }
  if (argc > 3) {
    if (UTL_ParseInt(argv[3], 0, 1, &val) < 0) {
      reply(c, "ERR 422 value must be 0 or 1: %s", argv[3]);
      return;
    }
    v = (int)val;
  }
  v = SIM_ModbusBit(dev, coil, (int)addr, v);
  reply(c, "device=%s %s=%ld value=%d", SIM.cfg->devices[dev].name, coil ? "coil" : "input",
        addr, v);
  reply(c, "OK");
}

static void
cmd_writes(CtlConn *c, int argc, char **argv)
{
  int dev = -1;

  if (argc > 1 && !UTL_StrEqCase(argv[1], "all")) {
    dev = CNF_FindDevice(SIM.cfg, argv[1]);
    if (dev < 0) {
      reply(c, "ERR 404 unknown device: %s", argv[1]);
      return;
    }
  }
  for (int i = 0; i < SIM.n_acts; i++) {
    const SIM_Actuator *a = &SIM.acts[i];

    if (dev >= 0 && a->cfg->device_index != dev)
      continue;
    reply(c,
          "name=%s count=%lu min_v=%.6f max_v=%.6f limit_violations=%lu last_v=%.6f "
          "device=%s register=%d in_force_lo=%.6f in_force_hi=%.6f runtime_violations=%lu",
          a->name, a->count, a->min_v, a->max_v, a->violations, a->last_v,
          SIM.cfg->devices[a->cfg->device_index].name, a->cfg->reg, a->in_lo, a->in_hi,
          a->runtime_violations);
  }
  reply(c, "OK");
}

static void
cmd_info(CtlConn *c, int argc, char **argv)
{
  double now = SIM_Sync();

  reply(c, "version=%s seed=%llu speed=%g time_s=%.3f lasers=%d references=%d readings=%lu "
        "stream_clients=%d", PACKAGE_VERSION, (unsigned long long)SIM.seed, SIM.speed, now,
        SIM.cfg->n_lasers, SIM.cfg->sim.n_references, SIM.readings, SIM_StreamClients());
  for (int i = 0; i < SIM.cfg->n_devices; i++)
    reply(c, "device=%s url=%s unit=%d outage=%s", SIM.cfg->devices[i].name,
          SIM.cfg->devices[i].url, SIM.cfg->devices[i].unit,
          SIM_OutageName(SIM_ModbusOutageOf(i)));
  reply(c, "OK");
}

static void
cmd_ping(CtlConn *c, int argc, char **argv)
{
  reply(c, "OK");
}

static void
cmd_quit(CtlConn *c, int argc, char **argv)
{
  reply(c, "OK");
  c->closing = 1;
}

static void cmd_help(CtlConn *c, int argc, char **argv);

static const CtlCommand commands[] = {
  { "truth", 0, 1, "truth [laser|all]",
    "true frequency, error and outputs of the lasers and reference lasers",
    cmd_truth },
  { "hop", 1, 3, "hop <laser> [mhz [hysteresis_v]]",
    "start a mode hop now (default size sim.modehop_mhz; persistent hops: until the "
    "tuning moves back by hysteresis_v, default sim.hysteresis_v)",
    cmd_hop },
  { "dropout", 2, 3, "dropout <channel|all> <seconds> [code]",
    "error-code readings (default -1) on a channel for a while", cmd_dropout },
  { "glitch", 2, 3, "glitch <channel> <mhz> [count]",
    "publish the channel's next count (default 1) valid readings mhz off", cmd_glitch },
  { "outage", 2, 3, "outage <device|all> <silent|drop|refuse|off> [seconds]",
    "the device's server stops answering, drops or refuses connections for a while",
    cmd_outage },
  { "drift", 2, 2, "drift <laser> <mhz>", "step the free-running frequency", cmd_drift },
  { "calib", 0, 2, "calib [step <ppb> | rate <ppb_per_min>]",
    "the wavemeter's calibration error (common to every channel); step it, set its rate",
    cmd_calib },
  { "input", 2, 3, "input <device> <addr> [0|1]",
    "set or read a discrete input the device serves (a hold input)", cmd_bit },
  { "coil", 2, 3, "coil <device> <addr> [0|1]",
    "set or read a coil the device serves", cmd_bit },
  { "writes", 0, 1, "writes [device]", "per actuator: writes, min/max volts, limit violations",
    cmd_writes },
  { "limits", 2, 3, "limits <laser>.<piezo|current> <lo> <hi> | reset",
    "the limits in force in the daemon, for the run-time limit check of writes", cmd_limits },
  { "info", 0, 0, "info", "seed, speed, simulated time, devices and their outages", cmd_info },
  { "help", 0, 1, "help [command]", "list the commands", cmd_help },
  { "ping", 0, 0, "ping", "answer OK", cmd_ping },
  { "quit", 0, 0, "quit", "close this connection", cmd_quit },
};

#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void
cmd_help(CtlConn *c, int argc, char **argv)
{
  for (int i = 0; i < N_COMMANDS; i++) {
    if (argc > 1 && !UTL_StrEqCase(argv[1], commands[i].name))
      continue;
    reply(c, "%-56s %s", commands[i].usage, commands[i].help);
    if (argc > 1) {
      reply(c, "OK");
      return;
    }
  }
  if (argc > 1)
    reply(c, "ERR 404 unknown command: %s", argv[1]);
  else
    reply(c, "OK");
}

/* ---- framing -------------------------------------------------------------------- */

/* Remove telnet IAC sequences in place; returns the new length. */
static size_t
strip_telnet(unsigned char *buf, size_t len, int *state)
{
  size_t o = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char b = buf[i];

    switch (*state) {
    case 0:
      if (b == 255)
        *state = 1;
      else
        buf[o++] = b;
      break;
    case 1:                       /* after IAC */
      if (b == 255) {
        buf[o++] = b;
        *state = 0;
      } else if (b >= 251 && b <= 254) {
        *state = 2;
      } else if (b == 250) {
        *state = 3;
      } else {
        *state = 0;
      }
      break;
    case 2:                       /* option byte of WILL/WONT/DO/DONT */
      *state = 0;
      break;
    case 3:                       /* subnegotiation until IAC SE */
      if (b == 255)
        *state = 4;
      break;
    default:                      /* 4: IAC inside subnegotiation */
      *state = b == 240 ? 0 : 3;
      break;
    }
  }
  return o;
}

static void
dispatch(CtlConn *c, char *line)
{
  char *argv[CTL_MAX_ARGS + 1];
  int argc = 0;
  char *save = NULL;

  for (char *w = strtok_r(line, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
    if (argc > CTL_MAX_ARGS) {
      reply(c, "ERR 400 too many words");
      return;
    }
    argv[argc++] = w;
  }
  if (argc == 0)
    return;
  if (argc > CTL_MAX_ARGS) {
    reply(c, "ERR 400 too many words");
    return;
  }
  for (int i = 0; i < N_COMMANDS; i++) {
    const CtlCommand *cmd = &commands[i];

    if (!UTL_StrEqCase(argv[0], cmd->name))
      continue;
    if (argc - 1 < cmd->min_args || argc - 1 > cmd->max_args) {
      reply(c, "ERR 400 usage: %s", cmd->usage);
      return;
    }
    log_debug("control: %s", argv[0]);
    cmd->fn(c, argc, argv);
    return;
  }
  reply(c, "ERR 404 unknown command: %.40s", argv[0]);
}

static void
conn_read(struct bufferevent *bev, void *arg)
{
  CtlConn *c = arg;
  struct evbuffer *in = bufferevent_get_input(bev);

  while (!c->closing) {
    size_t n;
    char *line;

    if (c->discarding) {
      struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);

      if (p.pos < 0) {
        evbuffer_drain(in, evbuffer_get_length(in));
        break;
      }
      evbuffer_drain(in, (size_t)p.pos + 1);
      c->discarding = 0;
      continue;
    }
    line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
      if (evbuffer_get_length(in) > CTL_LINE_MAX) {
        reply(c, "ERR 413 line too long (max %d bytes)", CTL_LINE_MAX);
        c->discarding = 1;
        continue;
      }
      break;
    }
    n = strip_telnet((unsigned char *)line, n, &c->iac);
    line[n] = '\0';
    if (n > CTL_LINE_MAX)
      reply(c, "ERR 413 line too long (max %d bytes)", CTL_LINE_MAX);
    else if (memchr(line, '\0', n))
      reply(c, "ERR 400 NUL byte in request");
    else
      dispatch(c, line);
    free(line);
  }
  if (evbuffer_get_length(bufferevent_get_output(bev)) > CTL_OUT_MAX) {
    log_warn("control: client does not read its answers, closing it");
    conn_free(c);
    return;
  }
  if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
    conn_free(c);
}

static void
conn_write(struct bufferevent *bev, void *arg)
{
  CtlConn *c = arg;

  if (c->closing)
    conn_free(c);
}

static void
conn_event(struct bufferevent *bev, short what, void *arg)
{
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
    conn_free(arg);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
  CtlConn *c = calloc(1, sizeof *c);

  if (!c) {
    evutil_closesocket(fd);
    return;
  }
  c->bev = bufferevent_socket_new(SIM.base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!c->bev) {
    evutil_closesocket(fd);
    free(c);
    return;
  }
  c->next = conns;
  conns = c;
  n_conns++;
  bufferevent_setcb(c->bev, conn_read, conn_write, conn_event, c);
  if (n_conns > CTL_MAX_CLIENTS) {
    reply(c, "ERR 429 too many connections");
    c->closing = 1;
    bufferevent_enable(c->bev, EV_WRITE);
    return;
  }
  reply(c, "* wavelock-sim %s ready", PACKAGE_VERSION);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int
SIM_ControlInit(const char *addr)
{
  char host[256], name[300];
  int port;

  if (CNF_ParseHostPort(addr, host, sizeof host, &port) < 0) {
    log_error("control port: not host:port: %s", addr);
    return -1;
  }
  listener = SIM_Listen(host, port, on_accept, NULL, "control port");
  if (!listener)
    return -1;
  SIM_ListenerName(listener, name, sizeof name);
  log_info("control port on %s", name);
  return 0;
}

void
SIM_ControlFini(void)
{
  while (conns)
    conn_free(conns);
  if (listener)
    evconnlistener_free(listener);
  listener = NULL;
}
