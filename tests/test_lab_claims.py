#!/usr/bin/python3
"""Names and claims (issue 14, DESIGN.md section 8), against wavelock-sim
over the real protocols, on conf/sim.conf with a monitor and a control
token added (every connection authenticates):

 1. claim by a connection without 'iam' is refused (409, naming its default
    name conn<N>@<peer>); 'alice' claims cool780 for CLAIM_S seconds:
    status owner=alice claim_s=CLAIM_S.
 2. 'bob' gets 'ERR 409 claimed by alice' on every changing command
    (setpoint, lock, unlock, lock all, set, ramp, output, hold, resume,
    scan, tune, release, claim), and nothing changed (no scan running);
    reading commands (and 'scan cool780', which only reads) still work.
 3. A change by alice renews the claim (claim_s back up after a wait).
 4. 'claim cool780 steal' by bob takes it over (logged); alice now gets 409;
    alice cannot release bob's claim; bob releases it: owner=none.
 5. Expiry: a 2 s claim by alice on repump795 refuses bob, then lets him in
    after the time (measured and printed).
 6. Persistence: alice's claim is in the state file; after kill -9 and a
    restart it still refuses bob, alice (a new connection) may change it,
    and claim_s went on counting.
 7. A monitor can name itself but can do none of claim, release, hold,
    resume, setpoint (403).
 8. Bad input: bad names, claim times, extra words, unknown lasers: 4xx,
    the connection stays usable.
 9. The client: 'wavelock --as bob' and WAVELOCK_AS=alice send iam first
    (bob refused with exit 1, alice allowed with exit 0).
"""

import os
import re
import signal
import subprocess
import time

from wltest import TAP, Env, prog, wait_until
from lablib import Daemon, Lab, SIM_CONF, LabError, log_text, programs_missing

CLAIM_S = 60
MON = "mon-4f1c9a2b7e"
CTL = "ctl-9d3e61aa05"

tap = TAP()
why = programs_missing()
if why:
    tap.skip("claims on conf/sim.conf", why)
    tap.done()


def config_text():
    with open(SIM_CONF) as f:
        text = f.read()
    return text.replace("  max_clients = 64;\n",
                        '  max_clients = 64;\n  tokens = ( { secret = "%s"; role = "monitor"; },'
                        ' { secret = "%s"; role = "control"; } );\n' % (MON, CTL), 1)


def conn(port, token=CTL, name=None):
    c = Daemon(port)
    c.ok("auth %s" % token)
    if name:
        c.ok("iam %s" % name)
    return c


def owner(c, laser):
    st = c.status(laser)[laser]
    return st.get("owner"), int(st.get("claim_s", "-1"))


def err(lines):
    return lines[-1] if lines else ""


