/* test_plant.c - unit tests of the simulated laser plant (src/plant.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plant.h"

/* cmocka 1.1's assert_float_equal works in single precision: use doubles. */
#define assert_near(a, b, eps) check_near((a), (b), (eps), #a, __FILE__, __LINE__)

static void
check_near(double a, double b, double eps, const char *what, const char *file, int line)
{
  if (!(fabs(a - b) <= eps)) {
    print_error("%s = %.12g, want %.12g +- %g\n", what, a, b, eps);
    _fail(file, line);
  }
}

/* A laser with every random or slow effect switched off. */
static CNF_Laser
quiet_laser(const char *name, int channel)
{
  CNF_Laser l;

  memset(&l, 0, sizeof l);
  snprintf(l.name, sizeof l.name, "%s", name);
  l.channel = channel;
  l.setpoint_thz = 384.2304844;
  l.piezo.present = 1;
  l.piezo.min_v = 0.0;
  l.piezo.max_v = 10.0;
  l.piezo.start_v = 5.0;
  l.sim.piezo_mhz_per_v = 300.0;
  l.sim.current_mhz_per_v = 50.0;
  l.sim.piezo_lag_ms = 1.0;
  l.sim.current_lag_ms = 100.0;
  l.sim.sine_period_s = 600.0;
  l.sim.modehop_mhz = 8000.0;
  l.sim.modehop_s = 3.0;
  l.sim.exposure_ms = 10.0;
  return l;
}

static void
test_rng(void **state)
{
  PLT_Rng a, b;
  double sum = 0.0, sum2 = 0.0, umin = 1.0, umax = 0.0;
  const int n = 200000;

  (void)state;
  PLT_RngSeed(&a, 0);
  PLT_RngSeed(&b, 0);
  for (int i = 0; i < 1000; i++)
    assert_true(PLT_RngNext(&a) == PLT_RngNext(&b));
  PLT_RngSeed(&b, 1);
  assert_true(PLT_RngNext(&a) != PLT_RngNext(&b));

  PLT_RngSeed(&a, 42);
  for (int i = 0; i < n; i++) {
    double u = PLT_RngUniform(&a);

    assert_true(u > 0.0 && u <= 1.0);
    umin = fmin(umin, u);
    umax = fmax(umax, u);
  }
  assert_true(umin < 1e-3 && umax > 1.0 - 1e-3);
  for (int i = 0; i < n; i++) {
    double g = PLT_RngGauss(&a);

    sum += g;
    sum2 += g * g;
  }
  /* mean 0 +- 5/sqrt(n), variance 1 +- 5*sqrt(2/n) */
  assert_true(fabs(sum / n) < 5.0 / sqrt(n));
  assert_true(fabs(sum2 / n - 1.0) < 5.0 * sqrt(2.0 / n));
  assert_true(PLT_MixSeed(1, 1) != PLT_MixSeed(1, 2));
  assert_true(PLT_MixSeed(1, 1) != PLT_MixSeed(2, 1));
  assert_true(PLT_HashName("a") != PLT_HashName("b"));
}

/* The piezo lag is first order with time constant piezo_lag_ms, exact for
   any step size. */
static void
test_lag_time_constant(void **state)
{
  CNF_Laser cfg = quiet_laser("lag", 1);
  PLT_Laser *one, *many;
  PLT_Truth t1, t2;
  const double tau = 0.050;

  (void)state;
  cfg.sim.piezo_lag_ms = tau * 1e3;
  one = PLT_CreateLaser(&cfg, 7);
  many = PLT_CreateLaser(&cfg, 7);
  assert_non_null(one);
  assert_non_null(many);

  PLT_SetPiezo(one, 1.0, 6.0);
  PLT_SetPiezo(many, 1.0, 6.0);
  PLT_GetTruth(one, 1.0, &t1);
  assert_near(t1.piezo_lag_v, 5.0, 1e-12);
  assert_near(t1.piezo_v, 6.0, 1e-12);

  /* one time constant: 1 - 1/e of the step, in one call or 1000 small ones */
  PLT_GetTruth(one, 1.0 + tau, &t1);
  for (int i = 1; i <= 1000; i++)
    PLT_Advance(many, 1.0 + tau * i / 1000.0);
  PLT_GetTruth(many, 1.0 + tau, &t2);
  assert_near(t1.piezo_lag_v - 5.0, 1.0 - exp(-1.0), 1e-9);
  assert_near(t2.piezo_lag_v, t1.piezo_lag_v, 1e-9);
  assert_near(t1.error_mhz, 300.0 * (1.0 - exp(-1.0)), 1e-6);

  /* three time constants */
  PLT_GetTruth(one, 1.0 + 3 * tau, &t1);
  assert_near(t1.piezo_lag_v - 5.0, 1.0 - exp(-3.0), 1e-9);

  /* the current lag is separate */
  PLT_DestroyLaser(one);
  cfg.current.present = 1;
  cfg.current.start_v = 0.0;
  cfg.sim.current_lag_ms = 100.0;
  one = PLT_CreateLaser(&cfg, 7);
  PLT_SetCurrent(one, 2.0, 1.0);
  PLT_GetTruth(one, 2.1, &t1);
  assert_near(t1.current_lag_v, 1.0 - exp(-1.0), 1e-9);
  assert_near(t1.error_mhz, 50.0 * (1.0 - exp(-1.0)), 1e-6);
  PLT_DestroyLaser(one);
  PLT_DestroyLaser(many);
}

