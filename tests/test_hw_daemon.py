#!/usr/bin/env python3
"""wavelockd on its Modbus hardware paths (issue 4, daemon-level acceptance).

1. Two devices: A is tests/fault_server, B a healthy ModbusRecorder; a small
   closed-loop plant turns the registers written into wavemeter readings.
   On A we inject exception replies, a 2 s reply delay (timeout_ms is 500),
   dropped connections, a server that goes down and comes back, and one
   that answers reads but refuses every write (the device flaps).  A's
   lasers must go `fault` and come back (and relock), the daemon must keep
   answering (ping round trips, `stats` in_flight back to 0), B's lasers must
   keep cycling at the reading rate during A's outages (and while A is merely
   slow, A's readings coalesce instead of queueing), and no value written
   to either server may leave its actuator's min_v..max_v (every write is
   decoded with the laser's encoding; two lasers are driven onto a limit).
   SIGTERM while A swallows every request exits promptly with status 0.
2. A laser whose current sits on the failing device resumes from the piezo
   output the healthy device holds (no step back).
3. The clamp on every path: manual `output` at and beyond the limits,
   feed-forward with a huge ratio, run-time limits, reload with narrower
   limits (engaged and not), and a restore from a hand-written state file
   holding out-of-range outputs.
"""

import os
import random
import re
import statistics
import struct
import threading
import time
import zlib

from wltest import (TAP, Client, Env, ModbusRecorder, Pinger, StreamPublisher, kv, lab_conf,
                    laser_conf, wait_until)
from hwtest import FaultServer

tap = TAP()


EPS = 1e-9      # volts; every limit below is exactly representable in its encoding


# ---- register decoding (independent of src/regenc.c) ------------------------

def decode(spec, regs):
    """Volts from the registers of one actuator (spec: fmt, order, scale, offset)."""
    fmt = spec["fmt"]
    if fmt == "u16":
        raw = regs[0]
    elif fmt == "s16":
        raw = regs[0] - 65536 if regs[0] >= 32768 else regs[0]
    else:
        h0, l0, h1, l1 = regs[0] >> 8, regs[0] & 255, regs[1] >> 8, regs[1] & 255
        order = spec.get("order", "abcd")
        if order == "abcd":
            a, b, c, d = h0, l0, h1, l1
        elif order == "cdab":
            c, d, a, b = h0, l0, h1, l1
        elif order == "badc":
            b, a, d, c = h0, l0, h1, l1
        else:
            d, c, b, a = h0, l0, h1, l1
        raw = struct.unpack(">f", bytes([a, b, c, d]))[0]
    return (raw - spec.get("offset", 0.0)) / spec["scale"]


def nregs(spec):
    return 2 if spec["fmt"] == "f32" else 1


def decode_writes(writes, actuators):
    """writes: [(addr, [regs])] on one device; actuators: {name: spec}.
    Returns ([(name, volts)], [problems]) -- a write touching a register no
    actuator owns, or only part of an f32, is a problem."""
    out, problems = [], []
    for addr, vals in writes:
        covered = set()
        for name, sp in actuators.items():
            n = nregs(sp)
            regs = range(sp["reg"], sp["reg"] + n)
            inside = [r for r in regs if addr <= r < addr + len(vals)]
            if not inside:
                continue
            if len(inside) != n:
                problems.append("partial write of %s: addr=%d %r" % (name, addr, vals))
                continue
            out.append((name, decode(sp, vals[sp["reg"] - addr:sp["reg"] - addr + n])))
            covered.update(regs)
        stray = [addr + i for i in range(len(vals)) if addr + i not in covered]
        if stray:
            problems.append("write to unowned registers %r: addr=%d %r" % (stray, addr, vals))
    return out, problems


def range_report(decoded, actuators):
    """{name: (count, lo, hi)} and the list of out-of-range values."""
    seen, bad = {}, []
    for name, v in decoded:
        sp = actuators[name]
        n, lo, hi = seen.get(name, (0, v, v))
        seen[name] = (n + 1, min(lo, v), max(hi, v))
        if not (sp["min"] - EPS <= v <= sp["max"] + EPS):
            bad.append((name, v))
    return seen, bad


def fmt_ranges(seen):
    return ", ".join("%s n=%d %.4f..%.4f" % (k, n, lo, hi) for k, (n, lo, hi) in sorted(seen.items()))


def act_conf(sp):
    return dict(reg=sp["reg"], fmt=sp["fmt"], order=sp.get("order"), scale=sp["scale"],
                offset=sp.get("offset", 0.0), min_v=sp["min"], max_v=sp["max"])


# ---- helpers ------------------------------------------------------------------

class Watcher:
    """A subscriber connection; records state events with their arrival time."""

    def __init__(self, port):
        self.c = Client(port)
        self.c.cmd("subscribe")
        self.c.s.settimeout(None)
        self.states = []          # (monotonic, laser, state, from)
        self.readings = 0
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while True:
                line = self.c.readline()
                if line.startswith("* state "):
                    e = kv(line)
                    with self.lock:
                        self.states.append((time.monotonic(), e["laser"], e["state"], e["from"]))
                elif line.startswith("* reading "):
                    self.readings += 1
        except (EOFError, OSError):
            pass

    def first(self, laser, after, state=None, frm=None):
        """Time of the first state event of laser after the given time."""
        with self.lock:
            for t, l, s, f in self.states:
                if t >= after and l == laser and (state is None or s == state) and \
                        (frm is None or f == frm):
                    return t
        return None

    def of(self, laser):
        with self.lock:
            return [(t, s, f) for t, l, s, f in self.states if l == laser]

    def close(self):
        try:
            self.c.s.shutdown(2)
        except OSError:
            pass
        self.c.close()


class FsRegs:
    """Latest register values of a FaultServer, from its write log."""

    def __init__(self, fs):
        self.fs, self.n, self.regs = fs, 0, {}

    def get(self, reg):
        w = self.fs.writes
        while self.n < len(w):
            _, addr, vals = w[self.n]
            self.n += 1
            for i, v in enumerate(vals):
                self.regs[addr + i] = v
        return self.regs.get(reg, 0)


