"""wavelock - a client for wavelockd, the laser frequency lock daemon.

Standard library only, for lab scripts and experiment control (ARTIQ and
the like).  It speaks wavelockd's line-based text protocol (TCP, port 7470
by default), the same one `nc 127.0.0.1 7470` shows:

    import wavelock

    with wavelock.Client("127.0.0.1", 7470, token=None, name="alice") as wl:
        wl.lock("all")
        wl.wait_locked(timeout=60)
        print(wl.status("cool780")["error_mhz"])
        wl.setpoint("cool780", 780.2413, "nm")
        for ev in wl.subscribe("cool780"):        # an endless iterator
            print(ev.kind, ev["freq_thz"])
            break

Every refusal of the daemon raises wavelock.Error with the protocol's code
(401 authentication required, 403 not permitted for the role, 404 unknown
laser or command, 409 not allowed now, 422 value out of range, 503
hardware unavailable, ...).
"""

import socket
import threading
import time

__all__ = ["Client", "Error", "Event", "parse_line"]
__version__ = "0.1"

DEFAULT_PORT = 7470


class Error(Exception):
    """A request the daemon refused: .code (int, e.g. 422) and .message."""

    def __init__(self, code, message):
        super().__init__("%d %s" % (code, message))
        self.code = code
        self.message = message


def _value(text):
    """A protocol value as Python: numbers as float (int for whole numbers
    without a point), "none" as None, anything else as the string."""
    if text == "none":
        return None
    try:
        if text.lstrip("+-").isdigit():
            return int(text)
        return float(text)
    except ValueError:
        return text


def parse_line(line):
    """A data or event line "key=value key=value" as a dict (values parsed
    as numbers where they are numbers; the first word of an event line, such
    as "reading", is not included)."""
    out = {}
    for word in line.split():
        k, sep, v = word.partition("=")
        if sep:
            out[k] = _value(v)
    return out


class Event(dict):
    """An asynchronous event: .kind ("reading", "state", "warning",
    "relock", ...) plus its fields as a dict (laser, t, freq_thz, ...)."""

    def __init__(self, kind, fields):
        super().__init__(fields)
        self.kind = kind

    def __repr__(self):
        return "Event(%r, %s)" % (self.kind, dict.__repr__(self))