/* Steady state: the frequency moves by piezo_mhz_per_v per volt (and
   current_mhz_per_v per volt of current), relative to start_v. */
static void
test_steady_state_gain(void **state)
{
  CNF_Laser cfg = quiet_laser("gain", 1);
  PLT_Laser *l;
  PLT_Truth t;
  double f0;

  (void)state;
  cfg.sim.offset_mhz = 123.0;
  cfg.sim.piezo_mhz_per_v = 250.0;
  cfg.current.present = 1;
  cfg.current.start_v = -0.5;
  cfg.sim.current_mhz_per_v = -40.0;
  l = PLT_CreateLaser(&cfg, 3);

  PLT_GetTruth(l, 0.5, &t);
  assert_near(t.error_mhz, 123.0, 1e-9);
  f0 = t.true_thz;
  assert_near(f0, 384.2304844 + 123e-6, 1e-12);

  PLT_SetPiezo(l, 1.0, 7.0);
  PLT_GetTruth(l, 2.0, &t);
  assert_near(t.error_mhz - 123.0, 2.0 * 250.0, 1e-6);
  assert_near((t.true_thz - f0) * 1e6, 500.0, 1e-3);

  PLT_SetPiezo(l, 2.0, 4.0);
  PLT_GetTruth(l, 3.0, &t);
  assert_near(t.error_mhz - 123.0, -250.0, 1e-6);

  PLT_SetCurrent(l, 3.0, 0.5);
  PLT_GetTruth(l, 10.0, &t);
  assert_near(t.error_mhz - 123.0, -250.0 + 1.0 * -40.0, 1e-6);

  /* non-finite commands are ignored */
  PLT_SetPiezo(l, 10.0, (double)NAN);
  PLT_GetTruth(l, 11.0, &t);
  assert_near(t.piezo_v, 4.0, 1e-12);
  PLT_DestroyLaser(l);
}

/* Random walk: variance across seeds grows as walk^2 * t. */
static void
test_random_walk_variance(void **state)
{
  const int nseeds = 1000;
  const double walk = 2.0, t1 = 10.0, t2 = 40.0;
  double s1 = 0.0, q1 = 0.0, s2 = 0.0, q2 = 0.0;

  (void)state;
  for (int seed = 0; seed < nseeds; seed++) {
    CNF_Laser cfg = quiet_laser("walk", 1);
    PLT_Laser *l;
    PLT_Truth t;

    cfg.sim.walk_mhz_rts = walk;
    l = PLT_CreateLaser(&cfg, (uint64_t)seed);
    PLT_GetTruth(l, t1, &t);
    s1 += t.error_mhz;
    q1 += t.error_mhz * t.error_mhz;
    PLT_GetTruth(l, t2, &t);
    s2 += t.error_mhz;
    q2 += t.error_mhz * t.error_mhz;
    PLT_DestroyLaser(l);
  }
  double v1 = q1 / nseeds - (s1 / nseeds) * (s1 / nseeds);
  double v2 = q2 / nseeds - (s2 / nseeds) * (s2 / nseeds);

  /* relative standard error of a variance estimate: sqrt(2/n) = 4.5 % */
  print_message("# walk variance %.1f (want %.1f) and %.1f (want %.1f)\n", v1, walk * walk * t1,
                v2, walk * walk * t2);
  assert_true(fabs(v1 / (walk * walk * t1) - 1.0) < 0.2);
  assert_true(fabs(v2 / (walk * walk * t2) - 1.0) < 0.2);
  /* the mean stays near 0: |mean| < 5 sigma/sqrt(n) */
  assert_true(fabs(s2 / nseeds) < 5.0 * walk * sqrt(t2) / sqrt(nseeds));
}

/* Slow sine and linear drift, and drift steps. */
static void
test_deterministic_drift(void **state)
{
  CNF_Laser cfg = quiet_laser("slow", 1);
  PLT_Laser *l;
  PLT_Truth t;
  double lo = HUGE_VAL, hi = -HUGE_VAL;

  (void)state;
  cfg.sim.linear_mhz_per_h = 20.0;
  l = PLT_CreateLaser(&cfg, 1);
  PLT_GetTruth(l, 1800.0, &t);
  assert_near(t.error_mhz, 10.0, 1e-9);
  PLT_StepDrift(l, 1800.0, -4.5);
  PLT_GetTruth(l, 3600.0, &t);
  assert_near(t.error_mhz, 20.0 - 4.5, 1e-9);
  assert_near(t.drift_mhz, 20.0 - 4.5, 1e-9);
  PLT_DestroyLaser(l);

  cfg.sim.linear_mhz_per_h = 0.0;
  cfg.sim.sine_mhz = 5.0;
  cfg.sim.sine_period_s = 100.0;
  l = PLT_CreateLaser(&cfg, 1);
  for (int i = 0; i <= 1000; i++) {
    PLT_GetTruth(l, i * 0.1, &t);
    lo = fmin(lo, t.error_mhz);
    hi = fmax(hi, t.error_mhz);
  }
  assert_near(hi, 5.0, 0.01);
  assert_near(lo, -5.0, 0.01);
  PLT_GetTruth(l, 100.0 + 37.0, &t);
  {
    double later = t.error_mhz;

    PLT_GetTruth(l, 200.0 + 37.0, &t);
    assert_near(t.error_mhz, later, 1e-6);
  }
  PLT_DestroyLaser(l);
}

