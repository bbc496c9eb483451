/* test_srv.c - unit tests of the protocol server's pure helpers:
   the telnet filter, the word splitter and the constant-time token compare. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "srv.h"

#define IAC "\xff"
#define WILL "\xfb"
#define DO "\xfd"
#define DONT "\xfe"
#define SB "\xfa"
#define SE "\xf0"
#define NOP "\xf1"
#define AYT "\xf6"

/* Filter text in one call; the state must come back to plain data. */
static size_t
strip_all(const char *in, size_t len, unsigned char *out, int *state)
{
  memcpy(out, in, len);
  return SRV_StripTelnet(out, len, state);
}

static void
check_strip(const char *in, size_t inlen, const char *want, size_t wantlen)
{
  unsigned char buf[256];
  int state = 0;
  size_t n;

  assert_true(inlen <= sizeof buf);
  n = strip_all(in, inlen, buf, &state);
  assert_int_equal(n, wantlen);
  assert_memory_equal(buf, want, wantlen);
  assert_int_equal(state, 0);

  /* Every split into two calls gives the same bytes. */
  for (size_t cut = 0; cut <= inlen; cut++) {
    unsigned char a[256], b[256], joined[512];
    size_t na, nb;

    state = 0;
    memcpy(a, in, cut);
    memcpy(b, in + cut, inlen - cut);
    na = SRV_StripTelnet(a, cut, &state);
    nb = SRV_StripTelnet(b, inlen - cut, &state);
    memcpy(joined, a, na);
    memcpy(joined + na, b, nb);
    assert_int_equal(na + nb, wantlen);
    assert_memory_equal(joined, want, wantlen);
    assert_int_equal(state, 0);
  }

  /* And byte by byte. */
  {
    unsigned char one[1], joined[256];
    size_t total = 0;

    state = 0;
    for (size_t i = 0; i < inlen; i++) {
      one[0] = (unsigned char)in[i];
      if (SRV_StripTelnet(one, 1, &state) == 1)
        joined[total++] = one[0];
    }
    assert_int_equal(total, wantlen);
    assert_memory_equal(joined, want, wantlen);
    assert_int_equal(state, 0);
  }
}

#define CHECK(in, want) check_strip(in, sizeof(in) - 1, want, sizeof(want) - 1)

static void
test_strip_plain(void **st)
{
  CHECK("ping\r\n", "ping\r\n");
  CHECK("", "");
  /* High bytes other than 255 are data. */
  CHECK("a\xfe\xfa\xf0z\n", "a\xfe\xfa\xf0z\n");
}

static void
test_strip_negotiation(void **st)
{
  /* What Linux telnet sends on connect, before the user's line. */
  CHECK(IAC DO "\x03" IAC WILL "\x18" IAC WILL "\x1f" "ping\r\n", "ping\r\n");
  CHECK("pi" IAC DONT "\x01" "ng\n", "ping\n");
  /* Option byte 255 is consumed as the option, not as IAC. */
  CHECK(IAC WILL IAC "x", "x");
}

static void
test_strip_two_byte(void **st)
{
  CHECK("a" IAC NOP "b" IAC AYT "c", "abc");
  CHECK(IAC SE "x", "x");          /* a stray SE is a two-byte command */
}

static void
test_strip_iac_iac(void **st)
{
  CHECK("a" IAC IAC "b", "a\xff" "b");
  CHECK(IAC IAC IAC IAC, "\xff\xff");
}

static void
test_strip_subnegotiation(void **st)
{
  /* NAWS and terminal type, with an escaped IAC inside the payload. */
  CHECK("a" IAC SB "\x1f" "\x00\x50\x00\x18" IAC SE "b", "ab");
  CHECK(IAC SB "\x18" "\x00" "xterm" IAC SE "ping\n", "ping\n");
  CHECK(IAC SB "\x18" IAC IAC "\n" "\n" IAC SE "ok\n", "ok\n");
  /* Inside SB, IAC followed by something other than SE/IAC stays in SB. */
  CHECK(IAC SB "x" IAC "y" "zz" IAC SE "!", "!");
}

