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

    def __init__(self, env, name, argv, stdin=None):
        self.name = name
        self.log_path = os.path.join(env.dir, "%s.%d.log" % (name, len(env.procs)))
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  cwd=env.dir)
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
        """A free TCP port on 127.0.0.1 (kept unused until the test binds it)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def start(self, name, argv, stdin=None):
        p = Proc(self, name, argv, stdin)
        self.procs.append(p)
        return p

    def start_daemon(self, config_path, extra=(), wait=True, timeout=10):
        """Start wavelockd in the foreground on config_path; the config should
        listen on 127.0.0.1:0 — the bound port is read from a port file."""
        portfile = self.path("wavelockd.%d.port" % len(self.procs))
        if os.path.exists(portfile):
            os.unlink(portfile)
        argv = [prog("wavelockd"), "-f", "-c", config_path, "--port-file", portfile] + list(extra)
        p = self.start("wavelockd", argv)
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

    def start_sim(self, config_path, extra=()):
        """Start wavelock-sim on config_path and wait for its control port."""
        p = self.start("wavelock-sim", [prog("wavelock-sim"), "-c", config_path] + list(extra))
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
