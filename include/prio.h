/* prio.h - readings and cycle results ahead of client work on the loop.
 *
 * The loop's base has two priorities: 0 for the "urgent" events (the
 * wavemeter stream, delivered readings, cycle results from the device
 * threads), 1 (the default) for everything else: clients, HTTP, MQTT,
 * timers.  libevent runs a lower priority only in a loop round in which no
 * higher one is active, so with hundreds of lasers cycling clients could
 * starve; the fairness guard bounds that: after PRI_BUDGET urgent callbacks
 * without a round of ordinary work in between, urgent events drop to
 * priority 1 (first come, first served with the clients) until such a round
 * has run.  Ordinary work itself is cut into slices of PRI_SLICE callbacks
 * (event_config_set_max_dispatch_interval), after which the loop polls
 * again so that a reading waits behind at most that many client callbacks.
 */
#ifndef WL_PRIO_H
#define WL_PRIO_H

struct event;
struct event_base;
struct bufferevent;

#define PRI_URGENT 0
#define PRI_NORMAL 1
#define PRI_BUDGET 16          /* urgent callbacks before ordinary work gets a round */
#define PRI_SLICE 16           /* ordinary callbacks per round before polling again */

/* A base with the two priorities and the slice (falls back to a plain base
   when WL_PRIO=0 is in the environment, for A/B measurements).  NULL on
   error. */
struct event_base *PRI_NewBase(void);

/* Mark an event / a bufferevent as urgent (no-op on other bases). */
void PRI_SetUrgent(struct event *ev);
void PRI_SetUrgentBev(struct bufferevent *bev);

/* Call first thing in every urgent callback, with its own event (or
   bufferevent): counts the budget and moves the event between the two
   priorities as the guard decides. */
void PRI_Enter(struct event *ev);
void PRI_EnterBev(struct bufferevent *bev);

#endif
