/* test_pid.c - the PID step: signs, time stamps, limits, slew, anti-windup,
 * derivative on the measurement, bumpless engage/retune/resume, and the
 * current feed-forward.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "pid.h"

#define EPS 1e-12

/* cmocka's assert_float_equal works in float: compare doubles here. */
#define assert_near(a, b, eps) do { \
    double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (eps))) \
      fail_msg("%s = %.15g, expected %.15g (+-%g)", #a, a_, b_, (double)(eps)); \
  } while (0)

/* Integral-only defaults: ki 0.01 V/(MHz s) on a 0..10 V output. */
static PID_Params
base_params(void)
{
  PID_Params p = {
    .kp = 0.0, .ki = 0.01, .kd = 0.0, .d_tau_s = 0.0, .polarity = 1,
    .min_v = 0.0, .max_v = 10.0, .max_step_v = 0.0, .max_dt_s = 1.0,
  };
  return p;
}

static void
step_ok(PID_State *s, const PID_Params *p, double t, double meas, double sp)
{
  assert_int_equal(PID_Step(s, p, t, meas, sp), 0);
}

/* Error = reading - setpoint; polarity +1: a positive error drives the
   output down, a negative one up; polarity -1 the other way round. */
static void
test_sign_and_polarity(void **state)
{
  PID_Params p = base_params();
  PID_State s;

  (void)state;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 384230010.0, 384230000.0);   /* +10 MHz: too high */
  step_ok(&s, &p, 0.1, 384230010.0, 384230000.0);
  assert_near(s.out, 5.0 - 0.01 * 10.0 * 0.1, EPS);

  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, -10.0, 0.0);
  step_ok(&s, &p, 0.1, -10.0, 0.0);
  assert_near(s.out, 5.0 + 0.01 * 10.0 * 0.1, EPS);

  p.polarity = -1;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 10.0, 0.0);
  step_ok(&s, &p, 0.1, 10.0, 0.0);
  assert_near(s.out, 5.0 + 0.01 * 10.0 * 0.1, EPS);

  /* proportional term: a rise of the error by 10 MHz moves kp*10 down */
  p = base_params();
  p.ki = 0.0;
  p.kp = 0.002;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 10.0, 0.0);
  step_ok(&s, &p, 0.1, 20.0, 0.0);
  assert_near(s.out, 5.0 - 0.002 * 10.0, EPS);
  p.polarity = -1;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 10.0, 0.0);
  step_ok(&s, &p, 0.1, 20.0, 0.0);
  assert_near(s.out, 5.0 + 0.002 * 10.0, EPS);
}

/* Engaging is bumpless: PID_Reset puts the integrator at the present output
   (clamped) and the first reading, however far off, does not move it. */
static void
test_bumpless_engage(void **state)
{
  PID_Params p = base_params();
  PID_State s;

  (void)state;
  p.kp = 0.01;
  p.kd = 0.001;
  p.d_tau_s = 0.1;
  PID_Reset(&s, &p, 3.0);
  assert_true(s.out == 3.0 && s.integ == 3.0 && !s.have_last);
  step_ok(&s, &p, 100.0, 500.0, 0.0);
  assert_true(s.out == 3.0);
  /* from then on it regulates from there: only the change of the error and
     the integral act */
  step_ok(&s, &p, 100.1, 500.0, 0.0);
  assert_near(s.out, 3.0 - 0.01 * 500.0 * 0.1, EPS);

  PID_Reset(&s, &p, 12.0);
  assert_true(s.out == 10.0 && s.integ == 10.0);
  PID_Reset(&s, &p, -1.0);
  assert_true(s.out == 0.0 && s.integ == 0.0);
}

/* A reading is never used twice: not newer than the last one -> -1 and
   nothing changes.  Non-finite input is refused the same way. */
static void
test_reading_used_once(void **state)
{
  PID_Params p = base_params();
  PID_State s, copy;

  (void)state;
  p.kp = 0.001;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 1.0, 10.0, 0.0);
  step_ok(&s, &p, 1.1, 12.0, 0.0);
  memcpy(&copy, &s, sizeof s);
  assert_int_equal(PID_Step(&s, &p, 1.1, 12.0, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, 1.1, 50.0, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, 0.5, 12.0, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, (double)NAN, 12.0, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, (double)INFINITY, 12.0, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, 1.2, (double)NAN, 0.0), -1);
  assert_int_equal(PID_Step(&s, &p, 1.2, 12.0, -(double)INFINITY), -1);
  assert_memory_equal(&copy, &s, sizeof s);
  step_ok(&s, &p, 1.2, 12.0, 0.0);
  assert_true(s.out < copy.out);
}

