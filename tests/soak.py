#!/usr/bin/python3
"""soak - wavelockd's fault soak (issue 8), against wavelock-sim's fault
injection, with clients and subscribers busy all the time.

wavelock-sim and wavelockd run on a copy of conf/sim.conf (14 lasers, 4
Modbus devices; free ports, state file in a temporary directory, see
tests/lablib.py).  Once every laser is locked, a fault driver works through
a shuffled schedule spread over --duration seconds:

  outage     'outage <device> silent|drop|refuse <s>' (a third each, 0.5-3 s)
  dropout    'dropout <channel>|all <s> [code]' (0.5-3 s), or an error-code
             burst: 3-6 error readings of 0.1-0.4 s on one channel with the
             codes -1 -2 -3 -4 0, 0.1-0.4 s apart
  hop        'hop <laser>' (the laser's modehop_mhz for its modehop_s)
  reload     alternately through the protocol ('reload') and SIGHUP; every
             other one with a broken copy of the config (syntax error,
             setpoint outside min_thz..max_thz, unknown device, duplicate
             channel, piezo min_v above max_v, a non-loopback listener
             without tokens; each checked with 'wavelockd -T' first),
             restored afterwards
  kill       kill -9 of the daemon and a restart on the same config and state
             file; the kills fall in the first 60 % of the schedule, so the
             last daemon lives through at least the last 40 %
  limits     a laser's piezo limit narrowed to just past its present output
             (so the output must be brought inside while its cycles go on),
             alternately with `set` and with a reload of a file that narrows
             max_v or raises min_v; the simulator is told the limits in force
             ('limits'), and 1.5 s later they are widened again

while --clients threads issue requests at a bounded rate (--rate per client:
ping, status, get, set of kp or ki within 0.8..1.2 of the configured value,
setpoint reads, lasers) and --subscribers connections stream every event.
Clients and subscribers reconnect after a kill.  The simulator keeps running
from start to end.

Asserted and reported (TAP, then a summary table):
  - the daemon never dies except when killed and always answers (checked
    before every event and at the end);
  - every kill -9 ends the process, the new daemon starts, and its log says
    the state file was restored (never "state file ignored");
  - good reloads are accepted, broken ones refused (422, or counted as a
    reload failure for SIGHUP) and the running lasers stay;
  - the simulator took every injected fault, and the faults showed up as
    'fault', 'holding' and 'relocking' state events;
  - every client request got exactly one final line, OK and of the right
    shape, except requests cut off by a kill -9 (connection closed while the
    daemon was being killed); the subscribers' streams held only
    well-formed events;
  - every laser ends locked;
  - no value written to any actuator register ever left its min_v..max_v
    (wavelock-sim 'writes': limit_violations = 0 for every actuator, summed
    over all daemon instances: the simulator keeps running), nor the
    narrowed limits in force after a 'limits' event (runtime_violations = 0;
    a write arriving within 0.2 s of the narrowing may have left before it);
  - the RSS of the last daemon at the end, with the same number of
    connections, is within --rss-slack-kib of its RSS after --warmup
    seconds (skipped under AddressSanitizer or ThreadSanitizer, which ldd
    shows as libasan or libtsan, and when wavelockd is a wrapper script,
    e.g. for valgrind);
  - the daemon exits 0 on SIGTERM at the end, and no daemon log holds a
    sanitizer report.

    python3 tests/soak.py --profile long [--summary FILE] [options]
    (WL_BUILDDIR names the build tree, default the current directory)

tests/test_soak.py runs --profile short in make check.
"""

import argparse
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wltest                                       # noqa: E402
from wltest import TAP, Env, Client, kv, wait_until  # noqa: E402
from lablib import Lab, Daemon, log_text, programs_missing  # noqa: E402

PROFILES = {
    "long": dict(outages=100, dropouts=100, hops=20, reloads=20, kills=5, limits=20, clients=32,
                 subscribers=8, duration=900.0, rate=4.0, warmup=30.0),
    "short": dict(outages=10, dropouts=10, hops=4, reloads=4, kills=1, limits=4, clients=8,
                  subscribers=2, duration=55.0, rate=4.0, warmup=5.0),
}
KILL_SPAN = 0.6            # kills fall in this first fraction of the schedule
OUTAGE_S = (0.5, 3.0)
DROPOUT_S = (0.5, 3.0)
BURST_PULSES = (3, 6)
BURST_PULSE_S = (0.1, 0.4)
BURST_CODES = (-1, -2, -3, -4, 0)
GAIN_FACTOR = (0.8, 1.2)
LASER_STATES = ("off", "acquiring", "locked", "holding", "relocking", "fault")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "==ERROR", "Invalid read", "Invalid write", "WARNING: ThreadSanitizer")


def now():
    return time.monotonic()


def wavelockd_kind():
    """'asan', 'tsan', 'wrapper' (not an ELF binary: valgrind and the like)
    or 'plain'."""
    path = wltest.prog("wavelockd")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return "wrapper"
    except OSError:
        return "plain"
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    if "libasan" in out:
        return "asan"
    return "tsan" if "libtsan" in out else "plain"


