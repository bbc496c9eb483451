/* mqtt.c - publishing to and taking commands from an MQTT broker (mqtt.h).
 *
 * Two sides share one MQT_Shared under a mutex:
 *   the loop side (MQT_Client) pushes readings and replies into a ring of
 *   fixed size and laser states into a table, and runs commands;
 *   the MQTT thread owns the mosquitto handle: it connects (blocking calls
 *   are fine there), polls the socket and a wake-up eventfd, publishes
 *   what the loop queued while the connection keeps up (libmosquitto's own
 *   queue is only fed while it has written everything), and hands command
 *   messages back to the loop through an event.
 * The thread frees the shared part when both sides are done with it, so
 * MQT_Destroy never waits for a broker unless asked to.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "log.h"
#include "mqtt.h"
#include "srv.h"
#include "util.h"

#define BATCH 256              /* messages handed to libmosquitto per pass */
#define TOPIC_MAX 320

typedef enum { ITEM_READING = 0, ITEM_REPLY } ItemKind;

typedef struct {
  ItemKind kind;
  char laser[CNF_NAME_MAX];
  MQT_Reading r;
  char *topic;                 /* reply: malloc'd */
  char *payload;               /* reply: malloc'd */
  size_t len;
  void *corr;                  /* reply: correlation data (v5), malloc'd */
  int corr_len;
} Item;

typedef struct {
  MQT_LaserState st;           /* as the loop last set it */
  int dirty;                   /* to be published */
  int removed;                 /* publish an empty retained message, then forget */
  double t;                    /* when it changed (Unix s) */
} Entry;

typedef struct {
  char *payload;
  size_t len;
  int oversized;               /* payload was longer than MQT_CMD_MAX (not copied) */
  char *response_topic;
  void *corr;
  int corr_len;
  char name[SRV_NAME_MAX];
  int v5;
} Incoming;

typedef enum { LINK_DOWN = 0, LINK_CONNECTING, LINK_UP } Link;

/* The other instances (mqtt.remote), as their retained messages say. */
typedef enum { R_UNKNOWN = 0, R_ONLINE, R_OFFLINE } RStatus;

typedef struct {
  char name[CNF_NAME_MAX];
  RStatus status;
} RInst;

typedef struct {
  char instance[CNF_NAME_MAX];
  char name[CNF_NAME_MAX];
  char state[16];
  double setpoint_thz;         /* NAN when absent */
  char owner[96];              /* "" unclaimed */
  char railed[48];
  int autolock;                /* -1 absent */
  double t;                    /* the state's own time stamp (NAN when absent) */
} RLaser;

typedef struct {
  RInst inst[MQT_REMOTE_INSTANCES];
  int n_inst;
  RLaser las[MQT_REMOTE_LASERS];
  int n_las;
  unsigned long messages, malformed, overflow;
  unsigned long gen;           /* bumped on every change of the table */
} Remote;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;                    /* loop side + thread */
  CNF_Mqtt cfg;
  char prefix[CNF_NAME_MAX + 16]; /* "wavelock/<instance>/" */
  int wake_fd;

  /* Under mu. */
  Item *ring;
  int cap, head, count;
  Entry *table;
  int n_table, cap_table;
  int all_dirty;               /* republish every entry (after a connect) */
  Incoming in[MQT_CMD_QUEUE];
  int n_in;
  int stop, offline, finished;
  int sleeping;                /* the thread waits for work: wake it */
  struct event *cmd_ev;        /* NULL once the loop side is gone */
  MQT_Stats st;
  int link, protocol;
  /* Readings the loop dropped because the thread held mu at that moment
     (atomic: counted without the lock). */
  unsigned long busy_drops;
  Remote *remote;              /* under mu; NULL without mqtt.remote */
} MQT_Shared;

struct MQT_Client {
  MQT_Shared *sh;
  struct event_base *base;
  SRV_Server *srv;
  pthread_t thread;
  double *last_reading;        /* per laser index: last reading published (thinning) */
  int n_last;
  /* The command being run (one at a time, in arrival order). */
  Incoming cur;
  int busy;
  SRV_Conn *conn;
  MQT_ReplyFn local_fn;        /* MQT_CreateLocal: replies go here, no broker */
  void *local_arg;
  const char *lines[MQT_CMD_LINES];
  size_t lens[MQT_CMD_LINES];
  int n_lines, next_line;
  struct evbuffer *reply;
  /* The loop's copy of sh->remote (taken when the lock is free). */
  Remote *rview;
  unsigned long rgen;
  int rlink;
};

static double
now_mono(void)
{
  return UTL_Now();
}

