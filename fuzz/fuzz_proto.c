/* fuzz_proto.c - fuzz target: the text protocol as a client drives it.
 *
 * Bytes go through the same path as bytes from a TCP client: into a
 * connection's input buffer, through the telnet filter and the line framing
 * of src/srv.c, word splitting, the command table with its role checks, and
 * the daemon's handlers (src/cmds.c) over a control runtime with three
 * lasers on two Modbus devices whose threads are never started, and a
 * reference laser on channel 9 (calibration, mode correct).  No network:
 * src/srv.c is compiled into this file, so the connection is made by its own
 * accept callback on one end of a socketpair and its buffers are pumped by
 * hand, deterministically, instead of by the event loop.
 *
 * Input: byte 0 picks the connection's role (% 3: none, monitor, control)
 * and, with (byte 0 / 3) odd, the same bytes then also go as one MQTT
 * command payload through src/mqtt.c (iam lines, line splitting, limits, a
 * virtual connection with the control role; its reply must be well-formed);
 * byte 1 the delivery: bits 1..7 the chunk size in bytes (0: all at once),
 * bit 0 a wavemeter reading after every chunk (at most 16).  The rest is
 * what the client sends; the connection then sees EOF.  With FUZZ_PROTO_DUMP set in the
 * environment the server's output is printed (e.g. fuzz/replay_proto -n FILE).
 *
 * Checked on every input: the server's output is well-formed protocol
 * (greeting first; every line non-empty, printable, and a final line, an
 * event or a key=value data line; no event inside a response; no more
 * final lines than requests; no ERR 500 and no data line the server had to
 * repair); whatever the role, every laser stays inside its config (setpoint
 * and ramp target in min_thz..max_thz, run-time output limits inside the
 * configured ones, valid gains, window below capture); and a connection
 * that never had the control role changed nothing (setpoints, ramps,
 * engagement, gains and limits, hand-set outputs, config, state file).
 */
#include "../src/srv.c"

#include <ctype.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmds.h"
#include "daemon.h"
#include "fuzz.h"
#include "mqtt.h"
#include "fuzz_proto.h"

#define MONITOR_SECRET "fuzz-monitor-token"
#define CONTROL_SECRET "fuzz-control-token-7d1e"
#define MAX_OUTPUT (64u * 1024 * 1024)

static const char config_text[] =
  "# wavelock protocol fuzz target: nothing here is ever started\n"
  "server = { listen = [\"127.0.0.1:0\"]; max_clients = 4; line_timeout_s = 1;\n"
  "  tokens = ( { secret = \"" MONITOR_SECRET "\"; role = \"monitor\"; },\n"
  "             { secret = \"" CONTROL_SECRET "\"; role = \"control\"; } ); };\n"
  "state_file = \"state\";\n"
  "log_level = \"error\";\n"
  "wavemeter = { backend = \"stream\"; address = \"127.0.0.1:1\"; stale_ms = 500; };\n"
  "devices = ( { name = \"ao1\"; url = \"tcp://127.0.0.1:1\"; unit = 1; },\n"
  "            { name = \"ao2\"; url = \"tcp://127.0.0.1:2\"; unit = 3; timeout_ms = 50; } );\n"
  "lasers = (\n"
  "  { name = \"cool780\"; channel = 1; setpoint = \"384.2304844 THz\";\n"
  "    min_thz = 384.0; max_thz = 384.5; window_mhz = 5; capture_mhz = 2000;\n"
  "    pid = { kp = 0.001; ki = 0.002; };\n"
  "    piezo = { device = \"ao1\"; register = 0; format = \"u16\"; scale = 6553.5;\n"
  "              min_v = 0; max_v = 10; start_v = 5; max_step_v = 0.25; };\n"
  "    current = { device = \"ao1\"; register = 1; format = \"s16\"; scale = 3276.7;\n"
  "                min_v = -1; max_v = 1; feedforward = -0.2; }; },\n"
  "  { name = \"repump795\"; channel = 2; setpoint = \"794.978851 nm\";\n"
  "    min_thz = 377.0; max_thz = 377.2; autolock = true;\n"
  "    piezo = { device = \"ao2\"; register = 10; format = \"f32\"; word_order = \"cdab\";\n"
  "              scale = 1; min_v = -5; max_v = 5; };\n"
  "    current = { device = \"ao1\"; register = 4; format = \"s16\"; scale = 3276.7;\n"
  "                min_v = -2; max_v = 2; }; },\n"
  "  { name = \"blue461\"; channel = 3; setpoint = 650.5038;\n"
  "    min_thz = 650.0; max_thz = 651.0; pid = { polarity = -1; kd = 0.0001; };\n"
  "    piezo = { device = \"ao2\"; register = 20; format = \"s16\"; scale = 3000;\n"
  "              offset = 100; min_v = -10; max_v = 10; }; }\n"
  ");\n"
  "calibration = { channel = 9; frequency = \"500.00001 THz\"; tau_s = 5; };\n";

