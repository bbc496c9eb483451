#!/usr/bin/env python3
"""The scripts wavelock-scan, wavelock-log and wavelock-plot against the real
daemon on the simulator: --help, their CSV output read back and checked, the
setpoint restored after a scan (also after Ctrl-C and after an error), exit
statuses, and a PNG from the plot script when gnuplot is installed."""

import csv
import io
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

from wltest import TAP, Env, SRCDIR, wait_until
from clientlab import (CLIENT, SCRIPTS, Lab, clean_environ, dead_port, have_programs,
                       run_client, run_script)

tap = TAP()
LOG_COLS = ["time", "laser", "freq_thz", "error_mhz", "piezo_v", "current_v", "state"]
SCAN_COLS = ["point", "target_thz"] + LOG_COLS
STATES = {"off", "acquiring", "locked", "holding", "relocking", "fault"}


def floats(row, keys):
    try:
        return [float(row[k]) for k in keys]
    except (KeyError, TypeError, ValueError):
        return None


def read_csv(path):
    with open(path, newline="") as f:
        text = f.read()
    rows = list(csv.reader(io.StringIO(text)))
    return rows, [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []


def kv_line(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def run_client_line(env_vars, *args):
    """The first data line the client prints for a command."""
    r = run_client(list(args), env=env_vars)
    return (r.lines() or [""])[0]


def setpoint_events(lab):
    """The daemon's log lines about setpoint changes so far."""
    return [l for l in lab.daemon.output().splitlines() if ": setpoint " in l]


def synthetic_log(path):
    """600 readings each of zeta, alpha, mid (first seen in that order);
    alpha hops +12 GHz for 6 readings and has no current output."""
    import random
    rng = random.Random(19)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOG_COLS)
        for i in range(600):
            for name in ("zeta", "alpha", "mid"):
                err, state = rng.gauss(0.0, 0.8), "locked"
                if name == "alpha" and 300 <= i < 306:
                    err, state = 12000.0 + rng.gauss(0.0, 5.0), "relocking"
                piezo = 5.0 + 0.001 * i
                cur = "" if name == "alpha" else "%.6f" % (-0.2 * (piezo - 5.0))
                w.writerow(["%.3f" % (1.7649e9 + 0.5 * i), name, "384.2", "%.4f" % err,
                            "%.6f" % piezo, cur, state])


def plot_panels(script):
    """[(title, error-panel commands, outputs-panel commands)] of a plot script."""
    body = script[script.index("set multiplot"):]
    chunks = re.split(r"^set title '([^']*)'$", body, flags=re.M)
    out = []
    for title, chunk in zip(chunks[1::2], chunks[2::2]):
        err, _, outs = chunk.partition("unset title")
        out.append((title, err, outs))
    return out


def plot_checks(env):
    log = env.path("synthetic.csv")
    synthetic_log(log)
    png, gp = env.path("synthetic.png"), env.path("synthetic.gp")
    r = run_script("wavelock-plot", [log, png, "--script", gp], timeout=60)
    with open(gp) as f:
        script = f.read()
    panels = plot_panels(script)
    tap.ok(r.rc == 0 and [p[0] for p in panels] == ["zeta", "alpha", "mid"],
           "wavelock-plot: panels in the order the lasers first appear (zeta, alpha, mid)",
           (r, [p[0] for p in panels]))
    ok = True
    for title, err, outs in panels:
        ok &= "piezo_v" not in err and "error_mhz" not in outs
        ok &= re.search(r"using 1:3 axes x1y1 [^,]*piezo_v", outs) is not None
        ok &= "set ylabel 'piezo (V)'" in outs
        if title != "alpha":
            ok &= re.search(r"using 1:4 axes x1y2 [^,]*current_v", outs) is not None
            ok &= "set y2label 'current (V)'" in outs
    tap.ok(ok, "wavelock-plot: the outputs have a panel of their own, piezo on the left axis and"
           " current on the right axis, each with its label", panels)
    m = re.search(r"set yrange \[([-0-9.e]+):([-0-9.e]+)\]", panels[1][1])
    lo, hi = (float(m.group(1)), float(m.group(2))) if m else (None, None)
    tap.ok(m and -10 < lo < -1 and 1 < hi < 10 and "off scale: 6, max +120" in panels[1][1] and
           "set autoscale y" in panels[0][1] and "set autoscale y" in panels[2][1],
           "wavelock-plot: a 12 GHz mode hop does not squash alpha's panel (error axis %s..%s MHz,"
           " the 6 readings beyond it marked and counted); the other panels keep their own scale"
           % (lo, hi), panels[1][1][:600])
    rmargin = float(re.search(r"set rmargin at screen ([0-9.]+)", script).group(1))
    keys = [float(x) for x in re.findall(r"set key at screen ([0-9.]+),", script)]
    tap.ok(keys and all(k > rmargin + 0.03 for k in keys),
           "wavelock-plot: every legend sits right of the plots' right edge (%s > %.3f)"
           % (sorted(set(keys)), rmargin))
    with open(png, "rb") as f:
        tap.ok(f.read(8) == b"\x89PNG\r\n\x1a\n", "wavelock-plot: the synthetic log gives a PNG")
    r = run_script("wavelock-plot", [log, png, "--script", gp, "--lasers", "mid,zeta"])
    with open(gp) as f:
        got = [p[0] for p in plot_panels(f.read())]
    tap.ok(r.rc == 0 and got == ["mid", "zeta"], "wavelock-plot --lasers mid,zeta: those, in that"
           " order", (r, got))
    r = run_script("wavelock-plot", [log, png, "--lasers", "nope"])
    tap.ok(r.rc == 1 and "no readings of nope" in r.err and "zeta, alpha, mid" in r.err,
           "wavelock-plot --lasers with an unknown laser: exit 1, the log's lasers named", r)


# ---- --help and usage (no daemon needed) ---------------------------------------
for name in ("wavelock-scan", "wavelock-log", "wavelock-plot"):
    r = run_script(name, ["--help"])
    tap.ok(r.rc == 0 and r.out.startswith("usage: %s" % name)
           and "Exit status" in " ".join(r.out.split()),
           "%s --help: usage and exit statuses, exit 0" % name, r)

# Every manual page a script's --help names exists (in doc/, or is a system one).
SYSTEM_PAGES = {"gnuplot(1)"}
for name in ("wavelock-scan", "wavelock-log", "wavelock-plot", "wavelock-wlm-bridge"):
    r = run_script(name, ["--help"])
    refs = set(re.findall(r"([a-z][-a-z.]*)\((\d)\)", " ".join(r.out.split())))
    missing = ["%s(%s)" % (n, sec) for n, sec in sorted(refs)
               if not os.path.exists(os.path.join(SRCDIR, "doc", "%s.%s" % (n, sec)))
               and "%s(%s)" % (n, sec) not in SYSTEM_PAGES]
    tap.ok(refs and not missing, "%s --help names only manual pages that exist (%s)"
           % (name, ", ".join("%s(%s)" % x for x in sorted(refs))), missing)

r = run_script("wavelock-scan", ["cool780", "0", "1", "0"])
tap.ok(r.rc == 2 and "STEP" in r.err, "wavelock-scan: a zero step is a usage error (2)", r)
r = run_script("wavelock-scan", ["cool780", "0", "1", "1", "--unit", "furlong"])
tap.ok(r.rc == 2 and "unit" in r.err, "wavelock-scan: an unknown unit is a usage error", r)
r = run_script("wavelock-scan", ["cool780", "0", "1", "1", "--unit", "nm", "--relative"])
tap.ok(r.rc == 2, "wavelock-scan: --relative with nm is a usage error", r)
r = run_script("wavelock-log", ["--duration", "soon"])
tap.ok(r.rc == 2 and "duration" in r.err, "wavelock-log: a bad duration is a usage error", r)
r = run_script("wavelock-plot", ["only-one-arg.csv"])
tap.ok(r.rc == 2, "wavelock-plot: a missing argument is a usage error", r)

why = have_programs()
if why:
    tap.skip("scripts against the simulated lab", why)
    tap.done()

with Env() as env:
    dead = dead_port(env)
    r = run_script("wavelock-log", ["--duration", "1", "-q"], env={"WAVELOCK_PORT": dead})
    tap.ok(r.rc == 3, "wavelock-log: daemon down gives the client's exit 3", r)
    r = run_script("wavelock-scan", ["cool780", "0", "1", "1", "-q"],
                   env={"WAVELOCK_PORT": dead})
    tap.ok(r.rc == 3, "wavelock-scan: daemon down gives exit 3", r)

    # ---- finding the client from the source tree -----------------------------------
    # A tree laid out like the sources: scripts/ next to build/wavelock.
    tree = env.path("tree")
    os.makedirs(os.path.join(tree, "scripts"))
    os.makedirs(os.path.join(tree, "build"))
    os.symlink(CLIENT, os.path.join(tree, "build", "wavelock"))
    bare = env.path("bare")
    os.makedirs(os.path.join(bare, "scripts"))
    for name in ("wavelock-scan", "wavelock-log"):
        for top in (tree, bare):
            shutil.copy(os.path.join(SCRIPTS, name), os.path.join(top, "scripts", name))
    plain = {k: v for k, v in os.environ.items() if not k.startswith("WAVELOCK")}
    plain.update(PATH="/usr/bin:/bin", WAVELOCK_PORT=str(dead))

    def run_copy(top, name, args):
        p = subprocess.run([sys.executable, os.path.join(top, "scripts", name)] + args,
                           capture_output=True, text=True, env=plain, timeout=60)
        return p.returncode, p.stderr

    for name, args in (("wavelock-scan", ["cool780", "0", "1", "1", "-q"]),
                       ("wavelock-log", ["--duration", "1", "-q"])):
        rc, err = run_copy(tree, name, args)
        tap.ok(rc == 3 and "wavelock: cannot connect to 127.0.0.1:%d" % dead in err,
               "%s from a source tree finds build/wavelock by itself (it runs and reports the"
               " daemon down: 3)" % name, (rc, err))
        rc, err = run_copy(bare, name, args)
        tap.ok(rc == 1 and "cannot find the wavelock client" in err and "--client" in err and
               "WAVELOCK_CLIENT" in err and "scripts/build.sh" in err,
               "%s without any client: exit 1 saying how to point it at one" % name, (rc, err))
        rc, err = run_copy(bare, name, args + ["--client", CLIENT])
        tap.ok(rc == 3 and "wavelock: cannot connect to 127.0.0.1:%d" % dead in err,
               "%s --client PATH runs that client" % name, (rc, err))
    with open(os.path.join(SRCDIR, "README")) as f:
        readme = f.read()
    cmds = re.findall(r"^    ((?:scripts|build)/\S+)", readme, re.M)
    tap.ok(cmds and "scripts/wavelock-scan" in cmds and all(
        os.path.exists(os.path.join(SRCDIR, c)) or c.startswith("build/") for c in cmds),
        "README runs the scripts by their path in the source tree (%s)" % ", ".join(sorted(set(cmds))),
        cmds)

    try:
        lab = Lab(env)
    except RuntimeError as e:
        tap.bail("cannot start the simulated lab: %s" % e)
    E = {"WAVELOCK_PORT": lab.port}
    ok = lab.wait_locked(["cool780", "repump"], 40)
    tap.ok(ok, "simulated lab: cool780 and repump locked", lab.states())
    sp0 = lab.setpoint("cool780")

    # ---- wavelock-scan ------------------------------------------------------------
    out = env.path("scan.csv")
    r = run_script("wavelock-scan", ["cool780", "-20", "20", "10", "--unit", "MHz",
                                     "--relative", "--samples", "4", "--wait-timeout", "20",
                                     "--out", out], env=E, timeout=120)
    tap.ok(r.rc == 0, "wavelock-scan: 5 points, exit 0", r)
    rows, recs = read_csv(out) if os.path.exists(out) else ([[]], [])
    tap.eq(rows[0] if rows else None, SCAN_COLS, "wavelock-scan: CSV header")
    tap.ok(len(recs) == 20 and [int(x["point"]) for x in recs] == [p for p in range(1, 6)
                                                                    for _ in range(4)],
           "wavelock-scan: 4 rows for each of 5 points", recs[:3])
    targets = sorted({round(float(x["target_thz"]), 9) for x in recs}) if recs else []
    want = [round(sp0 + d * 1e-6, 9) for d in (-20, -10, 0, 10, 20)]
    tap.ok(len(targets) == 5 and all(abs(a - b) < 1e-9 for a, b in zip(targets, want)),
           "wavelock-scan: targets are the setpoint -20..+20 MHz in 10 MHz steps",
           (targets, want))
    good = True
    diag = []
    for p in range(1, 6):
        pts = [x for x in recs if int(x["point"]) == p]
        vals = [floats(x, ["freq_thz", "target_thz", "error_mhz", "piezo_v"]) for x in pts]
        if not pts or any(v is None for v in vals) or any(x["laser"] != "cool780" for x in pts):
            good = False
            diag.append(pts)
            continue
        # Readings follow the target: median |freq - target| inside the 5 MHz window.
        med = statistics.median(abs(v[0] - v[1]) * 1e6 for v in vals)
        if med > 5.0 or any(x["state"] not in STATES for x in pts):
            good = False
            diag.append((p, med, pts))
    tap.ok(good, "wavelock-scan: readings are numeric and follow each target", diag)
    tap.ok(abs(lab.setpoint("cool780") - sp0) < 1e-9,
           "wavelock-scan: original setpoint restored", (lab.setpoint("cool780"), sp0))

    # To standard output, absolute THz values.
    r = run_script("wavelock-scan", ["repump", "%.9f" % lab.setpoints["repump"],
                                     "%.9f" % (lab.setpoints["repump"] + 5e-6), "5e-6",
                                     "--samples", "2", "-q"], env=E, timeout=120)
    got = list(csv.DictReader(io.StringIO(r.out)))
    tap.ok(r.rc == 0 and len(got) == 4 and all(x["laser"] == "repump" and x["current_v"]
                                               for x in got),
           "wavelock-scan: absolute THz to stdout, current_v recorded", r)

    # An end point out of the allowed range: found before anything moves.
    rng = kv_line(run_client_line(E, "setpoint", "cool780"))
    ev_before = setpoint_events(lab)
    r = run_script("wavelock-scan", ["cool780", "0", "0.5", "0.25", "--unit", "THz",
                                     "--relative", "-q", "--out", env.path("bad.csv")],
                   env=E, timeout=60)
    with open(env.path("bad.csv")) as f:
        bad_rows = f.read()
    tap.ok(r.rc == 1 and "point 2 of 3" in r.err and "outside the allowed range" in r.err and
           rng.get("max_thz", "?") in r.err and "nothing was changed" in r.err,
           "wavelock-scan: an out-of-range end point is refused before the scan starts (exit 1,"
           " the point and the laser's range named)", r)
    tap.ok(bad_rows == "" and r.elapsed < 10 and setpoint_events(lab) == ev_before and
           abs(lab.setpoint("cool780") - sp0) < 1e-9,
           "wavelock-scan: nothing recorded and the setpoint never changed (%.2f s)" % r.elapsed,
           (bad_rows[:200], setpoint_events(lab)[len(ev_before):]))

    # A laser that is off: refused without --lock.
    r = run_script("wavelock-scan", ["probe", "0", "1", "1", "--relative", "--unit", "MHz",
                                     "-q"], env=E)
    tap.ok(r.rc == 1 and "--lock" in r.err, "wavelock-scan: a laser that is off needs --lock", r)

    # Ctrl-C in the middle: exit 130, setpoint restored.
    out = env.path("int.csv")
    argv = [sys.executable, os.path.join(SCRIPTS, "wavelock-scan"), "cool780", "-50", "50",
            "1", "--unit", "MHz", "--relative", "--samples", "3", "--out", out]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_environ(E), universal_newlines=True)
    def lines_in(path):
        try:
            with open(path) as f:
                return f.read().count("\n")
        except OSError:
            return 0

    wait_until(lambda: lines_in(out) >= 4, 60, 0.1)
    moved = abs(lab.setpoint("cool780") - sp0) > 1e-9
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=30)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        rc = None
    tap.ok(moved and rc == 130, "wavelock-scan: SIGINT mid-scan exits 130", (moved, rc, err))
    tap.ok(abs(lab.setpoint("cool780") - sp0) < 1e-9 and "restored" in err,
           "wavelock-scan: setpoint restored after SIGINT", (lab.setpoint("cool780"), err))

    # ---- wavelock-log -----------------------------------------------------------------
    log = env.path("log.csv")
    t0 = time.time()
    r = run_script("wavelock-log", ["--duration", "2", "--out", log], env=E, timeout=30)
    t1 = time.time()
    tap.ok(r.rc == 0 and 1.9 <= r.elapsed < 10, "wavelock-log --duration 2: exit 0 after ~2 s", r)
    rows, recs = read_csv(log) if os.path.exists(log) else ([[]], [])
    tap.eq(rows[0] if rows else None, LOG_COLS, "wavelock-log: CSV header")
    lasers = {x["laser"] for x in recs}
    tap.ok(lasers == {"cool780", "repump", "probe"} and len(recs) >= 20,
           "wavelock-log: rows for every laser", (len(recs), lasers))
    bad = [x for x in recs
           if floats(x, ["time", "piezo_v"]) is None or not (t0 - 1 <= float(x["time"]) <= t1 + 1)
           or x["state"] not in STATES
           or (x["freq_thz"] and floats(x, ["freq_thz", "error_mhz"]) is None)]
    tap.ok(recs and not bad, "wavelock-log: numeric fields, times inside the run", bad[:5])
    locked = [float(x["error_mhz"]) for x in recs
              if x["laser"] == "cool780" and x["state"] == "locked" and x["error_mhz"]]
    tap.ok(locked and statistics.median(abs(v) for v in locked) < 5.0,
           "wavelock-log: a locked laser's error is inside the window", locked[:10])
    tap.ok("rows" in r.err, "wavelock-log: reports what it wrote on stderr", r.err)

    n_before = len(recs)
    r = run_script("wavelock-log", ["-q", "--duration", "1", "--append", "--out", log, "cool780"],
                   env=E, timeout=30)
    rows, recs2 = read_csv(log)
    tap.ok(r.rc == 0 and rows[0] == LOG_COLS and LOG_COLS not in rows[1:]
           and len(recs2) > n_before and {x["laser"] for x in recs2[n_before:]} == {"cool780"},
           "wavelock-log --append LASER: one header, only that laser appended", r)

    # ---- wavelock-plot ---------------------------------------------------------------
    png = env.path("log.png")
    r = run_script("wavelock-plot", [log, png, "--gnuplot", "/nonexistent/gnuplot"])
    tap.ok(r.rc == 69 and "gnuplot" in r.err, "wavelock-plot: no gnuplot, exit 69 with a message", r)
    notlog = env.write("notlog.csv", "a,b\n1,2\n")
    if shutil.which("gnuplot"):
        r = run_script("wavelock-plot", [log, png], timeout=60)
        with open(png, "rb") if os.path.exists(png) else io.BytesIO() as f:
            head = f.read(8)
        tap.ok(r.rc == 0 and head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 2000,
               "wavelock-plot: writes a PNG", r)
        r = run_script("wavelock-plot", [notlog, env.path("x.png")])
        tap.ok(r.rc == 1 and "not a wavelock log" in r.err, "wavelock-plot: rejects other CSVs", r)
        scanpng = env.path("scan.png")
        r = run_script("wavelock-plot", [env.path("scan.csv"), scanpng], timeout=60)
        tap.ok(r.rc == 0 and os.path.exists(scanpng), "wavelock-plot: plots a scan CSV too", r)
        plot_checks(env)
    else:
        tap.skip("wavelock-plot: writes a PNG", "gnuplot is not installed")
        tap.skip("wavelock-plot: rejects other CSVs", "gnuplot is not installed")
        tap.skip("wavelock-plot: plots a scan CSV too", "gnuplot is not installed")

tap.done()
