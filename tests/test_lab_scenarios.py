#!/usr/bin/python3
"""Closed-loop scenarios (issue 5) on conf/sim.conf: wavelock-sim and
wavelockd as real processes (free ports, state file in a temporary
directory), one seed (WL_LAB_SEED, default 5).  The true frequencies come
from wavelock-sim's 'truth', polled at 20 Hz for the whole run; the laser
states from a connection subscribed to every laser, so short states are not
missed.  After all 14 lasers are locked (within 60 s):

 1. Setpoint steps of STEP_MHZ (1 GHz), up for the lasers whose outputs can
    move them 1.25 GHz up, else down where they can move 1.25 GHz down
    (a laser whose piezo range is smaller is left out), all at once, then
    back.  Each stepped laser must leave 'locked', be locked again within
    RECOVER_S, overshoot the new setpoint by at most OVERSHOOT_PCT (10 %) of
    the step (true frequency), and settle: its true error enters the window
    within SETTLE_S (15 s) and then stays inside it until the end of the
    observation (2 s after it is locked again).
 2. At the same time, in one phase:
    - a mode hop ('hop <laser>', 8 GHz for 3 s) of cool780 and cool556 must
      give 'relocking' within 5 s and 'locked' again within RECOVER_S, with
      the piezo output kept within 0.2 V of its value before the hop (the
      loop does not chase the hop);
    - a wavemeter dropout ('dropout <channel> 4') on probe852's channel must
      give 'holding' within 5 s with the output held: during holding no
      actuator write reaches the simulator ('writes' count and last value
      unchanged), the daemon's piezo_v equals the simulator's and stays
      within 0.02 V of its value before the dropout; then 'locked' again;
    - every other laser stays locked (no '* state' event).
 3. A drift the piezo cannot follow (repump707, whose s16 output could
    encode volts beyond its limits: drifted 400 MHz beyond its piezo range,
    in two steps below modehop_mhz): the piezo output stops exactly at its
    limit (daemon and simulator agree, no violation), the laser is not
    'locked' meanwhile, and once the drift is undone it is locked again
    within 15 s (no integrator windup); the other lasers stay locked.
 4. Device outages ('outage <device> <mode> 3'): ao2 silent alone, then ao3
    refuse and ao4 drop together.  Every laser of the broken devices must go
    to 'fault' within 5 s ('devices' shows up=0), every other laser stays
    locked, and the broken devices' lasers are locked again within RECOVER_S
    of the outage's end ('devices' shows up=1).
 5. Over the whole run no value written to any actuator left its
    min_v..max_v ('writes': limit_violations = 0), both programs exit 0 on
    SIGTERM with no sanitizer report.
"""

import os
import time

from wltest import TAP, Env, kv, wait_until
from lablib import Lab, LabError, TruthLog, log_text, programs_missing, step_response

SEED = int(os.environ.get("WL_LAB_SEED", "5"))
LOCK_TIMEOUT_S = 60.0
STEP_MHZ = 1000.0
STEP_MARGIN = 1.25          # a laser is stepped only if it can move 1.25 x the step
OVERSHOOT_PCT = 10.0
SETTLE_S = 15.0
OBSERVE_S = 2.0             # keep watching this long after locked again
RECOVER_S = 30.0
HOP_LASERS = ("cool780", "cool556")
HOP_MAX_DV = 0.2
DROPOUT_LASER = "probe852"
DROPOUT_S = 4.0
HELD_DV = 0.02
OUTAGE_S = 3.0
SAT_LASER = "repump707"     # s16 output: volts beyond min_v..max_v are encodable
SAT_EXTRA_MHZ = 400.0
SAT_RELOCK_S = 15.0

tap = TAP()
why = programs_missing()
if why:
    tap.skip("closed-loop scenarios on conf/sim.conf", why)
    tap.done()


def quiet_lasers(lab, names, t0, t1):
    """'* state' events of the given lasers between t0 and t1."""
    return [(round(t - t0, 2), d.get("laser"), d.get("state"))
            for t, _, d in lab.events.since(t0, "state") if t <= t1 and d.get("laser") in names]


