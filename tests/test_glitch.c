/* test_glitch.c - glitch rejection of wavemeter readings (src/glitch.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "glitch.h"

#define LIM 500.0

/* A filter that has let 1000 MHz through. */
static void
started(GLT_Filter *f)
{
  GLT_Init(f);
  assert_int_equal(GLT_Feed(f, LIM, 1, 1000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(f, LIM, 1, 1001.0), GLT_USE_HELD | GLT_USE);
  assert_int_equal(f->glitches, 0);
}

static void
test_first_reading_needs_confirmation(void **state)
{
  GLT_Filter f;

  GLT_Init(&f);
  assert_false(f.have_ref);
  /* no reference: held until the next one agrees */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4000.0), GLT_HOLD);
  /* it does not: dropped, and the new one waits in its turn */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1000.0), GLT_DROP_HELD | GLT_HOLD);
  assert_int_equal(f.glitches, 1);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1010.0), GLT_USE_HELD | GLT_USE);
  assert_true(f.have_ref);
  assert_true(f.ref_mhz == 1010.0);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1020.0), GLT_USE);
  assert_int_equal(f.glitches, 1);
}

static void
test_expected_value(void **state)
{
  GLT_Filter f;

  /* no reference yet: a reading near the expected value goes on at once */
  GLT_Init(&f);
  GLT_Expect(&f, 1000.0);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1100.0), GLT_USE);
  /* with a reference the expectation changes nothing */
  GLT_Expect(&f, 9000.0);
  assert_true(f.ref_mhz == 1100.0);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1110.0), GLT_USE);
  /* a first reading far from the expected value needs confirmation */
  GLT_Init(&f);
  GLT_Expect(&f, 1000.0);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 5000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 5001.0), GLT_USE_HELD | GLT_USE);
  GLT_Expect(&f, NAN);
  assert_true(f.ref_mhz == 5001.0);
  assert_int_equal(f.glitches, 0);
}

static void
test_single_glitch_dropped(void **state)
{
  GLT_Filter f;

  started(&f);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1001.0 + 3000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1002.0), GLT_DROP_HELD | GLT_USE);
  assert_int_equal(f.glitches, 1);
  assert_true(f.ref_mhz == 1002.0);
  /* a glitch below: the same */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1002.0 - 3000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1003.0), GLT_DROP_HELD | GLT_USE);
  assert_int_equal(f.glitches, 2);
  /* exactly the limit away is not a glitch */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1503.0), GLT_USE);
}

static void
test_confirmed_jump(void **state)
{
  GLT_Filter f;

  started(&f);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4001.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4005.0), GLT_USE_HELD | GLT_USE);
  assert_true(f.ref_mhz == 4005.0);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4006.0), GLT_USE);
  assert_int_equal(f.glitches, 0);
}

static void
test_two_glitches_in_a_row_disagreeing(void **state)
{
  GLT_Filter f;

  started(&f);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4000.0), GLT_HOLD);
  /* far from the held one and from the reference: both wrong so far */
  assert_int_equal(GLT_Feed(&f, LIM, 1, -2000.0), GLT_DROP_HELD | GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1002.0), GLT_DROP_HELD | GLT_USE);
  assert_int_equal(f.glitches, 2);
}

static void
test_invalid_in_between(void **state)
{
  GLT_Filter f;

  started(&f);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 4001.0), GLT_HOLD);
  /* error codes go on at once; the held reading waits for a valid one */
  assert_int_equal(GLT_Feed(&f, LIM, 0, -3.0), GLT_USE);
  assert_int_equal(GLT_Feed(&f, LIM, 0, -3.0), GLT_USE);
  assert_true(f.held);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1001.0), GLT_DROP_HELD | GLT_USE);
  assert_int_equal(f.glitches, 1);
  /* and a real jump across an error code is still confirmed */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 9001.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 0, -4.0), GLT_USE);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 9002.0), GLT_USE_HELD | GLT_USE);
  assert_int_equal(f.glitches, 1);
  /* NaN counts as invalid */
  assert_int_equal(GLT_Feed(&f, LIM, 1, NAN), GLT_USE);
  assert_true(f.ref_mhz == 9002.0);
}

