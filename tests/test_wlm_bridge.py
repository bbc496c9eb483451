#!/usr/bin/env python3
"""scripts/wavelock-wlm-bridge end to end, on the libwlmData.so double
(tests/fake_wlmdata.c).

1. A closed loop: the library double -> the bridge -> two wavelockd (stream
   backend) connected at once -> their python3-pymodbus actuators -> a plant
   that reads the piezo registers back over Modbus and sets the double's
   wavelengths.  Both lasers lock (the plant's frequency inside the window,
   the piezo where the plant needs it).  On the same bridge: the line format
   and nm -> THz for channels 1..8 (every callback mode number), error codes
   passed on as they came, the fall-back to polling when the callback goes
   silent and back, a restarted wavemeter (callback forgotten, clock back to
   0: re-installed, time stamps keep rising), a client that stops reading is
   dropped while the others go on, clients that disconnect and come back, and
   SIGTERM (callback removed, exit 0), then a new bridge the daemons
   reconnect to.
2. --mode poll, --mode callback, a refused callback (auto polls from the
   start), --channels, --allow, --check, and the start-up failures.
"""

import os
import random
import re
import signal
import socket
import struct
import threading
import time

from wltest import TAP, Env, SRCDIR, lab_conf, laser_conf, wait_until
from hwtest import PYTHON3, PymodbusServer, fake_wlmdata_path, status_all, wavemeter

tap = TAP()
BRIDGE = os.path.join(SRCDIR, "scripts", "wavelock-wlm-bridge")
C_NM_THZ = 299792.458
LINE = re.compile(r"^(\d+) (-?\d+(?:\.\d+)?) (\d+)$")
ERROR_CODES = [0, -1, -2, -3, -4, -5, -6, -7, -8, -10, -13, -14, -15, -26]


# ---- helpers ----------------------------------------------------------------------

class Bridge:
    """The bridge as a process of the test (stopped by PID at cleanup)."""
    n = 0

    def __init__(self, env, args, settings, port=0, lib=None):
        Bridge.n += 1
        self.portfile = env.path("bridge.%d.port" % Bridge.n)
        argv = [PYTHON3, BRIDGE, "--library", lib or fake_wlmdata_path(plain=True),
                "--listen", "127.0.0.1:%d" % port, "--port-file", self.portfile] + list(args)
        os.environ["FAKE_WLM_SETTINGS"] = settings
        self.p = env.start("bridge", argv)

        def ready():
            try:
                with open(self.portfile) as f:
                    return int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                return None if self.p.alive() else -1
        self.port = wait_until(ready, 15, 0.05)
        if not self.port or self.port < 0:
            raise RuntimeError("the bridge did not start:\n" + self.p.output())

    def log(self):
        with open(self.p.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout, start=0):
        return wait_until(lambda: text in self.log()[start:], timeout, 0.05)


class Reader:
    """A raw client of the bridge; a thread collects (arrival, ch, value, t_ms)."""

    def __init__(self, port, rcvbuf=None, read=True):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.connect(("127.0.0.1", port))
        self.lines = []
        self.bad = []
        self.eof = False
        self.lock = threading.Lock()
        if read:
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        buf = b""
        while True:
            try:
                chunk = self.s.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            now = time.monotonic()
            buf += chunk
            *done, buf = buf.split(b"\n")
            with self.lock:
                for raw in done:
                    text = raw.decode("ascii", "replace")
                    m = LINE.match(text)
                    if m:
                        self.lines.append((now, int(m.group(1)), m.group(2), int(m.group(3))))
                    else:
                        self.bad.append(text)

    def since(self, t, ch=None):
        with self.lock:
            return [x for x in self.lines if x[0] >= t and (ch is None or x[1] == ch)]

    def wait(self, pred, timeout):
        return wait_until(lambda: pred(self), timeout, 0.02)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class Control:
    """The double's control file, replaced atomically; the plant's words plus
    the test's (errors, callbacks=off, restart=...)."""

    def __init__(self, path):
        self.path, self.seq, self.extra = path, 0, ""
        self.lock = threading.Lock()

    def write(self, words):
        with self.lock:
            self.seq += 1
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write("seq=%d %s %s\n" % (self.seq, words, self.extra))
            os.rename(tmp, self.path)

    def set(self, extra):
        self.extra = extra


