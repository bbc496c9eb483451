/* test_clt.c - unit tests of the client's pure helpers (client_fmt.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clt.h"

/* The aligned table of lines as a string (free it); *kept says whether
   every line was key=value. */
static char *
capture_table(const char **lines, int n, int *kept)
{
  CLT_Table *t = CLT_TableNew();
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);

  assert_non_null(t);
  assert_non_null(f);
  *kept = 1;
  for (int i = 0; i < n; i++)
    if (CLT_TableAdd(t, lines[i]) != 1)
      *kept = 0;
  if (*kept)
    CLT_TablePrint(t, f);
  fclose(f);
  CLT_TableFree(t);
  return buf;
}

static void
test_classify(void **state)
{
  (void)state;
  assert_int_equal(CLT_Classify("OK"), CLT_LINE_OK);
  assert_int_equal(CLT_Classify("OK locked"), CLT_LINE_OK);
  assert_int_equal(CLT_Classify("OKAY=1"), CLT_LINE_DATA);
  assert_int_equal(CLT_Classify("ERR 404 unknown laser"), CLT_LINE_ERR);
  assert_int_equal(CLT_Classify("ERRORS=3"), CLT_LINE_DATA);
  assert_int_equal(CLT_Classify("* wavelock 0.1 protocol 1 ready"), CLT_LINE_EVENT);
  assert_int_equal(CLT_Classify("name=a state=off"), CLT_LINE_DATA);
  assert_int_equal(CLT_Classify("*x"), CLT_LINE_DATA);
}

static void
test_split_kv(void **state)
{
  char line[] = "reading  laser=cool780\tfreq_thz=384.230484400 a==b =v";
  CLT_Kv kv[8];
  int n;

  (void)state;
  n = CLT_SplitKv(line, kv, 8);
  assert_int_equal(n, 5);
  assert_null(kv[0].key);
  assert_string_equal(kv[0].value, "reading");
  assert_string_equal(CLT_KvGet(kv, n, "laser"), "cool780");
  assert_string_equal(CLT_KvGet(kv, n, "freq_thz"), "384.230484400");
  assert_string_equal(CLT_KvGet(kv, n, "a"), "=b");
  assert_string_equal(CLT_KvGet(kv, n, ""), "v");
  assert_null(CLT_KvGet(kv, n, "missing"));
  assert_false(CLT_AllKv(kv, n));
  assert_false(CLT_AllKv(kv, 0));
  assert_true(CLT_AllKv(kv + 1, 3));
  assert_false(CLT_AllKv(kv + 1, 4));      /* empty key */

  {
    char many[] = "a b c d";
    assert_int_equal(CLT_SplitKv(many, kv, 2), 2);
  }
}

