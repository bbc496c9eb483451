/* glitch.h - per-laser glitch rejection of wavemeter readings (pure, no I/O).
 *
 * A single valid reading farther than limit_mhz from the last valid reading
 * let through (the reference) is held back.  The next valid reading decides:
 * within limit_mhz of the held one, the jump is real and both go on, held
 * one first (a real jump, such as a mode hop, reaches the lock state machine
 * one reading late); otherwise the held one is dropped and counted, and the
 * new reading is judged against the reference in its turn.  Without a
 * reference (the first reading, or after GLT_Reset) a reading is held until
 * the next one confirms it, so that no single reading is ever used unchecked,
 * unless the caller gave an expected value (GLT_Expect: the setpoint, where
 * a laser should be) that the reading agrees with.
 * Invalid readings (wavemeter error codes) always go on at once and leave a
 * held reading waiting for the next valid one.  A limit <= 0 turns the filter
 * off: every reading goes on (a held one first).
 */
#ifndef WL_GLITCH_H
#define WL_GLITCH_H

typedef struct {
  int have_ref;              /* a valid reading was let through */
  double ref_mhz;            /* the last valid reading let through */
  int held;                  /* a reading is held back */
  double held_mhz;
  unsigned long glitches;    /* readings dropped */
} GLT_Filter;

/* What GLT_Feed tells the caller to do, in this order. */
enum {
  GLT_USE_HELD = 1,          /* use the held reading (it was confirmed) */
  GLT_DROP_HELD = 2,         /* drop the held reading: a glitch */
  GLT_USE = 4,               /* use this reading */
  GLT_HOLD = 8               /* hold this reading back (keep a copy) */
};

/* A fresh filter: no reference, nothing held, nothing counted. */
void GLT_Init(GLT_Filter *f);

/* Forget the reference and any held reading (the channel changed); the
   count stays. */
void GLT_Reset(GLT_Filter *f);

/* Without a reference, take expect_mhz for one (the next reading within
   the limit of it goes on at once); with one, nothing changes. */
void GLT_Expect(GLT_Filter *f, double expect_mhz);

/* A reading: valid = 0 for an error code (freq_mhz then unused).  Returns
   GLT_* bits; GLT_USE and GLT_HOLD never come together, nor do
   GLT_USE_HELD and GLT_DROP_HELD. */
int GLT_Feed(GLT_Filter *f, double limit_mhz, int valid, double freq_mhz);

#endif
