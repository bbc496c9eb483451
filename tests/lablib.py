"""lablib - the shipped simulated lab (conf/sim.conf) for closed-loop tests
and for scripts/wavelock-quality.

wavelock-sim and wavelockd run as real processes on conf/sim.conf with every
port replaced by a free one on 127.0.0.1 (the daemon's listener by port 0,
read back through --port-file) and state_file in the test's temporary
directory, so the tests never touch /tmp/wavelock-sim.state and can run next
to a demo lab on the default ports.

    from wltest import Env
    from lablib import Lab
    with Env() as env:
        lab = Lab(env, seed=3)               # sim + daemon, events recorded
        lab.wait_states("locked", timeout=60)
        t = lab.sim.truth()                  # {name: {"error_mhz": ..., ...}}
        lab.sim.cmd("hop cool780")

Pieces usable on their own:
  parse_libconfig(text)        the subset of libconfig that wavelock uses
  LabConfig(path)              lasers, devices and sim physics of a config
  rewrite_ports(text, ...)     conf text with free ports and a new state_file
  SimControl(port)             client of wavelock-sim's control port
  Daemon(port)                 text-protocol client with parsed answers
  EventLog(port)               background subscriber recording '* ' events
  TruthLog(sim_port, period)   background poller of 'truth'
"""

import math
import os
import re
import socket
import threading
import time

import wltest
from wltest import Client, kv, port_open, wait_until

SIM_CONF = os.path.join(wltest.SRCDIR, "conf", "sim.conf")


class LabError(Exception):
    """A lab process or command did not do what was asked."""


# ---- libconfig (the subset wavelock's configs use) ------------------------

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+L{0,2}
                      |(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?L{0,2}))
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*]*)
  | (?P<punct>[=:;,{}()\[\]])
  | (?P<directive>@include[^\n]*)