with Env() as env:
    conf = env.write("claims.conf", config_text())
    os.chmod(conf, 0o600)
    try:
        lab = Lab(env, conf=conf, name="claims", events=False)
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the lab did not start: %s" % e)
    port = lab.port
    try:
        lab.d.ok("auth %s" % CTL)
        tap.ok(lab.wait_states("locked", ["cool780", "repump795"], timeout=60),
               "cool780 and repump795 lock")
        anon = conn(port)
        alice = conn(port, name="alice")
        bob = conn(port, name="bob")

        # ---- 1. claims need a name ----------------------------------------------------------
        r = anon.cmd("claim cool780")
        tap.ok(re.match(r"ERR 409 .*iam .*conn\d+@127\.0\.0\.1:\d+", err(r)) is not None,
               "claim without iam: 409 naming the default name conn<N>@<peer>", r)
        r = alice.cmd("claim cool780 %d" % CLAIM_S)
        tap.ok(err(r).startswith("OK") and "owner=alice" in err(r), "alice claims cool780", r)
        o, left = owner(bob, "cool780")
        tap.ok(o == "alice" and CLAIM_S - 2 <= left <= CLAIM_S,
               "status: owner=alice claim_s=%d" % left, (o, left))
        o2, left2 = owner(bob, "repump795")
        tap.ok(o2 == "none" and left2 == 0, "an unclaimed laser: owner=none claim_s=0", (o2, left2))

        # ---- 2. every changing command of another name: 409 ------------------------------------
        st0 = bob.status("cool780")["cool780"]
        changing = ("setpoint cool780 +1 MHz", "lock cool780", "unlock cool780", "lock all",
                    "unlock all", "set cool780 window_mhz 4", "ramp cool780 +1MHz 10",
                    "output cool780 piezo 5", "hold cool780", "hold cool780 5",
                    "resume cool780", "scan cool780 triangle 10 2", "scan cool780 stop",
                    "tune cool780", "release cool780", "claim cool780", "claim all")
        for who, c in (("bob", bob), ("an unnamed connection", anon)):
            for line in changing:
                r = c.cmd(line)
                want = "ERR 409" if c is anon and line.startswith("claim") else \
                    "ERR 409 claimed by alice"
                tap.ok(err(r).startswith(want),
                       "%s: %r -> 409 claimed by alice" % (who, line), r)
        st1 = bob.status("cool780")["cool780"]
        tap.ok(st1["state"] == "locked" and st1["setpoint_thz"] == st0["setpoint_thz"] and
               st1.get("scan") == "none" and
               bob.get_all("cool780")["window_mhz"] != "4",
               "nothing changed: still locked at the same setpoint", (st0, st1))
        tap.ok(all(err(bob.cmd(x)).startswith("OK") for x in
                   ("status cool780", "get cool780 kp", "setpoint cool780", "output cool780 piezo",
                    "scan cool780")),
               "reading commands work for others")
        r = bob.cmd("set repump795 window_mhz 5")
        tap.ok(err(r).startswith("OK"), "others' unclaimed lasers stay free", r)

        # ---- 3. renewal -----------------------------------------------------------------------------
        time.sleep(2.2)
        _, before = owner(alice, "cool780")
        r = alice.cmd("set cool780 window_mhz 5")
        _, after = owner(alice, "cool780")
        tap.diag("claim_s before the owner's change %d, after %d" % (before, after))
        tap.ok(err(r).startswith("OK") and before <= CLAIM_S - 2 and after >= CLAIM_S - 1,
               "a change by the owner renews the claim", (r, before, after))

        # ---- 4. steal and release ---------------------------------------------------------------------
        r = bob.cmd("claim cool780 steal")
        tap.ok(err(r).startswith("OK") and "owner=bob" in err(r), "bob steals cool780", r)
        tap.ok(wait_until(lambda: "stolen by bob" in log_text(lab.daemon), 5),
               "the steal is logged")
        r = alice.cmd("set cool780 window_mhz 5")
        tap.ok(err(r).startswith("ERR 409 claimed by bob"), "alice now gets 409 claimed by bob", r)
        r = alice.cmd("release cool780")
        tap.ok(err(r).startswith("ERR 409 claimed by bob"), "alice cannot release bob's claim", r)
        r = bob.cmd("release cool780")
        tap.ok(err(r).startswith("OK") and "released=1" in err(r), "bob releases cool780", r)
        tap.eq(owner(alice, "cool780"), ("none", 0), "after release: owner=none claim_s=0")
        r = alice.cmd("set cool780 window_mhz 5")
        tap.ok(err(r).startswith("OK"), "released: anyone may change it again", r)

        # ---- 5. expiry --------------------------------------------------------------------------------
        t0 = time.monotonic()
        alice.ok("claim repump795 2")
        r = bob.cmd("set repump795 window_mhz 5")
        tap.ok(err(r).startswith("ERR 409 claimed by alice"), "a 2 s claim refuses bob", r)
        free_at = wait_until(lambda: err(bob.cmd("set repump795 window_mhz 5")).startswith("OK") and
                             time.monotonic(), 10, 0.1)
        tap.diag("a 2 s claim let others in after %.2f s" % ((free_at or t0) - t0))
        tap.ok(free_at and 1.8 <= free_at - t0 <= 4.0, "the claim expires after its time")
        tap.eq(owner(bob, "repump795"), ("none", 0), "expired: owner=none")

        # ---- 6. persistence across kill -9 ------------------------------------------------------------
        alice.ok("claim cool780 120")
        alice.ok("claim repump795 120")
        alice.ok("release repump795")
        state = env.path("claims.state")
        tap.ok(wait_until(lambda: os.path.exists(state) and
                          "claim laser=cool780 owner=alice" in open(state).read(), 5),
               "the claim is written to the state file")
        tap.ok("laser=repump795" not in re.sub(r"^laser .*$", "", open(state).read(), flags=re.M),
               "a released claim is not in the state file")
        for c in (anon, alice, bob):
            c.close()
        lab.d.close()
        t_kill = time.monotonic()
        lab.daemon.signal(signal.SIGKILL)
        lab.daemon.wait()
        time.sleep(1.0)
        lab.daemon = env.start_daemon(lab.conf, timeout=15)
        port = lab.port = lab.daemon.port
        lab.d = Daemon(port)
        lab.d.ok("auth %s" % CTL)
        bob = conn(port, name="bob")
        r = bob.cmd("setpoint cool780 +1 MHz")
        tap.ok(err(r).startswith("ERR 409 claimed by alice"),
               "after kill -9 and restart the claim still refuses bob", r)
        o, left = owner(bob, "cool780")
        tap.diag("claim_s after the restart: %d (120 s claim, %.1f s since the kill)"
                 % (left, time.monotonic() - t_kill))
        tap.ok(o == "alice" and 100 <= left <= 119, "status after restart: owner=alice, "
               "claim_s counted on (%d)" % left, (o, left))
        alice = conn(port, name="alice")
        r = alice.cmd("set cool780 window_mhz 5")
        tap.ok(err(r).startswith("OK"), "alice (a new connection) may change it", r)
        tap.eq(owner(bob, "repump795"), ("none", 0), "repump795 unclaimed after the restart")

        # ---- 7. the monitor role ---------------------------------------------------------------------
        mon = conn(port, token=MON)
        r = mon.cmd("iam watcher")
        tap.ok(err(r).startswith("OK"), "a monitor may name itself", r)
        for line in ("claim repump795", "claim all", "claim cool780 steal", "release cool780",
                     "release all", "hold repump795", "resume repump795",
                     "setpoint repump795 +1 MHz"):
            r = mon.cmd(line)
            tap.ok(err(r).startswith("ERR 403"), "monitor: %r -> 403" % line, r)
        tap.eq(owner(mon, "repump795"), ("none", 0), "the monitor claimed nothing")

        # ---- 8. bad input ---------------------------------------------------------------------------
        for line, code in (("iam a/b", "422"), ("iam " + "x" * 64, "422"), ("iam none", "422"),
                           ("iam all", "422"), ("iam", "400"), ("iam a b", "400"),
                           ("claim repump795 0", "422"), ("claim repump795 -5", "422"),
                           ("claim repump795 1e9", "422"), ("claim repump795 nan", "422"),
                           ("claim repump795 abc", "422"),
                           ("claim repump795 5 x", "400"), ("claim repump795 5 steal x", "400"),
                           ("claim repump795 steal steal", "400"), ("claim nosuch", "404"),
                           ("release nosuch", "404"), ("claim", "400"), ("release", "400")):
            r = bob.cmd(line)
            tap.ok(err(r).startswith("ERR " + code), "%r -> ERR %s" % (line, code), r)
        tap.ok(err(bob.cmd("ping")) == "OK", "the connection stays usable")
        tap.eq(owner(bob, "repump795"), ("none", 0), "bad claims claimed nothing")

        # ---- 9. the client's --as and WAVELOCK_AS -------------------------------------------------------
        base = [prog("wavelock"), "-p", str(port), "-k", CTL]
        p = subprocess.run(base + ["--as", "bob", "set", "cool780", "window_mhz", "5"],
                           capture_output=True, text=True, timeout=20)
        tap.ok(p.returncode == 1 and "409 claimed by alice" in p.stdout + p.stderr,
               "wavelock --as bob: refused, exit 1", (p.returncode, p.stdout, p.stderr))
        envv = dict(os.environ, WAVELOCK_AS="alice")
        p = subprocess.run(base + ["set", "cool780", "window_mhz", "5"], capture_output=True,
                           text=True, timeout=20, env=envv)
        tap.ok(p.returncode == 0, "WAVELOCK_AS=alice: allowed, exit 0",
               (p.returncode, p.stdout, p.stderr))
        p = subprocess.run(base + ["--as", "a b", "ping"], capture_output=True, text=True,
                           timeout=20)
        tap.ok(p.returncode == 2, "wavelock --as with a blank: usage error (exit 2)",
               (p.returncode, p.stderr))
        for c in (alice, bob, mon):
            c.close()
    finally:
        lab.close()
    rc_d = lab.daemon.stop()
    rc_s = lab.simproc.stop()
    tap.ok(rc_d == 0 and rc_s == 0, "both programs exit 0 on SIGTERM", (rc_d, rc_s))
tap.done()
