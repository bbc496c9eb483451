/* test_lsr.c - the per-laser lock state machine and setpoint ramps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "lsr.h"

static const LSR_Params P = {
  .window_mhz = 5.0, .capture_mhz = 2000.0, .modehop_mhz = 1000.0,
  .lock_n = 3, .unlock_m = 2, .stale_s = 1.0,
};

/* A reading with the laser at setpoint + err (MHz); the setpoint is 0. */
static LSR_Action
rd(LSR_Machine *m, double t, double err)
{
  return LSR_OnReading(m, &P, t, 1, err, err);
}

static LSR_Action
bad(LSR_Machine *m, double t)
{
  return LSR_OnReading(m, &P, t, 0, -3.0, 0.0);
}

/* An engaged machine that has seen one reading at t = 0. */
static void
engaged(LSR_Machine *m)
{
  LSR_Init(m);
  LSR_Engage(m, 0.0);
  assert_int_equal(rd(m, 0.0, 100.0), LSR_ACT_RESUME);
  assert_int_equal(m->state, LSR_ACQUIRING);
}

static void
locked(LSR_Machine *m)
{
  engaged(m);
  rd(m, 0.1, 0.0);
  rd(m, 0.2, 0.0);
  rd(m, 0.3, 0.0);
  assert_int_equal(m->state, LSR_LOCKED);
}

static void
test_init_names(void **state)
{
  LSR_Machine m;

  (void)state;
  LSR_Init(&m);
  assert_int_equal(m.state, LSR_OFF);
  assert_false(m.engaged);
  assert_true(m.actuator_ok);
  assert_false(LSR_Regulating(&m));
  assert_string_equal(LSR_StateName(LSR_OFF), "off");
  assert_string_equal(LSR_StateName(LSR_ACQUIRING), "acquiring");
  assert_string_equal(LSR_StateName(LSR_LOCKED), "locked");
  assert_string_equal(LSR_StateName(LSR_HOLDING), "holding");
  assert_string_equal(LSR_StateName(LSR_RELOCKING), "relocking");
  assert_string_equal(LSR_StateName(LSR_FAULT), "fault");
  /* readings while off change no state and ask for nothing */
  assert_int_equal(rd(&m, 0.0, 0.0), LSR_ACT_NONE);
  assert_int_equal(bad(&m, 0.1), LSR_ACT_NONE);
  assert_int_equal(LSR_OnTick(&m, &P, 100.0), 0);
  assert_int_equal(m.state, LSR_OFF);
}

/* Engage -> acquiring; the first reading resumes (forget history), later
   ones regulate; disengage -> off.  Engaging twice changes nothing. */
static void
test_engage_disengage(void **state)
{
  LSR_Machine m;

  (void)state;
  LSR_Init(&m);
  LSR_Engage(&m, 5.0);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_true(LSR_Regulating(&m));
  assert_int_equal(rd(&m, 5.1, 50.0), LSR_ACT_RESUME);
  assert_int_equal(rd(&m, 5.2, 40.0), LSR_ACT_REGULATE);
  rd(&m, 5.3, 0.0);
  rd(&m, 5.4, 0.0);
  rd(&m, 5.5, 0.0);
  assert_int_equal(m.state, LSR_LOCKED);
  LSR_Engage(&m, 6.0);
  assert_int_equal(m.state, LSR_LOCKED);
  assert_int_equal(rd(&m, 6.1, 0.0), LSR_ACT_REGULATE);
  LSR_Disengage(&m);
  assert_int_equal(m.state, LSR_OFF);
  assert_int_equal(m.lock_losses, 0);        /* unlocking is not a loss */
  assert_int_equal(rd(&m, 6.2, 0.0), LSR_ACT_NONE);
  LSR_Engage(&m, 7.0);
  assert_int_equal(rd(&m, 7.1, 0.0), LSR_ACT_RESUME);
}

/* Locked after lock_n consecutive readings inside the window, left after
   unlock_m consecutive ones outside; a single outlier does neither. */
