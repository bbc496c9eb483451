/* mbdev.h - Modbus analog-output devices, each driven by its own thread.
 *
 * A TCP device owns one libmodbus context, used only by the device's thread
 * (a context is not thread-safe).  RTU devices on the same serial port (one
 * RS-485 bus, different unit ids) share one context, used by their threads
 * one request at a time under a mutex, since the wire carries one request
 * at a time anyway; they must use the same line settings (else MB_Create
 * fails with EINVAL).  Other threads hand a device jobs; a job runs on the
 * device thread and writes registers through the MB_Io it is given.  Jobs run
 * in order.  A device that times out, answers with an exception or drops its
 * connection is marked down; while down, MB_Write fails at once (ENOTCONN) and
 * the thread reconnects with capped exponential back-off plus jitter, probing
 * with a read of probe_reg (a holding or an input register, or no read at
 * all for a write-only module: then it is up once connected, and a failed
 * write marks it down), and reports every up/down change through the
 * status callback.  libmodbus's own link recovery stays off.
 */
#ifndef WL_MBDEV_H
#define WL_MBDEV_H

#include <stdint.h>
#include "conf.h"

typedef struct MB_Device MB_Device;
typedef struct MB_Io MB_Io;

/* A job: runs on the device thread; io is valid only during the call. */
typedef void (*MB_JobFn)(MB_Io *io, void *arg);

/* Device went up (up = 1) or down (up = 0); runs on the device thread.
   why is a short reason ("connect: connection refused", "write: timeout",
   ...).  The outcome of the first connection attempt is always reported
   (up or down); after that, every change. */
typedef void (*MB_StatusFn)(MB_Device *dev, int up, const char *why, void *arg);

typedef struct {
  int backoff_min_ms;     /* first retry delay, default 100 */
  int backoff_max_ms;     /* cap, default 5000 */
  int probe_reg;          /* register read to test a device, default 0 */
  CNF_ProbeFn probe_fn;   /* how: FC03 (default), FC04, or no read (up once connected) */
  int combine;            /* MB_WriteLater may join writes of several jobs (default 0) */
} MB_Options;

/* Fill opt with the defaults above. */
void MB_DefaultOptions(MB_Options *opt);

/* Create a device (no I/O yet); opt may be NULL for the defaults, values
   <= 0 (probe_reg < 0) also mean the default.  NULL on error with errno set
   (EINVAL for a bad URL or unit, ENOMEM). */
MB_Device *MB_Create(const CNF_Device *cfg, const MB_Options *opt,
                     MB_StatusFn status, void *status_arg);

/* Start the device thread, which connects in the background. 0 or -1. */
int MB_Start(MB_Device *dev);

/* Queue a job; thread-safe; never blocks on I/O.  0, or -1 if stopping
   (errno ESHUTDOWN) or out of memory.  Every accepted job runs exactly once,
   even if the device is stopped before it was started. */
int MB_Submit(MB_Device *dev, MB_JobFn fn, void *arg);

/* Write n (1..32) holding registers from addr: function 06 for one register,
   16 for more.  Only from inside a job.  0 on success, -1 with errno
   (ETIMEDOUT, ENOTCONN, EMBXxxx exception...) on failure, which marks the
   device down. */
int MB_Write(MB_Io *io, int addr, const uint16_t *regs, int n);

/* Maximum number of registers one write carries. */
#define MB_MAX_WRITE 32

/* Fill a write at the last moment: called by MB_WriteGated on the device
   thread once the link is taken (on a shared RS-485 bus: after the wait
   for the bus), right before the request goes out.  Sets *addr and
   regs[0..n-1]; returns n (1..MB_MAX_WRITE), or -1 to send nothing. */
typedef int (*MB_FillFn)(void *arg, int *addr, uint16_t regs[MB_MAX_WRITE]);

/* MB_Write with the registers decided by fill at the wire, so a limit or
   register that changed while the job waited for the device or the bus is
   honoured.  0 on success; -1 with errno ECANCELED (fill refused: nothing
   sent, the device stays up) or as MB_Write. */
