#!/usr/bin/env python3
"""wavelockd -t and start-up with bad configs: every error names the file,
the line and the key, and the exit status is 78 (EX_CONFIG).  Then what
start-up needs besides a good file: -t binds and releases the listeners,
checks the state file's directory, loads the wlmdata library and resolves
its symbols, touching no actuator, and exits 1 where start-up would fail;
-T checks the file alone."""

import os
import pwd
import re
import signal
import socket
import subprocess
import time

from hwtest import fake_wlmdata_path
from wltest import TAP, Env, ModbusRecorder, can_bind, lab_conf, laser_conf, prog

tap = TAP()


def run(argv, timeout=10):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


with Env() as env:
    good_lasers = [laser_conf("cool780", 1, 384.2304844),
                   laser_conf("repump795", 2, 377.1074635, reg=2)]
    good = lab_conf(good_lasers, [("ao1", 1502)], 7480)
    path = env.write("good.conf", good)
    rc, out = run([prog("wavelockd"), "-t", "-c", path])
    tap.eq(rc, 0, "a good config passes -t")

    rc, out = run([prog("wavelockd"), "-t", "-c", env.path("missing.conf")])
    tap.ok(rc == 78 and "missing.conf" in out, "a missing file: 78 and its name", out)

    cases = [
        ("syntax error", good.replace("lasers = (", "lasers = ((", 1), None),
        ("wrong type", good.replace('channel = 2;', 'channel = "two";'), "channel"),
        ("unknown device", good.replace('device = "ao1"; register = 2', 'device = "ao9"; register = 2'),
         "device"),
        ("out-of-range value", good.replace("window_mhz = 5.0;", "window_mhz = -5.0;", 1), "window_mhz"),
        ("negative glitch_mhz", good.replace("window_mhz = 5.0;", "window_mhz = 5.0; glitch_mhz = -5;", 1),
         "glitch_mhz"),
        ("glitch_mhz not a number", good.replace("window_mhz = 5.0;", 'window_mhz = 5.0; glitch_mhz = "big";', 1),
         "glitch_mhz"),
        ("duplicate laser name", good.replace('"repump795"', '"cool780"'), "name"),
        ("sensitivity_mhz_per_v out of range",
         good.replace("kd = 0.0;", "kd = 0.0; sensitivity_mhz_per_v = 2e7;", 1),
         "sensitivity_mhz_per_v"),
        ("sensitivity_mhz_per_v not a number",
         good.replace("kd = 0.0;", 'kd = 0.0; sensitivity_mhz_per_v = "fast";', 1),
         "sensitivity_mhz_per_v"),
        ("non-loopback listen without tokens", good.replace("127.0.0.1:0", "0.0.0.0:7470"), "listen"),
        ("setpoint outside its range", good.replace("384.230484400 THz", "390 THz"), "setpoint"),
        ("unknown key", good.replace("window_mhz = 5.0;", "windw_mhz = 5.0;", 1), "windw_mhz"),
        ("wlmdata backend, laser on channel 20 (it reads 1-17)",
         good.replace('backend = "stream";', 'backend = "wlmdata";')
             .replace("channel = 2;", "channel = 20;"), "channels 1 to 17"),
    ]
    for name, text, key in cases:
        p = env.write("bad.conf", text)
        rc, out = run([prog("wavelockd"), "-t", "-c", p])
        line_ok = re.search(r"bad\.conf:\d+", out) is not None
        key_ok = key is None or key in out
        tap.ok(rc == 78 and line_ok and key_ok,
               "%s: exit 78, message names file, line%s" % (name, " and key" if key else ""),
               "rc=%d\n%s" % (rc, out))
        # The daemon itself refuses to start the same way.
        rc2, out2 = run([prog("wavelockd"), "-f", "-c", p])
        tap.ok(rc2 == 78 and out2.strip() != "", "%s: wavelockd exits 78 at start" % name, out2)

    rc, out = run([prog("wavelockd"), "--bogus-option"])
    tap.eq(rc, 2, "unknown option: exit 2")
    rc, out = run([prog("wavelockd"), "-V"])
    tap.ok(rc == 0 and "wavelockd" in out, "-V prints the version", out)
    rc, out = run([prog("wavelockd"), "--help"])
    tap.ok(rc == 0 and "--config" in out, "--help", out)