static void
test_hysteresis(void **state)
{
  LSR_Machine m;

  (void)state;
  engaged(&m);
  rd(&m, 0.1, 4.9);
  rd(&m, 0.2, -5.0);                 /* the edge counts as inside */
  assert_int_equal(m.state, LSR_ACQUIRING);
  rd(&m, 0.3, 6.0);                  /* broken: count starts again */
  rd(&m, 0.4, 1.0);
  rd(&m, 0.5, 1.0);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 0.6, 1.0), LSR_ACT_REGULATE);
  assert_int_equal(m.state, LSR_LOCKED);

  rd(&m, 0.7, 8.0);                  /* one outside: still locked */
  assert_int_equal(m.state, LSR_LOCKED);
  rd(&m, 0.8, 0.0);                  /* back inside resets the count */
  rd(&m, 0.9, -8.0);
  assert_int_equal(m.state, LSR_LOCKED);
  rd(&m, 1.0, 0.0);
  rd(&m, 1.1, 9.0);
  assert_int_equal(m.state, LSR_LOCKED);
  assert_int_equal(rd(&m, 1.2, -9.0), LSR_ACT_REGULATE);   /* second outside */
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(m.lock_losses, 1);
  rd(&m, 1.3, 0.0);
  rd(&m, 1.4, 0.0);
  assert_int_equal(m.state, LSR_ACQUIRING);
  rd(&m, 1.5, 0.0);
  assert_int_equal(m.state, LSR_LOCKED);

  /* lock_n = unlock_m = 1: no hysteresis, but still consistent */
  {
    LSR_Params q = P;
    q.lock_n = 1;
    q.unlock_m = 1;
    LSR_Init(&m);
    LSR_Engage(&m, 0.0);
    LSR_OnReading(&m, &q, 0.1, 1, 0.0, 0.0);
    assert_int_equal(m.state, LSR_LOCKED);
    LSR_OnReading(&m, &q, 0.2, 1, 10.0, 10.0);
    assert_int_equal(m.state, LSR_ACQUIRING);
  }
}

/* An error beyond capture_mhz: relocking (RELOCK once, then wait with no
   action) until the error is back inside capture, then acquiring again. */
static void
test_capture_relock(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  /* drifts out slowly (no jump), past capture */
  assert_int_equal(rd(&m, 1.0, 900.0), LSR_ACT_REGULATE);
  assert_int_equal(rd(&m, 1.1, 1800.0), LSR_ACT_REGULATE);
  assert_int_equal(rd(&m, 1.2, 2100.0), LSR_ACT_RELOCK);
  assert_int_equal(m.state, LSR_RELOCKING);
  assert_false(LSR_Regulating(&m));
  assert_int_equal(m.relocks, 1);
  assert_int_equal(m.lock_losses, 1);
  assert_int_equal(rd(&m, 1.3, 2500.0), LSR_ACT_NONE);
  assert_int_equal(rd(&m, 1.4, -2500.0), LSR_ACT_NONE);
  assert_int_equal(m.state, LSR_RELOCKING);
  assert_int_equal(m.relocks, 1);
  assert_int_equal(rd(&m, 1.5, 1500.0), LSR_ACT_RESUME);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 1.6, 900.0), LSR_ACT_REGULATE);
  /* straight from acquiring too (no jump beyond modehop_mhz on the way) */
  assert_int_equal(rd(&m, 1.7, 1800.0), LSR_ACT_REGULATE);
  assert_int_equal(rd(&m, 1.8, 2001.0), LSR_ACT_RELOCK);
  assert_int_equal(m.relocks, 2);
  assert_int_equal(m.lock_losses, 1);
}

/* A reading-to-reading jump beyond modehop_mhz goes relocking even inside
   capture; the jump back out of relocking does not keep it there. */
static void
test_mode_hop(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  assert_int_equal(rd(&m, 1.0, 1200.0), LSR_ACT_RELOCK);
  assert_int_equal(m.state, LSR_RELOCKING);
  assert_int_equal(m.lock_losses, 1);
  assert_int_equal(rd(&m, 1.1, 1190.0), LSR_ACT_RESUME);   /* inside capture */
  assert_int_equal(m.state, LSR_ACQUIRING);

  locked(&m);
  rd(&m, 1.0, 1500.0);
  assert_int_equal(m.state, LSR_RELOCKING);
  assert_int_equal(rd(&m, 1.1, 2.0), LSR_ACT_RESUME);      /* jumped back */
  assert_int_equal(m.state, LSR_ACQUIRING);

  /* a jump just below the threshold is no hop */
  locked(&m);
  assert_int_equal(rd(&m, 1.0, 999.0), LSR_ACT_REGULATE);
  assert_int_equal(m.state, LSR_LOCKED);

  /* modehop_mhz <= 0 turns the detection off */
  {
    LSR_Params q = P;
    q.modehop_mhz = 0.0;
    LSR_Init(&m);
    LSR_Engage(&m, 0.0);
    LSR_OnReading(&m, &q, 0.1, 1, 0.0, 0.0);
    assert_int_equal(LSR_OnReading(&m, &q, 0.2, 1, 1900.0, 1900.0), LSR_ACT_REGULATE);
  }
  /* a hop that happened while off is seen on engage */
  LSR_Init(&m);
  rd(&m, 0.0, 0.0);
  LSR_Engage(&m, 0.5);
  assert_int_equal(rd(&m, 1.0, 1500.0), LSR_ACT_RELOCK);
}