def device_up(lab, dev):
    for line in lab.d.ok("devices"):
        d = kv(line)
        if d.get("name") == dev:
            return d.get("up")
    return None


def step_phase(lab, tl, plan, label):
    """Step every laser of plan {name: step_mhz} at once and check the
    response.  Returns {name: (overshoot_pct, settle_s)}."""
    st = lab.d.status()
    new_sp = {}
    t_step = time.monotonic()
    for n, step in plan.items():
        new_sp[n] = float(st[n]["setpoint_thz"]) + step * 1e-6
        lab.d.ok("setpoint %s %.9f" % (n, new_sp[n]))
    t_locked = {n: lab.events.first(n, "locked", t_step, RECOVER_S) for n in plan}
    time.sleep(OBSERVE_S)
    t_end = time.monotonic()
    out = {}
    for n, step in plan.items():
        w = lab.cfg.by_name[n]["window_mhz"]
        left = lab.events.first(n, "acquiring", t_step)
        tl_ok = t_locked[n] is not None
        series = tl.error_vs(n, new_sp[n], t_step - 1.0, t_end)
        r = step_response(series, t_step, step, w)
        pre = [e for t, e in series if t < t_step]
        start = pre[-1] if pre else float("nan")
        out[n] = (r["overshoot_pct"], r["settle_s"])
        tap.ok(left is not None and tl_ok,
               "%s: %s %+.0f MHz: leaves locked, locked again within %.0f s (after %s s)"
               % (label, n, step, RECOVER_S,
                  "%.2f" % (t_locked[n] - t_step) if tl_ok else "-"),
               lab.events.states_since(n, t_step))
        tap.ok(r["samples"] >= 20 and abs(start) > 0.8 * abs(step)
               and r["overshoot_pct"] <= OVERSHOOT_PCT
               and r["settle_s"] is not None and r["settle_s"] <= SETTLE_S,
               "%s: %s true frequency: overshoot %.1f %% <= %.0f %%, settled inside +-%.0f MHz "
               "after %s s <= %.0f s (and stayed there for the rest of %.1f s; %d samples, "
               "%+.0f MHz before the step)"
               % (label, n, r["overshoot_pct"], OVERSHOOT_PCT, w,
                  "%.2f" % r["settle_s"] if r["settle_s"] is not None else "never",
                  SETTLE_S, t_end - t_step, r["samples"], start))
    others = [n for n in lab.cfg.names if n not in plan]
    ev = quiet_lasers(lab, others, t_step, t_end)
    tap.ok(not ev, "%s: the %d lasers not stepped stay locked" % (label, len(others)), ev)
    return out


