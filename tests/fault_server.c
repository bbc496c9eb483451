/* fault_server.c - a Modbus server (TCP, or RTU on a serial line) that
 * injects faults on command.
 *
 * Built on libmodbus's server side (modbus_receive, modbus_reply,
 * modbus_reply_exception) with a select() loop serving many TCP clients.  It
 * serves holding registers 0..N-1 (all zero at start; input registers 0..N-1
 * too, always zero) and is steered by
 * commands on its standard input, one per line; every command is answered on
 * standard output with one line starting "ok" (or "err ..."), flushed.
 *
 *   fault_server [-p PORT] [-P PORT_FILE] [-r NREGS] [-v]
 *   fault_server -R SERIAL_DEVICE [-b BAUD] [-U UNIT[,UNIT...]] [-r NREGS] [-v]
 *     -p PORT        TCP port on 127.0.0.1 (default 0: any free port); every
 *                    unit id is answered, all with the same registers
 *     -P FILE        after binding, write the port and a newline to FILE
 *     -R DEVICE      serve Modbus RTU on this serial device (a pty of a
 *                    `socat pty,raw,echo=0 pty,raw,echo=0` pair in tests)
 *     -b BAUD        RTU line speed (default 19200; 8N1)
 *     -U UNITS       RTU unit ids served, each with its own registers (default 1);
 *                    requests for other units are ignored, as on a shared bus
 *     -r NREGS       number of holding registers (default 1000)
 *     -v             print every applied write: "W fc=06 addr=A regs=V[,V...]"
 *                    (RTU: "W fc=06 unit=U addr=A regs=...")
 *   At start it prints "listening 127.0.0.1:PORT" (RTU: "listening rtu:DEVICE").
 *
 * Commands (a fault applies to every request, or to the next count=N ones,
 * or with "writes" only to write requests, reads being answered normally,
 * or with fc=F only to requests of function code F (fc=3: a module that
 * cannot be read), or with unit=U only to requests for that unit; when the
 * count runs out the server is normal again):
 *   normal                              answer everything
 *   exception [code=4] [count=N] [writes] [fc=F] [unit=U]   answer with this exception code
 *   delay [ms=2000] [count=N] [writes] [unit=U]      answer late (TCP: other clients
 *                                       are served meanwhile)
 *   silent [count=N] [writes] [unit=U]  read the request, never answer
 *   drop [count=N] [writes] [unit=U]    close the connection instead of answering
 *                                       (RTU: same as silent)
 *   down                                TCP: close the listening socket and every
 *                                       connection (new connections are refused);
 *                                       RTU: ignore everything (powered off)
 *   up                                  listen (answer) again, on the same port
 *   stats                               "ok stats requests= reads= fc06= fc16= other=
 *                                       exceptions= delayed= silent= dropped= accepted= clients=
 *                                       fc04=" (reads: FC03; fc04: input register reads)
 *   reset                               zero the counters
 *   regs ADDR [N] [unit=U]              "ok regs ADDR V V ..." (N default 1)
 *   set ADDR V [V...] [unit=U]          write registers locally
 *   bit coil|input ADDR [0|1] [unit=U]  set (or read) a coil or discrete input
 *                                       (addresses 0..63): "ok bit ADDR V"
 *   quit                                exit 0
 * End of input is ignored (the server keeps running until killed or "quit").
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

#define MAX_CLIENTS 64
#define MAX_UNITS 16
#define RTU_MAX 256
#define RTU_GAP_S 0.1           /* a partial RTU frame older than this is noise */

typedef enum { F_NORMAL = 0, F_EXCEPTION, F_DELAY, F_SILENT, F_DROP } Fault;

typedef struct {
  int fd;
  int pending;                          /* a delayed reply is due */
  int fresh;                            /* accepted in this round of select() */
  uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
  int len;
  double due;
} Client;

static modbus_t *ctx;
static int rtu;                         /* serving RTU on clients[0].fd */
static int rtu_down;
static int units[MAX_UNITS];
static modbus_mapping_t *maps[MAX_UNITS];
static int n_units = 1;
static int listen_fd = -1;
static int port;
static Client clients[MAX_CLIENTS];
static int verbose;
static int nregs = 1000;

static Fault fault;
static int fault_code = MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE;
static int fault_ms = 2000;
static long fault_count = -1;           /* -1: until changed */
static int fault_writes_only;
static int fault_fc = -1;               /* only requests of this function code; -1 all */
static int fault_unit = -1;             /* -1: every unit */

