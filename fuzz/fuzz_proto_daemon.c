/* fuzz_proto_daemon.c - the daemon state behind the protocol fuzz target.
 *
 * Compiles the daemon's own src/wavelockd.c (with its main renamed), so the
 * command handlers of src/cmds.c run against the real reload, state-file
 * save and event hooks.  See fuzz_proto.h.
 */
#define main wavelockd_main
int wavelockd_main(int argc, char **argv);
#include "../src/wavelockd.c"
#undef main

#include "fuzz.h"
#include "fuzz_proto.h"

WLD_Daemon *
FZD_Init(const char *path)
{
  WLD_Daemon *d = &daemon_state;
  char err[1024];

  d->host = &daemon_host;

  UTL_Strlcpy(d->cfg_path, path, sizeof d->cfg_path);
  d->cfg = CNF_Load(path, err, sizeof err);
  if (!d->cfg) {
    fprintf(stderr, "fuzz: %s\n", err);
    exit(1);
  }
  d->base = event_base_new();
  d->save_ev = d->base ? evtimer_new(d->base, save_cb, d) : NULL;
  if (!d->save_ev) {
    fprintf(stderr, "fuzz: cannot create the event base\n");
    exit(1);
  }
  return d;
}

#define MAX_READINGS 16     /* per input, after the first four */

static double reading_t;
static int reading_next;

static void
reading(WLD_Daemon *d, int channel, double value)
{
  WM_Reading r;

  reading_t += 0.1;
  r.channel = channel;
  r.value = value;
  r.t_s = reading_t;
  r.rx_s = UTL_Now();
  on_reading(&r, d);
}

void
FZD_Begin(WLD_Daemon *d)
{
  static const CTL_Hooks hooks = { .state_changed = hook_state, .reading = hook_reading,
                                   .dirty = hook_dirty, .railed = hook_railed,
                                   .arg = &daemon_state };

  d->ctl = CTL_Create(d->base, d->cfg, &hooks);
  FUZZ_CHECK(d->ctl != NULL);
  cal_setup(d, NULL);
  memset(d->channels, 0, sizeof d->channels);
  memset(d->have_channel, 0, sizeof d->have_channel);
  reading_t = 0.0;
  reading_next = 0;
  reading(d, 1, 384.2304850);
  reading(d, 2, -3.0);               /* underexposed */
  reading(d, 3, 650.5038);
  reading(d, 9, 500.0);              /* the reference: 10 MHz low, corrected */
}

void
FZD_Reading(WLD_Daemon *d)
{
  static const double values[3] = { 384.2304839, 377.1074635, -1.0 };
  int i = reading_next % 3;

  if (reading_next++ >= MAX_READINGS)
    return;
  reading(d, i + 1, values[i]);
}

void
FZD_End(WLD_Daemon *d)
{
  CTL_Destroy(d->ctl);
  d->ctl = NULL;
  CAL_Destroy(d->cal);
  d->cal = NULL;
  event_del(d->save_ev);
  d->save_scheduled = 0;
  /* Run the loop once without waiting: libevent frees a closed connection's
     bufferevent from the loop (a finalizer), and nothing else is due. */
  event_base_loop(d->base, EVLOOP_NONBLOCK);
}