def fault_phase(lab, tl):
    """Mode hops and a wavemeter dropout at the same time."""
    tr = lab.sim.truth()
    pre_v = {n: tr[n]["piezo_v"] for n in HOP_LASERS}
    pch = lab.cfg.by_name[DROPOUT_LASER]["channel"]
    before = float(lab.d.status(DROPOUT_LASER)[DROPOUT_LASER]["piezo_v"])
    t0 = time.monotonic()
    for n in HOP_LASERS:
        lab.sim.ok("hop %s" % n)
    t_drop = time.monotonic()
    lab.sim.ok("dropout %d %g" % (pch, DROPOUT_S))

    # dropout: holding with the output held
    t_hold = lab.events.first(DROPOUT_LASER, "holding", t_drop, 5.0)
    tap.ok(t_hold is not None, "dropout: %s goes holding within 5 s (after %s s)"
           % (DROPOUT_LASER, "%.2f" % (t_hold - t_drop) if t_hold else "-"),
           lab.events.states_since(DROPOUT_LASER, t_drop))
    if t_hold is not None:
        act = DROPOUT_LASER + ".piezo"
        time.sleep(max(0.0, t_hold + 0.3 - time.monotonic()))
        wa, sa = lab.sim.writes()[act], lab.d.status(DROPOUT_LASER)[DROPOUT_LASER]
        time.sleep(max(0.0, t_drop + DROPOUT_S - 1.5 - time.monotonic()))
        wb, sb = lab.sim.writes()[act], lab.d.status(DROPOUT_LASER)[DROPOUT_LASER]
        tb = lab.sim.truth(DROPOUT_LASER)[DROPOUT_LASER]
        va, vb = float(sa["piezo_v"]), float(sb["piezo_v"])
        tap.ok(sb["state"] == "holding" and wa["count"] == wb["count"]
               and wa["last_v"] == wb["last_v"],
               "dropout: while holding (%.1f s) no write reaches the simulator "
               "(writes count %d -> %d, last_v %.6f -> %.6f)"
               % (time.monotonic() - t_hold, wa["count"], wb["count"], wa["last_v"],
                  wb["last_v"]), "state %s" % sb["state"])
        tap.ok(va == vb and abs(vb - tb["piezo_v"]) < 1e-3 and abs(va - before) <= HELD_DV,
               "dropout: output held: piezo_v %.6f before, %.6f and %.6f while holding, "
               "simulator %.6f" % (before, va, vb, tb["piezo_v"]))
        t_back = lab.events.first(DROPOUT_LASER, "locked", t_hold, DROPOUT_S + RECOVER_S)
        tap.ok(t_back is not None, "dropout: %s locked again within %.0f s of the dropout's end "
               "(after %s s)" % (DROPOUT_LASER, RECOVER_S,
                                 "%.2f" % (t_back - t_drop - DROPOUT_S) if t_back else "-"),
               lab.events.states_since(DROPOUT_LASER, t_drop))

    # mode hops: relocking, then locked, output not chasing the hop
    relock = {}
    for n in HOP_LASERS:
        t_rel = lab.events.first(n, "relocking", t0, 5.0)
        t_lock = lab.events.first(n, "locked", t_rel, RECOVER_S) if t_rel else None
        tap.ok(t_rel is not None and t_lock is not None,
               "mode hop: %s relocking after %s s, locked again after %s s (within %.0f s)"
               % (n, "%.2f" % (t_rel - t0) if t_rel else "-",
                  "%.2f" % (t_lock - t0) if t_lock else "-", RECOVER_S),
               lab.events.states_since(n, t0))
        t1 = t_lock or time.monotonic()
        hopped = [v for _, v in tl.series(n, "mode_hop", t0, t1)]
        dv = max([abs(v - pre_v[n]) for _, v in tl.series(n, "piezo_v", t0, t1)] + [0.0])
        tap.ok(1 in hopped and dv <= HOP_MAX_DV,
               "mode hop: %s piezo stayed within %.3f V <= %.1f V of %.3f V through the hop"
               % (n, dv, HOP_MAX_DV, pre_v[n]), "mode_hop samples: %r" % sorted(set(hopped)))
        if t_lock:
            relock[n] = t_lock - t0
    t_end = time.monotonic()
    others = [n for n in lab.cfg.names if n not in HOP_LASERS and n != DROPOUT_LASER]
    ev = quiet_lasers(lab, others, t0, t_end)
    tap.ok(not ev, "hop+dropout: the other %d lasers stay locked" % len(others), ev)
    return relock


