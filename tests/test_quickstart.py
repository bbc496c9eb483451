#!/usr/bin/env python3
"""scripts/quickstart-sim.sh, run twice the way a new user would but with its
output going to a file (not a terminal), on a copy of conf/sim.conf with free
ports (WL_QUICKSTART_CONF) and without installing or building
(WL_QUICKSTART_NO_BUILD, the build under test):

- each run has a directory of its own holding its state file, so the second
  run restores nothing the first one left (and the copy's own state_file,
  standing for the old fixed /tmp path, is never written);
- the logs of both programs are kept after the run and the exit message says
  where;
- the laser table has a header line, and no terminal control codes (clear)
  land in the redirected output;
- all 14 lasers lock, and SIGTERM stops the script and both programs;
- the dashboard URL (conf/sim.conf's http group) is printed.
"""

import os
import re
import signal
import subprocess
import time

from wltest import TAP, Env, SRCDIR, BUILDDIR, wait_until
from lablib import SIM_CONF, programs_missing, rewrite_ports

tap = TAP()
SCRIPT = os.path.join(SRCDIR, "scripts", "quickstart-sim.sh")
HEADER = re.compile(r"^LASER\s+STATE\s+SETPOINT_THZ\s+FREQ_THZ\s+ERROR_MHZ\s+PIEZO_V$", re.M)

why = programs_missing()
if why or not os.access(os.path.join(BUILDDIR, "wavelock"), os.X_OK):
    tap.skip("quickstart-sim.sh", why or "wavelock is not built")
    tap.done()


def run_once(env, conf, n):
    out_path = env.path("quickstart.%d.out" % n)
    e = dict(os.environ, WL_QUICKSTART_NO_BUILD="1", WL_BUILDDIR=BUILDDIR,
             WL_QUICKSTART_CONF=conf, WL_QUICKSTART_RUNS=env.path("runs"), TERM="xterm")
    e = {k: v for k, v in e.items() if not k.startswith("WAVELOCK")}
    with open(out_path, "wb") as out:
        p = subprocess.Popen(["sh", SCRIPT], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=e, cwd=env.dir)

    def text():
        with open(out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    t0 = time.monotonic()
    ok = wait_until(lambda: "All running." in text() or p.poll() is not None, 150, 0.2)
    t_run = time.monotonic() - t0
    m = re.search(r"^logs in (\S+)$", text(), re.M)
    run_dir = m.group(1) if m else None
    pids = [int(x) for x in re.findall(r"\(pid (\d+)", text())]
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    return ok, t_run, rc, text(), run_dir, pids


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


with Env() as env:
    with open(SIM_CONF) as f:
        text, ports = rewrite_ports(f.read(), env.free_port, env.path("fixed-path.state"))
    conf = env.write("sim.conf", text)

    runs = []
    for n in (1, 2):
        ok, t_run, rc, out, run_dir, pids = run_once(env, conf, n)
        runs.append(run_dir)
        tap.ok(ok and "14 of 14 lasers locked" in out,
               "run %d: all 14 lasers locked after %.1f s" % (n, t_run), out[-2000:])
        tap.ok(rc in (0, 143) and len(pids) == 2 and
               wait_until(lambda: not any(alive(x) for x in pids), 10, 0.1),
               "run %d: SIGTERM stops the script (exit %s) and both programs" % (n, rc),
               (rc, pids, out[-1000:]))
        http_port = ports.get(7471)
        tap.ok(http_port and ("dashboard: http://127.0.0.1:%d/" % http_port) in out and
               ("  http://127.0.0.1:%d/\n" % http_port) in out,
               "run %d: the dashboard URL is printed (at the start and with 'All running')" % n,
               out[:600])
        tap.ok("\x1b" not in out, "run %d: no terminal control codes in the redirected output" % n,
               repr(out[:300]))
        hm = HEADER.search(out)
        rows = re.findall(r"^(\S+)\s+locked\s+\d+\.\d+\s+\d+\.\d+\s", out, re.M)
        tap.ok(hm is not None and len(rows) >= 14 and out.index(rows[0]) > hm.start(),
               "run %d: the laser table has a header line above its %d rows" % (n, len(rows)),
               out[-2500:])
        logs = [os.path.join(run_dir or "", x) for x in ("wavelockd.log", "sim.log")]
        tap.ok(run_dir and run_dir.startswith(env.path("runs")) and
               all(os.path.isfile(x) and os.path.getsize(x) > 0 for x in logs) and
               "kept in\n  %s\n" % run_dir in out,
               "run %d: its logs are kept after the run, in the directory the exit message names"
               % n, (run_dir, out[-600:]))
        state = os.path.join(run_dir or "", "wavelockd.state")
        tap.ok(os.path.isfile(state) and not os.path.exists(env.path("fixed-path.state")),
               "run %d: the state file is the run's own (%s)" % (n, os.path.relpath(state, env.dir)))
        with open(logs[0]) as f:
            dlog = f.read()
        tap.ok("restored" not in dlog,
               "run %d: nothing is restored from an earlier run" % n,
               [l for l in dlog.splitlines() if "restored" in l or "state file" in l])
    tap.ok(runs[0] != runs[1], "the two runs have directories of their own", runs)

tap.done()