/* An error-code reading while engaged: holding, output held (no action);
   the next valid reading resumes.  Holding is not regulating. */
static void
test_invalid_reading_holds(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  assert_int_equal(bad(&m, 1.0), LSR_ACT_NONE);
  assert_int_equal(m.state, LSR_HOLDING);
  assert_false(LSR_Regulating(&m));
  assert_int_equal(bad(&m, 1.1), LSR_ACT_NONE);
  assert_int_equal(LSR_OnReading(&m, &P, 1.2, 1, (double)NAN, (double)NAN), LSR_ACT_NONE);
  assert_int_equal(m.state, LSR_HOLDING);
  assert_int_equal(rd(&m, 1.3, 1.0), LSR_ACT_RESUME);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 1.4, 1.0), LSR_ACT_REGULATE);
  rd(&m, 1.5, 1.0);
  assert_int_equal(m.state, LSR_LOCKED);
  /* an invalid reading breaks the run of in-window readings */
  engaged(&m);
  rd(&m, 0.1, 0.0);
  rd(&m, 0.2, 0.0);
  bad(&m, 0.3);
  rd(&m, 0.4, 0.0);
  assert_int_equal(m.state, LSR_ACQUIRING);
  /* recovering from holding into a lost lock goes relocking */
  bad(&m, 0.5);
  assert_int_equal(rd(&m, 0.6, 3000.0), LSR_ACT_RELOCK);
  assert_int_equal(m.state, LSR_RELOCKING);
  /* relocking without readings also holds */
  bad(&m, 0.7);
  assert_int_equal(m.state, LSR_HOLDING);
}

/* No valid reading for stale_s: holding; counted from the last valid
   reading, or from engaging if there was none since. */
static void
test_stale(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);                                   /* last reading at 0.3 */
  assert_int_equal(LSR_OnTick(&m, &P, 1.2), 0);
  assert_int_equal(LSR_OnTick(&m, &P, 1.3), 0);
  assert_int_equal(m.state, LSR_LOCKED);
  assert_int_equal(LSR_OnTick(&m, &P, 1.31), 1);
  assert_int_equal(m.state, LSR_HOLDING);
  assert_int_equal(LSR_OnTick(&m, &P, 5.0), 0);   /* already holding */
  assert_int_equal(rd(&m, 5.1, 0.0), LSR_ACT_RESUME);
  assert_int_equal(m.state, LSR_ACQUIRING);
  /* invalid readings do not refresh */
  bad(&m, 5.5);
  rd(&m, 5.6, 0.0);
  bad(&m, 6.0);
  assert_int_equal(m.state, LSR_HOLDING);
  /* from engage */
  LSR_Init(&m);
  rd(&m, 0.0, 0.0);                             /* seen while off */
  LSR_Engage(&m, 10.0);
  assert_int_equal(LSR_OnTick(&m, &P, 10.9), 0);
  assert_int_equal(LSR_OnTick(&m, &P, 11.1), 1);
  assert_int_equal(m.state, LSR_HOLDING);
  /* relocking goes stale too; stale_s <= 0 turns it off */
  locked(&m);
  rd(&m, 0.4, 5000.0);
  assert_int_equal(m.state, LSR_RELOCKING);
  assert_int_equal(LSR_OnTick(&m, &P, 2.0), 1);
  assert_int_equal(m.state, LSR_HOLDING);
  {
    LSR_Params q = P;
    q.stale_s = 0.0;
    locked(&m);
    assert_int_equal(LSR_OnTick(&m, &q, 1000.0), 0);
    assert_int_equal(m.state, LSR_LOCKED);
  }
}

