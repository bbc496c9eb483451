#!/usr/bin/python3
"""Relock search after persistent mode hops (issue 14), against wavelock-sim
over the real protocols, on conf/sim.conf with every laser hopping for good
(cool780 and cool556, whose hops end by themselves in sim.conf, get a
mode-hop-free window and hysteresis here too, and relock.after_s = 0.5 like
the others instead of their 4 s).

 1. For each seed (three labs side by side), each of the 14 lasers in turn
    is made to hop (the sim's 'hop', its modehop_mhz with a random sign): it
    stays on the wrong mode until its actuators move back past the
    hysteresis point, so only the daemon's relock search brings it back.
    Every hop must end in 'locked' again, with the laser back on its mode
    (truth mode=0); over all hops the median time from the hop command to
    'locked' is at most MEDIAN_S and the worst at most WORST_S.  Every point
    of every search ('* relock ... step=') lies inside the piezo limits and
    within the search span of the laser's last good output.
 2. A hop whose hysteresis (0.8 V) is beyond the search span of FAULT_LASER
    (0.4 V here, 2 passes): the laser ends in 'fault' with reason=relock_failed
    after exactly 2 x 8 steps, its piezo output back at the last good value.
    unlock clears it.
 3. unlock during a search (STOP_LASER, hysteresis 0.8 V against its 1 V span)
    ends it: '* relock ... result=stopped', state off, no step after that.
    A setpoint change during a search (SETPOINT_LASER, the same hop) ends it
    too; the next search starts after relock.after_s and finds the laser
    (0.8 V is inside the span): locked again.
 4. No value written to any actuator left its limits ('writes':
    limit_violations = 0, runtime_violations = 0); both programs exit 0 on
    SIGTERM with no sanitizer report.
"""

import random
import re
import statistics
import threading
import time

from wltest import TAP, Env, wait_until
from lablib import Lab, SIM_CONF, finish_lab, programs_missing

SEEDS = (1, 2, 3)
MEDIAN_S = 5.0
WORST_S = 15.0
HOP_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 90.0
FAULT_LASER = "repump679"
FAULT_RELOCK = ("relock = { after_s = 0.5; piezo_span_v = 0.4; piezo_step_v = 0.1; "
                "tries = 2; };")
FAULT_STEPS = 2 * 8
STOP_LASER = "cool767"
SETPOINT_LASER = "cool671"
BIG_HYSTERESIS_V = 0.8
# the two lasers whose hops end by themselves in sim.conf
MAKE_PERSISTENT = {"cool780": (12.0, 0.2), "cool556": (8.0, 0.15)}

tap = TAP()
why = programs_missing()
if why:
    tap.skip("relock search on conf/sim.conf", why)
    tap.done()


def laser_block(text, name):
    """(start, end) of a laser's entry in the config text."""
    i = text.index('name = "%s"' % name)
    return i, text.index("\n  }", i)


def config_text():
    with open(SIM_CONF) as f:
        text = f.read()
    for name, (free_v, hyst_v) in MAKE_PERSISTENT.items():
        a, b = laser_block(text, name)
        block = text[a:b]
        block = re.sub(r"relock = \{ after_s = [0-9.]+; \};", "relock = { after_s = 0.5; };",
                       block, count=1)
        block = re.sub(r"modehop_mhz = (\d+); \};",
                       r"modehop_mhz = \1;\n            modehop_free_v = %g; hysteresis_v = %g; };"
                       % (free_v, hyst_v), block, count=1)
        text = text[:a] + block + text[b:]
    a, b = laser_block(text, FAULT_LASER)
    text = text[:a] + text[a:b].replace("relock = { after_s = 0.5; };", FAULT_RELOCK) + text[b:]
    return text


def steps_of(lab, name, t0, t1=float("inf")):
    return [d for t, k, d in lab.events.since(t0, "relock", name)
            if "step" in d and "result" not in d and t <= t1]