""", re.S | re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "\\": "\\", '"': '"'}


def _tokens(text):
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ValueError("line %d: cannot parse near %r" % (line, text[pos:pos + 20]))
        kind = m.lastgroup
        tok = m.group()
        if kind == "directive":
            raise ValueError("line %d: @include is not supported here" % line)
        if kind not in ("ws", "comment"):
            yield kind, tok, line
        line += tok.count("\n")
        pos = m.end()
    yield "eof", "", line


def _unquote(tok):
    body = tok[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "x" and i + 3 < len(body):
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_libconfig(text):
    """Parse libconfig text into dicts (groups), lists (lists and arrays),
    str, int, float and bool.  Adjacent strings are concatenated."""
    toks = list(_tokens(text))
    pos = [0]

    def peek():
        return toks[pos[0]]

    def take(kind=None, value=None):
        t = toks[pos[0]]
        if (kind and t[0] != kind) or (value is not None and t[1] != value):
            raise ValueError("line %d: expected %s, got %r" % (t[2], value or kind, t[1]))
        pos[0] += 1
        return t

    def value():
        kind, tok, line = peek()
        if kind == "string":
            parts = []
            while peek()[0] == "string":
                parts.append(_unquote(take()[1]))
            return "".join(parts)
        if kind == "number":
            take()
            tok = tok.rstrip("L")
            if tok.lower().startswith(("0x", "+0x", "-0x")):
                return int(tok, 16)
            if re.fullmatch(r"[-+]?\d+", tok):
                return int(tok)
            return float(tok)
        if kind == "name" and tok.lower() in ("true", "false"):
            take()
            return tok.lower() == "true"
        if tok == "{":
            take()
            g = settings("}")
            take("punct", "}")
            return g
        if tok in ("(", "["):
            close = ")" if tok == "(" else "]"
            take()
            items = []
            while peek()[1] != close:
                items.append(value())
                if peek()[1] == ",":
                    take()
            take("punct", close)
            return items
        raise ValueError("line %d: unexpected %r" % (line, tok))

    def settings(end):
        g = {}
        while peek()[0] != "eof" and peek()[1] != end:
            name = take("name")[1]
            if peek()[1] not in ("=", ":"):
                raise ValueError("line %d: expected = after %s" % (peek()[2], name))
            take()
            g[name] = value()
            if peek()[1] in (";", ","):
                take()
        return g

    root = settings(None)
    take("eof")
    return root


class LabConfig:
    """What the lab tests need from a wavelock config: per laser its name,
    channel, window_mhz, the devices of its actuators and its sim physics
    (with wavelock-sim's defaults filled in)."""

    SIM_DEFAULTS = {"offset_mhz": 0.0, "piezo_mhz_per_v": 300.0, "current_mhz_per_v": 50.0,
                    "piezo_lag_ms": 1.0, "current_lag_ms": 100.0, "walk_mhz_rts": 2.0,
                    "sine_mhz": 5.0, "sine_period_s": 600.0, "linear_mhz_per_h": 20.0,
                    "modehop_per_h": 0.0, "modehop_mhz": 8000.0, "modehop_s": 3.0,
                    "noise_mhz": 1.0, "exposure_ms": 10.0, "error_rate": 0.0}

    def __init__(self, path=None, text=None):
        if text is None:
            with open(path) as f:
                text = f.read()
        self.path = path
        self.text = text
        self.root = parse_libconfig(text)
        self.devices = [d["name"] for d in self.root.get("devices", [])]
        self.lasers = []
        for l in self.root.get("lasers", []):
            sim = dict(self.SIM_DEFAULTS)
            sim.update({k: float(v) for k, v in l.get("sim", {}).items()})
            devs = [l["piezo"]["device"]]
            if "current" in l and l["current"]["device"] not in devs:
                devs.append(l["current"]["device"])
            self.lasers.append({
                "name": l["name"], "channel": int(l["channel"]),
                "window_mhz": float(l.get("window_mhz", 5.0)),
                "capture_mhz": float(l.get("capture_mhz", 2000.0)),
                "devices": devs, "has_current": "current" in l,
                "piezo_min_v": float(l["piezo"].get("min_v", 0.0)),
                "piezo_max_v": float(l["piezo"].get("max_v", 10.0)),
                "current_min_v": float(l.get("current", {}).get("min_v", -1.0)),
                "current_max_v": float(l.get("current", {}).get("max_v", 1.0)),
                "feedforward": float(l.get("current", {}).get("feedforward", 0.0)),
                "sim": sim,
            })
        self.by_name = {l["name"]: l for l in self.lasers}
        self.names = [l["name"] for l in self.lasers]

    def reach_mhz(self, name, piezo_v, current_v=0.0):
        """(lowest, highest) change of the laser's true frequency in MHz that
        moving the piezo from piezo_v to its limits can give, with the
        current following through its feed-forward (clamped to its limits),
        by the sim model.  For choosing setpoint steps the laser can follow."""
        l = self.by_name[name]
        gp, gc = l["sim"]["piezo_mhz_per_v"], l["sim"]["current_mhz_per_v"]

        def df(v):
            d = gp * (v - piezo_v)
            if l["has_current"]:
                c = min(max(current_v + l["feedforward"] * (v - piezo_v), l["current_min_v"]),
                        l["current_max_v"])
                d += gc * (c - current_v)
            return d

        ends = (df(l["piezo_min_v"]), df(l["piezo_max_v"]))
        return min(ends), max(ends)

    def lasers_on(self, device):
        """Names of the lasers with an actuator on device."""
        return [l["name"] for l in self.lasers if device in l["devices"]]


# ---- config rewriting -------------------------------------------------------

_HOSTPORT_RE = re.compile(r'(?P<pre>tcp://)?127\.0\.0\.1:(?P<port>\d+)')
_LISTEN_RE = re.compile(r'(listen\s*[=:]\s*\[\s*)"127\.0\.0\.1:\d+"')
_STATE_RE = re.compile(r'^(\s*state_file\s*[=:]\s*)"[^"]*"', re.M)


def rewrite_ports(text, free_port, state_file):
    """conf text with the daemon listening on 127.0.0.1:0, every other
    127.0.0.1 port (devices, wavemeter, sim control) replaced by a free one
    (equal ports stay equal) and state_file replaced.  Returns (text,
    {old_port: new_port})."""
    if not _LISTEN_RE.search(text):
        raise LabError("config has no listen = [\"127.0.0.1:...\"]")
    text = _LISTEN_RE.sub(r'\g<1>"127.0.0.1:0"', text, count=1)
    ports = {}

    def sub(m):
        old = int(m.group("port"))
        if old == 0:
            return m.group()
        if old not in ports:
            ports[old] = free_port()
        return "%s127.0.0.1:%d" % (m.group("pre") or "", ports[old])

    text = _HOSTPORT_RE.sub(sub, text)
    if _STATE_RE.search(text):
        text = _STATE_RE.sub(lambda m: '%s"%s"' % (m.group(1), state_file), text, count=1)
    else:
        text = 'state_file = "%s";\n' % state_file + text
    return text, ports


# ---- protocol clients -------------------------------------------------------

class _LineClient(Client):
    """wltest.Client with commands that raise on ERR."""

    def ok(self, line, events=None):
        """Data lines of a successful command (LabError on ERR)."""
        lines = self.cmd(line, events)
        if not lines or not lines[-1].startswith("OK"):
            raise LabError("%r -> %r" % (line, lines[-1:] if lines else lines))
        return lines[:-1]


class SimControl(_LineClient):
    """wavelock-sim's control port."""

    def truth(self, name=None, references=False):
        """{laser: {key: float or int}} from 'truth' (one laser or all); the
        reference lasers (reference=1: no actuator, not locked by wavelockd)
        only with references=True or when asked for by name."""
        out = {}
        for line in self.ok("truth %s" % name if name else "truth"):
            d = kv(line)
            if d.get("reference") == "1" and not (references or name):
                continue
            rec = {}
            for k, v in d.items():
                if k == "name":
                    continue
                try:
                    rec[k] = float(v)
                except ValueError:
                    rec[k] = v
            out[d["name"]] = rec
        return out

    def writes(self, device=None):
        """{actuator name: {count, min_v, max_v, limit_violations, last_v,
        device, register}} from 'writes'."""
        out = {}
        for line in self.ok("writes %s" % device if device else "writes"):
            d = kv(line)
            out[d["name"]] = {
                "count": int(d["count"]), "min_v": float(d["min_v"]),
                "max_v": float(d["max_v"]), "limit_violations": int(d["limit_violations"]),
                "last_v": float(d["last_v"]), "device": d["device"],
                "register": int(d["register"]), "in_force_lo": float(d["in_force_lo"]),
                "in_force_hi": float(d["in_force_hi"]),
                "runtime_violations": int(d["runtime_violations"])}
        return out

    def info(self):
        lines = self.ok("info")
        return kv(lines[0]), [kv(x) for x in lines[1:]]


class Daemon(_LineClient):
    """wavelockd's text protocol."""

    def states(self):
        return {kv(x)["name"]: kv(x)["state"] for x in self.ok("lasers")}

    def status(self, name="all"):
        return {kv(x)["name"]: kv(x) for x in self.ok("status %s" % name)}

    def get_all(self, name):
        out = {}
        for line in self.ok("get %s all" % name):
            out.update(kv(line))
        return out


class EventLog:
    """A subscribed connection read by a background thread.  Every event is
    kept as (monotonic receive time, kind, {key: value}) with kind 'state',
    'reading', 'dropped' or other."""

    def __init__(self, port, lasers=()):
        self.c = Client(port, timeout=10.0)
        self.events = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.error = None
        self.stopping = False
        early = []
        lines = self.c.cmd("subscribe %s" % " ".join(lasers), early)
        if not lines[-1].startswith("OK"):
            raise LabError("subscribe -> %r" % lines)
        for line in early:
            self._add(line)
        self.c.s.settimeout(0.2)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _add(self, line):
        now = time.monotonic()
        body = line[2:]
        kind = body.split(" ", 1)[0]
        with self.cond:
            self.events.append((now, kind, kv(body)))
            self.cond.notify_all()

    def _run(self):
        while not self.stopping:
            try:
                line = self.c.readline()
            except socket.timeout:
                continue
            except (OSError, EOFError) as e:
                if not self.stopping:
                    self.error = e
                return
            if line.startswith("* "):
                self._add(line)

    def since(self, t0=0.0, kind=None, laser=None):
        with self.lock:
            return [e for e in self.events if e[0] >= t0 and (kind is None or e[1] == kind)
                    and (laser is None or e[2].get("laser") == laser)]

    def states_since(self, laser, t0=0.0):
        """[(time, state)] of the laser's '* state' events since t0."""
        return [(t, d.get("state")) for t, _, d in self.since(t0, "state", laser)]

    def first(self, laser, state, t0, timeout=0.0):
        """Receive time of the laser's first '* state' event into state at or
        after t0, waiting up to timeout seconds; None if none came."""
        def find(events):
            for t, k, d in events:
                if t >= t0 and k == "state" and d.get("laser") == laser \
                        and d.get("state") == state:
                    return t
            return None
        return self.wait_for(find, timeout)

    def wait_for(self, pred, timeout):
        """Wait until pred(events) is true; returns its last value."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self.events)
                left = end - time.monotonic()
                if v or left <= 0:
                    return v
                self.cond.wait(min(left, 0.5))

    def close(self):
        self.stopping = True
        self.t.join(2)
        self.c.close()


class TruthLog:
    """Polls 'truth' on its own control connection every period seconds in a
    background thread; series() gives (monotonic time, value) pairs.

    A sample's time is when the simulator computed it, not when its reply
    arrived here: the simulator's clock (time_s, which runs at speed 1 in the
    labs of these tests) mapped onto this process's monotonic clock by the
    smallest arrival delay seen.  A busy machine that delays a reply then
    does not shift the sample it carries."""

    def __init__(self, sim_port, period=0.05):
        self.c = SimControl(sim_port)
        self.period = period
        self.samples = []       # (arrival time, sim time or None, truth)
        self.offset = None      # min(arrival - sim time)
        self.lock = threading.Lock()
        self.error = None
        self.stopping = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        nxt = time.monotonic()
        while not self.stopping:
            try:
                tr = self.c.truth()
            except Exception as e:      # reported through .error
                self.error = e
                return
            now = time.monotonic()
            ts = next((v["time_s"] for v in tr.values() if "time_s" in v), None)
            with self.lock:
                self.samples.append((now, ts, tr))
                if ts is not None and (self.offset is None or now - ts < self.offset):
                    self.offset = now - ts
            nxt += self.period
            delay = nxt - now
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def series(self, laser, key="error_mhz", t0=0.0, t1=float("inf")):
        """[(time, value)] of one laser between t0 and t1."""
        with self.lock:
            off = self.offset
            out = []
            for arrived, ts, tr in self.samples:
                t = arrived if ts is None or off is None else ts + off
                if t0 <= t <= t1:
                    out.append((t, tr[laser][key]))
            return out

    def error_vs(self, laser, sp_thz, t0=0.0, t1=float("inf")):
        """[(time, true_thz - sp_thz in MHz)]: the true error against a
        setpoint other than the configured one ('truth' error_mhz is against
        the configured setpoint)."""
        return [(t, (f - sp_thz) * 1e6) for t, f in self.series(laser, "true_thz", t0, t1)]

    def close(self):
        self.stopping = True
        self.t.join(5)
        self.c.close()


# ---- the lab ------------------------------------------------------------------

def programs_missing():
    """None if wavelockd and wavelock-sim are built, else why not."""
    for name in ("wavelockd", "wavelock-sim"):
        if not os.access(wltest.prog(name), os.X_OK):
            return "%s is not built in %s" % (name, wltest.BUILDDIR)
    return None


def finish_lab(tap, lab, prefix=""):
    """The end of a lab test: no value written outside an actuator's limits
    (the sim's 'writes'), then both programs stop on SIGTERM with exit 0
    and no sanitizer report.  Two TAP results, named after prefix."""
    wr = lab.sim.writes()
    viol = {k: v for k, v in wr.items() if v["limit_violations"] or v["runtime_violations"]}
    tap.ok(not viol, "%sno value written to any of the %d actuators outside its limits "
           "(%d writes)" % (prefix, len(wr), sum(v["count"] for v in wr.values())), viol)
    lab.close()
    rc_d = lab.daemon.stop(10)
    rc_s = lab.simproc.stop(10)
    logs = log_text(lab.daemon) + log_text(lab.simproc)
    tap.ok(rc_d == 0 and rc_s == 0 and "Sanitizer" not in logs and "runtime error:" not in logs,
           "%sboth programs exit 0 on SIGTERM, no sanitizer report" % prefix,
           "wavelockd %r, wavelock-sim %r\n%s" % (rc_d, rc_s, lab.outputs()))


def log_text(proc):
    """Everything a wltest.Proc wrote so far (also after it was stopped)."""
    try:
        if not proc.log.closed:
            proc.log.flush()
        with open(proc.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e


class Lab:
    """wavelock-sim and wavelockd on a copy of conf (default conf/sim.conf)
    with free ports, a state file in env's directory, and seed.  Attributes:
    cfg (LabConfig), conf (path), port (daemon), sim_port, sim (SimControl),
    d (Daemon), events (EventLog, subscribed to everything from start-up),
    t_start (monotonic time just before wavelockd was started)."""

    def __init__(self, env, seed=1, conf=SIM_CONF, sim_args=(), daemon_args=(),
                 events=True, name="lab"):
        self.env = env
        self.seed = seed
        with open(conf) as f:
            src = f.read()
        # A port found free may be taken by another test before the
        # simulator binds it: then the lab starts again on other ports.
        for attempt in range(3):
            text, self.ports = rewrite_ports(src, env.free_port,
                                             env.path("%s.state" % name))
            self.conf = env.write("%s.seed%d.conf" % (name, seed), text)
            self.cfg = LabConfig(self.conf)
            ctl = self.cfg.root.get("sim", {}).get("control")
            if not ctl:
                raise LabError("%s has no sim.control" % conf)
            self.sim_port = int(ctl.rsplit(":", 1)[1])
            self.simproc = env.start_sim(self.conf, ["--seed", str(seed)] + list(sim_args))
            if not (wait_until(lambda: port_open(self.sim_port) or not self.simproc.alive(), 15,
                               0.05) and self.simproc.alive()):
                out = self.simproc.output()
                if "Address already in use" not in out or attempt == 2:
                    raise LabError("wavelock-sim did not start:\n" + out)
                continue
            self.sim = SimControl(self.sim_port)
            self.t_start = time.monotonic()
            try:
                self.daemon = env.start_daemon(self.conf, list(daemon_args), timeout=15)
                break
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
                self.sim.close()
                self.simproc.stop(10)
        self.port = self.daemon.port
        self.d = Daemon(self.port)
        self.events = EventLog(self.port) if events else None

    @classmethod
    def attach(cls, conf, port, sim_port, events=True):
        """A Lab for a wavelock-sim and wavelockd already running on conf
        (daemon text protocol on port, sim control on sim_port); it starts
        nothing and stops nothing (t_start, simproc and daemon are None)."""
        self = cls.__new__(cls)
        self.env, self.seed, self.ports = None, None, {}
        self.conf = conf
        self.cfg = LabConfig(conf)
        self.sim_port, self.port = sim_port, port
        self.simproc = self.daemon = None
        self.sim = SimControl(sim_port)
        self.t_start = None
        self.d = Daemon(port)
        self.events = EventLog(port) if events else None
        return self

    def alive(self):
        """Both programs run (for an attached lab: both answer)."""
        if self.simproc is None:
            return port_open(self.sim_port) and port_open(self.port)
        return self.simproc.alive() and self.daemon.alive()

    def outputs(self, tail=4000):
        """Logs of both programs (for diagnostics), also after they stopped."""
        if self.simproc is None:
            return "(attached lab: no logs)"
        return ("--- wavelock-sim ---\n%s--- wavelockd ---\n%s"
                % (log_text(self.simproc)[-tail:], log_text(self.daemon)[-tail:]))

    def wait_states(self, state, names=None, timeout=60, poll=0.1):
        """Poll 'lasers' until every laser in names (default all) is in
        state; returns True, or False on timeout."""
        names = list(names or self.cfg.names)

        def there():
            states = self.d.states()
            return all(states.get(n) == state for n in names)
        return bool(wait_until(there, timeout, poll))

    def first_state_times(self, state, t0=None, names=None):
        """{laser: seconds from t0 (default t_start) to its first '* state'
        event into state after t0}; lasers that never got there are absent."""
        t0 = self.t_start if t0 is None else t0
        if t0 is None:
            return {}
        out = {}
        for t, _, d in self.events.since(t0, "state"):
            n = d.get("laser")
            if d.get("state") == state and n not in out and (names is None or n in names):
                out[n] = t - t0
        return out

    def close(self):
        if self.events:
            self.events.close()
        self.d.close()
        self.sim.close()


# ---- statistics -------------------------------------------------------------

def rms(values):
    values = list(values)
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else float("nan")


def step_response(series, t_step, step_mhz, window_mhz):
    """Figures of a setpoint step from the true error series [(t, error_mhz)]
    measured against the NEW setpoint (so it starts near -step_mhz):
    overshoot_pct = the largest excursion beyond the new setpoint in the
    direction of the step, in % of the step; settle_s = time from t_step to
    the first sample after which |error| stays inside window_mhz until the
    end of the series (None if it never settles); samples = count."""
    after = [(t, e) for t, e in series if t >= t_step]
    sign = 1.0 if step_mhz >= 0 else -1.0
    over = max([sign * e for _, e in after] + [0.0])
    settle = None
    for i in range(len(after)):
        if all(abs(e) <= window_mhz for _, e in after[i:]):
            settle = after[i][0] - t_step
            break
    return {"overshoot_pct": 100.0 * over / abs(step_mhz), "settle_s": settle,
            "samples": len(after)}
