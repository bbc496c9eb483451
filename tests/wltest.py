"""wltest - shared helpers for wavelock's end-to-end tests.

Tests print TAP (automake's tap-driver reads it).  They bind to 127.0.0.1
only, pick free ports, remember every process they start and stop exactly
those, and remove their temporary directory at the end.

    from wltest import TAP, Env
    tap = TAP()
    with Env() as env:
        port = env.free_port()
        d = env.start_daemon(config_text)
        c = env.connect(d.port)
        tap.ok(c.cmd("ping")[-1] == "OK", "ping answers OK")
    tap.done()
"""

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILDDIR = os.environ.get("WL_BUILDDIR", os.getcwd())
SRCDIR = os.environ.get("WL_SRCDIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def prog(name):
    """Path of a program built in the build tree."""
    return os.path.join(BUILDDIR, name)


def sanitized(name="wavelockd"):
    """Why memory figures mean nothing for this program (a sanitizer keeps
    freed memory in quarantine and pads every block), or None."""
    out = subprocess.run(["ldd", prog(name)], capture_output=True, text=True).stdout
    for lib in ("libasan", "libtsan"):
        if lib in out:
            return "%s is built with a sanitizer (%s): memory not judged" % (name, lib)
    return None


def wrapped(name="wavelockd"):
    """The program is a wrapper script, not the program (tests/soak_valgrind.sh
    runs the daemon under valgrind that way): its speed and memory are the
    wrapper's."""
    with open(prog(name), "rb") as f:
        return f.read(4) != b"\x7fELF"


_ports_given = set()
_port_next = None
_port_lock = None


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def can_bind(port):
    """Whether a TCP port on 127.0.0.1 can be bound now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_open(port, timeout=1.0):
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _claim(port):
    """Lock byte `port` of the build tree's port file for this process's
    life: another test program running at the same time skips the port.
    The kernel drops the lock when the process ends, however it ends."""
    global _port_lock
    try:
        if _port_lock is None:
            _port_lock = os.open(os.path.join(BUILDDIR, "test-ports.lock"),
                                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.lockf(_port_lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True         # no lock file (read-only tree): the bind check only


def pick_port():
    """See Env.free_port."""
    global _port_next
    low = _ephemeral_low()
    if low is not None and low > 12000:
        first, count = low - 10000, 10000 - 1
        if _port_next is None:
            _port_next = int.from_bytes(os.urandom(2), "little") % count
        for _ in range(count):
            port = first + _port_next
            _port_next = (_port_next + 1) % count
            if port not in _ports_given and can_bind(port) and _claim(port):
                _ports_given.add(port)
                return port
    while True:             # no range below the ephemeral one: the kernel's pick
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class TAP:
    """Minimal TAP producer; the plan is printed at the end."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        sys.stdout.reconfigure(line_buffering=True)

    def ok(self, cond, name, diag=None):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, name))
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, name))
            if diag is not None:
                for line in str(diag).splitlines():
                    print("# " + line)
        return bool(cond)

    def eq(self, got, want, name):
        return self.ok(got == want, name, "got:  %r\nwant: %r" % (got, want))

    def skip(self, name, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, why))

    def diag(self, text):
        for line in str(text).splitlines():
            print("# " + line)

    def bail(self, why):
        print("Bail out! %s" % why)
        sys.exit(1)

    def done(self):
        print("1..%d" % self.n)
        sys.exit(1 if self.failed else 0)


class Proc:
    """A process started by a test, with its output in a log file."""

    def __init__(self, env, name, argv, stdin=None, preexec_fn=None, extra_env=None):
        self.name = name
        self.log_path = os.path.join(env.dir, "%s.%d.log" % (name, len(env.procs)))
        self.log = open(self.log_path, "wb")
        penv = None
        if extra_env:
            penv = dict(os.environ)
            penv.update(extra_env)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  cwd=env.dir, preexec_fn=preexec_fn, env=penv)
        self.pid = self.p.pid
        self.port = None

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=10):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5):
        """SIGTERM, then SIGKILL after timeout; returns the exit status."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Client:
    """A text-protocol client over TCP."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.readline()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def readline(self, timeout=None):
        if timeout is not None:
            self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def response(self, events=None):
        """Lines up to and including the final OK/ERR line.  Event lines
        ("* ...") go to the events list if given, else are dropped."""
        lines = []
        while True:
            line = self.readline()
            if line.startswith("* "):
                if events is not None:
                    events.append(line)
                continue
            lines.append(line)
            if line == "OK" or line.startswith("OK ") or line.startswith("ERR "):
                return lines

    def cmd(self, line, events=None):
        self.send(line + "\n")
        return self.response(events)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def kv(line):
    """Parse 'a=1 b=x' into a dict."""
    out = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