def run_seed(env, seed, out):
    """Every laser of one lab (its own Env: start-up is not thread-safe
    within one) hops in turn; out[seed] = results."""
    res = {"times": {}, "failed": [], "bad_steps": [], "steps": {}, "error": None}
    out[seed] = res
    try:
        conf = env.write("relock.conf", config_text())
        lab = Lab(env, seed=seed, conf=conf, name="relock%d" % seed)
        res["lab"] = lab
        if not lab.wait_states("locked", timeout=LOCK_TIMEOUT_S):
            res["error"] = "not all locked: %r" % lab.d.states()
            return
        rng = random.Random(seed)
        for n in lab.cfg.names:
            st = lab.d.status(n)[n]
            pre_v = float(st["piezo_v"])
            size = lab.cfg.by_name[n]["sim"]["modehop_mhz"] * rng.choice((1, -1))
            t0 = time.monotonic()
            lab.sim.ok("hop %s %g" % (n, size))
            t_lock = lab.events.first(n, "locked", t0, HOP_TIMEOUT_S)
            mode = lab.sim.truth(n)[n].get("mode")
            steps = steps_of(lab, n, t0)
            res["steps"][n] = len(steps)
            lo, hi = lab.cfg.by_name[n]["piezo_min_v"], lab.cfg.by_name[n]["piezo_max_v"]
            span = 0.4 if n == FAULT_LASER else 1.0
            for d in steps:
                v = float(d["piezo_v"])
                if not (lo <= v <= hi and abs(v - pre_v) <= span + 0.05):
                    res["bad_steps"].append((n, v, pre_v))
            if t_lock is None or mode != 0:
                res["failed"].append((n, mode, lab.d.status(n)[n].get("state")))
            else:
                res["times"][n] = t_lock - t0
    except Exception as e:      # reported as a failed check below
        res["error"] = repr(e)


def fault_phase(lab):
    n = FAULT_LASER
    st = lab.d.status(n)[n]
    pre_v = float(st["piezo_v"])
    t0 = time.monotonic()
    lab.sim.ok("hop %s %g %g" % (n, lab.cfg.by_name[n]["sim"]["modehop_mhz"], BIG_HYSTERESIS_V))
    t_fault = lab.events.first(n, "fault", t0, 60)
    # the last write (home) may still be on its way when the state changes
    wait_until(lambda: abs(float(lab.d.status(n)[n]["piezo_v"]) - pre_v) <= 0.01, 5.0, 0.1)
    st = lab.d.status(n)[n]
    steps = steps_of(lab, n, t0)
    res = [d for _, _, d in lab.events.since(t0, "relock", n) if "result" in d]
    results = [d["result"] for d in res]
    home = float(st["piezo_v"])
    tap.ok(t_fault is not None and st.get("state") == "fault"
           and st.get("reason") == "relock_failed",
           "%s: hysteresis %.1f V beyond its 0.4 V search span: fault with "
           "reason=relock_failed after %s s" % (n, BIG_HYSTERESIS_V,
                                                "%.1f" % (t_fault - t0) if t_fault else "-"), st)
    tap.ok(len(steps) == FAULT_STEPS and results == ["start", "failed"],
           "%s: %d search steps (2 passes of 8), events %s" % (n, len(steps), results),
           steps)
    tap.ok(abs(home - pre_v) <= 0.01 and all(abs(float(d["piezo_v"]) - pre_v) <= 0.4 + 1e-6
                                            for d in steps),
           "%s: piezo back at the last good output (%.4f V, %.4f V before the hop); "
           "every step within 0.4 V of it" % (n, home, pre_v))
    lab.d.ok("unlock %s" % n)
    st = lab.d.status(n)[n]
    tap.ok(st.get("state") == "off" and "reason" not in st,
           "%s: unlock clears the fault (state %s)" % (n, st.get("state")), st)