/* Wavemeter noise is Gaussian with rms noise_mhz. */
static void
test_noise_rms(void **state)
{
  CNF_Laser cfg = quiet_laser("noisy", 4);
  PLT_Laser *l;
  PLT_Wavemeter *wm;
  PLT_Reading r;
  const int n = 20000;
  double sum = 0.0, sum2 = 0.0, sum_direct = 0.0;

  (void)state;
  cfg.sim.noise_mhz = 3.0;
  cfg.sim.walk_mhz_rts = 2.0;     /* the noise is relative to the true frequency */
  l = PLT_CreateLaser(&cfg, 11);
  wm = PLT_CreateWavemeter(&l, 1, 1.0, 11);
  for (int i = 0; i < n; i++) {
    assert_int_equal(PLT_TakeReading(wm, &r), 0);
    assert_int_equal(r.channel, 4);
    assert_true(r.value > 0.0);
    sum += r.noise_mhz;
    sum2 += r.noise_mhz * r.noise_mhz;
    sum_direct += ((r.value - r.true_thz) * 1e6 - r.noise_mhz) *
                  ((r.value - r.true_thz) * 1e6 - r.noise_mhz);
  }
  double rms = sqrt(sum2 / n);

  print_message("# noise rms %.4f MHz (want 3)\n", rms);
  assert_true(fabs(rms / 3.0 - 1.0) < 0.03);
  assert_true(fabs(sum / n) < 5.0 * 3.0 / sqrt(n));
  /* value - true frequency is the noise (up to double rounding at 384 THz) */
  assert_true(sqrt(sum_direct / n) < 1e-3);
  PLT_DestroyWavemeter(wm);
  PLT_DestroyLaser(l);
}

static void
make_three(PLT_Laser *l[3], uint64_t seed)
{
  static const char *const names[3] = { "alpha", "beta", "gamma" };
  static const int channels[3] = { 5, 2, 9 };

  for (int i = 0; i < 3; i++) {
    CNF_Laser cfg = quiet_laser(names[i], channels[i]);

    cfg.sim.walk_mhz_rts = 2.0;
    cfg.sim.sine_mhz = 5.0;
    cfg.sim.linear_mhz_per_h = 20.0;
    cfg.sim.noise_mhz = 1.0;
    cfg.sim.modehop_per_h = 600.0;
    cfg.sim.error_rate = 0.05;
    l[i] = PLT_CreateLaser(&cfg, seed);
    assert_non_null(l[i]);
  }
}

/* The same seed gives the same readings, however often the truth is looked
   at in between; another seed gives other readings. */
static void
test_replay(void **state)
{
  PLT_Laser *a[3], *b[3], *c[3];
  PLT_Wavemeter *wa, *wb, *wc;
  PLT_Reading ra, rb, rc;
  int differ = 0;

  (void)state;
  make_three(a, 99);
  make_three(b, 99);
  make_three(c, 100);
  wa = PLT_CreateWavemeter(a, 3, 1.0, 99);
  wb = PLT_CreateWavemeter(b, 3, 1.0, 99);
  wc = PLT_CreateWavemeter(c, 3, 1.0, 100);
  for (int i = 0; i < 5000; i++) {
    PLT_Truth t;

    /* b is looked at at odd times; a is not */
    if (i % 7 == 3)
      PLT_GetTruth(b[i % 3], PLT_NextReadingTime(wb) - 0.0037, &t);
    assert_int_equal(PLT_TakeReading(wa, &ra), 0);
    assert_int_equal(PLT_TakeReading(wb, &rb), 0);
    assert_int_equal(PLT_TakeReading(wc, &rc), 0);
    assert_int_equal(ra.channel, rb.channel);
    assert_true(ra.t == rb.t);
    assert_true(ra.value == rb.value);
    assert_true(ra.true_thz == rb.true_thz);
    if (ra.value != rc.value)
      differ++;
  }
  assert_true(differ > 4500);
  for (int i = 0; i < 3; i++) {
    PLT_Truth ta, tb;

    PLT_GetTruth(a[i], 100.0, &ta);
    PLT_GetTruth(b[i], 100.0, &tb);
    assert_true(ta.true_thz == tb.true_thz);
    assert_true(ta.hops == tb.hops);
    PLT_DestroyLaser(a[i]);
    PLT_DestroyLaser(b[i]);
    PLT_DestroyLaser(c[i]);
  }
  PLT_DestroyWavemeter(wa);
  PLT_DestroyWavemeter(wb);
  PLT_DestroyWavemeter(wc);
}

/* A mode hop shifts the frequency by its size for modehop_s, then the laser
   falls back; spontaneous hops come at modehop_per_h with both signs. */
