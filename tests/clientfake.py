"""clientfake - a small stand-in for wavelockd that speaks the text protocol.

The client tests use it for what the real daemon cannot be made to do on
demand (never greet, greet with garbage, put events in the middle of a
conversation, send events with unknown keys); it also lets the client and
the scripts be exercised while the real daemon is being written.

    fake = FakeDaemon(lasers=["cool780", "repump"], token="s3cret")
    fake.start()            # listens on 127.0.0.1:<fake.port>
    ...
    fake.stop()

Run alone:  python3 clientfake.py [--port N]   (prints the port)
"""

import socket
import threading
import time


class FakeLaser:
    def __init__(self, name, setpoint):
        self.name = name
        self.state = "off"
        self.setpoint = setpoint
        self.freq = setpoint + 150e-6
        self.piezo = 5.0
        self.lock_at = None

    def step(self, dt):
        # The frequency moves toward the setpoint while regulating.
        if self.state != "off":
            err = self.freq - self.setpoint
            self.freq -= err * min(1.0, dt * 4.0)
            self.piezo -= err * 1e3 * 0.01
            if self.state == "acquiring" and abs(self.freq - self.setpoint) < 5e-6:
                self.state = "locked"
            elif self.state == "locked" and abs(self.freq - self.setpoint) > 20e-6:
                self.state = "acquiring"

    def status(self):
        return ("name=%s state=%s setpoint_thz=%.9f freq_thz=%.9f error_mhz=%.3f piezo_v=%.4f"
                % (self.name, self.state, self.setpoint, self.freq,
                   (self.freq - self.setpoint) * 1e6, self.piezo))


class FakeDaemon:
    """mode: "normal", "silent" (accepts, never greets), "garbage" (bad greeting),
    "noreply" (greets, never answers)."""

    def __init__(self, lasers=("cool780", "repump"), token=None, mode="normal",
                 extra_event_keys="", rate_hz=20.0, never_lock=()):
        self.lasers = {}
        for i, name in enumerate(lasers):
            self.lasers[name] = FakeLaser(name, 384.0 + i)
        self.order = list(lasers)
        self.token = token
        self.mode = mode
        self.extra = extra_event_keys
        self.rate = rate_hz
        self.never_lock = set(never_lock)
        self.lock = threading.Lock()
        self.conns = []
        self.log = []                   # every request line received
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.running = False
        self.threads = []

    # -- life cycle --
    def start(self):
        self.running = True
        for fn in (self._accept_loop, self._tick_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.running = False
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    # -- internals --
    def _accept_loop(self):
        while self.running:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            c = _Conn(self, s)
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=c.run, daemon=True).start()

    def _tick_loop(self):
        last = time.monotonic()
        while self.running:
            time.sleep(1.0 / self.rate)
            now = time.monotonic()
            with self.lock:
                for l in self.lasers.values():
                    if l.name not in self.never_lock:
                        l.step(now - last)
                    if l.state != "off" and l.name in self.never_lock:
                        l.state = "acquiring"
                events = []
                for name in self.order:
                    l = self.lasers[name]
                    events.append((name, "reading laser=%s t=%.3f freq_thz=%.9f error_mhz=%.3f piezo_v=%.4f %sstate=%s"
                                   % (name, time.time(), l.freq, (l.freq - l.setpoint) * 1e6,
                                      l.piezo, self.extra + " " if self.extra else "", l.state)))
                conns = list(self.conns)
            last = now
            for c in conns:
                for name, ev in events:
                    c.event(name, ev)

    def set_state(self, name, state, old):
        ev = "state laser=%s state=%s from=%s" % (name, state, old)
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.event(name, ev)