static WLD_Daemon *d;
static SRV_Server *srv;
static struct evbuffer *acc;
static MQT_Client *mqtt;
static int mqtt_replies;
static char state_path[CNF_PATH_MAX];

static void
setup(void)
{
  char path[512], err[512];
  FILE *f;

  snprintf(path, sizeof path, "%s/fuzz.conf", FUZZ_TempDir());
  f = fopen(path, "w");
  if (!f || fputs(config_text, f) < 0 || fclose(f) != 0) {
    fprintf(stderr, "fuzz: cannot write %s\n", path);
    exit(1);
  }
  LOG_SetLevel(LOG_LV_ERROR);
  d = FZD_Init(path);
  UTL_Strlcpy(state_path, d->cfg->state_file, sizeof state_path);
  srv = SRV_Create(d->base, &d->cfg->server, WLD_Commands, WLD_NumCommands, d, err, sizeof err);
  if (!srv) {
    fprintf(stderr, "fuzz: %s\n", err);
    exit(1);
  }
  SRV_StopListening(srv);         /* connections are made by hand */
  d->srv = srv;
  acc = evbuffer_new();
  FUZZ_CHECK(acc != NULL);
}

/* An MQTT command's reply: every line a protocol line, the last one final,
   never ERR 500. */
static void
mqtt_reply(const char *r, size_t n, void *arg)
{
  const char *line = r, *last = NULL;

  (void)arg;
  mqtt_replies++;
  if (getenv("FUZZ_PROTO_DUMP"))
    fprintf(stderr, "--- mqtt reply ---\n%.*s", (int)n, r);
  FUZZ_CHECK(n > 0 && r[n - 1] == '\n');
  while (line < r + n) {
    const char *nl = memchr(line, '\n', (size_t)(r + n - line));

    FUZZ_CHECK(nl != NULL && nl > line);
    FUZZ_CHECK(strncmp(line, "ERR 500", 7) != 0 && line[0] != '*');
    for (const char *p = line; p < nl; p++)
      FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    last = line;
    line = nl + 1;
  }
  FUZZ_CHECK(last && (strncmp(last, "OK", 2) == 0 || strncmp(last, "ERR ", 4) == 0));
}

/* Move the connection's output to acc, as if the client read it, and tell
   the server (its write callback), until nothing more happens. */