static void
test_disabled(void **state)
{
  GLT_Filter f;

  GLT_Init(&f);
  assert_int_equal(GLT_Feed(&f, 0.0, 1, 1000.0), GLT_USE);
  assert_int_equal(GLT_Feed(&f, 0.0, 1, 4000.0), GLT_USE);
  assert_int_equal(GLT_Feed(&f, -1.0, 1, 1000.0), GLT_USE);
  /* switched off with a reading held: it goes on first */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 5000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, 0.0, 1, 1000.0), GLT_USE_HELD | GLT_USE);
  assert_int_equal(f.glitches, 0);
  /* switched back on: the reference is the last one let through */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 1100.0), GLT_USE);
}

static void
test_reset(void **state)
{
  GLT_Filter f;

  started(&f);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 5000.0), GLT_HOLD);
  f.glitches = 7;
  GLT_Reset(&f);
  assert_false(f.held);
  assert_false(f.have_ref);
  assert_int_equal(f.glitches, 7);
  /* a new channel: its first reading needs confirmation */
  assert_int_equal(GLT_Feed(&f, LIM, 1, 200000.0), GLT_HOLD);
  assert_int_equal(GLT_Feed(&f, LIM, 1, 200001.0), GLT_USE_HELD | GLT_USE);
}

/* Many noisy readings with single glitches and real jumps at random places
   (several seeds): every glitch is dropped, every good reading is used once
   and in order, every real jump goes on. */
static void
test_random_sequences(void **state)
{
  unsigned long total_glitches = 0, total_jumps = 0, total_used = 0, total = 0;

  for (unsigned seed = 1; seed <= 20; seed++) {
    GLT_Filter f;
    double level = 0.0, held_x = 0.0;
    long held_i = -1, last_used = -1;
    int prev_glitch = 0, prev_jump = 0, n_glitch = 0;

    srand(seed);
    GLT_Init(&f);
    for (long i = 0; i < 5000; i++) {
      double noise = ((double)rand() / RAND_MAX - 0.5) * 20.0;
      int is_glitch = 0, is_jump = 0, r, valid = 1;
      double x;

      if (i > 2 && !prev_glitch && !prev_jump && rand() % 50 == 0) {
        is_glitch = 1;
        n_glitch++;
      } else if (i > 2 && !prev_glitch && rand() % 200 == 0) {
        level += (rand() % 2 ? 1 : -1) * 3000.0;   /* a real jump */
        total_jumps++;
        is_jump = 1;
      } else if (rand() % 100 == 0) {
        valid = 0;
      }
      x = level + noise + (is_glitch ? (rand() % 2 ? 3000.0 : -3000.0) : 0.0);
      r = GLT_Feed(&f, LIM, valid, x);
      if (!valid) {
        assert_int_equal(r, GLT_USE);
        continue;
      }
      total++;
      if (r & GLT_USE_HELD) {
        assert_true(held_i > last_used);
        assert_true(fabs(held_x - level) < 100.0);   /* a real one */
        last_used = held_i;
        total_used++;
      }
      if (r & GLT_DROP_HELD)
        assert_true(fabs(held_x - level) > 1000.0);   /* a glitch */
      if (r & GLT_USE) {
        assert_false(is_glitch);
        assert_true(i > last_used);
        last_used = i;
        total_used++;
      }
      if (r & GLT_HOLD) {
        held_i = i;
        held_x = x;
      }
      prev_glitch = is_glitch;
      prev_jump = is_jump;
    }
    /* a glitch at the very end is still held, not yet counted */
    assert_int_equal(f.glitches, (unsigned long)(n_glitch - (f.held && prev_glitch)));
    total_glitches += f.glitches;
  }
  print_message("# glitch filter: 20 seeds, %lu valid readings, %lu glitches injected and "
                "all dropped, %lu real 3 GHz jumps all let through, %lu readings used\n",
                total, total_glitches, total_jumps, total_used);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_first_reading_needs_confirmation),
    cmocka_unit_test(test_expected_value),
    cmocka_unit_test(test_single_glitch_dropped),
    cmocka_unit_test(test_confirmed_jump),
    cmocka_unit_test(test_two_glitches_in_a_row_disagreeing),
    cmocka_unit_test(test_invalid_in_between),
    cmocka_unit_test(test_disabled),
    cmocka_unit_test(test_reset),
    cmocka_unit_test(test_random_sequences),
  };

  return cmocka_run_group_tests_name("glitch", tests, NULL, NULL);
}