static double
now_unix(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
wake(MQT_Shared *sh)
{
  uint64_t one = 1;

  if (write(sh->wake_fd, &one, sizeof one) < 0) {
    /* full counter: it is awake anyway */
  }
}

static void
item_clear(Item *it)
{
  if (it->kind == ITEM_REPLY) {
    free(it->topic);
    free(it->payload);
    free(it->corr);
  }
  memset(it, 0, sizeof *it);
}

static void
incoming_clear(Incoming *in)
{
  free(in->payload);
  free(in->response_topic);
  free(in->corr);
  memset(in, 0, sizeof *in);
}

static void
shared_unref(MQT_Shared *sh)
{
  int last;

  pthread_mutex_lock(&sh->mu);
  last = --sh->refs == 0;
  pthread_mutex_unlock(&sh->mu);
  if (!last)
    return;
  for (int i = 0; i < sh->count; i++)
    item_clear(&sh->ring[(sh->head + i) % sh->cap]);
  for (int i = 0; i < sh->n_in; i++)
    incoming_clear(&sh->in[i]);
  free(sh->ring);
  free(sh->table);
  free(sh->remote);
  if (sh->wake_fd >= 0)
    close(sh->wake_fd);
  pthread_mutex_destroy(&sh->mu);
  pthread_cond_destroy(&sh->cv);
  explicit_bzero(sh->cfg.password, sizeof sh->cfg.password);
  free(sh);
}

/* Push an item (loop side, mu held); 0, or -1 when full (counted). */
static int
push_item(MQT_Shared *sh, Item *it)
{
  if (sh->count >= sh->cap) {
    sh->st.dropped++;
    item_clear(it);
    return -1;
  }
  sh->ring[(sh->head + sh->count) % sh->cap] = *it;
  sh->count++;
  if ((unsigned long)sh->count > sh->st.queue_peak)
    sh->st.queue_peak = (unsigned long)sh->count;
  /* Readings wait for the thread's next pass (MQT_BATCH_MS): no system call
     and no wake-up per reading on the loop.  A reply wakes it. */
  if (sh->sleeping && it->kind == ITEM_REPLY) {
    sh->sleeping = 0;
    wake(sh);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON (jansson), on the MQTT thread */

/* Round to a step so that the shortest form is short. */
static double
rnd(double v, double step)
{
  return round(v / step) * step;
}

static char *
dump(json_t *o, size_t *len)
{
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));

  json_decref(o);
  *len = s ? strlen(s) : 0;
  return s;
}

static char *
reading_json(const Item *it, const char *instance, size_t *len)
{
  const MQT_Reading *r = &it->r;
  json_t *o = json_object();

  if (!o)
    return NULL;
  json_object_set_new(o, "laser", json_string(it->laser));
  json_object_set_new(o, "instance", json_string(instance));
  json_object_set_new(o, "t", json_real(rnd(r->t, 1e-3)));
  if (r->valid) {
    json_object_set_new(o, "freq_thz", json_real(rnd(r->freq_thz, 1e-9)));
    json_object_set_new(o, "error_mhz", json_real(rnd(r->error_mhz, 1e-4)));
  } else {
    json_object_set_new(o, "freq_thz", json_null());
    json_object_set_new(o, "error_mhz", json_null());
    json_object_set_new(o, "wm_status", json_string(r->wm_status ? r->wm_status : "error"));
  }
  json_object_set_new(o, "piezo_v", json_real(rnd(r->piezo_v, 1e-6)));
  json_object_set_new(o, "current_v", r->has_current ? json_real(rnd(r->current_v, 1e-6))
                                                     : json_null());
  json_object_set_new(o, "state", json_string(r->state ? r->state : "off"));
  return dump(o, len);
}

static char *
state_json(const Entry *e, const char *instance, size_t *len)
{
  const MQT_LaserState *s = &e->st;
  json_t *o = json_object(), *lim = json_object();

  if (!o || !lim) {
    json_decref(o);
    json_decref(lim);
    return NULL;
  }
  json_object_set_new(o, "laser", json_string(s->name));
  json_object_set_new(o, "instance", json_string(instance));
  json_object_set_new(o, "state", json_string(s->state ? s->state : "off"));
  json_object_set_new(o, "setpoint_thz", json_real(rnd(s->setpoint_thz, 1e-9)));
  json_object_set_new(o, "owner", s->owner[0] ? json_string(s->owner) : json_null());
  json_object_set_new(o, "autolock", json_boolean(s->autolock));
  json_object_set_new(o, "railed", json_string(s->railed[0] ? s->railed : "none"));
  json_object_set_new(lim, "min_thz", json_real(s->min_thz));
  json_object_set_new(lim, "max_thz", json_real(s->max_thz));
  json_object_set_new(lim, "piezo_min_v", json_real(s->piezo_min_v));
  json_object_set_new(lim, "piezo_max_v", json_real(s->piezo_max_v));
  if (s->has_current) {
    json_object_set_new(lim, "current_min_v", json_real(s->current_min_v));
    json_object_set_new(lim, "current_max_v", json_real(s->current_max_v));
  }
  json_object_set_new(o, "limits", lim);
  json_object_set_new(o, "t", json_real(rnd(e->t, 1e-3)));
  return dump(o, len);
}

/* ------------------------------------------------------------------------ */
/* The MQTT thread */

typedef struct {
  MQT_Shared *sh;
  struct mosquitto *mosq;
  Link link;
  int protocol;                /* of the present or next attempt */
  double next_try, backoff, attempt_t, last_misc, stall_since;
  int ever_up;
  char last_tls[256];          /* last OpenSSL error libmosquitto logged */
  char where[300];             /* "host:port" for log lines */
  int logged_down;             /* the outage has been logged */
  unsigned seed;               /* for the back-off jitter */
  int closing;                 /* our own disconnect at the end: not an outage */
  int just_up;                 /* CONNACK came: say online, subscribe (outside the callback) */
} Thr;

static double
jitter(Thr *t, double s)
{
  return s * (0.75 + 0.5 * ((double)rand_r(&t->seed) / RAND_MAX));
}

static void
set_link(Thr *t, Link l)
{
  t->link = l;
  pthread_mutex_lock(&t->sh->mu);
  t->sh->link = (int)l;
  t->sh->protocol = l == LINK_UP ? t->protocol : 0;
  pthread_mutex_unlock(&t->sh->mu);
}

/* The connection is gone (or never came up): try again after a back-off. */
static void
lost(Thr *t, int rc, const char *how)
{
  double now = now_mono();

  if (t->link == LINK_DOWN || t->closing)
    return;
  if (rc == MOSQ_ERR_TLS)
    log_error("mqtt: TLS with %s failed%s%s%s: the broker's certificate is not trusted "
              "(cafile %s) or TLS is misconfigured", t->where, t->last_tls[0] ? " (" : "",
              t->last_tls, t->last_tls[0] ? ")" : "",
              t->sh->cfg.cafile[0] ? t->sh->cfg.cafile : "(system CAs)");
  else if (t->link == LINK_UP)
    log_warn("mqtt: connection to %s lost (%s): reconnecting", t->where,
             how ? how : mosquitto_strerror(rc));
  else if (!t->logged_down)
    log_warn("mqtt: cannot connect to %s (%s): retrying with back-off", t->where,
             how ? how : mosquitto_strerror(rc));
  t->logged_down = 1;
  /* The protocol fallback: a v5 attempt that never got a CONNACK may be a
     3.1.1 broker; alternate while the mode is auto. */
  if (t->sh->cfg.protocol == CNF_MQTT_AUTO && t->link == LINK_CONNECTING && !t->ever_up &&
      rc != MOSQ_ERR_ERRNO && rc != MOSQ_ERR_TLS)
    t->protocol = t->protocol == MQTT_PROTOCOL_V5 ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5;
  set_link(t, LINK_DOWN);
  t->next_try = now + jitter(t, t->backoff);
  t->backoff = t->backoff * 2.0 > MQT_BACKOFF_MAX_S ? MQT_BACKOFF_MAX_S : t->backoff * 2.0;
}

static void
on_log(struct mosquitto *mosq, void *obj, int level, const char *msg)
{
  Thr *t = obj;

  (void)mosq;
  if (strstr(msg, "OpenSSL Error") || strstr(msg, "SSL"))
    UTL_Strlcpy(t->last_tls, msg, sizeof t->last_tls);
  if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
    log_debug("mqtt: libmosquitto: %s", msg);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *p)
{
  Thr *t = obj;
  MQT_Shared *sh = t->sh;

  (void)mosq;
  (void)flags;
  (void)p;
  if (rc != 0) {
    if (sh->cfg.protocol == CNF_MQTT_AUTO && t->protocol == MQTT_PROTOCOL_V5 &&
        (rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION || rc == CONNACK_REFUSED_PROTOCOL_VERSION)) {
      log_info("mqtt: %s does not speak MQTT 5: using 3.1.1", t->where);
      t->protocol = MQTT_PROTOCOL_V311;
      set_link(t, LINK_DOWN);
      t->next_try = 0.0;
      return;
    }
    log_error("mqtt: %s refused the connection: %s", t->where,
              t->protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(rc)
                                               : mosquitto_connack_string(rc));
    t->logged_down = 1;
    lost(t, MOSQ_ERR_CONN_REFUSED, "refused");
    return;
  }
  set_link(t, LINK_UP);
  t->ever_up = 1;
  t->backoff = MQT_BACKOFF_MIN_S;
  t->logged_down = 0;
  t->stall_since = 0.0;
  log_info("mqtt: connected to %s (MQTT %s) as instance %s", t->where,
           t->protocol == MQTT_PROTOCOL_V5 ? "5" : "3.1.1", sh->cfg.instance);
  t->just_up = 1;              /* libmosquitto holds its locks here: publish later */
  pthread_mutex_lock(&sh->mu);
  sh->st.connects++;
  sh->all_dirty = 1;
  pthread_mutex_unlock(&sh->mu);
}

static void
on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *p)
{
  (void)mosq;
  (void)p;
  lost(obj, rc, NULL);
}

