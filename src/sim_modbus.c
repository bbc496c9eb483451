/* sim_modbus.c - wavelock-sim's Modbus TCP servers for the actuator registers.
 *
 * One server per distinct host:port of the configured devices, each with a
 * holding-register map per device (several devices on one address are told
 * apart by unit id; a unit id that matches none gets the first device).
 * Frames are read without blocking into a buffer per connection; complete
 * requests are checked here and answered by libmodbus's modbus_reply on the
 * connection's socket.  After a write, every actuator whose registers have
 * all been written since its last value decodes its volts with its own
 * encoding (REG_Decode) and drives the plant.
 *
 * Outages: silent = keep connections, read and ignore requests; drop = close
 * every connection and each new one; refuse = close the listening socket (and
 * the connections) so connections are refused.  Each ends after its time.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <modbus.h>

#include "conf.h"
#include "log.h"
#include "regenc.h"
#include "sim.h"
#include "util.h"

#define MB_ADU_MAX 260            /* MODBUS_TCP_MAX_ADU_LENGTH */
#define MB_MAX_CONNS 64
#define MB_REBIND_S 0.5

typedef struct MbServer MbServer;

typedef struct MbConn {
  MbServer *srv;
  evutil_socket_t fd;
  struct event *ev;
  uint8_t buf[MB_ADU_MAX];
  size_t len;
  struct MbConn *next;
} MbConn;

struct MbServer {
  char host[256];
  int port;
  int dev[64];                    /* config device indices served here */
  int n_dev;
  modbus_mapping_t **map;         /* one per dev[] */
  modbus_t *ctx;                  /* only to format replies */
  struct evconnlistener *listener;
  MbConn *conns;
  int n_conns;
  SIM_Outage outage;
  struct event *outage_end;
  struct event *rebind;
  unsigned long requests, ignored;
};

static MbServer *servers;
static int n_servers;
static int *dev_server;           /* config device index -> server index */

static const char *const outage_names[] = { "off", "silent", "drop", "refuse" };

const char *
SIM_OutageName(SIM_Outage mode)
{
  return outage_names[mode];
}

int
SIM_ParseOutage(const char *text, SIM_Outage *mode)
{
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(text, outage_names[i]) == 0) {
      *mode = (SIM_Outage)i;
      return 0;
    }
  }
  return -1;
}

SIM_Outage
SIM_ModbusOutageOf(int dev)
{
  if (dev < 0 || dev >= SIM.cfg->n_devices)
    return SIM_OUTAGE_NONE;
  return servers[dev_server[dev]].outage;
}

/* ---- actuators ------------------------------------------------------------ */

/* Tolerance of the limit check: what encoding can add to a value. */
static double
limit_tolerance(const CNF_Actuator *a)
{
  double scale = fabs(a->enc.scale) > 0.0 ? fabs(a->enc.scale) : 1.0;

  if (a->enc.format == REG_F32)
    return (fabs(a->enc.offset) + scale * fmax(fabs(a->min_v), fabs(a->max_v)) + 1.0) * 2e-7 /
           scale;
  return 0.5001 / scale;
}

static void
apply_value(SIM_Actuator *sa, const uint16_t regs[2])
{
  const CNF_Actuator *a = sa->cfg;
  double v = REG_Decode(&a->enc, regs);
  double tol = limit_tolerance(a);
  double t;

  sa->count++;
  sa->last_v = v;
  if (!isfinite(v)) {
    sa->violations++;
    log_warn("%s: written value is not a number (ignored)", sa->name);
    return;
  }
  if (!(sa->min_v <= v))
    sa->min_v = v;
  if (!(sa->max_v >= v))
    sa->max_v = v;
  if (v < a->min_v - tol || v > a->max_v + tol) {
    sa->violations++;
    log_warn("%s: %.6f V written, outside the limits %g..%g V", sa->name, v, a->min_v, a->max_v);
  }
  if ((v < sa->in_lo - tol || v > sa->in_hi + tol) &&
      UTL_Now() - sa->in_since > SIM_LIMITS_GRACE_S) {
    sa->runtime_violations++;
    log_warn("%s: %.6f V written, outside the limits in force %g..%g V", sa->name, v,
             sa->in_lo, sa->in_hi);
  }
  t = SIM_Sync();
  if (sa->is_current)
    PLT_SetCurrent(SIM.lasers[sa->laser], t, v);
  else
    PLT_SetPiezo(SIM.lasers[sa->laser], t, v);
  log_debug("%s = %.6f V", sa->name, v);
}

