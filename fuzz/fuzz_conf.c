/* fuzz_conf.c - fuzz target: the config loader and validator (CNF_Load).
 *
 * Input: a whole config file.  It is written to an in-memory file and loaded
 * as the daemon would load it.  Inputs that use @include are skipped (an
 * include could name /dev/zero or a FIFO; includes have their own unit
 * tests in tests/test_conf.c).
 *
 * A config that loads must keep every promise conf.h and DESIGN.md make to
 * the rest of wavelock: ranges, unique names and channels, resolvable
 * devices, one device per unit and line, one set of line settings per
 * serial port, encodable output limits, registers that do not overlap, no
 * network listener without tokens, and the control runtime must be able to
 * set itself up from it (CTL_Create, no I/O).
 */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "conf.h"
#include "ctl.h"
#include "fuzz.h"
#include "log.h"
#include "regenc.h"

static struct event_base *base;

static int
valid_name(const char *name)
{
  if (!isalpha((unsigned char)name[0]))
    return 0;
  for (const char *c = name; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
      return 0;
  return strlen(name) < CNF_NAME_MAX;
}

/* Whether two devices talk over the same line: one TCP host and port (names
   compared without case), or one serial port. */
static int
same_line(const CNF_Url *a, const CNF_Url *b)
{
  if (a->kind != b->kind)
    return 0;
  if (a->kind == CNF_URL_TCP)
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
  return strcmp(a->host, b->host) == 0;
}

static void
check_server(const CNF_Server *s)
{
  FUZZ_CHECK(s->n_listen >= 1 && s->n_listen <= CNF_MAX_LISTEN);
  FUZZ_CHECK(s->max_clients >= 1);
  FUZZ_CHECK(s->idle_timeout_s >= 0 && s->line_timeout_s >= 0);
  FUZZ_CHECK(s->n_tokens >= 0 && s->n_tokens <= CNF_MAX_TOKENS);
  for (int i = 0; i < s->n_listen; i++) {
    char host[256];
    int port;

    FUZZ_CHECK(CNF_ParseHostPort(s->listen[i], host, sizeof host, &port) == 0);
    FUZZ_CHECK(port >= 0 && port <= 65535);
    /* Open to the network only with authentication. */
    if (s->n_tokens == 0)
      FUZZ_CHECK(CNF_IsLoopback(host));
  }
  for (int i = 0; i < s->n_tokens; i++) {
    const CNF_Token *t = &s->tokens[i];

    FUZZ_CHECK(t->secret[0] != '\0');
    for (const char *c = t->secret; *c; c++)
      FUZZ_CHECK(isgraph((unsigned char)*c));    /* one protocol word */
    FUZZ_CHECK(t->role == CNF_ROLE_MONITOR || t->role == CNF_ROLE_CONTROL);
    for (int j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(t->secret, s->tokens[j].secret) != 0);
  }
}

/* min_v and max_v survive the register encoding (up to its resolution). */
static void
check_encodable(const CNF_Actuator *a)
{
  const double v[3] = { a->min_v, a->max_v, a->start_v };

  for (int i = 0; i < 3; i++) {
    uint16_t regs[2];
    double raw = a->enc.offset + a->enc.scale * v[i], back, tol;

    FUZZ_CHECK(REG_Encode(&a->enc, v[i], regs) == REG_Count(&a->enc));
    back = REG_Decode(&a->enc, regs);
    tol = (0.5 + fabs(raw) * 1.2e-7) / fabs(a->enc.scale) * 1.000001 + 1e-12;
    FUZZ_CHECK(isfinite(back) && fabs(back - v[i]) <= tol);
  }
}

static void
check_actuator(const CNF_Config *cfg, const CNF_Actuator *a, int is_current)
{
  FUZZ_CHECK(a->present);
  FUZZ_CHECK(a->device_index >= 0 && a->device_index < cfg->n_devices);
  FUZZ_CHECK(strcmp(cfg->devices[a->device_index].name, a->device) == 0);
  FUZZ_CHECK(a->reg >= 0 && a->reg + REG_Count(&a->enc) <= 65536);
  FUZZ_CHECK(isfinite(a->enc.scale) && a->enc.scale != 0.0 && isfinite(a->enc.offset));
  FUZZ_CHECK(isfinite(a->min_v) && isfinite(a->max_v) && a->min_v < a->max_v);
  FUZZ_CHECK(a->start_v >= a->min_v && a->start_v <= a->max_v);
  FUZZ_CHECK(a->max_step_v >= 0.0 && isfinite(a->max_step_v));
  FUZZ_CHECK(isfinite(a->feedforward) && (is_current || a->feedforward == 0.0));
  check_encodable(a);
}

static int
overlap(const CNF_Actuator *a, const CNF_Actuator *b)
{
  return a->present && b->present && a->device_index == b->device_index &&
         a->reg < b->reg + REG_Count(&b->enc) && b->reg < a->reg + REG_Count(&a->enc);
}

static void
check_config(const CNF_Config *cfg)
{
  check_server(&cfg->server);
  FUZZ_CHECK(cfg->wavemeter.stale_ms >= 1);
  FUZZ_CHECK(!cfg->state_file[0] || cfg->state_file[0] == '/');
  FUZZ_CHECK(cfg->n_devices >= 0 && (cfg->n_devices == 0 || cfg->devices));
  for (int i = 0; i < cfg->n_devices; i++) {
    const CNF_Device *d = &cfg->devices[i];
    CNF_Url u;
    char err[256];

    FUZZ_CHECK(valid_name(d->name));
    FUZZ_CHECK(CNF_ParseUrl(d->url, &u, err, sizeof err) == 0);
    FUZZ_CHECK(u.kind == d->parsed.kind && u.port == d->parsed.port &&
               strcmp(u.host, d->parsed.host) == 0);
    FUZZ_CHECK(d->unit >= 0 && d->unit <= 247 && d->timeout_ms >= 1);
    FUZZ_CHECK(d->probe_fn == CNF_PROBE_HOLDING || d->probe_fn == CNF_PROBE_INPUT ||
               d->probe_fn == CNF_PROBE_NONE);
    FUZZ_CHECK(d->probe_reg >= -1 && d->probe_reg <= 65535);
    FUZZ_CHECK(d->probe_fn != CNF_PROBE_NONE || d->probe_reg == -1);
    FUZZ_CHECK(CNF_FindDevice(cfg, d->name) == i);
    for (int j = 0; j < i; j++) {
      const CNF_Device *o = &cfg->devices[j];

      FUZZ_CHECK(strcasecmp(d->name, o->name) != 0);
      /* One unit on one line is one device: two names for it would let two
         lasers drive the same registers past the overlap check. */
      FUZZ_CHECK(!(same_line(&d->parsed, &o->parsed) && d->unit == o->unit));
      /* One serial port, one set of line settings (mbdev.h). */
      if (d->parsed.kind == CNF_URL_RTU && same_line(&d->parsed, &o->parsed))
        FUZZ_CHECK(d->parsed.baud == o->parsed.baud && d->parsed.parity == o->parsed.parity &&
                   d->parsed.data_bits == o->parsed.data_bits &&
                   d->parsed.stop_bits == o->parsed.stop_bits);
    }
  }
  FUZZ_CHECK(cfg->n_lasers >= 0 && cfg->n_lasers <= CNF_MAX_CHANNEL);
  for (int i = 0; i < cfg->n_lasers; i++) {
    const CNF_Laser *l = &cfg->lasers[i];

    FUZZ_CHECK(valid_name(l->name) && strcasecmp(l->name, "all") != 0);
    FUZZ_CHECK(l->channel >= 1 && l->channel <= CNF_MAX_CHANNEL);
    FUZZ_CHECK(cfg->wavemeter.backend != CNF_WM_WLMDATA || l->channel <= CNF_WLMDATA_MAX_CHANNEL);
    FUZZ_CHECK(isfinite(l->min_thz) && isfinite(l->max_thz) && l->min_thz > 0.0 &&
               l->min_thz < l->max_thz);
    FUZZ_CHECK(l->setpoint_thz >= l->min_thz && l->setpoint_thz <= l->max_thz);
    FUZZ_CHECK(l->window_mhz > 0.0 && l->capture_mhz > l->window_mhz &&
               isfinite(l->capture_mhz) && l->modehop_mhz >= 0.0);
    FUZZ_CHECK(l->lock_n >= 1 && l->unlock_m >= 1);
    FUZZ_CHECK(l->kp >= 0.0 && l->ki >= 0.0 && l->kd >= 0.0 &&
               isfinite(l->kp) && isfinite(l->ki) && isfinite(l->kd));
    FUZZ_CHECK(l->polarity == 1 || l->polarity == -1);
    FUZZ_CHECK(l->max_dt_s > 0.0 && l->d_tau_s >= 0.0);
    FUZZ_CHECK(!l->datalog[0] || l->datalog[0] == '/');
    check_actuator(cfg, &l->piezo, 0);
    if (l->current.present) {
      check_actuator(cfg, &l->current, 1);
      FUZZ_CHECK(!overlap(&l->piezo, &l->current));
    }
    FUZZ_CHECK(CNF_FindLaser(cfg, l->name) == i);
    for (int j = 0; j < i; j++) {
      const CNF_Laser *o = &cfg->lasers[j];

      FUZZ_CHECK(strcasecmp(l->name, o->name) != 0 && l->channel != o->channel);
      FUZZ_CHECK(!overlap(&l->piezo, &o->piezo) && !overlap(&l->piezo, &o->current) &&
                 !overlap(&l->current, &o->piezo) && !overlap(&l->current, &o->current));
    }
  }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *path;
  char err[1024];
  CNF_Config *cfg;

  if (!base) {
    LOG_SetLevel(LOG_LV_ERROR);
    base = event_base_new();
    FUZZ_CHECK(base != NULL);
  }
  if (size > 64 * 1024 || memmem(data, size, "@include", 8))
    return 0;
  path = FUZZ_MemFile(data, size);
  if (!path)
    return 0;

  err[0] = '\0';
  cfg = CNF_Load(path, err, sizeof err);
  if (!cfg) {
    /* A refusal names the file. */
    FUZZ_CHECK(err[0] != '\0' && strstr(err, "/proc/") != NULL);
    return 0;
  }
  check_config(cfg);

  /* The daemon can set up its lasers and devices from any accepted config. */
  CTL_Ctx *ctl = CTL_Create(base, cfg, NULL);
  FUZZ_CHECK(ctl != NULL);
  FUZZ_CHECK(CTL_LaserCount(ctl) == cfg->n_lasers && CTL_DeviceCount(ctl) == cfg->n_devices);
  CTL_Destroy(ctl);
  CNF_Free(cfg);
  return 0;
}