/* ---- the other instances (on the MQTT thread) ---- */

static RInst *
r_inst(Remote *r, const char *name, int create)
{
  for (int i = 0; i < r->n_inst; i++)
    if (strcmp(r->inst[i].name, name) == 0)
      return &r->inst[i];
  if (!create)
    return NULL;
  if (r->n_inst >= MQT_REMOTE_INSTANCES) {
    r->overflow++;
    return NULL;
  }
  memset(&r->inst[r->n_inst], 0, sizeof r->inst[0]);
  UTL_Strlcpy(r->inst[r->n_inst].name, name, sizeof r->inst[0].name);
  return &r->inst[r->n_inst++];
}

static int
r_count(const Remote *r, const char *instance)
{
  int n = 0;

  for (int i = 0; i < r->n_las; i++)
    n += strcmp(r->las[i].instance, instance) == 0;
  return n;
}

static void
r_drop_inst(Remote *r, const char *name)
{
  RInst *x = r_inst(r, name, 0);

  if (x && x->status == R_UNKNOWN && r_count(r, name) == 0)
    *x = r->inst[--r->n_inst];
}

/* A topic level usable as a name: 1..CNF_NAME_MAX-1 printable bytes. */
static int
r_level(const char *p, size_t n, char *out)
{
  if (n == 0 || n >= CNF_NAME_MAX)
    return -1;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e)
      return -1;
  memcpy(out, p, n);
  out[n] = '\0';
  return 0;
}

static void
r_str(json_t *o, const char *key, char *out, size_t len)
{
  json_t *v = json_object_get(o, key);

  out[0] = '\0';
  if (json_is_string(v))
    UTL_Strlcpy(out, json_string_value(v), len);
}

int
MQT_RemoteTopic(const char *topic, char *inst, char *name)
{
  const char *a, *b;
  int kind, bad = 0;

  inst[0] = name[0] = '\0';
  if (strncmp(topic, "wavelock/", 9) != 0)
    return 0;
  a = topic + 9;
  b = strchr(a, '/');
  if (!b)
    return 0;
  if (strcmp(b + 1, "status") == 0) {
    kind = 1;
  } else if (strncmp(b + 1, "laser/", 6) == 0) {
    const char *c = b + 7, *e = strchr(c, '/');

    if (!e || strcmp(e + 1, "state") != 0)
      return 0;
    kind = 2;
    if (r_level(c, (size_t)(e - c), name) != 0)
      bad = 1;
  } else {
    return 0;
  }
  if (r_level(a, (size_t)(b - a), inst) != 0)
    bad = 1;
  return bad ? -1 : kind;
}

/* A message on wavelock/<inst>/status or wavelock/<inst>/laser/<name>/state
   of another instance: 1 when it was one of those (handled), 0 otherwise. */
static int
remote_message(MQT_Shared *sh, const struct mosquitto_message *msg)
{
  char inst[CNF_NAME_MAX], name[CNF_NAME_MAX];
  int kind, is_state, bad;
  RLaser l;
  Remote *r = sh->remote;

  if (!r)
    return 0;
  kind = MQT_RemoteTopic(msg->topic, inst, name);
  if (kind == 0)
    return 0;
  bad = kind < 0;
  is_state = kind == 2;
  if (!bad && strcmp(inst, sh->cfg.instance) == 0)
    return 1;                  /* our own (MQTT 3.1.1 has no "no local") */
  memset(&l, 0, sizeof l);
  if (!bad && is_state && msg->payloadlen > 0) {
    json_error_t err;
    json_t *o = NULL, *v;

    if (msg->payloadlen > MQT_REMOTE_PAYLOAD ||
        !(o = json_loadb(msg->payload, (size_t)msg->payloadlen, JSON_REJECT_DUPLICATES, &err)) ||
        !json_is_object(o) || !json_is_string(json_object_get(o, "state")) ||
        strlen(json_string_value(json_object_get(o, "state"))) >= sizeof l.state) {
      bad = 1;
    } else {
      UTL_Strlcpy(l.instance, inst, sizeof l.instance);
      UTL_Strlcpy(l.name, name, sizeof l.name);
      r_str(o, "state", l.state, sizeof l.state);
      r_str(o, "owner", l.owner, sizeof l.owner);
      r_str(o, "railed", l.railed, sizeof l.railed);
      v = json_object_get(o, "setpoint_thz");
      l.setpoint_thz = json_is_number(v) ? json_number_value(v) : (double)NAN;
      v = json_object_get(o, "t");
      l.t = json_is_number(v) ? json_number_value(v) : (double)NAN;
      v = json_object_get(o, "autolock");
      l.autolock = json_is_boolean(v) ? json_is_true(v) : -1;
    }
    json_decref(o);
  }
  pthread_mutex_lock(&sh->mu);
  r->messages++;
  if (bad) {
    r->malformed++;
  } else if (!is_state) {
    RInst *x = r_inst(r, inst, msg->payloadlen > 0);

    if (x) {
      if (msg->payloadlen == 6 && memcmp(msg->payload, "online", 6) == 0)
        x->status = R_ONLINE;
      else if (msg->payloadlen == 7 && memcmp(msg->payload, "offline", 7) == 0)
        x->status = R_OFFLINE;
      else if (msg->payloadlen == 0)
        x->status = R_UNKNOWN;
      else
        r->malformed++;
      r_drop_inst(r, inst);
    }
  } else {
    int i;

    for (i = 0; i < r->n_las; i++)
      if (strcmp(r->las[i].instance, inst) == 0 && strcmp(r->las[i].name, name) == 0)
        break;
    if (msg->payloadlen == 0) {          /* retained state cleared: the laser is gone */
      if (i < r->n_las)
        r->las[i] = r->las[--r->n_las];
      r_drop_inst(r, inst);
    } else if (i == r->n_las && r->n_las >= MQT_REMOTE_LASERS) {
      r->overflow++;
    } else if (!r_inst(r, inst, 1)) {
      /* too many instances: counted */
    } else {
      if (i == r->n_las)
        r->n_las++;
      r->las[i] = l;
    }
  }
  r->gen++;
  pthread_mutex_unlock(&sh->mu);
  return 1;
}

static void
on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
           const mosquitto_property *props)
{
  Thr *t = obj;
  MQT_Shared *sh = t->sh;
  Incoming in;
  char *k = NULL, *v = NULL;
  const mosquitto_property *p;
  uint16_t clen = 0;

  (void)mosq;
  if (remote_message(sh, msg))
    return;
  memset(&in, 0, sizeof in);
  in.v5 = t->protocol == MQTT_PROTOCOL_V5;
  if (msg->payloadlen > MQT_CMD_MAX) {
    in.oversized = 1;
  } else {
    in.payload = malloc((size_t)msg->payloadlen + 1);
    if (!in.payload)
      return;
    if (msg->payloadlen > 0)
      memcpy(in.payload, msg->payload, (size_t)msg->payloadlen);
    in.payload[msg->payloadlen] = '\0';
    in.len = (size_t)msg->payloadlen;
  }
  mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &in.response_topic, false);
  mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &in.corr, &clen, false);
  in.corr_len = clen;
  for (p = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &k, &v, false);
       p; p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, true)) {
    if (k && v && strcmp(k, "name") == 0)
      UTL_Strlcpy(in.name, v, sizeof in.name);
    free(k);
    free(v);
    k = v = NULL;
  }
  pthread_mutex_lock(&sh->mu);
  if (sh->n_in >= MQT_CMD_QUEUE || !sh->cmd_ev) {
    sh->st.commands_dropped++;
    pthread_mutex_unlock(&sh->mu);
    incoming_clear(&in);
    return;
  }
  sh->in[sh->n_in++] = in;
  event_active(sh->cmd_ev, EV_READ, 0);
  pthread_mutex_unlock(&sh->mu);
}

