/* test_regenc.c - Modbus register encoding, checked against register words
 * computed by hand from the IEEE-754 bit patterns (A = most significant byte):
 *   1.0f  = 0x3F800000   pi (float) = 0x40490FDB   -2.5f = 0xC0200000
 *   1505.0f = 0x44BC2000 FLT_MAX = 0x7F7FFFFF
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "regenc.h"

static void
check_enc(REG_Format fmt, REG_WordOrder order, double scale, double offset,
          double volts, int count, uint16_t r0, uint16_t r1)
{
  REG_Encoding enc = { fmt, order, scale, offset };
  uint16_t regs[2] = { 0xAAAA, 0xAAAA };

  if (REG_Encode(&enc, volts, regs) != count || regs[0] != r0 ||
      (count == 2 && regs[1] != r1) || (count == 1 && regs[1] != 0xAAAA))
    fail_msg("%s/%s scale %g offset %g: %.9g V -> {0x%04X, 0x%04X}, want {0x%04X, 0x%04X}",
             REG_FormatName(fmt), REG_WordOrderName(order), scale, offset, volts,
             regs[0], regs[1], r0, count == 2 ? r1 : 0xAAAA);
}

/* 1.0f in the four word orders, as in the header. */
static void
test_f32_orders_one(void **state)
{
  (void)state;
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, 1.0, 2, 0x3F80, 0x0000);
  check_enc(REG_F32, REG_CDAB, 1.0, 0.0, 1.0, 2, 0x0000, 0x3F80);
  check_enc(REG_F32, REG_BADC, 1.0, 0.0, 1.0, 2, 0x803F, 0x0000);
  check_enc(REG_F32, REG_DCBA, 1.0, 0.0, 1.0, 2, 0x0000, 0x803F);
}

/* A pattern with four different bytes tells every order apart. */
static void
test_f32_orders_pi(void **state)
{
  (void)state;
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, M_PI, 2, 0x4049, 0x0FDB);
  check_enc(REG_F32, REG_CDAB, 1.0, 0.0, M_PI, 2, 0x0FDB, 0x4049);
  check_enc(REG_F32, REG_BADC, 1.0, 0.0, M_PI, 2, 0x4940, 0xDB0F);
  check_enc(REG_F32, REG_DCBA, 1.0, 0.0, M_PI, 2, 0xDB0F, 0x4940);
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, -2.5, 2, 0xC020, 0x0000);
  check_enc(REG_F32, REG_DCBA, 1.0, 0.0, -2.5, 2, 0x0000, 0x20C0);
}

/* raw = offset + scale * volts, rounded to the nearest float, clamped to
   the float range. */
static void
test_f32_scale_round_clamp(void **state)
{
  (void)state;
  check_enc(REG_F32, REG_ABCD, 1000.0, 5.0, 1.5, 2, 0x44BC, 0x2000);     /* 1505 */
  check_enc(REG_F32, REG_CDAB, 1000.0, 5.0, 1.5, 2, 0x2000, 0x44BC);
  /* 1 + 1.4 ulp(1) rounds to 1 + 1 ulp = 0x3F800001 */
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, 1.0 + 1.4 * ldexp(1.0, -23), 2, 0x3F80, 0x0001);
  /* 1 + 0.4 ulp rounds down to 1.0 */
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, 1.0 + 0.4 * ldexp(1.0, -23), 2, 0x3F80, 0x0000);
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, 1e300, 2, 0x7F7F, 0xFFFF);        /* FLT_MAX */
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, -1e300, 2, 0xFF7F, 0xFFFF);       /* -FLT_MAX */
  check_enc(REG_F32, REG_ABCD, 1.0, 0.0, 0.0, 2, 0x0000, 0x0000);
}

/* u16: 0..10 V on 0..65535 (scale 6553.5): round to nearest, clamp. */
static void
test_u16(void **state)
{
  (void)state;
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 0.0, 1, 0x0000, 0);
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 10.0, 1, 0xFFFF, 0);
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 1.0, 1, 6554, 0);      /* 6553.5 -> 6554 */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 2.0, 1, 13107, 0);
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 5.0, 1, 32768, 0);     /* 32767.5 */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 1.00007, 1, 6554, 0);  /* 6553.96 */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 0.9998, 1, 6552, 0);   /* 6552.19 */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 0.9999, 1, 6553, 0);   /* 6552.84 */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, -1.0, 1, 0x0000, 0);   /* clamp low */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 11.0, 1, 0xFFFF, 0);   /* clamp high */
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, 1e30, 1, 0xFFFF, 0);
  check_enc(REG_U16, REG_ABCD, 6553.5, 0.0, -1e30, 1, 0x0000, 0);
  /* bipolar with an offset: -10..10 V on 0..65535 */
  check_enc(REG_U16, REG_ABCD, 3276.8, 32768.0, 0.0, 1, 0x8000, 0);
  check_enc(REG_U16, REG_ABCD, 3276.8, 32768.0, -10.0, 1, 0x0000, 0);
  check_enc(REG_U16, REG_ABCD, 3276.8, 32768.0, 10.0, 1, 0xFFFF, 0);  /* 65536 clamped */
  check_enc(REG_U16, REG_ABCD, 3276.8, 32768.0, -5.0, 1, 0x4000, 0);
}

