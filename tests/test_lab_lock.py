#!/usr/bin/python3
"""Closed-loop acceptance (issue 5): wavelock-sim and wavelockd as real
processes on conf/sim.conf (real Modbus TCP, real wavemeter stream; every
port replaced by a free one, state file in a temporary directory), for
several seeds.  For each seed it asserts:

  - the copy of conf/sim.conf uses none of its fixed ports (so a demo lab
    may run alongside) and keeps the state file in the temporary directory;
  - wavelock-sim runs with that seed (control port 'info');
  - all 14 lasers reach 'locked' within LOCK_TIMEOUT_S (60 s) of starting
    wavelockd (polled with 'lasers'; the first-locked time of each laser is
    taken from '* state' events and printed as a TAP comment);
  - the TRUE frequency error of each laser (wavelock-sim 'truth', not the
    noisy readings) is inside the laser's window_mhz at the moment all are
    locked, and over the following HOLD_S seconds (polled at 20 Hz) at least
    95 % of the samples are inside the window and the RMS is below half of it;
  - no laser leaves 'locked' during those HOLD_S seconds;
  - the daemon's piezo_v/current_v equal the volts the simulator decoded
    from the registers (within 1 mV: a few 16-bit steps), so an encoding
    offset that the integrator would hide cannot pass;
  - every actuator was written, and no written value left its min_v..max_v
    (wavelock-sim 'writes': limit_violations = 0);
  - both programs stop with status 0 on SIGTERM, with no sanitizer report.

Seeds: WL_LAB_SEEDS (space-separated), default "1 2 3".
"""

import os
import time

from wltest import TAP, Env
from lablib import Lab, LabError, TruthLog, log_text, programs_missing, rms

LOCK_TIMEOUT_S = 60.0
HOLD_S = 3.0
AGREE_V = 0.001             # a few LSB of the 16-bit encodings
SEEDS = [int(s) for s in os.environ.get("WL_LAB_SEEDS", "1 2 3").split()]

tap = TAP()
why = programs_missing()
if why:
    tap.skip("closed-loop lock on conf/sim.conf", why)
    tap.done()


def sanitizer_clean(text):
    return "AddressSanitizer" not in text and "runtime error:" not in text \
        and "LeakSanitizer" not in text


summary = []
for seed in SEEDS:
    with Env() as env:
        try:
            lab = Lab(env, seed=seed)
        except (LabError, RuntimeError, OSError) as e:
            tap.bail("seed %d: the lab did not start: %s" % (seed, e))
        n = len(lab.cfg.names)
        with open(lab.conf) as f:
            text = f.read()
        stale = [p for p in lab.ports if ":%d\"" % p in text]
        tap.ok(sorted(lab.ports) == [1502, 1503, 1504, 1505, 7471, 7480, 7481] and not stale
               and '"127.0.0.1:0"' in text and env.dir in lab.cfg.root["state_file"],
               "seed %d: conf/sim.conf copied with free ports for its 4 devices, the stream, the "
               "dashboard and the sim control port, listen on port 0, state file in the temporary directory"
               % seed, "ports %r, stale %r" % (lab.ports, stale))
        info, _ = lab.sim.info()
        tap.eq(info.get("seed"), str(seed), "seed %d: wavelock-sim runs with --seed %d" % (seed, seed))
        tap.eq(n, 14, "seed %d: conf/sim.conf has 14 lasers" % seed)

        locked = lab.wait_states("locked", timeout=LOCK_TIMEOUT_S)
        t_all = time.monotonic() - lab.t_start
        times = lab.first_state_times("locked")
        tap.ok(locked, "seed %d: all %d lasers locked within %.0f s (took %.1f s)"
               % (seed, n, LOCK_TIMEOUT_S, t_all),
               "states: %r\n%s" % (lab.d.states() if lab.alive() else "dead", lab.outputs()))
        tap.diag("seed %d: first locked after (s): %s" % (seed, " ".join(
            "%s=%.2f" % (k, times[k]) for k in lab.cfg.names if k in times)))
        if not locked:
            continue

        snap = lab.sim.truth()
        t_hold = time.monotonic()
        tl = TruthLog(lab.sim_port, 0.05)
        time.sleep(HOLD_S)
        tl.close()
        t_end = time.monotonic()
        tap.ok(tl.error is None, "seed %d: truth polled for %.0f s" % (seed, HOLD_S), tl.error)
        worst = []
        for name in lab.cfg.names:
            w = lab.cfg.by_name[name]["window_mhz"]
            now = snap[name]["error_mhz"]
            errs = [e for _, e in tl.series(name)]
            inside = sum(1 for e in errs if abs(e) <= w)
            r = rms(errs)
            frac = inside / len(errs) if errs else 0.0
            worst.append("%s=%.2f" % (name, r))
            tap.ok(abs(now) <= w and len(errs) >= 10 and frac >= 0.95 and r <= w / 2,
                   "seed %d: %s true error inside its %.0f MHz window (now %+.2f MHz; "
                   "%.0f %% of %d samples inside, rms %.2f MHz)"
                   % (seed, name, w, now, 100 * frac, len(errs), r))
        tap.diag("seed %d: rms true error over %.0f s (MHz): %s" % (seed, HOLD_S, " ".join(worst)))

        left = [(round(t - t_hold, 2), d) for t, _, d in lab.events.since(t_hold, "state")
                if t <= t_end]
        tap.ok(not left, "seed %d: no laser left locked during the %.0f s hold" % (seed, HOLD_S),
               left)

        # A write may land between the two queries: an output agrees if one
        # of up to 20 pairs of queries shows the same volts on both sides (a
        # wrong scale or register never does).
        diff, agreed = {}, set()
        for attempt in range(20):
            st, wr = lab.d.status(), lab.sim.writes()
            diff = {}
            for name in lab.cfg.names:
                for key, act in (("piezo_v", name + ".piezo"), ("current_v", name + ".current")):
                    if act in wr and act not in agreed:
                        d = float(st[name][key]) - wr[act]["last_v"]
                        if abs(d) > AGREE_V:
                            diff[act] = d
                        else:
                            agreed.add(act)
            if not diff:
                break
            time.sleep(0.05)
        tap.ok(not diff, "seed %d: daemon and simulator agree on every output's volts within "
               "%.0f mV (status piezo_v/current_v vs the decoded registers)"
               % (seed, AGREE_V * 1000), diff)

        wr = lab.sim.writes()
        unwritten = [k for k, v in wr.items() if v["count"] == 0]
        viol = {k: v for k, v in wr.items() if v["limit_violations"]}
        tap.ok(len(wr) >= n and not unwritten, "seed %d: every actuator (%d) was written"
               % (seed, len(wr)), unwritten)
        tap.ok(not viol, "seed %d: no written value outside min_v..max_v (limit_violations = 0)"
               % seed, viol)
        summary.append((seed, t_all, max(times.values()) if times else float("nan")))

        lab.close()
        rc_d = lab.daemon.stop(10)
        rc_s = lab.simproc.stop(10)
        tap.ok(rc_d == 0 and rc_s == 0, "seed %d: wavelockd and wavelock-sim exit 0 on SIGTERM"
               % seed, "wavelockd %r, wavelock-sim %r" % (rc_d, rc_s))
        tap.ok(sanitizer_clean(log_text(lab.daemon) + log_text(lab.simproc)),
               "seed %d: no sanitizer report in either log" % seed, lab.outputs())

for seed, t_all, t_last in summary:
    tap.diag("seed %d: all locked after %.2f s (last '* state locked' event at %.2f s)"
             % (seed, t_all, t_last))
tap.done()