static struct mosquitto *
make_handle(Thr *t, char *cid)
{
  MQT_Shared *sh = t->sh;
  struct mosquitto *mosq = mosquitto_new(cid, true, t);
  char topic[TOPIC_MAX];

  if (!mosq)
    return NULL;
  mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, t->protocol);
  snprintf(topic, sizeof topic, "%sstatus", sh->prefix);
  mosquitto_will_set(mosq, topic, 7, "offline", 1, true);
  if (sh->cfg.username[0])
    mosquitto_username_pw_set(mosq, sh->cfg.username,
                              sh->cfg.password[0] ? sh->cfg.password : NULL);
  if (sh->cfg.tls) {
    int rc;

    if (sh->cfg.cafile[0])
      rc = mosquitto_tls_set(mosq, sh->cfg.cafile, NULL, NULL, NULL, NULL);
    else
      rc = mosquitto_int_option(mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
    if (rc != MOSQ_ERR_SUCCESS)
      log_error("mqtt: TLS set-up failed: %s", mosquitto_strerror(rc));
  }
  mosquitto_connect_v5_callback_set(mosq, on_connect);
  mosquitto_disconnect_v5_callback_set(mosq, on_disconnect);
  mosquitto_message_v5_callback_set(mosq, on_message);
  mosquitto_log_callback_set(mosq, on_log);
  return mosq;
}

static void
try_connect(Thr *t)
{
  MQT_Shared *sh = t->sh;
  mosquitto_property *props = NULL;
  int rc;

  /* The protocol version is fixed per handle option: set it each time. */
  mosquitto_int_option(t->mosq, MOSQ_OPT_PROTOCOL_VERSION, t->protocol);
  if (t->protocol == MQTT_PROTOCOL_V5)
    mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, MQT_MAX_PACKET);
  t->last_tls[0] = '\0';
  set_link(t, LINK_CONNECTING);
  t->attempt_t = now_mono();
  rc = mosquitto_connect_bind_v5(t->mosq, sh->cfg.host, sh->cfg.port, sh->cfg.keepalive_s, NULL,
                                 props);
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_SUCCESS)
    lost(t, rc, rc == MOSQ_ERR_ERRNO ? strerror(errno) : NULL);
}

/* Hand queued work to libmosquitto while it keeps up with writing. */
static void
pump(Thr *t)
{
  MQT_Shared *sh = t->sh;
  char topic[TOPIC_MAX];
  int sent = 0;

  while (sent < BATCH && !mosquitto_want_write(t->mosq) && t->link == LINK_UP) {
    Item it;
    Entry e;
    int have = 0, republish = 0;
    char *payload = NULL;
    size_t len = 0;

    pthread_mutex_lock(&sh->mu);
    if (sh->all_dirty) {
      for (int i = 0; i < sh->n_table; i++)
        sh->table[i].dirty = 1;
      sh->all_dirty = 0;
    }
    for (int i = 0; i < sh->n_table; i++) {
      if (!sh->table[i].dirty)
        continue;
      e = sh->table[i];
      sh->table[i].dirty = 0;
      if (e.removed) {
        sh->table[i] = sh->table[sh->n_table - 1];
        sh->n_table--;
      }
      have = 2;
      break;
    }
    if (!have && sh->count > 0) {
      it = sh->ring[sh->head];
      memset(&sh->ring[sh->head], 0, sizeof sh->ring[sh->head]);
      sh->head = (sh->head + 1) % sh->cap;
      sh->count--;
      have = 1;
    }
    pthread_mutex_unlock(&sh->mu);
    if (!have)
      break;
    if (have == 2) {
      snprintf(topic, sizeof topic, "%slaser/%s/state", sh->prefix, e.st.name);
      if (!e.removed)
        payload = state_json(&e, sh->cfg.instance, &len);
      if (!e.removed && !payload)
        continue;
      mosquitto_publish_v5(t->mosq, NULL, topic, (int)len, payload, 1, true, NULL);
      free(payload);
      republish = 1;
    } else if (it.kind == ITEM_READING) {
      snprintf(topic, sizeof topic, "%slaser/%s/reading", sh->prefix, it.laser);
      payload = reading_json(&it, sh->cfg.instance, &len);
      if (payload)
        mosquitto_publish_v5(t->mosq, NULL, topic, (int)len, payload, 0, false, NULL);
      free(payload);
    } else {
      mosquitto_property *props = NULL;

      if (it.corr && t->protocol == MQTT_PROTOCOL_V5)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, it.corr,
                                      (uint16_t)it.corr_len);
      if (mosquitto_publish_v5(t->mosq, NULL, it.topic, (int)it.len, it.payload, 1, false,
                               props) != MOSQ_ERR_SUCCESS) {
        pthread_mutex_lock(&sh->mu);
        sh->st.dropped++;
        pthread_mutex_unlock(&sh->mu);
      }
      mosquitto_property_free_all(&props);
      item_clear(&it);
    }
    sent++;
    pthread_mutex_lock(&sh->mu);
    sh->st.published++;
    if (republish && sh->st.connects > 1)
      sh->st.republished++;
    pthread_mutex_unlock(&sh->mu);
  }
}

