/* mqtt.h - publishing to and taking commands from an MQTT broker
 * (DESIGN.md section 10), through libmosquitto.
 *
 * libmosquitto runs on a thread of its own (connect, TLS, reads, writes,
 * keepalive, reconnect with back-off and jitter), so a slow, absent or
 * stalled broker never delays the event loop.  The loop hands it readings
 * through a bounded queue (a full queue drops and counts), laser states
 * through a table of the latest state per laser (never dropped: republished
 * retained after every reconnect), and command replies.  Commands arriving
 * on wavelock/<instance>/cmd come back to the loop, where they run through
 * the text protocol's own parser and checks on a virtual connection
 * (srv.h) with role control.  JSON payloads are made with jansson on the
 * MQTT thread.
 */
#ifndef WL_MQTT_H
#define WL_MQTT_H

#include <stddef.h>
#include "conf.h"
#include "srv.h"

struct event_base;

/* Largest command payload taken (bigger: ERR 413 reply, nothing runs), and
   most request lines in one payload. */
#define MQT_CMD_MAX 4096
#define MQT_CMD_LINES 16
/* Commands waiting for the loop; more are dropped and counted. */
#define MQT_CMD_QUEUE 64
/* The largest packet the broker may send us (MQTT v5 property). */
#define MQT_MAX_PACKET (256 * 1024)
/* Readings are handed to the broker connection in batches this often (ms). */
#define MQT_BATCH_MS 20
/* The MQTT thread's nice value (Linux: per thread), below the lasers'. */
#define MQT_NICE 10
/* Reconnect back-off: first delay and cap (seconds), +-25 % jitter. */
#define MQT_BACKOFF_MIN_S 0.5
#define MQT_BACKOFF_MAX_S 30.0

/* The other instances (mqtt.remote): what the daemon keeps of their
   retained wavelock/+/status and wavelock/+/laser/+/state, bounded;
   entries past these counts, and state payloads over MQT_REMOTE_PAYLOAD
   bytes or not the expected JSON, are ignored and counted. */
#define MQT_REMOTE_INSTANCES 32
#define MQT_REMOTE_LASERS 512
#define MQT_REMOTE_PAYLOAD 4096

typedef struct MQT_Client MQT_Client;

/* What wavelock/<instance>/laser/<name>/state says (retained). */
typedef struct {
  char name[CNF_NAME_MAX];
  const char *state;          /* LSR_StateName (static) */
  double setpoint_thz, min_thz, max_thz;
  double piezo_min_v, piezo_max_v;
  int has_current;
  double current_min_v, current_max_v;
  int autolock;
  char railed[48];            /* LSR_RailName */
  char owner[96];             /* its claim's owner, "" unclaimed (DESIGN.md section 8) */
} MQT_LaserState;

/* One reading (wavelock/<instance>/laser/<name>/reading). */
typedef struct {
  double t;                   /* Unix time, s */
  int valid;                  /* freq_thz and error_mhz hold a reading */
  double freq_thz, error_mhz;
  const char *wm_status;      /* static: why not valid */
  double piezo_v;
  int has_current;
  double current_v;
  const char *state;          /* static */
} MQT_Reading;

typedef struct {
  int enabled;
  const char *link;           /* "up", "connecting", "down" */
  int protocol;               /* 5 or 4 (3.1.1) while up; 0 otherwise */
  unsigned long published;    /* messages handed to the broker connection */
  unsigned long dropped;      /* readings and replies not sent (queue full, broker down) */
  unsigned long queued, queue_peak, queue_max;
  unsigned long connects;     /* successful connections (CONNACK) */
  unsigned long republished;  /* retained states sent again after a reconnect */
  unsigned long commands;     /* command messages run */
  unsigned long commands_dropped; /* command messages dropped (loop queue full) */
} MQT_Stats;

/* Start: connects in the background (never waits here).  srv runs the
   commands; cfg is copied.  NULL with the reason in err. */
MQT_Client *MQT_Create(struct event_base *base, const CNF_Mqtt *cfg, SRV_Server *srv,
                       char *err, size_t errlen);

/* Stop.  offline: publish status "offline" (retained) before disconnecting.
   Waits up to wait_s for that (0: not at all; the thread finishes alone). */
void MQT_Destroy(MQT_Client *m, int offline, double wait_s);

/* Whether two mqtt groups need a new connection to go from a to b. */
int MQT_SameConnection(const CNF_Mqtt *a, const CNF_Mqtt *b);

/* Loop thread.  Record a laser's state; published (retained) if it differs
   from what was published last.  Never waits for the MQTT thread: when that
   holds the shared lock the state is recorded by the next call (the daemon
   calls for every laser once a second). */
void MQT_SetState(MQT_Client *m, const MQT_LaserState *st);

/* Loop thread.  A laser is gone (reload): its retained state is cleared. */
void MQT_RemoveLaser(MQT_Client *m, const char *name);

/* Loop thread.  Publish a reading of laser index (for thinning; reset with
   MQT_ResetLasers after a reload).  Never waits: dropped and counted when
   the queue is full, the broker away or the MQTT thread holds the lock. */
void MQT_PublishReading(MQT_Client *m, int index, const char *name, const MQT_Reading *r);
void MQT_ResetLasers(MQT_Client *m);

/* Loop thread: counters. */
void MQT_GetStats(MQT_Client *m, MQT_Stats *st);

/* Loop thread.  With mqtt.remote, set "remote" on o (a jansson object):
   [{"instance", "status": "online"|"offline"|"unknown", "lasers": [{"name",
   "state", "setpoint_thz", "owner", "railed", "autolock", "t"}], ...}]
   sorted by instance and laser name, and "remote_info" {"link", "messages",
   "malformed", "overflow"}.  Never waits for the MQTT thread: when that
   holds the shared lock the previous copy is shown. */
struct json_t;
void MQT_AddRemote(MQT_Client *m, struct json_t *o);

/* Without a broker (tests, fuzzing): command payloads given to MQT_Inject
   run as if they came on .../cmd, and the reply text goes to fn (loop
   thread; for a deferred command later).  MQT_Inject: 0, or -1 while the
   previous one has not been answered.  Free with MQT_Destroy. */
typedef void (*MQT_ReplyFn)(const char *reply, size_t len, void *arg);
MQT_Client *MQT_CreateLocal(SRV_Server *srv, const char *instance, MQT_ReplyFn fn, void *arg);
int MQT_Inject(MQT_Client *m, const void *payload, size_t n, const char *name, int v5);

/* Pure helpers (fuzzed, unit-tested).  Split a command payload into lines
   (LF or CRLF, empty lines skipped): up to max (start, length) pairs; the
   count, or -1 if there are more. */
int MQT_SplitLines(const char *p, size_t n, const char **line, size_t *len, int max);

/* Whether a line is "iam <name>": copies name (at most namelen - 1 chars)
   and returns 1; 0 otherwise; -1 for an iam line without a usable name. */
int MQT_ParseIam(const char *line, size_t n, char *name, size_t namelen);

/* The kind of a topic for the other instances' view: 1 for
   wavelock/<inst>/status, 2 for wavelock/<inst>/laser/<name>/state (inst and
   name filled, CNF_NAME_MAX bytes each), 0 for any other topic, -1 for one of
   these whose instance or laser name is unusable (empty, too long, not
   printable ASCII). */
int MQT_RemoteTopic(const char *topic, char *inst, char *name);

#endif