def saturation_phase(lab, tl):
    """A drift the piezo cannot follow: the output must stop exactly at its
    limit, and the lock must come back quickly (no windup) once the drift is
    undone.  The drift comes in two steps, each below the daemon's
    modehop_mhz, so it is not taken for a mode hop."""
    n = SAT_LASER
    l = lab.cfg.by_name[n]
    act = n + ".piezo"
    tr = lab.sim.truth(n)[n]
    lo, hi = lab.cfg.reach_mhz(n, tr["piezo_v"], tr["current_v"])
    limit = l["piezo_min_v"] if l["sim"]["piezo_mhz_per_v"] > 0 else l["piezo_max_v"]
    drift = -lo + SAT_EXTRA_MHZ            # beyond what lowering the piezo can undo
    t0 = time.monotonic()
    lab.sim.ok("drift %s %.3f" % (n, drift / 2))
    time.sleep(1.0)
    lab.sim.ok("drift %s %.3f" % (n, drift / 2))
    at_limit = wait_until(lambda: abs(lab.sim.truth(n)[n]["piezo_v"] - limit) < 1e-3, 15, 0.1)
    time.sleep(1.0)
    st = lab.d.status(n)[n]
    tr = lab.sim.truth(n)[n]
    wr = lab.sim.writes()[act]
    tap.ok(at_limit and abs(float(st["piezo_v"]) - limit) < 1e-3
           and abs(wr["min_v" if limit == l["piezo_min_v"] else "max_v"] - limit) < 1e-3
           and wr["limit_violations"] == 0,
           "saturation: %s drifted %+.0f MHz (reach %+.0f MHz): the piezo stops at its %.1f V "
           "limit (daemon %s V, written %.4f..%.4f V, %d violations)"
           % (n, drift, lo, limit, st["piezo_v"], wr["min_v"], wr["max_v"],
              wr["limit_violations"]))
    tap.ok(st["state"] != "locked" and tr["error_mhz"] > 0.5 * SAT_EXTRA_MHZ,
           "saturation: %s not locked while it cannot reach the setpoint (state %s, true "
           "error %+.0f MHz)" % (n, st["state"], tr["error_mhz"]))
    t_back = time.monotonic()
    lab.sim.ok("drift %s %.3f" % (n, -drift / 2))
    time.sleep(1.0)
    lab.sim.ok("drift %s %.3f" % (n, -drift / 2))
    t_lock = lab.events.first(n, "locked", t_back, SAT_RELOCK_S)
    tap.ok(t_lock is not None, "saturation: %s locked again within %.0f s of undoing the drift "
           "(after %s s: no integrator windup)"
           % (n, SAT_RELOCK_S, "%.2f" % (t_lock - t_back) if t_lock else "-"),
           lab.events.states_since(n, t0))
    others = [x for x in lab.cfg.names if x != n]
    ev = quiet_lasers(lab, others, t0, time.monotonic())
    tap.ok(not ev, "saturation: the other %d lasers stay locked" % len(others), ev)
    return t_lock - t_back if t_lock else None


def outage_phase(lab, specs):
    """Outages [(device, mode)] at once."""
    label = " + ".join("%s %s" % s for s in specs)
    hit = [n for n in lab.cfg.names if any(dev in lab.cfg.by_name[n]["devices"]
                                           for dev, _ in specs)]
    others = [n for n in lab.cfg.names if n not in hit]
    t0 = time.monotonic()
    for dev, mode in specs:
        lab.sim.ok("outage %s %s %g" % (dev, mode, OUTAGE_S))
    t_fault = {n: lab.events.first(n, "fault", t0, 5.0) for n in hit}
    missing = [n for n, t in t_fault.items() if t is None]
    tap.ok(hit and not missing,
           "outage %s: all %d lasers of the device(s) go fault within 5 s (after %s s)"
           % (label, len(hit), "%.2f" % (max(t_fault.values()) - t0) if not missing else "-"),
           "no fault: %r" % missing)
    ups = {dev: device_up(lab, dev) for dev, _ in specs}
    tap.ok(time.monotonic() < t0 + OUTAGE_S and all(u == "0" for u in ups.values()),
           "outage %s: 'devices' shows up=0 during the outage" % label, ups)
    t_lock = {n: lab.events.first(n, "locked", t0, OUTAGE_S + RECOVER_S) for n in hit}
    missing = [n for n, t in t_lock.items() if t is None]
    t_end = time.monotonic()
    tap.ok(not missing, "outage %s: every laser of the device(s) locked again within %.0f s of "
           "the outage's end (the last after %s s)"
           % (label, RECOVER_S, "%.2f" % (max(t_lock.values()) - t0 - OUTAGE_S)
              if not missing else "-"),
           {n: lab.events.states_since(n, t0) for n in missing})
    ev = quiet_lasers(lab, others, t0, t_end)
    tap.ok(not ev, "outage %s: the %d lasers on other devices stay locked" % (label, len(others)),
           ev)
    ups = {dev: device_up(lab, dev) for dev, _ in specs}
    tap.ok(all(u == "1" for u in ups.values()), "outage %s: 'devices' shows up=1 afterwards"
           % label, ups)
    return {n: t - t0 - OUTAGE_S for n, t in t_lock.items() if t is not None}