def wait_until(pred, timeout, step=0.05):
    """Poll pred() until true or timeout; returns the last value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


class Env:
    """A temporary directory plus every process a test starts."""

    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="wltest.")
        self.procs = []
        self.keep = keep or os.environ.get("WL_KEEP_TMP") == "1"
        self._held = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def free_port(self):
        """A free TCP port on 127.0.0.1 (kept unused until the test binds it).

        Taken below the kernel's ephemeral range: a port from bind(("", 0))
        may be handed to another test's outgoing connection or bind(0)
        before this test binds it (a test that floods the daemon with
        connections sweeps that range).  Below it only another test picking
        the same number could take it: each process starts at a random place,
        never returns a port twice and locks each port it gives in a file
        of the build tree (test-ports.lock), which the others respect."""
        return pick_port()

    def start(self, name, argv, stdin=None, preexec_fn=None, extra_env=None):
        p = Proc(self, name, argv, stdin, preexec_fn, extra_env)
        self.procs.append(p)
        return p

    def start_daemon(self, config_path, extra=(), wait=True, timeout=10, preexec_fn=None,
                     extra_env=None):
        """Start wavelockd in the foreground on config_path; the config should
        listen on 127.0.0.1:0 — the bound port is read from a port file.
        extra_env: variables added to its environment."""
        portfile = self.path("wavelockd.%d.port" % len(self.procs))
        if os.path.exists(portfile):
            os.unlink(portfile)
        argv = [prog("wavelockd"), "-f", "-c", config_path, "--port-file", portfile] + list(extra)
        p = self.start("wavelockd", argv, preexec_fn=preexec_fn, extra_env=extra_env)
        if wait:
            def ready():
                try:
                    with open(portfile) as f:
                        txt = f.read().split()
                    return txt[0] if txt else None
                except OSError:
                    return None
            port = wait_until(lambda: ready() or not p.alive(), timeout)
            if not p.alive() or not port or port is True:
                raise RuntimeError("wavelockd did not start:\n" + p.output())
            p.port = int(port)
        return p

    def start_sim(self, config_path, extra=(), control_port=None, timeout=10):
        """Start wavelock-sim on config_path; with control_port, wait until
        its control port accepts connections."""
        p = self.start("wavelock-sim", [prog("wavelock-sim"), "-c", config_path] + list(extra))
        if control_port:
            def up():
                try:
                    socket.create_connection(("127.0.0.1", control_port), timeout=1).close()
                    return True
                except OSError:
                    return not p.alive()
            wait_until(up, timeout)
            if not p.alive():
                raise RuntimeError("wavelock-sim did not start:\n" + p.output())
        return p

    def connect(self, port, timeout=10.0):
        return Client(port, timeout=timeout)

    def cleanup(self):
        for p in self.procs:
            try:
                p.stop()
            except Exception:
                pass
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- config files for tests ------------------------------------------------

def laser_conf(name, channel, thz, device="ao1", reg=0, fmt="u16", order=None,
               scale=6553.5, offset=0.0, min_v=0.0, max_v=10.0, start_v=5.0,
               current=None, autolock=True, span_thz=0.2, pid=None, sim=None,
               extra=""):
    """One entry of the lasers list.  current: dict with device, reg, fmt,
    scale, min_v, max_v, feedforward (or None).  pid: dict of pid keys.
    sim: dict of sim keys."""
    pid = pid or {"kp": 0.0, "ki": 0.002, "kd": 0.0}
    word = ' word_order = "%s";' % order if order else ""
    cur = ""
    if current:
        c = dict({"reg": reg + (2 if fmt == "f32" else 1), "fmt": "s16", "scale": 3276.7,
                  "min_v": -1.0, "max_v": 1.0, "feedforward": -0.2, "device": device}, **current)
        cword = ' word_order = "%s";' % c["order"] if c.get("order") else ""
        cur = ('    current = { device = "%s"; register = %d; format = "%s";%s scale = %r;'
               ' min_v = %r; max_v = %r; feedforward = %r; };\n'
               % (c["device"], c["reg"], c["fmt"], cword, c["scale"], c["min_v"], c["max_v"],
                  c["feedforward"]))
    simtxt = ""
    if sim:
        simtxt = "    sim = { %s };\n" % " ".join("%s = %r;" % (k, v) for k, v in sim.items())
    return ("  { name = \"%s\"; channel = %d; setpoint = \"%.9f THz\"; autolock = %s;\n"
            "    min_thz = %.9f; max_thz = %.9f; window_mhz = 5.0; capture_mhz = 2000.0;\n"
            "    pid = { %s };\n"
            "    piezo = { device = \"%s\"; register = %d; format = \"%s\";%s scale = %r;"
            " offset = %r; min_v = %r; max_v = %r; start_v = %r; };\n"
            "%s%s%s  }"
            % (name, channel, thz, "true" if autolock else "false",
               thz - span_thz, thz + span_thz,
               " ".join("%s = %r;" % (k, v) for k, v in pid.items()),
               device, reg, fmt, word, scale, offset, min_v, max_v, start_v,
               cur, simtxt, extra))


def lab_conf(lasers, devices, wm_port, listen="127.0.0.1:0", state_file="wavelock.state",
             server_extra="", top_extra="", stale_ms=1000, sim_control=None, seed=1):
    """A whole config.  devices: list of (name, port) on 127.0.0.1."""
    devs = ",\n".join('  { name = "%s"; url = "tcp://127.0.0.1:%d"; unit = 1; timeout_ms = 200; }'
                      % (n, p) for n, p in devices)
    sim = ""
    if sim_control:
        sim = 'sim = { seed = %d; control = "127.0.0.1:%d"; };\n' % (seed, sim_control)
    return ('server = { listen = ["%s"]; %s };\n'
            'state_file = "%s";\n'
            'wavemeter = { backend = "stream"; address = "127.0.0.1:%d"; stale_ms = %d; };\n'
            '%s%s'
            'devices = (\n%s\n);\n'
            'lasers = (\n%s\n);\n'
            % (listen, server_extra, state_file, wm_port, stale_ms, top_extra, sim, devs,
               ",\n".join(lasers)))


# ---- in-process stand-ins for a Modbus module and a wavemeter publisher ----

import struct
import threading


class ModbusRecorder:
    """A minimal Modbus TCP server (functions 03, 04, 06, 16) on 127.0.0.1
    that keeps 256 holding registers (read by 04 too, as input registers) and
    records every write as (time, first_register, [values]), and in arrivals
    as (time the request arrived, first_register, [values]), and every read
    as (time, function, first_register, count).  Function codes in refuse
    are answered with exception 1 (illegal function), as a write-only module
    answers 03.  For daemon tests that need to see exactly what was written.

    hold_reg: a write request to this register waits, once it has arrived
    (held is set), until release is set: a test can do something while a
    write is on the wire, deterministically."""

    def __init__(self, port=0):
        self.regs = [0] * 256
        self.writes = []
        self.arrivals = []
        self.hold_reg = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.reads = []
        self.refuse = set()
        self.lock = threading.Lock()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.silent = False      # accept and read, never answer
        self.delay = 0.0         # seconds to wait before handling a request
        self.stopping = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _recv(self, c, n):
        b = b""
        while len(b) < n:
            chunk = c.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b

    def _serve(self, c):
        try:
            while True:
                hdr = self._recv(c, 7)
                tid, pid, length, unit = struct.unpack(">HHHB", hdr)
                pdu = self._recv(c, length - 1)
                t_arrival = time.monotonic()
                if self.silent:
                    continue
                fc = pdu[0]
                if fc in (6, 16):
                    addr = struct.unpack(">H", pdu[1:3])[0]
                    vals = ([struct.unpack(">H", pdu[3:5])[0]] if fc == 6 else
                            list(struct.unpack(">%dH" % struct.unpack(">H", pdu[3:5])[0],
                                               pdu[6:6 + 2 * struct.unpack(">H", pdu[3:5])[0]])))
                    with self.lock:
                        self.arrivals.append((t_arrival, addr, vals))
                    if self.hold_reg is not None and addr == self.hold_reg:
                        self.held.set()
                        self.release.wait(30)
                if self.delay:
                    time.sleep(self.delay)
                with self.lock:
                    if fc in self.refuse:
                        resp = struct.pack(">BB", fc | 0x80, 1)
                    elif fc in (3, 4):
                        addr, cnt = struct.unpack(">HH", pdu[1:5])
                        self.reads.append((time.monotonic(), fc, addr, cnt))
                        vals = self.regs[addr:addr + cnt]
                        resp = struct.pack(">BB", fc, 2 * cnt) + b"".join(struct.pack(">H", v) for v in vals)
                    elif fc == 6:
                        addr, val = struct.unpack(">HH", pdu[1:5])
                        self.regs[addr] = val
                        self.writes.append((time.monotonic(), addr, [val]))
                        resp = pdu[:5]
                    elif fc == 16:
                        addr, cnt, nb = struct.unpack(">HHB", pdu[1:6])
                        vals = list(struct.unpack(">%dH" % cnt, pdu[6:6 + 2 * cnt]))
                        self.regs[addr:addr + cnt] = vals
                        self.writes.append((time.monotonic(), addr, vals))
                        resp = pdu[:5]
                    else:
                        resp = struct.pack(">BB", fc | 0x80, 1)
                c.sendall(struct.pack(">HHHB", tid, 0, len(resp) + 1, unit) + resp)
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def drop_all(self):
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []

    def close(self):
        self.stopping = True
        self.ls.close()
        self.drop_all()


class StreamPublisher:
    """A wavemeter stream publisher (DESIGN.md section 5) on 127.0.0.1."""

    def __init__(self, port=0):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.clients = []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.clients.append(c)

    def connected(self):
        with self.lock:
            return len(self.clients)

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        with self.lock:
            for c in list(self.clients):
                try:
                    c.sendall(data)
                except OSError:
                    self.clients.remove(c)

    def send(self, channel, value, t_ms=None):
        if t_ms is None:
            t_ms = (time.monotonic() - self.t0) * 1000.0
        self.send_raw("%d %.9f %.1f\n" % (channel, value, t_ms))

    def close(self):
        self.ls.close()
        with self.lock:
            for c in self.clients:
                c.close()
            self.clients = []


class PyPlant:
    """A small closed-loop laser plant for daemon tests: reads the piezo
    registers (u16) from a ModbusRecorder and publishes the resulting
    frequencies on a StreamPublisher every period_s, per laser:
        f = thz + 1e-6 * (offset_mhz + mhz_per_v * (V - start_v) + drift)."""

    def __init__(self, mb, pub, lasers, period_s=0.02, noise_mhz=0.2, seed=1):
        import random
        self.mb, self.pub = mb, pub
        self.lasers = lasers      # dicts: channel, thz, reg, scale, offset, start_v, mhz_per_v, offset_mhz
        self.period_s = period_s
        self.noise = noise_mhz
        self.rng = random.Random(seed)
        self.sent = 0
        self.stopping = False
        self.paused = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def volts(self, l):
        return (self.mb.regs[l["reg"]] - l.get("offset", 0.0)) / l["scale"]

    def true_thz(self, l):
        v = self.volts(l)
        return l["thz"] + 1e-6 * (l.get("offset_mhz", 300.0) + l.get("mhz_per_v", 200.0) *
                                  (v - l.get("start_v", 5.0)) + l.get("drift", 0.0))

    def _run(self):
        while not self.stopping:
            if not self.paused:
                for l in self.lasers:
                    f = self.true_thz(l) + 1e-6 * self.rng.gauss(0.0, self.noise)
                    self.pub.send(l["channel"], f)
                    self.sent += 1
            time.sleep(self.period_s)

    def stop(self):
        self.stopping = True
        self.t.join()


class Pinger:
    """Pings the daemon on its own connection every period_s while active
    (from the start unless started=False); keeps (time sent, round trip)."""

    def __init__(self, port, period_s=0.02, started=True):
        self.c = Client(port)
        self.samples = []
        self.rtts = []
        self.errors = []
        self.period_s = period_s
        self.active = threading.Event()
        if started:
            self.active.set()
        self.stopping = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopping:
            if not self.active.wait(0.1):
                continue
            t0 = time.monotonic()
            try:
                r = self.c.cmd("ping")
                if r != ["OK"]:
                    self.errors.append(r)
            except Exception as e:     # reported by the test
                self.errors.append(repr(e))
                return
            self.samples.append((t0, time.monotonic() - t0))
            self.rtts.append(self.samples[-1][1])
            time.sleep(self.period_s)

    def worst(self, since=0.0):
        """Longest round trip of a ping answered after since (monotonic):
        one sent before and held up by a stall counts too."""
        return max([rtt for t, rtt in self.samples if t + rtt >= since] or [0.0])

    def stop(self):
        self.stopping = True
        self.t.join()
        self.c.close()
