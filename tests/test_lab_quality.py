#!/usr/bin/python3
"""scripts/wavelock-quality, briefly: usage and errors; --start (its own
wavelock-sim + wavelockd on conf/sim.conf, seed 2) with a 3 s window and
--csv, whose figures must parse and be sane; and attached to a lab this test
started, as a table for two lasers, after which their setpoints must be
restored and they must be locked again.

Sane means, per laser: noise_mhz is the config's sim.noise_mhz; 0 < rms_mhz
< window_mhz; ratio = rms/noise within 0.2..5; where stepped (1 GHz, at
least 8 lasers), overshoot <= 10 % and 0 < settle_s <= 15 s; relock_s after
the mode hop between modehop_s (3 s: the laser cannot lock while hopped;
for a persistent hop, hop=persistent, above 0: the relock search)
and 30 s; 0 < lock_s <= 60 s; the triangle scan's scan_ratio (scan RMS over
the locked RMS of this short window) above 0 and at most 5.
"""

import csv
import io
import os
import subprocess
import sys
import time

from wltest import SRCDIR, TAP, Env, BUILDDIR
from lablib import Lab, LabConfig, LabError, SIM_CONF, programs_missing

SCRIPT = os.path.join(SRCDIR, "scripts", "wavelock-quality")
COLUMNS = ["laser", "noise_mhz", "rms_mhz", "ratio", "window_mhz", "unlocked",
           "step_mhz", "overshoot_pct", "settle_s", "hop", "relock_s", "lock_s",
           "scan_mhz", "scan_ratio"]

tap = TAP()
why = programs_missing()
if why:
    tap.skip("wavelock-quality", why)
    tap.done()


def run(args, timeout=90):
    env = dict(os.environ, WL_BUILDDIR=BUILDDIR, WL_SRCDIR=SRCDIR)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def num(v):
    return None if v in ("", "-") else float(v)


cfg = LabConfig(SIM_CONF)

rc, out, err, _ = run(["--help"])
tap.ok(rc == 0 and all(w in out for w in ("--start", "--seed", "--duration", "--csv",
                                          "rms_mhz", "relock_s", "not installed")),
       "--help exits 0 and describes --start, --seed, --duration, --csv and the columns", out + err)
rc, out, err, _ = run(["--duration", "-1"])
tap.ok(rc == 2 and "duration" in err, "a negative --duration is a usage error (2)", err)
rc, out, err, _ = run(["--lasers", "nosuch"])
tap.ok(rc == 2 and "nosuch" in err, "an unknown laser is a usage error (2)", err)

with Env() as env:
    dead = env.free_port()
    rc, out, err, _ = run(["--port", dead, "--sim-port", dead])
    tap.ok(rc == 3 and "cannot reach" in err and not out,
           "attaching to nothing exits 3 with a message", "rc %r\n%s%s" % (rc, out, err))

# --start --csv: the whole measurement, briefly
rc, out, err, took = run(["--start", "--seed", "2", "--duration", "3", "--csv"], timeout=120)
tap.ok(rc == 0, "--start --seed 2 --duration 3 --csv exits 0 (%.1f s)" % took,
       "rc %r\n%s" % (rc, err))
rows = list(csv.DictReader(io.StringIO(out)))
tap.ok(out.splitlines()[:1] == [",".join(COLUMNS)] and [r["laser"] for r in rows] == cfg.names,
       "CSV: header and one row per laser of conf/sim.conf, in config order", out)
