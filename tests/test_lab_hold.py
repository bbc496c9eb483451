#!/usr/bin/python3
"""hold / resume and the hold input (issue 14, DESIGN.md section 8), against
wavelock-sim over the real protocols, on conf/sim.conf with two hold inputs
added: repump795 on discrete input 4 of ao1 (active high, poll_s 0.02) and
probe852 on coil 7 of ao1 (active low, so held from the start while the
coil is 0).

 1. hold cool780 (piezo and current on ao1): '* state ... state=holding
    reason=hold', status reason=hold; over HELD_S seconds the Modbus server
    (wavelock-sim 'writes') sees no write to either of its registers while
    the other lasers on ao1 keep being written; a PID reading during the hold
    leaves piezo_v alone.
 2. resume cool780: back to locked within LOCK_S; the output jump (first
    piezo_v after the resume against the held one) is printed and must be
    below JUMP_V (bumpless: the first cycle after the resume does not move
    the output).
 3. hold repump707 1.0: it resumes by itself after about 1 s (printed) and
    locks again.
 4. The hold input: 'input ao1 4 1' at the sim puts repump795 into holding
    with reason=hold_input within one poll interval plus one cycle (the
    laser's median reading interval); the measured time is printed.  No
    write to its register while held; 'resume repump795' does not end a
    hold of the input; 'input ao1 4 0' releases it and it locks again.
 5. probe852 (coil, active low) starts held (reason=hold_input); 'coil ao1 7
    1' releases it and it locks.
 5b. reload: removing repump795's hold input while it is active releases
    the laser; moving it to discrete input 5 polls the new input (held when
    5 goes to 1, not by the old input 4).
 6. Bad input: hold with a bad time is 422, hold/resume of an unknown laser
    404, the connection stays usable; config errors in hold_input (unknown
    device, both discrete_input and coil, neither, bad active, poll_s 0,
    address out of range, unknown key) exit 78 naming file:line:key.
 7. No write left its limits; both programs exit 0 on SIGTERM.
"""

import re
import statistics
import subprocess
import time

from wltest import TAP, Env, prog
from lablib import Lab, SIM_CONF, LabError, programs_missing

HELD_S = 3.0
LOCK_S = 60.0
JUMP_V = 0.01
POLL_S = 0.02

tap = TAP()
why = programs_missing()
if why:
    tap.skip("hold and hold input on conf/sim.conf", why)
    tap.done()


def laser_block(text, name):
    i = text.index('name = "%s"' % name)
    return i, text.index("\n  }", i)


def add_to_laser(text, name, entry):
    a, b = laser_block(text, name)
    return text[:b] + "\n    " + entry + text[b:]


def config_text(extra_795=None):
    with open(SIM_CONF) as f:
        text = f.read()
    text = add_to_laser(text, "repump795", extra_795 or
                        'hold_input = { device = "ao1"; discrete_input = 4; poll_s = %g; };'
                        % POLL_S)
    text = add_to_laser(text, "probe852",
                        'hold_input = { device = "ao1"; coil = 7; active = "low"; };')
    return text


def count_writes(lab, names):
    w = lab.sim.writes()
    return {n: w[n]["count"] for n in names}


def readings(lab, laser, t0, key="piezo_v"):
    return [(t, float(d[key])) for t, _, d in lab.events.since(t0, "reading", laser)
            if key in d]


def hold_event(lab, laser, t0, reason, timeout):
    def find(events):
        for t, k, d in events:
            if t >= t0 and k == "state" and d.get("laser") == laser \
                    and d.get("state") == "holding" and d.get("reason") == reason:
                return t
        return None
    return lab.events.wait_for(find, timeout)