static void
pump(void)
{
  for (int guard = 0; srv->conns; guard++) {
    SRV_Conn *c = srv->conns;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    FUZZ_CHECK(guard < 1000000);
    if (evbuffer_get_length(out) == 0 && !c->paused && !c->congested) {
      if (c->state == CONN_FLUSH)
        conn_write_cb(c->bev, c);   /* nothing left to write: shut down or free */
      return;
    }
    FUZZ_CHECK(evbuffer_get_length(out) <= SRV_OUTPUT_MAX + 2 * SRV_OUTPUT_PAUSE);
    /* libevent keeps the start of a socket bufferevent's output frozen
       except while it writes; so do we. */
    evbuffer_unfreeze(out, 1);
    if (evbuffer_get_length(acc) < MAX_OUTPUT)
      FUZZ_CHECK(evbuffer_add_buffer(acc, out) == 0);
    else
      FUZZ_CHECK(evbuffer_drain(out, evbuffer_get_length(out)) == 0);
    evbuffer_freeze(out, 1);
    conn_write_cb(c->bev, c);
  }
}

/* What a connection without the control role must never change. */
typedef struct {
  double setpoint_thz, target_thz;
  int ramp, engaged;
  CNF_Laser cfg;
  double lo[4];
  double manual_piezo, manual_current;
  char owner[96];                /* claims and holds: control only */
  double claim_until, claim_len_s;
  int hold_cmd;
  double hold_until;
} Snap;

static FUZZ_NOCOV int
snapshot(Snap *s, int max)
{
  int n = CTL_LaserCount(d->ctl);

  FUZZ_CHECK(n <= max);
  memset(s, 0, sizeof *s * (size_t)max);
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    s[i].setpoint_thz = l->setpoint_thz;
    s[i].target_thz = l->ramp.target_thz;
    s[i].ramp = l->ramp.active;
    s[i].engaged = l->sm.engaged;
    memcpy(&s[i].cfg, &l->cfg, sizeof l->cfg);
    s[i].lo[0] = l->piezo_lo;
    s[i].lo[1] = l->piezo_hi;
    s[i].lo[2] = l->current_lo;
    s[i].lo[3] = l->current_hi;
    s[i].manual_piezo = l->manual_piezo;
    s[i].manual_current = l->manual_current;
    memcpy(s[i].owner, l->owner, sizeof s[i].owner);
    s[i].claim_until = l->claim_until;
    s[i].claim_len_s = l->claim_len_s;
    s[i].hold_cmd = l->hold_cmd;
    s[i].hold_until = l->hold_until;
  }
  return n;
}

/* What no command may do, whatever the role: leave a laser outside what its
   config allows. */
static FUZZ_NOCOV void
check_lasers(void)
{
  for (int i = 0; i < CTL_LaserCount(d->ctl); i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);
    const CNF_Laser *c = &l->cfg;

    FUZZ_CHECK(l->setpoint_thz >= c->min_thz && l->setpoint_thz <= c->max_thz);
    if (l->ramp.active)
      FUZZ_CHECK(l->ramp.target_thz >= c->min_thz && l->ramp.target_thz <= c->max_thz &&
                 l->ramp.rate_mhz_s > 0.0 && isfinite(l->ramp.rate_mhz_s));
    FUZZ_CHECK(c->piezo.min_v <= l->piezo_lo && l->piezo_lo <= l->piezo_hi &&
               l->piezo_hi <= c->piezo.max_v);
    if (l->current_dev)
      FUZZ_CHECK(c->current.min_v <= l->current_lo && l->current_lo <= l->current_hi &&
                 l->current_hi <= c->current.max_v && isfinite(c->current.feedforward));
    FUZZ_CHECK(l->piezo_v >= c->piezo.min_v && l->piezo_v <= c->piezo.max_v);
    FUZZ_CHECK(c->kp >= 0.0 && c->ki >= 0.0 && c->kd >= 0.0 &&
               isfinite(c->kp) && isfinite(c->ki) && isfinite(c->kd));
    FUZZ_CHECK(c->window_mhz > 0.0 && c->window_mhz < c->capture_mhz);
    FUZZ_CHECK(c->polarity == 1 || c->polarity == -1);
    FUZZ_CHECK(c->lock_n >= 1 && c->unlock_m >= 1 && c->max_dt_s > 0.0 && c->d_tau_s >= 0.0);
    FUZZ_CHECK(c->piezo.max_step_v >= 0.0 && c->modehop_mhz >= 0.0);
  }
}