/* Actuator failure: fault from any state, readings ignored; recovery goes
   back to acquiring (engaged) or off (not engaged). */
static void
test_actuator_fault(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  LSR_OnActuator(&m, 0);
  assert_int_equal(m.state, LSR_FAULT);
  assert_false(LSR_Regulating(&m));
  assert_int_equal(m.lock_losses, 1);
  assert_int_equal(rd(&m, 1.0, 0.0), LSR_ACT_NONE);
  assert_int_equal(bad(&m, 1.1), LSR_ACT_NONE);
  assert_int_equal(LSR_OnTick(&m, &P, 100.0), 0);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_OnActuator(&m, 0);                       /* repeated: no change */
  assert_int_equal(m.lock_losses, 1);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 100.1, 0.0), LSR_ACT_RESUME);
  LSR_OnActuator(&m, 1);                       /* ok while ok: no change */
  assert_int_equal(m.state, LSR_ACQUIRING);

  /* disengaged while down: fault, then off */
  LSR_OnActuator(&m, 0);
  LSR_Disengage(&m);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_OFF);

  /* down while off: fault; engaging while down: fault, then acquiring */
  LSR_Init(&m);
  LSR_OnActuator(&m, 0);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_Engage(&m, 0.0);
  assert_int_equal(m.state, LSR_FAULT);
  assert_true(m.engaged);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_ACQUIRING);
  /* holding and relocking also fault and come back to acquiring */
  locked(&m);
  bad(&m, 1.0);
  LSR_OnActuator(&m, 0);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_ACQUIRING);
}

/* Ramps move at the given rate and end exactly on the target. */
static void
test_setpoint_step(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  LSR_SetpointStep(&m, &P, 3.0);      /* still inside the window: stays locked */
  assert_int_equal(m.state, LSR_LOCKED);
  LSR_SetpointStep(&m, &P, -20.0);    /* outside: acquiring, not a lock loss */
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(m.lock_losses, 0);
  assert_int_equal(m.in_count, 0);
  rd(&m, 0.4, 0.0);
  rd(&m, 0.5, 0.0);
  assert_int_equal(m.state, LSR_ACQUIRING);   /* lock_n fresh readings again */
  rd(&m, 0.6, 0.0);
  assert_int_equal(m.state, LSR_LOCKED);
  LSR_Disengage(&m);
  LSR_SetpointStep(&m, &P, 50.0);     /* off stays off */
  assert_int_equal(m.state, LSR_OFF);
}

static void
test_ramp(void **state)
{
  LSR_Ramp r;
  double sp, t, prev;
  int k;

  (void)state;
  LSR_RampStart(&r, 384.0, 384.001, 100.0, 10.0);   /* 1 GHz at 100 MHz/s */
  assert_true(r.active);
  assert_true(LSR_RampAdvance(&r, 10.0) == 384.0);
  sp = LSR_RampAdvance(&r, 11.0);
  assert_true(fabs(sp - 384.0001) < 1e-12);
  assert_true(LSR_RampAdvance(&r, 10.5) == sp);       /* time going back: no move */
  prev = sp;
  for (t = 11.0, k = 0; k < 200 && r.active; k++) {
    t += 0.037 + 0.05 * (k % 3);                      /* uneven steps */
    sp = LSR_RampAdvance(&r, t);
    assert_true(sp >= prev && sp <= 384.001);
    assert_true(sp - prev <= 100e-6 * 0.137 + 1e-12);
    prev = sp;
  }
  assert_false(r.active);
  assert_true(sp == 384.001);
  assert_true(r.sp_thz == 384.001);
  assert_true(LSR_RampAdvance(&r, t + 100.0) == 384.001);
  assert_true(t >= 20.0 - 1e-9 && t < 20.2);

  /* downwards, overshooting step lands on target */
  LSR_RampStart(&r, 384.5, 384.4999, 10.0, 0.0);     /* 100 MHz at 10 MHz/s */
  assert_true(fabs(LSR_RampAdvance(&r, 5.0) - 384.49995) < 1e-12);
  assert_true(r.active);
  assert_true(LSR_RampAdvance(&r, 1000.0) == 384.4999);
  assert_false(r.active);

  /* a non-positive or non-finite rate, or no distance: straight there */
  LSR_RampStart(&r, 384.0, 385.0, 0.0, 0.0);
  assert_false(r.active);
  assert_true(r.sp_thz == 385.0);
  LSR_RampStart(&r, 384.0, 385.0, -5.0, 0.0);
  assert_true(!r.active && r.sp_thz == 385.0);
  LSR_RampStart(&r, 384.0, 385.0, (double)NAN, 0.0);
  assert_true(!r.active && r.sp_thz == 385.0);
  LSR_RampStart(&r, 384.0, 384.0, 10.0, 0.0);
  assert_true(!r.active && LSR_RampAdvance(&r, 1.0) == 384.0);
}

