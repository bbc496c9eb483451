#!/usr/bin/env python3
"""The hardware test doubles do what their documentation promises, seen
from plain sockets: tests/fault_server (every fault command, counters, write
log, down/up on the same port) and tests/stream_pub.py (readings, long lines,
drop, down/up).  Other tests -- the daemon's too -- rely on these."""

import socket
import struct
import time

from wltest import TAP, Env
from hwtest import FaultServer, StreamPub

tap = TAP()


class RawModbus:
    """A minimal Modbus TCP client, independent of libmodbus."""

    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.tid = 0

    def request(self, pdu, timeout=5.0):
        """Send a PDU; returns the response PDU, None on timeout, b"" on close."""
        self.tid += 1
        self.s.sendall(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, 1) + pdu)
        self.s.settimeout(timeout)
        try:
            head = self._recv(7)
            if len(head) < 7:
                return b""
            tid, _, length, _ = struct.unpack(">HHHB", head)
            return self._recv(length - 1)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return b""

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def write1(self, addr, value, **kw):
        return self.request(struct.pack(">BHH", 6, addr, value), **kw)

    def write_n(self, addr, values, **kw):
        return self.request(struct.pack(">BHHB", 16, addr, len(values), 2 * len(values))
                            + b"".join(struct.pack(">H", v) for v in values), **kw)

    def read(self, addr, n, **kw):
        return self.request(struct.pack(">BHH", 3, addr, n), **kw)

    def close(self):
        self.s.close()


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


with Env() as env:
    # ---- fault_server ----
    fs = FaultServer(env, verbose=True)
    c = RawModbus(fs.port)
    tap.eq(c.write1(3, 4660), struct.pack(">BHH", 6, 3, 4660), "normal fc06 is echoed")
    tap.eq(c.write_n(10, [1, 2, 3]), struct.pack(">BHH", 16, 10, 3), "normal fc16 is answered")
    tap.eq(c.read(10, 3), struct.pack(">BBHHH", 3, 6, 1, 2, 3), "fc03 reads the values back")
    tap.eq(fs.regs(10, 3), [1, 2, 3], "'regs' shows them")
    fs.cmd("set 20 7 8")
    tap.eq(c.read(20, 2), struct.pack(">BBHH", 3, 4, 7, 8), "'set' changes registers")
    time.sleep(0.2)
    tap.eq(fs.writes, [(6, 3, [4660]), (16, 10, [1, 2, 3])], "-v logs every applied write")

    fs.cmd("exception code=3")
    tap.eq(c.read(0, 1), bytes([0x83, 3]), "exception: every request gets the exception")
    fs.cmd("exception count=1 writes")
    tap.eq(c.read(0, 1)[:1], b"\x03", "exception writes: reads are answered")
    tap.eq(c.write1(0, 1), bytes([0x86, 4]), "exception writes: a write gets code 4 (default)")
    tap.eq(c.write1(0, 2)[:1], b"\x06", "count=1: the next write is normal again")

    fs.cmd("delay ms=600 count=1")
    t0 = time.monotonic()
    r = c.write1(1, 5)
    dt = time.monotonic() - t0
    tap.ok(r == struct.pack(">BHH", 6, 1, 5) and dt >= 0.5, "delay answers late (%.2f s)" % dt)
    other = RawModbus(fs.port)
    fs.cmd("delay ms=1500 count=1")
    c.s.sendall(struct.pack(">HHHBBHH", 99, 0, 6, 1, 6, 2, 6))       # delayed request
    t0 = time.monotonic()
    r = other.read(2, 1, timeout=5)
    tap.ok(r is not None and time.monotonic() - t0 < 1.0,
           "while one reply is delayed, other clients are served")
    c.s.settimeout(5)
    tap.eq(len(c._recv(12)), 12, "the delayed reply still arrives")
    other.close()

    fs.cmd("silent count=1")
    tap.eq(c.write1(0, 3, timeout=0.5), None, "silent: no answer")
    c.close()
    c = RawModbus(fs.port)
    tap.eq(c.write1(0, 4)[:1], b"\x06", "after silent count=1, answers again")

    fs.cmd("drop count=1")
    tap.eq(c.write1(0, 5), b"", "drop: the connection is closed instead of an answer")
    c.close()
    c = RawModbus(fs.port)
    tap.eq(c.write1(0, 6)[:1], b"\x06", "after drop count=1, new connections work")

    st = fs.stats()
    tap.ok(st["fc06"] >= 8 and st["fc16"] == 1 and st["exceptions"] == 2 and
           st["delayed"] == 2 and st["silent"] == 1 and st["dropped"] == 1,
           "stats count function codes and faults", st)
    fs.cmd("reset")
    tap.eq(fs.stats()["requests"], 0, "reset zeroes the counters")

    fs.cmd("down")
    tap.eq(c.write1(0, 7), b"", "down closes existing connections")
    tap.ok(refused(fs.port), "down: new connections are refused")
    fs.cmd("up")
    c = RawModbus(fs.port)
    tap.eq(c.write1(0, 8)[:1], b"\x06", "up: listening again on the same port")
    c.close()
    try:
        fs.cmd("bogus")
        tap.ok(False, "unknown commands are answered with err")
    except RuntimeError as e:
        tap.ok("err unknown command" in str(e), "unknown commands are answered with err")

    # ---- stream_pub.py ----
    pub = StreamPub(env)
    s = socket.create_connection(("127.0.0.1", pub.port), timeout=5)
    f = s.makefile("rb")
    pub.cmd("wait-clients 1 5")
    pub.cmd("reading 3 384.230484468 1234")
    tap.eq(f.readline(), b"3 384.230484468 1234\n", "reading is sent as given")
    pub.cmd("send 1 -3 5")
    tap.eq(f.readline(), b"1 -3 5\n", "send sends raw text")
    pub.cmd("sendraw 410d0a")
    tap.eq(f.readline(), b"A\r\n", "sendraw sends bytes")
    pub.cmd("long 300")
    tap.eq(f.readline(), b"x" * 300 + b"\n", "long sends an over-long line")
    pub.cmd("longchunks 50 5")
    tap.eq(f.readline(), b"y" * 50 + b"\n", "longchunks sends it in pieces")
    pub.cmd("periodic 2 400.5 100")
    line = f.readline()
    pub.cmd("periodic off")
    tap.ok(line.startswith(b"2 400.500000000 "), "periodic sends readings", line)
    tap.eq(pub.cmd("clients"), "ok clients 1", "clients counts connections")
    pub.cmd("drop")
    s.settimeout(5)
    eof = False
    try:
        while True:
            if not s.recv(65536):
                eof = True
                break
    except OSError:
        pass
    tap.ok(eof, "drop closes the connection")
    s.close()
    pub.cmd("down")
    tap.ok(refused(pub.port), "down: connections refused")
    pub.cmd("up")
    s = socket.create_connection(("127.0.0.1", pub.port), timeout=5)
    pub.cmd("wait-clients 1 5")
    pub.cmd("reading 1 384.1 1")
    tap.eq(s.makefile("rb").readline(), b"1 384.1 1\n", "up: same port, readings flow again")
    s.close()

tap.done()