class _Conn:
    def __init__(self, fake, s):
        self.fake = fake
        self.s = s
        self.wlock = threading.Lock()
        self.sub = None                 # None, or a set of laser names (empty = all)
        self.authed = fake.token is None
        self.closed = False

    def send(self, text):
        with self.wlock:
            if self.closed:
                return
            try:
                self.s.sendall(text.encode())
            except OSError:
                self.closed = True

    def event(self, name, ev):
        if self.sub is not None and (not self.sub or name in self.sub):
            self.send("* " + ev + "\n")

    def close(self):
        with self.wlock:
            self.closed = True
            try:
                self.s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.s.close()

    def run(self):
        f = self.fake
        if f.mode == "silent":
            while f.running and not self.closed:
                time.sleep(0.05)
            return
        self.send("NOT A WAVELOCK\n" if f.mode == "garbage" else "* wavelock-fake 0.1 protocol 1 ready\n")
        buf = b""
        while not self.closed:
            try:
                data = self.s.recv(4096)
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode(errors="replace").strip()
                if not line:
                    continue
                with f.lock:
                    f.log.append(line)
                if f.mode == "noreply":
                    continue
                out = self.handle(line)
                self.send("".join(x + "\n" for x in out))
                if out and out[-1] == "OK bye":
                    self.close()
        with f.lock:
            if self in f.conns:
                f.conns.remove(self)

    def handle(self, line):
        f = self.fake
        w = line.split()
        cmd, args = w[0].lower(), w[1:]
        if cmd == "auth":
            if f.token is not None and args == [f.token]:
                self.authed = True
                return ["OK role=control"]
            return ["ERR 401 bad token"]
        if cmd == "ping":
            return ["OK"]
        if not self.authed:
            return ["ERR 401 authentication required"]
        with f.lock:
            return self._handle_locked(cmd, args)

    def _laser(self, name):
        return self.fake.lasers.get(name)

    def _handle_locked(self, cmd, args):
        f = self.fake
        if cmd == "quit":
            return ["OK bye"]
        if cmd == "version":
            return ["version=0.1 protocol=1"]
        if cmd == "help":
            return ["help ping version lasers status lock unlock setpoint subscribe unsubscribe quit", "OK"]
        if cmd == "lasers":
            return ["name=%s state=%s" % (n, f.lasers[n].state) for n in f.order] + ["OK"]
        if cmd == "status":
            names = f.order if not args or args == ["all"] else args
            out = []
            for n in names:
                l = self._laser(n)
                if not l:
                    return ["ERR 404 unknown laser: %s" % n]
                out.append(l.status())
            return out + ["OK"]
        if cmd in ("lock", "unlock"):
            if len(args) != 1:
                return ["ERR 400 usage: %s <laser|all>" % cmd]
            names = f.order if args[0] == "all" else args
            for n in names:
                if not self._laser(n):
                    return ["ERR 404 unknown laser: %s" % n]
            for n in names:
                l = f.lasers[n]
                old = l.state
                l.state = "acquiring" if cmd == "lock" else "off"
                if old != l.state:
                    threading.Thread(target=f.set_state, args=(n, l.state, old), daemon=True).start()
            return ["OK"]
        if cmd == "setpoint":
            if not args:
                return ["ERR 400 usage: setpoint <laser> [<value> [unit]]"]
            l = self._laser(args[0])
            if not l:
                return ["ERR 404 unknown laser: %s" % args[0]]
            if len(args) == 1:
                return ["name=%s setpoint_thz=%.9f" % (l.name, l.setpoint), "OK"]
            v = " ".join(args[1:]).replace(" ", "")
            scale = 1.0
            for unit, s in (("THz", 1.0), ("GHz", 1e-3)):
                if v.endswith(unit):
                    v, scale = v[:-len(unit)], s
            try:
                val = float(v) * scale
            except ValueError:
                return ["ERR 422 bad value"]
            if abs(val - l.setpoint) > 1.0:
                return ["ERR 422 setpoint out of range"]
            l.setpoint = val
            return ["OK"]
        if cmd == "subscribe":
            for n in args:
                if not self._laser(n):
                    return ["ERR 404 unknown laser: %s" % n]
            self.sub = set(args)
            return ["OK"]
        if cmd == "unsubscribe":
            self.sub = None
            return ["OK"]
        if cmd == "noisy":
            # An event in the middle of the conversation, then a reply.
            return ["* state laser=cool780 state=off from=off", "a=1 b=2", "OK done"]
        return ["ERR 404 unknown command: %s" % cmd]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--token")
    ap.add_argument("--mode", default="normal")
    a = ap.parse_args()
    fd = FakeDaemon(token=a.token, mode=a.mode).start()
    print(fd.port, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        fd.stop()