with Env() as env:
    t_run = time.monotonic()
    try:
        lab = Lab(env, seed=SEED)
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the lab did not start: %s" % e)
    tl = TruthLog(lab.sim_port, 0.05)
    locked = lab.wait_states("locked", timeout=LOCK_TIMEOUT_S)
    tap.ok(locked, "seed %d: all 14 lasers locked within %.0f s (took %.1f s)"
           % (SEED, LOCK_TIMEOUT_S, time.monotonic() - lab.t_start),
           "%r\n%s" % (lab.d.states() if lab.alive() else "dead", lab.outputs()))
    if not locked:
        tap.bail("lasers did not lock")

    tr = lab.sim.truth()
    plan, skipped = {}, []
    for n in lab.cfg.names:
        lo, hi = lab.cfg.reach_mhz(n, tr[n]["piezo_v"], tr[n]["current_v"])
        if hi >= STEP_MARGIN * STEP_MHZ:
            plan[n] = STEP_MHZ
        elif -lo >= STEP_MARGIN * STEP_MHZ:
            plan[n] = -STEP_MHZ
        else:
            skipped.append("%s (reach %+.0f..%+.0f MHz)" % (n, lo, hi))
    tap.ok(len(plan) >= 8, "%d lasers can follow a %.0f MHz step" % (len(plan), STEP_MHZ),
           skipped)
    tap.diag("not stepped (piezo range too small): %s" % ", ".join(skipped))
    up = step_phase(lab, tl, plan, "step")
    down = step_phase(lab, tl, {n: -s for n, s in plan.items()}, "step back")
    relock = fault_phase(lab, tl)
    sat = saturation_phase(lab, tl)
    rec1 = outage_phase(lab, [("ao2", "silent")])
    rec2 = outage_phase(lab, [("ao3", "refuse"), ("ao4", "drop")])

    tap.ok(lab.wait_states("locked", timeout=RECOVER_S), "all lasers locked at the end",
           lab.d.states())
    tl.close()
    tap.ok(tl.error is None and lab.events.error is None,
           "truth polling and the event subscription ran through (%d truth samples)"
           % len(tl.samples), "%r %r" % (tl.error, lab.events.error))
    wr = lab.sim.writes()
    viol = {k: v for k, v in wr.items() if v["limit_violations"] or v["count"] == 0}
    tap.ok(not viol, "no value written to any of the %d actuators left min_v..max_v over the "
           "whole run (limit_violations = 0; %d writes)"
           % (len(wr), sum(v["count"] for v in wr.values())), viol)

    tap.diag("step +-1 GHz (overshoot %, settle s) up,down: " + " ".join(
        "%s=%.1f/%.2f,%.1f/%.2f" % (n, up[n][0], up[n][1] or -1, down[n][0], down[n][1] or -1)
        for n in plan))
    tap.diag("mode hop: locked again after (s, from the hop command): " + " ".join(
        "%s=%.2f" % kv_ for kv_ in relock.items()))
    tap.diag("saturation: %s locked again %s s after the drift was undone"
             % (SAT_LASER, "%.2f" % sat if sat is not None else "-"))
    tap.diag("outage: locked again after the outage's end (s): " + " ".join(
        "%s=%.2f" % kv_ for kv_ in sorted({**rec1, **rec2}.items())))

    lab.close()
    rc_d = lab.daemon.stop(10)
    rc_s = lab.simproc.stop(10)
    tap.ok(rc_d == 0 and rc_s == 0, "wavelockd and wavelock-sim exit 0 on SIGTERM",
           "wavelockd %r, wavelock-sim %r" % (rc_d, rc_s))
    logs = log_text(lab.daemon) + log_text(lab.simproc)
    tap.ok("Sanitizer" not in logs and "runtime error:" not in logs,
           "no sanitizer report in either log", lab.outputs())
    tap.diag("run time %.1f s" % (time.monotonic() - t_run))
tap.done()
