/* bg.h - blocking work kept off the event loop.
 *
 * BG_Run runs a function on a helper thread of its own (detached) and then
 * its completion on the loop thread, through one pre-made event.  For the
 * rare jobs that may wait on hardware, a library or the disk (a reload's
 * new wavemeter backend, a `save` waiting for its fsync), so that the loop
 * keeps answering clients and handling readings meanwhile.
 */
#ifndef WL_BG_H
#define WL_BG_H

struct event_base;

typedef struct BG_Ctx BG_Ctx;

/* work runs on the helper thread, done (may be NULL) on the loop thread. */
typedef void (*BG_Fn)(void *arg);

/* Create on base (made after evthread_use_pthreads()).  NULL on error. */
BG_Ctx *BG_Create(struct event_base *base);

/* Run work(arg) on a new thread, then done(arg) on the loop.  0, or -1 with
   errno (the thread could not be started; nothing runs). */
int BG_Run(BG_Ctx *bg, BG_Fn work, BG_Fn done, void *arg);

/* Jobs started and not yet done (their done() not yet run). */
int BG_Busy(BG_Ctx *bg);

/* Wait up to timeout_s for running work, then free: done() runs for no
   job after this, and a job still running after the timeout is abandoned
   (its arg is not freed; the context is kept for its thread).  Loop thread,
   after the loop has stopped. */
void BG_Destroy(BG_Ctx *bg, double timeout_s);

#endif