def rss_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, or (None, None)."""
    rss = hwm = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def write_atomic(path, text):
    tmp = path + ".soaktmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- broken configs ---------------------------------------------------------

def broken_variants(text, cfg):
    """[(name, text)]: copies of the config the daemon must refuse."""
    first = cfg.root["lasers"][0]
    out = [("syntax error", text[:len(text) // 2] + "\n}}} ;;\n")]
    lo = 'min_thz = %s;' % _num(text, "min_thz")
    # the first laser's range moved above its setpoint
    sp_hi = float(first["max_thz"]) + 0.001
    out.append(("setpoint outside min_thz..max_thz",
                text.replace(lo, "min_thz = %.3f; max_thz = %.3f; #" % (sp_hi, sp_hi + 0.01), 1)))
    dev = first["piezo"]["device"]
    out.append(("unknown device",
                text.replace('device = "%s"' % dev, 'device = "nosuchdevice"', 1)))
    ch2 = cfg.root["lasers"][1]["channel"]
    out.append(("duplicate channel",
                text.replace("channel = %d;" % ch2, "channel = %d;" % first["channel"], 1)))
    out.append(("piezo min_v above max_v",
                text.replace("min_v = 0.0; max_v = 10.0;", "min_v = 10.0; max_v = 0.0;", 1)))
    out.append(("non-loopback listen without tokens",
                text.replace('"127.0.0.1:0"', '"0.0.0.0:0"', 1)))
    return out


def _num(text, key):
    i = text.index(key + " = ")
    return text[i + len(key) + 3:text.index(";", i)]


def config_test(path):
    """Exit status of 'wavelockd -T -c path' (the file alone: -t would also
    bind the listeners, and the running daemon holds the dashboard's port)."""
    p = subprocess.run([wltest.prog("wavelockd"), "-T", "-c", path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    return p.returncode


# ---- shared state -----------------------------------------------------------

class Soak:
    """What the driver, clients and subscribers share."""

    def __init__(self, args, cfg):
        self.args = args
        self.cfg = cfg
        self.lock = threading.Lock()
        self.port = None
        self.epoch = 0              # daemon instance, bumped before each kill
        self.down = False           # a kill and restart is under way
        self.stopping = False
        self.timeout = args.timeout
        self.kill_windows = []      # [(t_kill, t_up)]

    def state(self):
        with self.lock:
            return self.port, self.epoch, self.down

    def expected_cut(self, epoch):
        """A connection of daemon instance epoch may have been cut by a kill."""
        with self.lock:
            return self.down or self.epoch != epoch


def connect_daemon(soak, who, bad, give_up):
    """(Client, epoch) on the current daemon, retrying while it restarts."""
    first_fail = None
    while not soak.stopping and now() < give_up:
        port, epoch, down = soak.state()
        try:
            c = Client(port, timeout=soak.timeout)
            if not c.greeting.startswith("* wavelock "):
                bad.append("%s: greeting %r" % (who, c.greeting))
                c.close()
                time.sleep(0.5)
                continue
            return c, epoch
        except (OSError, EOFError) as e:
            if not down and not soak.expected_cut(epoch):
                if first_fail is None:
                    first_fail = now()
                elif now() - first_fail > soak.timeout:
                    bad.append("%s: cannot connect to a running daemon: %s" % (who, e))
                    first_fail = now()
            time.sleep(0.05)
    return None, None


def read_response(c):
    """Lines up to and including the final line; event lines are returned
    too (a client that did not subscribe must get none)."""
    lines = []
    while True:
        line = c.readline()
        lines.append(line)
        if line == "OK" or line.startswith("OK ") or line.startswith("ERR "):
            return lines


class Worker(threading.Thread):
    """A client issuing requests at a bounded rate."""

    def __init__(self, soak, idx, seed):
        super().__init__(daemon=True)
        self.soak, self.idx = soak, idx
        self.rng = random.Random(seed)
        self.sent = self.ok = self.cut = self.reconnects = 0
        self.errs = {}
        self.bad = []
        self.connected_at = {}      # epoch -> time connected
        self.kinds = {}
        names = soak.cfg.names
        self.gains = {l["name"]: (float(l["pid"].get("kp", 0.0)), float(l["pid"].get("ki", 0.0)))
                      for l in soak.cfg.root["lasers"]}
        self.names = names
        self.quit_ok = None

    def pick(self):
        r = self.rng.random()
        n = self.rng.choice(self.names)
        names = self.names
        if r < 0.20:
            return "ping", lambda L: L == ["OK"]
        if r < 0.30:
            return "status all", lambda L: (
                len(L) == len(names) + 1 and L[-1].startswith("OK")
                and [kv(x).get("name") for x in L[:-1]] == names
                and all(kv(x).get("state") in LASER_STATES for x in L[:-1]))
        if r < 0.45:
            return "status %s" % n, lambda L: (
                len(L) == 2 and kv(L[0]).get("name") == n and L[-1].startswith("OK")
                and kv(L[0]).get("state") in LASER_STATES)
        if r < 0.60:
            p = self.rng.choice(("kp", "ki"))
            return "get %s %s" % (n, p), lambda L: (
                len(L) == 2 and L[0].startswith("name=%s %s=" % (n, p)) and L[1] == "OK")
        if r < 0.65:
            return "get %s all" % n, lambda L: (
                len(L) == 2 and L[0].startswith("name=%s " % n) and "ki=" in L[0]
                and L[1] == "OK")
        if r < 0.80:
            p = self.rng.choice(("kp", "ki"))
            nominal = self.gains[n][0 if p == "kp" else 1]
            v = float("%.6g" % (nominal * self.rng.uniform(*GAIN_FACTOR)))

            def set_ok(L, p=p, v=v):
                if len(L) != 1 or not L[0].startswith("OK %s=" % p):
                    return False
                got = float(L[0].split("=", 1)[1])
                return abs(got - v) <= 1e-5 * max(abs(v), 1e-12)
            return "set %s %s %.6g" % (n, p, v), set_ok
        if r < 0.95:
            return "setpoint %s" % n, lambda L: (
                len(L) == 2 and kv(L[0]).get("name") == n and "setpoint_thz" in kv(L[0])
                and L[1] == "OK")
        return "lasers", lambda L: (
            len(L) == len(names) + 1 and [kv(x).get("name") for x in L[:-1]] == names)

    def run(self):
        soak = self.soak
        period = 1.0 / soak.args.rate
        c = None
        epoch = None
        nxt = now() + self.rng.uniform(0, period)
        while not soak.stopping:
            if c is None:
                c, epoch = connect_daemon(soak, "client %d" % self.idx, self.bad,
                                          now() + 120.0)
                if c is None:
                    break
                self.connected_at.setdefault(epoch, now())
            delay = nxt - now()
            if delay > 0:
                time.sleep(delay)
            nxt = max(nxt + period, now())
            req, check = self.pick()
            kind = req.split()[0] + (" all" if req.endswith(" all") else "")
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.sent += 1
            try:
                c.send(req + "\n")
                lines = read_response(c)
            except (OSError, EOFError) as e:
                if soak.expected_cut(epoch):
                    self.cut += 1
                else:
                    self.bad.append("client %d: %r: no final line: %s" % (self.idx, req, e))
                c.close()
                c = None
                self.reconnects += 1
                continue
            final = lines[-1]
            if final.startswith("ERR "):
                code = final.split()[1]
                self.errs[code] = self.errs.get(code, 0) + 1
                self.bad.append("client %d: %r -> %r" % (self.idx, req, lines))
            elif not check(lines):
                self.bad.append("client %d: %r -> malformed answer %r" % (self.idx, req, lines))
            elif c.buf:
                self.bad.append("client %d: %r: bytes after the final line: %r"
                                % (self.idx, req, c.buf[:200]))
            else:
                self.ok += 1
        if c is not None:
            # A last 'quit' shows that no stray final line is left over.
            try:
                c.send("quit\n")
                rest = b""
                c.s.settimeout(soak.timeout)
                while True:
                    chunk = c.s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                got = (c.buf + rest).decode("utf-8", "replace").splitlines()
                self.quit_ok = got == ["OK"]
                if not self.quit_ok:
                    self.bad.append("client %d: quit -> %r" % (self.idx, got[:5]))
            except (OSError, EOFError) as e:
                self.quit_ok = False
                self.bad.append("client %d: quit: %s" % (self.idx, e))
            c.close()


class Subscriber(threading.Thread):
    """A connection subscribed to every laser, counting its events."""

    def __init__(self, soak, idx):
        super().__init__(daemon=True)
        self.soak, self.idx = soak, idx
        self.lines = self.reconnects = self.cut = 0
        self.kinds = {}
        self.states = {}
        self.none_readings = 0
        self.dropped = 0
        self.bad = []
        self.connected_at = {}
        self.quit_ok = None

    def event(self, line):
        self.lines += 1
        if not line.startswith("* "):
            self.bad.append("subscriber %d: not an event: %r" % (self.idx, line))
            return
        body = line[2:]
        kind = body.split(" ", 1)[0]
        d = kv(body)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "reading":
            if d.get("laser") not in self.soak.cfg.by_name or d.get("state") not in LASER_STATES \
                    or "freq_thz" not in d or "piezo_v" not in d:
                self.bad.append("subscriber %d: bad reading event %r" % (self.idx, line))
            elif d["freq_thz"] == "none":
                self.none_readings += 1
        elif kind == "state":
            if d.get("laser") not in self.soak.cfg.by_name or d.get("state") not in LASER_STATES \
                    or d.get("from") not in LASER_STATES:
                self.bad.append("subscriber %d: bad state event %r" % (self.idx, line))
            else:
                self.states[d["state"]] = self.states.get(d["state"], 0) + 1
        elif kind == "relock":
            # the relock search after a persistent hop: a step, or how it went
            if d.get("laser") not in self.soak.cfg.by_name or "piezo_v" not in d \
                    or "pass" not in d or "step" not in d \
                    or d.get("result", "found") not in ("start", "found", "stopped", "failed"):
                self.bad.append("subscriber %d: bad relock event %r" % (self.idx, line))
        elif kind == "dropped":
            self.dropped += int(d.get("n", "0"))
        else:
            self.bad.append("subscriber %d: unknown event %r" % (self.idx, line))

    def run(self):
        soak = self.soak
        c = None
        epoch = None
        while not soak.stopping:
            if c is None:
                c, epoch = connect_daemon(soak, "subscriber %d" % self.idx, self.bad,
                                          now() + 120.0)
                if c is None:
                    break
                try:
                    c.send("subscribe\n")
                    lines = read_response(c)
                    if lines != ["OK subscribed to all lasers"]:
                        self.bad.append("subscriber %d: subscribe -> %r" % (self.idx, lines))
                    c.s.settimeout(0.5)
                    self.connected_at.setdefault(epoch, now())
                except (OSError, EOFError) as e:
                    if not soak.expected_cut(epoch):
                        self.bad.append("subscriber %d: subscribe: %s" % (self.idx, e))
                    c.close()
                    c = None
                    time.sleep(0.05)
                    continue
            try:
                line = c.readline()
            except socket.timeout:
                continue
            except (OSError, EOFError) as e:
                if soak.expected_cut(epoch):
                    self.cut += 1
                else:
                    self.bad.append("subscriber %d: stream ended: %s" % (self.idx, e))
                c.close()
                c = None
                self.reconnects += 1
                continue
            self.event(line)
        if c is not None:
            try:
                c.s.settimeout(soak.timeout)
                c.send("quit\n")
                while True:
                    line = c.readline()
                    if line.startswith("* "):
                        self.event(line)
                        continue
                    self.quit_ok = line == "OK"
                    break
                try:
                    extra = c.readline()
                    self.quit_ok = False
                    self.bad.append("subscriber %d: after quit: %r" % (self.idx, extra))
                except EOFError:
                    pass
            except (OSError, EOFError) as e:
                self.quit_ok = False
                self.bad.append("subscriber %d: quit: %s" % (self.idx, e))
            c.close()


# ---- the schedule -----------------------------------------------------------

def build_schedule(args, cfg, rng):
    devices = cfg.devices
    channels = [l["channel"] for l in cfg.lasers]
    ev = []
    modes = ["silent", "drop", "refuse"] * ((args.outages + 2) // 3)
    rng.shuffle(modes)
    for i in range(args.outages):
        ev.append(("outage", rng.choice(devices), modes[i], round(rng.uniform(*OUTAGE_S), 2)))
    for i in range(args.dropouts):
        if i % 2 == 0:
            ch = "all" if rng.random() < 0.2 else rng.choice(channels)
            code = rng.choice((None, None, -3, -4))
            ev.append(("dropout", ch, round(rng.uniform(*DROPOUT_S), 2), code))
        else:
            pulses = [(round(rng.uniform(*BURST_PULSE_S), 2), rng.choice(BURST_CODES),
                       round(rng.uniform(*BURST_PULSE_S), 2))
                      for _ in range(rng.randint(*BURST_PULSES))]
            ev.append(("burst", rng.choice(channels), pulses))
    for i in range(args.hops):
        ev.append(("hop", rng.choice(cfg.names)))
    for i in range(args.reloads):
        ev.append(("reload", i % 2 == 1, "proto" if (i // 2) % 2 == 0 else "sighup"))
    for i in range(args.limits):
        ev.append(("limits", rng.choice(cfg.names), "set" if i % 2 == 0 else "reload",
                   rng.random() < 0.5))
    rng.shuffle(ev)
    n_total = len(ev) + args.kills
    for k in range(args.kills):
        pos = int(round((k + 1) * KILL_SPAN * n_total / (args.kills + 1)))
        ev.insert(min(pos, len(ev)), ("kill",))
    return ev


# ---- the soak -----------------------------------------------------------------

class Driver:
    """The fault driver: owns the lab, injects the faults, checks the daemon."""

    def __init__(self, tap, env, args):
        self.tap, self.env, self.args = tap, env, args
        self.rng = random.Random(args.seed)
        self.lab = Lab(env, seed=args.seed, events=False, name="soak")
        self.cfg = self.lab.cfg
        with open(self.lab.conf) as f:
            self.good_text = f.read()
        self.soak = Soak(args, self.cfg)
        self.soak.port = self.lab.port
        self.proc = self.lab.daemon
        self.instances = [{"pid": self.proc.pid, "t_start": now(), "epoch": 0}]
        self.d = self.lab.d
        self.deaths = []            # unexpected
        self.hangs = []
        self.checks = 0
        self.kills = []
        self.reloads = []
        self.injected = {"outage": 0, "dropout": 0, "burst": 0, "hop": 0}
        self.limit_events = []
        self.inject_failures = []
        self.outage_modes = {}
        self.baseline = None        # (epoch, t, rss, clients, subscribers)
        self.rss_samples = []
        self.variants = broken_variants(self.good_text, self.cfg)
        self.n_broken = 0
        self.good_n = 0

    # -- helpers --
    def daemon_cmd(self, line):
        try:
            return self.d.cmd(line)
        except (OSError, EOFError):
            self.d.close()
            self.d = Daemon(self.soak.port, timeout=self.soak.timeout)
            self.lab.d = self.d
            return self.d.cmd(line)

    def stats(self):
        out = {}
        for line in self.daemon_cmd("stats")[:-1]:
            out.update(kv(line))
        return out

    def check_alive(self, where):
        self.checks += 1
        if not self.proc.alive():
            self.deaths.append("%s: wavelockd exited with %r\n%s"
                               % (where, self.proc.p.returncode, log_text(self.proc)[-3000:]))
            self.restart("after an unexpected exit")
            return False
        try:
            lines = self.daemon_cmd("ping")
            if lines != ["OK"]:
                self.hangs.append("%s: ping -> %r" % (where, lines))
        except (OSError, EOFError) as e:
            self.hangs.append("%s: ping: %s" % (where, e))
            if not self.proc.alive():
                return self.check_alive(where)
        return True

    def restart(self, why):
        """Start a new daemon on the same config; returns its log check."""
        t0 = now()
        self.proc = self.env.start_daemon(self.lab.conf, timeout=self.args.start_timeout)
        with self.soak.lock:
            self.soak.port = self.proc.port
            self.soak.down = False
        self.d.close()
        self.d = Daemon(self.proc.port, timeout=self.soak.timeout)
        self.lab.d = self.d
        self.lab.daemon = self.proc
        self.instances.append({"pid": self.proc.pid, "t_start": now(),
                               "epoch": self.soak.epoch, "why": why})
        return now() - t0

    def maybe_baseline(self):
        """RSS baseline of the current daemon once every client and subscriber
        has been connected to it for --warmup seconds."""
        if self.baseline is not None and self.baseline[0] == self.soak.epoch:
            return
        ep = self.soak.epoch
        ts = [w.connected_at.get(ep) for w in self.workers + self.subs]
        if any(t is None for t in ts) or now() < max(ts) + self.args.warmup:
            return
        rss, _ = rss_kib(self.proc.pid)
        st = self.stats()
        self.baseline = (ep, now(), rss, int(st["clients"]), int(st["subscribers"]))

    def sample_rss(self):
        """An RSS sample of the current daemon every 5 s: (time, epoch, KiB)."""
        if self.rss_samples and now() - self.rss_samples[-1][0] < 5.0:
            return
        rss, _ = rss_kib(self.proc.pid)
        if rss:
            self.rss_samples.append((now(), self.soak.epoch, rss))

    def wait_until(self, t):
        while True:
            left = t - now()
            if left <= 0:
                return
            self.maybe_baseline()
            self.sample_rss()
            time.sleep(min(left, 0.2))

    # -- events --
    def sim_ok(self, line):
        try:
            lines = self.lab.sim.cmd(line)
        except (OSError, EOFError) as e:
            self.inject_failures.append("%s: %s" % (line, e))
            return False
        if lines[-1] != "OK":
            self.inject_failures.append("%s -> %r" % (line, lines))
            return False
        return True

    def do_outage(self, dev, mode, secs):
        if self.sim_ok("outage %s %s %g" % (dev, mode, secs)):
            self.injected["outage"] += 1
            self.outage_modes[mode] = self.outage_modes.get(mode, 0) + 1

    def do_dropout(self, ch, secs, code):
        line = "dropout %s %g" % (ch, secs) + ("" if code is None else " %d" % code)
        if self.sim_ok(line):
            self.injected["dropout"] += 1

    def do_burst(self, ch, pulses):
        good = True
        for secs, code, gap in pulses:
            good &= self.sim_ok("dropout %s %g %d" % (ch, secs, code))
            time.sleep(secs + gap)
        if good:
            self.injected["burst"] += 1

    def do_hop(self, laser):
        if self.sim_ok("hop %s" % laser):
            self.injected["hop"] += 1

    def do_reload(self, broken, via):
        rec = {"broken": broken, "via": via, "ok": False, "what": ""}
        st0 = self.stats()
        lasers0 = self.daemon_cmd("lasers")
        if broken:
            name, text = self.variants[self.n_broken % len(self.variants)]
            self.n_broken += 1
            rec["what"] = name
            write_atomic(self.lab.conf, text)
        else:
            self.good_n += 1
            rec["what"] = "config rewritten"
            write_atomic(self.lab.conf, self.good_text + "\n# soak: good reload %d\n" % self.good_n)
        key = "reload_failures" if broken else "reloads"
        try:
            if via == "proto":
                lines = self.daemon_cmd("reload")
                answer = lines[-1]
                rec["answer"] = answer
                want = answer.startswith("ERR 422") if broken else answer.startswith("OK reloaded")
            else:
                self.proc.signal(signal.SIGHUP)
                want = True
            counted = wait_until(lambda: int(self.stats()[key]) == int(st0[key]) + 1,
                                 self.soak.timeout, 0.05)
            rec["counted"] = bool(counted)
            lasers1 = self.daemon_cmd("lasers")
            same = [kv(x)["name"] for x in lasers1[:-1]] == [kv(x)["name"] for x in lasers0[:-1]]
            rec["ok"] = bool(want and counted and same)
            if not rec["ok"]:
                rec["diag"] = "answer %r counted %r lasers %r" % (rec.get("answer"), counted,
                                                                 lasers1[:2])
        finally:
            if broken:
                write_atomic(self.lab.conf, self.good_text)
        self.reloads.append(rec)

    def do_limits(self, laser, via, upper):
        """Narrow laser's piezo limits to just past its present output (upper:
        max_v below it, else min_v above it), tell the simulator, hold 1.5 s,
        widen again."""
        L = self.cfg.by_name[laser]
        lo0, hi0 = L["piezo_min_v"], L["piezo_max_v"]
        span = hi0 - lo0
        rec = {"laser": laser, "via": via, "ok": False}
        try:
            out = float(kv(self.daemon_cmd("output %s piezo" % laser)[0])["piezo_v"])
        except (KeyError, ValueError, IndexError, OSError, EOFError):
            self.limit_events.append(rec)
            return
        if upper and out - 0.05 * span > lo0 + 0.1 * span:
            lo, hi, key, val = lo0, round(out - 0.05 * span, 3), "max_v", None
        else:
            lo, hi, key = round(min(out + 0.05 * span, hi0 - 0.1 * span), 3), hi0, "min_v"
        val = hi if key == "max_v" else lo
        rec["limits"] = (lo, hi, out)
        try:
            if via == "set":
                ans = self.daemon_cmd("set %s piezo_%s %r" % (laser, key, val))[-1]
            else:
                text = re.sub(r'(name = "%s";.*?piezo = \{[^}]*?%s = )[-0-9.]+' % (laser, key),
                              lambda m: m.group(1) + repr(val), self.good_text, count=1,
                              flags=re.S)
                write_atomic(self.lab.conf, text)
                ans = self.daemon_cmd("reload")[-1]
            rec["answer"] = ans
            told = self.sim_ok("limits %s.piezo %r %r" % (laser, lo, hi))
            time.sleep(1.5)
            # widen: the simulator first, then the daemon
            self.sim_ok("limits %s.piezo reset" % laser)
            if via == "set":
                back = self.daemon_cmd("set %s piezo_%s %r" % (laser, key, lo0 if key == "min_v"
                                                               else hi0))[-1]
            else:
                write_atomic(self.lab.conf, self.good_text)
                back = self.daemon_cmd("reload")[-1]
            rec["ok"] = ans.startswith("OK") and told and back.startswith("OK")
        finally:
            if via == "reload":
                write_atomic(self.lab.conf, self.good_text)
        self.limit_events.append(rec)

    def do_kill(self):
        rec = {"ok": False}
        st = self.env.path("soak.state")
        rec["state_file_before"] = os.path.exists(st)
        old = self.proc
        with self.soak.lock:
            self.soak.epoch += 1
            self.soak.down = True
        t_kill = now()
        old.signal(signal.SIGKILL)
        status = old.wait(30)
        old.stop()
        rec["status"] = status
        rec["restart_s"] = self.restart("kill -9")
        self.soak.kill_windows.append((t_kill, now()))
        log = log_text(self.proc)
        rec["ignored"] = "state file ignored" in log
        rec["restored"] = "restored %d lasers from" % len(self.cfg.names) in log
        rec["ok"] = (status == -signal.SIGKILL and rec["restored"] and not rec["ignored"])
        if not rec["ok"]:
            rec["diag"] = log[-2000:]
        self.kills.append(rec)

    def run_schedule(self, schedule):
        t0 = now()
        interval = self.args.duration / max(1, len(schedule))
        for i, ev in enumerate(schedule):
            self.wait_until(t0 + i * interval + self.rng.uniform(0, 0.5 * interval))
            self.check_alive("before event %d (%s)" % (i, ev[0]))
            getattr(self, "do_" + ev[0])(*ev[1:])
        self.check_alive("after the last event")
        return now() - t0


def summary_rows(drv, res):
    """[(item, value)] for the summary table."""
    a = drv.args
    rows = [
        ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
        ("machine", "%s, %d CPUs, %s" % (platform.machine(), os.cpu_count() or 0,
                                          platform.release())),
        ("wavelockd", "%s (%s)" % (wltest.prog("wavelockd"), res["kind"])),
        ("seed", str(a.seed)),
        ("run time", "%.0f s (schedule %.0f s, start-up and final lock %.0f s)"
         % (res["total_s"], res["schedule_s"], res["total_s"] - res["schedule_s"])),
        ("load", "%d clients at %.1f requests/s each, %d subscribers"
         % (a.clients, a.rate, a.subscribers)),
        ("Modbus outages", "%d (%s), 0.5-3 s each"
         % (drv.injected["outage"], ", ".join("%s %d" % kv_ for kv_ in
                                               sorted(drv.outage_modes.items())))),
        ("wavemeter dropouts / error-code bursts", "%d / %d"
         % (drv.injected["dropout"], drv.injected["burst"])),
        ("mode hops", str(drv.injected["hop"])),
        ("limits narrowed past the output (set / reload)", "%d / %d"
         % (sum(1 for r in drv.limit_events if r["via"] == "set"),
            sum(1 for r in drv.limit_events if r["via"] == "reload"))),
        ("reloads (good / broken)", "%d / %d (%d via the protocol, %d via SIGHUP); %d as expected"
         % (sum(1 for r in drv.reloads if not r["broken"]), sum(1 for r in drv.reloads
                                                                 if r["broken"]),
            sum(1 for r in drv.reloads if r["via"] == "proto"),
            sum(1 for r in drv.reloads if r["via"] == "sighup"),
            sum(1 for r in drv.reloads if r["ok"]))),
        ("kill -9 and restarts", "%d; state file restored %d times, ignored %d times; "
         "restart %.2f s max"
         % (len(drv.kills), sum(1 for k in drv.kills if k["restored"]),
            sum(1 for k in drv.kills if k["ignored"]),
            max([k["restart_s"] for k in drv.kills] + [0.0]))),
        ("unexpected daemon exits / unanswered pings", "%d / %d (%d checks)"
         % (len(drv.deaths), len(drv.hangs), drv.checks)),
        ("client requests", "%d sent, %d OK with one well-formed final line, %d cut by a kill -9, "
         "%d errors" % (res["sent"], res["ok"], res["cut"], res["bad_clients"])),
        ("request mix", ", ".join("%s %d" % x for x in sorted(res["kinds"].items()))),
        ("events to subscribers", "%d (%s); %d readings without a frequency; %d dropped"
         % (res["ev_lines"], ", ".join("%s %d" % x for x in sorted(res["ev_kinds"].items())),
            res["ev_none"], res["ev_dropped"])),
        ("state changes seen", ", ".join("%s %d" % x for x in sorted(res["ev_states"].items()))),
        ("final lock", "%d/%d lasers locked %.1f s after the last fault"
         % (res["locked_n"], len(drv.cfg.names), res["lock_s"])),
        ("actuator writes", "%d over %d actuators, limit violations %d"
         % (res["writes"], res["actuators"], res["violations"])),
        ("daemon counters (last instance)", res["counters"]),
        ("RSS (last daemon)", res["rss_text"]),
    ]
    return rows


def format_table(rows):
    w = max(len(k) for k, _ in rows)
    out = ["| %-*s | %s |" % (w, "item", "figure"), "| %s | --- |" % ("-" * w)]
    out += ["| %-*s | %s |" % (w, k, v) for k, v in rows]
    return "\n".join(out)


def run(args):
    tap = TAP()
    why = programs_missing()
    if why:
        tap.skip("fault soak", why)
        tap.done()
    kind = wavelockd_kind()
    slow = 3.0 if kind == "wrapper" else 1.0
    args.timeout *= slow
    args.start_timeout *= slow
    t_begin = now()
    res = {"kind": kind}
    with Env() as env:
        drv = Driver(tap, env, args)
        lab = drv.lab
        locked = lab.wait_states("locked", timeout=60 * slow)
        tap.ok(locked, "start-up: all %d lasers locked" % len(drv.cfg.names), lab.d.states())

        # The broken copies really are broken (and the good one good).
        bad = []
        for name, text in drv.variants:
            p = env.write("broken.conf", text)
            rc = config_test(p)
            if rc != 78:
                bad.append("%s: wavelockd -T exits %r" % (name, rc))
        rc = config_test(lab.conf)
        tap.ok(not bad and rc == 0, "the %d broken configs are refused by wavelockd -T (78), "
               "the soak's config is accepted (%r)" % (len(drv.variants), rc), "\n".join(bad))

        schedule = build_schedule(args, drv.cfg, drv.rng)
        drv.workers = [Worker(drv.soak, i, args.seed * 1000 + i) for i in range(args.clients)]
        drv.subs = [Subscriber(drv.soak, i) for i in range(args.subscribers)]
        for t in drv.workers + drv.subs:
            t.start()
        tap.diag("schedule: %d events over %.0f s (%d clients, %d subscribers)"
                 % (len(schedule), args.duration, args.clients, args.subscribers))
        res["schedule_s"] = drv.run_schedule(schedule)

        # Let the last faults end, then every laser must lock.
        t_last = now()
        time.sleep(max(OUTAGE_S[1], DROPOUT_S[1]) + 3.5)
        locked = wait_until(lambda: all(v == "locked" for v in drv.d.states().values()),
                            args.final_lock * slow, 0.2)
        states = drv.d.states()
        res["locked_n"] = sum(1 for v in states.values() if v == "locked")
        res["lock_s"] = now() - t_last
        drv.check_alive("at the end")

        # RSS at the end, with every client and subscriber still connected.
        st = drv.stats()
        rss_end, hwm_end = rss_kib(drv.proc.pid)
        clients_end, subs_end = int(st["clients"]), int(st["subscribers"])
        devs = [kv(x) for x in drv.daemon_cmd("devices")[:-1]]
        res["counters"] = ("cycles %s, coalesced %s, write_errors %s, events_dropped %s, "
                           "device reconnects %d, reloads %s, reload_failures %s"
                           % (st["cycles"], st["coalesced"], st["write_errors"],
                              st["events_dropped"], sum(int(d["reconnects"]) for d in devs),
                              st["reloads"], st["reload_failures"]))

        drv.soak.stopping = True
        for t in drv.workers + drv.subs:
            t.join(args.timeout + 5)

        # ---- results ----
        tap.ok(not drv.deaths and not drv.hangs,
               "the daemon never died except when killed and always answered (%d checks, "
               "%d instances)" % (drv.checks, len(drv.instances)),
               "\n".join(drv.deaths + drv.hangs))
        for i, k in enumerate(drv.kills):
            tap.ok(k["ok"], "kill -9 #%d: exit by SIGKILL (%r), restarted in %.2f s, state file "
                   "restored (%s), never 'state file ignored'"
                   % (i + 1, k["status"], k["restart_s"],
                      "restored" if k["restored"] else "NOT restored"), k.get("diag"))
        good = [r for r in drv.reloads if not r["broken"]]
        brk = [r for r in drv.reloads if r["broken"]]
        tap.ok(all(r["ok"] for r in good),
               "%d good reloads accepted (protocol OK / SIGHUP counted in stats), lasers kept"
               % len(good), "\n".join(r.get("diag", "") for r in good if not r["ok"]))
        tap.ok(all(r["ok"] for r in brk),
               "%d broken reloads refused (protocol 422 / SIGHUP counted as a failure), "
               "lasers kept" % len(brk),
               "\n".join("%s via %s: %s" % (r["what"], r["via"], r.get("diag", ""))
                         for r in brk if not r["ok"]))
        n_inj = sum(drv.injected.values())
        want_inj = args.outages + args.dropouts + args.hops
        tap.ok(n_inj == want_inj and not drv.inject_failures,
               "wavelock-sim took all %d injected faults" % want_inj,
               "\n".join(drv.inject_failures[:20]))

        ev_states, ev_kinds = {}, {}
        for s in drv.subs:
            for k, v in s.states.items():
                ev_states[k] = ev_states.get(k, 0) + v
            for k, v in s.kinds.items():
                ev_kinds[k] = ev_kinds.get(k, 0) + v
        res["ev_states"], res["ev_kinds"] = ev_states, ev_kinds
        res["ev_lines"] = sum(s.lines for s in drv.subs)
        res["ev_none"] = sum(s.none_readings for s in drv.subs)
        res["ev_dropped"] = sum(s.dropped for s in drv.subs)
        if args.subscribers:
            need = [("fault", args.outages), ("holding", args.dropouts),
                    ("relocking", args.hops)]
            missing = [s for s, n in need if n and not ev_states.get(s)]
            tap.ok(not missing, "the faults showed: state events %s" % ev_states,
                   "never seen: %s" % missing)

        bad_c = [b for w in drv.workers for b in w.bad]
        res["sent"] = sum(w.sent for w in drv.workers)
        res["ok"] = sum(w.ok for w in drv.workers)
        res["cut"] = sum(w.cut for w in drv.workers)
        res["bad_clients"] = len(bad_c)
        res["kinds"] = {}
        for w in drv.workers:
            for k, v in w.kinds.items():
                res["kinds"][k] = res["kinds"].get(k, 0) + v
        quit_ok = all(w.quit_ok for w in drv.workers)
        tap.ok(not bad_c and res["ok"] + res["cut"] == res["sent"] and res["sent"] > 0
               and quit_ok and res["cut"] <= args.clients * len(drv.kills),
               "client requests: all %d got exactly one final line, OK and well-formed, "
               "except %d cut off by a kill -9; a final quit left nothing over"
               % (res["sent"], res["cut"]),
               "%d problems, first ones:\n%s" % (len(bad_c), "\n".join(bad_c[:20])))
        bad_s = [b for s in drv.subs for b in s.bad]
        tap.ok(not bad_s and all(s.quit_ok for s in drv.subs) and
               (not args.subscribers or res["ev_lines"] > 0) and
               sum(s.cut for s in drv.subs) <= args.subscribers * len(drv.kills),
               "subscribers: %d events, all well-formed, streams ended only by a kill -9"
               % res["ev_lines"], "\n".join(bad_s[:20]))

        tap.ok(res["locked_n"] == len(drv.cfg.names),
               "every laser ends locked (%d/%d, %.1f s after the last fault)"
               % (res["locked_n"], len(drv.cfg.names), res["lock_s"]), states)

        w = lab.sim.writes()
        res["writes"] = sum(x["count"] for x in w.values())
        res["actuators"] = len(w)
        res["violations"] = sum(x["limit_violations"] for x in w.values())
        viol = {k: x for k, x in w.items() if x["limit_violations"]}
        tap.ok(res["violations"] == 0 and res["writes"] > 0 and
               all(x["count"] > 0 for x in w.values()),
               "no value written to any of the %d actuators left its min_v..max_v "
               "(%d writes over all daemon instances, limit_violations 0)"
               % (len(w), res["writes"]), viol)
        res["runtime_violations"] = sum(x["runtime_violations"] for x in w.values())
        lim_ok = [r for r in drv.limit_events if r["ok"]]
        tap.ok(res["runtime_violations"] == 0 and len(lim_ok) == len(drv.limit_events),
               "narrowed limits (%d events: %d by set, %d by reload, each past the present "
               "output): no value written outside the limits in force (runtime_violations %d)"
               % (len(drv.limit_events), sum(1 for r in drv.limit_events if r["via"] == "set"),
                  sum(1 for r in drv.limit_events if r["via"] == "reload"),
                  res["runtime_violations"]),
               {"events": drv.limit_events,
                "violations": {k: x for k, x in w.items() if x["runtime_violations"]}})

        # ---- memory ----
        bl = drv.baseline
        if bl is not None and rss_end is not None:
            grow = rss_end - bl[2]
            res["rss_text"] = ("%d KiB after %.0f s warm-up, %d KiB at the end (%+d KiB, "
                               "%.0f s later, %d connections both times); peak %d KiB"
                               % (bl[2], args.warmup, rss_end, grow, now() - bl[1],
                                  clients_end, hwm_end))
            # Growth in the first and the second half since the baseline:
            # a leak keeps growing, a warm-up effect levels off.
            t_mid = bl[1] + (now() - bl[1]) / 2
            mid = [r for t, ep, r in drv.rss_samples if ep == bl[0] and t >= t_mid]
            if mid:
                res["rss_text"] += ("; %+d KiB in the first half, %+d KiB in the second"
                                    % (mid[0] - bl[2], rss_end - mid[0]))
        else:
            res["rss_text"] = "no baseline (the last daemon lived less than the warm-up)"
        if kind != "plain":
            tap.skip("RSS at the end within %d KiB of after warm-up" % args.rss_slack_kib,
                     "wavelockd is %s" % {
                         "asan": "built with AddressSanitizer (libasan)",
                         "tsan": "built with ThreadSanitizer (libtsan: its shadow memory, "
                                 "traces and sync objects grow with the run)",
                     }.get(kind, "a wrapper script"))
            res["rss_text"] += " (not checked: %s)" % kind
        elif bl is None:
            tap.ok(False, "RSS baseline of the last daemon taken", res["rss_text"])
        else:
            tap.ok(rss_end - bl[2] <= args.rss_slack_kib
                   and bl[3] == clients_end and bl[4] == subs_end,
                   "RSS of the last daemon at the end within %d KiB of after warm-up: %s"
                   % (args.rss_slack_kib, res["rss_text"]),
                   "baseline clients %d subscribers %d, end %d %d"
                   % (bl[3], bl[4], clients_end, subs_end))

        # ---- shutdown ----
        drv.d.close()
        lab.sim.close()
        rc = drv.proc.stop(timeout=30 * slow)
        logs = [log_text(p) for p in env.procs if p.name == "wavelockd"]
        marks = [m for text in logs for m in SANITIZER_MARKS if m in text]
        tap.ok(rc == 0 and not marks,
               "the last daemon exits 0 on SIGTERM (%r); no sanitizer or memcheck report in "
               "the %d daemon logs" % (rc, len(logs)),
               "%s\n%s" % (marks, log_text(drv.proc)[-3000:]))
        src = lab.simproc.stop(timeout=10)
        smarks = [m for m in SANITIZER_MARKS if m in log_text(lab.simproc)]
        tap.ok(src == 0 and not smarks,
               "wavelock-sim ran from start to end and exits 0 (%r), no sanitizer report" % src,
               "%s\n%s" % (smarks, log_text(lab.simproc)[-2000:]))
        res["total_s"] = now() - t_begin
        rows = summary_rows(drv, res)
        table = format_table(rows)
        tap.diag("summary:\n" + table)
        if args.summary:
            with open(args.summary, "w") as f:
                f.write(table + "\n")
    tap.done()


def parse_args(argv):
    ap = argparse.ArgumentParser(description="wavelockd fault soak against wavelock-sim "
                                 "(TAP on stdout, summary table at the end)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="long",
                    help="counts and duration to start from (default long)")
    for key in ("outages", "dropouts", "hops", "reloads", "kills", "limits", "clients",
                "subscribers"):
        ap.add_argument("--" + key, type=int, help="number of %s" % key)
    ap.add_argument("--duration", type=float, help="seconds the fault schedule is spread over")
    ap.add_argument("--rate", type=float, help="requests per second per client")
    ap.add_argument("--warmup", type=float,
                    help="seconds after the last (re)start before the RSS baseline")
    ap.add_argument("--rss-slack-kib", type=int, default=1024,
                    help="allowed RSS growth of the last daemon (default 1024 KiB)")
    ap.add_argument("--final-lock", type=float, default=60.0,
                    help="seconds every laser has to lock after the last fault")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds a request may take to be answered")
    ap.add_argument("--start-timeout", type=float, default=20.0,
                    help="seconds a restarted daemon may take to listen")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("WL_SOAK_SEED", "1")))
    ap.add_argument("--summary", help="also write the summary table (Markdown) to this file")
    args = ap.parse_args(argv)
    for k, v in PROFILES[args.profile].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


if __name__ == "__main__":
    run(parse_args(sys.argv[1:]))