/* s16: two's complement words. */
static void
test_s16(void **state)
{
  (void)state;
  check_enc(REG_S16, REG_ABCD, 3276.7, 0.0, 1.0, 1, 0x0CCD, 0);    /* 3276.7 -> 3277 */
  check_enc(REG_S16, REG_ABCD, 3276.7, 0.0, -1.0, 1, 0xF333, 0);   /* -3277 */
  check_enc(REG_S16, REG_ABCD, 3276.7, 0.0, 0.0, 1, 0x0000, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, -1.0, 1, 0xFFFF, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, -0.5, 1, 0xFFFF, 0);      /* half away from 0 */
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, 0.5, 1, 0x0001, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, -0.49, 1, 0x0000, 0);
  check_enc(REG_S16, REG_ABCD, 3276.7, 0.0, 20.0, 1, 0x7FFF, 0);   /* clamp */
  check_enc(REG_S16, REG_ABCD, 3276.7, 0.0, -20.0, 1, 0x8000, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, 32767.4, 1, 0x7FFF, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, 32767.6, 1, 0x7FFF, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 0.0, -32768.6, 1, 0x8000, 0);
  check_enc(REG_S16, REG_ABCD, 1.0, 100.0, -1.0, 1, 99, 0);        /* offset */
}

/* Non-finite input is refused and leaves the registers alone. */
static void
test_nonfinite(void **state)
{
  REG_Encoding enc = { REG_F32, REG_ABCD, 1.0, 0.0 };
  uint16_t regs[2] = { 0x1234, 0x5678 };

  (void)state;
  assert_int_equal(REG_Encode(&enc, (double)NAN, regs), -1);
  assert_int_equal(REG_Encode(&enc, (double)INFINITY, regs), -1);
  enc.format = REG_U16;
  assert_int_equal(REG_Encode(&enc, -(double)INFINITY, regs), -1);
  enc.format = REG_S16;
  assert_int_equal(REG_Encode(&enc, (double)NAN, regs), -1);
  assert_int_equal(regs[0], 0x1234);
  assert_int_equal(regs[1], 0x5678);
}

/* Decode inverts encode to within half a raw step, for every format and
   order, across and beyond the range. */
static void
test_decode_round_trip(void **state)
{
  static const REG_WordOrder orders[] = { REG_ABCD, REG_CDAB, REG_BADC, REG_DCBA };
  size_t o;
  int i;

  (void)state;
  for (i = 0; i <= 200; i++) {
    double v = -12.0 + 24.0 * i / 200.0;
    REG_Encoding u = { REG_U16, REG_ABCD, 6553.5, 0.0 };
    REG_Encoding s = { REG_S16, REG_ABCD, 3276.7, 0.0 };
    uint16_t regs[2];
    double want;

    assert_int_equal(REG_Encode(&u, v, regs), 1);
    want = v < 0.0 ? 0.0 : v > 10.0 ? 10.0 : v;
    assert_true(fabs(REG_Decode(&u, regs) - want) <= 0.5 / 6553.5 + 1e-12);
    assert_int_equal(REG_Encode(&s, v, regs), 1);
    want = v < -32768 / 3276.7 ? -32768 / 3276.7 : v > 32767 / 3276.7 ? 32767 / 3276.7 : v;
    assert_true(fabs(REG_Decode(&s, regs) - want) <= 0.5 / 3276.7 + 1e-12);
    for (o = 0; o < 4; o++) {
      REG_Encoding f = { REG_F32, orders[o], 100.0, -3.0 };

      assert_int_equal(REG_Encode(&f, v, regs), 2);
      assert_true(fabs(REG_Decode(&f, regs) - v) <= 1e-6 * (fabs(v) + 1.0));
    }
  }
  {
    REG_Encoding s = { REG_S16, REG_ABCD, 1.0, 0.0 };
    uint16_t r[2] = { 0x8000, 0 };
    assert_true(REG_Decode(&s, r) == -32768.0);
    r[0] = 0xFFFF;
    assert_true(REG_Decode(&s, r) == -1.0);
  }
  {
    REG_Encoding f = { REG_F32, REG_BADC, 2.0, 1.0 };
    uint16_t r[2] = { 0x803F, 0x0000 };   /* 1.0f */
    assert_true(REG_Decode(&f, r) == 0.0);
  }
}