/* dt comes from the time stamps of the readings, not from the call rate. */
static void
test_dt_from_timestamps(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double o;

  (void)state;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 10.0, 10.0, 0.0);
  step_ok(&s, &p, 10.1, 10.0, 0.0);
  assert_near(s.out, 5.0 - 0.01 * 10.0 * 0.1, EPS);
  o = s.out;
  step_ok(&s, &p, 10.35, 10.0, 0.0);
  assert_near(s.out, o - 0.01 * 10.0 * 0.25, EPS);
  o = s.out;
  step_ok(&s, &p, 10.36, -30.0, 0.0);
  assert_near(s.out, o + 0.01 * 30.0 * 0.01, EPS);
}

/* A long gap between readings integrates at most max_dt_s. */
static void
test_long_gap_capped(void **state)
{
  PID_Params p = base_params();
  PID_State s;

  (void)state;
  p.max_dt_s = 0.5;
  p.min_v = -100.0;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 10.0, 0.0);
  step_ok(&s, &p, 3600.0, 10.0, 0.0);
  assert_near(s.out, 5.0 - 0.01 * 10.0 * 0.5, EPS);
  /* max_dt_s <= 0: no cap */
  p.max_dt_s = 0.0;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 10.0, 0.0);
  step_ok(&s, &p, 100.0, 10.0, 0.0);
  assert_near(s.out, 5.0 - 0.01 * 10.0 * 100.0, EPS);
}

/* The output stays inside min_v..max_v and changes by at most max_step_v. */
static void
test_limits_and_slew(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double prev, t = 0.0;
  int k;

  (void)state;
  p.ki = 1.0;
  p.kp = 0.01;
  p.max_step_v = 0.25;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, t, -1000.0, 0.0);
  for (k = 0; k < 20; k++) {          /* 5 V to go at 0.25 V per update */
    prev = s.out;
    t += 0.1;
    step_ok(&s, &p, t, -1000.0, 0.0);
    assert_near(s.out - prev, 0.25, EPS);
  }
  assert_near(s.out, 10.0, EPS);
  for (k = 0; k < 50; k++) {
    t += 0.1;
    step_ok(&s, &p, t, -1000.0, 0.0);
    assert_true(s.out == 10.0);
  }
  /* down the other way: again never more than 0.25 V, never below 0 */
  for (k = 0; k < 100; k++) {
    prev = s.out;
    t += 0.1;
    step_ok(&s, &p, t, 1000.0, 0.0);
    assert_true(fabs(s.out - prev) <= 0.25 + EPS);
    assert_true(s.out >= 0.0);
  }
  assert_true(s.out == 0.0);
  /* unlimited slew: straight to the limit */
  p.max_step_v = 0.0;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, -1000.0, 0.0);
  step_ok(&s, &p, 0.1, -1000.0, 0.0);
  assert_true(s.out == 10.0);
  assert_true(PID_Clamp(&p, 11.0) == 10.0);
  assert_true(PID_Clamp(&p, -0.5) == 0.0);
  assert_true(PID_Clamp(&p, 4.5) == 4.5);
  assert_true(PID_Clamp(&p, (double)NAN) == 0.0);
}

/* Anti-windup: after 1000 s pinned at max_v the integrator is still inside
   the limits, and as soon as the error changes sign the output leaves the
   limit on the very next update, by exactly what the integral of the new
   error says (nothing stored up to unwind). */
static void
test_no_windup(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double t = 0.0;
  int k;

  (void)state;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, t, -1000.0, 0.0);
  for (k = 0; k < 10000; k++) {
    t += 0.1;
    step_ok(&s, &p, t, -1000.0, 0.0);
    assert_true(s.integ <= p.max_v && s.integ >= p.min_v);
  }
  assert_true(s.out == 10.0);
  for (k = 1; k <= 10; k++) {
    t += 0.1;
    step_ok(&s, &p, t, 5.0, 0.0);
    assert_near(s.out, 10.0 - k * 0.01 * 5.0 * 0.1, 1e-9);
  }

  /* the same with P and D and a slew limit, at the lower limit: off the
     limit within 3 updates */
  p.kp = 0.002;
  p.kd = 0.0005;
  p.d_tau_s = 0.2;
  p.max_step_v = 0.25;
  PID_Reset(&s, &p, 5.0);
  t = 0.0;
  step_ok(&s, &p, t, 1500.0, 0.0);
  for (k = 0; k < 10000; k++) {
    t += 0.1;
    step_ok(&s, &p, t, 1500.0 + (k % 2 ? 3.0 : -3.0), 0.0);
    assert_true(s.integ <= p.max_v && s.integ >= p.min_v);
  }
  assert_true(s.out == 0.0);
  for (k = 1; k <= 3 && s.out == 0.0; k++) {
    t += 0.1;
    step_ok(&s, &p, t, -2.0, 0.0);
  }
  assert_true(s.out > 0.0);
}

