#!/usr/bin/python3
"""The fault soak's short run, for make check: tests/soak.py --profile short.

wavelock-sim and wavelockd on conf/sim.conf (free ports), then over about a
minute: 10 Modbus outages (silent, drop, refuse), 10 wavemeter dropouts and
error-code bursts, 4 mode hops, 4 reloads (2 with a broken config, through
the protocol and SIGHUP), 1 kill -9 and restart, while 8 clients issue
requests and 2 subscribers stream events.  It asserts what the long run
asserts (see tests/soak.py): the daemon never dies except when killed, the
state file always loads, reloads behave, every request gets exactly one
final line, every laser ends locked, no actuator write leaves min_v..max_v,
the RSS of the daemon does not grow beyond a bound (skipped under
AddressSanitizer), clean exit.  WL_SOAK_ARGS adds soak.py options."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soak  # noqa: E402

soak.run(soak.parse_args(["--profile", "short"] + os.environ.get("WL_SOAK_ARGS", "").split()))