static unsigned long n_fc04;
static unsigned long n_requests, n_reads, n_fc06, n_fc16, n_other, n_exceptions,
  n_delayed, n_silent, n_dropped, n_accepted;

static double
now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
reply(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

/* Register map of a unit; TCP serves every unit from maps[0]. */
static modbus_mapping_t *
map_of(int unit)
{
  if (!rtu)
    return maps[0];
  for (int i = 0; i < n_units; i++)
    if (units[i] == unit)
      return maps[i];
  return NULL;
}

static int
open_listener(void)
{
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int one = 1, fd;

  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    close(fd);
    return -1;
  }
  port = ntohs(sa.sin_port);
  return fd;
}

static void
close_client(Client *c)
{
  if (rtu) {                            /* the serial line stays open */
    c->pending = 0;
    return;
  }
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->pending = 0;
}

static int
is_write(int fc)
{
  return fc == 5 || fc == 6 || fc == 15 || fc == 16 || fc == 22 || fc == 23;
}

static void
log_write(const uint8_t *q, int hl, const modbus_mapping_t *m)
{
  int fc = q[hl], addr = (q[hl + 1] << 8) | q[hl + 2];
  char buf[1024], unit[16] = "";
  size_t n = 0;
  int count;

  if (fc == 6)
    count = 1;
  else if (fc == 16)
    count = (q[hl + 3] << 8) | q[hl + 4];
  else
    return;
  for (int i = 0; i < count && addr + i < nregs && n + 8 < sizeof buf; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%u", i ? "," : "",
                          m->tab_registers[addr + i]);
  buf[n] = '\0';
  if (rtu)
    snprintf(unit, sizeof unit, " unit=%d", q[0]);
  reply("W fc=%02d%s addr=%d regs=%s", fc, unit, addr, buf);
}

static void
answer(Client *c, const uint8_t *q, int len)
{
  int hl = modbus_get_header_length(ctx);
  modbus_mapping_t *m = map_of(q[hl - 1]);

  if (!m)
    return;
  if (rtu)
    modbus_set_slave(ctx, q[0]);
  else
    modbus_set_socket(ctx, c->fd);
  modbus_reply(ctx, q, len, m);
  if (verbose && is_write(q[hl]))
    log_write(q, hl, m);
}

static void
handle_request(Client *c, const uint8_t *q, int len)
{
  int hl = modbus_get_header_length(ctx);
  int fc = q[hl], unit = q[hl - 1];
  Fault f = F_NORMAL;

  if (rtu && (rtu_down || !map_of(unit)))
    return;                             /* another unit's request on the bus */
  n_requests++;
  if (fc == 3)
    n_reads++;
  else if (fc == 4)
    n_fc04++;
  else if (fc == 6)
    n_fc06++;
  else if (fc == 16)
    n_fc16++;
  else
    n_other++;

  if (fault != F_NORMAL && (!fault_writes_only || is_write(fc)) &&
      (fault_fc < 0 || fault_fc == fc) && (fault_unit < 0 || fault_unit == unit)) {
    f = fault;
    if (fault_count > 0 && --fault_count == 0)
      fault = F_NORMAL;
  }
  if (rtu && f == F_DROP)
    f = F_SILENT;
  switch (f) {
    case F_NORMAL:
      answer(c, q, len);
      break;
    case F_EXCEPTION:
      n_exceptions++;
      if (rtu)
        modbus_set_slave(ctx, unit);
      else
        modbus_set_socket(ctx, c->fd);
      modbus_reply_exception(ctx, q, (unsigned int)fault_code);
      break;
    case F_DELAY:
      n_delayed++;
      memcpy(c->query, q, (size_t)len);
      c->len = len;
      c->pending = 1;
      c->due = now_s() + fault_ms / 1000.0;
      break;
    case F_SILENT:
      n_silent++;
      break;
    case F_DROP:
      n_dropped++;
      close_client(c);
      break;
  }
}

/* ---- RTU framing (libmodbus's server filters on one unit id; a bus with
   several units needs the frames split here) ---- */

static uint8_t rtu_buf[RTU_MAX];
static size_t rtu_len;
static double rtu_last;

static uint16_t
crc16(const uint8_t *p, size_t n)
{
  uint16_t crc = 0xFFFF;

  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++)
      crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
  }
  return crc;
}