static void
test_numbers(void **state)
{
  double d;
  int port;
  long n;

  (void)state;
  assert_int_equal(CLT_ParseSeconds("2.5", &d), 0);
  assert_true(d == 2.5);
  assert_int_equal(CLT_ParseSeconds("0", &d), 0);
  assert_int_equal(CLT_ParseSeconds("-1", &d), -1);
  assert_int_equal(CLT_ParseSeconds("1s", &d), -1);
  assert_int_equal(CLT_ParseSeconds("", &d), -1);
  assert_int_equal(CLT_ParseSeconds("nan", &d), -1);
  assert_int_equal(CLT_ParseSeconds("inf", &d), -1);
  assert_int_equal(CLT_ParsePort("7470", &port), 0);
  assert_int_equal(port, 7470);
  assert_int_equal(CLT_ParsePort("0", &port), -1);
  assert_int_equal(CLT_ParsePort("65536", &port), -1);
  assert_int_equal(CLT_ParsePort("+80", &port), -1);
  assert_int_equal(CLT_ParsePort("80x", &port), -1);
  assert_int_equal(CLT_ParseCount("3", &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(CLT_ParseCount("0", &n), -1);
  assert_int_equal(CLT_ParseCount("-2", &n), -1);
}

static void
test_split_commands(void **state)
{
  char text[] = "  lock cool780 ;status cool780;; \n wait all --timeout 5 ;";
  char *cmds[4];
  char one[] = "ping";
  char empty[] = " ; ;";
  char many[] = "a;b;c";

  (void)state;
  assert_int_equal(CLT_SplitCommands(text, cmds, 4), 3);
  assert_string_equal(cmds[0], "lock cool780");
  assert_string_equal(cmds[1], "status cool780");
  assert_string_equal(cmds[2], "wait all --timeout 5");
  assert_int_equal(CLT_SplitCommands(one, cmds, 4), 1);
  assert_string_equal(cmds[0], "ping");
  assert_int_equal(CLT_SplitCommands(empty, cmds, 4), 0);
  assert_int_equal(CLT_SplitCommands(many, cmds, 2), -1);
}

static void
test_table(void **state)
{
  const char *lines[] = {
    "name=cool780 state=locked error_mhz=-0.25",
    "name=repump state=off error_mhz=12.5 current_v=0.1",
  };
  const char *bad[] = { "name=a", "free text" };
  int kept;
  char *out;

  (void)state;
  out = capture_table(lines, 2, &kept);
  assert_true(kept);
  assert_string_equal(out,
                      "name     state   error_mhz  current_v\n"
                      "cool780  locked      -0.25          -\n"
                      "repump   off          12.5        0.1\n");
  free(out);
  out = capture_table(bad, 2, &kept);
  assert_false(kept);
  free(out);
}

static void
test_csv(void **state)
{
  CLT_Csv *c = CLT_CsvNew();
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);

  (void)state;
  assert_non_null(c);
  assert_string_equal(CLT_CsvHeader(), "time,laser,freq_thz,error_mhz,piezo_v,current_v,state");
  /* A reading before any state event: empty state. */
  assert_int_equal(CLT_CsvEvent(c, "* reading laser=a t=100.5 freq_thz=384.1 error_mhz=1.5 piezo_v=5", 0, f), 1);
  /* A state event is remembered for later readings without state=. */
  assert_int_equal(CLT_CsvEvent(c, "* state laser=a state=locked from=acquiring", 0, f), 0);
  assert_int_equal(CLT_CsvEvent(c, "reading laser=a t=101 freq_thz=384.2 error_mhz=0.5 piezo_v=5.1 extra=1", 0, f), 1);
  /* Readings with their own state; name= as the laser key; time from the clock. */
  assert_int_equal(CLT_CsvEvent(c, "* reading name=b freq_thz=380 error_mhz=-2 piezo_v=1 current_v=-0.5 state=holding", 42.25, f), 1);
  /* No type word, but freq_thz and a laser: a reading. */
  assert_int_equal(CLT_CsvEvent(c, "* laser=c time=7 freq_thz=1", 0, f), 1);
  /* Other events. */
  assert_int_equal(CLT_CsvEvent(c, "* dropped n=4", 0, f), 0);
  assert_int_equal(CLT_CsvEvent(c, "* wavelock 0.1 protocol 1 ready", 0, f), 0);
  assert_int_equal(CLT_CsvEvent(c, "* reading freq_thz=1", 0, f), 0);   /* no laser */
  /* Values needing quotes. */
  assert_int_equal(CLT_CsvEvent(c, "* reading laser=x,y t=1 state=a\"b", 0, f), 1);
  /* An error-code reading: "none" becomes an empty field. */
  assert_int_equal(CLT_CsvEvent(c, "* reading laser=a t=2 freq_thz=none wm_status=underexposed piezo_v=5", 0, f), 1);
  /* Counting only (no output). */
  assert_int_equal(CLT_CsvEvent(c, "* reading laser=a t=1", 0, NULL), 1);
  fclose(f);
  assert_string_equal(buf,
                      "100.5,a,384.1,1.5,5,,\n"
                      "101,a,384.2,0.5,5.1,,locked\n"
                      "42.250,b,380,-2,1,-0.5,holding\n"
                      "7,c,1,,,,\n"
                      "1,\"x,y\",,,,,\"a\"\"b\"\n"
                      "2,a,,,5,,locked\n");
  free(buf);
  CLT_CsvFree(c);
  CLT_CsvFree(NULL);
  CLT_TableFree(NULL);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_classify),
    cmocka_unit_test(test_split_kv),
    cmocka_unit_test(test_numbers),
    cmocka_unit_test(test_split_commands),
    cmocka_unit_test(test_table),
    cmocka_unit_test(test_csv),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
