/* client_mqtt.c - `wavelock --mqtt URL lab`: every instance's lasers, from
 * the retained messages on an MQTT broker (DESIGN.md section 10). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <mosquitto.h>

#include "clt.h"

#define MAX_ROWS 4096

typedef struct {
  char instance[64];
  char laser[64];              /* "" for an instance's status row */
  char text[512];              /* the fields after instance= laser= */
} Row;

typedef struct {
  Row *rows;
  int n;
  int subscribed;
  int connected;               /* 1 up, -1 refused */
  double last_msg;
} Lab;

static double
mono(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static Row *
row_for(Lab *lab, const char *instance, const char *laser)
{
  for (int i = 0; i < lab->n; i++)
    if (strcmp(lab->rows[i].instance, instance) == 0 && strcmp(lab->rows[i].laser, laser) == 0)
      return &lab->rows[i];
  if (lab->n >= MAX_ROWS)
    return NULL;
  snprintf(lab->rows[lab->n].instance, sizeof lab->rows[lab->n].instance, "%s", instance);
  snprintf(lab->rows[lab->n].laser, sizeof lab->rows[lab->n].laser, "%s", laser);
  lab->rows[lab->n].text[0] = '\0';
  return &lab->rows[lab->n++];
}

static void
num_field(char *out, size_t len, const char *key, json_t *v)
{
  size_t n = strlen(out);

  if (json_is_number(v))
    snprintf(out + n, len - n, " %s=%.9f", key, json_number_value(v));
  else
    snprintf(out + n, len - n, " %s=none", key);
}

static void
on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
  Lab *lab = obj;
  char **parts = NULL;
  int count = 0;

  (void)m;
  lab->last_msg = mono();
  if (mosquitto_sub_topic_tokenise(msg->topic, &parts, &count) != MOSQ_ERR_SUCCESS)
    return;
  if (count == 3 && strcmp(parts[2], "status") == 0) {
    Row *r = row_for(lab, parts[1], "");

    if (r)
      snprintf(r->text, sizeof r->text, "status=%.*s", msg->payloadlen > 32 ? 32 : msg->payloadlen,
               msg->payloadlen > 0 ? (const char *)msg->payload : "none");
  } else if (count == 5 && strcmp(parts[2], "laser") == 0 && strcmp(parts[4], "state") == 0) {
    json_error_t e;
    json_t *o = msg->payloadlen > 0 ? json_loadb(msg->payload, (size_t)msg->payloadlen, 0, &e)
                                    : NULL;
    Row *r = o ? row_for(lab, parts[1], parts[3]) : NULL;

    if (r) {
      json_t *owner = json_object_get(o, "owner");
      const char *st = json_string_value(json_object_get(o, "state"));

      snprintf(r->text, sizeof r->text, "state=%s", st ? st : "unknown");
      num_field(r->text, sizeof r->text, "setpoint_thz", json_object_get(o, "setpoint_thz"));
      snprintf(r->text + strlen(r->text), sizeof r->text - strlen(r->text), " owner=%s",
               json_is_string(owner) ? json_string_value(owner) : "none");
    }
    json_decref(o);
  }
  mosquitto_sub_topic_tokens_free(&parts, count);
}

static void
on_connect(struct mosquitto *m, void *obj, int rc)
{
  Lab *lab = obj;

  if (rc != 0) {
    fprintf(stderr, "wavelock: mqtt: %s\n", mosquitto_connack_string(rc));
    lab->connected = -1;
    return;
  }
  lab->connected = 1;
  mosquitto_subscribe(m, NULL, "wavelock/+/status", 0);
  mosquitto_subscribe(m, NULL, "wavelock/+/laser/+/state", 0);
}

static void
on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
  Lab *lab = obj;

  (void)m;
  (void)mid;
  (void)n;
  (void)granted;
  lab->subscribed++;
  lab->last_msg = mono();
}

static int
cmp_rows(const void *a, const void *b)
{
  const Row *x = a, *y = b;
  int c = strcmp(x->instance, y->instance);

  return c ? c : strcmp(x->laser, y->laser);
}