/* Nor does the integrator run ahead of a slew-limited output: when the
   error changes sign the output turns at once instead of carrying on
   towards where the integrator had got to. */
static void
test_no_slew_windup(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double prev;
  int k;

  (void)state;
  p.ki = 1.0;                  /* 100 V/s of integral action at 1000 MHz */
  p.max_step_v = 0.25;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, -1000.0, 0.0);
  for (k = 1; k <= 3; k++)
    step_ok(&s, &p, 0.1 * k, -1000.0, 0.0);
  assert_near(s.out, 5.75, EPS);
  assert_true(s.integ <= s.out + EPS);
  prev = s.out;
  step_ok(&s, &p, 0.4, 1.0, 0.0);
  assert_true(s.out < prev);
  assert_near(s.out, 5.75 - 1.0 * 1.0 * 0.1, EPS);
}

/* D acts on the measurement through a first-order filter: a setpoint step
   or ramp gives no kick, a moving measurement does. */
static void
test_derivative_on_measurement(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double t;
  int k;

  (void)state;
  p.ki = 0.0;
  p.kd = 0.01;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 0.0, 0.0);
  step_ok(&s, &p, 0.1, 1.0, 0.0);     /* rising 10 MHz/s */
  assert_near(s.out, 5.0 - 0.01 * 10.0, EPS);
  step_ok(&s, &p, 0.2, 1.0, 0.0);     /* still: the D term is gone again */
  assert_near(s.out, 5.0, EPS);
  /* setpoint steps and ramps, measurement steady: no kick */
  step_ok(&s, &p, 0.3, 1.0, 100.0);
  for (t = 0.4, k = 0; k < 20; k++, t += 0.1)
    step_ok(&s, &p, t, 1.0, 100.0 + 5.0 * k);
  assert_near(s.out, 5.0, EPS);

  /* filter: tau 0.1 s, dt 0.1 s -> a = 1/2 per update on a 10 MHz/s ramp */
  p.d_tau_s = 0.1;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 0.0, 0.0);
  step_ok(&s, &p, 0.1, 1.0, 0.0);
  assert_near(s.d_filt, 5.0, 1e-9);
  step_ok(&s, &p, 0.2, 2.0, 0.0);
  assert_near(s.d_filt, 7.5, 1e-9);
  for (t = 0.3, k = 3; k < 60; k++, t += 0.1)
    step_ok(&s, &p, t, (double)k, 0.0);
  assert_near(s.d_filt, 10.0, 1e-6);
  assert_near(s.out, 5.0 - 0.01 * 10.0, 1e-6);
  /* the filter smooths: alternating +-1 MHz noise at 10 readings/s is a raw
     derivative of +-20 MHz/s; filtered much less */
  for (k = 0; k < 50; k++, t += 0.1)
    step_ok(&s, &p, t, 59.0 + (k % 2 ? 1.0 : -1.0), 0.0);
  assert_true(fabs(s.d_filt) < 10.0);
}

/* Retuning keeps the output and the next step continues from it. */
static void
test_retune_bumpless(void **state)
{
  PID_Params p = base_params(), q;
  PID_State s, copy;
  double o;

  (void)state;
  p.kp = 0.002;
  p.kd = 0.001;
  p.d_tau_s = 0.2;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 0.0, 20.0, 0.0);
  step_ok(&s, &p, 0.1, 21.0, 0.0);
  step_ok(&s, &p, 0.2, 20.0, 0.0);
  o = s.out;
  q = p;
  q.kp = 0.02;                         /* ten times the proportional gain */
  q.ki = 0.05;
  q.kd = 0.0;
  /* swapping the parameters without PID_Retune would kick the output by
     about (0.02 - 0.002) * 20 MHz = 0.36 V */
  copy = s;
  step_ok(&copy, &q, 0.3, 20.0, 0.0);
  assert_true(fabs(copy.out - o) > 0.3);
  PID_Retune(&s, &p, &q);
  assert_true(s.out == o);
  step_ok(&s, &q, 0.3, 20.0, 0.0);     /* same error: only the new integral acts */
  assert_near(s.out, o - 0.05 * 20.0 * 0.1, 1e-9);

  /* narrower limits: the output is re-clamped, the integrator with it */
  q = p;
  q.max_v = 4.0;
  PID_Retune(&s, &p, &q);
  assert_true(s.out == 4.0);
  assert_true(s.integ <= 4.0);
  step_ok(&s, &q, 0.4, 20.0, 0.0);
  assert_true(s.out <= 4.0 && s.out > 3.9);
  /* retune before any reading: the integrator is the output */
  PID_Reset(&s, &p, 2.0);
  PID_Retune(&s, &p, &q);
  assert_true(s.out == 2.0 && s.integ == 2.0);
}