static void
test_mode_hop(void **state)
{
  CNF_Laser cfg = quiet_laser("hop", 1);
  PLT_Laser *l;
  PLT_Truth t;
  unsigned long up = 0, down = 0;
  double last = 0.0;

  (void)state;
  cfg.sim.modehop_s = 3.0;
  l = PLT_CreateLaser(&cfg, 5);
  PLT_GetTruth(l, 10.0, &t);
  assert_int_equal(t.mode_hop, 0);
  assert_near(t.error_mhz, 0.0, 1e-9);

  PLT_StartHop(l, 10.0, -6000.0);
  PLT_GetTruth(l, 10.0, &t);
  assert_int_equal(t.mode_hop, 1);
  assert_near(t.error_mhz, -6000.0, 1e-9);
  assert_int_equal(t.hops, 1);
  PLT_GetTruth(l, 12.999, &t);
  assert_int_equal(t.mode_hop, 1);
  assert_near(t.hop_mhz, -6000.0, 1e-9);
  PLT_GetTruth(l, 13.001, &t);
  assert_int_equal(t.mode_hop, 0);
  assert_near(t.error_mhz, 0.0, 1e-9);
  PLT_DestroyLaser(l);

  /* spontaneous: 1 per second for 2000 s -> 2000 +- 5*sqrt(2000) */
  cfg.sim.modehop_per_h = 3600.0;
  cfg.sim.modehop_s = 0.2;
  cfg.sim.modehop_mhz = 9000.0;
  l = PLT_CreateLaser(&cfg, 6);
  for (int i = 1; i <= 200000; i++) {
    PLT_GetTruth(l, i * 0.01, &t);
    if (t.mode_hop && t.hop_mhz != last) {
      assert_near(fabs(t.hop_mhz), 9000.0, 1e-9);
      if (t.hop_mhz > 0)
        up++;
      else
        down++;
    }
    last = t.mode_hop ? t.hop_mhz : 0.0;
  }
  print_message("# %lu hops (%lu up, %lu down) in 2000 s\n", t.hops, up, down);
  assert_true(fabs((double)t.hops - 2000.0) < 5.0 * sqrt(2000.0));
  assert_true(up > 200 && down > 200);
  PLT_DestroyLaser(l);
}

/* Persistent hops (modehop_free_v > 0): a hop on command stays until the
   tuning moves back past the hop point by hysteresis_v (not before, however
   long), tuning past the window's edge hops back by one mode and returns
   only hysteresis_v inside the edge, the current counts through the ratio of
   the gains, and spontaneous hops stay too. */
