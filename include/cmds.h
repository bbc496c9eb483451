/* cmds.h - wavelockd's text-protocol command table (src/cmds.c).  The
 * handlers' context is the WLD_Daemon (daemon.h); they reach the daemon's
 * own operations through its host (host.h).
 */
#ifndef WL_CMDS_H
#define WL_CMDS_H

#include "srv.h"

extern const SRV_Command WLD_Commands[];
extern const int WLD_NumCommands;

#endif