static void *
thread_main(void *arg)
{
  MQT_Shared *sh = arg;
  Thr t;
  char cid[96];
  int offline = 0;

  pthread_setname_np(pthread_self(), "wl-mqtt");   /* for top -H and the benchmark */
  /* Publishing must never take CPU from the lasers: on Linux the nice value
     is per thread, so this one yields to the loop and the device threads. */
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), MQT_NICE) != 0)
    log_debug("mqtt: cannot lower the thread's priority: %s", strerror(errno));
  memset(&t, 0, sizeof t);
  t.sh = sh;
  t.protocol = sh->cfg.protocol == CNF_MQTT_V311 ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5;
  t.backoff = MQT_BACKOFF_MIN_S;
  snprintf(t.where, sizeof t.where, "%s", sh->cfg.url);
  /* Unique per process and start: a second daemon (or a reload) with the
     same instance name must not take over the old session. */
  snprintf(cid, sizeof cid, "wavelock-%s-%ld-%lx", sh->cfg.instance, (long)getpid(),
           (unsigned long)((uintptr_t)sh & 0xffffff));
  t.seed = (unsigned)((uintptr_t)getpid() ^ (uintptr_t)sh ^ (uintptr_t)time(NULL));
  t.mosq = make_handle(&t, cid);
  if (!t.mosq)
    log_error("mqtt: cannot create the client: %s", strerror(errno));
  while (t.mosq) {
    struct pollfd fds[2];
    int nfds = 1, timeout_ms = 100, stop;
    double now = now_mono();

    pthread_mutex_lock(&sh->mu);
    stop = sh->stop;
    offline = sh->offline;
    pthread_mutex_unlock(&sh->mu);
    if (stop)
      break;
    if (t.link == LINK_DOWN && now >= t.next_try)
      try_connect(&t);
    if (t.link == LINK_UP && t.just_up) {
      char topic[TOPIC_MAX];

      t.just_up = 0;
      snprintf(topic, sizeof topic, "%sstatus", sh->prefix);
      mosquitto_publish_v5(t.mosq, NULL, topic, 6, "online", 1, true, NULL);
      if (sh->cfg.commands) {
        snprintf(topic, sizeof topic, "%scmd", sh->prefix);
        mosquitto_subscribe_v5(t.mosq, NULL, topic, 1, 0, NULL);
      }
      if (sh->remote) {
        /* The other instances: their retained messages come again now, so
           start afresh (what was removed meanwhile does not linger). */
        int opt = t.protocol == MQTT_PROTOCOL_V5 ? MQTT_SUB_OPT_NO_LOCAL : 0;

        pthread_mutex_lock(&sh->mu);
        sh->remote->n_inst = sh->remote->n_las = 0;
        sh->remote->gen++;
        pthread_mutex_unlock(&sh->mu);
        mosquitto_subscribe_v5(t.mosq, NULL, "wavelock/+/status", 1, opt, NULL);
        mosquitto_subscribe_v5(t.mosq, NULL, "wavelock/+/laser/+/state", 1, opt, NULL);
      }
    }
    if (t.link == LINK_UP)
      pump(&t);

    fds[0].fd = sh->wake_fd;
    fds[0].events = POLLIN;
    if (t.link != LINK_DOWN && mosquitto_socket(t.mosq) >= 0) {
      fds[1].fd = mosquitto_socket(t.mosq);
      fds[1].events = POLLIN | (mosquitto_want_write(t.mosq) ? POLLOUT : 0);
      nfds = 2;
    }
    if (t.link == LINK_UP && !mosquitto_want_write(t.mosq)) {
      /* Idle and keeping up: sleep until the next batch of readings is
         due, or a reply or a state change wakes us. */
      pthread_mutex_lock(&sh->mu);
      if (sh->count == 0 && !sh->all_dirty && !sh->stop) {
        int dirty = 0;

        for (int i = 0; i < sh->n_table && !dirty; i++)
          dirty = sh->table[i].dirty;
        sh->sleeping = !dirty;
        timeout_ms = dirty ? 0 : MQT_BATCH_MS;
      } else {
        timeout_ms = 0;
      }
      pthread_mutex_unlock(&sh->mu);
    }
    if (poll(fds, (nfds_t)nfds, timeout_ms) < 0 && errno != EINTR) {
      log_error("mqtt: poll: %s", strerror(errno));
      break;
    }
    pthread_mutex_lock(&sh->mu);
    sh->sleeping = 0;
    pthread_mutex_unlock(&sh->mu);
    if (fds[0].revents & POLLIN) {
      uint64_t v;

      if (read(sh->wake_fd, &v, sizeof v) < 0) {
        /* nothing */
      }
    }
    if (nfds == 2 && t.link != LINK_DOWN) {
      if (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) {
        int rc = mosquitto_loop_read(t.mosq, 1);

        if (rc != MOSQ_ERR_SUCCESS)
          lost(&t, rc, NULL);
      }
      if (t.link != LINK_DOWN && (fds[1].revents & POLLOUT)) {
        int rc = mosquitto_loop_write(t.mosq, 1);

        if (rc != MOSQ_ERR_SUCCESS)
          lost(&t, rc, NULL);
      }
    }
    if (t.link != LINK_DOWN && sh->cfg.tls && mosquitto_socket(t.mosq) >= 0) {
      /* TLS may hold decrypted bytes that poll() does not see. */
      int rc = mosquitto_loop_read(t.mosq, 1);

      if (rc != MOSQ_ERR_SUCCESS)
        lost(&t, rc, NULL);
    }
    now = now_mono();
    if (t.link != LINK_DOWN && now - t.last_misc >= 1.0) {
      int rc;

      t.last_misc = now;
      rc = mosquitto_loop_misc(t.mosq);
      if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
        lost(&t, rc, NULL);
    }
    /* No CONNACK in time, or output stuck for a keepalive: the broker is
       not reading; drop the connection (a new one starts clean). */
    if (t.link == LINK_CONNECTING && now - t.attempt_t > sh->cfg.keepalive_s)
      lost(&t, MOSQ_ERR_KEEPALIVE, "no CONNACK");
    if (t.link == LINK_UP) {
      if (!mosquitto_want_write(t.mosq))
        t.stall_since = 0.0;
      else if (t.stall_since == 0.0)
        t.stall_since = now;
      else if (now - t.stall_since > sh->cfg.keepalive_s)
        lost(&t, MOSQ_ERR_KEEPALIVE, "the broker does not read");
    }
  }
  if (t.mosq) {
    if (t.link == LINK_UP) {
      char topic[TOPIC_MAX];

      if (offline) {
        snprintf(topic, sizeof topic, "%sstatus", sh->prefix);
        mosquitto_publish_v5(t.mosq, NULL, topic, 7, "offline", 1, true, NULL);
      }
      t.closing = 1;
      mosquitto_disconnect(t.mosq);
      /* Write the rest out (a stalled broker: give up at once). */
      for (int i = 0; i < 20 && mosquitto_want_write(t.mosq) && mosquitto_socket(t.mosq) >= 0;
           i++) {
        struct pollfd pf = { .fd = mosquitto_socket(t.mosq), .events = POLLOUT };

        if (poll(&pf, 1, 25) <= 0 || mosquitto_loop_write(t.mosq, 1) != MOSQ_ERR_SUCCESS)
          break;
      }
    }
    mosquitto_destroy(t.mosq);
  }
  pthread_mutex_lock(&sh->mu);
  sh->finished = 1;
  sh->link = LINK_DOWN;
  pthread_cond_broadcast(&sh->cv);
  pthread_mutex_unlock(&sh->mu);
  shared_unref(sh);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Commands, on the loop */

int
MQT_SplitLines(const char *p, size_t n, const char **line, size_t *len, int max)
{
  int count = 0;
  size_t i = 0;

  while (i < n) {
    const char *nl = memchr(p + i, '\n', n - i);
    size_t end = nl ? (size_t)(nl - p) : n, l = end - i;

    if (l > 0 && p[i + l - 1] == '\r')
      l--;
    if (l > 0) {
      size_t k;

      for (k = 0; k < l && (p[i + k] == ' ' || p[i + k] == '\t'); k++)
        ;
      if (k < l) {
        if (count >= max)
          return -1;
        line[count] = p + i;
        len[count] = l;
        count++;
      }
    }
    i = end + 1;
  }
  return count;
}