static void
rtu_input(void)
{
  ssize_t n = read(clients[0].fd, rtu_buf + rtu_len, sizeof rtu_buf - rtu_len);

  if (n <= 0)
    return;
  rtu_len += (size_t)n;
  rtu_last = now_s();
  while (rtu_len >= 2) {
    int fc = rtu_buf[1];
    size_t need;

    if (fc >= 1 && fc <= 6)
      need = 8;
    else if (fc == 15 || fc == 16)
      need = rtu_len >= 7 ? (size_t)9 + rtu_buf[6] : 0;
    else {
      rtu_len = 0;                      /* not ours to parse: resynchronise */
      break;
    }
    if (need == 0 || rtu_len < need)
      break;
    if (crc16(rtu_buf, need - 2) != (uint16_t)(rtu_buf[need - 2] | rtu_buf[need - 1] << 8)) {
      memmove(rtu_buf, rtu_buf + 1, --rtu_len);
      continue;
    }
    handle_request(&clients[0], rtu_buf, (int)need);
    memmove(rtu_buf, rtu_buf + need, rtu_len - need);
    rtu_len -= need;
  }
  if (rtu_len == sizeof rtu_buf)
    rtu_len = 0;
}

/* ---- commands ---- */

/* Value of "key=N" among the words of args, or def. */
static long
word_value(const char *args, const char *key, long def)
{
  size_t k = strlen(key);

  for (const char *p = args; (p = strstr(p, key)); p += k) {
    if ((p == args || p[-1] == ' ' || p[-1] == '\t') && p[k] == '=')
      return strtol(p + k + 1, NULL, 0);
  }
  return def;
}

static void
set_fault(Fault f, char *args)
{
  char *save = NULL;

  fault_count = -1;
  fault_writes_only = 0;
  fault_fc = -1;
  fault_unit = -1;
  if (f == F_EXCEPTION)
    fault_code = MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE;
  if (f == F_DELAY)
    fault_ms = 2000;
  for (char *w = strtok_r(args, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
    if (!strncmp(w, "code=", 5))
      fault_code = atoi(w + 5);
    else if (!strncmp(w, "ms=", 3))
      fault_ms = atoi(w + 3);
    else if (!strncmp(w, "count=", 6))
      fault_count = atol(w + 6);
    else if (!strncmp(w, "unit=", 5))
      fault_unit = atoi(w + 5);
    else if (!strncmp(w, "fc=", 3))
      fault_fc = atoi(w + 3);
    else if (!strcmp(w, "writes"))
      fault_writes_only = 1;
  }
  if (fault_count == 0)
    f = F_NORMAL;
  fault = f;
}

static int
command(char *line)
{
  char *args, *cmd;
  static const struct { const char *name; Fault f; } faults[] = {
    { "normal", F_NORMAL }, { "exception", F_EXCEPTION }, { "delay", F_DELAY },
    { "silent", F_SILENT }, { "drop", F_DROP },
  };

  line[strcspn(line, "\r\n")] = '\0';
  cmd = line + strspn(line, " \t");
  if (!*cmd)
    return 0;
  args = cmd + strcspn(cmd, " \t");
  if (*args)
    *args++ = '\0';

  for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
    if (!strcmp(cmd, faults[i].name)) {
      set_fault(faults[i].f, args);
      reply("ok %s", cmd);
      return 0;
    }
  }
  if (!strcmp(cmd, "down")) {
    if (rtu) {
      rtu_down = 1;
      clients[0].pending = 0;
    } else {
      if (listen_fd >= 0)
        close(listen_fd);
      listen_fd = -1;
      for (int i = 0; i < MAX_CLIENTS; i++)
        close_client(&clients[i]);
    }
    reply("ok down");
  } else if (!strcmp(cmd, "up")) {
    if (rtu)
      rtu_down = 0;
    else if (listen_fd < 0)
      listen_fd = open_listener();
    if (!rtu && listen_fd < 0)
      reply("err cannot listen on port %d: %s", port, strerror(errno));
    else
      reply("ok up");
  } else if (!strcmp(cmd, "stats")) {
    int nc = 0;

    for (int i = 0; i < MAX_CLIENTS; i++)
      nc += clients[i].fd >= 0;
    reply("ok stats requests=%lu reads=%lu fc06=%lu fc16=%lu other=%lu exceptions=%lu "
          "delayed=%lu silent=%lu dropped=%lu accepted=%lu clients=%d fc04=%lu",
          n_requests, n_reads, n_fc06, n_fc16, n_other, n_exceptions, n_delayed,
          n_silent, n_dropped, n_accepted, nc, n_fc04);
  } else if (!strcmp(cmd, "reset")) {
    n_requests = n_reads = n_fc06 = n_fc16 = n_other = n_exceptions = n_fc04 = 0;
    n_delayed = n_silent = n_dropped = n_accepted = 0;
    reply("ok reset");
  } else if (!strcmp(cmd, "regs")) {
    modbus_mapping_t *m = map_of((int)word_value(args, "unit", units[0]));
    char buf[2048];
    size_t n = 0;
    int addr = -1, count = 1;

    if (sscanf(args, "%d %d", &addr, &count) < 1 || addr < 0 || count < 1 ||
        addr + count > nregs || count > 125 || !m) {
      reply("err usage: regs ADDR [N] [unit=U]");
      return 0;
    }
    for (int i = 0; i < count; i++)
      n += (size_t)snprintf(buf + n, sizeof buf - n, " %u", m->tab_registers[addr + i]);
    reply("ok regs %d%s", addr, buf);
  } else if (!strcmp(cmd, "bit")) {
    modbus_mapping_t *m = map_of((int)word_value(args, "unit", units[0]));
    char kind[8] = "";
    int addr = -1, v = -1, n = sscanf(args, "%7s %d %d", kind, &addr, &v);
    uint8_t *bits = !strcmp(kind, "coil") ? (m ? m->tab_bits : NULL)
                    : !strcmp(kind, "input") ? (m ? m->tab_input_bits : NULL) : NULL;

    if (n < 2 || !bits || addr < 0 || addr >= 64 || (n == 3 && v != 0 && v != 1)) {
      reply("err usage: bit coil|input ADDR [0|1] [unit=U]");
      return 0;
    }
    if (n == 3)
      bits[addr] = (uint8_t)v;
    reply("ok bit %d %d", addr, bits[addr]);
  } else if (!strcmp(cmd, "set")) {
    modbus_mapping_t *m = map_of((int)word_value(args, "unit", units[0]));
    char *save = NULL, *w = strtok_r(args, " \t", &save);
    int addr = w ? atoi(w) : -1, i = 0;

    if (addr < 0 || !m) {
      reply("err usage: set ADDR V [V...] [unit=U]");
      return 0;
    }
    while ((w = strtok_r(NULL, " \t", &save)) && addr + i < nregs) {
      if (!strncmp(w, "unit=", 5))
        continue;
      m->tab_registers[addr + i++] = (uint16_t)strtoul(w, NULL, 0);
    }
    reply("ok set %d", i);
  } else if (!strcmp(cmd, "quit")) {
    reply("ok quit");
    return 1;
  } else {
    reply("err unknown command '%s'", cmd);
  }
  return 0;
}