static void
test_parse_and_names(void **state)
{
  REG_Format fmt;
  REG_WordOrder ord;
  REG_Encoding enc = { REG_U16, REG_ABCD, 1.0, 0.0 };

  (void)state;
  assert_int_equal(REG_ParseFormat("u16", &fmt), 0);
  assert_int_equal(fmt, REG_U16);
  assert_int_equal(REG_ParseFormat("S16", &fmt), 0);
  assert_int_equal(fmt, REG_S16);
  assert_int_equal(REG_ParseFormat("F32", &fmt), 0);
  assert_int_equal(fmt, REG_F32);
  assert_int_equal(REG_ParseFormat("f64", &fmt), -1);
  assert_int_equal(REG_ParseFormat("", &fmt), -1);
  assert_int_equal(REG_ParseFormat(NULL, &fmt), -1);
  assert_int_equal(REG_ParseWordOrder("abcd", &ord), 0);
  assert_int_equal(ord, REG_ABCD);
  assert_int_equal(REG_ParseWordOrder("CDAB", &ord), 0);
  assert_int_equal(ord, REG_CDAB);
  assert_int_equal(REG_ParseWordOrder("BaDc", &ord), 0);
  assert_int_equal(ord, REG_BADC);
  assert_int_equal(REG_ParseWordOrder("dcba", &ord), 0);
  assert_int_equal(ord, REG_DCBA);
  assert_int_equal(REG_ParseWordOrder("abdc", &ord), -1);
  assert_int_equal(REG_ParseWordOrder(NULL, &ord), -1);
  assert_string_equal(REG_FormatName(REG_F32), "f32");
  assert_string_equal(REG_WordOrderName(REG_CDAB), "cdab");
  assert_int_equal(REG_Count(&enc), 1);
  enc.format = REG_S16;
  assert_int_equal(REG_Count(&enc), 1);
  enc.format = REG_F32;
  assert_int_equal(REG_Count(&enc), 2);
}

/* REG_EncodeWithin: the decoded value never leaves lo..hi, whatever the
   rounding, the sign of the scale or the format; it is the nearest code
   inside. */
static void
test_encode_within(void **state)
{
  static const REG_Encoding encs[] = {
    { REG_U16, REG_ABCD, 6553.5, 0.0 },     /* 9 V: 58981.5 rounds up to 9.00008 V */
    { REG_S16, REG_ABCD, 3276.7, 0.0 },
    { REG_S16, REG_ABCD, -3276.7, 0.0 },    /* inverted module */
    { REG_U16, REG_ABCD, 409.5, 0.0 },      /* 12 bits over 0..10 V */
    { REG_U16, REG_ABCD, 1000.0, 0.0 },     /* millivolts */
    { REG_F32, REG_CDAB, 1.0, 0.0 },
    { REG_F32, REG_ABCD, 3.0, 0.1 },
  };
  uint16_t regs[2];
  double w;

  (void)state;
  /* The case from the field: 9 V at max_v 9 V was written as 9.00008 V. */
  assert_int_equal(REG_EncodeWithin(&encs[0], 9.0, 0.0, 9.0, regs, &w), 1);
  assert_true(w <= 9.0);
  assert_int_equal(regs[0], 58981);
  assert_true(REG_Encode(&encs[0], 9.0, regs) == 1 && REG_Decode(&encs[0], regs) > 9.0);
  for (size_t e = 0; e < sizeof encs / sizeof encs[0]; e++) {
    for (int i = 0; i <= 400; i++) {
      double lo = -3.0 + 0.0137 * i, hi = lo + 0.5 + 0.0071 * (i % 37);
      double v = -12.0 + 0.06 * i;
      double step = 1.0 / fabs(encs[e].scale);
      int n = REG_EncodeWithin(&encs[e], v, lo, hi, regs, &w);

      if (encs[e].format == REG_U16 && lo < 0.0 && hi < 0.0) {
        assert_int_equal(n, -1);           /* no u16 code below 0 V */
        continue;
      }
      assert_int_equal(n, REG_Count(&encs[e]));
      assert_true(w == REG_Decode(&encs[e], regs));
      assert_true(w >= lo - 1e-9 && w <= hi + 1e-9);
      /* nearest inside: within one code of the clamped value */
      double want = v < lo ? lo : v > hi ? hi : v;
      if (!(encs[e].format == REG_U16 && want < 0.0))
        assert_true(fabs(w - want) <= step + 1e-9 * (fabs(want) + 1.0));
    }
  }
  /* Limits narrower than one code with no code inside: refused. */
  assert_int_equal(REG_EncodeWithin(&encs[3], 5.0, 5.0001, 5.0002, regs, &w), -1);
  /* Bad input. */
  assert_int_equal(REG_EncodeWithin(&encs[0], (double)NAN, 0.0, 1.0, regs, &w), -1);
  assert_int_equal(REG_EncodeWithin(&encs[0], 1.0, 2.0, 1.0, regs, &w), -1);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_f32_orders_one),
    cmocka_unit_test(test_f32_orders_pi),
    cmocka_unit_test(test_f32_scale_round_clamp),
    cmocka_unit_test(test_u16),
    cmocka_unit_test(test_s16),
    cmocka_unit_test(test_nonfinite),
    cmocka_unit_test(test_decode_round_trip),
    cmocka_unit_test(test_parse_and_names),
    cmocka_unit_test(test_encode_within),
  };

  return cmocka_run_group_tests_name("regenc", tests, NULL, NULL);
}
