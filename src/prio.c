/* prio.c - readings and cycle results ahead of client work (see prio.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "prio.h"

/* One loop per daemon: the guard's state belongs to the base made by
   PRI_NewBase and is touched only from its loop thread. */
static struct {
  struct event_base *base;
  struct event *fair_ev;       /* priority 1: marks a round of ordinary work */
  int pending;                 /* fair_ev is active */
  int count;                   /* urgent callbacks since the last such round */
  int demoted;                 /* urgent events run at priority 1 until then */
} g;

static void
fair_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  g.pending = 0;
  g.count = 0;
  g.demoted = 0;              /* each urgent event promotes itself when it next runs */
}

struct event_base *
PRI_NewBase(void)
{
  const char *env = getenv("WL_PRIO");
  struct event_config *cfg;
  struct event_base *base;

  if (env && strcmp(env, "0") == 0)
    return event_base_new();
  cfg = event_config_new();
  if (!cfg)
    return NULL;
  event_config_set_max_dispatch_interval(cfg, NULL, PRI_SLICE, PRI_NORMAL);
  base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (!base)
    return NULL;
  if (event_base_priority_init(base, 2) != 0)
    return base;
  g.fair_ev = event_new(base, -1, 0, fair_cb, NULL);
  if (!g.fair_ev)
    return base;
  event_priority_set(g.fair_ev, PRI_NORMAL);
  g.base = base;
  return base;
}

void
PRI_SetUrgent(struct event *ev)
{
  if (ev && g.base && event_get_base(ev) == g.base)
    event_priority_set(ev, PRI_URGENT);
}

void
PRI_SetUrgentBev(struct bufferevent *bev)
{
  if (bev && g.base && bufferevent_get_base(bev) == g.base)
    bufferevent_priority_set(bev, PRI_URGENT);
}

/* Count one urgent callback; returns the priority the event should have. */
static int
enter(void)
{
  if (g.demoted)
    return PRI_NORMAL;
  if (!g.pending) {
    g.pending = 1;
    event_active(g.fair_ev, EV_READ, 0);
  }
  if (++g.count >= PRI_BUDGET)
    g.demoted = 1;
  return g.demoted ? PRI_NORMAL : PRI_URGENT;
}

void
PRI_Enter(struct event *ev)
{
  if (!g.base || !ev || event_get_base(ev) != g.base)
    return;
  int want = enter();
  /* The running event is not active, so its priority may change; an active
     one keeps its priority until its own callback. */
  if (event_get_priority(ev) != want)
    event_priority_set(ev, want);
}

void
PRI_EnterBev(struct bufferevent *bev)
{
  if (!g.base || !bev || bufferevent_get_base(bev) != g.base)
    return;
  int want = enter();
  if (bufferevent_get_priority(bev) != want)
    bufferevent_priority_set(bev, want);
}
