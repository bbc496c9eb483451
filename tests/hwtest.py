"""hwtest - helpers for tests that need wavelock's hardware test doubles.

Each helper starts its process through a wltest.Env, so Env.cleanup() stops
it by PID like every other process of the test.

    from wltest import TAP, Env
    from hwtest import FaultServer, StreamPub, PymodbusServer, mbtool, mbpoll_read

    with Env() as env:
        fs = FaultServer(env, verbose=True)     # tests/fault_server on a free port
        fs.cmd("delay ms=2000 writes")           # see tests/fault_server.c
        fs.stats()["fc16"]
        fs.writes                                # [(fc, addr, [regs...]), ...] with verbose
        pub = StreamPub(env)                     # tests/stream_pub.py on a free port
        pub.cmd("reading 1 384.230484468 1000")
        pm = PymodbusServer(env)                 # python3-pymodbus, holding registers 0..199
        pm.writes()                              # [(fc, addr, n), ...] seen by its datastore
        fake_wlmdata_path()                      # tests/.libs/fake_wlmdata.so
"""

import os
import queue
import re
import socket
import subprocess
import threading

from wltest import BUILDDIR, SRCDIR, kv, prog, wait_until

PYTHON3 = "/usr/bin/python3"


def fake_wlmdata_path(nofreq=False, plain=False):
    """Path of the libwlmData.so double (or its variant without GetFrequencyNum);
    plain: built without sanitizers, for a process that is not instrumented."""
    name = "fake_wlmdata%s%s.so" % ("_nofreq" if nofreq else "", "_plain" if plain else "")
    return os.path.join(BUILDDIR, "tests", ".libs", name)


class _PipeProc:
    """A child with a command pipe on stdin; stdout is read by a thread:
    lines starting with "ok"/"err" are answers, the rest go to on_line()."""

    def __init__(self, env, name, argv):
        self.name = name
        self.log_path = os.path.join(env.dir, "%s.%d.log" % (name, len(env.procs)))
        self._log = open(self.log_path, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._log, cwd=env.dir, bufsize=0)
        self.pid = self.p.pid
        self.port = None
        self._answers = queue.Queue()
        self._lines = []
        self._lock = threading.Lock()
        self._first = queue.Queue()
        env.procs.append(self)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        first = True
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if first:
                self._first.put(line)
                first = False
                continue
            if line.startswith("ok") or line.startswith("err"):
                self._answers.put(line)
            else:
                with self._lock:
                    self._lines.append(line)
                self.on_line(line)
        if first:
            self._first.put("")

    def on_line(self, line):
        pass

    def _wait_listening(self, timeout=20):
        try:
            line = self._first.get(timeout=timeout)
        except queue.Empty:
            line = ""
        m = re.match(r"listening (?:127\.0\.0\.1:(\d+)|rtu:)", line)
        if not m:
            raise RuntimeError("%s did not start: %r" % (self.name, line))
        self.port = int(m.group(1)) if m.group(1) else None

    def cmd(self, line, timeout=20):
        """Send one command; returns the answer line ("ok ..."), raises on "err"."""
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        try:
            ans = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("%s: no answer to %r" % (self.name, line))
        if not ans.startswith("ok"):
            raise RuntimeError("%s: %r -> %r" % (self.name, line, ans))
        return ans

    def alive(self):
        return self.p.poll() is None

    def output(self):
        with self._lock:
            return "\n".join(self._lines)

    def stop(self, timeout=5):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except Exception:
                pass
        self._log.close()
        return self.p.returncode


