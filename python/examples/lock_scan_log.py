#!/usr/bin/env python3
"""Lock every laser, scan one of them, and log its readings to a CSV file.

    PYTHONPATH=python python3 python/examples/lock_scan_log.py \\
        --laser cool780 --amplitude-mhz 20 --period-s 10 --seconds 30 --csv scan.csv

Uses the daemon's `scan` command where it has one; otherwise it steps the
setpoint itself through a triangle (relative setpoint changes in MHz).
WAVELOCK_HOST, WAVELOCK_PORT and WAVELOCK_TOKEN are honoured.
"""

import argparse
import csv
import os
import sys
import threading
import time

import wavelock


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default=os.environ.get("WAVELOCK_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("WAVELOCK_PORT", "7470")))
    ap.add_argument("--token", default=os.environ.get("WAVELOCK_TOKEN"))
    ap.add_argument("--laser", required=True)
    ap.add_argument("--amplitude-mhz", type=float, default=10.0)
    ap.add_argument("--period-s", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--csv", default="scan.csv")
    ap.add_argument("--lock-timeout", type=float, default=120.0)
    a = ap.parse_args()

    with wavelock.Client(a.host, a.port, token=a.token, name="lock_scan_log") as wl:
        wl.lock("all")
        waited = wl.wait_locked(timeout=a.lock_timeout)
        print("all lasers locked after %.1f s" % waited)
        centre = wl.setpoint(a.laser)
        stop = threading.Event()
        stepper = None
        try:
            wl.scan(a.laser, "triangle", a.amplitude_mhz, a.period_s)
            print("scanning %s with the daemon's scan" % a.laser)
        except wavelock.Error as e:
            if e.code != 404:
                raise
            print("no scan command in this wavelockd: stepping the setpoint here")

            def step():
                t0 = time.monotonic()
                with wavelock.Client(a.host, a.port, token=a.token) as w2:
                    while not stop.wait(0.2):
                        ph = ((time.monotonic() - t0) / a.period_s) % 1.0
                        off = a.amplitude_mhz * (4 * ph - 1 if ph < 0.5 else 3 - 4 * ph)
                        w2.setpoint(a.laser, centre + off * 1e-6)
            stepper = threading.Thread(target=step, daemon=True)
            stepper.start()
        n = 0
        with open(a.csv, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t", "laser", "state", "freq_thz", "error_mhz", "piezo_v"])
            sub = wl.subscribe(a.laser, timeout=5.0)
            t_end = time.monotonic() + a.seconds
            for ev in sub:
                if ev.kind == "reading":
                    out.writerow([ev.get("t"), ev.get("laser"), ev.get("state"),
                                  ev.get("freq_thz"), ev.get("error_mhz"), ev.get("piezo_v")])
                    n += 1
                if time.monotonic() >= t_end:
                    break
            sub.close()
        stop.set()
        if stepper:
            stepper.join()
        else:
            wl.scan(a.laser, "stop")
        wl.setpoint(a.laser, centre)
        print("%d readings of %s written to %s" % (n, a.laser, a.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
