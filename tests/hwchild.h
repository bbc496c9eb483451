/* hwchild.h - helper processes for the hardware tests: start a test double
 * (fault_server, stream_pub.py) with pipes on its stdin and stdout, send it
 * commands, read its answers, stop it by PID. */
#ifndef WL_HWCHILD_H
#define WL_HWCHILD_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
  pid_t pid;
  int in_fd;              /* child's stdin */
  int out_fd;             /* child's stdout */
  char buf[16384];
  size_t len;
} HWT_Child;

/* Start argv[0] with piped stdin/stdout (stderr inherited); 0 or -1. */
int HWT_Spawn(HWT_Child *c, char *const argv[]);

/* Read one line of the child's output (no newline) within timeout_s;
   0, or -1 on timeout or end of output. */
int HWT_ReadLine(HWT_Child *c, char *line, size_t len, double timeout_s);

/* Send a command line and wait for the answer, the next line starting with
   "ok" or "err" (other lines are skipped).  0 for "ok", -1 otherwise; the
   answer is copied to reply if not NULL. */
int HWT_Command(HWT_Child *c, const char *cmd, char *reply, size_t len, double timeout_s);

/* Stop the child: SIGTERM, SIGKILL after 5 s; returns its wait status. */
int HWT_Stop(HWT_Child *c);

/* Path of a file in the build tree (WL_BUILDDIR or the configured one). */
const char *HWT_BuildPath(const char *rel, char *buf, size_t len);

/* Path of a file in the source tree (WL_SRCDIR or the configured one). */
const char *HWT_SrcPath(const char *rel, char *buf, size_t len);

#endif
