/* http.h - the HTTP face of wavelockd (DESIGN.md section 9): the dashboard
 * page, /api/status, /api/events (server-sent events), the control
 * endpoints and /metrics, served by libevent's evhttp on the daemon's own
 * event loop (no thread of its own).
 *
 * Authentication follows the text protocol: without server.tokens every
 * request may read and change (the listen addresses are then loopback
 * only, and the Host header must name a loopback address, against DNS
 * rebinding); with tokens, reads need a monitor token and changes a
 * control token, sent as "Authorization: Bearer <token>" or traded for an
 * HttpOnly, SameSite=Strict session cookie (POST /api/session).  Requests
 * that change something must carry "Content-Type: application/json" and,
 * when they carry an Origin (or Sec-Fetch-Site), come from the page's own
 * origin, so a page of another site cannot make a browser send them.
 * Control requests run the text protocol's command (SRV_Exec): roles,
 * ranges and checks stay in one place.
 */
#ifndef WL_HTTP_H
#define WL_HTTP_H

#include <stddef.h>

#include "conf.h"

struct event_base;
struct CTL_Laser;
typedef struct HTP_Server HTP_Server;

/* Limits of one request (evhttp refuses bigger ones with 4xx). */
#define HTP_MAX_HEADERS 8192
#define HTP_MAX_BODY 4096
/* An event-stream reader's output buffered in the daemon: events to a
   reader over HTP_EVENTS_MAX are dropped and counted; once it has drained
   below HTP_EVENTS_LOW it gets "event: dropped" with the count.  A reader
   whose output makes no progress for HTP_STALL_S is closed. */
#define HTP_EVENTS_MAX (64 * 1024)
#define HTP_EVENTS_LOW (16 * 1024)
#define HTP_STALL_S 30
/* Browser sessions at once (the oldest goes first). */
#define HTP_MAX_SESSIONS 64

/* ---- routing and request bodies (pure; fuzzed) ---- */

typedef enum {
  HTP_R_PAGE = 1,        /* GET / */
  HTP_R_STATUS,          /* GET /api/status */
  HTP_R_EVENTS,          /* GET /api/events */
  HTP_R_METRICS,         /* GET /metrics */
  HTP_R_SESSION,         /* POST, DELETE /api/session */
  HTP_R_ACTION,          /* POST /api/lasers/<name>/<lock|unlock|hold|resume> */
  HTP_R_SETPOINT         /* PUT /api/lasers/<name>/setpoint */
} HTP_RouteId;

/* Methods (the values of evhttp's EVHTTP_REQ_*). */
#define HTP_GET 1
#define HTP_POST 2
#define HTP_HEAD 4
#define HTP_PUT 8
#define HTP_DELETE 16

typedef struct {
  HTP_RouteId id;
  char laser[CNF_NAME_MAX];   /* ACTION, SETPOINT */
  char action[8];             /* ACTION: lock, unlock, hold or resume */
} HTP_Route;

/* Route a request path (without the query; percent-encoded as received).
   200 with r filled, 404 for an unknown path (traversal and encoded
   slashes included), 405 for a known path with another method, 400 for a
   malformed path. */
int HTP_Match(int method, const char *path, HTP_Route *r);

/* The text-protocol arguments of a setpoint body {"value": 384.23,
   "unit": "THz"} (value: a number, or a string such as "+50" for a relative
   change; unit optional, default THz).  0 with value and unit filled
   (plain words, safe for a request line), or -1 with the reason. */
int HTP_ParseSetpoint(const char *body, size_t len, char *value, size_t vlen, char *unit,
                      size_t ulen, char *err, size_t errlen);

/* The token of a session body {"token": "..."}: 0, or -1 with the reason. */
int HTP_ParseToken(const char *body, size_t len, char *token, size_t tlen, char *err,
                   size_t errlen);

/* ---- the server ---- */

/* Create the server of cfg->http on base for the daemon d (a WLD_Daemon *)
   and bind every listen address.  NULL with the reason in err on failure;
   NULL with err "" when HTTP is off. */
HTP_Server *HTP_Create(struct event_base *base, const CNF_Config *cfg, void *d, char *err,
                       size_t errlen);

/* Port bound by listen address i (-1 if none). */
int HTP_BoundPort(const HTP_Server *s, int i);

/* The listen addresses in force (as configured at start), i < count. */
int HTP_ListenCount(const HTP_Server *s);
const char *HTP_ListenAddress(const HTP_Server *s, int i);

/* A reloaded config: tokens, roles and limits apply now (sessions whose
   token is gone end); returns 1 if http.listen changed, which takes effect
   at the next restart (the caller says so). */
int HTP_Reconfigure(HTP_Server *s, const CNF_Config *cfg);

/* A laser's reading, or state change: an event for the event-stream
   readers (sent from the loop right after the reading's cycle has been
   started, so readers never delay a write). */
void HTP_OnReading(HTP_Server *s, const struct CTL_Laser *l, double t);
void HTP_OnState(HTP_Server *s, const struct CTL_Laser *l, int from, double t);

typedef struct {
  int readers;                  /* /api/events streams now */
  unsigned long requests;       /* requests served, total */
  unsigned long events_dropped; /* events dropped for slow readers, total */
  unsigned long readers_closed; /* readers closed for making no progress */
} HTP_Stats;
void HTP_GetStats(const HTP_Server *s, HTP_Stats *st);

/* Close every connection and free (NULL is fine). */
void HTP_Destroy(HTP_Server *s);

/* The dashboard page (www/index.html, compiled in). */
extern const char HTP_Page[];

#endif
