/* srv.h - the line-based text protocol server (DESIGN.md section 3).
 *
 * Runs entirely on the event loop thread.  It owns listeners and client
 * connections: framing (LF or CRLF, 1024-byte lines, 413 and discard up to
 * the next newline), telnet IAC filtering, the greeting, max_clients (429),
 * idle and stalled-line timeouts, authentication and roles, and subscriber
 * output with bounded buffering.  Commands come from a table the daemon
 * supplies; built in are help, ping, auth and quit.
 *
 * A handler answers synchronously: zero or more SRV_Data lines, then exactly
 * one SRV_Ok or SRV_Err (SRV finishes with "ERR 500" if a handler forgot).
 * Events ("* ..." lines) are therefore never written inside a response.  A
 * handler whose answer needs work off the loop (a reload, a save waiting for
 * the disk) defers it with SRV_Defer and finishes later with SRV_Complete;
 * meanwhile that connection's further requests wait (answers stay in order)
 * and its events are held, while every other connection is served.
 */
#ifndef WL_SRV_H
#define WL_SRV_H

#include <stddef.h>
#include "conf.h"

struct event_base;

#define SRV_LINE_MAX 1024

/* Output bounds per connection (bytes buffered in the daemon, not counting
   the kernel's socket buffer).  Events to a subscriber whose output would
   exceed SRV_OUTPUT_MAX are dropped and counted; once its output has drained
   to SRV_OUTPUT_LOW it gets "* dropped n=<count>".  Requests are not read from
   a client whose output is at SRV_OUTPUT_PAUSE or more until it has drained to
   SRV_OUTPUT_LOW (backpressure), so the output of a client that sends but
   never reads stays below SRV_OUTPUT_PAUSE plus one response. */
#define SRV_OUTPUT_MAX (256 * 1024)
#define SRV_OUTPUT_PAUSE (64 * 1024)
#define SRV_OUTPUT_LOW (32 * 1024)
/* Kernel send buffer per client socket (SO_SNDBUF; Linux doubles it). */
#define SRV_SOCKET_SNDBUF (64 * 1024)

/* Failed auth attempts allowed before auth is refused for a while (429);
   the refusal lasts SRV_AUTH_DELAY_S, doubling with each further failure
   up to SRV_AUTH_DELAY_MAX_S. */
#define SRV_AUTH_FREE_TRIES 3
#define SRV_AUTH_DELAY_S 2
#define SRV_AUTH_DELAY_MAX_S 60

typedef struct SRV_Server SRV_Server;
typedef struct SRV_Conn SRV_Conn;
typedef struct SRV_Pending SRV_Pending;

/* argv[0] is the command word as typed; argc >= 1. */
typedef void (*SRV_Handler)(SRV_Conn *c, int argc, char **argv, void *ctx);

typedef struct {
  const char *name;      /* lower case */
  CNF_Role role;         /* least role needed: MONITOR for reading, CONTROL for changing */
  int min_args, max_args;/* arguments after the command word; max -1 = any */
  const char *usage;     /* "setpoint <laser> [<value> [unit]]" */
  const char *help;      /* one line */
  SRV_Handler fn;
} SRV_Command;

/* Create a server on base listening on cfg->listen; commands[0..n-1] is the
   daemon's table (kept by pointer).  NULL with a message in err on failure.
   Built-ins: help, auth and quit always (a table entry of that name is
   ignored with a warning); ping and version unless the table has its own.
   Every listen entry binds each address its host resolves to ("*" or an
   empty host: all); with port 0 they share the first one's port if free. */
SRV_Server *SRV_Create(struct event_base *base, const CNF_Server *cfg,
                       const SRV_Command *commands, int n, void *ctx,
                       char *err, size_t errlen);

/* Port actually bound by listener i (useful with port 0); -1 if none. */
int SRV_BoundPort(const SRV_Server *s, int i);
int SRV_ListenerCount(const SRV_Server *s);

/* Apply a reloaded config: tokens, roles, max_clients, timeouts (listen
   addresses are kept).  Each connection's role is derived again: control
   for all without tokens, else the role of the token it authenticated with
   if that token still exists, else none.  Connections over a lowered
   max_clients stay.  idle_timeout_s closes a connection that sent no line
   for that long (subscribers are exempt while they read) or whose output
   made no progress for that long. */
void SRV_Reconfigure(SRV_Server *s, const CNF_Server *cfg);

/* Stop accepting new connections (shutdown). */
void SRV_StopListening(SRV_Server *s);

/* Close every connection and free (not from inside a handler). */
void SRV_Destroy(SRV_Server *s);

/* Responses; text is printf-formatted and must not contain newlines.
   SRV_Ok(c, NULL) sends a plain "OK" (an empty format string draws
   -Wformat-zero-length).  Control characters are sent as '?'; a data line
   that is empty or would begin with OK, ERR or * is a bug: it is logged and
   sent with "data=" in front.  Calls outside a handler or after its final
   line are logged and dropped. */