/* Railed: within 2 % of the range from a limit, for more than 10
   consecutive cycles; leaving takes as long; names. */
static void
test_rail(void **state)
{
  LSR_Rail r;
  char buf[LSR_RAIL_NAME_MAX];
  int changed = 0;

  (void)state;
  /* 0..10 V: the band is 0.2 V at each end */
  assert_int_equal(LSR_RailObserve(0.0, 0.0, 10.0, 1, 2), 1);
  assert_int_equal(LSR_RailObserve(0.2, 0.0, 10.0, 1, 2), 1);
  assert_int_equal(LSR_RailObserve(0.21, 0.0, 10.0, 1, 2), 0);
  assert_int_equal(LSR_RailObserve(5.0, 0.0, 10.0, 1, 2), 0);
  assert_int_equal(LSR_RailObserve(9.79, 0.0, 10.0, 1, 2), 0);
  assert_int_equal(LSR_RailObserve(9.8, 0.0, 10.0, 1, 2), 2);
  /* a narrowed run-time range -1..1 V: 0.04 V */
  assert_int_equal(LSR_RailObserve(-0.97, -1.0, 1.0, 4, 8), 4);
  assert_int_equal(LSR_RailObserve(-0.95, -1.0, 1.0, 4, 8), 0);
  assert_int_equal(LSR_RailObserve(0.97, -1.0, 1.0, 4, 8), 8);
  assert_int_equal(LSR_RailObserve(1.0, 1.0, 1.0, 4, 8), 0);   /* empty range */
  assert_int_equal(LSR_RailObserve(NAN, 0.0, 10.0, 1, 2), 0);

  memset(&r, 0, sizeof r);
  /* 10 cycles at the limit are not enough, the 11th is */
  for (int i = 0; i < LSR_RAIL_CYCLES; i++)
    changed |= LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW);
  assert_false(changed);
  assert_int_equal(r.railed, 0);
  assert_true(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW));
  assert_int_equal(r.railed, LSR_RAIL_PIEZO_LOW);
  assert_string_equal(LSR_RailName(r.railed, buf, sizeof buf), "piezo_low");
  /* an interruption starts the count again */
  for (int i = 0; i < LSR_RAIL_CYCLES; i++)
    assert_false(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW | LSR_RAIL_CURRENT_HIGH));
  assert_false(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW));
  for (int i = 0; i < LSR_RAIL_CYCLES; i++)
    assert_false(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW | LSR_RAIL_CURRENT_HIGH));
  assert_true(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW | LSR_RAIL_CURRENT_HIGH));
  assert_string_equal(LSR_RailName(r.railed, buf, sizeof buf), "piezo_low,current_high");
  /* leaving: one cycle away is not enough (no flapping at the band's edge) */
  assert_false(LSR_RailCycle(&r, LSR_RAIL_CURRENT_HIGH));
  assert_false(LSR_RailCycle(&r, LSR_RAIL_PIEZO_LOW | LSR_RAIL_CURRENT_HIGH));
  for (int i = 0; i < LSR_RAIL_CYCLES; i++)
    assert_false(LSR_RailCycle(&r, LSR_RAIL_CURRENT_HIGH));
  assert_true(LSR_RailCycle(&r, LSR_RAIL_CURRENT_HIGH));
  assert_int_equal(r.railed, LSR_RAIL_CURRENT_HIGH);
  /* not regulating: none at once */
  assert_true(LSR_RailClear(&r));
  assert_int_equal(r.railed, 0);
  assert_false(LSR_RailClear(&r));
  assert_string_equal(LSR_RailName(0, buf, sizeof buf), "none");
  assert_string_equal(LSR_RailName(15, buf, sizeof buf),
                      "piezo_low,piezo_high,current_low,current_high");
  assert_true(strlen(buf) < LSR_RAIL_NAME_MAX);
}

