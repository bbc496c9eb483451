#!/usr/bin/env python3
"""The client wavelock end to end: the real client against the real daemon
on the simulator (wavelock-sim), plus a few stand-in servers for what the
daemon cannot be made to do (never greet, never answer).

Covers every exit status (0, 1 with ERR on stderr, 2, 3 within the timeout,
4), standard-input mode and stop-at-first-error, -m, wait, watch (plain,
--csv parsed back, SIGINT), environment variables, tokens, aligned output and
the bash completion."""

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from wltest import TAP, Env, kv
from clientfake import FakeDaemon
from clientlab import (CLIENT, LASERS, Lab, clean_environ, dead_port, finish, have_programs,
                       read_lines, run_client, start_reader)

tap = TAP()
SLACK = 3.0                    # seconds allowed beyond a timeout on a loaded machine
STATES = {"off", "acquiring", "locked", "holding", "relocking", "fault"}
NAMES = [l[0] for l in LASERS]

why = have_programs()
if why:
    tap.skip("client end-to-end tests", why)
    tap.done()


def is_float(s):
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


with Env() as env:
    # ---- without a daemon -----------------------------------------------------
    dead = dead_port(env)
    r = run_client(["-p", dead, "-t", "5", "ping"])
    tap.ok(r.rc == 3 and "cannot connect" in r.err and r.out == "",
           "daemon down: exit 3 with a message on stderr", r)
    tap.ok(r.elapsed < 5 + SLACK, "daemon down: gives up within the timeout", r)

    # A server that accepts but never greets: exit 3 after -t seconds.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    r = run_client(["-p", silent.getsockname()[1], "-t", "1.5", "ping"])
    tap.ok(r.rc == 3 and "greeting" in r.err, "no greeting: exit 3", r)
    tap.ok(1.4 <= r.elapsed < 1.5 + SLACK, "no greeting: returns after the 1.5 s timeout", r)
    silent.close()

    fake = FakeDaemon(mode="noreply").start()
    r = run_client(["-p", fake.port, "-t", "1", "status"])
    tap.ok(r.rc == 3 and "no reply" in r.err, "greeting but no reply: exit 3", r)
    tap.ok(0.9 <= r.elapsed < 1 + SLACK, "no reply: returns after the 1 s timeout", r)
    fake.stop()

    fake = FakeDaemon(mode="garbage").start()
    r = run_client(["-p", fake.port, "ping"])
    tap.ok(r.rc == 3 and "greeting" in r.err, "not a wavelock greeting: exit 3", r)
    fake.stop()

    # Events between replies, and unknown keys in events, do not disturb.
    fake = FakeDaemon(extra_event_keys="zzz=1 note=x").start()
    r = run_client(["-p", fake.port, "-m", "subscribe", "noisy", "lasers"])
    tap.ok(r.rc == 0 and r.lines() == ["a=1 b=2", "done", "name=cool780 state=off",
                                       "name=repump state=off"],
           "event lines are skipped while commands run; OK text is printed", r)
    r = run_client(["-p", fake.port, "watch", "--csv", "--count", "4"])
    rows = list(csv.reader(io.StringIO(r.out)))
    tap.ok(r.rc == 0 and len(rows) == 5 and all(len(x) == 7 for x in rows),
           "watch --csv ignores keys it does not know", r)
    fake.stop()

    # ---- usage errors: exit 2, nothing sent ----------------------------------
    usage = [
        ([], "no command"),
        (["-x", "ping"], "unknown option"),
        (["-p", "abc", "ping"], "bad port"),
        (["-p", "70000", "ping"], "port out of range"),
        (["-t", "-1", "ping"], "negative timeout"),
        (["-t"], "missing option argument"),
        (["wait"], "wait without a laser"),
        (["wait", "all", "cool780"], "wait all plus a name"),
        (["wait", "all", "--timeout", "x"], "wait with a bad timeout"),
        (["watch", "--count", "0"], "watch --count 0"),
        (["watch", "--bogus"], "watch with an unknown option"),
        (["-k", "a", "-K", "/nonexistent", "ping"], "both -k and -K"),
        (["-K", "/nonexistent/token", "ping"], "unreadable token file"),
        (["-m"], "-m without commands"),
        (["-m", " ; "], "-m with only separators"),
        (["ping\nlock all"], "a newline inside a command"),
    ]
    for args, what in usage:
        r = run_client(["-p", dead] + args)
        tap.ok(r.rc == 2 and r.err.startswith("wavelock: ") and r.out == "",
               "usage error (%s): exit 2 before connecting" % what, r)
    r = run_client(["ping"], env={"WAVELOCK_PORT": "notaport"})
    tap.ok(r.rc == 2 and "WAVELOCK_PORT" in r.err, "invalid WAVELOCK_PORT: exit 2", r)
    r = run_client(["--help"])
    tap.ok(r.rc == 0 and r.out.startswith("Usage: wavelock") and "Exit status" in r.out,
           "--help: usage on stdout, exit 0", r)
    r = run_client(["-V"])
    tap.ok(r.rc == 0 and re.match(r"wavelock \S+ \(protocol 1\)$", r.out.strip()),
           "-V prints the version", r)

    # ---- the real daemon on the simulator -------------------------------------
    try:
        lab = Lab(env)
    except RuntimeError as e:
        tap.bail("cannot start the simulated lab: %s" % e)
    P = str(lab.port)
    ok = lab.wait_locked(["cool780", "repump"], 40)
    tap.ok(ok, "simulated lab: cool780 and repump lock by themselves", lab.states())

    r = run_client(["-p", P, "ping"])
    tap.ok(r.rc == 0 and r.out == "" and r.err == "", "ping: exit 0, bare OK prints nothing", r)

    r = run_client(["-p", P, "status"])
    recs = [kv(x) for x in r.lines()]
    need = {"name", "state", "setpoint_thz", "freq_thz", "error_mhz", "piezo_v"}
    tap.ok(r.rc == 0 and [d.get("name") for d in recs] == NAMES
           and all(need <= set(d) for d in recs),
           "status: one key=value line per laser with the contract's keys", r)
    tap.ok("current_v" in recs[1] if len(recs) > 1 else False,
           "status: current_v for the laser with a current actuator", r)

    r = run_client(["-p", P, "-a", "lasers"])
    lines = r.lines()
    ok = r.rc == 0 and len(lines) == 1 + len(NAMES) and lines[0].split()[:2] == ["name", "state"]
    if ok:
        col = lines[0].index("state")
        ok = all(l[col - 2:col] == "  " and l[col] != " " for l in lines[1:]) \
            and [l.split()[0] for l in lines[1:]] == NAMES
    tap.ok(ok, "-a: a header of keys and aligned columns", r)
    r = run_client(["-p", P, "-a", "help"])
    tap.ok(r.rc == 0 and "status" in r.out, "-a: free-text replies still print", r)

    # OK with text: the text is printed.
    sp = lab.setpoint("probe")
    r = run_client(["-p", P, "setpoint", "probe", "%.9f" % sp])
    tap.ok(r.rc == 0 and re.search(r"setpoint_thz=351\.7255", r.out),
           "setpoint: the OK text goes to stdout", r)

    # ERR replies.
    r = run_client(["-p", P, "status", "nosuch"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 404") and r.out == "",
           "unknown laser: exit 1, the ERR line on stderr", r)
    r = run_client(["-p", P, "frobnicate"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 404"), "unknown command: exit 1", r)
    r = run_client(["-p", P, "setpoint", "probe", "999", "THz"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 422"), "out-of-range setpoint: exit 1 (422)", r)

    # ---- -m ---------------------------------------------------------------------
    r = run_client(["-p", P, "-m", "status cool780", "version"])
    tap.ok(r.rc == 0 and len(r.lines()) == 2 and r.lines()[0].startswith("name=cool780")
           and "protocol=1" in r.lines()[1], "-m: two commands, both replies", r)
    r = run_client(["-p", P, "-m", "status probe; bogus; version"])
    tap.ok(r.rc == 1 and r.lines()[0].startswith("name=probe") and len(r.lines()) == 1
           and r.err.startswith("ERR 404"), "-m: ';' separates; stops at the first ERR", r)
    r = run_client(["-p", P, "-m", "-c", "status probe; bogus; version"])
    tap.ok(r.rc == 1 and len(r.lines()) == 2 and "protocol=1" in r.lines()[1],
           "-m -c: goes on after the ERR, exit 1", r)

    # ---- standard input ---------------------------------------------------------
    script = "ping\n# a comment\n\nstatus cool780\r\nversion\n"
    r = run_client(["-p", P, "-"], input=script)
    tap.ok(r.rc == 0 and len(r.lines()) == 2 and r.lines()[0].startswith("name=cool780"),
           "stdin: commands one per line, comments and blank lines skipped", r)
    r = run_client(["-p", P, "-"], input="lasers\nnosuchcommand\nversion\n")
    tap.ok(r.rc == 1 and len(r.lines()) == len(NAMES) and r.err.startswith("ERR 404"),
           "stdin: stops at the first ERR", r)
    r = run_client(["-p", P, "-c", "-"], input="lasers\nnosuchcommand\nversion\n")
    tap.ok(r.rc == 1 and len(r.lines()) == len(NAMES) + 1 and "protocol=1" in r.lines()[-1],
           "stdin -c: goes on, exit 1", r)
    r = run_client(["-p", P, "-"], input="wait\nversion\n")
    tap.ok(r.rc == 2 and "line 1" in r.err and r.out == "",
           "stdin: a bad local command is a usage error (2) naming the line", r)
    r = run_client(["-p", P, "-m", "quit", "ping"])
    tap.ok(r.rc == 3 and "closed" in r.err, "connection closed by the daemon: exit 3", r)

    # ---- wait ---------------------------------------------------------------------
    r = run_client(["-p", P, "wait", "cool780", "repump", "--timeout", "30"])
    tap.ok(r.rc == 0 and r.out == "", "wait for locked lasers: exit 0", r)
    r = run_client(["-p", P, "wait", "probe", "--timeout", "1.5"])
    tap.ok(r.rc == 4 and "probe=off" in r.err, "wait for a laser that is off: exit 4", r)
    tap.ok(1.4 <= r.elapsed < 1.5 + SLACK, "wait --timeout 1.5 returns after about 1.5 s", r)
    r = run_client(["-p", P, "wait", "all", "--timeout=1"])
    tap.ok(r.rc == 4 and "probe" in r.err and "cool780" not in r.err,
           "wait all: exit 4, names only the laser not locked", r)
    r = run_client(["-p", P, "wait", "nosuch", "--timeout", "5"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 404"), "wait for an unknown laser: exit 1", r)
    r = run_client(["-p", P, "-m", "lock probe", "wait all --timeout 40", "lasers"])
    st = {kv(x).get("name"): kv(x).get("state") for x in r.lines()}
    tap.ok(r.rc == 0 and st == {n: "locked" for n in NAMES},
           "-m 'lock probe' 'wait all': everything locked, then lasers runs", r)

    # ---- watch ----------------------------------------------------------------
    t0 = time.time()
    r = run_client(["-p", P, "watch", "--csv", "--count", "30"], timeout=30)
    rows = list(csv.reader(io.StringIO(r.out)))
    tap.ok(r.rc == 0 and rows and rows[0] == ["time", "laser", "freq_thz", "error_mhz",
                                               "piezo_v", "current_v", "state"],
           "watch --csv: the header line", r)
    data = rows[1:]
    good = len(data) == 30
    bad = []
    for row in data:
        d = dict(zip(rows[0], row))
        valid = (len(row) == 7 and is_float(d["time"]) and abs(float(d["time"]) - t0) < 60
                 and d["laser"] in NAMES and d["state"] in STATES
                 and is_float(d["piezo_v"]) and 0.0 <= float(d["piezo_v"]) <= 10.0)
        if valid and d["freq_thz"]:
            want = lab.setpoints[d["laser"]]
            valid = (is_float(d["freq_thz"]) and abs(float(d["freq_thz"]) - want) < 0.01
                     and is_float(d["error_mhz"]))
        if valid:
            valid = (d["current_v"] == "") == (d["laser"] != "repump") or \
                (d["laser"] == "repump" and is_float(d["current_v"]))
        if not valid:
            bad.append(row)
    tap.ok(good and not bad, "watch --csv --count 30: 30 rows with numeric fields", bad or r)
    tap.ok({x[1] for x in data} == set(NAMES), "watch --csv: rows for every laser", r)
    locked_rows = [x for x in data if x[1] == "cool780" and x[6] == "locked" and x[3]]
    tap.ok(locked_rows and all(abs(float(x[3])) < 10.0 for x in locked_rows),
           "watch --csv: error_mhz of a locked laser is small", locked_rows)

    r = run_client(["-p", P, "watch", "repump", "--csv", "--count", "5"])
    tap.ok(r.rc == 0 and [x[1] for x in csv.reader(io.StringIO(r.out))][1:] == ["repump"] * 5,
           "watch LASER: only that laser's readings", r)

    r = run_client(["-p", P, "watch", "--duration", "1"])
    tap.ok(r.rc == 0 and 0.9 <= r.elapsed < 1 + SLACK and r.lines()
           and all(x.split()[0] in ("reading", "state") for x in r.lines()),
           "watch --duration 1: plain events without '* ', exit 0 after 1 s", r)

    # Interrupted with SIGINT: exit 0.
    p = start_reader([CLIENT, "-p", P, "watch"])
    first = (read_lines(p, 1, 15) or [""])[0]
    p.send_signal(signal.SIGINT)
    rc, err = finish(p, 10)
    tap.ok(first.startswith("reading laser=") and rc == 0,
           "watch: SIGINT ends it with exit 0", (first, rc, err))

    # ---- environment ------------------------------------------------------------
    r = run_client(["ping"], env={"WAVELOCK_HOST": "127.0.0.1", "WAVELOCK_PORT": P})
    tap.ok(r.rc == 0, "WAVELOCK_HOST and WAVELOCK_PORT are used", r)
    r = run_client(["-t", "3", "ping"], env={"WAVELOCK_PORT": dead})
    tap.ok(r.rc == 3 and str(dead) in r.err, "WAVELOCK_PORT pointing nowhere: exit 3", r)
    r = run_client(["-p", P, "ping"], env={"WAVELOCK_PORT": dead})
    tap.ok(r.rc == 0, "-p overrides WAVELOCK_PORT", r)
    r = run_client(["-H", "localhost", "-p", P, "ping"], env={"WAVELOCK_HOST": "192.0.2.1"})
    tap.ok(r.rc == 0, "-H overrides WAVELOCK_HOST (a host name works)", r)

    # ---- bash completion ----------------------------------------------------------
    comp = os.path.join(os.environ.get("WL_SRCDIR", ""), "scripts", "wavelock.bash-completion")
    if not os.path.exists(comp):
        comp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                            "wavelock.bash-completion")
    bash = shutil.which("bash")
    if bash:
        prog_ = ("source %s\n"
                 "t(){ COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]}-1));"
                 " COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _wavelock;"
                 " echo \"${COMPREPLY[*]}\"; }\n"
                 "t %s st\n"
                 "t %s -p %s lock ''\n"
                 "t %s -p %s output cool780 ''\n"
                 "t %s -p %s get cool780 win\n" % (comp, CLIENT, CLIENT, P, CLIENT, P, CLIENT, P))
        p = subprocess.run([bash, "--norc", "--noprofile", "-c", prog_], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=30,
                           env=clean_environ())
        out = p.stdout.splitlines() + ["", "", "", ""]
        tap.ok(out[0].split() == ["status"], "completion: command names", p.stdout + p.stderr)
        tap.ok(sorted(out[1].split()) == sorted(NAMES + ["all"]),
               "completion: laser names asked from the daemon (with -p)", p.stdout + p.stderr)
        tap.ok(out[2].split() == ["piezo", "current"], "completion: output kinds", p.stdout)
        tap.ok(out[3].split() == ["window_mhz"], "completion: parameter names from get all",
               p.stdout)
    else:
        tap.skip("bash completion", "bash not installed")

    # ---- tokens ---------------------------------------------------------------------
    tokens = ('max_clients = 2; tokens = ( { secret = "ctl-secret"; role = "control"; },'
              ' { secret = "mon-secret"; role = "monitor"; } );')
    try:
        auth = Lab(env, server_extra=tokens, name="auth",
                   lasers=[(n, ch, thz, reg, False, cur, off)
                           for n, ch, thz, reg, auto, cur, off in LASERS])
    except RuntimeError as e:
        tap.bail("cannot start the lab with tokens: %s" % e)
    A = str(auth.port)
    tokfile = env.write("token", "ctl-secret\n")
    os.chmod(tokfile, 0o600)
    monfile = env.write("montoken", "  mon-secret  \n")
    sp = "%.9f" % auth.setpoints["probe"]
    r = run_client(["-p", A, "status"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 401"), "tokens: no token, exit 1 with 401", r)
    r = run_client(["-p", A, "setpoint", "probe", sp], env={"WAVELOCK_TOKEN": "ctl-secret"})
    tap.ok(r.rc == 0, "tokens: WAVELOCK_TOKEN authenticates", r)
    r = run_client(["-p", A, "-K", tokfile, "setpoint", "probe", sp])
    tap.ok(r.rc == 0, "tokens: -K FILE authenticates", r)
    r = run_client(["-p", A, "setpoint", "probe", sp], env={"WAVELOCK_TOKEN_FILE": tokfile})
    tap.ok(r.rc == 0, "tokens: WAVELOCK_TOKEN_FILE authenticates", r)
    r = run_client(["-p", A, "-k", "ctl-secret", "setpoint", "probe", sp])
    tap.ok(r.rc == 0, "tokens: -k authenticates", r)
    r = run_client(["-p", A, "-k", "wrong", "status"])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 401") and r.out == "",
           "tokens: a wrong token gives exit 1 and ERR 401", r)
    r = run_client(["-p", A, "-K", monfile, "status", "probe"])
    tap.ok(r.rc == 0 and r.lines() and r.lines()[0].startswith("name=probe"),
           "tokens: monitor token (blanks trimmed from the file) may read", r)
    r = run_client(["-p", A, "-K", monfile, "setpoint", "probe", sp])
    tap.ok(r.rc == 1 and r.err.startswith("ERR 403"),
           "tokens: monitor token may not change things (403)", r)
    r = run_client(["-p", A, "-k", "mon-secret", "setpoint", "probe", sp],
                   env={"WAVELOCK_TOKEN": "ctl-secret"})
    tap.ok(r.rc == 1 and r.err.startswith("ERR 403"), "tokens: -k overrides WAVELOCK_TOKEN", r)

    # Refused for too many clients (max_clients = 2): exit 3 with the ERR line.
    held = [env.connect(auth.port), env.connect(auth.port)]
    r = run_client(["-p", A, "-k", "ctl-secret", "ping"])
    tap.ok(r.rc == 3 and "ERR 429" in r.err, "too many clients (429 at connect): exit 3", r)
    for c in held:
        c.close()

    # ---- connection lost while watching: exit 3 -------------------------------------
    p = start_reader([CLIENT, "-p", P, "watch", "--csv"])
    got = read_lines(p, 2, 15)
    lab.daemon.stop()
    rc, err = finish(p, 15)
    tap.ok(len(got) == 2 and rc == 3 and "wavelock:" in err,
           "watch: daemon going away gives exit 3", (got, rc, err))

tap.done()