/* Registers [addr, addr + n) of device dev were written. */
static void
on_written(int dev, const modbus_mapping_t *map, int addr, int n)
{
  for (int i = 0; i < SIM.n_acts; i++) {
    SIM_Actuator *sa = &SIM.acts[i];
    int r0 = sa->cfg->reg;
    unsigned full = (1u << sa->nregs) - 1;

    if (sa->cfg->device_index != dev)
      continue;
    for (int k = 0; k < sa->nregs; k++)
      if (r0 + k >= addr && r0 + k < addr + n)
        sa->pending |= 1u << k;
    if (sa->pending == full) {
      uint16_t regs[2] = { map->tab_registers[r0], sa->nregs > 1 ? map->tab_registers[r0 + 1] : 0 };

      sa->pending = 0;
      apply_value(sa, regs);
    }
  }
}

/* ---- connections ----------------------------------------------------------- */

static void
conn_close(MbConn *c)
{
  MbServer *s = c->srv;

  for (MbConn **pp = &s->conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  s->n_conns--;
  event_free(c->ev);
  evutil_closesocket(c->fd);
  free(c);
}

static void
close_all(MbServer *s)
{
  while (s->conns)
    conn_close(s->conns);
}

static int
u16at(const uint8_t *p)
{
  return (p[0] << 8) | p[1];
}

/* Check a request's PDU; 0 if libmodbus may answer it, else the exception
   code to send.  For writes, the written range goes to *waddr, *wn. */
static int
check_request(const uint8_t *adu, size_t len, int *waddr, int *wn)
{
  const uint8_t *pdu = adu + 7;
  size_t plen = len - 7;
  int fc = pdu[0];

  *wn = 0;
  switch (fc) {
  case MODBUS_FC_READ_HOLDING_REGISTERS:
  case MODBUS_FC_READ_INPUT_REGISTERS:
    if (plen != 5 || u16at(pdu + 3) < 1 || u16at(pdu + 3) > MODBUS_MAX_READ_REGISTERS)
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    return 0;
  case MODBUS_FC_WRITE_SINGLE_REGISTER:
    if (plen != 5)
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    *waddr = u16at(pdu + 1);
    *wn = 1;
    return 0;
  case MODBUS_FC_WRITE_MULTIPLE_REGISTERS: {
    int nb = plen >= 6 ? u16at(pdu + 3) : 0;

    if (plen < 6 || nb < 1 || nb > MODBUS_MAX_WRITE_REGISTERS || pdu[5] != 2 * nb ||
        plen != 6 + (size_t)pdu[5])
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    *waddr = u16at(pdu + 1);
    *wn = nb;
    return 0;
  }
  case MODBUS_FC_READ_COILS:
  case MODBUS_FC_READ_DISCRETE_INPUTS:
    if (plen != 5 || u16at(pdu + 3) < 1 || u16at(pdu + 3) > MODBUS_MAX_READ_BITS)
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    return 0;
  case MODBUS_FC_WRITE_SINGLE_COIL:
    if (plen != 5)
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    return 0;
  case MODBUS_FC_WRITE_MULTIPLE_COILS: {
    int nb = plen >= 6 ? u16at(pdu + 3) : 0;

    if (plen < 6 || nb < 1 || nb > MODBUS_MAX_WRITE_BITS || pdu[5] != (nb + 7) / 8 ||
        plen != 6 + (size_t)pdu[5])
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    return 0;
  }
  case MODBUS_FC_MASK_WRITE_REGISTER:
    if (plen != 7)
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    *waddr = u16at(pdu + 1);
    *wn = 1;
    return 0;
  case MODBUS_FC_WRITE_AND_READ_REGISTERS: {
    int nr = plen >= 10 ? u16at(pdu + 3) : 0, nw = plen >= 10 ? u16at(pdu + 7) : 0;

    if (plen < 10 || nr < 1 || nr > MODBUS_MAX_WR_READ_REGISTERS || nw < 1 ||
        nw > MODBUS_MAX_WR_WRITE_REGISTERS || pdu[9] != 2 * nw || plen != 10 + (size_t)pdu[9])
      return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    *waddr = u16at(pdu + 5);
    *wn = nw;
    return 0;
  }
  default:
    return MODBUS_EXCEPTION_ILLEGAL_FUNCTION;
  }
}

/* Answer one complete request; -1 if the connection must go. */
static int
handle_request(MbConn *c, const uint8_t *frame, size_t len)
{
  MbServer *s = c->srv;
  uint8_t adu[MB_ADU_MAX];
  int unit = frame[6], k = 0, exc, waddr = 0, wn = 0, rc;
  modbus_mapping_t *map;

  s->requests++;
  if (s->outage == SIM_OUTAGE_SILENT) {
    s->ignored++;
    return 0;
  }
  if (len < 8)
    return -1;
  memset(adu, 0, sizeof adu);
  memcpy(adu, frame, len);
  for (int i = 0; i < s->n_dev; i++) {
    if (SIM.cfg->devices[s->dev[i]].unit == unit) {
      k = i;
      break;
    }
  }
  map = s->map[k];

  if (modbus_set_socket(s->ctx, c->fd) < 0)
    return -1;
  exc = check_request(adu, len, &waddr, &wn);
  if (exc) {
    log_debug("modbus %s:%d: function %d refused (exception %d)", s->host, s->port, adu[7], exc);
    rc = modbus_reply_exception(s->ctx, adu, (unsigned)exc);
  } else {
    rc = modbus_reply(s->ctx, adu, (int)len, map);
  }
  if (rc < 0) {
    log_debug("modbus %s:%d: cannot reply: %s", s->host, s->port, modbus_strerror(errno));
    return -1;
  }
  if (!exc && wn > 0 && waddr + wn <= map->nb_registers)
    on_written(s->dev[k], map, waddr, wn);
  return 0;
}

static void
conn_read(evutil_socket_t fd, short what, void *arg)
{
  MbConn *c = arg;
  ssize_t n = recv(fd, c->buf + c->len, sizeof c->buf - c->len, 0);

  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    log_debug("modbus %s:%d: client gone", c->srv->host, c->srv->port);
    conn_close(c);
    return;
  }
  if (n < 0)
    return;
  c->len += (size_t)n;
  while (c->len >= 7) {
    int proto = u16at(c->buf + 2), mlen = u16at(c->buf + 4);
    size_t total = 6 + (size_t)mlen;

    if (proto != 0 || mlen < 2 || total > sizeof c->buf) {
      log_debug("modbus %s:%d: bad frame header, closing", c->srv->host, c->srv->port);
      conn_close(c);
      return;
    }
    if (c->len < total)
      break;
    if (handle_request(c, c->buf, total) < 0) {
      conn_close(c);
      return;
    }
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
  }
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
  MbServer *s = arg;
  MbConn *c;

  if (s->outage == SIM_OUTAGE_DROP || s->outage == SIM_OUTAGE_REFUSE ||
      s->n_conns >= MB_MAX_CONNS) {
    log_debug("modbus %s:%d: connection closed (%s)", s->host, s->port,
              s->n_conns >= MB_MAX_CONNS ? "too many" : "outage");
    evutil_closesocket(fd);
    return;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    evutil_closesocket(fd);
    return;
  }
  c->srv = s;
  c->fd = fd;
  c->ev = event_new(SIM.base, fd, EV_READ | EV_PERSIST, conn_read, c);
  if (!c->ev || event_add(c->ev, NULL) < 0) {
    if (c->ev)
      event_free(c->ev);
    evutil_closesocket(fd);
    free(c);
    return;
  }
  c->next = s->conns;
  s->conns = c;
  s->n_conns++;
  log_debug("modbus %s:%d: client connected", s->host, s->port);
}