class _Conn:
    """One text-protocol connection: requests and their answers; event
    lines that arrive in between are queued."""

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.events = []
        greeting = self.readline()
        if not greeting.startswith("* "):
            raise Error(500, "not a wavelockd: %r" % greeting[:80])
        self.greeting = greeting[2:]

    def readline(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("wavelockd closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def request(self, line):
        if "\n" in line or "\r" in line:
            raise ValueError("a request is one line")
        self.sock.sendall(line.encode() + b"\n")
        data = []
        while True:
            got = self.readline()
            if got.startswith("* "):
                self.events.append(got[2:])
            elif got == "OK" or got.startswith("OK "):
                return data, got[3:]
            elif got.startswith("ERR "):
                parts = got.split(" ", 2)
                code = int(parts[1]) if parts[1].isdigit() else 500
                raise Error(code, parts[2] if len(parts) > 2 else "")
            else:
                data.append(got)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """A connection to wavelockd.

    host, port: where the text protocol listens (default 127.0.0.1:7470).
    token: sent with `auth` when given (needed when the daemon has tokens:
        a monitor token may read, a control token may change).
    name: who you are, for claims (`iam <name>`; ignored by a daemon
        without claims).
    timeout: seconds to wait for an answer.
    """

    def __init__(self, host="127.0.0.1", port=DEFAULT_PORT, token=None, name=None,
                 timeout=10.0):
        self.host, self.port, self.token, self.name = host, port, token, name
        self.timeout = timeout
        self._lock = threading.Lock()
        self._c = self._open()

    def _open(self):
        c = _Conn(self.host, self.port, self.timeout)
        if self.token:
            c.request("auth " + self.token)
        if self.name:
            try:
                c.request("iam " + self.name)
            except Error as e:
                if e.code != 404:      # a daemon without claims has no iam
                    raise
        return c

    # ---- plumbing ----

    def command(self, line):
        """Send one request line; returns its data lines (a list of str).
        Raises Error for ERR answers."""
        with self._lock:
            data, _ = self._c.request(line)
        return data

    def close(self):
        """Close the connection."""
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- reading ----

    def version(self):
        """{"wavelock": ..., "protocol": ...} of the daemon."""
        return parse_line(self.command("version")[0])

    def lasers(self):
        """{name: state} for every laser."""
        return {d["name"]: d["state"] for d in map(parse_line, self.command("lasers"))}

    def status(self, laser=None):
        """The status of one laser as a dict (name, state, setpoint_thz,
        freq_thz, error_mhz, piezo_v, current_v, ...), or with laser None a
        dict {name: status} of all of them.  freq_thz and error_mhz are None
        while there is no valid reading."""
        rows = [parse_line(x) for x in self.command("status" + (" " + laser if laser else ""))]
        if laser:
            return rows[0]
        return {r["name"]: r for r in rows}

    # ---- changing ----

    def lock(self, laser="all"):
        """Engage regulation of a laser (or "all"), bumpless."""
        self.command("lock " + laser)

    def unlock(self, laser="all"):
        """Disengage (the outputs hold their last values)."""
        self.command("unlock " + laser)

    def setpoint(self, laser, value=None, unit="THz"):
        """Read (value None) or change a laser's setpoint; returns the
        setpoint in force, THz.  unit: THz, GHz, MHz, nm (vacuum) or cm-1;
        a string value with a sign ("+50" with unit "MHz") is relative to
        the present setpoint.  Out of the laser's range: Error 422."""
        if value is None:
            return parse_line(self.command("setpoint " + laser)[0])["setpoint_thz"]
        v = value if isinstance(value, str) else repr(float(value))
        self.command("setpoint %s %s %s" % (laser, v, unit))
        return self.setpoint(laser)

    def ramp(self, laser, value, rate_mhz_per_s, unit="THz"):
        """Move the setpoint to value at rate_mhz_per_s."""
        v = value if isinstance(value, str) else repr(float(value))
        self.command("ramp %s %s %s %r" % (laser, v, unit, float(rate_mhz_per_s)))

    def claim(self, laser, seconds=None, steal=False):
        """Reserve a laser for this client's name (DESIGN.md section 8)."""
        extra = " steal" if steal else (" %d" % seconds if seconds else "")
        self.command("claim " + laser + extra)

    def release(self, laser):
        """End a claim."""
        self.command("release " + laser)

    def hold(self, laser, seconds=None):
        """Freeze a laser (output held) until resume() or seconds."""
        self.command("hold " + laser + (" %r" % float(seconds) if seconds else ""))

    def resume(self, laser):
        """End a hold."""
        self.command("resume " + laser)

    def scan(self, laser, shape="triangle", amplitude_mhz=None, period_s=None, cycles=None):
        """Scan the setpoint around its present value (shape: triangle,
        sawtooth, sine or square), or stop a scan with shape "stop"."""
        if shape == "stop":
            self.command("scan %s stop" % laser)
            return
        line = "scan %s %s %r %r" % (laser, shape, float(amplitude_mhz), float(period_s))
        if cycles:
            line += " %d" % cycles
        self.command(line)

    # ---- waiting and watching ----

    def wait_locked(self, lasers="all", timeout=60.0, poll=0.2):
        """Wait until every laser named (a name, a list, or "all") is
        locked; returns the seconds waited, raises TimeoutError (naming the
        lasers not locked) after timeout."""
        names = None if lasers == "all" else ([lasers] if isinstance(lasers, str) else lasers)
        t0 = time.monotonic()
        while True:
            states = self.lasers()
            want = names if names is not None else list(states)
            for n in want:
                if n not in states:
                    raise Error(404, "unknown laser '%s'" % n)
            bad = [n for n in want if states[n] != "locked"]
            if not bad:
                return time.monotonic() - t0
            if time.monotonic() - t0 >= timeout:
                raise TimeoutError("not locked after %.0f s: %s" % (
                    timeout, ", ".join("%s (%s)" % (n, states[n]) for n in bad)))
            time.sleep(poll)

    def subscribe(self, *lasers, timeout=None):
        """An iterator of Event for readings and state changes of the lasers
        named (all without names), on a connection of its own (this
        client's commands keep working meanwhile).  With timeout, stops
        after that many seconds without an event.  Close it with .close()
        or by leaving the for loop and dropping it."""
        return _Subscription(self, lasers, timeout)


class _Subscription:
    def __init__(self, client, lasers, timeout):
        self._c = client._open()
        self._timeout = timeout
        self._c.request("subscribe" + "".join(" " + n for n in lasers))

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self._c.events:
                line = self._c.events.pop(0)
            else:
                try:
                    line = self._c.readline(self._timeout)
                except (socket.timeout, ConnectionError, OSError):
                    self.close()
                    raise StopIteration
                if not line.startswith("* "):
                    continue
                line = line[2:]
            kind = line.split(" ", 1)[0]
            return Event(kind, parse_line(line))

    def close(self):
        """End the subscription (closes its connection)."""
        self._c.close()

    def __del__(self):
        self.close()