class Plant:
    """Readings from the outputs: f = thz + (offset + mhz_per_v * (V - start_v)
    + noise) MHz, for every laser each period_s, on a StreamPublisher."""

    def __init__(self, pub, lasers, period_s=0.02, noise_mhz=0.2, seed=4):
        self.pub, self.lasers, self.period_s, self.noise = pub, lasers, period_s, noise_mhz
        self.rng = random.Random(seed)
        self.sent = {l["channel"]: 0 for l in lasers}
        self.paused = False
        self.stopping = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def volts(self, l):
        sp = l["piezo"]
        regs = [l["regs"](sp["reg"] + i) for i in range(nregs(sp))]
        return decode(sp, regs)

    def _run(self):
        nxt = time.monotonic()
        while not self.stopping:
            if not self.paused:
                for l in self.lasers:
                    mhz = l["offset_mhz"] + l["mhz_per_v"] * (self.volts(l) - l["start_v"])
                    self.pub.send(l["channel"], l["thz"] + 1e-6 * (mhz + self.rng.gauss(0, self.noise)))
                    self.sent[l["channel"]] += 1
            nxt += self.period_s
            time.sleep(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.stopping = True
        self.t.join()


def status(c):
    return {kv(x)["name"]: kv(x) for x in c.cmd("status")[:-1]}


def devices(c):
    return {kv(x)["name"]: kv(x) for x in c.cmd("devices")[:-1]}


def in_flight(c):
    for line in c.cmd("stats")[:-1]:
        if "in_flight=" in line:
            return int(kv(line)["in_flight"])
    return -1


# ============================================================================
# 1. Fault-injecting Modbus server next to a healthy one
# ============================================================================

GAINS = {"kp": 0.0, "ki": 0.05, "kd": 0.0}

# Actuators: device, register, encoding, limits (all exactly representable).
A_PIEZO = {"dev": "A", "reg": 0, "fmt": "u16", "scale": 6553.5, "min": 0.0, "max": 10.0}
A_CUR = {"dev": "A", "reg": 1, "fmt": "s16", "scale": 1000.0, "min": -1.0, "max": 1.0}
A_RAIL = {"dev": "A", "reg": 10, "fmt": "f32", "order": "abcd", "scale": 1.0, "min": 2.0, "max": 7.0}
B_PIEZO = {"dev": "B", "reg": 0, "fmt": "u16", "scale": 6553.5, "min": 0.0, "max": 10.0}
B_RAIL = {"dev": "B", "reg": 4, "fmt": "s16", "scale": 1000.0, "min": -3.0, "max": 3.0}

S_PIEZO = {"dev": "B", "reg": 6, "fmt": "u16", "scale": 1000.0, "min": 0.0, "max": 10.0}
S_CUR = {"dev": "A", "reg": 20, "fmt": "s16", "scale": 1000.0, "min": -1.0, "max": 1.0}

ACT_A = {"a_lock.piezo": A_PIEZO, "a_lock.current": A_CUR, "a_rail.piezo": A_RAIL,
         "split.current": S_CUR}
ACT_B = {"b_lock.piezo": B_PIEZO, "b_rail.piezo": B_RAIL, "split.piezo": S_PIEZO}

# a_lock/b_lock lock; a_rail is pushed onto its max_v, b_rail onto its min_v
# (the plant needs an output beyond the limit), so they regulate on a limit.
LASERS = [
    {"name": "a_lock", "channel": 1, "thz": 384.2304844, "piezo": A_PIEZO, "start_v": 5.0,
     "mhz_per_v": 200.0, "offset_mhz": 300.0, "current": A_CUR, "ff": -0.2},
    {"name": "a_rail", "channel": 2, "thz": 377.1074635, "piezo": A_RAIL, "start_v": 5.0,
     "mhz_per_v": 200.0, "offset_mhz": -900.0},
    {"name": "b_lock", "channel": 3, "thz": 351.7255, "piezo": B_PIEZO, "start_v": 5.0,
     "mhz_per_v": 150.0, "offset_mhz": -250.0},
    {"name": "b_rail", "channel": 4, "thz": 366.0, "piezo": B_RAIL, "start_v": 0.0,
     "mhz_per_v": 100.0, "offset_mhz": 700.0},
    # Piezo on the healthy device, current on A: A's faults are its faults too.
    {"name": "split", "channel": 5, "thz": 370.5, "piezo": S_PIEZO, "start_v": 5.0,
     "mhz_per_v": 150.0, "offset_mhz": 200.0, "current": S_CUR, "ff": -0.2},
]
A_LASERS = ["a_lock", "a_rail", "split"]
B_LASERS = ["b_lock", "b_rail"]


def fault_conf(a_port, b_port, wm_port):
    out = []
    for l in LASERS:
        p = l["piezo"]
        cur = None
        if l.get("current"):
            cur = dict(act_conf(l["current"]), device=l["current"]["dev"], feedforward=l["ff"])
            del cur["offset"]
            cur["order"] = None
        c = act_conf(p)
        out.append(laser_conf(l["name"], l["channel"], l["thz"], device=p["dev"], reg=c["reg"],
                              fmt=c["fmt"], order=c["order"], scale=c["scale"], offset=c["offset"],
                              min_v=c["min_v"], max_v=c["max_v"], start_v=l["start_v"],
                              current=cur, pid=GAINS))
    text = lab_conf(out, [("A", a_port), ("B", b_port)], wm_port)
    # A answers within 500 ms or is down: the slow phase (100 ms replies)
    # keeps a wide margin, the 2 s delay is well beyond it.
    text, n = re.subn(r'(name = "A";[^}]*timeout_ms = )200;', r'\g<1>500;', text)
    assert n == 1
    return text


def test_faults(env):
    fs = FaultServer(env, verbose=True)
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cfg = env.write("faults.conf", fault_conf(fs.port, mb.port, pub.port))
    d = env.start_daemon(cfg)
    fsregs = FsRegs(fs)
    for l in LASERS:
        l["regs"] = fsregs.get if l["piezo"]["dev"] == "A" else (lambda r: mb.regs[r])
    plant = Plant(pub, LASERS)
    c = env.connect(d.port)
    w = Watcher(d.port)
    pinger = Pinger(d.port, started=False)

    def cycles():
        s = status(c)
        return {n: int(s[n]["cycles"]) for n in s}, dict(plant.sent)

    def states():
        return {n: v["state"] for n, v in status(c).items()}

    want = {"a_lock": "locked", "b_lock": "locked", "a_rail": "acquiring", "b_rail": "acquiring",
            "split": "locked"}
    ok = wait_until(lambda: states() == want, 30, 0.2)
    if not tap.ok(ok, "start: a_lock, b_lock and split locked, a_rail and b_rail regulating on"
                  " a limit",
                  states()):
        tap.diag(d.output()[-3000:])
        tap.bail("the closed loop does not settle")
    s = status(c)
    tap.ok(abs(float(s["a_rail"]["piezo_v"]) - 7.0) < EPS and
           abs(float(s["b_rail"]["piezo_v"]) + 3.0) < EPS,
           "the rail lasers sit on their limits (a_rail %s V at max 7, b_rail %s V at min -3)"
           % (s["a_rail"]["piezo_v"], s["b_rail"]["piezo_v"]))

    # Baseline cycle rate of B's lasers: the rates below are judged against it
    # (a busy machine's Python plant may send in bursts that coalesce).
    c0, s0 = cycles()
    time.sleep(2.0)
    c1, s1 = cycles()
    base = {n: (c1[n] - c0[n]) / max(1, s1[ch] - s0[ch])
            for n, ch in (("b_lock", 3), ("b_rail", 4))}
    tap.diag("baseline: B cycles per reading %s; readings %.1f/s per channel"
             % ({k: round(v, 3) for k, v in base.items()}, (s1[3] - s0[3]) / 2.0))

    # ---- A slow but working: replies 100 ms late (timeout 500 ms) ----------------
    # Not a fault.  A's thread manages about 10 writes a second for 3 lasers
    # fed 50 readings a second each: readings must coalesce (latest wins)
    # instead of queueing, B must not notice, and once A is fast again its
    # lasers cycle at the reading rate at once (no backlog to work off).
    def coal():
        return {n: int(v["coalesced"]) for n, v in status(c).items()}
    k0, (c0, s0) = coal(), cycles()
    t_inj = time.monotonic()
    fs.cmd("delay ms=100")
    time.sleep(2.5)
    k1, (c1, s1) = coal(), cycles()
    fs.cmd("normal")
    t_clr = time.monotonic()
    a_rate = {n: (c1[n] - c0[n]) / max(1, s1[ch] - s0[ch]) for n, ch in (("a_lock", 1), ("a_rail", 2))}
    b_rate = {n: (c1[n] - c0[n]) / max(1, s1[ch] - s0[ch]) for n, ch in (("b_lock", 3), ("b_rail", 4))}
    slow_faults = [e for l in A_LASERS for e in w.of(l) if e[0] >= t_inj and e[1] == "fault"]
    tap.ok(not slow_faults and all(0 < r < 0.5 for r in a_rate.values()) and
           all(k1[n] - k0[n] > 20 for n in ("a_lock", "a_rail")),
           "A slow (100 ms replies): no fault; A's lasers use %s of their readings, the rest"
           " coalesce (coalesced +%d, +%d)" % ({k: round(v, 3) for k, v in a_rate.items()},
                                               k1["a_lock"] - k0["a_lock"], k1["a_rail"] - k0["a_rail"]),
           slow_faults[:3])
    tap.ok(all(r >= 0.85 * base[n] for n, r in b_rate.items()),
           "A slow: B's lasers keep the reading rate (%s)" % {k: round(v, 3) for k, v in b_rate.items()})
    time.sleep(0.3)
    c2, s2 = cycles()
    time.sleep(1.0)
    c3, s3 = cycles()
    a_after = {n: (c3[n] - c2[n]) / max(1, s3[ch] - s2[ch]) for n, ch in (("a_lock", 1), ("a_rail", 2))}
    tap.ok(all(r >= 0.85 * min(base.values()) for r in a_after.values()),
           "A fast again: its lasers are back at the reading rate within 0.3 s (%s), no backlog"
           % {k: round(v, 3) for k, v in a_after.items()})
    summary_slow = ("slow A (100 ms): A cycles/reading %s, after %s; B %s" %
                    ({k: round(v, 3) for k, v in a_rate.items()},
                     {k: round(v, 3) for k, v in a_after.items()},
                     {k: round(v, 3) for k, v in b_rate.items()}))

    phases = [
        # name, inject, clear, fault_server counter that must grow, flapping
        ("exception replies (code 4)", "exception code=4", "normal", "exceptions", False),
        ("2 s reply delay (timeout 500 ms)", "delay ms=2000", "normal", "delayed", False),
        ("dropped connections", "drop", "normal", "dropped", False),
        ("server down, then up", "down", "up", None, False),
        # Reads (the reconnect probe) answer, every write is refused: the
        # device comes up and goes down again and again.
        ("writes refused (exception on writes only)", "exception code=2 writes", "normal",
         "exceptions", True),
    ]
    summary = [summary_slow]
    for name, inject, clear, counter, flapping in phases:
        if flapping:
            # Back-off starts again from its minimum only for a device that
            # has worked for a while (2 s) since it last came up.
            time.sleep(2.5)
        stats0 = fs.stats()
        dev0 = devices(c)["A"]
        last_before = fsregs.get(A_PIEZO["reg"])
        nw_before = len(fs.writes)
        c0, s0 = cycles()
        pinger.rtts = []
        pinger.active.set()
        t_inj = time.monotonic()
        fs.cmd(inject)
        got = wait_until(lambda: all(w.first(l, t_inj, state="fault") for l in A_LASERS), 10, 0.02)
        t_fault = max(w.first(l, t_inj, state="fault") or t_inj for l in A_LASERS) - t_inj
        tap.ok(got, "%s: A's lasers go fault (after %.2f s)" % (name, t_fault),
               w.of("a_lock")[-5:])
        if not flapping:
            dv = devices(c)
            tap.ok(dv["A"]["up"] == "0" and dv["B"]["up"] == "1",
                   "%s: devices shows A down, B up" % name, dv)
        time.sleep(2.0)
        st = states()
        if flapping:
            flaps = len([e for e in w.of("a_lock") if e[0] > t_inj and e[1] == "fault"])
            dev1 = devices(c)["A"]
            recon = int(dev1["reconnects"]) - int(dev0["reconnects"])
            tap.ok(flaps >= 2, "%s: A's lasers go fault at every refused write (%d times in"
                   " %.1f s)" % (name, flaps, time.monotonic() - t_inj))
            # A device that answers the probe but refuses every write should
            # still be retried with a growing back-off (100 ms doubling:
            # about 5 attempts in 2 s), not every 100 ms.
            tap.ok(recon <= 12, "%s: reconnect back-off keeps growing while the device flaps"
                   " (%d reconnects in %.1f s)" % (name, recon, time.monotonic() - t_inj))
        else:
            tap.ok(all(st[l] == "fault" for l in A_LASERS),
                   "%s: A's lasers stay fault while it lasts" % name, st)
        c1, s1 = cycles()
        fs.cmd(clear)
        t_clr = time.monotonic()
        pinger.active.clear()
        rates = {n: (c1[n] - c0[n]) / max(1, s1[ch] - s0[ch]) for n, ch in (("b_lock", 3), ("b_rail", 4))}
        tap.ok(all(r >= 0.85 * base[n] for n, r in rates.items()),
               "%s: B's lasers kept cycling at the reading rate (cycles/readings %s over %.1f s)"
               % (name, {k: round(v, 3) for k, v in rates.items()}, t_clr - t_inj), (c0, c1, s0, s1))
        tap.ok(all(st[l] in ("locked", "acquiring") for l in B_LASERS) and st["b_lock"] == "locked",
               "%s: b_lock stays locked, b_rail regulating" % name, st)
        rtts = sorted(pinger.rtts)
        tap.ok(len(rtts) > 10 and not pinger.errors and rtts[-1] < 1.5,
               "%s: the daemon kept answering (%d pings, median %.1f ms, max %.1f ms)"
               % (name, len(rtts), 1e3 * statistics.median(rtts) if rtts else -1,
                  1e3 * rtts[-1] if rtts else -1), pinger.errors[:3])
        if counter:
            st1 = fs.stats()
            tap.ok(st1[counter] > stats0[counter],
                   "%s: the fault was exercised (%s %d -> %d)" % (name, counter, stats0[counter],
                                                                 st1[counter]))

        def recovered():
            if flapping:     # the last fault event is followed by a recovery
                ev = w.of("a_lock")
                return ev and ev[-1][2] == "fault" and ev[-1][0] >= t_inj and \
                    states()["a_lock"] != "fault"
            return all(w.first(l, t_clr, frm="fault") for l in A_LASERS)
        got = wait_until(recovered, 15, 0.02)
        if flapping:
            t_rec = w.of("a_lock")[-1][0] - t_clr if got else -1
        else:
            t_rec = max(w.first(l, t_clr, frm="fault") or t_clr for l in A_LASERS) - t_clr
        tap.ok(got, "%s: A's lasers leave fault once A answers (after %.2f s)" % (name, t_rec),
               w.of("a_lock")[-5:])
        relocked = wait_until(lambda: states()["a_lock"] == "locked" and
                              states()["split"] == "locked", 15, 0.05)
        t_lock = time.monotonic() - t_clr
        tap.ok(relocked and states()["a_rail"] == "acquiring",
               "%s: a_lock and split lock again (%.2f s after the fault cleared), a_rail"
               " regulates" % (name, t_lock), states())
        # Bumpless: the first piezo write after recovery continues from the held output.
        after = [x for x in fs.writes[nw_before:] if x[1] == A_PIEZO["reg"]]
        held = decode(A_PIEZO, [last_before])
        first = decode(A_PIEZO, [after[0][2][0]]) if after else None
        tap.ok(first is not None and abs(first - held) < 0.01,
               "%s: a_lock resumes from its held output (%.4f V -> %s V)" %
               (name, held, "%.4f" % first if first is not None else "none"))
        summary.append("%s: fault after %.2f s, back %.2f s after clearing, locked after %.2f s,"
                       " B cycles/reading %s, ping max %.1f ms" %
                       (name, t_fault, t_rec, t_lock, {k: round(v, 3) for k, v in rates.items()},
                        1e3 * rtts[-1] if rtts else -1))
        time.sleep(1.0)     # some regular cycles on A before the next fault
    for line in summary:
        tap.diag(line)

    # ---- an unlocked laser across an outage ---------------------------------------
    # Unlocked during the fault it stays `fault` (its device is down), manual
    # output is refused with 503; once A is back it is `off` and its held
    # output is written again, exactly.
    t_inj = time.monotonic()
    fs.cmd("down")
    got = wait_until(lambda: w.first("a_rail", t_inj, state="fault"), 10, 0.02)
    r1 = c.cmd("unlock a_rail")
    r2 = c.cmd("output a_rail piezo 4")
    st = status(c)["a_rail"]
    tap.ok(got and r1 == ["OK"] and r2[-1].startswith("ERR 503") and st["state"] == "fault",
           "unlock during the outage: a_rail stays fault, output refused with 503", (r1, r2, st))
    nw = len(fs.writes)
    fs.cmd("up")
    back = wait_until(lambda: status(c)["a_rail"]["state"] == "off" and
                      any(x[1] == A_RAIL["reg"] for x in fs.writes[nw:]), 15, 0.02)
    time.sleep(0.3)
    rail = [decode(A_RAIL, x[2]) for x in fs.writes[nw:] if x[1] == A_RAIL["reg"]]
    tap.ok(back and rail == [7.0],
           "A back: a_rail is off and its held output is written once more (%s)" % rail)
    r = c.cmd("output a_rail piezo 4")
    ok = wait_until(lambda: any(x[1] == A_RAIL["reg"] and decode(A_RAIL, x[2]) == 4.0
                                for x in fs.writes[nw:]), 5, 0.02)
    c.cmd("lock a_rail")
    ok2 = wait_until(lambda: float(status(c)["a_rail"]["piezo_v"]) == 7.0, 10, 0.05)
    tap.ok(r[-1].startswith("OK") and ok and ok2,
           "output 4 V by hand works again, and lock takes a_rail back to its limit", r)

    dv = devices(c)
    tap.ok(int(dv["A"]["reconnects"]) >= 6 and dv["B"]["reconnects"] == "0" and
           dv["B"]["write_errors"] == "0",
           "devices: A reconnected after every fault, B never failed", dv)
    b_faults = [e for l in B_LASERS for e in w.of(l) if e[1] == "fault"]
    tap.ok(not b_faults, "B's lasers never went fault", b_faults)

    plant.paused = True
    ok = wait_until(lambda: in_flight(c) == 0, 10, 0.05)
    tap.ok(ok, "stats: in_flight back to 0 once readings stop (no stuck cycle)")
    t0 = time.monotonic()
    r = c.cmd("ping")
    tap.ok(r == ["OK"] and time.monotonic() - t0 < 2.0, "ping still answers at the end")

    # Shutdown while A swallows every request (its thread waits out a
    # response timeout in each reconnect probe): a clean, prompt exit.
    plant.paused = False
    t_inj = time.monotonic()
    fs.cmd("silent")
    got = wait_until(lambda: w.first("a_lock", t_inj, state="fault"), 10, 0.02)
    time.sleep(0.5)
    pinger.stop()
    t0 = time.monotonic()
    rc = d.stop(timeout=10)
    t_stop = time.monotonic() - t0
    tap.ok(got and rc == 0 and t_stop < 5.0,
           "SIGTERM while A is silent: exit status %s after %.2f s" % (rc, t_stop), open(d.log_path, errors="replace").read()[-2000:])
    plant.stop()
    w.close()

    # Every value written to either server, decoded with the laser's encoding.
    aw, ap = decode_writes([(a, v) for _, a, v in fs.writes], ACT_A)
    bw, bp = decode_writes([(a, v) for _, a, v in mb.writes], ACT_B)
    tap.ok(not ap and not bp, "every write hits exactly the actuators' registers", (ap + bp)[:5])
    seen_a, bad_a = range_report(aw, ACT_A)
    seen_b, bad_b = range_report(bw, ACT_B)
    tap.ok(not bad_a and not bad_b and len(aw) > 300 and len(bw) > 1000,
           "no write left min_v..max_v: A %s; B %s" % (fmt_ranges(seen_a), fmt_ranges(seen_b)),
           (bad_a + bad_b)[:10])
    tap.ok(abs(seen_a["a_rail.piezo"][2] - A_RAIL["max"]) < EPS and
           abs(seen_b["b_rail.piezo"][1] - B_RAIL["min"]) < EPS,
           "the limits were reached (a_rail at max_v, b_rail at min_v) and held exactly")
    fs.stop()
    mb.close()
    pub.close()


def test_split_resume(env):
    """A laser with its piezo on a healthy device and its current on one that
    fails: the job that finds the failure has already moved the piezo.  The
    resume after the fault must continue from that output (the one the device
    holds and status shows), not from the one before."""
    fs = FaultServer(env)
    mb = ModbusRecorder()
    pub = StreamPublisher()
    sp = {"reg": 0, "fmt": "u16", "scale": 1000.0, "min": 0.0, "max": 10.0}
    cur = dict(reg=0, fmt="s16", scale=1000.0, min_v=-1.0, max_v=1.0, feedforward=-0.01, device="A")
    laser = laser_conf("ramp", 1, C_THZ, device="B", reg=0, fmt="u16", scale=1000.0, min_v=0.0,
                       max_v=10.0, start_v=2.0, current=cur, pid=GAINS)
    cfg = env.write("split.conf", lab_conf([laser], [("A", fs.port), ("B", mb.port)], pub.port))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    w = Watcher(d.port)
    feed = Feeder(pub)
    # 20 MHz too low, ki 0.05, 50 readings/s: the piezo climbs 0.02 V a reading.
    feed.err[1] = (C_THZ, -20.0)

    def piezo_writes():
        return [decode(sp, v[0:1]) for _, a, v in list(mb.writes) if a == 0]

    ok = wait_until(lambda: len(piezo_writes()) > 20 and piezo_writes()[-1] > 2.3, 10, 0.02)
    pw = piezo_writes()
    step = pw[-1] - pw[-2] if len(pw) > 2 else 0
    t_inj = time.monotonic()
    fs.cmd("down")
    got = wait_until(lambda: w.first("ramp", t_inj, state="fault"), 10, 0.02)
    time.sleep(0.3)
    pw = piezo_writes()
    n_before = len(pw)
    last_before = pw[-1]
    held = float(status(c)["ramp"]["piezo_v"])
    time.sleep(0.7)
    tap.ok(ok and got and len(piezo_writes()) == n_before,
           "split laser: climbing %.3f V a reading, goes fault when its current device goes down;"
           " no piezo write while in fault" % step)
    t_up = time.monotonic()
    fs.cmd("up")
    back = wait_until(lambda: w.first("ramp", t_up, frm="fault") and len(piezo_writes()) > n_before,
                      10, 0.02)
    first_after = piezo_writes()[n_before] if len(piezo_writes()) > n_before else None
    tap.ok(back and first_after is not None and abs(last_before - held) < 0.0015 and
           abs(first_after - last_before) < 0.0015 and step > 0.01,
           "split laser: resumes from the output the device holds (last before %.3f V, status %.4f V,"
           " first after %s V; one step is %.3f V)" % (last_before, held,
                                                      "%.3f" % first_after if first_after else "none",
                                                      step))
    feed.stop()
    w.close()
    tap.eq(d.stop(), 0, "split laser: wavelockd stops cleanly")
    fs.stop()
    mb.close()
    pub.close()


def test_retune_in_flight(env):
    """A gain changed while the laser's cycle is in flight (its write delayed
    by the device) is still bumpless: the cycle's result carries the PID
    state computed with the old gains, and must be retuned to the new ones
    before the next cycle.  With ki = 0 and a constant error the output is
    constant, so any step after the change is the bump; without the retune
    it is (kp_new - kp_old) * error = 0.008 V/MHz * 20 MHz = 0.16 V."""
    fs = FaultServer(env, verbose=True)
    pub = StreamPublisher()
    sp = {"reg": 0, "fmt": "u16", "scale": 1000.0, "min": 0.0, "max": 10.0}
    laser = laser_conf("tune", 1, C_THZ, device="A", reg=0, fmt="u16", scale=1000.0, min_v=0.0,
                       max_v=10.0, start_v=5.0, pid={"kp": 0.002, "ki": 0.0, "kd": 0.0})
    text = lab_conf([laser], [("A", fs.port)], pub.port).replace("timeout_ms = 200",
                                                                 "timeout_ms = 3000")
    d = env.start_daemon(env.write("retune.conf", text))
    c = env.connect(d.port)
    feed = Feeder(pub)
    feed.err[1] = (C_THZ, -20.0)

    def piezo_writes():
        return [decode(sp, v[0:1]) for fc, a, v in list(fs.writes) if a == 0]

    steady = wait_until(lambda: len(piezo_writes()) > 20, 10, 0.02)
    base = piezo_writes()[-1] if piezo_writes() else None
    results = []
    for kp in (0.01, 0.002, 0.03):
        delayed = fs.stats().get("delayed", 0)
        fs.cmd("delay ms=600 count=1 writes")
        got = wait_until(lambda: fs.stats().get("delayed", 0) > delayed, 5, 0.005)
        busy = in_flight(c)
        r = c.cmd("set tune kp %g" % kp)
        n = len(piezo_writes())
        wait_until(lambda: len(piezo_writes()) > n + 10, 10, 0.02)
        after = piezo_writes()[n:]
        results.append((kp, got, busy, r[-1], max((abs(v - base) for v in after), default=None),
                        len(after)))
    feed.stop()
    tap.ok(steady and base is not None and
           all(g and b >= 1 and f.startswith("OK") and j is not None and j < 0.0015 and m > 10
               for _, g, b, f, j, m in results),
           "gains changed while a cycle is in flight: no bump (output %s V; per change kp, "
           "in_flight, largest step over the next writes: %s)"
           % (base, ["%g %d %s" % (k, b, "%.4f V" % j if j is not None else "-")
                     for k, g, b, f, j, m in results]), results)
    tap.eq(d.stop(), 0, "retune in flight: wavelockd stops cleanly")
    fs.stop()
    pub.close()


def test_feedforward_change(env):
    """Changing the current feed-forward ratio of a regulating laser is
    bumpless: the new ratio applies from the present outputs.  The piezo
    climbs 0.02 V a reading (20 MHz low, ki 0.05, 50 readings/s) and the
    current follows at -0.2 V/V; about 1 V from the reference, a change to
    -0.5 V/V would step the current by 0.3 V if it applied from the old
    reference."""
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cur = dict(reg=1, fmt="s16", scale=1000.0, min_v=-1.0, max_v=1.0, feedforward=-0.2,
               device="B")
    laser = laser_conf("ff", 1, C_THZ, device="B", reg=0, fmt="u16", scale=1000.0, min_v=0.0,
                       max_v=10.0, start_v=2.0, current=cur, pid=GAINS)
    d = env.start_daemon(env.write("ff.conf", lab_conf([laser], [("B", mb.port)], pub.port)))
    c = env.connect(d.port)
    feed = Feeder(pub)
    feed.err[1] = (C_THZ, -20.0)

    def pairs():
        """(piezo, current) of every write of both registers."""
        out = []
        for _, a, v in list(mb.writes):
            if a == 0 and len(v) >= 2:
                out.append((v[0] / 1000.0, (v[1] - 65536 if v[1] >= 32768 else v[1]) / 1000.0))
        return out

    climbed = wait_until(lambda: len(pairs()) > 5 and pairs()[-1][0] > 3.0, 10, 0.02)
    n = len(pairs())
    r = c.cmd("set ff feedforward -0.5")
    wait_until(lambda: len(pairs()) > n + 10, 10, 0.02)
    feed.stop()
    p = pairs()
    steps_before = [abs(p[i][1] - p[i - 1][1]) for i in range(1, n)]
    steps_after = [abs(p[i][1] - p[i - 1][1]) for i in range(n, len(p))]
    tap.ok(climbed and r[-1].startswith("OK") and steps_after and max(steps_after) < 0.05 and
           p[-1][1] < p[n - 1][1],
           "feed-forward -0.2 -> -0.5 V/V about %.2f V from the reference: the current goes on "
           "smoothly (largest step %.3f V after, %.3f V before)"
           % (p[n - 1][0] - 2.0, max(steps_after, default=-1), max(steps_before, default=-1)),
           p[n - 3:n + 3])
    tap.eq(d.stop(), 0, "feed-forward change: wavelockd stops cleanly")
    mb.close()
    pub.close()


# ============================================================================
# 2. The clamp on every path
# ============================================================================

C_PIEZO = {"reg": 0, "fmt": "u16", "scale": 1000.0, "min": 1.0, "max": 9.0}
C_CUR = {"reg": 1, "fmt": "s16", "scale": 1000.0, "min": -0.5, "max": 0.5}
F_PIEZO = {"reg": 10, "fmt": "f32", "order": "cdab", "scale": 1.0, "min": -2.0, "max": 2.0}
ACT_C = {"clamp.piezo": C_PIEZO, "clamp.current": C_CUR, "clampf.piezo": F_PIEZO}
C_THZ, F_THZ = 384.2304844, 377.1074635


def clamp_conf(mb_port, wm_port, narrow=False, autolock=False):
    cp, cc, fp = dict(C_PIEZO), dict(C_CUR), dict(F_PIEZO)
    if narrow:
        cp.update(min=2.0, max=6.0)
        cc.update(min=-0.25, max=0.25)
        fp.update(min=-1.0, max=1.0)
    cur = dict(reg=cc["reg"], fmt=cc["fmt"], scale=cc["scale"], min_v=cc["min"], max_v=cc["max"],
               feedforward=-0.2, device="ao1")
    lasers = [
        laser_conf("clamp", 1, C_THZ, reg=0, fmt="u16", scale=1000.0, min_v=cp["min"],
                   max_v=cp["max"], start_v=5.0, current=cur, pid=GAINS, autolock=autolock),
        laser_conf("clampf", 2, F_THZ, reg=10, fmt="f32", order="cdab", scale=1.0,
                   min_v=fp["min"], max_v=fp["max"], start_v=0.0, pid=GAINS, autolock=autolock),
    ]
    return lab_conf(lasers, [("ao1", mb_port)], wm_port)


class Feeder:
    """Constant-error readings for chosen channels at 50 Hz."""

    def __init__(self, pub):
        self.pub = pub
        self.err = {}            # channel -> (thz, error_mhz)
        self.stopping = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopping:
            for ch, (thz, e) in list(self.err.items()):
                self.pub.send(ch, thz + 1e-6 * e)
            time.sleep(0.02)

    def stop(self):
        self.stopping = True
        self.t.join()


def statefile_text(lines):
    body = "# wavelock runtime state, format 1 (written by hand by test_hw_daemon.py)\n"
    body += "".join(l + "\n" for l in lines)
    return body + "end count=%d crc32=%08x\n" % (len(lines), zlib.crc32(body.encode()) & 0xffffffff)


def test_clamp(env):
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cfg = env.path("clamp.conf")

    def write_cfg(**kw):
        # Atomic, so a reload never reads half a file.
        env.write("clamp.conf.tmp", clamp_conf(mb.port, pub.port, **kw))
        os.rename(env.path("clamp.conf.tmp"), cfg)

    write_cfg()
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    feed = Feeder(pub)

    def reg_volts(spec):
        return decode(spec, mb.regs[spec["reg"]:spec["reg"] + nregs(spec)])

    def writes_since(i):
        return decode_writes([(a, v) for _, a, v in mb.writes[i:]], ACT_C)

    def wait_volts(spec, v, timeout=5):
        return wait_until(lambda: abs(reg_volts(spec) - v) < EPS, timeout, 0.02)

    ok = wait_volts(C_PIEZO, 5.0) and wait_volts(F_PIEZO, 0.0)
    tap.ok(ok, "clamp: start outputs written (5 V, 0 V)")

    # ---- manual output -----------------------------------------------------
    cases = [("clamp", "piezo", "9", True, C_PIEZO, 9.0),
             ("clamp", "piezo", "9.001", False, C_PIEZO, 9.0),
             ("clamp", "piezo", "1", True, C_PIEZO, 1.0),
             ("clamp", "piezo", "0.999", False, C_PIEZO, 1.0),
             ("clamp", "piezo", "-1e300", False, C_PIEZO, 1.0),
             ("clamp", "piezo", "1e999", False, C_PIEZO, 1.0),
             ("clamp", "piezo", "nan", False, C_PIEZO, 1.0),
             ("clamp", "piezo", "inf", False, C_PIEZO, 1.0),
             ("clamp", "current", "0.5", True, C_CUR, 0.5),
             ("clamp", "current", "0.5000001", False, C_CUR, 0.5),
             ("clamp", "current", "-0.5", True, C_CUR, -0.5),
             ("clamp", "current", "-7", False, C_CUR, -0.5),
             ("clampf", "piezo", "2", True, F_PIEZO, 2.0),
             ("clampf", "piezo", "2.0000001", False, F_PIEZO, 2.0),
             ("clampf", "piezo", "-2", True, F_PIEZO, -2.0),
             ("clampf", "piezo", "-1e38", False, F_PIEZO, -2.0)]
    for laser, act, val, accept, spec, want in cases:
        r = c.cmd("output %s %s %s" % (laser, act, val))
        good = r[-1].startswith("OK") if accept else r[-1].startswith("ERR 422")
        landed = wait_volts(spec, want)
        tap.ok(good and landed, "output %s %s %s: %s, register holds %g V" %
               (laser, act, val, "accepted" if accept else "refused with 422", want),
               (r, reg_volts(spec)))
    # Run-time limits narrow the manual range too.
    r1 = c.cmd("set clamp piezo_max_v 8")
    r2 = c.cmd("output clamp piezo 8.5")
    r3 = c.cmd("output clamp piezo 8")
    tap.ok(r1[-1].startswith("OK") and r2[-1].startswith("ERR 422") and r3[-1].startswith("OK")
           and wait_volts(C_PIEZO, 8.0),
           "set piezo_max_v 8: output 8.5 refused, 8 accepted", (r1, r2, r3))
    r4 = c.cmd("set clamp piezo_max_v 9.5")
    r5 = c.cmd("set clamp piezo_min_v 0")
    tap.ok(r4[-1].startswith("ERR 422") and r5[-1].startswith("ERR 422"),
           "run-time limits cannot widen past the configured ones", (r4, r5))
    c.cmd("set clamp piezo_max_v 9")

    # ---- feed-forward with a huge ratio --------------------------------------
    c.cmd("output clamp piezo 5")
    c.cmd("output clamp current 0")
    wait_volts(C_PIEZO, 5.0)
    wait_volts(C_CUR, 0.0)
    r = c.cmd("set clamp feedforward -1000")
    tap.ok(r[-1].startswith("OK"), "set clamp feedforward -1000", r)
    i0 = len(mb.writes)
    feed.err[1] = (C_THZ, -300.0)          # too low: the piezo climbs to max_v
    feed.err[2] = (F_THZ, +300.0)          # too high: clampf's piezo falls to min_v
    c.cmd("lock clamp")
    c.cmd("lock clampf")
    ok = wait_volts(C_PIEZO, 9.0, 10) and wait_volts(C_CUR, -0.5, 10) and wait_volts(F_PIEZO, -2.0, 10)
    tap.ok(ok, "regulating: piezo pinned at max_v 9, feed-forward current pinned at min_v -0.5,"
           " clampf at min_v -2", (reg_volts(C_PIEZO), reg_volts(C_CUR), reg_volts(F_PIEZO)))
    feed.err[1] = (C_THZ, +300.0)          # too high: the piezo falls to min_v
    feed.err[2] = (F_THZ, -300.0)
    ok = wait_volts(C_PIEZO, 1.0, 10) and wait_volts(C_CUR, 0.5, 10) and wait_volts(F_PIEZO, 2.0, 10)
    tap.ok(ok, "reversed: piezo at min_v 1, current at max_v 0.5, clampf at max_v 2",
           (reg_volts(C_PIEZO), reg_volts(C_CUR), reg_volts(F_PIEZO)))
    # Run-time current limits bind the feed-forward too.
    r = c.cmd("set clamp current_max_v 0.25")
    t_set = time.monotonic()
    i1 = len(mb.writes)
    ok = wait_volts(C_CUR, 0.25, 5)
    time.sleep(0.5)
    late = [(n, v) for t, a, vals in mb.writes[i1:] if t > t_set + 0.2
            for n, v in decode_writes([(a, vals)], ACT_C)[0] if n == "clamp.current" and v > 0.25 + EPS]
    tap.ok(r[-1].startswith("OK") and ok and not late,
           "set current_max_v 0.25 while regulating: feed-forward held at 0.25", (r, late[:5]))
    dec, probs = writes_since(i0)
    seen, bad = range_report(dec, ACT_C)
    tap.ok(not bad and not probs, "feed-forward phase: every write inside the limits (%s)"
           % fmt_ranges(seen), (bad + probs)[:5])
    c.cmd("set clamp current_max_v 0.5")

    # ---- reload with narrower limits -----------------------------------------
    feed.err[1] = (C_THZ, -300.0)          # piezo back up to 9, current to -0.5
    feed.err[2] = (F_THZ, -300.0)          # clampf stays at 2
    ok = wait_volts(C_PIEZO, 9.0, 10) and wait_volts(C_CUR, -0.5, 10)
    write_cfg(narrow=True)
    i2 = len(mb.writes)
    t_rel = time.monotonic()
    r = c.cmd("reload")
    ok2 = wait_volts(C_PIEZO, 6.0, 5) and wait_volts(C_CUR, -0.25, 5) and wait_volts(F_PIEZO, 1.0, 5)
    time.sleep(0.5)
    narrow = {"clamp.piezo": (2.0, 6.0), "clamp.current": (-0.25, 0.25), "clampf.piezo": (-1.0, 1.0)}
    dec, _ = decode_writes([(a, v) for t, a, v in mb.writes[i2:] if t > t_rel + 0.2], ACT_C)
    out = [(n, v) for n, v in dec if not (narrow[n][0] - EPS <= v <= narrow[n][1] + EPS)]
    tap.ok(ok and r[-1].startswith("OK") and ok2 and not out and len(dec) > 10,
           "reload with narrower limits while engaged on the old limit: outputs move to the new"
           " limits (piezo 6, current -0.25, clampf 1) and stay inside (%d writes checked)" % len(dec),
           (r, reg_volts(C_PIEZO), reg_volts(C_CUR), reg_volts(F_PIEZO), out[:5]))
    # Not engaged: a reload alone must bring a held output inside.
    c.cmd("unlock clamp")
    c.cmd("unlock clampf")
    feed.err.clear()
    write_cfg()
    c.cmd("reload")
    r1 = c.cmd("output clamp piezo 9")
    r2 = c.cmd("output clampf piezo -2")
    ok = wait_volts(C_PIEZO, 9.0) and wait_volts(F_PIEZO, -2.0)
    write_cfg(narrow=True)
    r3 = c.cmd("reload")
    ok2 = wait_volts(C_PIEZO, 6.0) and wait_volts(F_PIEZO, -1.0)
    st = status(c)
    tap.ok(r1[-1].startswith("OK") and r2[-1].startswith("OK") and ok and r3[-1].startswith("OK")
           and ok2 and st["clamp"]["state"] == "off",
           "reload with narrower limits while off: held outputs 9 V and -2 V are brought to 6 V"
           " and -1 V", (r1, r2, r3, reg_volts(C_PIEZO), reg_volts(F_PIEZO), st["clamp"]))
    write_cfg()
    c.cmd("reload")
    rc = d.stop()
    tap.eq(rc, 0, "clamp: wavelockd stops cleanly")

    # ---- restore from a state file with out-of-range outputs --------------------
    for engaged in (0, 1):
        env.write("wavelock.state", statefile_text([
            "laser name=clamp setpoint_thz=%.17g engaged=%d kp=0 ki=0.05 kd=0 piezo_v=42.5"
            " current_v=-9" % (C_THZ, engaged),
            "laser name=clampf setpoint_thz=%.17g engaged=%d kp=0 ki=0.05 kd=0 piezo_v=-1e9"
            % (F_THZ, engaged)]))
        if engaged:
            feed.err[1] = (C_THZ, -300.0)     # keeps pushing up against max_v
            feed.err[2] = (F_THZ, +300.0)     # keeps pushing down against min_v
        i3 = len(mb.writes)
        d = env.start_daemon(cfg)
        c = env.connect(d.port)
        ok = wait_until(lambda: len(mb.writes) >= i3 + 2, 5, 0.02)
        time.sleep(1.0)
        dec, probs = writes_since(i3)
        seen, bad = range_report(dec, ACT_C)
        firsts = {}
        for n, v in dec:
            firsts.setdefault(n, v)
        want = {"clamp.piezo": 9.0, "clamp.current": -0.5, "clampf.piezo": -2.0}
        st = status(c)
        tap.ok(ok and not bad and not probs and
               all(abs(firsts.get(k, 1e9) - v) < EPS for k, v in want.items()),
               "restore (engaged=%d) of piezo 42.5 V, current -9 V, clampf -1e9 V: first writes"
               " %s, all inside (%s)" % (engaged, {k: round(v, 4) for k, v in firsts.items()},
                                         fmt_ranges(seen)), (bad + probs)[:5])
        tap.ok(float(st["clamp"]["piezo_v"]) == 9.0 and float(st["clamp"]["current_v"]) == -0.5
               and float(st["clampf"]["piezo_v"]) == -2.0 and
               st["clamp"]["state"] == ("acquiring" if engaged else "off"),
               "restore (engaged=%d): status shows the clamped outputs, state %s"
               % (engaged, st["clamp"]["state"]), st)
        c.close()
        feed.err.clear()
        tap.eq(d.stop(), 0, "restore (engaged=%d): wavelockd stops cleanly" % engaged)

    feed.stop()
    dec, probs = decode_writes([(a, v) for _, a, v in mb.writes], ACT_C)
    seen, bad = range_report(dec, ACT_C)
    tap.ok(not bad and not probs, "clamp: all %d writes of the run inside the configured limits (%s)"
           % (len(dec), fmt_ranges(seen)), (bad + probs)[:10])
    mb.close()
    pub.close()


t_start = time.monotonic()
with Env() as env:
    test_faults(env)
tap.diag("fault part: %.1f s" % (time.monotonic() - t_start))
t1 = time.monotonic()
with Env() as env:
    test_split_resume(env)
    test_retune_in_flight(env)
    test_feedforward_change(env)
    test_clamp(env)
tap.diag("clamp part: %.1f s" % (time.monotonic() - t1))
tap.done()