int
MQT_ParseIam(const char *line, size_t n, char *name, size_t namelen)
{
  size_t i = 0, s, e;

  while (i < n && (line[i] == ' ' || line[i] == '\t'))
    i++;
  if (n - i < 3 || strncasecmp(line + i, "iam", 3) != 0)
    return 0;
  i += 3;
  if (i < n && line[i] != ' ' && line[i] != '\t')
    return 0;
  while (i < n && (line[i] == ' ' || line[i] == '\t'))
    i++;
  s = i;
  while (i < n && line[i] != ' ' && line[i] != '\t')
    i++;
  e = i;
  while (i < n && (line[i] == ' ' || line[i] == '\t'))
    i++;
  if (e == s || i != n || e - s >= namelen)
    return -1;
  for (size_t k = s; k < e; k++) {
    unsigned char c = (unsigned char)line[k];

    if (c < 0x21 || c > 0x7e)
      return -1;
  }
  memcpy(name, line + s, e - s);
  name[e - s] = '\0';
  return 1;
}

static void run_lines(MQT_Client *m);

static void
reply_line(MQT_Client *m, const char *text)
{
  evbuffer_add(m->reply, text, strlen(text));
  evbuffer_add(m->reply, "\n", 1);
}

/* The command's answer is complete: queue the reply. */
static void
finish_command(MQT_Client *m)
{
  MQT_Shared *sh = m->sh;
  Item it;
  size_t n = evbuffer_get_length(m->reply);

  memset(&it, 0, sizeof it);
  it.kind = ITEM_REPLY;
  it.payload = malloc(n + 1);
  if (m->cur.v5 && m->cur.response_topic && m->cur.response_topic[0])
    it.topic = strdup(m->cur.response_topic);
  else if (asprintf(&it.topic, "%sreply", sh->prefix) < 0)
    it.topic = NULL;
  if (it.payload) {
    evbuffer_remove(m->reply, it.payload, n);
    it.payload[n] = '\0';
    it.len = n;
  }
  evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
  if (m->local_fn) {
    m->local_fn(it.payload ? it.payload : "", it.payload ? it.len : 0, m->local_arg);
    item_clear(&it);
    SRV_VirtualFree(m->conn);
    m->conn = NULL;
    incoming_clear(&m->cur);
    m->busy = 0;
    return;
  }
  if (m->cur.corr && m->cur.corr_len > 0) {
    it.corr = m->cur.corr;
    it.corr_len = m->cur.corr_len;
    m->cur.corr = NULL;
  }
  pthread_mutex_lock(&sh->mu);
  sh->st.commands++;
  if (!it.topic || !it.payload) {
    sh->st.dropped++;
    item_clear(&it);
  } else {
    push_item(sh, &it);
  }
  /* Commands that arrived while a deferred one waited run next. */
  if (sh->n_in > 0 && sh->cmd_ev)
    event_active(sh->cmd_ev, EV_READ, 0);
  pthread_mutex_unlock(&sh->mu);
  SRV_VirtualFree(m->conn);
  m->conn = NULL;
  incoming_clear(&m->cur);
  m->busy = 0;
}

static void
take_answer(MQT_Client *m)
{
  char *out = NULL;
  size_t n = SRV_VirtualTake(m->conn, NULL, 0);

  if (n == 0)
    return;
  out = malloc(n + 1);
  if (!out)
    return;
  SRV_VirtualTake(m->conn, out, n + 1);
  evbuffer_add(m->reply, out, n);
  free(out);
}

static void
deferred_done(SRV_Conn *c, void *arg)
{
  MQT_Client *m = arg;

  (void)c;
  take_answer(m);
  run_lines(m);
}

/* Run the remaining lines of the current command (continues after a
   deferred answer from deferred_done). */
static void
run_lines(MQT_Client *m)
{
  while (m->next_line < m->n_lines) {
    const char *l = m->lines[m->next_line];
    size_t n = m->lens[m->next_line];
    char word[16];
    size_t k = 0, w = 0;

    m->next_line++;
    while (k < n && (l[k] == ' ' || l[k] == '\t'))
      k++;
    while (k < n && l[k] != ' ' && l[k] != '\t' && w + 1 < sizeof word)
      word[w++] = l[k++];
    word[w] = '\0';
    if (strcasecmp(word, "subscribe") == 0 || strcasecmp(word, "unsubscribe") == 0 ||
        strcasecmp(word, "quit") == 0 || strcasecmp(word, "auth") == 0) {
      char msg[160];

      snprintf(msg, sizeof msg, "ERR 400 '%s' is not available over MQTT%s", word,
               strstr(word, "ubscribe") ? " (subscribe to wavelock/<instance>/laser/+/reading "
               "instead)" : "");
      reply_line(m, msg);
      continue;
    }
    if (SRV_VirtualRun(m->conn, l, n) == 0)
      return;                  /* deferred: deferred_done continues */
    take_answer(m);
  }
  finish_command(m);
}

static void
start_command(MQT_Client *m)
{
  char name[SRV_NAME_MAX];
  int i = 0, rc;

  m->busy = 1;
  m->n_lines = m->next_line = 0;
  m->conn = SRV_VirtualNew(m->srv, CNF_ROLE_CONTROL, "mqtt", deferred_done, m);
  if (!m->conn) {
    reply_line(m, "ERR 500 out of memory");
    finish_command(m);
    return;
  }
  if (m->cur.oversized) {
    char msg[96];

    snprintf(msg, sizeof msg, "ERR 413 payload too large (at most %d bytes)", MQT_CMD_MAX);
    reply_line(m, msg);
    finish_command(m);
    return;
  }
  rc = MQT_SplitLines(m->cur.payload, m->cur.len, m->lines, m->lens, MQT_CMD_LINES);
  if (rc < 0) {
    char msg[96];

    snprintf(msg, sizeof msg, "ERR 400 too many lines (at most %d)", MQT_CMD_LINES);
    reply_line(m, msg);
    finish_command(m);
    return;
  }
  m->n_lines = rc;
  /* Who sends: a v5 user property "name", or "iam <name>" lines first.
     Claims, where they exist, read it with SRV_Name(). */
  SRV_SetName(m->conn, m->cur.name);
  for (; i < m->n_lines; i++) {
    int r = MQT_ParseIam(m->lines[i], m->lens[i], name, sizeof name);

    if (r == 0)
      break;
    if (r < 0) {
      reply_line(m, "ERR 400 usage: iam <name> (one word, printable)");
      finish_command(m);
      return;
    }
    SRV_SetName(m->conn, name);
  }
  m->next_line = i;
  if (m->next_line >= m->n_lines) {
    reply_line(m, "ERR 400 no command in the message");
    finish_command(m);
    return;
  }
  run_lines(m);
}

static void
cmd_cb(evutil_socket_t fd, short what, void *arg)
{
  MQT_Client *m = arg;
  MQT_Shared *sh = m->sh;

  (void)fd;
  (void)what;
  while (!m->busy) {
    pthread_mutex_lock(&sh->mu);
    if (sh->n_in == 0) {
      pthread_mutex_unlock(&sh->mu);
      return;
    }
    m->cur = sh->in[0];
    memmove(&sh->in[0], &sh->in[1], (size_t)(sh->n_in - 1) * sizeof sh->in[0]);
    sh->n_in--;
    pthread_mutex_unlock(&sh->mu);
    start_command(m);
  }
}

/* ------------------------------------------------------------------------ */
/* The loop side */

