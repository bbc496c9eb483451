/* clt.h - the bundled client `wavelock`: connection and output helpers.
 *
 * CLT_ functions in src/client_net.c talk to wavelockd over the text protocol
 * (DESIGN.md section 3) with plain sockets and poll(); those in
 * src/client_fmt.c are pure (no I/O besides writing to a FILE) and are
 * unit-tested: key=value parsing, line classification, command splitting,
 * aligned tables and the CSV rows of `wavelock watch --csv`.
 */
#ifndef WL_CLT_H
#define WL_CLT_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

/* Exit statuses of wavelock(1); the scripts pass them on. */
#define CLT_EXIT_OK 0          /* every command answered OK */
#define CLT_EXIT_ERR 1         /* an ERR reply (or a local failure) */
#define CLT_EXIT_USAGE 2       /* bad command line */
#define CLT_EXIT_CONN 3        /* daemon unreachable, timed out or connection lost */
#define CLT_EXIT_WAIT 4        /* `wait` timed out */

#define CLT_LINE_MAX 65536     /* longest line accepted from the daemon */
#define CLT_REQUEST_MAX 1024   /* longest request line (protocol limit) */

/* ---- pure helpers (client_fmt.c) ---------------------------------------- */

/* Kind of a line received from the daemon. */
typedef enum {
  CLT_LINE_DATA = 0,           /* a data line */
  CLT_LINE_OK,                 /* "OK" or "OK <text>" */
  CLT_LINE_ERR,                /* "ERR <code> <message>" */
  CLT_LINE_EVENT               /* "* ..." (greeting or asynchronous event) */
} CLT_LineKind;

/* Classify a line (without its newline). */
CLT_LineKind CLT_Classify(const char *line);

/* One word of a line: key=value (key and value set), or a bare word (key NULL). */
typedef struct {
  const char *key;
  const char *value;
} CLT_Kv;

/* Split line in place into words on spaces/tabs and each word at its first
   '='; at most max words are kept.  Returns the number of words. */
int CLT_SplitKv(char *line, CLT_Kv *kv, int max);

/* Value of key among n words, NULL if absent. */
const char *CLT_KvGet(const CLT_Kv *kv, int n, const char *key);

/* Whether every word of the n is key=value with a non-empty key (n > 0). */
int CLT_AllKv(const CLT_Kv *kv, int n);

/* Strict number parsing of a whole word; 0 on success, -1 otherwise. */
int CLT_ParseSeconds(const char *s, double *out);   /* >= 0, finite */
int CLT_ParsePort(const char *s, int *port);        /* 1..65535 */
int CLT_ParseCount(const char *s, long *out);       /* 1..LONG_MAX */

/* Split a -m argument into command lines at ';' and newlines; leading and
   trailing blanks are trimmed and empty pieces skipped.  The pieces are
   written into text (modified in place) and pointed to from cmds (at most
   max).  Returns the count, or -1 if there are more than max. */
int CLT_SplitCommands(char *text, char **cmds, int max);

/* Aligned table of key=value data lines, for people at a terminal. */
typedef struct CLT_Table CLT_Table;

/* New empty table; NULL when out of memory. */
CLT_Table *CLT_TableNew(void);

/* Add one data line.  Returns 1 if it was key=value only (kept), 0 if not
   (the table can then not be used: print the lines plainly), -1 on memory
   exhaustion. */
int CLT_TableAdd(CLT_Table *t, const char *line);

/* Number of rows added. */
int CLT_TableRows(const CLT_Table *t);

/* Print a header of the keys (in order of first appearance) and one aligned
   row per line; missing values print as "-", numeric columns are
   right-aligned. */
void CLT_TablePrint(const CLT_Table *t, FILE *out);

/* Free a table (NULL is fine). */
void CLT_TableFree(CLT_Table *t);

/* `watch --csv`: turns event lines into CSV rows, remembering each laser's
   last state from state events for readings that carry none. */
typedef struct CLT_Csv CLT_Csv;

/* New converter; NULL when out of memory. */
CLT_Csv *CLT_CsvNew(void);

/* The header line (without newline). */
const char *CLT_CsvHeader(void);

/* Feed one event line (with or without the leading "* ").  A reading is an
   event whose first word is "reading", or that has no type word but a
   freq_thz= key; either way it needs laser= (or name=).  If it is a
   reading, writes one CSV row (with newline) to out (unless out is NULL)
   and returns 1; returns 0
   for other events (a state event updates the remembered state), -1 on
   memory exhaustion.  now_unix is used as the time when the event has no
   t=/time=/ts= key.  Missing values and "none" give empty fields. */
int CLT_CsvEvent(CLT_Csv *c, const char *event, double now_unix, FILE *out);

/* Free a converter (NULL is fine). */
void CLT_CsvFree(CLT_Csv *c);

/* ---- connection (client_net.c) ------------------------------------------ */

typedef struct {
  int fd;
  char buf[CLT_LINE_MAX];
  size_t len;                  /* bytes buffered in buf */
  char peer[300];              /* "host:port", for messages */
} CLT_Conn;

/* Result of a read. */
typedef enum {
  CLT_READ_LINE = 0,           /* a line was read */
  CLT_READ_TIMEOUT,            /* the deadline passed */
  CLT_READ_CLOSED,             /* connection closed or failed (message in err) */
  CLT_READ_INTR                /* *stop was set (signal) */
} CLT_ReadResult;

/* Connect to host:port, trying every address, giving up at deadline
   (monotonic seconds, UTL_Now(); < 0 none).  0, or -1 with a message. */
int CLT_Connect(CLT_Conn *c, const char *host, int port, double deadline,
                char *err, size_t errlen);

/* Send line plus "\n".  0, or -1 with a message. */
int CLT_Send(CLT_Conn *c, const char *line, double deadline, char *err, size_t errlen);

/* Read one line (newline and CR removed) into line.  stop, when not NULL, is
   polled so a signal handler can end a blocking read. */
CLT_ReadResult CLT_ReadLine(CLT_Conn *c, char *line, size_t size, double deadline,
                            volatile sig_atomic_t *stop, char *err, size_t errlen);

/* Close the connection. */
void CLT_Close(CLT_Conn *c);

/* `wavelock --mqtt URL lab` (client_mqtt.c): print every instance's
   status and lasers from the broker's retained messages; an exit status. */
int CLT_MqttLab(const char *url, const char *user, const char *password_file,
                const char *cafile, double timeout);

#endif