/* ---- listening and outages -------------------------------------------------- */

static int
start_listening(MbServer *s)
{
  char what[300], name[300];

  snprintf(what, sizeof what, "modbus server tcp://%s:%d", s->host, s->port);
  s->listener = SIM_Listen(s->host, s->port, on_accept, s, what);
  if (!s->listener)
    return -1;
  SIM_ListenerName(s->listener, name, sizeof name);
  log_info("modbus server on %s (%d device%s)", name, s->n_dev, s->n_dev == 1 ? "" : "s");
  return 0;
}

static void
add_timer(struct event *ev, double seconds)
{
  struct timeval tv = UTL_Timeval(seconds, 1e7);

  evtimer_add(ev, &tv);
}

static void
on_rebind(evutil_socket_t fd, short what, void *arg)
{
  MbServer *s = arg;

  if (s->outage == SIM_OUTAGE_REFUSE || s->listener)
    return;
  if (start_listening(s) < 0)
    add_timer(s->rebind, MB_REBIND_S);
}

static void
end_outage(MbServer *s)
{
  if (s->outage == SIM_OUTAGE_NONE)
    return;
  log_info("modbus %s:%d: %s outage over", s->host, s->port, SIM_OutageName(s->outage));
  s->outage = SIM_OUTAGE_NONE;
  evtimer_del(s->outage_end);
  if (!s->listener)
    on_rebind(-1, 0, s);
}

