#!/usr/bin/python3
"""wavelockd's privilege drop (user = "name", issue 8), end to end.

Started as root with user = "nobody", the daemon binds its port first and
then becomes nobody: every thread's real, effective, saved and file-system
uid and gid are nobody's, no supplementary group of root is left and no
capability either.  It still serves (the laser locks over Modbus, commands
answer), reloads its config (which nobody can read) and writes its state
file, which must therefore sit in a directory that nobody can write (here a
directory owned by nobody; in a packaged install, e.g. StateDirectory= of
contrib/wavelockd.service).  With the state file in a directory only root
can write, the daemon keeps running and says so: 'save' answers ERR and the
log has "cannot write state file".  An unknown user stops the start with
exit status 1, and that failed start (still root) writes no state file.  Skipped (TAP skip) when not run as root."""

import os
import pwd
import time

from wltest import (TAP, Env, ModbusRecorder, PyPlant, StreamPublisher, kv, lab_conf,
                    laser_conf, wait_until)
from lablib import log_text

tap = TAP()

USER = "nobody"
PLANT = [
    {"name": "cool780", "channel": 1, "thz": 384.2304844, "reg": 0, "scale": 6553.5,
     "mhz_per_v": 200.0, "offset_mhz": 300.0},
    {"name": "repump795", "channel": 2, "thz": 377.1074635, "reg": 1, "scale": 6553.5,
     "mhz_per_v": 150.0, "offset_mhz": -250.0},
]
GAINS = {"kp": 0.0, "ki": 0.05, "kd": 0.0}

if os.geteuid() != 0:
    tap.skip("privilege drop to user %s" % USER, "not running as root")
    tap.done()
try:
    PW = pwd.getpwnam(USER)
except KeyError:
    tap.skip("privilege drop to user %s" % USER, "no user %s on this system" % USER)
    tap.done()


