"""clientlab - a simulated lab (wavelock-sim + wavelockd) for the client and
script tests, and a helper to run the client.

    with Env() as env:
        lab = Lab(env)              # 3 lasers: cool780, repump (autolock), probe (off)
        r = run_client(["-p", lab.port, "status"])
        r.rc, r.out, r.err, r.elapsed
"""

import os
import subprocess
import sys
import time

from wltest import SRCDIR, kv, lab_conf, laser_conf, port_open, prog, wait_until

CLIENT = prog("wavelock")
SCRIPTS = os.path.join(SRCDIR, "scripts")

# name, channel, THz, register, autolock, current actuator, sim offset (MHz)
LASERS = [
    ("cool780", 1, 384.2304844, 0, True, None, 40.0),
    ("repump", 2, 377.1074635, 1, True, {"reg": 2}, -30.0),
    ("probe", 3, 351.7255, 3, False, None, 20.0),
]
PID = {"kp": 0.0, "ki": 0.02, "kd": 0.0}


def have_programs():
    """None if wavelockd, wavelock-sim and wavelock are built, else why not."""
    for name in ("wavelockd", "wavelock-sim", "wavelock"):
        if not os.access(prog(name), os.X_OK):
            return "%s is not built" % name
    return None


def clean_environ(extra=None):
    """os.environ without WAVELOCK_* (the tests set what they need)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("WAVELOCK")}
    e["WAVELOCK_CLIENT"] = CLIENT
    if extra:
        e.update({k: str(v) for k, v in extra.items()})
    return e


class Result:
    def __init__(self, rc, out, err, elapsed):
        self.rc, self.out, self.err, self.elapsed = rc, out, err, elapsed

    def lines(self):
        return [x for x in self.out.splitlines() if x]

    def __repr__(self):
        return "rc=%r elapsed=%.2f\nstdout:\n%s\nstderr:\n%s" % (
            self.rc, self.elapsed, self.out, self.err)


def run(argv, env=None, input=None, timeout=60):
    """Run argv; returns a Result (rc None if it had to be killed)."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE if input is not None
                         else subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_environ(env),
                         universal_newlines=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    return Result(rc, out, err, time.monotonic() - t0)


def run_client(args, env=None, input=None, timeout=60):
    return run([CLIENT] + list(args), env, input, timeout)


def run_script(name, args, env=None, input=None, timeout=60):
    return run([sys.executable, os.path.join(SCRIPTS, name)] + list(args), env, input, timeout)


def start_reader(argv, env=None):
    """Start argv with stdout and stderr as unbuffered pipes (see read_lines)."""
    return subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_environ(env), bufsize=0)


def read_lines(p, n, timeout):
    """Up to n lines from p's stdout, waiting at most timeout seconds."""
    import select
    buf = b""
    end = time.monotonic() + timeout
    fd = p.stdout.fileno()
    while buf.count(b"\n") < n:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").splitlines()[:n]


def finish(p, timeout):
    """Wait for p; returns (status or None if it had to be killed, stderr)."""
    try:
        _, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        rc = None
    return rc, err.decode(errors="replace")


def dead_port(env):
    """A port on 127.0.0.1 where nothing listens."""
    return env.free_port()


class Lab:
    """wavelock-sim serving the devices and the wavemeter stream, and
    wavelockd on them; lasers as in LASERS (extra server/top config text
    may be added)."""

    def __init__(self, env, lasers=LASERS, server_extra="", name="lab", pid=PID):
        self.env = env
        self.lasers = lasers
        self.dev_port = env.free_port()
        self.wm_port = env.free_port()
        self.ctl_port = env.free_port()
        confs = []
        for lname, ch, thz, reg, auto, cur, offset in lasers:
            confs.append(laser_conf(lname, ch, thz, reg=reg, autolock=auto, current=cur, pid=pid,
                                    sim={"offset_mhz": offset, "noise_mhz": 0.5,
                                         "exposure_ms": 5.0}))
        self.setpoints = {l[0]: l[2] for l in lasers}
        text = lab_conf(confs, [("ao1", self.dev_port)], self.wm_port,
                        state_file="", server_extra=server_extra,
                        sim_control=self.ctl_port)
        self.conf = env.write("%s.conf" % name, text)
        self.sim = env.start_sim(self.conf)
        if not wait_until(lambda: port_open(self.ctl_port) or not self.sim.alive(), 10):
            raise RuntimeError("wavelock-sim did not start:\n" + self.sim.output())
        if not self.sim.alive():
            raise RuntimeError("wavelock-sim exited:\n" + self.sim.output())
        self.daemon = env.start_daemon(self.conf)
        self.port = self.daemon.port

    def states(self):
        c = self.env.connect(self.port)
        try:
            return {kv(x)["name"]: kv(x)["state"] for x in c.cmd("lasers")[:-1]}
        finally:
            c.close()

    def wait_locked(self, names, timeout=30):
        return wait_until(lambda: all(self.states().get(n) == "locked" for n in names),
                          timeout, 0.2)

    def setpoint(self, name):
        c = self.env.connect(self.port)
        try:
            for line in c.cmd("status %s" % name)[:-1]:
                return float(kv(line)["setpoint_thz"])
        finally:
            c.close()