/* A failed relock search: fault, deaf to readings and to the devices
   coming back, until the next engage (acquiring) or disengage (off). */
static void
test_relock_failed(void **state)
{
  LSR_Machine m;

  (void)state;
  LSR_Init(&m);
  LSR_RelockFailed(&m);                 /* not engaged: nothing */
  assert_int_equal(m.state, LSR_OFF);
  LSR_Engage(&m, 0.0);
  assert_int_equal(rd(&m, 0.1, 8000.0), LSR_ACT_RELOCK);
  assert_int_equal(m.state, LSR_RELOCKING);
  LSR_RelockFailed(&m);
  assert_int_equal(m.state, LSR_FAULT);
  assert_int_equal(m.relock_failed, 1);
  assert_int_equal(rd(&m, 0.2, 0.0), LSR_ACT_NONE);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_OnActuator(&m, 0);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_FAULT);
  assert_int_equal(LSR_OnTick(&m, &P, 100.0), 0);
  LSR_Engage(&m, 1.0);                  /* lock again */
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(m.relock_failed, 0);
  assert_int_equal(rd(&m, 1.1, 8000.0), LSR_ACT_RELOCK);
  LSR_RelockFailed(&m);
  LSR_Disengage(&m);                    /* unlock */
  assert_int_equal(m.state, LSR_OFF);
  assert_int_equal(m.relock_failed, 0);
}

/* Hold: readings unused, no stale or hop detection, back to acquiring with
   a resume; engage and a recovered actuator while held go to holding. */
static void
test_hold(void **state)
{
  LSR_Machine m;

  (void)state;
  locked(&m);
  assert_int_equal(LSR_Hold(&m, 1, 0.4), 1);
  assert_int_equal(m.state, LSR_HOLDING);
  assert_int_equal(LSR_Hold(&m, 1, 0.4), 0);                /* again: nothing */
  assert_int_equal(rd(&m, 0.5, 0.0), LSR_ACT_NONE);
  assert_int_equal(rd(&m, 0.6, 5000.0), LSR_ACT_NONE);     /* moved on purpose */
  assert_int_equal(bad(&m, 0.7), LSR_ACT_NONE);
  assert_int_equal(m.state, LSR_HOLDING);
  assert_int_equal(LSR_OnTick(&m, &P, 100.0), 0);           /* never stale while held */
  assert_int_equal(m.relocks, 0);
  assert_int_equal(LSR_Hold(&m, 0, 100.0), 1);
  assert_int_equal(m.state, LSR_ACQUIRING);
  /* the first reading far from the last one before the hold: no hop */
  assert_int_equal(rd(&m, 100.1, 900.0), LSR_ACT_RESUME);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 100.2, 0.0), LSR_ACT_REGULATE);
  assert_int_equal(LSR_OnTick(&m, &P, 100.9), 0);           /* staleness from the resume */
  /* held while off: engage goes to holding, release to acquiring */
  LSR_Init(&m);
  assert_int_equal(LSR_Hold(&m, 1, 0.0), 0);
  assert_int_equal(m.state, LSR_OFF);
  LSR_Engage(&m, 0.0);
  assert_int_equal(m.state, LSR_HOLDING);
  LSR_OnActuator(&m, 0);
  assert_int_equal(m.state, LSR_FAULT);
  LSR_OnActuator(&m, 1);
  assert_int_equal(m.state, LSR_HOLDING);
  LSR_Hold(&m, 0, 1.0);
  assert_int_equal(m.state, LSR_ACQUIRING);
  assert_int_equal(rd(&m, 1.1, 0.0), LSR_ACT_RESUME);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_init_names),
    cmocka_unit_test(test_engage_disengage),
    cmocka_unit_test(test_hysteresis),
    cmocka_unit_test(test_capture_relock),
    cmocka_unit_test(test_mode_hop),
    cmocka_unit_test(test_invalid_reading_holds),
    cmocka_unit_test(test_stale),
    cmocka_unit_test(test_actuator_fault),
    cmocka_unit_test(test_setpoint_step),
    cmocka_unit_test(test_ramp),
    cmocka_unit_test(test_rail),
    cmocka_unit_test(test_relock_failed),
    cmocka_unit_test(test_hold),
  };

  return cmocka_run_group_tests_name("lsr", tests, NULL, NULL);
}
