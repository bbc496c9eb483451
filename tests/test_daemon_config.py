#!/usr/bin/env python3
"""wavelockd -t and start-up with bad configs: every error names the file,
the line and the key, and the exit status is 78 (EX_CONFIG)."""

import re
import subprocess

from wltest import TAP, Env, lab_conf, laser_conf, prog

tap = TAP()


def run(argv, timeout=10):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


with Env() as env:
    good_lasers = [laser_conf("cool780", 1, 384.2304844),
                   laser_conf("repump795", 2, 377.1074635, reg=2)]
    good = lab_conf(good_lasers, [("ao1", 1502)], 7480)
    path = env.write("good.conf", good)
    rc, out = run([prog("wavelockd"), "-t", "-c", path])
    tap.eq(rc, 0, "a good config passes -t")

    rc, out = run([prog("wavelockd"), "-t", "-c", env.path("missing.conf")])
    tap.ok(rc == 78 and "missing.conf" in out, "a missing file: 78 and its name", out)

    cases = [
        ("syntax error", good.replace("lasers = (", "lasers = ((", 1), None),
        ("wrong type", good.replace('channel = 2;', 'channel = "two";'), "channel"),
        ("unknown device", good.replace('device = "ao1"; register = 2', 'device = "ao9"; register = 2'),
         "device"),
        ("out-of-range value", good.replace("window_mhz = 5.0;", "window_mhz = -5.0;", 1), "window_mhz"),
        ("duplicate laser name", good.replace('"repump795"', '"cool780"'), "name"),
        ("non-loopback listen without tokens", good.replace("127.0.0.1:0", "0.0.0.0:7470"), "listen"),
        ("setpoint outside its range", good.replace("384.230484400 THz", "390 THz"), "setpoint"),
        ("unknown key", good.replace("window_mhz = 5.0;", "windw_mhz = 5.0;", 1), "windw_mhz"),
        ("wlmdata backend, laser on channel 20 (it reads 1-17)",
         good.replace('backend = "stream";', 'backend = "wlmdata";')
             .replace("channel = 2;", "channel = 20;"), "channels 1 to 17"),
    ]
    for name, text, key in cases:
        p = env.write("bad.conf", text)
        rc, out = run([prog("wavelockd"), "-t", "-c", p])
        line_ok = re.search(r"bad\.conf:\d+", out) is not None
        key_ok = key is None or key in out
        tap.ok(rc == 78 and line_ok and key_ok,
               "%s: exit 78, message names file, line%s" % (name, " and key" if key else ""),
               "rc=%d\n%s" % (rc, out))
        # The daemon itself refuses to start the same way.
        rc2, out2 = run([prog("wavelockd"), "-f", "-c", p])
        tap.ok(rc2 == 78 and out2.strip() != "", "%s: wavelockd exits 78 at start" % name, out2)

    rc, out = run([prog("wavelockd"), "--bogus-option"])
    tap.eq(rc, 2, "unknown option: exit 2")
    rc, out = run([prog("wavelockd"), "-V"])
    tap.ok(rc == 0 and "wavelockd" in out, "-V prints the version", out)
    rc, out = run([prog("wavelockd"), "--help"])
    tap.ok(rc == 0 and "--config" in out, "--help", out)

tap.done()