tap.diag(out)
stepped = 0
for r in rows:
    n = r["laser"]
    l = cfg.by_name[n]
    try:
        noise, rms_, ratio = num(r["noise_mhz"]), num(r["rms_mhz"]), num(r["ratio"])
        win = num(r["window_mhz"])
        step, over, settle = num(r["step_mhz"]), num(r["overshoot_pct"]), num(r["settle_s"])
        relock, lock = num(r["relock_s"]), num(r["lock_s"])
        scan, scan_ratio = num(r["scan_mhz"]), num(r["scan_ratio"])
        unlocked = int(r["unlocked"])
    except (ValueError, KeyError) as e:
        tap.ok(False, "%s: row parses" % n, "%s: %r" % (e, r))
        continue
    sane = (noise == l["sim"]["noise_mhz"] and win == l["window_mhz"]
            and rms_ is not None and 0 < rms_ < win
            and ratio is not None and abs(ratio - rms_ / noise) <= 0.006 / noise + 0.006 and 0.2 < ratio < 5
            and unlocked >= 0
            and r["hop"] == ("persistent" if l["sim"].get("modehop_free_v", 0.0) > 0
                             else "temporary")
            and relock is not None
            and (0 if r["hop"] == "persistent" else l["sim"]["modehop_s"]) < relock <= 30
            and lock is not None and 0 < lock <= 60
            and scan is not None and scan_ratio is not None and 0 < scan_ratio <= 5
            and abs(scan_ratio - scan / rms_) <= 0.03 * scan_ratio + 0.01)
    if step is not None:
        stepped += 1
        sane = sane and abs(step) == 1000 and over is not None and 0 <= over <= 10 \
            and settle is not None and 0 < settle <= 15
    tap.ok(sane, "%s: figures sane (rms %s MHz < window %s, ratio %s, step %s: overshoot %s %%, "
           "settle %s s; relock %s s; lock %s s; scan %s MHz, %sx)"
           % (n, r["rms_mhz"], r["window_mhz"], r["ratio"], r["step_mhz"] or "-",
              r["overshoot_pct"] or "-", r["settle_s"] or "-", r["relock_s"], r["lock_s"],
              r["scan_mhz"], r["scan_ratio"]), r)
tap.ok(stepped >= 8, "at least 8 lasers took the 1 GHz step (%d)" % stepped)

# attached to a running lab: a table; setpoints restored, lasers locked again
with Env() as env:
    try:
        lab = Lab(env, seed=4, events=False)
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the lab did not start: %s" % e)
    if not lab.wait_states("locked", timeout=60):
        tap.bail("lab did not lock: %r" % lab.d.states())
    before = {n: s["setpoint_thz"] for n, s in lab.d.status().items()}
    rc, out, err, took = run(["-c", lab.conf, "--port", lab.port, "--sim-port", lab.sim_port,
                              "--lasers", "cool780,cool556", "--duration", "2"])
    tap.ok(rc == 0, "attached: exits 0 (%.1f s)" % took, "rc %r\n%s" % (rc, err))
    lines = out.splitlines()
    tap.ok(len(lines) == 3 and lines[0].split() == COLUMNS
           and [l.split()[0] for l in lines[1:]] == ["cool780", "cool556"]
           and all(len(l.split()) == len(COLUMNS) for l in lines)
           and len({len(l) for l in lines}) == 1,
           "attached: an aligned table, header and the two lasers asked for", out)
    tap.diag(out)
    cells = [dict(zip(COLUMNS, l.split())) for l in lines[1:]]
    tap.ok(all(c["lock_s"] == "-" and num(c["relock_s"]) and num(c["settle_s"])
               and 0 < float(c["rms_mhz"]) < float(c["window_mhz"]) for c in cells),
           "attached: rms, settle and relock measured, no lock time", cells)
    after = {n: s["setpoint_thz"] for n, s in lab.d.status().items()}
    tap.ok(after == before, "attached: every setpoint restored afterwards",
           "before %r\nafter %r" % (before, after))
    tap.ok(lab.wait_states("locked", timeout=30), "attached: all lasers locked afterwards",
           lab.d.states())
    lab.close()
# --drift-minutes: the calibration row (true error after simulated minutes of
# conf/sim.conf's calibration drift, with and without the correction)
rc, out, err, took = run(["--drift-minutes", "1"])
tap.ok(rc == 2 and "--start" in err, "--drift-minutes without --start is a usage error (2)", err)
rc, out, err, took = run(["--start", "--seed", "2", "--duration", "2", "--no-step", "--no-hop",
                          "--drift-minutes", "4", "--drift-speed", "10", "--lasers",
                          "cool780,clock698,cool671"], timeout=150)
tail = out.strip().splitlines()[-2:]
row = dict(zip(tail[0].split(), tail[1].split())) if len(tail) == 2 else {}
on, off = num(row.get("drift_on_mhz", "")), num(row.get("drift_off_mhz", ""))
tap.ok(rc == 0 and row.get("calibration") == "true_error" and on is not None and off is not None
       and on < 3.0 and off > 8.0 and off > 3 * on,
       "--drift-minutes 4 --drift-speed 10: true error RMS %s MHz with the correction, %s "
       "without (%.0f s)" % (row.get("drift_on_mhz"), row.get("drift_off_mhz"), took),
       "rc %r\n%s%s" % (rc, out, err))

tap.done()