with Env() as env:
    mb = ModbusRecorder()
    tokens = 'tokens = ( { secret = "t0ps3cr3t-c19"; role = "control"; } );'
    lasers = [laser_conf("cool780", 1, 384.2304844)]

    def conf(name, listen="127.0.0.1:0", state_file="wavelock.state", wm=None, top=""):
        text = lab_conf(lasers, [("ao1", mb.port)], 7480, listen=listen, state_file=state_file,
                        server_extra=tokens, top_extra=top)
        text = text.replace('listen = ["%s"];' % listen,
                            "listen = [%s];" % ", ".join('"%s"' % x for x in listen.split(",")))
        if wm:
            text = re.sub(r"wavemeter = \{[^}]*\};", wm, text)
        p = env.write(name, text)
        os.chmod(p, 0o640)
        return p

    # ---- listeners: bound and released ---------------------------------------------
    port = env.free_port()
    good = conf("listen-ok.conf", listen="127.0.0.1:%d" % port)
    rc, out = run([prog("wavelockd"), "-t", "-c", good])
    tap.ok(rc == 0 and "configuration OK" in out and can_bind(port),
           "-t on a free port: exit 0, and the port is released again", out)
    tap.ok(mb.conns == [] and mb.writes == [],
           "-t touched no actuator (no Modbus connection, no write)", (mb.conns, mb.writes))

    both = conf("listen-twice.conf", listen="127.0.0.1:%d,0.0.0.0:%d" % (port, port))
    rc, out = run([prog("wavelockd"), "-t", "-c", both])
    tap.ok(rc == 1 and "0.0.0.0:%d" % port in out and "Address already in use" in out,
           "-t: 127.0.0.1:%d and 0.0.0.0:%d conflict: exit 1, EADDRINUSE named" % (port, port),
           "rc=%d\n%s" % (rc, out))
    rc2, out2 = run([prog("wavelockd"), "-f", "-c", both])
    tap.ok(rc2 == 1 and out2.count("Address already in use") == 1,
           "... and start-up fails the same way: exit 1, logged once", "rc=%d\n%s" % (rc2, out2))
    rc3, out3 = run([prog("wavelockd"), "-T", "-c", both])
    tap.ok(rc3 == 0 and "configuration OK" in out3, "-T checks the file alone: exit 0", out3)

    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    busy = conf("listen-busy.conf", listen="127.0.0.1:%d" % held.getsockname()[1])
    rc, out = run([prog("wavelockd"), "-t", "-c", busy])
    tap.ok(rc == 1 and "Address already in use" in out and "-T" in out,
           "-t: a port another process holds: exit 1, with a hint at -T", out)
    held.close()

    # ---- the state file's directory -----------------------------------------------------
    missing = conf("state-missing.conf", state_file=env.path("no-such-dir/wavelock.state"))
    rc, out = run([prog("wavelockd"), "-t", "-c", missing])
    tap.ok(rc == 1 and "no-such-dir" in out and "state_file" in out,
           "-t: state file in a missing directory: exit 1, the directory named", out)
    tap.eq(run([prog("wavelockd"), "-T", "-c", missing])[0], 0, "... -T: exit 0")
    d = env.start_daemon(missing)
    tap.ok(d.alive(), "... start-up still runs without its state file (the lasers come first)")
    log = d.output()
    tap.eq(d.stop(), 0, "... and stops cleanly (exit 0)")
    tap.ok("state file not writable" in log and "no-such-dir" in log,
           "... and says so at start", log[-1500:])
    mb.drop_all()
    touched = (len(mb.writes), len(mb.conns))       # what that daemon did

    sdir = env.path("ro-state")
    os.mkdir(sdir, 0o755)
    ro = conf("state-ro.conf", state_file=os.path.join(sdir, "wavelock.state"))
    if os.geteuid() == 0:
        # root may write anywhere: check as nobody, the user a service would be
        nobody = pwd.getpwnam("nobody")
        os.chmod(env.dir, 0o711)
        os.chmod(ro, 0o644)

        def as_nobody():
            os.setgid(nobody.pw_gid)
            os.setgroups([])
            os.setuid(nobody.pw_uid)
        p = subprocess.run([prog("wavelockd"), "-t", "-c", ro], capture_output=True, text=True,
                           timeout=10, preexec_fn=as_nobody)
    else:
        os.chmod(sdir, 0o555)
        p = subprocess.run([prog("wavelockd"), "-t", "-c", ro], capture_output=True, text=True,
                           timeout=10)
    out = p.stdout + p.stderr
    tap.ok(p.returncode == 1 and "not writable" in out and sdir in out,
           "-t: state file directory not writable: exit 1, named", "rc=%d\n%s" % (p.returncode, out))
    os.chmod(sdir, 0o755)

    # ---- the wlmdata library ------------------------------------------------------------
    for name, lib, rc_want, text in (
            ("a missing library", "/nonexistent/dir/libwlmData.so", 1, "cannot load"),
            ("a library without GetFrequencyNum", fake_wlmdata_path(nofreq=True), 1,
             "no symbol 'GetFrequencyNum'"),
            ("the libwlmData.so double", fake_wlmdata_path(), 0, "configuration OK")):
        p = conf("wlm.conf", wm='wavemeter = { backend = "wlmdata"; library = "%s"; };' % lib)
        rc, out = run([prog("wavelockd"), "-t", "-c", p])
        tap.ok(rc == rc_want and text in out, "-t, wlmdata with %s: exit %d (%s)"
               % (name, rc_want, text), "rc=%d\n%s" % (rc, out))
        if rc_want:
            rc2, out2 = run([prog("wavelockd"), "-f", "-c", p])
            tap.ok(rc2 == rc_want and text in out2, "... start-up fails the same way (exit %d)"
                   % rc_want, "rc=%d\n%s" % (rc2, out2))
            tap.eq(run([prog("wavelockd"), "-T", "-c", p])[0], 0, "... -T: exit 0")

    # ---- the user to become -----------------------------------------------------------------
    p = conf("user.conf", top='user = "no-such-user-c19";\n')
    rc, out = run([prog("wavelockd"), "-t", "-c", p])
    tap.ok(rc == 1 and "no-such-user-c19" in out, "-t: an unknown user: exit 1", out)
    tap.ok((len(mb.writes), len(mb.conns)) == touched,
           "no -t run (nor a start that failed) touched an actuator", (mb.conns, mb.writes))

    # ---- a stop asked for during start-up ----------------------------------------------------
    # A supervisor may send SIGTERM the moment the port file appears, while
    # wavelockd is still starting its devices and wavemeter: it must stop
    # cleanly (exit 0, outputs held), not die of the signal's default action.
    good = conf("early-stop.conf")
    codes = []
    for _ in range(20):
        n = len(env.procs)
        d = env.start_daemon(good, wait=False)
        portfile = env.path("wavelockd.%d.port" % n)
        deadline = time.time() + 10
        while not os.path.exists(portfile) and d.alive() and time.time() < deadline:
            pass                    # no sleep: the signal should come at once
        if d.alive():
            os.kill(d.pid, signal.SIGTERM)
        codes.append(d.stop(timeout=10))
    tap.ok(codes == [0] * 20, "SIGTERM as soon as the port file appears: a clean stop "
           "(exit 0), 20 times out of 20", codes)
    mb.close()

tap.done()