int
CLT_MqttLab(const char *url, const char *user, const char *password_file, const char *cafile,
            double timeout)
{
  char host[256] = "", password[256] = "";
  int port, tls = 0, rc, status = CLT_EXIT_OK;
  const char *rest;
  struct mosquitto *m;
  Lab lab;
  double t0;

  if (strncasecmp(url, "mqtt://", 7) == 0) {
    rest = url + 7;
  } else if (strncasecmp(url, "mqtts://", 8) == 0) {
    rest = url + 8;
    tls = 1;
  } else {
    fprintf(stderr, "wavelock: --mqtt: '%s': expected mqtt://host[:port] or mqtts://host[:port]\n",
            url);
    return CLT_EXIT_USAGE;
  }
  port = tls ? 8883 : 1883;
  {
    const char *colon = strrchr(rest, ':');
    size_t hl = colon ? (size_t)(colon - rest) : strcspn(rest, "/");

    if (hl == 0 || hl >= sizeof host) {
      fprintf(stderr, "wavelock: --mqtt: '%s': bad host\n", url);
      return CLT_EXIT_USAGE;
    }
    memcpy(host, rest, hl);
    host[hl] = '\0';
    if (colon && CLT_ParsePort(colon + 1, &port) < 0) {
      fprintf(stderr, "wavelock: --mqtt: '%s': bad port\n", url);
      return CLT_EXIT_USAGE;
    }
  }
  if (password_file) {
    FILE *f = fopen(password_file, "r");

    if (!f || !fgets(password, sizeof password, f)) {
      fprintf(stderr, "wavelock: --mqtt-password-file: cannot read %s\n", password_file);
      if (f)
        fclose(f);
      return CLT_EXIT_USAGE;
    }
    fclose(f);
    password[strcspn(password, "\r\n")] = '\0';
  }
  memset(&lab, 0, sizeof lab);
  lab.rows = calloc(MAX_ROWS, sizeof *lab.rows);
  if (!lab.rows)
    return CLT_EXIT_ERR;
  mosquitto_lib_init();
  m = mosquitto_new(NULL, true, &lab);
  if (!m) {
    free(lab.rows);
    return CLT_EXIT_ERR;
  }
  if (user)
    mosquitto_username_pw_set(m, user, password_file ? password : NULL);
  if (tls) {
    if (cafile)
      mosquitto_tls_set(m, cafile, NULL, NULL, NULL, NULL);
    else
      mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
  }
  mosquitto_connect_callback_set(m, on_connect);
  mosquitto_subscribe_callback_set(m, on_subscribe);
  mosquitto_message_callback_set(m, on_message);
  rc = mosquitto_connect(m, host, port, 30);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "wavelock: mqtt: cannot connect to %s:%d: %s\n", host, port,
            mosquitto_strerror(rc));
    status = CLT_EXIT_CONN;
    goto out;
  }
  /* Retained messages follow each SUBACK: done once both are in and the
     broker has been quiet for a moment. */
  t0 = mono();
  for (;;) {
    double now = mono();

    rc = mosquitto_loop(m, 50, 1);
    if (lab.connected < 0 || (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)) {
      if (lab.connected >= 0)
        fprintf(stderr, "wavelock: mqtt: %s:%d: %s\n", host, port, mosquitto_strerror(rc));
      status = CLT_EXIT_CONN;
      goto out;
    }
    if (lab.subscribed >= 2 && now - lab.last_msg > 0.3)
      break;
    if (timeout > 0 && now - t0 > timeout) {
      fprintf(stderr, "wavelock: mqtt: %s:%d: timed out\n", host, port);
      status = CLT_EXIT_CONN;
      goto out;
    }
  }
  mosquitto_disconnect(m);
  qsort(lab.rows, (size_t)lab.n, sizeof *lab.rows, cmp_rows);
  for (int i = 0; i < lab.n; i++) {
    if (!lab.rows[i].text[0])
      continue;
    if (lab.rows[i].laser[0])
      printf("instance=%s laser=%s %s\n", lab.rows[i].instance, lab.rows[i].laser,
             lab.rows[i].text);
    else
      printf("instance=%s %s\n", lab.rows[i].instance, lab.rows[i].text);
  }
out:
  explicit_bzero(password, sizeof password);
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();
  free(lab.rows);
  return status;
}