def stop_phase(lab):
    n = STOP_LASER
    t0 = time.monotonic()
    lab.sim.ok("hop %s %g %g" % (n, lab.cfg.by_name[n]["sim"]["modehop_mhz"], BIG_HYSTERESIS_V))
    first = lab.events.wait_for(
        lambda ev: [d for t, k, d in ev if t >= t0 and k == "relock" and d.get("laser") == n
                    and "step" in d and "result" not in d], 15)
    searching = lab.d.status(n)[n]
    lab.d.ok("unlock %s" % n)
    t_stop = time.monotonic()
    time.sleep(1.5)
    st = lab.d.status(n)[n]
    ends = [d.get("result") for _, _, d in lab.events.since(t0, "relock", n) if "result" in d]
    # a step already under way when the unlock came may still be reported
    later = [d for t, _, d in lab.events.since(t_stop + 1.0, "relock", n) if "result" not in d]
    tap.ok(bool(first) and "search" in searching and ends[-1:] == ["stopped"]
           and st.get("state") == "off" and "search" not in st and not later,
           "%s: unlock during a search (status search=%s search_pass=%s) ends it: %s, "
           "state %s, no step after" % (n, searching.get("search"), searching.get("search_pass"),
                                        ends, st.get("state")), (searching, st, later))


def setpoint_phase(lab):
    n = SETPOINT_LASER
    t0 = time.monotonic()
    lab.sim.ok("hop %s %g %g" % (n, lab.cfg.by_name[n]["sim"]["modehop_mhz"], BIG_HYSTERESIS_V))
    first = lab.events.wait_for(
        lambda ev: [d for t, k, d in ev if t >= t0 and k == "relock" and d.get("laser") == n
                    and "step" in d and "result" not in d], 15)
    lab.d.ok("setpoint %s +1 MHz" % n)
    t_lock = lab.events.first(n, "locked", t0, 40)
    ends = [d.get("result") for _, _, d in lab.events.since(t0, "relock", n) if "result" in d]
    tap.ok(bool(first) and t_lock is not None and ends == ["start", "stopped", "start", "found"]
           and lab.sim.truth(n)[n].get("mode") == 0,
           "%s: a setpoint change during a search ends it (%s); the next search finds the "
           "laser, locked %s s after the hop" % (n, ends, "%.1f" % (t_lock - t0) if t_lock
                                                 else "-"))


envs = [Env() for _ in SEEDS]
try:
    t_run = time.monotonic()
    out = {}
    threads = [threading.Thread(target=run_seed, args=(e, s, out)) for e, s in zip(envs, SEEDS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = []
    for s in SEEDS:
        r = out[s]
        tap.ok(r["error"] is None and not r["failed"] and len(r["times"]) == 14,
               "seed %d: every one of the 14 lasers relocked after a persistent hop (%d)"
               % (s, len(r["times"])), "%r %r" % (r["error"], r["failed"]))
        tap.ok(not r["bad_steps"], "seed %d: every search step inside the piezo limits and "
               "the search span (%d steps)" % (s, sum(r["steps"].values())), r["bad_steps"])
        tap.diag("seed %d: hop to locked (s, search steps): %s" % (s, " ".join(
            "%s=%.2f/%d" % (n, t, r["steps"].get(n, 0)) for n, t in r["times"].items())))
        times += list(r["times"].values())
    if times:
        # The search's pace is the simulator's reading schedule (its own
        # clock), which load hardly moves: 4.33-4.53 s in every run, with
        # one core of the machine kept busy by another process too.
        med, worst = statistics.median(times), max(times)
        tap.ok(med <= MEDIAN_S and worst <= WORST_S,
               "%d persistent hops: hop to locked median %.2f s (<= %.0f), worst %.2f s (<= %.0f)"
               % (len(times), med, MEDIAN_S, worst, WORST_S))
    else:
        tap.ok(False, "no relock times")

    lab = out[SEEDS[0]].get("lab")
    if lab is not None and out[SEEDS[0]]["error"] is None:
        fault_phase(lab)
        stop_phase(lab)
        setpoint_phase(lab)

    for s in SEEDS:
        lab = out[s].get("lab")
        if lab is None:
            continue
        finish_lab(tap, lab, "seed %d: " % s)
    tap.diag("run time %.1f s" % (time.monotonic() - t_run))
finally:
    for e in envs:
        e.cleanup()
tap.done()