MQT_Client *
MQT_Create(struct event_base *base, const CNF_Mqtt *cfg, SRV_Server *srv, char *err,
           size_t errlen)
{
  MQT_Client *m = calloc(1, sizeof *m);
  MQT_Shared *sh = calloc(1, sizeof *sh);
  static pthread_once_t once = PTHREAD_ONCE_INIT;

  pthread_once(&once, (void (*)(void))mosquitto_lib_init);
  if (!m || !sh)
    goto fail;
  sh->cfg = *cfg;
  sh->cap = cfg->queue;
  sh->ring = calloc((size_t)sh->cap, sizeof *sh->ring);
  m->reply = evbuffer_new();
  sh->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!sh->ring || !m->reply || sh->wake_fd < 0)
    goto fail;
  if (cfg->remote) {
    sh->remote = calloc(1, sizeof *sh->remote);
    m->rview = calloc(1, sizeof *m->rview);
    if (!sh->remote || !m->rview)
      goto fail;
  }
  snprintf(sh->prefix, sizeof sh->prefix, "wavelock/%s/", cfg->instance);
  pthread_mutex_init(&sh->mu, NULL);
  pthread_cond_init(&sh->cv, NULL);
  sh->st.enabled = 1;
  sh->st.queue_max = (unsigned long)sh->cap;
  sh->cmd_ev = event_new(base, -1, 0, cmd_cb, m);
  if (!sh->cmd_ev)
    goto fail_locks;
  m->sh = sh;
  m->base = base;
  m->srv = srv;
  sh->refs = 2;
  if (pthread_create(&m->thread, NULL, thread_main, sh) != 0) {
    event_free(sh->cmd_ev);
    goto fail_locks;
  }
  pthread_detach(m->thread);
  log_info("mqtt: publishing as wavelock/%s/ to %s%s%s", cfg->instance, cfg->url,
           cfg->commands ? ", taking commands" : "",
           cfg->remote ? ", showing the other instances" : "");
  return m;

fail_locks:
  pthread_mutex_destroy(&sh->mu);
  pthread_cond_destroy(&sh->cv);
fail:
  snprintf(err, errlen, "mqtt: cannot start: %s", strerror(errno ? errno : ENOMEM));
  if (sh) {
    free(sh->ring);
    free(sh->remote);
    if (sh->wake_fd > 0)
      close(sh->wake_fd);
    free(sh);
  }
  if (m && m->reply)
    evbuffer_free(m->reply);
  if (m)
    free(m->rview);
  free(m);
  return NULL;
}

MQT_Client *
MQT_CreateLocal(SRV_Server *srv, const char *instance, MQT_ReplyFn fn, void *arg)
{
  MQT_Client *m = calloc(1, sizeof *m);
  MQT_Shared *sh = calloc(1, sizeof *sh);

  if (!m || !sh || !(m->reply = evbuffer_new())) {
    free(m);
    free(sh);
    return NULL;
  }
  snprintf(sh->prefix, sizeof sh->prefix, "wavelock/%s/", instance);
  UTL_Strlcpy(sh->cfg.instance, instance, sizeof sh->cfg.instance);
  pthread_mutex_init(&sh->mu, NULL);
  pthread_cond_init(&sh->cv, NULL);
  sh->wake_fd = -1;
  sh->refs = 1;
  sh->finished = 1;
  m->sh = sh;
  m->srv = srv;
  m->local_fn = fn;
  m->local_arg = arg;
  return m;
}

int
MQT_Inject(MQT_Client *m, const void *payload, size_t n, const char *name, int v5)
{
  if (m->busy)
    return -1;
  memset(&m->cur, 0, sizeof m->cur);
  m->cur.v5 = v5;
  if (name)
    UTL_Strlcpy(m->cur.name, name, sizeof m->cur.name);
  if (n > MQT_CMD_MAX) {
    m->cur.oversized = 1;
  } else {
    m->cur.payload = malloc(n + 1);
    if (!m->cur.payload)
      return -1;
    if (n > 0)
      memcpy(m->cur.payload, payload, n);
    m->cur.payload[n] = '\0';
    m->cur.len = n;
  }
  start_command(m);
  return 0;
}

void
MQT_Destroy(MQT_Client *m, int offline, double wait_s)
{
  MQT_Shared *sh;

  if (!m)
    return;
  sh = m->sh;
  pthread_mutex_lock(&sh->mu);
  sh->stop = 1;
  sh->offline = offline;
  if (sh->cmd_ev)
    event_free(sh->cmd_ev);
  sh->cmd_ev = NULL;
  if (sh->wake_fd >= 0)
    wake(sh);
  if (wait_s > 0) {
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)wait_s;
    until.tv_nsec += (long)((wait_s - floor(wait_s)) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (!sh->finished)
      if (pthread_cond_timedwait(&sh->cv, &sh->mu, &until) != 0)
        break;
  }
  pthread_mutex_unlock(&sh->mu);
  if (m->conn)
    SRV_VirtualFree(m->conn);
  incoming_clear(&m->cur);
  evbuffer_free(m->reply);
  free(m->last_reading);
  free(m->rview);
  free(m);
  shared_unref(sh);
}

int
MQT_SameConnection(const CNF_Mqtt *a, const CNF_Mqtt *b)
{
  return a->present == b->present && strcmp(a->url, b->url) == 0 &&
         strcmp(a->instance, b->instance) == 0 && strcmp(a->username, b->username) == 0 &&
         strcmp(a->password, b->password) == 0 && strcmp(a->cafile, b->cafile) == 0 &&
         a->commands == b->commands && a->keepalive_s == b->keepalive_s &&
         a->queue == b->queue && a->protocol == b->protocol && a->remote == b->remote;
}

static int
same_state(const MQT_LaserState *a, const MQT_LaserState *b)
{
  return strcmp(a->name, b->name) == 0 && a->state == b->state &&
         a->setpoint_thz == b->setpoint_thz && a->min_thz == b->min_thz &&
         a->max_thz == b->max_thz && a->piezo_min_v == b->piezo_min_v &&
         a->piezo_max_v == b->piezo_max_v && a->has_current == b->has_current &&
         a->current_min_v == b->current_min_v && a->current_max_v == b->current_max_v &&
         a->autolock == b->autolock && strcmp(a->railed, b->railed) == 0 &&
         strcmp(a->owner, b->owner) == 0;
}

static Entry *
find_entry(MQT_Shared *sh, const char *name)
{
  for (int i = 0; i < sh->n_table; i++)
    if (strcmp(sh->table[i].st.name, name) == 0)
      return &sh->table[i];
  return NULL;
}

void
MQT_SetState(MQT_Client *m, const MQT_LaserState *st)
{
  MQT_Shared *sh = m->sh;
  Entry *e;

  /* The loop never waits for the MQTT thread (which may be preempted while
     it holds mu: it runs at a lower priority); a state not recorded now is
     recorded by the next call, at the latest by the once-a-second pass. */
  if (pthread_mutex_trylock(&sh->mu) != 0)
    return;
  e = find_entry(sh, st->name);
  if (e && !e->removed && same_state(&e->st, st)) {
    pthread_mutex_unlock(&sh->mu);
    return;
  }
  if (!e) {
    if (sh->n_table >= sh->cap_table) {
      int nc = sh->cap_table ? sh->cap_table * 2 : 16;
      Entry *t = realloc(sh->table, (size_t)nc * sizeof *t);

      if (!t) {
        pthread_mutex_unlock(&sh->mu);
        return;
      }
      sh->table = t;
      sh->cap_table = nc;
    }
    e = &sh->table[sh->n_table++];
  }
  memset(e, 0, sizeof *e);
  e->st = *st;
  e->dirty = 1;
  e->t = now_unix();
  if (sh->sleeping) {
    sh->sleeping = 0;
    wake(sh);
  }
  pthread_mutex_unlock(&sh->mu);
}