int MB_WriteGated(MB_Io *io, MB_FillFn fill, void *arg);

/* After a write made with MB_WriteLater: rc 0 when acknowledged, or -1
   with err as MB_WriteGated's errno.  Runs on the device thread, once. */
typedef void (*MB_DoneFn)(MB_Io *io, void *arg, int rc, int err);

/* Most writes one combined request carries, and most registers (function
   16 allows 123). */
#define MB_MAX_BATCH 64
#define MB_MAX_RUN 123

/* MB_WriteGated whose request may carry other jobs' writes too: without
   the combine option, the same as MB_WriteGated followed by done.  With
   it, the write waits while further jobs are queued on the device (their
   writes join it) and goes out when none is left, the batch is full, or a
   job does other I/O.  Then each write's fill runs, in order, right before
   the request that carries it goes out; writes whose registers follow one
   another (the next one's first register right after the previous one's
   last) share one function-16 request of at most MB_MAX_RUN registers, a
   write that does not follow starts the next request (its fill runs again
   then), and a refused fill (ECANCELED) sends nothing of that write.  A
   failed request fails every write it carries and the writes after it
   (ENOTCONN: the device is down); but a combined request the module
   answers with exception 1, 2 or 3 (it does not take function 16 over
   those registers) turns combining off for the device, with a log line,
   and its writes go out again one request each.  While the device is
   down the write is made at once (and fails at once).  A job's done comes
   at the latest once the jobs queued behind it have run.  Only from inside
   a job; done is called exactly once (fill NULL: with EINVAL), and after
   it the job's part of the write is over. */
void MB_WriteLater(MB_Io *io, MB_FillFn fill, MB_DoneFn done, void *arg);

/* Read n holding registers (for tests and probes).  Same rules as MB_Write. */
int MB_Read(MB_Io *io, int addr, uint16_t *regs, int n);

/* Read one coil (coil = 1, function 01) or discrete input (coil = 0,
   function 02) at addr into *bit (0 or 1).  Same rules as MB_Read. */
int MB_ReadBit(MB_Io *io, int addr, int coil, int *bit);

/* A poll: fn runs on the device thread about every interval_s while the
   device is up and no job waits (jobs go first); interval_s <= 0 or fn
   NULL ends it.  One poll per device; setting it again replaces it.
   Thread-safe. */
void MB_SetPoll(MB_Device *dev, double interval_s, MB_JobFn fn, void *arg);

/* The device an MB_Io belongs to. */
MB_Device *MB_IoDevice(MB_Io *io);

/* Whether the device is up now (thread-safe snapshot). */
int MB_IsUp(const MB_Device *dev);

/* Name from the config. */
const char *MB_Name(const MB_Device *dev);

/* Counters (thread-safe snapshot).  writes: successful writes (MB_Write,
   MB_WriteGated, each write of MB_WriteLater); requests: write requests
   acknowledged (a combined one counts once);
   write_errors: failed ones (including the fast ENOTCONN failures while
   down); reconnects: times the device came back up after having been up
   once; jobs_queued: jobs ever accepted by MB_Submit; pending: jobs waiting
   now (not yet started); jobs_run: jobs finished; downs: up->down changes. */
typedef struct {
  unsigned long writes, write_errors, reconnects, jobs_queued;
  unsigned long pending, jobs_run, downs, requests;
} MB_Stats;
void MB_GetStats(const MB_Device *dev, MB_Stats *st);

/* Stop: the running job finishes, queued jobs still run (with writes failing
   fast if the device is down), then the thread exits.  Waits for the thread. */
void MB_Stop(MB_Device *dev);

/* The same without waiting: tell the thread to stop and return at once;
   MB_Exited says when it has (then MB_Stop returns at once).  For the event
   loop, which must not wait for a request or a connect in progress. */
void MB_RequestStop(MB_Device *dev);
int MB_Exited(MB_Device *dev);

/* Free a stopped device. */
void MB_Destroy(MB_Device *dev);

/* Thread-safe text for a Modbus/system errno. */
const char *MB_StrError(int errnum, char *buf, size_t len);

#endif
