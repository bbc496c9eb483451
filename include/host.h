/* host.h - what the command handlers (cmds.c) ask of the daemon that runs
 * them: the operations that belong to wavelockd.c (reload, state-file save,
 * calibration), as a table of functions the daemon sets up (d->host).  The
 * handlers never call into wavelockd.c directly; a test or fuzz harness can
 * give them a host of its own.
 */
#ifndef WL_HOST_H
#define WL_HOST_H

#include <stddef.h>

struct WLD_Daemon;

/* The outcome of a deferred operation: rc 0, or -1 with the reason in err.
   Runs on the loop thread, exactly once, possibly before the operation's
   start function returns. */
typedef void (*WLD_Done)(int rc, const char *err, void *arg);
typedef WLD_Done WLD_ReloadDone;

typedef struct WLD_Host {
  /* Re-read the config file and apply it (the old config stays on
     failure).  The loop never waits.  A reload asked for while one is in
     progress fails with "a reload is in progress". */
  void (*reload)(struct WLD_Daemon *d, WLD_Done done, void *arg);
  /* Write the state file; done once it is on disk (or failed). */
  void (*save)(struct WLD_Daemon *d, WLD_Done done, void *arg);
  /* Ask for a state-file write soon (debounced). */
  void (*schedule_save)(struct WLD_Daemon *d);
  /* Start a wlmdata Calibration(); done(rc, message, arg) when finished.
     -1 with an answer code and the reason in err when it cannot start. */
  int (*calibrate)(struct WLD_Daemon *d, WLD_Done done, void *arg, int *code, char *err,
                   size_t errlen);
  /* Whether a calibration correction applies to channel's readings now. */
  int (*cal_applies)(const struct WLD_Daemon *d, int channel);
} WLD_Host;

#endif