static void
on_outage_end(evutil_socket_t fd, short what, void *arg)
{
  end_outage(arg);
}

static void
server_outage(MbServer *s, SIM_Outage mode, double seconds)
{
  if (mode == SIM_OUTAGE_NONE) {
    end_outage(s);
    return;
  }
  log_info("modbus %s:%d: %s outage for %g s", s->host, s->port, SIM_OutageName(mode), seconds);
  s->outage = mode;
  if (mode == SIM_OUTAGE_DROP || mode == SIM_OUTAGE_REFUSE)
    close_all(s);
  if (mode == SIM_OUTAGE_REFUSE && s->listener) {
    evconnlistener_free(s->listener);
    s->listener = NULL;
  }
  add_timer(s->outage_end, seconds);
}

int
SIM_ModbusBit(int dev, int coil, int addr, int value)
{
  MbServer *s;

  if (dev < 0 || dev >= SIM.cfg->n_devices || addr < 0 || addr >= SIM_BITS || !servers)
    return -1;
  s = &servers[dev_server[dev]];
  for (int k = 0; k < s->n_dev; k++) {
    if (s->dev[k] != dev)
      continue;
    uint8_t *bits = coil ? s->map[k]->tab_bits : s->map[k]->tab_input_bits;
    if (value >= 0) {
      bits[addr] = value ? 1 : 0;
      log_info("modbus %s: %s %d set to %d", SIM.cfg->devices[dev].name,
               coil ? "coil" : "discrete input", addr, value ? 1 : 0);
    }
    return bits[addr];
  }
  return -1;
}

void
SIM_ModbusOutage(int dev, SIM_Outage mode, double seconds)
{
  if (dev >= 0) {
    server_outage(&servers[dev_server[dev]], mode, seconds);
    return;
  }
  for (int i = 0; i < n_servers; i++)
    server_outage(&servers[i], mode, seconds);
}

/* ---- set-up ------------------------------------------------------------------ */

/* Registers device dev needs: past the highest actuator register, rounded up. */
static int
map_size(int dev)
{
  int top = 0;

  for (int i = 0; i < SIM.n_acts; i++) {
    const SIM_Actuator *sa = &SIM.acts[i];

    if (sa->cfg->device_index == dev && sa->cfg->reg + sa->nregs > top)
      top = sa->cfg->reg + sa->nregs;
  }
  top = (top + 15) / 16 * 16 + 16;
  return top > 65536 ? 65536 : top;
}