static FUZZ_NOCOV int
starts(const char *line, size_t len, const char *prefix)
{
  size_t n = strlen(prefix);

  return len >= n && memcmp(line, prefix, n) == 0;
}

/* The protocol of DESIGN.md section 3, as seen in the whole output. */
static FUZZ_NOCOV void
check_output(size_t newlines)
{
  size_t len = evbuffer_get_length(acc), finals = 0, lineno = 0;
  const char *p = (const char *)evbuffer_pullup(acc, -1), *end = p + len;
  int in_response = 0;

  if (len == 0 || len >= MAX_OUTPUT)
    return;
  FUZZ_CHECK(end[-1] == '\n');
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)(nl - p);

    lineno++;
    FUZZ_CHECK(n > 0);
    for (size_t i = 0; i < n; i++)
      FUZZ_CHECK((unsigned char)p[i] >= 0x20 && p[i] != 0x7f);
    if (lineno == 1) {
      FUZZ_CHECK(starts(p, n, "* wavelock "));
    } else if (starts(p, n, "OK") && (n == 2 || p[2] == ' ')) {
      finals++;
      in_response = 0;
    } else if (starts(p, n, "ERR ")) {
      int code;

      FUZZ_CHECK(n >= 8 && p[7] == ' ' && isdigit((unsigned char)p[4]) &&
                 isdigit((unsigned char)p[5]) && isdigit((unsigned char)p[6]));
      code = (p[4] - '0') * 100 + (p[5] - '0') * 10 + (p[6] - '0');
      FUZZ_CHECK(code == 400 || code == 401 || code == 403 || code == 404 ||
                 code == 409 || code == 413 || code == 422 || code == 429 || code == 503);
      finals++;
      in_response = 0;
    } else if (starts(p, n, "* ")) {
      FUZZ_CHECK(!in_response);          /* never inside a response */
      FUZZ_CHECK(starts(p, n, "* state ") || starts(p, n, "* reading ") ||
                 starts(p, n, "* dropped n=") || starts(p, n, "* closing"));
    } else {
      const char *eq = memchr(p, '=', n), *sp = memchr(p, ' ', n);

      FUZZ_CHECK(!starts(p, n, "data="));  /* a line the server had to repair */
      FUZZ_CHECK(eq && eq > p && (!sp || eq < sp));   /* key=value first */
      FUZZ_CHECK(p[0] != '*' && !starts(p, n, "OK") && !starts(p, n, "ERR"));
      in_response = 1;
    }
    p = nl + 1;
  }
  FUZZ_CHECK(!in_response);              /* every response has its final line */
  FUZZ_CHECK(finals <= newlines + 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct sockaddr_in sin;
  struct stat st;
  int sv[2], role, chunk, readings, became_control;
  size_t newlines = 0;
  Snap before[8], after[8];
  int n_before;
  CNF_Config *cfg_before;
  SRV_Conn *c;

  if (size < 2)
    return 0;
  if (!d)
    setup();
  role = data[0] % 3;
  int via_mqtt = (data[0] / 3) % 2;
  chunk = data[1] >> 1;
  readings = data[1] & 1;
  data += 2;
  size -= 2;
  became_control = role == CNF_ROLE_CONTROL || via_mqtt ||
                   memmem(data, size, CONTROL_SECRET, strlen(CONTROL_SECRET)) != NULL;
  for (const uint8_t *p = data; (p = memchr(p, '\n', size - (size_t)(p - data))) != NULL; p++)
    newlines++;

  unlink(state_path);
  FZD_Begin(d);

  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons(40000);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  accept_cb(NULL, sv[0], (struct sockaddr *)&sin, (int)sizeof sin, srv);
  c = srv->conns;
  FUZZ_CHECK(c != NULL && !c->rejected && c->state == CONN_OPEN);
  FUZZ_CHECK(c->role == CNF_ROLE_NONE);   /* tokens are configured */
  if (role != CNF_ROLE_NONE) {
    /* As after "auth <token>" with that role's token. */
    c->role = (CNF_Role)role;
    UTL_Strlcpy(c->secret, role == CNF_ROLE_CONTROL ? CONTROL_SECRET : MONITOR_SECRET,
                sizeof c->secret);
  }
  n_before = snapshot(before, 8);
  cfg_before = d->cfg;
  pump();

  for (size_t off = 0; off < size && srv->conns; ) {
    size_t n = chunk == 0 || size - off < (size_t)chunk ? size - off : (size_t)chunk;

    struct evbuffer *in;

    c = srv->conns;
    in = bufferevent_get_input(c->bev);
    evbuffer_unfreeze(in, 0);        /* as libevent does while it reads */
    FUZZ_CHECK(evbuffer_add(in, data + off, n) == 0);
    evbuffer_freeze(in, 0);
    off += n;
    if (c->state == CONN_OPEN)
      process_input(c);
    else
      conn_read_cb(c->bev, c);
    pump();
    if (readings)
      FZD_Reading(d);
    pump();
  }
  if (srv->conns) {
    c = srv->conns;
    conn_event_cb(c->bev, BEV_EVENT_EOF, c);
    pump();
  }
  if (srv->conns)
    conn_free(srv->conns, "fuzz input done");
  FUZZ_CHECK(srv->conns == NULL && SRV_ClientCount(srv) == 0 && SRV_SubscriberCount(srv) == 0);
  close(sv[1]);
  if (via_mqtt) {
    int before_replies = mqtt_replies;

    if (!mqtt)
      mqtt = MQT_CreateLocal(srv, "fuzz", mqtt_reply, NULL);
    FUZZ_CHECK(mqtt != NULL);
    FUZZ_CHECK(MQT_Inject(mqtt, data, size, "fuzz", readings) == 0);
    event_base_loop(d->base, EVLOOP_NONBLOCK);
    /* An answer deferred beyond this input is dropped with the client. */
    if (mqtt_replies == before_replies) {
      MQT_Destroy(mqtt, 0, 0.0);
      mqtt = NULL;
    }
    check_lasers();
    {
      /* The same bytes as a topic for the other instances' view. */
      char *topic = strndup((const char *)data, size), inst[CNF_NAME_MAX], name[CNF_NAME_MAX];

      if (topic) {
        int kind = MQT_RemoteTopic(topic, inst, name);

        FUZZ_CHECK(kind >= -1 && kind <= 2);
        FUZZ_CHECK(kind <= 0 || (inst[0] && strlen(inst) < CNF_NAME_MAX && !strchr(inst, '/')));
        FUZZ_CHECK(kind != 2 || (name[0] && strlen(name) < CNF_NAME_MAX && !strchr(name, '/')));
        free(topic);
      }
    }
  }

  if (getenv("FUZZ_PROTO_DUMP"))     /* see what the client would have read */
    fprintf(stderr, "%.*s", (int)evbuffer_get_length(acc),
            (const char *)evbuffer_pullup(acc, -1));
  check_output(newlines);
  check_lasers();
  if (!became_control) {
    FUZZ_CHECK(d->cfg == cfg_before);                 /* no reload */
    FUZZ_CHECK(stat(state_path, &st) != 0);           /* no save */
    FUZZ_CHECK(snapshot(after, 8) == n_before);
    FUZZ_CHECK(memcmp(before, after, sizeof before) == 0);
  }
  FZD_End(d);
  /* Free what this input allocated before it ends, or libFuzzer's leak
     check (mallocs != frees) runs after every input. */
  evbuffer_drain(acc, evbuffer_get_length(acc));
  return 0;
}