void SRV_Data(SRV_Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void SRV_Ok(SRV_Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void SRV_Err(SRV_Conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* SRV_Data of a line already formatted (no printf), len bytes without
   the NUL.  The text must hold no control character: build it from parts
   passed through SRV_Sanitize (and digits). */
void SRV_DataLine(SRV_Conn *c, const char *text, size_t len);

/* Control characters (and DEL) in text to '?', in place: what SRV_Data
   does to every line. */
void SRV_Sanitize(char *text);

/* Inside a handler, before its final line: the answer comes later.  NULL
   (out of memory, or not inside a handler) means answer now. */
SRV_Pending *SRV_Defer(SRV_Conn *c);

/* The connection a deferred answer goes to, or NULL if it has closed
   meanwhile; use SRV_Data/SRV_Ok/SRV_Err on it, then SRV_Complete. */
SRV_Conn *SRV_PendingConn(SRV_Pending *p);

/* Finish a deferred answer (ERR 500 if no final line was sent) and free p;
   the connection's waiting requests run next. */
void SRV_Complete(SRV_Pending *p);

/* The connection's role (NONE before auth when tokens are configured,
   CONTROL when no tokens are configured). */
CNF_Role SRV_Role(const SRV_Conn *c);

/* The peer address of a connection, "127.0.0.1:40312" or "[::1]:40312". */
const char *SRV_Peer(const SRV_Conn *c);

/* The connection's name (DESIGN.md section 8): the one given with iam, or
   "conn<N>@<peer>" (N counts connections since start) until then.
   SRV_Named says whether iam set it; SRV_SetName sets it (the caller
   checks it, see SRV_NAME_MAX). */
#define SRV_NAME_MAX 96
const char *SRV_Name(const SRV_Conn *c);
int SRV_Named(const SRV_Conn *c);
void SRV_SetName(SRV_Conn *c, const char *name);
/* The server a connection belongs to (e.g. to publish from a handler). */
SRV_Server *SRV_ConnServer(const SRV_Conn *c);

/* "any" (NONE), "monitor" or "control". */
const char *SRV_RoleName(CNF_Role role);

/* Subscriptions: a connection subscribes to all lasers (all = 1) or to the
   lasers whose indices are set in mask (0..n-1, copied); subscribing again
   replaces the set.  SRV_Unsubscribe ends it (closing does too). */
void SRV_Subscribe(SRV_Conn *c, int all, const unsigned char *mask, int n);
void SRV_Unsubscribe(SRV_Conn *c);

/* Publish an event line (without the "* " prefix) about laser index laser
   (-1: about no laser, goes to every subscriber).  A subscriber whose output
   buffer is over its bound has the event dropped and counted; when it has
   drained it gets "* dropped n=<count>". */
void SRV_Publish(SRV_Server *s, int laser, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Laser indices changed (reload): map[old] is the new index or -1 for a
   removed laser; subscriptions to chosen lasers follow their lasers. */
void SRV_RemapLasers(SRV_Server *s, const int *map, int n_old, int n_new);

/* Number of connected clients, and of subscribers. */
int SRV_ClientCount(const SRV_Server *s);
int SRV_SubscriberCount(const SRV_Server *s);

typedef struct {
  int clients;                 /* as SRV_ClientCount */
  int subscribers;             /* as SRV_SubscriberCount */
  size_t out_bytes;            /* output buffered now, all connections */
  size_t out_max;              /* largest output buffer of one connection now */
  size_t out_peak;             /* largest ever seen (since create or reset) */
  unsigned long events_dropped;/* events dropped for slow subscribers, total */
  unsigned long rejected;      /* connections refused with 429, total */
} SRV_Stats;

/* Counters and buffer sizes (e.g. for a "server" command or tests); with
   reset_peak the out_peak high-water mark starts again from now. */
void SRV_GetStats(SRV_Server *s, SRV_Stats *st, int reset_peak);

/* Run one request line (split in place) as a client of role role would,
   without a connection: the same table, role checks and handlers as the
   text protocol (for the HTTP control endpoints).  Data lines and the
   final line go to out.  Returns 0 for OK, or the ERR code with its text
   in err (also 404 for a command this server lacks, 401/403 by role, 500
   for a command that answers later).  Loop thread only. */
struct evbuffer;
int SRV_Exec(SRV_Server *s, CNF_Role role, const char *peer, char *line, struct evbuffer *out,
             char *err, size_t errlen);

/* Whether the server has a command of this name (e.g. to offer it). */
int SRV_HasCommand(const SRV_Server *s, const char *name);

/* Virtual connections: command lines run through the same parser, role
   checks and handlers as a socket's, the answer lines collected in memory
   (for MQTT commands).  No subscriptions (subscribe changes nothing); quit
   only answers OK.  done(c, arg) runs on the loop when a deferred answer has
   ended (not for an answer given at once). */
typedef void (*SRV_VirtualDone)(SRV_Conn *c, void *arg);
SRV_Conn *SRV_VirtualNew(SRV_Server *s, CNF_Role role, const char *peer, SRV_VirtualDone done,
                         void *arg);

/* Run one request line of n bytes (no newline): 1 answered, 0 deferred
   (done() follows), -1 a deferred answer is still pending (nothing run).  A
   line over SRV_LINE_MAX gets ERR 413. */
int SRV_VirtualRun(SRV_Conn *c, const char *line, size_t n);

/* Move the collected answer lines into out (NUL-terminated, cut to fit) and
   clear them; returns the bytes copied.  With outlen 0: only the length of
   what is collected (nothing moved). */
size_t SRV_VirtualTake(SRV_Conn *c, char *out, size_t outlen);

/* Free (a pending answer is dropped: done() never runs). */
void SRV_VirtualFree(SRV_Conn *c);


/* Pure helpers (unit-tested): remove telnet IAC sequences from buf in place,
   carrying state across calls in *state (start with 0); returns the new length. */
size_t SRV_StripTelnet(unsigned char *buf, size_t len, int *state);

/* Split a line into words on spaces/tabs in place; at most max words;
   returns the count, or -1 if there are more than max. */
int SRV_Split(char *line, char **argv, int max);

/* Compare two strings in time independent of where they differ. */
int SRV_TokenEqual(const char *a, const char *b);

#endif