/* Put each actuator's start value into its registers. */
static void
preset_registers(void)
{
  for (int i = 0; i < SIM.n_acts; i++) {
    const SIM_Actuator *sa = &SIM.acts[i];
    int dev = sa->cfg->device_index;
    MbServer *s = &servers[dev_server[dev]];
    uint16_t regs[2];

    for (int k = 0; k < s->n_dev; k++) {
      if (s->dev[k] == dev && REG_Encode(&sa->cfg->enc, sa->cfg->start_v, regs) > 0) {
        s->map[k]->tab_registers[sa->cfg->reg] = regs[0];
        if (sa->nregs > 1)
          s->map[k]->tab_registers[sa->cfg->reg + 1] = regs[1];
      }
    }
  }
}

int
SIM_ModbusInit(void)
{
  const CNF_Config *cfg = SIM.cfg;

  servers = calloc((size_t)cfg->n_devices + 1, sizeof *servers);
  dev_server = calloc((size_t)cfg->n_devices + 1, sizeof *dev_server);
  if (!servers || !dev_server)
    return -1;
  for (int i = 0; i < cfg->n_devices; i++) {
    const CNF_Url *u = &cfg->devices[i].parsed;
    int j;

    for (j = 0; j < n_servers; j++)
      if (servers[j].port == u->port && strcmp(servers[j].host, u->host) == 0 &&
          servers[j].n_dev < (int)(sizeof servers[j].dev / sizeof servers[j].dev[0]))
        break;
    if (j == n_servers) {
      snprintf(servers[j].host, sizeof servers[j].host, "%s", u->host);
      servers[j].port = u->port;
      n_servers++;
    }
    servers[j].dev[servers[j].n_dev++] = i;
    dev_server[i] = j;
  }

  for (int j = 0; j < n_servers; j++) {
    MbServer *s = &servers[j];

    s->map = calloc((size_t)s->n_dev, sizeof *s->map);
    if (!s->map)
      return -1;
    for (int k = 0; k < s->n_dev; k++) {
      s->map[k] = modbus_mapping_new(SIM_BITS, SIM_BITS, map_size(s->dev[k]), 0);
      if (!s->map[k]) {
        log_error("modbus: cannot allocate registers: %s", modbus_strerror(errno));
        return -1;
      }
    }
    s->ctx = modbus_new_tcp("127.0.0.1", s->port);
    if (!s->ctx) {
      log_error("modbus: cannot create a context: %s", modbus_strerror(errno));
      return -1;
    }
    /* never let libmodbus sleep in the loop (it does on some exceptions) */
    modbus_set_response_timeout(s->ctx, 0, 1000);
    s->outage_end = evtimer_new(SIM.base, on_outage_end, s);
    s->rebind = evtimer_new(SIM.base, on_rebind, s);
    if (!s->outage_end || !s->rebind)
      return -1;
  }
  preset_registers();
  for (int j = 0; j < n_servers; j++)
    if (start_listening(&servers[j]) < 0)
      return -1;
  return 0;
}

void
SIM_ModbusFini(void)
{
  for (int j = 0; j < n_servers; j++) {
    MbServer *s = &servers[j];

    close_all(s);
    if (s->listener)
      evconnlistener_free(s->listener);
    if (s->outage_end)
      event_free(s->outage_end);
    if (s->rebind)
      event_free(s->rebind);
    if (s->ctx) {
      modbus_set_socket(s->ctx, -1);
      modbus_free(s->ctx);
    }
    for (int k = 0; s->map && k < s->n_dev; k++)
      modbus_mapping_free(s->map[k]);
    free(s->map);
  }
  free(servers);
  free(dev_server);
  servers = NULL;
  dev_server = NULL;
  n_servers = 0;
}