def read_register(sock, reg, tid):
    """FC03 of one holding register over Modbus TCP, unit 1."""
    sock.sendall(struct.pack(">HHHBBHH", tid & 0xFFFF, 0, 6, 1, 3, reg, 1))
    buf = b""
    while len(buf) < 11:
        chunk = sock.recv(11 - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return struct.unpack(">H", buf[9:11])[0]


class Plant:
    """Two lasers whose frequency follows their piezo: every 25 ms it reads
    each piezo register from the laser's pymodbus server and sets the
    double's wavelength, f = thz + 1e-6 * (offset_mhz + mhz_per_v * (V - 5) + noise)."""

    def __init__(self, ctl, lasers, noise_mhz=0.3):
        self.ctl, self.lasers, self.noise = ctl, lasers, noise_mhz
        self.rng = random.Random(19)
        self.stopping = False
        self.errors = 0
        self.socks = {}
        self.tid = 0
        self.volts = {l["ch"]: 0.0 for l in lasers}
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def true_thz(self, l):
        return l["thz"] + 1e-6 * (l["offset_mhz"] + l["mhz_per_v"] * (self.volts[l["ch"]] - 5.0))

    def _run(self):
        while not self.stopping:
            words = []
            for l in self.lasers:
                try:
                    s = self.socks.get(l["port"])
                    if s is None:
                        s = self.socks[l["port"]] = socket.create_connection(
                            ("127.0.0.1", l["port"]), timeout=2)
                    self.tid += 1
                    self.volts[l["ch"]] = read_register(s, l["reg"], self.tid) / 6553.5
                except (OSError, EOFError):
                    self.errors += 1
                    self.socks.pop(l["port"], None)
                f = self.true_thz(l) + 1e-6 * self.rng.gauss(0.0, self.noise)
                words.append("nm%d=%.12f" % (l["ch"], C_NM_THZ / f))
            self.ctl.write(" ".join(words))
            time.sleep(0.025)

    def stop(self):
        self.stopping = True
        self.t.join()
        for s in self.socks.values():
            s.close()


status = status_all



def events(env, name="wlm.events"):
    try:
        with open(env.path(name)) as f:
            return f.read().split()
    except OSError:
        return []


def rising(lines):
    """Per channel: time stamps strictly rising; returns the offending pairs."""
    last, bad = {}, []
    for _, ch, _, t in lines:
        if ch in last and t <= last[ch]:
            bad.append((ch, last[ch], t))
        last[ch] = t
    return bad


# ---- 1. the closed loop -------------------------------------------------------------

T1, T2 = 384.2304844, 377.1074635
LASERS = [
    {"name": "b1", "ch": 1, "thz": T1, "reg": 0, "offset_mhz": 300.0, "mhz_per_v": 200.0},
    {"name": "b2", "ch": 2, "thz": T2, "reg": 0, "offset_mhz": -250.0, "mhz_per_v": 150.0},
]
PID = {"kp": 0.0, "ki": 0.01, "kd": 0.0}


def daemon_conf(env, l, pm_port, bridge_port):
    text = lab_conf([laser_conf(l["name"], l["ch"], l["thz"], reg=l["reg"], pid=PID)],
                    [("ao1", pm_port)], bridge_port, state_file="")
    return env.write("%s.conf" % l["name"], text)


def test_closed_loop(env):
    lib = fake_wlmdata_path(plain=True)
    if not os.path.exists(lib):
        tap.bail("%s is not built (make check builds it)" % lib)
    os.environ["FAKE_WLM_LOG"] = env.path("wlm.events")
    ctl = Control(env.path("wlm.control"))
    os.environ["FAKE_WLM_CONTROL"] = ctl.path
    pms = [PymodbusServer(env), PymodbusServer(env)]
    for l, pm in zip(LASERS, pms):
        l["port"] = pm.port
    plant = Plant(ctl, LASERS)
    br = Bridge(env, ["--poll-ms", "20", "--silence-ms", "500", "--reinstall-s", "2",
                      "--max-queue", "4096"], "channels=1,2,3,4,5,6,7,8 period_ms=20")
    t_start = time.monotonic()
    r1 = Reader(br.port)
    ds, cs = [], []
    for l, pm in zip(LASERS, pms):
        d = env.start_daemon(daemon_conf(env, l, pm.port, br.port))
        ds.append(d)
        cs.append(env.connect(d.port))

    def state(i):
        return status(cs[i])[LASERS[i]["name"]]

    def both_locked():
        return all(state(i)["state"] == "locked" for i in (0, 1))

    # ---- the line format, on a raw client -----------------------------------------
    ok = r1.wait(lambda r: {x[1] for x in r.since(t_start)} >= set(range(1, 9)), 10)
    time.sleep(0.5)
    got = r1.since(t_start)
    const = {}
    for _, ch, v, _ in got:
        if ch >= 3:
            const.setdefault(ch, set()).add(v)
    exact = all(len(const.get(ch, ())) == 1 and
                abs(float(next(iter(const[ch]))) - C_NM_THZ / (770.0 + 10.0 * ch)) < 1e-9
                for ch in range(3, 9))
    tap.ok(ok and not r1.bad and exact and all(re.match(r"^\d+\.\d{9}$", v) for _, _, v, _ in got),
           "lines '<channel> <THz with 9 decimals> <time_ms>' for channels 1..8 (callback modes"
           " 42, 43, 90..95); channel N of the double (770+10N nm) reads 299792.458/nm THz:"
           " %d lines in the first %.1f s" % (len(got), time.monotonic() - t_start),
           (r1.bad[:3], {ch: sorted(v) for ch, v in const.items()}))
    tap.ok(not rising(got), "time stamps rise per channel", rising(got)[:5])

    # ---- two daemons lock through the bridge ----------------------------------------------
    t0 = time.monotonic()
    ok = wait_until(both_locked, 40, 0.1)
    t_lock = time.monotonic() - t0
    s = [state(0), state(1)]
    truth = [(plant.true_thz(l) - l["thz"]) * 1e6 for l in LASERS]
    want_v = [5.0 - l["offset_mhz"] / l["mhz_per_v"] for l in LASERS]
    got_v = [float(x["piezo_v"]) for x in s]
    tap.ok(ok, "two daemons on one bridge: b1 and b2 locked after %.1f s (from 300 and -250 MHz"
           " off)" % t_lock, s)
    tap.ok(all(abs(e) < 5.0 for e in truth) and
           all(abs(a - b) < 0.05 for a, b in zip(got_v, want_v)),
           "the plant's true error %.2f / %.2f MHz; the piezos sit where the plant needs them"
           " (%.3f / %.3f V, expected %.3f / %.3f V)" % tuple(truth + got_v + want_v),
           (truth, got_v, want_v, plant.errors))
    heads = [wavemeter(c) for c in cs]
    tap.ok(all(h.get("connected") == "1" and set(ch) >= set(range(1, 9)) and
               all(x["status"] == "ok" for x in ch.values()) for h, ch in heads),
           "both daemons see every channel of the stream (1..8, status ok)",
           [(h, sorted(ch)) for h, ch in heads])
    tap.ok("callback installed" in br.log() and "polling" not in br.log(),
           "the bridge takes its readings from the callback", br.log())

    # ---- error codes pass through as they came -------------------------------------------------
    results = []
    for code in ERROR_CODES:
        ctl.set("err7=%d" % code)
        t = time.monotonic()
        ok = r1.wait(lambda r: any(v == str(code) for _, _, v, _ in r.since(t, 7)), 5)
        results.append((code, ok))
    ctl.set("")
    tap.ok(all(ok for _, ok in results),
           "error codes %s reach the client as they came ('7 -3 <time>')" %
           ",".join(str(c) for c in ERROR_CODES), [r for r in results if not r[1]])
    ctl.set("err2=-4")
    ok = wait_until(lambda: state(1)["state"] == "holding" and
                    state(1).get("wm_status") == "overexposed", 5, 0.02)
    tap.ok(ok and state(0)["state"] == "locked",
           "err2=-4 through the bridge: b2 holding with wm_status=overexposed, b1 still locked",
           (state(0), state(1)))
    ctl.set("")
    ok = wait_until(lambda: state(1)["state"] == "locked", 15, 0.05)
    tap.ok(ok, "error cleared: b2 locked again", state(1))

    # ---- the callback goes silent: polling -------------------------------------------------
    n_log = len(br.log())
    cyc0 = [int(state(i)["cycles"]) for i in (0, 1)]
    ctl.set("callbacks=off")
    t_off = time.monotonic()
    ok = br.wait_log("callback silent: polling channels 1,2,3,4,5,6,7,8 every 20 ms", 10, n_log)
    t_poll = time.monotonic() - t_off
    time.sleep(2.0)
    t = time.monotonic() - 1.5
    per = {ch: len(r1.since(t, ch)) for ch in (1, 2)}
    s = [state(0), state(1)]
    cyc1 = [int(x["cycles"]) for x in s]
    tap.ok(ok and min(per.values()) >= 20,
           "callbacks=off: the bridge polls after %.2f s; readings go on (%d and %d lines in"
           " 1.5 s for channels 1 and 2)" % (t_poll, per[1], per[2]), br.log()[n_log:])
    tap.ok(all(x["state"] == "locked" and int(x["age_ms"]) < 500 for x in s) and
           min(b - a for a, b in zip(cyc0, cyc1)) >= 40,
           "both lasers stay locked on polled readings (%d and %d cycles in 2 s)"
           % (cyc1[0] - cyc0[0], cyc1[1] - cyc0[1]), s)
    ctl.set("callbacks=off err7=-3")
    t = time.monotonic()
    ok = r1.wait(lambda r: any(v == "-3" for _, _, v, _ in r.since(t, 7)), 5)
    tap.ok(ok, "polling passes error codes on too ('7 -3')")
    n_log = len(br.log())
    ctl.set("")
    ok = br.wait_log("callbacks resumed: polling stopped", 10, n_log)
    tap.ok(ok, "callbacks=on: back to the callback", br.log()[n_log:])

    # ---- the wavemeter software restarts: callback forgotten, clock from 0 --------------------------
    ev0 = events(env)
    n_log = len(br.log())
    ctl.set("restart=1")

    def reinstalled():
        ev = events(env)[len(ev0):]
        return "restart" in ev and "install" in ev[ev.index("restart"):]
    ok = wait_until(reinstalled, 15, 0.05)
    ok2 = br.wait_log("callbacks resumed", 10, n_log)
    t = time.monotonic()
    time.sleep(1.0)
    fresh = r1.since(t)
    tap.ok(ok and ok2 and {x[1] for x in fresh} >= set(range(1, 9)) and
           "following its new clock" in br.log()[n_log:],
           "a restarted wavemeter: the bridge polls, re-installs the callback, and callbacks"
           " flow again (events after the restart: %s)" % " ".join(events(env)[len(ev0):]),
           br.log()[n_log:])
    ok = wait_until(both_locked, 15, 0.05)
    allv = r1.since(t_start)
    tap.ok(ok and not rising(allv),
           "time stamps still rise per channel across the restart (%d lines); both locked"
           % len(allv), rising(allv)[:5])

    # ---- a client that stops reading is dropped; nobody else waits --------------------------------
    n_log = len(br.log())
    slow = Reader(br.port, rcvbuf=2048, read=False)
    t_slow = time.monotonic()
    cyc0 = [int(state(i)["cycles"]) for i in (0, 1)]
    ok = br.wait_log("dropped: not reading", 30, n_log)
    t_drop = time.monotonic() - t_slow
    gaps = [b[0] - a[0] for a, b in zip(r1.since(t_slow, 1), r1.since(t_slow, 1)[1:])]
    cyc1 = [int(state(i)["cycles"]) for i in (0, 1)]
    tap.ok(ok, "a client that reads nothing is dropped after %.1f s (--max-queue 4096)" % t_drop,
           br.log()[n_log:])
    tap.ok(gaps and max(gaps) < 0.5 and min(b - a for a, b in zip(cyc0, cyc1)) >= 20 * t_drop,
           "meanwhile the others are served: longest gap on a raw client %.0f ms, %d and %d daemon"
           " cycles" % (1e3 * max(gaps or [0]), cyc1[0] - cyc0[0], cyc1[1] - cyc0[1]),
           (gaps[-5:], cyc0, cyc1))
    slow.s.settimeout(5)
    eof = False
    try:
        while slow.s.recv(65536):
            pass
        eof = True
    except ConnectionResetError:
        eof = True
    except OSError:
        pass
    slow.close()
    tap.ok(eof, "the dropped client sees its connection closed")

    # ---- clients come and go ---------------------------------------------------------------
    n_log = len(br.log())
    r1.close()
    ok = br.wait_log("disconnected", 5, n_log)
    rc = ds[1].stop()
    # a daemon that stops with readings unread in its socket resets the
    # connection: the bridge logs "lost (...)" instead of "disconnected"
    ok2 = wait_until(lambda: br.log()[n_log:].count("disconnected") +
                     br.log()[n_log:].count(" lost (") == 2, 5, 0.05)
    time.sleep(0.5)
    s0 = state(0)
    tap.ok(ok and ok2 and rc == 0 and s0["state"] == "locked" and int(s0["age_ms"]) < 500,
           "a raw client and daemon B disconnect: b1 stays locked on fresh readings",
           (br.log()[n_log:], s0))
    ds[1] = env.start_daemon(daemon_conf(env, LASERS[1], pms[1].port, br.port))
    cs[1] = env.connect(ds[1].port)
    ok = wait_until(lambda: state(1)["state"] == "locked", 30, 0.1)
    tap.ok(ok, "daemon B back: it connects and b2 locks again", state(1))

    # ---- SIGTERM: callback removed, clients closed; a new bridge is found again ----------------------
    ev0 = events(env)
    rc = br.p.stop()
    ev = events(env)[len(ev0):]
    tap.ok(rc == 0 and ev == ["remove"] and "stopped:" in br.log(),
           "SIGTERM: the bridge removes its callback and exits 0", (rc, ev, br.log()[-600:]))
    ok = wait_until(lambda: wavemeter(cs[0])[0].get("connected") == "0" and
                    state(0)["state"] == "holding", 5, 0.05)
    tap.ok(ok, "the daemons see the publisher gone (connected=0, holding)", wavemeter(cs[0])[0])
    h0 = wavemeter(cs[0])[0]
    br2 = Bridge(env, ["--poll-ms", "20"], "channels=1,2,3,4,5,6,7,8 period_ms=20", port=br.port)
    ok = wait_until(lambda: all(wavemeter(c)[0].get("connected") == "1" for c in cs) and
                    both_locked(), 30, 0.1)
    tap.ok(ok and int(wavemeter(cs[0])[0]["reconnects"]) > int(h0["reconnects"]),
           "a new bridge on the same port: both daemons reconnect and lock", [state(0), state(1)])
    plant.stop()
    tap.ok(br2.p.stop() == 0 and all(d.stop() == 0 for d in ds), "everything stops cleanly")


# ---- 2. modes and options ---------------------------------------------------------------------

NM1 = 780.24


def test_modes(env):
    ctl = Control(env.path("modes.control"))
    os.environ["FAKE_WLM_CONTROL"] = ctl.path
    ctl.write("")

    # --mode poll: no callback at all, only the channels asked for.
    os.environ["FAKE_WLM_LOG"] = env.path("poll.events")
    br = Bridge(env, ["--mode", "poll", "--poll-ms", "20", "--channels", "1,3"],
                "channels=1,2,3 nm1=%r step_nm=1e-8" % NM1)
    r = Reader(br.port)
    time.sleep(1.5)
    got = r.since(0)
    chans = {x[1] for x in got}
    v1 = [float(v) for _, ch, v, _ in got if ch == 1]
    lo, hi = C_NM_THZ / (NM1 + 1000e-8), C_NM_THZ / NM1
    tap.ok(chans == {1, 3} and len(v1) >= 30 and all(lo - 1e-9 <= v <= hi + 1e-9 for v in v1)
           and len(set(v1)) == len(v1),
           "--mode poll --channels 1,3: only channels 1 and 3, %d new readings of channel 1 in"
           " 1.5 s, all 299792.458/nm" % len(v1), (chans, v1[:5]))
    tap.ok(not rising(got), "--mode poll: time stamps rise per channel")
    r.close()
    rc = br.p.stop()
    tap.ok(rc == 0 and "install" not in events(env, "poll.events"),
           "--mode poll never installs a callback; SIGTERM exits 0",
           (rc, events(env, "poll.events")))

    # --mode callback: silence is not filled by polling, the callback is re-installed.
    os.environ["FAKE_WLM_LOG"] = env.path("cb.events")
    br = Bridge(env, ["--mode", "callback", "--silence-ms", "300", "--reinstall-s", "0.5"],
                "channels=1,9,10,17 nm1=%r step_nm=1e-8 period_ms=20" % NM1)
    r = Reader(br.port)
    ok = r.wait(lambda r: len(r.since(0, 17)) >= 10, 5)
    vals = {}
    for _, ch, v, _ in r.since(0):
        vals.setdefault(ch, set()).add(v)

    def in_walk(ch, v):
        nm = 770.0 + 10.0 * ch
        return C_NM_THZ / (nm + 1000e-8) - 1e-9 <= float(v) <= C_NM_THZ / nm + 1e-9
    tap.ok(ok and set(vals) == {1, 9, 10, 17} and
           all(in_walk(ch, v) for ch in (9, 10, 17) for v in vals[ch]),
           "callback modes 1130 and 1355..1362 are channels 9 and 10..17 (%s)"
           % ", ".join("%d: %s THz" % (ch, max(vals.get(ch, ["-"]))) for ch in (9, 10, 17)),
           vals)
    ctl.write("callbacks=off")
    time.sleep(0.8)
    t = time.monotonic()
    time.sleep(1.5)
    quiet = r.since(t)
    installs = events(env, "cb.events").count("install")
    tap.ok(ok and not quiet and installs >= 3 and "no callback for 300 ms" in br.log(),
           "--mode callback: a silent callback is not replaced by polling (no lines for 1.5 s)"
           " but re-installed (%d installs)" % installs, (len(quiet), br.log()))
    ctl.write("")
    t = time.monotonic()
    ok = r.wait(lambda r: len(r.since(t)) >= 10, 5)
    tap.ok(ok, "--mode callback: readings return with the callback")
    r.close()
    br.p.signal(signal.SIGINT)
    rc = br.p.wait(10)
    ev = events(env, "cb.events")
    tap.ok(rc == 0 and ev[-1:] == ["remove"], "SIGINT: callback removed, exit 0", (rc, ev[-3:]))
    br.p.stop()

    # auto with a refused callback: polling from the start; --channels 2.
    os.environ["FAKE_WLM_LOG"] = env.path("refused.events")
    br = Bridge(env, ["--poll-ms", "20", "--channels", "2"],
                "channels=1,2 step_nm=1e-8 install=fail")
    r = Reader(br.port)
    ok = r.wait(lambda r: len(r.since(0)) >= 20, 5)
    chans = {x[1] for x in r.since(0)}
    tap.ok(ok and chans == {2} and "refused the callback" in br.log() and
           "polling channel 2 every 20 ms" in br.log(),
           "a refused callback: auto polls from the start (--channels 2: only channel 2)",
           (chans, br.log()))
    r.close()
    br.p.stop()

    # --allow: other addresses are turned away.
    br = Bridge(env, ["--allow", "10.0.0.0/8"], "channels=1")
    r = Reader(br.port)
    ok = r.wait(lambda r: r.eof, 5)
    tap.ok(ok and not r.since(0) and "refused: not in --allow" in br.log(),
           "--allow 10.0.0.0/8: a client from 127.0.0.1 is closed at once", br.log())
    r.close()
    br.p.stop()


def test_failures(env):
    import subprocess

    def run(args, settings="channels=1,2"):
        e = dict(os.environ, FAKE_WLM_SETTINGS=settings)
        p = subprocess.run([PYTHON3, BRIDGE] + args, capture_output=True, text=True,
                           timeout=30, env=e, cwd=env.dir)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = run(["--check", "--library", fake_wlmdata_path(plain=True)],
                       "channels=1,2 nm1=780 err2=-3")
    tap.ok(rc == 0 and "channels=2" in out and "channel=1 value=%.9f" % (C_NM_THZ / 780) in out
           and "channel=2 value=-3" in out,
           "--check: the channel count and one reading per channel", out + err)
    rc, out, err = run(["--library", "/nonexistent/libwlmData.so"])
    tap.ok(rc == 1 and "cannot load /nonexistent/libwlmData.so" in err,
           "a missing library: exit 1, named", err)
    rc, out, err = run(["--mode", "poll", "--library", fake_wlmdata_path(nofreq=True, plain=True)])
    tap.ok(rc == 1 and "no symbol 'GetFrequencyNum'" in err,
           "--mode poll on a library without GetFrequencyNum: exit 1, named", err)
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen(1)
    rc, out, err = run(["--library", fake_wlmdata_path(plain=True),
                        "--listen", "127.0.0.1:%d" % hold.getsockname()[1]])
    hold.close()
    tap.ok(rc == 1 and "cannot listen on 127.0.0.1:" in err, "a port in use: exit 1", err)
    for bad in (["--listen", "nowhere"], ["--channels", "0-3"], ["--channels", "18"],
                ["--poll-ms", "0"], ["--mode", "sometimes"], ["--allow", "not-an-address"]):
        rc, out, err = run(bad)
        tap.ok(rc == 2 and "usage:" in err, "usage error: %s -> exit 2" % " ".join(bad), err)
    rc, out, err = run(["--help"])
    tap.ok(rc == 0 and "--listen" in out and "Exit status" in out, "--help", out)


t0 = time.monotonic()
with Env() as env:
    test_closed_loop(env)
tap.diag("closed loop: %.1f s" % (time.monotonic() - t0))
t1 = time.monotonic()
with Env() as env:
    test_modes(env)
    test_failures(env)
tap.diag("modes and options: %.1f s" % (time.monotonic() - t1))
tap.done()