with Env() as env:
    conf = env.write("hold.conf", config_text())
    try:
        lab = Lab(env, conf=conf, name="hold")
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the lab did not start: %s" % e)
    d = lab.d
    try:
        others = [n for n in lab.cfg.names if n not in ("probe852",)]
        tap.ok(lab.wait_states("locked", others, timeout=LOCK_S),
               "every laser without an active hold input locks", d.states())
        st = d.status("probe852")["probe852"]
        tap.ok(st["state"] == "holding" and st.get("reason") == "hold_input",
               "probe852 (coil 7 = 0, active low) starts held by its input", st)

        # ---- 1. hold by command: no write while held ----------------------------------
        t0 = time.monotonic()
        r = d.cmd("hold cool780")
        tap.ok(r[-1].startswith("OK"), "hold cool780", r)
        tap.ok(hold_event(lab, "cool780", t0, "hold", 5) is not None,
               "'* state laser=cool780 state=holding reason=hold'")
        st = d.status("cool780")["cool780"]
        tap.ok(st["state"] == "holding" and st.get("reason") == "hold", "status: holding, reason=hold", st)
        time.sleep(0.3)            # a cycle that was on the wire at the hold
        names = ["cool780.piezo", "cool780.current", "repump795.piezo"]
        before = count_writes(lab, names)
        t_held = time.monotonic()
        time.sleep(HELD_S)
        after = count_writes(lab, names)
        tap.ok(after["cool780.piezo"] == before["cool780.piezo"] and
               after["cool780.current"] == before["cool780.current"],
               "no write to cool780's registers in %.0f s of hold (at the Modbus server)" % HELD_S,
               (before, after))
        tap.ok(after["repump795.piezo"] > before["repump795.piezo"],
               "meanwhile repump795 on the same device was written %d times"
               % (after["repump795.piezo"] - before["repump795.piezo"]), (before, after))
        held = readings(lab, "cool780", t_held)
        held_v = held[-1][1] if held else None
        tap.ok(len(held) >= 3 and len({v for _, v in held}) == 1,
               "readings keep coming while held, piezo_v stays at %s" % held_v, held[:5])

        # ---- 2. resume: bumpless, back to locked ----------------------------------------
        t1 = time.monotonic()
        r = d.cmd("resume cool780")
        tap.ok(r[-1].startswith("OK"), "resume cool780", r)
        t_lock = lab.events.first("cool780", "locked", t1, LOCK_S)
        tap.ok(t_lock is not None, "cool780 locked again %.2f s after resume"
               % ((t_lock or t1) - t1))
        after_r = readings(lab, "cool780", t1)
        # piezo_v in a reading event is the output in force when it arrived:
        # the second event after the resume carries the first cycle's output
        first = after_r[1][1] if len(after_r) > 1 else None
        jump = abs(first - held_v) if first is not None and held_v is not None else None
        tap.diag("output jump at resume: %s V (first cycle after resume, against the held %s V);"
                 " largest move over the first 5 cycles %s V"
                 % ("%.6f" % jump if jump is not None else "none", held_v,
                    "%.6f" % max(abs(v - held_v) for _, v in after_r[1:6])
                    if len(after_r) > 1 and held_v is not None else "none"))
        tap.ok(jump is not None and jump < JUMP_V,
               "resume is bumpless: first output within %g V of the held one" % JUMP_V, after_r[:4])

        # ---- 3. a timed hold ends by itself ----------------------------------------------
        t2 = time.monotonic()
        r = d.cmd("hold repump707 1.0")
        tap.ok(r[-1].startswith("OK"), "hold repump707 1.0", r)
        t_h = hold_event(lab, "repump707", t2, "hold", 5)
        t_a = lab.events.wait_for(
            lambda ev: next((t for t, k, x in ev if t >= t2 and k == "state" and
                             x.get("laser") == "repump707" and x.get("from") == "holding"),
                            None), 10)
        tap.diag("timed hold of 1.0 s lasted %.2f s" % ((t_a or t2) - (t_h or t2)))
        tap.ok(t_h is not None and t_a is not None and 0.8 <= t_a - t_h <= 2.0,
               "a 1 s hold ends by itself after about 1 s")
        tap.ok(lab.events.first("repump707", "locked", t2, LOCK_S) is not None,
               "repump707 locks again after its timed hold")

        # ---- 4. the hold input -------------------------------------------------------------
        t3 = time.monotonic()
        rs = [t for t, _ in readings(lab, "repump795", t3 - 20.0)]
        cycle = statistics.median([b - a for a, b in zip(rs, rs[1:])]) if len(rs) > 2 else 0.25
        t_set = time.monotonic()
        lab.sim.ok("input ao1 4 1")
        t_ack = time.monotonic()
        t_in = hold_event(lab, "repump795", t_set, "hold_input", 5)
        bound = POLL_S + cycle
        if t_in is not None:
            tap.diag("hold input edge -> holding: %.1f ms (sim acknowledged the edge after %.1f "
                     "ms; bound: poll %.0f ms + cycle %.0f ms)"
                     % ((t_in - t_ack) * 1e3, (t_ack - t_set) * 1e3, POLL_S * 1e3, cycle * 1e3))
        tap.ok(t_in is not None and t_in - t_ack <= bound,
               "hold input takes effect within one poll interval plus one cycle (%.0f ms)"
               % (bound * 1e3))
        st = d.status("repump795")["repump795"]
        tap.ok(st["state"] == "holding" and st.get("reason") == "hold_input",
               "status: holding, reason=hold_input", st)
        time.sleep(0.3)
        b = count_writes(lab, ["repump795.piezo"])
        r = d.cmd("resume repump795")
        tap.ok(r[-1].startswith("OK") and "hold_input" in r[-1] and
               d.states()["repump795"] == "holding",
               "resume does not end a hold of the input", r)
        time.sleep(1.5)
        a = count_writes(lab, ["repump795.piezo"])
        tap.eq(a, b, "no write to repump795 while its hold input is active")
        t4 = time.monotonic()
        lab.sim.ok("input ao1 4 0")
        tap.ok(lab.events.first("repump795", "locked", t4, LOCK_S) is not None,
               "input back to 0: repump795 locks again")

        # ---- 5. coil, active low ------------------------------------------------------------
        t5 = time.monotonic()
        lab.sim.ok("coil ao1 7 1")
        tap.ok(lab.events.first("probe852", "locked", t5, LOCK_S) is not None,
               "coil 7 set to 1 (active low): probe852 released and locked")

        # ---- 5b. reload: a hold input removed releases, a new one is polled -----------------
        with open(lab.conf) as f:
            text = f.read()
        line = 'hold_input = { device = "ao1"; discrete_input = 4; poll_s = %g; };' % POLL_S
        lab.sim.ok("input ao1 4 1")
        tap.ok(lab.wait_states("holding", ["repump795"], timeout=5), "input 4 set again: held")
        t6 = time.monotonic()
        with open(lab.conf, "w") as f:
            f.write(text.replace(line, "", 1))
        lab.d.ok("reload")
        tap.ok(lab.events.first("repump795", "locked", t6, LOCK_S) is not None,
               "a reload that removes the hold input releases the laser")
        t7 = time.monotonic()
        with open(lab.conf, "w") as f:
            f.write(text.replace(line, line.replace("discrete_input = 4", "discrete_input = 5"),
                                 1))
        lab.d.ok("reload")
        time.sleep(0.5)
        tap.eq(lab.d.states()["repump795"], "locked",
               "a reload to discrete input 5 (0): still locked although input 4 is 1")
        lab.sim.ok("input ao1 5 1")
        tap.ok(hold_event(lab, "repump795", t7, "hold_input", 5) is not None,
               "input 5 set: held by the reloaded hold input")
        lab.sim.ok("input ao1 5 0")
        lab.sim.ok("input ao1 4 0")
        tap.ok(lab.wait_states("locked", ["repump795"], timeout=LOCK_S), "released again: locked")

        # ---- 6. bad input ---------------------------------------------------------------------
        for line, code in (("hold cool780 0", "422"), ("hold cool780 -1", "422"),
                           ("hold cool780 nan", "422"), ("hold cool780 1e9", "422"),
                           ("hold nosuch", "404"), ("resume nosuch", "404"),
                           ("hold", "400"), ("hold cool780 1 2", "400")):
            r = d.cmd(line)
            tap.ok(r[-1].startswith("ERR " + code), "%r -> ERR %s" % (line, code), r)
        tap.ok(d.cmd("ping")[-1] == "OK", "the connection stays usable")
        tap.ok(d.states()["cool780"] == "locked", "bad holds changed nothing")

        # ---- 7. limits, clean exit ------------------------------------------------------------
        w = lab.sim.writes()
        bad = {n: (x["limit_violations"], x["runtime_violations"]) for n, x in w.items()
               if x["limit_violations"] or x["runtime_violations"]}
        tap.ok(not bad, "no write left its limits", bad)
    finally:
        lab.close()
    rc_d = lab.daemon.stop()
    rc_s = lab.simproc.stop()
    tap.ok(rc_d == 0 and rc_s == 0, "both programs exit 0 on SIGTERM", (rc_d, rc_s))

    # ---- config errors: file:line:key, exit 78 ------------------------------------------------
    bad_cases = (
        ('hold_input = { device = "nosuch"; discrete_input = 4; };', "hold_input.device"),
        ('hold_input = { device = "ao1"; discrete_input = 4; coil = 4; };', "hold_input.coil"),
        ('hold_input = { device = "ao1"; };', "hold_input.discrete_input"),
        ('hold_input = { device = "ao1"; coil = 4; active = "medium"; };', "hold_input.active"),
        ('hold_input = { device = "ao1"; coil = 4; poll_s = 0; };', "hold_input.poll_s"),
        ('hold_input = { device = "ao1"; coil = 70000; };', "hold_input.coil"),
        ('hold_input = { device = "ao1"; coil = 4; edge = 1; };', "edge"),
    )
    for entry, key in bad_cases:
        path = env.write("bad.conf", config_text(entry))
        p = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True,
                           text=True, timeout=20)
        out = p.stdout + p.stderr
        m = re.search(r"bad\.conf:(\d+): [^\n]*%s" % re.escape(key), out)
        tap.ok(p.returncode == 78 and m is not None,
               "config %s -> exit 78 naming file:line:%s" % (entry, key), (p.returncode, out[-300:]))
tap.done()