static void
test_strip_state_carried(void **st)
{
  unsigned char a[] = "ab" IAC;
  unsigned char b[] = SB "junk";
  unsigned char c[] = IAC;
  unsigned char d[] = SE "cd";
  int state = 0;

  assert_int_equal(SRV_StripTelnet(a, 3, &state), 2);
  assert_int_not_equal(state, 0);
  assert_int_equal(SRV_StripTelnet(b, 5, &state), 0);
  assert_int_equal(SRV_StripTelnet(c, 1, &state), 0);
  assert_int_equal(SRV_StripTelnet(d, 3, &state), 2);
  assert_memory_equal(d, "cd", 2);
  assert_int_equal(state, 0);
}

static void
test_split_basic(void **st)
{
  char line[] = "  setpoint\tcool780 \t 384.23  THz ";
  char *argv[8];

  assert_int_equal(SRV_Split(line, argv, 8), 4);
  assert_string_equal(argv[0], "setpoint");
  assert_string_equal(argv[1], "cool780");
  assert_string_equal(argv[2], "384.23");
  assert_string_equal(argv[3], "THz");
}

static void
test_split_empty(void **st)
{
  char a[] = "", b[] = "   \t \t", c[] = "x";
  char *argv[4];

  assert_int_equal(SRV_Split(a, argv, 4), 0);
  assert_int_equal(SRV_Split(b, argv, 4), 0);
  assert_int_equal(SRV_Split(c, argv, 4), 1);
  assert_string_equal(argv[0], "x");
}

static void
test_split_limit(void **st)
{
  char exact[] = "a b c";
  char over[] = "a b c d";
  char trailing[] = "a b c   ";
  char *argv[3];

  assert_int_equal(SRV_Split(exact, argv, 3), 3);
  assert_string_equal(argv[2], "c");
  assert_int_equal(SRV_Split(over, argv, 3), -1);
  assert_int_equal(SRV_Split(trailing, argv, 3), 3);
  assert_int_equal(SRV_Split(trailing, argv, 0), -1);
}

static void
test_split_other_whitespace_is_data(void **st)
{
  /* Only spaces and tabs separate words; a CR inside a line is data. */
  char line[] = "a\rb c\vd";
  char *argv[4];

  assert_int_equal(SRV_Split(line, argv, 4), 2);
  assert_string_equal(argv[0], "a\rb");
  assert_string_equal(argv[1], "c\vd");
}

static void
test_token_equal(void **st)
{
  assert_true(SRV_TokenEqual("s3cret-token", "s3cret-token"));
  assert_true(SRV_TokenEqual("", ""));
  assert_false(SRV_TokenEqual("s3cret-token", "x3cret-token"));
  assert_false(SRV_TokenEqual("s3cret-token", "s3cret-tokex"));
  assert_false(SRV_TokenEqual("s3cret-token", "s3cret-toke"));
  assert_false(SRV_TokenEqual("s3cret", "s3cret-token"));
  assert_false(SRV_TokenEqual("", "a"));
  assert_false(SRV_TokenEqual("a", ""));
  /* A difference that XORs to zero over the shorter length still differs. */
  assert_false(SRV_TokenEqual("ab", "ab\x01"));
}

static void
test_role_names(void **st)
{
  assert_string_equal(SRV_RoleName(CNF_ROLE_NONE), "any");
  assert_string_equal(SRV_RoleName(CNF_ROLE_MONITOR), "monitor");
  assert_string_equal(SRV_RoleName(CNF_ROLE_CONTROL), "control");
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_strip_plain),
    cmocka_unit_test(test_strip_negotiation),
    cmocka_unit_test(test_strip_two_byte),
    cmocka_unit_test(test_strip_iac_iac),
    cmocka_unit_test(test_strip_subnegotiation),
    cmocka_unit_test(test_strip_state_carried),
    cmocka_unit_test(test_split_basic),
    cmocka_unit_test(test_split_empty),
    cmocka_unit_test(test_split_limit),
    cmocka_unit_test(test_split_other_whitespace_is_data),
    cmocka_unit_test(test_token_equal),
    cmocka_unit_test(test_role_names),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
