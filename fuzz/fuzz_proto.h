/* fuzz_proto.h - the daemon side of the protocol fuzz target.
 *
 * fuzz_proto_daemon.c compiles src/wavelockd.c (its main renamed) so the
 * target runs the daemon's real reload, state-file and event hooks;
 * fuzz_proto.c compiles src/srv.c so it can feed bytes into a connection
 * without a network.  These are the few entry points between the two.
 */
#ifndef WL_FUZZ_PROTO_H
#define WL_FUZZ_PROTO_H

#include "daemon.h"

/* Load the config at path into the daemon state, make its event base and
   timers (nothing is started, nothing listens); exits on failure. */
WLD_Daemon *FZD_Init(const char *path);

/* A fresh control runtime for one input: lasers and devices from the
   config (device threads never started), readings on channels 1..3 and 9. */
void FZD_Begin(WLD_Daemon *d);

/* A wavemeter reading on channel 1, 2 or 3 (cycling) arrives now; at most
   16 per input. */
void FZD_Reading(WLD_Daemon *d);

/* Tear down what FZD_Begin made (and run what libevent deferred). */
void FZD_End(WLD_Daemon *d);

#endif