static void
test_mode_hop_persistent(void **state)
{
  CNF_Laser cfg = quiet_laser("ecdl", 1);
  PLT_Laser *l;
  PLT_Truth t;
  unsigned long up = 0, down = 0;

  (void)state;
  cfg.sim.modehop_free_v = 4.0;     /* window 3..7 V */
  cfg.sim.hysteresis_v = 0.5;
  l = PLT_CreateLaser(&cfg, 5);

  /* on command, the frequency jumping down (against a positive tuning):
     the kind of the upper edge, back below 5.0 - 0.5 V */
  PLT_StartHop(l, 1.0, -8000.0);
  PLT_GetTruth(l, 100.0, &t);
  assert_int_equal(t.mode_hop, 1);
  assert_int_equal(t.mode, 1);
  assert_near(t.hop_mhz, -8000.0, 1e-9);
  assert_int_equal(t.hops, 1);
  PLT_SetPiezo(l, 100.0, 5.4);          /* the wrong way: stays */
  PLT_GetTruth(l, 101.0, &t);
  assert_int_equal(t.mode, 1);
  PLT_SetPiezo(l, 101.0, 4.6);          /* not far enough */
  PLT_GetTruth(l, 102.0, &t);
  assert_int_equal(t.mode, 1);
  assert_near(t.error_mhz, -8000.0 - 0.4 * 300.0, 1e-6);
  PLT_SetPiezo(l, 102.0, 4.45);         /* past the hysteresis point */
  PLT_GetTruth(l, 103.0, &t);
  assert_int_equal(t.mode, 0);
  assert_int_equal(t.mode_hop, 0);
  assert_near(t.error_mhz, -0.55 * 300.0, 1e-6);
  PLT_SetPiezo(l, 103.0, 5.0);          /* back at the start: still the right mode */
  PLT_GetTruth(l, 104.0, &t);
  assert_int_equal(t.mode, 0);
  assert_near(t.error_mhz, 0.0, 1e-6);

  /* the other kind: back above 5.0 + 0.5 V */
  PLT_StartHop(l, 104.0, 8000.0);
  PLT_SetPiezo(l, 104.0, 4.0);
  PLT_GetTruth(l, 105.0, &t);
  assert_int_equal(t.mode, -1);
  assert_near(t.hop_mhz, 8000.0, 1e-9);
  PLT_SetPiezo(l, 105.0, 5.51);
  PLT_GetTruth(l, 106.0, &t);
  assert_int_equal(t.mode, 0);

  /* the window's upper edge at 7 V: hop, return below 6.5 V */
  PLT_SetPiezo(l, 106.0, 7.1);
  PLT_GetTruth(l, 107.0, &t);
  assert_int_equal(t.mode, 1);
  assert_near(t.hop_mhz, -8000.0, 1e-9);
  PLT_SetPiezo(l, 107.0, 6.6);
  PLT_GetTruth(l, 108.0, &t);
  assert_int_equal(t.mode, 1);
  PLT_SetPiezo(l, 108.0, 6.4);
  PLT_GetTruth(l, 109.0, &t);
  assert_int_equal(t.mode, 0);
  /* the lower edge at 3 V: hop up, return above 3.5 V */
  PLT_SetPiezo(l, 109.0, 2.9);
  PLT_GetTruth(l, 110.0, &t);
  assert_int_equal(t.mode, -1);
  assert_near(t.hop_mhz, 8000.0, 1e-9);
  PLT_SetPiezo(l, 110.0, 3.6);
  PLT_GetTruth(l, 111.0, &t);
  assert_int_equal(t.mode, 0);
  assert_int_equal(t.hops, 4);
  PLT_DestroyLaser(l);

  /* a negative tuning: the upper edge's hop jumps up */
  cfg.sim.piezo_mhz_per_v = -300.0;
  l = PLT_CreateLaser(&cfg, 5);
  PLT_SetPiezo(l, 1.0, 7.1);
  PLT_GetTruth(l, 2.0, &t);
  assert_int_equal(t.mode, 1);
  assert_near(t.hop_mhz, 8000.0, 1e-9);
  PLT_DestroyLaser(l);
  cfg.sim.piezo_mhz_per_v = 300.0;

  /* the current moves the tuning too: 1 V of current at -150 MHz/V is
     -0.5 V of piezo */
  cfg.current.present = 1;
  cfg.current.start_v = 0.0;
  cfg.sim.current_mhz_per_v = -150.0;
  l = PLT_CreateLaser(&cfg, 5);
  PLT_StartHop(l, 1.0, -8000.0);        /* back below x = -0.5 */
  PLT_SetCurrent(l, 1.0, 0.9);
  PLT_GetTruth(l, 3.0, &t);
  assert_int_equal(t.mode, 1);
  PLT_SetCurrent(l, 3.0, 1.1);
  PLT_GetTruth(l, 5.0, &t);
  assert_near(t.tuning_v, -0.55, 1e-6);
  assert_int_equal(t.mode, 0);
  PLT_DestroyLaser(l);
  cfg.current.present = 0;

  /* spontaneous hops stay: one per 100 s on average for 2000 s, the piezo
     swept back and forth by 1 V every 50 s to heal them */
  cfg.sim.modehop_per_h = 36.0;
  l = PLT_CreateLaser(&cfg, 7);
  for (int i = 1; i <= 2000; i++) {
    int before;

    PLT_GetTruth(l, i - 0.5, &t);
    before = t.mode;
    PLT_GetTruth(l, (double)i, &t);
    if (t.mode != 0 && before == 0) {
      if (t.mode > 0)
        up++;
      else
        down++;
      assert_near(fabs(t.hop_mhz), 8000.0, 1e-9);
    }
    if (i % 50 == 0) {
      PLT_SetPiezo(l, (double)i, 4.0);
      PLT_GetTruth(l, i + 0.1, &t);
      PLT_SetPiezo(l, i + 0.1, 6.0);
      PLT_GetTruth(l, i + 0.2, &t);
      PLT_SetPiezo(l, i + 0.2, 5.0);
      PLT_GetTruth(l, i + 0.3, &t);
      assert_int_equal(t.mode, 0);
    }
  }
  print_message("# persistent: %lu hops (%lu up, %lu down) in 2000 s\n", t.hops, up, down);
  assert_true(t.hops >= 5 && t.hops <= 45);
  assert_true(up > 0 && down > 0);
  PLT_DestroyLaser(l);
}

/* error_rate is the fraction of error codes; they are mostly -3 and -4. */
static void
test_error_rate(void **state)
{
  CNF_Laser cfg = quiet_laser("err", 1);
  PLT_Laser *l;
  PLT_Wavemeter *wm;
  PLT_Reading r;
  const int n = 20000;
  int errors = 0, exposure = 0;

  (void)state;
  cfg.sim.error_rate = 0.1;
  cfg.sim.noise_mhz = 1.0;
  l = PLT_CreateLaser(&cfg, 8);
  wm = PLT_CreateWavemeter(&l, 1, 1.0, 8);
  for (int i = 0; i < n; i++) {
    PLT_TakeReading(wm, &r);
    if (r.value <= 0.0) {
      errors++;
      assert_true(r.value == -1 || r.value == -2 || r.value == -3 || r.value == -4);
      if (r.value == -3 || r.value == -4)
        exposure++;
    } else {
      assert_near(r.value, 384.2304844, 20e-6);
    }
  }
  print_message("# %d errors in %d readings\n", errors, n);
  /* sigma = sqrt(n p (1-p)) = 42 */
  assert_true(abs(errors - 2000) < 250);
  assert_true(exposure > errors * 8 / 10);
  PLT_DestroyWavemeter(wm);
  PLT_DestroyLaser(l);
}