def ids(pid):
    """{tid: {Uid: [4 ints], Gid: [4 ints], Groups: [ints], CapInh/CapPrm/CapEff: int}}
    for every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        rec = {}
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("Uid", "Gid", "Groups"):
                        rec[k] = [int(x) for x in v.split()]
                    elif k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                        rec[k] = int(v.strip(), 16)
        except OSError:
            continue
        out[int(tid)] = rec
    return out


def all_locked(c):
    lines = c.cmd("lasers")[:-1]
    return len(lines) == len(PLANT) and all(kv(x)["state"] == "locked" for x in lines)


def conf_for(mb, pub, state_file, user=USER):
    lasers = [laser_conf(p["name"], p["channel"], p["thz"], reg=p["reg"], pid=GAINS)
              for p in PLANT]
    return lab_conf(lasers, [("ao1", mb.port)], pub.port, state_file=state_file,
                    top_extra='user = "%s";\n' % user)


with Env() as env:
    # nobody may pass through the test directory (not list it); the state
    # directory is nobody's own.
    os.chmod(env.dir, 0o711)
    sdir = env.path("state")
    os.mkdir(sdir, 0o700)
    os.chown(sdir, PW.pw_uid, PW.pw_gid)
    state = os.path.join(sdir, "wavelock.state")
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cfg = env.write("privdrop.conf", conf_for(mb, pub, state))
    os.chmod(cfg, 0o644)
    d = env.start_daemon(cfg)
    plant = PyPlant(mb, pub, PLANT)
    c = env.connect(d.port)

    # ---- identity -------------------------------------------------------------
    wait_until(lambda: "running as user %s" % USER in d.output(), 10)
    tap.ok("running as user %s" % USER in d.output(), "the log says: running as user %s" % USER,
           d.output()[-2000:])
    want_groups = sorted(set(os.getgrouplist(USER, PW.pw_gid)))
    # the device threads start after the drop; wait until they are there
    wait_until(lambda: len(ids(d.pid)) > 1, 10)
    t = ids(d.pid)
    bad = {tid: r for tid, r in t.items()
           if r.get("Uid") != [PW.pw_uid] * 4 or r.get("Gid") != [PW.pw_gid] * 4}
    tap.ok(t and not bad, "all %d threads: Uid and Gid (real, effective, saved, fs) are %s's "
           "(%d:%d)" % (len(t), USER, PW.pw_uid, PW.pw_gid), bad)
    bad = {tid: r.get("Groups") for tid, r in t.items()
           if sorted(r.get("Groups", [])) != want_groups}
    tap.ok(not bad, "supplementary groups are %s's %r (no root group left)"
           % (USER, want_groups), bad)
    bad = {tid: r for tid, r in t.items()
           if any(r.get(k, 0) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"))}
    tap.ok(not bad, "no capability left (CapInh, CapPrm, CapEff, CapAmb all 0)", bad)

    # ---- it still serves ---------------------------------------------------------
    tap.ok(c.cmd("ping") == ["OK"], "the port bound as root still answers")
    ok = wait_until(lambda: all_locked(c), 30, 0.2)
    tap.ok(ok, "the lasers lock (readings in, Modbus writes out)", c.cmd("status"))
    n_writes = len(mb.writes)
    time.sleep(0.5)
    tap.ok(len(mb.writes) > n_writes, "actuator writes go on (%d -> %d)"
           % (n_writes, len(mb.writes)))

    # ---- state file -------------------------------------------------------------
    ans = c.cmd("save")
    st = os.stat(state) if os.path.exists(state) else None
    tap.ok(ans == ["OK saved %s" % state] and st is not None and st.st_uid == PW.pw_uid,
           "save writes the state file as %s (%r, owner %s)"
           % (USER, ans, st.st_uid if st else "-"))
    m0 = st.st_mtime_ns if st else 0
    c.cmd("set cool780 ki 0.04")
    changed = wait_until(lambda: os.stat(state).st_mtime_ns != m0, 10, 0.1)
    with open(state) as f:
        text = f.read()
    tap.ok(changed and "cool780" in text, "a change is saved by itself about a second later")

    ans = c.cmd("reload")
    tap.ok(ans[-1].startswith("OK reloaded"), "reload reads the config as %s: %r" % (USER, ans))

    c.close()
    m1 = os.stat(state).st_mtime_ns
    time.sleep(0.02)
    rc = d.stop()
    tap.ok(rc == 0 and os.stat(state).st_mtime_ns != m1,
           "SIGTERM: exit 0 (%r), state file written at shutdown" % rc, log_text(d)[-2000:])
    tap.ok("ERROR" not in log_text(d) and "runtime error" not in log_text(d),
           "no sanitizer report", log_text(d)[-2000:])

    # ---- a state file nobody cannot write ------------------------------------------
    bad_state = env.path("root-only.state")     # env.dir is root's, 0711
    cfg2 = env.write("privdrop2.conf", conf_for(mb, pub, bad_state))
    os.chmod(cfg2, 0o644)
    d2 = env.start_daemon(cfg2)
    c2 = env.connect(d2.port)
    ans = c2.cmd("save")
    tap.ok(ans[-1].startswith("ERR "),
           "state file in a directory %s cannot write: save answers %r" % (USER, ans[-1]))
    wait_until(lambda: "cannot write state file" in log_text(d2), 5)
    tap.ok("cannot write state file" in log_text(d2) and not os.path.exists(bad_state),
           "... the log says 'cannot write state file', no file appears")
    tap.ok(c2.cmd("ping") == ["OK"] and d2.alive(), "... and the daemon carries on")
    c2.close()
    tap.ok(d2.stop() == 0, "... and exits 0 on SIGTERM")

    # ---- an unknown user ----------------------------------------------------------
    x_state = os.path.join(sdir, "x.state")
    cfg3 = env.write("privdrop3.conf", conf_for(mb, pub, x_state, user="no-such-user-wl"))
    d3 = env.start_daemon(cfg3, wait=False)
    rc = d3.wait(15)
    tap.ok(rc == 1 and "no such user" in log_text(d3),
           "user = \"no-such-user-wl\": start-up fails with exit 1 and 'no such user' (%r)" % rc,
           log_text(d3)[-2000:])
    tap.ok(not os.path.exists(x_state),
           "... and the failed start, still root, writes no state file")
    plant.stop()
    mb.close()
    pub.close()

tap.done()