class FaultServer(_PipeProc):
    """tests/fault_server: a Modbus TCP server that injects faults on command.
    Commands (fault_server.c): normal | exception [code=4] [count=N] [writes] |
    delay [ms=2000] [count=N] [writes] | silent [...] | drop [...] | down | up |
    stats | reset | regs ADDR [N] | set ADDR V... | quit."""

    def __init__(self, env, port=0, nregs=1000, verbose=False, rtu=None, units=(1,)):
        """TCP on 127.0.0.1:port, or with rtu=PATH Modbus RTU on that serial
        device (e.g. one end of a socat pty pair) serving the given units."""
        if rtu:
            argv = [prog("tests/fault_server"), "-R", rtu, "-U",
                    ",".join(str(u) for u in units), "-r", str(nregs)]
        else:
            argv = [prog("tests/fault_server"), "-p", str(port), "-r", str(nregs)]
        if verbose:
            argv.append("-v")
        self.writes = []
        super().__init__(env, "fault_server", argv)
        self._wait_listening()

    def on_line(self, line):
        m = re.match(r"W fc=(\d+)(?: unit=\d+)? addr=(\d+) regs=([\d,]*)", line)
        if m:
            regs = [int(x) for x in m.group(3).split(",") if x]
            self.writes.append((int(m.group(1)), int(m.group(2)), regs))

    def stats(self):
        ans = self.cmd("stats")
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", ans)}

    def regs(self, addr, n=1, unit=None):
        ans = self.cmd("regs %d %d%s" % (addr, n, " unit=%d" % unit if unit else ""))
        return [int(x) for x in ans.split()[3:]]


class StreamPub(_PipeProc):
    """tests/stream_pub.py: a wavemeter stream publisher double (see its doc)."""

    def __init__(self, env, port=0):
        argv = [PYTHON3, os.path.join(SRCDIR, "tests", "stream_pub.py"), "--port", str(port)]
        super().__init__(env, "stream_pub", argv)
        self._wait_listening()


PYMODBUS_SERVER = r"""
import sys
from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusSlaveContext,
                                ModbusServerContext)
from pymodbus.server import StartTcpServer

class RecordingContext(ModbusSlaveContext):
    def setValues(self, fc_as_hex, address, values):
        print("W fc=%d addr=%d n=%d" % (fc_as_hex, address, len(values)), flush=True)
        super().setValues(fc_as_hex, address, values)

store = RecordingContext(hr=ModbusSequentialDataBlock(0, [0] * 200), zero_mode=True)
context = ModbusServerContext(slaves=store, single=True)
StartTcpServer(context=context, address=("127.0.0.1", int(sys.argv[1])))
"""


class PymodbusServer:
    """python3-pymodbus serving holding registers 0..199 (zero_mode) on a
    free port of 127.0.0.1; every datastore write is printed to its log."""

    def __init__(self, env, timeout=30):
        self.port = env.free_port()
        self.proc = env.start("pymodbus", [PYTHON3, "-c", PYMODBUS_SERVER, str(self.port)])

        def ready():
            if not self.proc.alive():
                return True
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(ready, timeout, step=0.1)
        if not self.proc.alive():
            raise RuntimeError("pymodbus server died:\n" + self.proc.output())

    def writes(self):
        """[(function code, address, count)] in order."""
        return [(int(a), int(b), int(c)) for a, b, c in
                re.findall(r"W fc=(\d+) addr=(\d+) n=(\d+)", self.proc.output())]


def mbtool(args, timeout=30):
    """Run tests/mbtool; returns (exit status, stdout, stderr)."""
    r = subprocess.run([prog("tests/mbtool")] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def mbpoll_read(port, ref, count, dtype="4", extra=(), timeout=30):
    """Read with mbpoll; returns {reference: text value} ("[10]: \t1049")."""
    argv = ["mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-t", dtype, "-0",
            "-r", str(ref), "-c", str(count), "-1"] + list(extra) + ["127.0.0.1"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    vals = {int(a): b for a, b in re.findall(r"^\[(\d+)\]:\s+(\S+)", out, re.M)}
    return vals, out


def status_all(c):
    """{laser name: its status line as a dict}."""
    return {kv(x)["name"]: kv(x) for x in c.cmd("status")[:-1]}


def wavemeter(c):
    """(backend status line as a dict, {channel: line dict})."""
    lines = c.cmd("wavemeter")[:-1]
    head = kv(lines[0]) if lines and lines[0].startswith("backend=") else {}
    chans = {int(kv(x)["channel"]): kv(x) for x in lines if x.startswith("channel=")}
    return head, chans