/* Channels are read in increasing order, each taking switch + exposure. */
static void
test_channel_cycle(void **state)
{
  CNF_Laser cfg[3];
  PLT_Laser *l[3];
  PLT_Wavemeter *wm;
  PLT_Reading r;
  static const int want_channel[6] = { 2, 5, 9, 2, 5, 9 };
  /* exposures: channel 5: 10 ms, channel 2: 20 ms, channel 9: 5 ms; switch 2 ms */
  static const double want_ms[6] = { 22, 34, 41, 63, 75, 82 };
  static const int want_laser[3] = { 1, 0, 2 };

  (void)state;
  cfg[0] = quiet_laser("a", 5);
  cfg[0].sim.exposure_ms = 10.0;
  cfg[1] = quiet_laser("b", 2);
  cfg[1].sim.exposure_ms = 20.0;
  cfg[2] = quiet_laser("c", 9);
  cfg[2].sim.exposure_ms = 5.0;
  for (int i = 0; i < 3; i++)
    l[i] = PLT_CreateLaser(&cfg[i], 1);
  wm = PLT_CreateWavemeter(l, 3, 2.0, 1);
  assert_near(PLT_NextReadingTime(wm), 0.022, 1e-12);
  for (int i = 0; i < 6; i++) {
    PLT_TakeReading(wm, &r);
    assert_int_equal(r.channel, want_channel[i]);
    assert_near(r.t * 1e3, want_ms[i], 1e-9);
    assert_int_equal(r.laser, want_laser[i % 3]);
  }
  /* 1000 cycles later the cadence still holds */
  for (int i = 0; i < 3000; i++)
    PLT_TakeReading(wm, &r);
  assert_near(r.t * 1e3, 82.0 + 1000 * 41.0, 1e-6);
  PLT_DestroyWavemeter(wm);
  for (int i = 0; i < 3; i++)
    PLT_DestroyLaser(l[i]);

  /* no lasers: no readings */
  wm = PLT_CreateWavemeter(NULL, 0, 1.0, 1);
  assert_true(isinf(PLT_NextReadingTime(wm)));
  assert_int_equal(PLT_TakeReading(wm, &r), -1);
  assert_int_equal(PLT_Dropout(wm, 1, 1.0, -1), -1);
  PLT_DestroyWavemeter(wm);
}

/* A dropout gives its code on that channel only, until it ends; later
   readings are the same as without the dropout. */
static void
test_dropout(void **state)
{
  PLT_Laser *a[3], *b[3];
  PLT_Wavemeter *wa, *wb;
  PLT_Reading ra, rb;
  int coded = 0;

  (void)state;
  make_three(a, 5);
  make_three(b, 5);
  wa = PLT_CreateWavemeter(a, 3, 1.0, 5);
  wb = PLT_CreateWavemeter(b, 3, 1.0, 5);
  assert_int_equal(PLT_Dropout(wa, 7, 2.0, -1), -1);
  assert_int_equal(PLT_Dropout(wa, 5, 2.0, -6), 0);
  for (int i = 0; i < 600; i++) {
    PLT_TakeReading(wa, &ra);
    PLT_TakeReading(wb, &rb);
    if (ra.channel == 5 && ra.t < 2.0) {
      assert_true(ra.value == -6);
      coded++;
    } else {
      assert_true(ra.value == rb.value);
    }
  }
  assert_true(coded > 50);
  assert_true(ra.t > 2.0);
  assert_int_equal(PLT_Dropout(wa, 0, ra.t + 1.0, 0), 0);
  for (int i = 0; i < 30; i++) {
    PLT_TakeReading(wa, &ra);
    assert_true(ra.value == 0);
  }
  for (int i = 0; i < 3; i++) {
    PLT_DestroyLaser(a[i]);
    PLT_DestroyLaser(b[i]);
  }
  PLT_DestroyWavemeter(wa);
  PLT_DestroyWavemeter(wb);
}

/* ---- calibration error and reference lasers ---------------------------- */

/* Without calibration parameters the wavemeter is perfect: eps is 0 and the
   readings are the true frequency plus the noise, as before. */
static void
test_calib_default_perfect(void **state)
{
  PLT_Laser *l[3];
  PLT_Wavemeter *wm;
  PLT_CalibState cs;
  PLT_Reading r;

  (void)state;
  make_three(l, 5);
  wm = PLT_CreateWavemeter(l, 3, 1.0, 5);
  for (int i = 0; i < 3000; i++) {
    assert_int_equal(PLT_TakeReading(wm, &r), 0);
    assert_true(r.calib_ppb == 0.0 && r.calib_mhz == 0.0);
    if (r.value > 0.0)
      assert_near((r.value - r.true_thz) * 1e6, r.noise_mhz, 1e-3);
  }
  PLT_GetCalibration(wm, 1e4, &cs);
  assert_true(cs.ppb == 0.0 && cs.walk_ppb == 0.0 && cs.linear_ppb == 0.0);
  PLT_DestroyWavemeter(wm);
  for (int i = 0; i < 3; i++)
    PLT_DestroyLaser(l[i]);
}

/* Offset plus linear rate: exact at any time; a rate change keeps eps
   continuous; a step moves it at once by exactly the step. */