static int
parse_units(const char *text)
{
  char *end;

  n_units = 0;
  while (*text && n_units < MAX_UNITS) {
    long u = strtol(text, &end, 10);

    if (end == text || u < 1 || u > 247)
      return -1;
    units[n_units++] = (int)u;
    if (*end == ',')
      end++;
    else if (*end)
      return -1;
    text = end;
  }
  return n_units > 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
  const char *port_file = NULL, *rtu_path = NULL;
  char linebuf[4096];
  size_t linelen = 0;
  int stdin_open = 1, opt, baud = 19200;

  signal(SIGPIPE, SIG_IGN);
  units[0] = 1;
  while ((opt = getopt(argc, argv, "p:P:r:R:b:U:vh")) != -1) {
    switch (opt) {
      case 'p': port = atoi(optarg); break;
      case 'P': port_file = optarg; break;
      case 'r': nregs = atoi(optarg); break;
      case 'R': rtu_path = optarg; break;
      case 'b': baud = atoi(optarg); break;
      case 'U':
        if (parse_units(optarg) < 0) {
          fprintf(stderr, "fault_server: bad -U (units 1..247, comma-separated)\n");
          return 2;
        }
        break;
      case 'v': verbose = 1; break;
      default:
        fprintf(stderr, "usage: %s [-p PORT] [-P PORT_FILE] [-r NREGS] [-v]\n"
                "       %s -R SERIAL_DEVICE [-b BAUD] [-U UNIT,...] [-r NREGS] [-v]\n",
                argv[0], argv[0]);
        return 2;
    }
  }
  if (nregs < 1 || nregs > 65536 || port < 0 || port > 65535 || baud <= 0) {
    fprintf(stderr, "fault_server: bad -r, -p or -b\n");
    return 2;
  }
  for (int i = 0; i < MAX_CLIENTS; i++)
    clients[i].fd = -1;
  rtu = rtu_path != NULL;
  if (!rtu)
    n_units = 1;
  for (int i = 0; i < n_units; i++) {
    maps[i] = modbus_mapping_new(64, 64, nregs, nregs);
    if (!maps[i]) {
      fprintf(stderr, "fault_server: out of memory\n");
      return 1;
    }
  }

  if (rtu) {
    ctx = modbus_new_rtu(rtu_path, baud, 'N', 8, 1);
    if (!ctx || modbus_connect(ctx) < 0) {
      fprintf(stderr, "fault_server: cannot open %s: %s\n", rtu_path, modbus_strerror(errno));
      return 1;
    }
    clients[0].fd = modbus_get_socket(ctx);
    reply("listening rtu:%s", rtu_path);
  } else {
    ctx = modbus_new_tcp("127.0.0.1", 502);
    if (!ctx) {
      fprintf(stderr, "fault_server: out of memory\n");
      return 1;
    }
    listen_fd = open_listener();
    if (listen_fd < 0) {
      fprintf(stderr, "fault_server: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
      return 1;
    }
    if (port_file) {
      FILE *f = fopen(port_file, "w");

      if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
        fprintf(stderr, "fault_server: cannot write %s\n", port_file);
        return 1;
      }
    }
    reply("listening 127.0.0.1:%d", port);
  }

  for (;;) {
    fd_set rd;
    struct timeval tv, *tvp = NULL;
    double next_due = -1, t;
    int maxfd = -1, rc;

    FD_ZERO(&rd);
    if (stdin_open) {
      FD_SET(0, &rd);
      maxfd = 0;
    }
    if (listen_fd >= 0) {
      FD_SET(listen_fd, &rd);
      if (listen_fd > maxfd)
        maxfd = listen_fd;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
      Client *c = &clients[i];

      if (c->fd < 0)
        continue;
      if (c->pending) {
        if (next_due < 0 || c->due < next_due)
          next_due = c->due;
        if (!rtu)
          continue;                     /* TCP: one request at a time per client */
      }
      FD_SET(c->fd, &rd);
      if (c->fd > maxfd)
        maxfd = c->fd;
    }
    if (rtu && rtu_len > 0 && (next_due < 0 || rtu_last + RTU_GAP_S < next_due))
      next_due = rtu_last + RTU_GAP_S;
    if (next_due >= 0) {
      t = next_due - now_s();
      if (t < 0)
        t = 0;
      tv.tv_sec = (time_t)t;
      tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
      tvp = &tv;
    }
    rc = select(maxfd + 1, &rd, NULL, NULL, tvp);
    if (rc < 0) {
      if (errno == EINTR)
        continue;
      perror("fault_server: select");
      return 1;
    }

    t = now_s();
    for (int i = 0; i < MAX_CLIENTS; i++) {
      Client *c = &clients[i];

      if (c->fd >= 0 && c->pending && c->due <= t) {
        c->pending = 0;
        answer(c, c->query, c->len);
      }
    }
    if (rtu && rtu_len > 0 && t - rtu_last > RTU_GAP_S)
      rtu_len = 0;                      /* a broken frame: forget it */
    if (stdin_open && FD_ISSET(0, &rd)) {
      ssize_t n = read(0, linebuf + linelen, sizeof linebuf - 1 - linelen);

      if (n <= 0) {
        stdin_open = 0;
      } else {
        char *nl;

        linelen += (size_t)n;
        linebuf[linelen] = '\0';
        while ((nl = strchr(linebuf, '\n'))) {
          *nl = '\0';
          if (command(linebuf))
            return 0;
          memmove(linebuf, nl + 1, linelen - (size_t)(nl + 1 - linebuf) + 1);
          linelen = strlen(linebuf);
        }
        if (linelen >= sizeof linebuf - 1)
          linelen = 0;      /* an absurd line: forget it */
      }
    }
    if (rtu) {
      if (clients[0].fd >= 0 && FD_ISSET(clients[0].fd, &rd))
        rtu_input();
      continue;
    }
    if (listen_fd >= 0 && FD_ISSET(listen_fd, &rd)) {
      int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

      if (fd >= 0) {
        int slot = -1;

        for (int i = 0; i < MAX_CLIENTS; i++) {
          if (clients[i].fd < 0) {
            slot = i;
            break;
          }
        }
        if (slot < 0) {
          close(fd);
        } else {
          clients[slot].fd = fd;
          clients[slot].pending = 0;
          clients[slot].fresh = 1;
          n_accepted++;
        }
      }
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
      Client *c = &clients[i];
      uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];

      if (c->fresh) {
        c->fresh = 0;
        continue;
      }
      if (c->fd < 0 || c->pending || !FD_ISSET(c->fd, &rd))
        continue;
      modbus_set_socket(ctx, c->fd);
      rc = modbus_receive(ctx, q);
      if (rc < 0)
        close_client(c);
      else if (rc > 0)
        handle_request(c, q, rc);
    }
  }
}