void
MQT_RemoveLaser(MQT_Client *m, const char *name)
{
  MQT_Shared *sh = m->sh;
  Entry *e;

  pthread_mutex_lock(&sh->mu);
  e = find_entry(sh, name);
  if (e) {
    e->removed = 1;
    e->dirty = 1;
    if (sh->sleeping) {
      sh->sleeping = 0;
      wake(sh);
    }
  }
  pthread_mutex_unlock(&sh->mu);
}

void
MQT_ResetLasers(MQT_Client *m)
{
  free(m->last_reading);
  m->last_reading = NULL;
  m->n_last = 0;
}

void
MQT_PublishReading(MQT_Client *m, int index, const char *name, const MQT_Reading *r)
{
  MQT_Shared *sh = m->sh;
  Item it;

  if (sh->cfg.reading_interval_ms > 0 && index >= 0) {
    double now = now_mono();

    if (index >= m->n_last) {
      double *t = realloc(m->last_reading, (size_t)(index + 1) * sizeof *t);

      if (!t)
        return;
      for (int i = m->n_last; i <= index; i++)
        t[i] = -1e9;
      m->last_reading = t;
      m->n_last = index + 1;
    }
    if (now - m->last_reading[index] < sh->cfg.reading_interval_ms * 1e-3)
      return;
    m->last_reading[index] = now;
  }
  it.kind = ITEM_READING;
  UTL_Strlcpy(it.laser, name, sizeof it.laser);
  it.r = *r;
  it.topic = it.payload = NULL;
  it.corr = NULL;
  it.len = 0;
  it.corr_len = 0;
  if (pthread_mutex_trylock(&sh->mu) != 0) {
    /* The thread holds it (perhaps preempted): drop rather than wait. */
    __atomic_add_fetch(&sh->busy_drops, 1, __ATOMIC_RELAXED);
    return;
  }
  if (sh->link != LINK_UP)
    sh->st.dropped++;          /* not kept for later: it would be stale */
  else
    push_item(sh, &it);
  pthread_mutex_unlock(&sh->mu);
}

void
MQT_GetStats(MQT_Client *m, MQT_Stats *st)
{
  MQT_Shared *sh = m->sh;

  pthread_mutex_lock(&sh->mu);
  *st = sh->st;
  st->dropped += __atomic_load_n(&sh->busy_drops, __ATOMIC_RELAXED);
  st->queued = (unsigned long)sh->count;
  st->link = sh->link == LINK_UP ? "up" : sh->link == LINK_CONNECTING ? "connecting" : "down";
  st->protocol = sh->link == LINK_UP ? sh->protocol : 0;
  pthread_mutex_unlock(&sh->mu);
}

/* ------------------------------------------------------------------------ */
/* The other instances, on the loop */

static int
r_cmp(const void *pa, const void *pb)
{
  const RLaser *a = pa, *b = pb;
  int c = strcmp(a->instance, b->instance);

  return c ? c : strcmp(a->name, b->name);
}

static int
r_inst_cmp(const void *pa, const void *pb)
{
  return strcmp(((const RInst *)pa)->name, ((const RInst *)pb)->name);
}

static void
r_num(json_t *o, const char *key, double v)
{
  json_object_set_new(o, key, isfinite(v) ? json_real(v) : json_null());
}

void
MQT_AddRemote(MQT_Client *m, json_t *o)
{
  MQT_Shared *sh = m->sh;
  Remote *r = m->rview;
  json_t *arr, *info;
  int j = 0;

  if (!r || !o)
    return;
  if (pthread_mutex_trylock(&sh->mu) == 0) {
    m->rlink = sh->link;
    if (sh->remote->gen != m->rgen) {
      m->rgen = sh->remote->gen;
      r->n_inst = sh->remote->n_inst;
      r->n_las = sh->remote->n_las;
      memcpy(r->inst, sh->remote->inst, (size_t)r->n_inst * sizeof r->inst[0]);
      memcpy(r->las, sh->remote->las, (size_t)r->n_las * sizeof r->las[0]);
    }
    r->messages = sh->remote->messages;
    r->malformed = sh->remote->malformed;
    r->overflow = sh->remote->overflow;
    pthread_mutex_unlock(&sh->mu);
    qsort(r->inst, (size_t)r->n_inst, sizeof r->inst[0], r_inst_cmp);
    qsort(r->las, (size_t)r->n_las, sizeof r->las[0], r_cmp);
  }
  arr = json_array();
  info = json_object();
  if (!arr || !info) {
    json_decref(arr);
    json_decref(info);
    return;
  }
  for (int i = 0; i < r->n_inst; i++) {
    const RInst *x = &r->inst[i];
    json_t *io = json_object(), *ls = json_array();
    int locked = 0, n = 0;

    if (!io || !ls) {
      json_decref(io);
      json_decref(ls);
      break;
    }
    /* r->las is sorted by instance as r->inst is: walk both together. */
    while (j < r->n_las && strcmp(r->las[j].instance, x->name) < 0)
      j++;
    for (; j < r->n_las && strcmp(r->las[j].instance, x->name) == 0; j++) {
      const RLaser *l = &r->las[j];
      json_t *lo = json_object();

      if (!lo)
        continue;
      json_object_set_new(lo, "name", json_string(l->name));
      json_object_set_new(lo, "state", json_string(l->state));
      r_num(lo, "setpoint_thz", l->setpoint_thz);
      json_object_set_new(lo, "owner", l->owner[0] ? json_string(l->owner) : json_null());
      json_object_set_new(lo, "railed", json_string(l->railed[0] ? l->railed : "none"));
      if (l->autolock >= 0)
        json_object_set_new(lo, "autolock", json_boolean(l->autolock));
      r_num(lo, "t", l->t);
      json_array_append_new(ls, lo);
      locked += strcmp(l->state, "locked") == 0;
      n++;
    }
    json_object_set_new(io, "instance", json_string(x->name));
    json_object_set_new(io, "status", json_string(x->status == R_ONLINE ? "online" :
                                                  x->status == R_OFFLINE ? "offline" : "unknown"));
    json_object_set_new(io, "count", json_integer(n));
    json_object_set_new(io, "locked", json_integer(locked));
    json_object_set_new(io, "lasers", ls);
    json_array_append_new(arr, io);
  }
  json_object_set_new(info, "link", json_string(m->rlink == LINK_UP ? "up" :
                                                m->rlink == LINK_CONNECTING ? "connecting" :
                                                "down"));
  json_object_set_new(info, "messages", json_integer((json_int_t)r->messages));
  json_object_set_new(info, "malformed", json_integer((json_int_t)r->malformed));
  json_object_set_new(info, "overflow", json_integer((json_int_t)r->overflow));
  json_object_set_new(o, "remote", arr);
  json_object_set_new(o, "remote_info", info);
}