static void
test_calib_linear_and_step(void **state)
{
  PLT_Laser *l = PLT_CreateReference("ref", 8, 384.2304844, 0.0, 10.0, 3);
  PLT_Wavemeter *wm = PLT_CreateWavemeter(&l, 1, 1.0, 3);
  PLT_CalibParams p = { .offset_ppb = 5.0, .rate_ppb_per_min = 40.0 / 0.384, .walk_ppb_rts = 0.0 };
  PLT_CalibState cs;
  double at30, at60;

  (void)state;
  PLT_SetCalibration(wm, &p, 3);
  PLT_GetCalibration(wm, 0.0, &cs);
  assert_near(cs.ppb, 5.0, 1e-12);
  PLT_GetCalibration(wm, 30.0, &cs);
  at30 = cs.ppb;
  assert_near(cs.ppb, 5.0 + p.rate_ppb_per_min * 0.5, 1e-9);
  assert_near(cs.linear_ppb, p.rate_ppb_per_min * 0.5, 1e-9);
  PLT_GetCalibration(wm, 60.0, &cs);
  at60 = cs.ppb;
  /* 40 MHz per minute at 384 THz */
  assert_near(PLT_PPB_TO_MHZ(at60 - 5.0, 384.0), 40.0, 1e-9);
  assert_near(at60 - at30, p.rate_ppb_per_min * 0.5, 1e-9);

  /* an earlier time is evaluated at the latest */
  PLT_GetCalibration(wm, 10.0, &cs);
  assert_near(cs.t, 60.0, 0.0);
  assert_near(cs.ppb, at60, 0.0);

  PLT_StepCalibration(wm, 60.0, -12.5);
  PLT_GetCalibration(wm, 60.0, &cs);
  assert_near(cs.ppb, at60 - 12.5, 1e-9);
  assert_near(cs.steps_ppb, -12.5, 0.0);

  PLT_SetCalibrationRate(wm, 60.0, -20.0);
  PLT_GetCalibration(wm, 60.0, &cs);
  assert_near(cs.ppb, at60 - 12.5, 1e-9);          /* continuous */
  assert_near(cs.rate_ppb_per_min, -20.0, 0.0);
  PLT_GetCalibration(wm, 90.0, &cs);
  assert_near(cs.ppb, at60 - 12.5 - 10.0, 1e-9);
  PLT_SetCalibrationRate(wm, 90.0, NAN);            /* ignored */
  PLT_StepCalibration(wm, 90.0, INFINITY);          /* ignored */
  PLT_GetCalibration(wm, 120.0, &cs);
  assert_near(cs.ppb, at60 - 12.5 - 20.0, 1e-9);
  PLT_DestroyWavemeter(wm);
  PLT_DestroyLaser(l);
}

/* Every channel reads f_true * (1 + eps): the same relative error on lasers
   at different frequencies, a reference laser included. */
static void
test_calib_common_relative_error(void **state)
{
  CNF_Laser cfg[2] = { quiet_laser("red", 1), quiet_laser("blue", 3) };
  PLT_Laser *l[3];
  PLT_Wavemeter *wm;
  PLT_CalibParams p = { .offset_ppb = -30.0, .rate_ppb_per_min = 600.0, .walk_ppb_rts = 0.5 };
  PLT_Reading r;
  double worst = 0.0;
  int seen[3] = { 0, 0, 0 };

  (void)state;
  cfg[0].setpoint_thz = 351.7251;
  cfg[1].setpoint_thz = 751.5;
  cfg[0].sim.walk_mhz_rts = 2.0;     /* the true frequencies move too */
  cfg[1].sim.linear_mhz_per_h = 500.0;
  l[0] = PLT_CreateLaser(&cfg[0], 21);
  l[1] = PLT_CreateLaser(&cfg[1], 21);
  l[2] = PLT_CreateReference("ref", 8, 384.2304844, 0.0, 10.0, 21);
  assert_non_null(l[2]);
  assert_true(PLT_LaserIsReference(l[2]) && !PLT_LaserIsReference(l[0]));
  wm = PLT_CreateWavemeter(l, 3, 1.0, 21);
  PLT_SetCalibration(wm, &p, 21);
  for (int i = 0; i < 30000; i++) {      /* 330 s */
    double rel;

    assert_int_equal(PLT_TakeReading(wm, &r), 0);
    assert_true(r.value > 0.0);
    seen[r.laser]++;
    /* no noise configured: value / true - 1 is eps exactly (to rounding) */
    rel = (r.value - r.true_thz) / r.true_thz * 1e9;
    worst = fmax(worst, fabs(rel - r.calib_ppb));
    assert_near(r.calib_mhz, r.calib_ppb * r.true_thz * 1e-3, 1e-9);
    if (r.laser == 2)
      assert_near(r.true_thz, 384.2304844, 0.0);
  }
  print_message("# relative error vs eps: worst %.3g ppb, eps at the end %.3f ppb\n", worst,
                r.calib_ppb);
  assert_true(worst < 1e-6);
  assert_true(seen[0] == 10000 && seen[1] == 10000 && seen[2] == 10000);
  /* linear dominates after 330 s: -30 + 3300 ppb plus a walk of ~9 ppb rms */
  assert_true(fabs(r.calib_ppb - (-30.0 + 600.0 * r.t / 60.0)) < 60.0);
  PLT_DestroyWavemeter(wm);
  for (int i = 0; i < 3; i++)
    PLT_DestroyLaser(l[i]);
}

/* The walk: variance walk^2 * t across seeds, increments of the right size
   along one run, replayable, independent of how often it is looked at. */