/* PID_Forget (after a hold or a relock) keeps the output; the next reading
   restarts dt and the derivative without moving it, even if its time stamp
   is older (a restarted wavemeter clock). */
static void
test_forget(void **state)
{
  PID_Params p = base_params();
  PID_State s;
  double o;

  (void)state;
  p.kp = 0.002;
  p.kd = 0.001;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 10.0, 20.0, 0.0);
  step_ok(&s, &p, 10.1, 25.0, 0.0);
  o = s.out;
  PID_Forget(&s);
  assert_true(s.out == o && !s.have_last);
  step_ok(&s, &p, 2.0, -80.0, 0.0);
  assert_true(s.out == o);
  step_ok(&s, &p, 2.1, -80.0, 0.0);
  assert_near(s.out, o + 0.01 * 80.0 * 0.1, EPS);
}

/* Current feed-forward: follows the piezo change times the ratio, around its
   reference, inside its own limits. */
static void
test_feedforward(void **state)
{
  (void)state;
  assert_near(PID_FeedForward(6.0, 5.0, -0.2, 0.0, -1.0, 1.0), -0.2, EPS);
  assert_near(PID_FeedForward(4.0, 5.0, -0.2, 0.0, -1.0, 1.0), 0.2, EPS);
  assert_near(PID_FeedForward(5.0, 5.0, -0.2, 0.3, -1.0, 1.0), 0.3, EPS);
  assert_near(PID_FeedForward(7.5, 5.0, 0.1, 0.5, -1.0, 1.0), 0.75, EPS);
  assert_true(PID_FeedForward(20.0, 5.0, -0.2, 0.0, -1.0, 1.0) == -1.0);
  assert_true(PID_FeedForward(-20.0, 5.0, -0.2, 0.0, -1.0, 1.0) == 1.0);
  assert_true(PID_FeedForward(9.0, 5.0, 0.0, 2.0, -1.0, 1.0) == 1.0);
  assert_true(PID_FeedForward((double)NAN, 5.0, -0.2, 0.0, -1.0, 1.0) == -1.0);
}

/* PID_Shift: a feed-forward move within the limits and max_step_v, the
   integrator along, the history kept. */
static void
test_shift(void **state)
{
  PID_Params p = base_params();
  PID_State s;

  (void)state;
  p.max_step_v = 0.5;
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 1.0, 100.0, 100.0);
  assert_true(fabs(PID_Shift(&s, &p, 0.2) - 0.2) < 1e-12);
  assert_true(fabs(s.out - 5.2) < 1e-12 && fabs(s.integ - 5.2) < 1e-12);
  assert_true(s.have_last);
  assert_true(fabs(PID_Shift(&s, &p, 3.0) - 0.5) < 1e-12);     /* max_step_v */
  assert_true(fabs(s.out - 5.7) < 1e-12);
  PID_Reset(&s, &p, 9.8);
  assert_true(fabs(PID_Shift(&s, &p, 0.4) - 0.2) < 1e-12);     /* max_v */
  assert_true(s.out == 10.0 && s.integ == 10.0);
  assert_true(PID_Shift(&s, &p, NAN) == 0.0 && s.out == 10.0);
  /* an unchanged error after the shift: the next step starts from there */
  PID_Reset(&s, &p, 5.0);
  step_ok(&s, &p, 1.0, 100.0, 100.0);
  PID_Shift(&s, &p, -0.3);
  step_ok(&s, &p, 2.0, 100.0, 100.0);
  assert_true(fabs(s.out - 4.7) < 1e-12);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sign_and_polarity),
    cmocka_unit_test(test_bumpless_engage),
    cmocka_unit_test(test_reading_used_once),
    cmocka_unit_test(test_dt_from_timestamps),
    cmocka_unit_test(test_long_gap_capped),
    cmocka_unit_test(test_limits_and_slew),
    cmocka_unit_test(test_no_windup),
    cmocka_unit_test(test_no_slew_windup),
    cmocka_unit_test(test_derivative_on_measurement),
    cmocka_unit_test(test_retune_bumpless),
    cmocka_unit_test(test_forget),
    cmocka_unit_test(test_feedforward),
    cmocka_unit_test(test_shift),
  };

  return cmocka_run_group_tests_name("pid", tests, NULL, NULL);
}
