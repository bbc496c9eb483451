#!/usr/bin/env python3
"""python/wavelock (the stdlib client module) against wavelockd and
wavelock-sim on conf/sim.conf with a monitor and a control token:
  - without a token: Error 401; with the monitor token status() works and
    lock() is Error 403;
  - with the control token: status() of 14 lasers with parsed numbers,
    unlock()/lock() change the state, setpoint() in nm and relative in MHz,
    an out-of-range setpoint is Error 422 and changes nothing, an unknown
    laser Error 404;
  - wait_locked() returns once all are locked, and raises TimeoutError
    naming a laser that is off;
  - subscribe() yields reading events of the laser asked for only;
  - the example script locks all, scans (or steps) one laser and writes a
    CSV of its readings."""

import csv
import os
import subprocess
import sys
import time

from wltest import TAP, Env, SRCDIR
from lablib import Lab, SIM_CONF, programs_missing

sys.path.insert(0, os.path.join(SRCDIR, "python"))
import wavelock  # noqa: E402

tap = TAP()
why = programs_missing()
if why:
    tap.skip("python client", why)
    tap.done()

CONTROL = "ctl-py-8d1e0b7c"
MONITOR = "mon-py-2f6a9e41"

with Env() as env:
    with open(SIM_CONF) as f:
        text = f.read()
    text = text.replace("  max_clients = 64;\n", '  max_clients = 64;\n  tokens = ( '
                        '{ secret = "%s"; role = "control"; }, { secret = "%s"; '
                        'role = "monitor"; } );\n' % (CONTROL, MONITOR), 1)
    lab = Lab(env, seed=6, conf=env.write("py.conf", text), events=False)
    port = lab.port

    try:
        wavelock.Client("127.0.0.1", port).status()
        tap.ok(False, "no token: Error 401")
    except wavelock.Error as e:
        tap.eq(e.code, 401, "no token: Error 401")
    mon = wavelock.Client("127.0.0.1", port, token=MONITOR)
    tap.eq(len(mon.status()), 14, "monitor token: status() of 14 lasers")
    try:
        mon.lock("cool780")
        tap.ok(False, "monitor token: lock() is Error 403")
    except wavelock.Error as e:
        tap.eq(e.code, 403, "monitor token: lock() is Error 403")
    mon.close()

    wl = wavelock.Client("127.0.0.1", port, token=CONTROL, name="pytest")
    st = wl.status("cool780")
    tap.ok(isinstance(st["setpoint_thz"], float) and st["name"] == "cool780",
           "status() parses numbers", st)
    waited = wl.wait_locked(timeout=90)
    tap.ok(all(s == "locked" for s in wl.lasers().values()),
           "wait_locked() returns once all 14 are locked (%.1f s)" % waited)
    wl.unlock("cool780")
    tap.eq(wl.lasers()["cool780"], "off", "unlock() turns cool780 off")
    t0 = time.monotonic()
    try:
        wl.wait_locked(["cool780", "probe852"], timeout=1.0)
        tap.ok(False, "wait_locked() raises TimeoutError for a laser that is off")
    except TimeoutError as e:
        tap.ok("cool780 (off)" in str(e) and "probe852" not in str(e) and
               time.monotonic() - t0 < 5,
               "wait_locked() raises TimeoutError naming the laser that is off", str(e))
    wl.lock("cool780")
    tap.ok(wl.lasers()["cool780"] in ("acquiring", "locked"), "lock() engages it")
    sp = wl.setpoint("cool780", 780.2414, "nm")
    tap.ok(abs(wl.status("cool780")["setpoint_thz"] - sp) < 1e-9 and
           abs(299792.458 / sp - 780.2414) < 1e-6, "setpoint() in nm (%.9f THz)" % sp)
    sp2 = wl.setpoint("cool780", "+50", "MHz")
    tap.ok(abs((sp2 - sp) * 1e6 - 50.0) < 1e-3, "setpoint() relative: +50 MHz")
    try:
        wl.setpoint("cool780", 500.0)
        tap.ok(False, "setpoint out of range: Error 422")
    except wavelock.Error as e:
        tap.ok(e.code == 422 and abs(wl.setpoint("cool780") - sp2) < 1e-12,
               "setpoint out of range: Error 422, nothing changed", e)
    try:
        wl.lock("nosuch")
        tap.ok(False, "unknown laser: Error 404")
    except wavelock.Error as e:
        tap.eq(e.code, 404, "unknown laser: Error 404")

    sub = wl.subscribe("probe852", timeout=5)
    evs = []
    for ev in sub:
        evs.append(ev)
        if len([e for e in evs if e.kind == "reading"]) >= 10:
            break
    sub.close()
    rd = [e for e in evs if e.kind == "reading"]
    tap.ok(len(rd) >= 10 and all(e["laser"] == "probe852" for e in evs) and
           all(isinstance(e["freq_thz"], float) for e in rd),
           "subscribe('probe852') yields its reading events only (%d)" % len(rd))
    tap.eq(wl.status("cool780")["name"], "cool780", "commands work while subscribed")
    wl.close()

    out = env.path("scan.csv")
    p = subprocess.run([sys.executable, os.path.join(SRCDIR, "python", "examples",
                                                     "lock_scan_log.py"),
                        "--port", str(port), "--token", CONTROL, "--laser", "repump795",
                        "--amplitude-mhz", "5", "--period-s", "4", "--seconds", "5",
                        "--csv", out],
                       capture_output=True, text=True, timeout=200,
                       env=dict(os.environ, PYTHONPATH=os.path.join(SRCDIR, "python")))
    rows = list(csv.DictReader(open(out))) if os.path.exists(out) else []
    tap.ok(p.returncode == 0 and len(rows) >= 10 and
           all(r["laser"] == "repump795" for r in rows),
           "the example locks, scans and logs %d readings to CSV" % len(rows),
           p.stdout + p.stderr)
    errs = [float(r["error_mhz"]) for r in rows if r["error_mhz"] not in ("", "None")]
    tap.diag("example: %d readings, error %.2f..%.2f MHz" % (
        len(rows), min(errs) if errs else 0, max(errs) if errs else 0))
    lab.close()
tap.done()
