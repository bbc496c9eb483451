/* relock.h - the relock search's grid and pacing (pure, no I/O).
 *
 * A laser that lost its mode does not come back by itself (DESIGN.md
 * section 8): after relock.after_s in relocking the daemon searches a grid
 * of outputs around the last good one and goes back to PID at the first
 * point whose fresh reading is within capture.  This module decides where to
 * go and when; the caller writes, through the laser's one job path, the
 * values it is given, and tells it about every valid reading that is still
 * out of capture.
 *
 * The grid: piezo offsets 0, +step, -step, +2 step, -2 step ... up to
 * +-piezo_span_v, for each current offset in the same outward order (only 0
 * without a current span), the centre itself left out.  A point whose piezo
 * (or stepped current) lies outside the limits in force is skipped.  The
 * current follows the piezo through the feed-forward ratio, plus the
 * point's current offset (clamped to its limits when the offset is 0).
 *
 * Pacing: one write per reading.  A move larger than max_step_v is split
 * into several writes of at most max_step_v each (per actuator); once the
 * point is reached the next settle_readings readings are discarded, and the
 * one after that is the point's fresh reading: still out of capture, the
 * search goes on to the next point.  After the last point of a pass the next
 * pass starts from the first; after `tries` passes the search goes back to
 * the centre (split likewise) and then says RLK_FAILED.
 */
#ifndef WL_RELOCK_H
#define WL_RELOCK_H

typedef struct {
  double piezo_span_v, piezo_step_v;     /* span 0: no piezo steps */
  double current_span_v, current_step_v; /* span 0: no current steps */
  int settle_readings;                   /* >= 0 */
  int tries;                             /* passes, >= 1 */
  double piezo_max_step_v;               /* per write, <= 0 none */
  double current_max_step_v;
  double feedforward;                    /* current V per piezo V */
  int has_current;
} RLK_Params;

/* Limits in force when a step is chosen. */
typedef struct {
  double piezo_lo, piezo_hi, current_lo, current_hi;
} RLK_Limits;

/* What RLK_OnReading asks of the caller. */
typedef enum {
  RLK_WAIT = 0,        /* nothing: a reading discarded (settling) */
  RLK_STEP,            /* a new grid point: write *piezo_v, *current_v (first piece) */
  RLK_WRITE,           /* write *piezo_v, *current_v (a further piece of a split move) */
  RLK_FAILED           /* every pass failed: write *piezo_v, *current_v (the centre,
                          the last piece) and give up */
} RLK_Action;

typedef struct {
  int active;
  RLK_Params p;
  double p0, c0;           /* centre: last good piezo, current there */
  double at_p, at_c;       /* outputs last asked for */
  double to_p, to_c;       /* target of the move in progress */
  int moving;              /* pieces of a move left to write */
  int returning;           /* the move home after the last pass */
  int settle_left;         /* readings still to discard */
  int index;               /* grid index of the present point, -1 none yet */
  int pass;                /* 1.. */
  int step;                /* points visited so far, all passes (1..) */
  int axis_p, axis_c;      /* grid points per axis: 2 n + 1 */
} RLK_Search;

/* The offset of element k (0..2n) of an outward sequence: 0, +1, -1, +2, -2 ...
   times step. */
double RLK_Outward(int k, double step);

/* Steps each way of an axis with this span and step (0 if either is <= 0). */
int RLK_AxisSteps(double span, double step);

/* The next value on the way from `from` to `to` with at most max_step
   (<= 0: no limit); exactly `to` when within reach. */
double RLK_Toward(double from, double to, double max_step);

/* Start a search around piezo_v / current_v (the last good outputs) from
   the outputs at_piezo_v / at_current_v written now (moves are split from
   there).  Returns 0, or -1 if the grid is empty (no span). */
int RLK_Start(RLK_Search *s, const RLK_Params *p, double piezo_v, double current_v,
              double at_piezo_v, double at_current_v);

/* A valid reading still out of capture (call only while s->active): what to
   write next, if anything, in *piezo_v / *current_v.  After RLK_FAILED the
   search is no longer active. */
RLK_Action RLK_OnReading(RLK_Search *s, const RLK_Limits *lim, double *piezo_v,
                         double *current_v);

/* Grid offsets of point i of a pass (no limits applied); 0, or -1 if i is
   beyond the grid. */
int RLK_Point(const RLK_Search *s, int i, double *dp, double *dc);

/* Points in one pass (before limits). */
int RLK_PointCount(const RLK_Search *s);

/* End the search (nothing more is asked). */
void RLK_Stop(RLK_Search *s);

#endif