static void
test_calib_walk(void **state)
{
  const int nseeds = 1000;
  const double walk = 2.0, t1 = 10.0;
  PLT_CalibParams p = { .walk_ppb_rts = walk };
  PLT_Laser *l = PLT_CreateReference("ref", 8, 384.2304844, 0.0, 10.0, 1);
  PLT_CalibState cs;
  double s = 0.0, q = 0.0, prev, inc2 = 0.0, fine, coarse;
  int n_inc = 0;

  (void)state;
  for (int seed = 0; seed < nseeds; seed++) {
    PLT_Wavemeter *wm = PLT_CreateWavemeter(&l, 1, 1.0, (uint64_t)seed);

    PLT_SetCalibration(wm, &p, (uint64_t)seed);
    PLT_GetCalibration(wm, t1, &cs);
    assert_near(cs.ppb, cs.walk_ppb, 0.0);
    s += cs.ppb;
    q += cs.ppb * cs.ppb;
    PLT_DestroyWavemeter(wm);
  }
  double v = q / nseeds - (s / nseeds) * (s / nseeds);

  print_message("# calibration walk variance at %g s: %.2f ppb^2 (want %.2f)\n", t1, v,
                walk * walk * t1);
  assert_true(fabs(v / (walk * walk * t1) - 1.0) < 0.2);
  assert_true(fabs(s / nseeds) < 5.0 * walk * sqrt(t1) / sqrt(nseeds));

  /* one hour of one run: 1 s increments have variance walk^2 */
  {
    PLT_Wavemeter *wm = PLT_CreateWavemeter(&l, 1, 1.0, 77);

    PLT_SetCalibration(wm, &p, 77);
    PLT_GetCalibration(wm, 0.0, &cs);
    prev = cs.ppb;
    for (int i = 1; i <= 3600; i++) {
      PLT_GetCalibration(wm, (double)i, &cs);
      inc2 += (cs.ppb - prev) * (cs.ppb - prev);
      prev = cs.ppb;
      n_inc++;
    }
    coarse = cs.ppb;
    print_message("# 1 s increments: rms %.3f ppb (want %.3f)\n", sqrt(inc2 / n_inc), walk);
    assert_true(fabs(inc2 / n_inc / (walk * walk) - 1.0) < 0.1);
    PLT_DestroyWavemeter(wm);

    /* the same seed looked at every 7 ms instead: the same value at 3600 s */
    wm = PLT_CreateWavemeter(&l, 1, 1.0, 77);
    PLT_SetCalibration(wm, &p, 77);
    for (double t = 0.0; t < 3600.0; t += 0.007)
      PLT_GetCalibration(wm, t, &cs);
    PLT_GetCalibration(wm, 3600.0, &cs);
    fine = cs.ppb;
    assert_near(fine, coarse, 1e-9);
    PLT_DestroyWavemeter(wm);

    /* another seed: another walk */
    wm = PLT_CreateWavemeter(&l, 1, 1.0, 78);
    PLT_SetCalibration(wm, &p, 78);
    PLT_GetCalibration(wm, 3600.0, &cs);
    assert_true(fabs(cs.ppb - coarse) > 1e-6);
    PLT_DestroyWavemeter(wm);
  }
  PLT_DestroyLaser(l);
}

/* A reference laser: fixed frequency for ever, whatever is commanded. */
static void
test_reference_laser(void **state)
{
  PLT_Laser *l = PLT_CreateReference("ref", 8, 384.2304844, 2.0, 25.0, 9);
  PLT_Wavemeter *wm;
  PLT_Truth t;
  PLT_Reading r;
  double sum2 = 0.0;

  (void)state;
  assert_string_equal(PLT_LaserName(l), "ref");
  assert_int_equal(PLT_LaserChannel(l), 8);
  PLT_SetPiezo(l, 1.0, 9.0);
  PLT_SetCurrent(l, 2.0, 3.0);
  for (int i = 0; i <= 100; i++) {
    PLT_GetTruth(l, 36.0 * 3600.0 * i / 100.0, &t);
    assert_near(t.true_thz, 384.2304844, 0.0);
    assert_near(t.error_mhz, 0.0, 0.0);
    assert_int_equal(t.mode_hop, 0);
  }
  PLT_DestroyLaser(l);

  l = PLT_CreateReference("ref", 8, 384.2304844, 2.0, 25.0, 9);
  wm = PLT_CreateWavemeter(&l, 1, 1.0, 9);
  for (int i = 0; i < 4000; i++) {
    assert_int_equal(PLT_TakeReading(wm, &r), 0);
    assert_int_equal(r.channel, 8);
    assert_near(r.t, 0.026 * (i + 1), 1e-9);
    sum2 += r.noise_mhz * r.noise_mhz;
  }
  assert_true(fabs(sqrt(sum2 / 4000) / 2.0 - 1.0) < 0.05);
  PLT_DestroyWavemeter(wm);
  PLT_DestroyLaser(l);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_rng),
    cmocka_unit_test(test_lag_time_constant),
    cmocka_unit_test(test_steady_state_gain),
    cmocka_unit_test(test_random_walk_variance),
    cmocka_unit_test(test_deterministic_drift),
    cmocka_unit_test(test_noise_rms),
    cmocka_unit_test(test_replay),
    cmocka_unit_test(test_mode_hop),
    cmocka_unit_test(test_mode_hop_persistent),
    cmocka_unit_test(test_error_rate),
    cmocka_unit_test(test_channel_cycle),
    cmocka_unit_test(test_dropout),
    cmocka_unit_test(test_calib_default_perfect),
    cmocka_unit_test(test_calib_linear_and_step),
    cmocka_unit_test(test_calib_common_relative_error),
    cmocka_unit_test(test_calib_walk),
    cmocka_unit_test(test_reference_laser),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
