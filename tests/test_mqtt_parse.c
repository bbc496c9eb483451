/* test_mqtt_parse.c - the MQTT command path without a broker: payload
   splitting, iam lines, limits, and replies from the text protocol's own
   dispatch (MQT_CreateLocal / MQT_Inject). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "mqtt.h"
#include "srv.h"

static char reply[8192];
static int n_replies;

static void
on_reply(const char *r, size_t n, void *arg)
{
  (void)arg;
  snprintf(reply, sizeof reply, "%.*s", (int)n, r);
  n_replies++;
}

static void
cmd_echo(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  (void)ctx;
  SRV_Data(c, "name=%s", SRV_Named(c) ? SRV_Name(c) : "none");
  SRV_Ok(c, "%s", argc > 1 ? argv[1] : "");
}

static void
cmd_ctl(SRV_Conn *c, int argc, char **argv, void *ctx)
{
  (void)argc;
  (void)argv;
  (void)ctx;
  SRV_Ok(c, "role=%s", SRV_RoleName(SRV_Role(c)));
}

static const SRV_Command table[] = {
  { "echo", CNF_ROLE_MONITOR, 0, 1, "echo [word]", "echo", cmd_echo },
  { "ctl", CNF_ROLE_CONTROL, 0, 0, "ctl", "needs control", cmd_ctl },
};

static void
test_split(void **state)
{
  const char *line[4];
  size_t len[4];
  const char p[] = "iam bob\r\n\n  \nstatus a\nping";

  (void)state;
  assert_int_equal(MQT_SplitLines(p, strlen(p), line, len, 4), 3);
  assert_int_equal(len[0], 7);
  assert_memory_equal(line[0], "iam bob", 7);
  assert_memory_equal(line[1], "status a", len[1]);
  assert_memory_equal(line[2], "ping", len[2]);
  assert_int_equal(MQT_SplitLines(p, strlen(p), line, len, 2), -1);
  assert_int_equal(MQT_SplitLines("", 0, line, len, 4), 0);
  assert_int_equal(MQT_SplitLines("\r\n\t\n", 4, line, len, 4), 0);
}

static void
test_iam(void **state)
{
  char name[8];

  (void)state;
  assert_int_equal(MQT_ParseIam("iam alice", 9, name, sizeof name), 1);
  assert_string_equal(name, "alice");
  assert_int_equal(MQT_ParseIam("  IAM  bob  ", 12, name, sizeof name), 1);
  assert_string_equal(name, "bob");
  assert_int_equal(MQT_ParseIam("iamx", 4, name, sizeof name), 0);
  assert_int_equal(MQT_ParseIam("status", 6, name, sizeof name), 0);
  assert_int_equal(MQT_ParseIam("iam", 3, name, sizeof name), -1);
  assert_int_equal(MQT_ParseIam("iam a b", 7, name, sizeof name), -1);
  assert_int_equal(MQT_ParseIam("iam averyverylongname", 21, name, sizeof name), -1);
  assert_int_equal(MQT_ParseIam("iam a\x01", 6, name, sizeof name), -1);
}

static void
run(MQT_Client *m, const char *payload, size_t n)
{
  int before = n_replies;

  reply[0] = '\0';
  assert_int_equal(MQT_Inject(m, payload, n, NULL, 1), 0);
  assert_int_equal(n_replies, before + 1);
}

static void
test_commands(void **state)
{
  struct event_base *base = event_base_new();
  CNF_Server cfg;
  char err[256], *big;
  SRV_Server *s;
  MQT_Client *m;

  (void)state;
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.listen[0], sizeof cfg.listen[0], "127.0.0.1:0");
  cfg.n_listen = 1;
  cfg.max_clients = 4;
  s = SRV_Create(base, &cfg, table, 2, NULL, err, sizeof err);
  assert_non_null(s);
  m = MQT_CreateLocal(s, "t1", on_reply, NULL);
  assert_non_null(m);

  run(m, "echo hi", 7);
  assert_string_equal(reply, "name=none\nOK hi\n");
  run(m, "iam carol\necho x\nctl", 20);
  assert_string_equal(reply, "name=carol\nOK x\nOK role=control\n");
  run(m, "nope\necho y", 11);
  assert_string_equal(reply, "ERR 404 unknown command 'nope'\nname=none\nOK y\n");
  run(m, "subscribe", 9);
  assert_true(strncmp(reply, "ERR 400 'subscribe' is not available over MQTT", 46) == 0);
  run(m, "", 0);
  assert_string_equal(reply, "ERR 400 no command in the message\n");
  run(m, "iam\necho", 8);
  assert_true(strncmp(reply, "ERR 400 usage: iam", 18) == 0);
  run(m, "echo a\0b", 8);
  assert_true(strncmp(reply, "ERR 400 NUL byte", 16) == 0);
  big = malloc(MQT_CMD_MAX + 1);
  assert_non_null(big);
  memset(big, 'e', MQT_CMD_MAX + 1);
  run(m, big, MQT_CMD_MAX + 1);
  assert_true(strncmp(reply, "ERR 413 payload too large", 25) == 0);
  memset(big, '\n', MQT_CMD_MAX);
  for (int i = 0; i <= MQT_CMD_LINES; i++)
    memcpy(big + i * 8, "echo z\n", 7);
  run(m, big, (MQT_CMD_LINES + 1) * 8);
  assert_true(strncmp(reply, "ERR 400 too many lines", 22) == 0);
  free(big);
  {
    char line[SRV_LINE_MAX + 20];

    memset(line, 'x', sizeof line);
    memcpy(line, "echo ", 5);
    run(m, line, sizeof line);
    assert_true(strncmp(reply, "ERR 413 line too long", 21) == 0);
  }

  MQT_Destroy(m, 0, 0.0);
  SRV_Destroy(s);
  event_base_free(base);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_split),
    cmocka_unit_test(test_iam),
    cmocka_unit_test(test_commands),
  };

  LOG_Open("test_mqtt_parse", 0, LOG_LV_ERROR);
  return cmocka_run_group_tests_name("mqtt_parse", tests, NULL, NULL);
}
