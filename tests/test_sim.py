#!/usr/bin/python3
"""End-to-end tests of wavelock-sim: the real program on free ports, its
Modbus TCP servers, wavemeter stream and control port, checked from the
outside (raw sockets, pymodbus and mbpoll as Modbus clients)."""

import re
import shutil
import signal
import socket
import struct
import subprocess
import time

from wltest import TAP, Env, kv, lab_conf, laser_conf, prog, wait_until

tap = TAP()

SP = {"a": 384.2304844, "b": 377.1074636, "c": 351.7251}
QUIET = {"walk_mhz_rts": 0.0, "sine_mhz": 0.0, "linear_mhz_per_h": 0.0}
LINE_RE = re.compile(r"^(\d+) (-?\d+|\d+\.\d{9}) (\d+)$")


def make_config(env, seed, extra_sim=""):
    p = {k: env.free_port() for k in ("ao1", "ao2", "stream", "control")}
    lasers = [
        # a: u16 piezo on ao1 register 0
        laser_conf("a", 1, SP["a"], device="ao1", reg=0, sim=dict(QUIET)),
        # b: f32 CDAB piezo on ao1 registers 4-5, s16 current on register 8
        laser_conf("b", 2, SP["b"], device="ao1", reg=4, fmt="f32", order="cdab", scale=1.0,
                   min_v=-5.0, max_v=5.0, start_v=0.0, current={"reg": 8},
                   sim=dict(QUIET)),
        # c: u16 piezo on ao2 with limits 1..9 V, drifting and noisy
        laser_conf("c", 3, SP["c"], device="ao2", reg=0, min_v=1.0, max_v=9.0,
                   sim={"noise_mhz": 2.0, "offset_mhz": 100.0, "modehop_s": 2.0}),
    ]
    text = lab_conf(lasers, [("ao1", p["ao1"]), ("ao2", p["ao2"])], p["stream"],
                    sim_control=p["control"], seed=seed)
    return env.write("sim%d.conf" % seed, text), p


def connect_control(port, proc, timeout=10):
    def attempt():
        if not proc.alive():
            return "dead"
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return None
    s = wait_until(attempt, timeout)
    if not s or s == "dead":
        tap.bail("wavelock-sim did not open its control port:\n" + proc.output())
    s.close()
    from wltest import Client
    return Client(port)


def truth(c, name):
    lines = c.cmd("truth " + name)
    assert lines[-1] == "OK", lines
    return kv(lines[0])


def writes(c):
    lines = c.cmd("writes")
    return {kv(l)["name"]: kv(l) for l in lines[:-1]}


def tuning_mhz(t):
    """error minus drift and hop: what the actuators contribute (+ offset)."""
    return float(t["error_mhz"]) - float(t["drift_mhz"]) - float(t["hop_mhz"])


class Stream:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def lines(self, seconds):
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.s.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                out.append(line.decode())
        return out

    def until(self, pred, timeout):
        """Read lines until pred(line) holds; returns the line or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines(0.2):
                if pred(line):
                    return line
        return None

    def window(self, lo_ms, hi_ms, timeout=10):
        """Lines with lo_ms < time_ms < hi_ms (reads until one at hi_ms or later)."""
        out = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines(0.2):
                ms = int(line.split()[2])
                if ms >= hi_ms:
                    return out
                if ms > lo_ms:
                    out.append(line)
        return out

    def close(self):
        self.s.close()


def sim_ms(c):
    """Simulated time now, ms."""
    return float(truth(c, "a")["time_s"]) * 1000.0


def sim_rate_ok(c, speed, pause=0.5):
    """Simulated time advances by speed * real time: the two readings of
    time_s bracket the real interval whatever the load (1 ms rounding)."""
    w1s = time.monotonic()
    s1 = float(truth(c, "a")["time_s"])
    w1r = time.monotonic()
    time.sleep(pause)
    w2s = time.monotonic()
    s2 = float(truth(c, "a")["time_s"])
    w2r = time.monotonic()
    d = (s2 - s1) / speed
    ok = (w2s - w1r) - 0.002 <= d <= (w2r - w1s) + 0.002
    if not ok:
        tap.diag("sim %.4f s vs real %.4f..%.4f s" % (d, w2s - w1r, w2r - w1s))
    return ok


def parse(line):
    ch, val, ms = line.split()
    return int(ch), float(val), int(ms)


# ---- a raw Modbus TCP client, to see exactly what the server does ----------

def mb_frame(tid, unit, pdu):
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def mb_transact(sock, pdu, unit=1, tid=7, timeout=1.0):
    sock.settimeout(timeout)
    sock.sendall(mb_frame(tid, unit, pdu))
    hdr = b""
    while len(hdr) < 7:
        chunk = sock.recv(7 - len(hdr))
        if not chunk:
            raise EOFError
        hdr += chunk
    rtid, _, length, _ = struct.unpack(">HHHB", hdr)
    body = b""
    while len(body) < length - 1:
        chunk = sock.recv(length - 1 - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    assert rtid == tid
    return body


def mb_probe(port, timeout=0.7):
    """'ok', 'timeout', 'closed' or 'refused' for a fresh read of register 0."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "error"
    try:
        r = mb_transact(s, struct.pack(">BHH", 3, 0, 1), timeout=timeout)
        return "ok" if r[0] == 3 else "exception"
    except socket.timeout:
        return "timeout"
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return "closed"
    finally:
        s.close()


def dump(cfg, seed, n):
    r = subprocess.run([prog("wavelock-sim"), "-c", cfg, "--seed", str(seed), "--dump", str(n)],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.splitlines()


# ---- calibration drift of the wavemeter, reference lasers ----------------------

REF_THZ = 384.2304844
RATE_PPB = 40.0 / 0.384          # 40 MHz/min at 384 THz, in ppb/min


def calib_config(env, name, calib="", refs=None, noise=0.0):
    """Lasers a, b, c (quiet, no noise, at their setpoints) and reference
    laser ref on channel 8; calib: extra keys of the sim group."""
    p = {k: env.free_port() for k in ("ao1", "stream", "control")}
    quiet = dict(QUIET, noise_mhz=noise)
    lasers = [laser_conf("a", 1, SP["a"], reg=0, sim=quiet),
              laser_conf("b", 2, SP["b"], reg=1, sim=quiet),
              laser_conf("c", 3, SP["c"], reg=2, sim=quiet)]
    if refs is None:
        refs = ('references = ( { name = "ref"; channel = 8; frequency = "%.7f THz"; '
                'noise_mhz = %r; exposure_ms = 10.0; } );' % (REF_THZ, noise))
    sim = 'sim = { seed = 3; control = "127.0.0.1:%d"; %s %s };\n' % (p["control"], calib, refs)
    text = lab_conf(lasers, [("ao1", p["ao1"])], p["stream"], top_extra=sim)
    return env.write(name, text), p


CAL_TRUE = {1: SP["a"], 2: SP["b"], 3: SP["c"], 8: REF_THZ}


def rel_ppb(ch, value):
    """Relative error of a reading against the channel's true frequency, ppb."""
    return (value / CAL_TRUE[ch] - 1.0) * 1e9


def sim_config_error(text, name):
    path = env.write(name, text)
    r = subprocess.run([prog("wavelock-sim"), "-c", path, "--dump", "1"], capture_output=True,
                       text=True, timeout=10)
    return r.returncode, r.stderr.strip()


with Env() as env:
    # ---- options and config errors --------------------------------------------
    r = subprocess.run([prog("wavelock-sim"), "-V"], capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 0 and r.stdout.startswith("wavelock-sim "), "-V prints the version")
    r = subprocess.run([prog("wavelock-sim"), "--help"], capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 0 and "--seed" in r.stdout and "--control" in r.stdout,
           "--help prints the usage")
    r = subprocess.run([prog("wavelock-sim")], capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 64 and "-c FILE" in r.stderr, "no config: usage error 64")

    bad = env.write("bad.conf", "lasers = ( { name = \"x\"; channel = 1; };\n")
    r = subprocess.run([prog("wavelock-sim"), "-c", bad], capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 78 and "bad.conf" in r.stderr, "syntax error: exit 78 naming the file",
           r.stderr)
    r = subprocess.run([prog("wavelock-sim"), "-c", env.path("missing.conf")],
                       capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 78 and "missing.conf" in r.stderr, "missing file: exit 78", r.stderr)

    cfg1, ports = make_config(env, 5)
    rtu = open(cfg1).read().replace('url = "tcp://127.0.0.1:%d"' % ports["ao2"],
                                    'url = "rtu:/dev/ttyUSB0?baud=19200"')
    rtu_path = env.write("rtu.conf", rtu)
    r = subprocess.run([prog("wavelock-sim"), "-c", rtu_path], capture_output=True, text=True,
                       timeout=10)
    tap.ok(r.returncode == 78 and "tcp://" in r.stderr and "rtu.conf" in r.stderr,
           "an rtu device: exit 78 with a message", r.stderr)

    # ---- replays ------------------------------------------------------------------
    rc1, d1 = dump(cfg1, 7, 600)
    rc2, d2 = dump(cfg1, 7, 600)
    rc3, d3 = dump(cfg1, 8, 600)
    tap.ok(rc1 == 0 and len(d1) == 600 and all(LINE_RE.match(l) for l in d1),
           "--dump prints N stream lines", "\n".join(d1[:5]))
    tap.ok(d1 == d2, "same seed: identical readings")
    same = sum(1 for x, y in zip(d1, d3) if x == y)
    tap.ok(rc3 == 0 and same < 10, "another seed: different readings (%d equal)" % same)


    # ---- calibration drift and reference lasers -----------------------------------
    # defaults: no calibration error, a reference reads its frequency exactly
    cfg0, p0 = calib_config(env, "cal0.conf")
    rc, d0 = dump(cfg0, 3, 5460)          # 60 s: 4 channels of 11 ms
    r0 = [parse(l) for l in d0]
    tap.ok(rc == 0 and r0[-1][2] >= 60000 and
           sorted(set(ch for ch, _, _ in r0)) == [1, 2, 3, 8] and
           all(v == CAL_TRUE[ch] for ch, v, _ in r0),
           "defaults: over 60 s every channel, the reference on 8 included, reads its true "
           "frequency exactly (no calibration drift)", d0[:8])
    cfg0z, _ = calib_config(env, "cal0z.conf", "calibration_offset_ppb = 0.0; "
                            "calibration_drift_ppb_per_min = 0.0; calibration_walk_ppb_rts = 0.0;")
    tap.eq(dump(cfg0z, 3, 2000)[1], d0[:2000], "calibration keys set to 0: the same readings")

    # the replay of a drifting wavemeter: the exact linear error on every channel
    cal = "calibration_drift_ppb_per_min = %r;" % RATE_PPB
    cfg1c, p1 = calib_config(env, "cal1.conf", cal)
    rc, dc1 = dump(cfg1c, 3, 5460)
    r1 = [parse(l) for l in dc1]
    worst = max(abs(rel_ppb(ch, v) - RATE_PPB * ms / 60000.0) for ch, v, ms in r1)
    ref1 = [(v, ms) for ch, v, ms in r1 if ch == 8]
    moved = (ref1[-1][0] - ref1[0][0]) * 1e6
    # 40 MHz/min at 384 THz is 104.17 ppb/min: 40.024 MHz/min at the reference's 384.23 THz
    want = RATE_PPB * 1e-9 * REF_THZ * 1e6 * (ref1[-1][1] - ref1[0][1]) / 60000.0
    tap.ok(rc == 0 and worst < 0.01,
           "--dump, 40 MHz/min: every channel reads f_true * (1 + rate * t) "
           "(worst deviation %.4f ppb)" % worst)
    tap.ok(abs(moved - want) < 0.003,
           "--dump: the reference's reading moves %.3f MHz in %.3f s (want %.3f)"
           % (moved, (ref1[-1][1] - ref1[0][1]) / 1000.0, want))
    walk = "calibration_walk_ppb_rts = 2.0; calibration_offset_ppb = 25.0;"
    cfgw, _ = calib_config(env, "calw.conf", walk)
    rw1, rw2, rw3 = dump(cfgw, 3, 3000)[1], dump(cfgw, 3, 3000)[1], dump(cfgw, 4, 3000)[1]
    tap.ok(rw1 == rw2 and rw1 != rw3, "a calibration walk replays with its seed, not another's")
    e_w = [rel_ppb(*parse(l)[:2]) for l in rw1]
    tap.ok(abs(e_w[0] - 25.0) < 2.0 and max(abs(x - y) for x, y in zip(e_w, e_w[1:])) < 2.0,
           "the walk starts at calibration_offset_ppb and is continuous across channels "
           "(%.2f ppb at the start, %.2f at the end)" % (e_w[0], e_w[-1]))

    # the live simulator, ten times faster than real time
    simc = env.start_sim(cfg1c, extra=["--speed", "10"])
    cc = connect_control(p1["control"], simc)
    cl = kv(cc.cmd("calib")[0])
    tap.ok(abs(float(cl["rate_ppb_per_min"]) - RATE_PPB) < 1e-4 and
           abs(float(cl["rate_mhz_per_min_at_384thz"]) - 40.0) < 1e-4 and
           abs(float(cl["ppb"]) - RATE_PPB * float(cl["time_s"]) / 60.0) < 0.01 and
           abs(float(cl["mhz_at_384thz"]) - float(cl["ppb"]) * 0.384) < 1e-4,
           "calib: the error now and the rate, in ppb and MHz at 384 THz", cl)
    tr = truth(cc, "ref")
    tap.ok(tr["reference"] == "1" and tr["channel"] == "8" and
           float(tr["true_thz"]) == REF_THZ and float(tr["error_mhz"]) == 0.0,
           "truth ref: a reference laser at its fixed frequency on channel 8", tr)
    tap.ok(len(cc.cmd("truth")) == 5 and truth(cc, "a")["reference"] == "0",
           "truth lists the lasers and the reference")
    stc = Stream(p1["stream"])
    t0 = float(cl["time_s"]) * 1000.0
    live = [parse(l) for l in stc.window(t0 + 100, t0 + 8100, timeout=20)]
    worst = max(abs(rel_ppb(ch, v) - RATE_PPB * ms / 60000.0) for ch, v, ms in live)
    tap.ok(len(live) > 500 and set(ch for ch, _, _ in live) == {1, 2, 3, 8} and worst < 0.01,
           "live stream: every channel carries the same relative error rate * t "
           "(%d readings, worst %.4f ppb)" % (len(live), worst))
    refl = [(v, ms) for ch, v, ms in live if ch == 8]
    moved = (refl[-1][0] - refl[0][0]) * 1e6
    want = RATE_PPB * 1e-9 * REF_THZ * 1e6 * (refl[-1][1] - refl[0][1]) / 60000.0
    tap.ok(abs(moved - want) < 0.003 and moved > 4.0,
           "live: the reference's reading moves %.3f MHz over %.1f s of simulated time "
           "(want %.3f)" % (moved, (refl[-1][1] - refl[0][1]) / 1000.0, want))

    # a step of the calibration moves every channel at once
    b0 = sim_ms(cc)
    tap.eq(cc.cmd("calib step 100"), ["OK"], "calib step 100")
    b1 = sim_ms(cc)
    cl = kv(cc.cmd("calib")[0])
    tap.ok(abs(float(cl["steps_ppb"]) - 100.0) < 1e-9 and
           abs(float(cl["ppb"]) - 100.0 - RATE_PPB * float(cl["time_s"]) / 60.0) < 0.01,
           "calib shows the step", cl)
    around = [parse(l) for l in stc.window(b0 - 1000, b1 + 1000, timeout=20)]
    before = [(ch, rel_ppb(ch, v) - RATE_PPB * ms / 60000.0) for ch, v, ms in around if ms <= b0]
    after = [(ch, rel_ppb(ch, v) - RATE_PPB * ms / 60000.0) for ch, v, ms in around if ms > b1]
    tap.ok(before and after and all(abs(x) < 0.01 for _, x in before) and
           set(ch for ch, _ in after) == {1, 2, 3, 8} and
           all(abs(x - 100.0) < 0.01 for _, x in after),
           "the step shows on every channel at once: +100 ppb relative, %s MHz"
           % ", ".join("%d: %.3f" % (ch, 100e-9 * CAL_TRUE[ch] * 1e6) for ch in (1, 2, 3, 8)),
           (before[-4:], after[:4]))

    # the rate changes at run time, the error stays continuous
    tap.eq(cc.cmd("calib rate 0"), ["OK"], "calib rate 0")
    e1 = kv(cc.cmd("calib")[0])
    time.sleep(0.3)
    e2 = kv(cc.cmd("calib")[0])
    tap.ok(float(e1["rate_ppb_per_min"]) == 0.0 and float(e1["ppb"]) == float(e2["ppb"]) and
           float(e2["time_s"]) > float(e1["time_s"]) + 2.0,
           "rate 0: the error stays at %.3f ppb" % float(e2["ppb"]), (e1, e2))
    m = sim_ms(cc)
    later = [parse(l) for l in stc.window(m + 100, m + 1100, timeout=10)]
    tap.ok(later and all(abs(rel_ppb(ch, v) - float(e2["ppb"])) < 0.01 for ch, v, _ in later),
           "and every channel reads with that constant error", later[:4])
    tap.eq(cc.cmd("calib rate -52.08333333"), ["OK"], "calib rate -52.08333333 (-20 MHz/min)")
    tap.ok(abs(float(kv(cc.cmd("calib")[0])["rate_mhz_per_min_at_384thz"]) + 20.0) < 1e-6,
           "calib shows -20 MHz/min at 384 THz")

    # the reference can still be made to jump (a reference laser that unlocked)
    tap.eq(cc.cmd("drift ref 200"), ["OK"], "drift ref 200")
    tr = truth(cc, "ref")
    tap.ok(abs(float(tr["error_mhz"]) - 200.0) < 1e-6, "the reference's true frequency jumped", tr)
    tap.eq(cc.cmd("hop ref 5000"), ["OK"], "hop ref 5000")
    tr = truth(cc, "ref")
    tap.ok(tr["mode_hop"] == "1" and abs(float(tr["error_mhz"]) - 5200.0) < 1e-6,
           "a reference laser can be made to hop", tr)

    tap.ok(cc.cmd("calib step lots")[-1].startswith("ERR 422"), "calib step lots: 422")
    tap.ok(cc.cmd("calib step 1e6")[-1].startswith("ERR 422"), "calib step beyond 1e5 ppb: 422")
    tap.ok(cc.cmd("calib rate nan")[-1].startswith("ERR 422"), "calib rate nan: 422")
    tap.ok(cc.cmd("calib rate")[-1].startswith("ERR 400"), "calib rate without a value: 400")
    tap.ok(cc.cmd("calib reset 1")[-1].startswith("ERR 400"), "calib reset: 400")
    hl = cc.cmd("help")
    tap.ok(any(l.startswith("calib [step <ppb> | rate <ppb_per_min>]") for l in hl),
           "help lists calib", hl)
    info = kv(cc.cmd("info")[0])
    tap.ok(info.get("references") == "1" and info.get("lasers") == "3", "info counts the reference",
           info)
    stc.close()
    cc.close()
    out = simc.output()
    tap.eq(simc.stop(), 0, "stops cleanly")
    tap.ok("calibration error: 0 ppb + 104.167 ppb/min" in out and "runtime error" not in out,
           "the calibration drift is logged at start", out[-1500:])

    # config errors: exit 78 with file:line
    base = open(cfg0).read()
    ref_line = [i + 1 for i, l in enumerate(base.splitlines()) if "references" in l][0]
    bad = [
        ('channel = 8;', 'channel = 2;', "sim.references.[0].channel: channel 2 is already used "
         'by laser "b"'),
        ('name = "ref";', 'name = "C";', 'sim.references.[0].name: the name of laser "c"'),
        ('frequency = "384.2304844 THz";', 'frequency = "384.2 furlongs";',
         "sim.references.[0].frequency"),
        ('frequency = "384.2304844 THz";', '', "sim.references.[0].frequency: missing"),
        ('noise_mhz = 0.0;', 'noise_mhz = -1.0;', "sim.references.[0].noise_mhz: must be"),
        ('exposure_ms = 10.0;', 'exposure_ms = 0.0;', "sim.references.[0].exposure_ms: must be"),
        ('exposure_ms = 10.0;', 'exposure = 10.0;', "sim.references.[0].exposure"),
        ('references = (', 'calibration_drift_ppb_per_min = 2e5; references = (',
         "sim.calibration_drift_ppb_per_min: must be between"),
        ('references = (', 'calibration_walk_ppb_rts = -1.0; references = (',
         "sim.calibration_walk_ppb_rts: must be"),
        ('references = (', 'calibration_offset_ppb = "x"; references = (',
         "sim.calibration_offset_ppb"),
        ('} );', '}, { name = "ref2"; channel = 8; frequency = 351.0; } );',
         'channel 8 is already used by reference "ref"'),
        ('} );', '}, { name = "REF"; channel = 9; frequency = 351.0; } );',
         'duplicate reference name'),
    ]
    for i, (old, new, msg) in enumerate(bad):
        assert old in base, old
        rc, err = sim_config_error(base.replace(old, new, 1), "calbad%d.conf" % i)
        tap.ok(rc == 78 and ("calbad%d.conf:%d: " % (i, ref_line)) in err and msg in err,
               "config error: %s" % msg, err)

    # ---- the live simulator -----------------------------------------------------
    sim = env.start_sim(cfg1, extra=["--seed", "7"])
    ctl = connect_control(ports["control"], sim)
    tap.ok(ctl.greeting.startswith("* wavelock-sim "), "control greeting", ctl.greeting)
    tap.eq(ctl.cmd("ping"), ["OK"], "ping")

    st = Stream(ports["stream"])
    live = []
    for _ in range(15):                   # looking at the truth must not change readings
        live += st.lines(0.1)
        ctl.cmd("truth")
    tap.ok(len(live) > 20 and all(LINE_RE.match(l) for l in live),
           "stream lines are '<channel> <THz 9 decimals> <time_ms>' (%d lines)" % len(live),
           "\n".join(live[:5]))
    rd = [parse(l) for l in live]
    chans = [x[0] for x in rd]
    tap.ok(set(chans) == {1, 2, 3} and
           all(chans[i + 1] == chans[i] % 3 + 1 for i in range(len(chans) - 1)),
           "channels read in turn 1, 2, 3, 1, ...")
    steps = set(rd[i + 1][2] - rd[i][2] for i in range(len(rd) - 1))
    tap.eq(steps, {11}, "cadence: exposure 10 ms + switch 1 ms per channel")
    tap.ok(rd[-1][2] - rd[0][2] > 0, "time_ms increases")
    ok = all(abs((v - SP["abc"[ch - 1]]) * 1e6 - (100.0 if ch == 3 else 0.0)) < 60
             for ch, v, _ in rd)
    tap.ok(ok, "readings sit near setpoint + offset")

    # the live stream is the replay of --dump for the same seed (no writes yet)
    by_ms = {}
    for line in d1:
        by_ms[int(line.split()[2])] = line
    common = [l for l in live if int(l.split()[2]) in by_ms]
    tap.ok(len(common) > 20 and all(by_ms[int(l.split()[2])] == l for l in common),
           "live readings, with truth queries in between, equal the --dump replay of the "
           "same seed (%d compared)" % len(common))

    tap.ok(sim_rate_ok(ctl, 1.0), "simulated time runs with the monotonic clock (speed 1)")
    info = kv(ctl.cmd("info")[0])
    tap.ok(info.get("seed") == "7" and info.get("stream_clients") == "1",
           "info shows the seed and the stream client", info)

    # ---- truth and actuator writes ----------------------------------------------
    t = truth(ctl, "a")
    tap.ok(t["name"] == "a" and float(t["piezo_v"]) == 5.0 and abs(tuning_mhz(t)) < 1e-3 and
           t["mode_hop"] == "0" and abs(float(t["true_thz"]) - SP["a"]) < 1e-4,
           "truth a: at start_v, on the setpoint", t)
    all_lines = ctl.cmd("truth")
    tap.ok(len(all_lines) == 4 and [kv(l)["name"] for l in all_lines[:3]] == ["a", "b", "c"],
           "truth lists every laser")
    tap.ok(ctl.cmd("truth nosuch")[-1].startswith("ERR 404"), "truth of an unknown laser: 404")

    from pymodbus.client import ModbusTcpClient
    mb = ModbusTcpClient("127.0.0.1", port=ports["ao1"], timeout=3)
    tap.ok(mb.connect(), "pymodbus connects to device ao1")
    regs = mb.read_holding_registers(0, 10, slave=1)
    tap.ok(not regs.isError() and regs.registers[0] == 32768,
           "registers start at start_v encoded (u16 5 V = 32768)", regs)

    # u16, function 06: 6 V on a's piezo
    mb.write_register(0, 39321, slave=1)
    time.sleep(0.2)
    t = truth(ctl, "a")
    tap.ok(abs(float(t["piezo_v"]) - 6.0) < 1e-6 and abs(tuning_mhz(t) - 300.0) < 0.01,
           "u16 write of 6 V moves a by 300 MHz", t)

    # f32 CDAB, function 16: 1.5 V on b's piezo
    def cdab(v):
        hi, lo = struct.unpack(">HH", struct.pack(">f", v))
        return [lo, hi]
    mb.write_registers(4, cdab(1.5), slave=1)
    time.sleep(0.2)
    t = truth(ctl, "b")
    tap.ok(abs(float(t["piezo_v"]) - 1.5) < 1e-6 and abs(tuning_mhz(t) - 450.0) < 0.01,
           "f32 CDAB write of 1.5 V moves b by 450 MHz", t)

    # half an f32 is not a value yet
    half = cdab(1.234)
    mb.write_register(4, half[0], slave=1)
    time.sleep(0.1)
    t1 = truth(ctl, "b")
    mb.write_register(5, half[1], slave=1)
    time.sleep(0.1)
    t2 = truth(ctl, "b")
    tap.ok(abs(float(t1["piezo_v"]) - 1.5) < 1e-6 and abs(float(t2["piezo_v"]) - 1.234) < 1e-6,
           "an f32 applies once both of its registers are written", (t1, t2))

    # s16 current: -0.5 V -> raw -1638
    mb.write_register(8, 65536 - 1638, slave=1)
    time.sleep(1.3)                       # current lag 100 ms
    t = truth(ctl, "b")
    want = 1.234 * 300.0 + 50.0 * (-1638 / 3276.7)
    tap.ok(abs(float(t["current_v"]) + 0.5) < 1e-3 and abs(tuning_mhz(t) - want) < 0.05,
           "s16 current write of -0.5 V adds -25 MHz to b", t)

    # a real Modbus tool: mbpoll writes an f32 (low word first = CDAB)
    if shutil.which("mbpoll"):
        r = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(ports["ao1"]), "-a", "1",
                            "-t", "4:float", "-0", "-r", "4", "-1", "127.0.0.1", "--", "-2.25"],
                           capture_output=True, text=True, timeout=10)
        time.sleep(0.1)
        t = truth(ctl, "b")
        tap.ok(r.returncode == 0 and abs(float(t["piezo_v"]) + 2.25) < 1e-6,
               "mbpoll f32 write reaches b's piezo", r.stdout + r.stderr + str(t))
    else:
        tap.skip("mbpoll f32 write", "mbpoll not installed")

    # out of the limits: 7 V on b (max 5) and 0 V on c (min 1)
    mb.write_registers(4, cdab(7.0), slave=1)
    mb2 = ModbusTcpClient("127.0.0.1", port=ports["ao2"], timeout=3)
    mb2.connect()
    mb2.write_register(0, 0, slave=1)
    mb2.write_register(0, 32768, slave=1)
    w = writes(ctl)
    tap.ok(w["a.piezo"]["count"] == "1" and float(w["a.piezo"]["min_v"]) == 6.0 and
           float(w["a.piezo"]["max_v"]) == 6.0 and w["a.piezo"]["limit_violations"] == "0",
           "writes: a.piezo count 1, 6 V, no violation", w.get("a.piezo"))
    wb = w["b.piezo"]
    tap.ok(wb["count"] == "4" and float(wb["max_v"]) == 7.0 and float(wb["min_v"]) == -2.25 and
           wb["limit_violations"] == "1", "writes: b.piezo counts the 7 V write as a violation", wb)
    wc = w["c.piezo"]
    tap.ok(wc["count"] == "2" and float(wc["min_v"]) == 0.0 and wc["limit_violations"] == "1",
           "writes: c.piezo counts 0 V under min_v 1 V", wc)
    tap.ok(w["b.current"]["count"] == "1" and w["b.current"]["limit_violations"] == "0",
           "writes: b.current", w["b.current"])
    wl = ctl.cmd("writes ao2")
    tap.ok(len(wl) == 2 and kv(wl[0])["name"] == "c.piezo", "writes <device> lists that device only",
           wl)
    tap.ok(ctl.cmd("writes nosuch")[-1].startswith("ERR 404"), "writes of an unknown device: 404")

    # the server answers errors as Modbus exceptions and stays up
    r = mb.read_holding_registers(5000, 2, slave=1)
    tap.ok(r.isError(), "read beyond the map: exception")
    tap.ok(not mb.read_holding_registers(0, 1, slave=1).isError(), "server still answers after it")

    # ---- several clients; a stalled one blocks nobody -------------------------------
    stall = socket.create_connection(("127.0.0.1", ports["ao1"]), timeout=5)
    stall.sendall(mb_frame(1, 1, struct.pack(">BHH", 3, 0, 1))[:5])   # half a request
    t0 = time.monotonic()
    res = [mb_probe(ports["ao1"], timeout=3) for _ in range(5)]
    tap.ok(res == ["ok"] * 5, "a half-sent request on one connection blocks no one", res)

    # ---- mode hop -------------------------------------------------------------------
    t0 = sim_ms(ctl)
    tap.ok(ctl.cmd("hop c 5000") == ["OK"], "hop c 5000")
    t1 = sim_ms(ctl)
    t = truth(ctl, "c")
    tap.ok(t["mode_hop"] == "1" and float(t["hop_mhz"]) == 5000.0 and
           abs(float(t["error_mhz"]) - 5100.0) < 100.0, "truth shows the hop", t)
    got = [parse(l) for l in st.window(t1 + 1, t0 + 1800) if l.startswith("3 ")]
    tap.ok(got and all(abs((v - SP["c"]) * 1e6 - 5100.0) < 100.0 for _, v, _ in got),
           "channel 3 readings show the hop", got)
    got = [parse(l) for l in st.window(t0 + 2200, t0 + 2700) if l.startswith("3 ")]
    tap.ok(got and all(abs((v - SP["c"]) * 1e6 - 100.0) < 100.0 for _, v, _ in got),
           "channel 3 readings fall back after modehop_s (2 s)", got)
    t = truth(ctl, "c")
    tap.ok(t["mode_hop"] == "0" and abs(float(t["error_mhz"]) - 100.0) < 100.0 and
           t["hops"] == "1", "truth: the laser fell back", t)
    tap.ok(ctl.cmd("hop nosuch")[-1].startswith("ERR 404"), "hop of an unknown laser: 404")
    tap.ok(ctl.cmd("hop c lots")[-1].startswith("ERR 422"), "hop with a bad size: 422")

    # ---- drift step -----------------------------------------------------------------
    before = truth(ctl, "a")
    tap.eq(ctl.cmd("drift a -40"), ["OK"], "drift a -40")
    after = truth(ctl, "a")
    tap.ok(abs(float(after["drift_mhz"]) - float(before["drift_mhz"]) + 40.0) < 1e-6 and
           abs(float(after["error_mhz"]) - float(before["error_mhz"]) + 40.0) < 1e-3,
           "drift step moves the free-running frequency", (before, after))

    # ---- dropout --------------------------------------------------------------------
    t0 = sim_ms(ctl)
    tap.eq(ctl.cmd("dropout 2 2.0 -3"), ["OK"], "dropout 2 2.0 -3")
    t1 = sim_ms(ctl)
    got = st.window(t1 + 1, t0 + 1800)
    ch2 = [parse(l)[1] for l in got if l.startswith("2 ")]
    others = [parse(l)[1] for l in got if not l.startswith("2 ")]
    tap.ok(ch2 and all(v == -3 for v in ch2) and others and all(v > 0 for v in others),
           "channel 2 reads -3 during the dropout, the others read on", got[:8])
    got = [parse(l)[1] for l in st.window(t0 + 2200, t0 + 2700) if l.startswith("2 ")]
    tap.ok(got and all(v > 0 for v in got), "channel 2 recovers", got)
    t0 = sim_ms(ctl)
    tap.eq(ctl.cmd("dropout all 1.0"), ["OK"], "dropout all 1.0")
    t1 = sim_ms(ctl)
    got = st.window(t1 + 1, t0 + 900)
    tap.ok(got and all(parse(l)[1] == -1 for l in got), "every channel reads -1 (default code)",
           got[:6])
    got = st.window(t0 + 1100, t0 + 1400)
    tap.ok(got and all(parse(l)[1] > 0 for l in got), "every channel recovers", got[:6])
    tap.ok(ctl.cmd("dropout 9 1")[-1].startswith("ERR 404"), "dropout of an unused channel: 404")
    tap.ok(ctl.cmd("dropout 2 soon")[-1].startswith("ERR 422"), "dropout with a bad time: 422")

    # ---- outages --------------------------------------------------------------------
    tap.eq(mb_probe(ports["ao1"]), "ok", "ao1 answers before the outages")

    tap.eq(ctl.cmd("outage ao1 silent 2"), ["OK"], "outage ao1 silent 2")
    tap.eq(mb_probe(ports["ao1"]), "timeout", "silent: connects, no answer")
    tap.eq(mb_probe(ports["ao2"]), "ok", "silent: the other device still answers")
    info = ctl.cmd("info")
    tap.ok(any("device=ao1" in l and "outage=silent" in l for l in info), "info shows the outage",
           info)
    tap.ok(wait_until(lambda: mb_probe(ports["ao1"]) == "ok", 10), "silent: answers again after")

    keep = socket.create_connection(("127.0.0.1", ports["ao1"]), timeout=5)
    mb_transact(keep, struct.pack(">BHH", 3, 0, 1))
    tap.eq(ctl.cmd("outage ao1 drop 2"), ["OK"], "outage ao1 drop 2")
    try:
        keep.settimeout(3)
        gone = keep.recv(10) == b""
    except (ConnectionResetError, socket.timeout):
        gone = True
    tap.ok(gone, "drop: an open connection is closed")
    tap.eq(mb_probe(ports["ao1"]), "closed", "drop: new connections are closed")
    tap.eq(mb_probe(ports["ao2"]), "ok", "drop: the other device still answers")
    tap.ok(wait_until(lambda: mb_probe(ports["ao1"]) == "ok", 10), "drop: answers again after")

    tap.eq(ctl.cmd("outage ao1 refuse 2"), ["OK"], "outage ao1 refuse 2")
    tap.eq(mb_probe(ports["ao1"]), "refused", "refuse: connections are refused")
    tap.eq(mb_probe(ports["ao2"]), "ok", "refuse: the other device still answers")
    tap.ok(wait_until(lambda: mb_probe(ports["ao1"]) == "ok", 10), "refuse: answers again after")

    tap.eq(ctl.cmd("outage all refuse 60"), ["OK"], "outage all refuse 60")
    tap.ok(mb_probe(ports["ao2"]) == "refused", "all: ao2 refuses too")
    tap.eq(ctl.cmd("outage all off"), ["OK"], "outage all off ends it early")
    tap.ok(wait_until(lambda: mb_probe(ports["ao2"]) == "ok", 5), "ao2 answers again")
    tap.ok(ctl.cmd("outage nosuch drop 1")[-1].startswith("ERR 404"), "outage of an unknown device")
    tap.ok(ctl.cmd("outage ao1 explode 1")[-1].startswith("ERR 422"), "outage with a bad mode")
    tap.ok(ctl.cmd("outage ao1 drop")[-1].startswith("ERR 400"), "outage without seconds")

    # ---- framing of the control port ------------------------------------------------
    tap.ok(ctl.cmd("frobnicate")[-1].startswith("ERR 404"), "unknown command: 404")
    tap.ok(ctl.cmd("TRUTH a")[-1] == "OK", "command words are case-insensitive")
    tap.ok(ctl.cmd("drift a")[-1].startswith("ERR 400"), "missing argument: 400")
    tap.ok(ctl.cmd("x" * 3000)[-1].startswith("ERR 413"), "too-long line: 413")
    tap.eq(ctl.cmd("ping"), ["OK"], "the connection stays usable after 413")
    ctl.send(b"\xff\xfb\x01ping\r\n")
    tap.eq(ctl.response(), ["OK"], "telnet negotiation bytes and CRLF are accepted")
    tap.ok(sim.alive(), "still running after all that")
    mb.close()
    mb2.close()
    stall.close()
    keep.close()
    st.close()
    tap.eq(ctl.cmd("quit"), ["OK"], "quit answers OK")
    try:
        ctl.readline(timeout=3)
        closed = False
    except (EOFError, ConnectionResetError):
        closed = True
    tap.ok(closed, "quit closes the connection")

    # ---- clean shutdown -------------------------------------------------------------
    sim.signal(signal.SIGTERM)
    rc = sim.wait(10)
    tap.eq(rc, 0, "SIGTERM: exit 0")
    out = sim.output()
    tap.ok("runtime error" not in out and "ERROR: AddressSanitizer" not in out,
           "no sanitizer reports", out[-2000:])

    sim2 = env.start_sim(cfg1, extra=["--speed", "10"])
    c2 = connect_control(ports["control"], sim2)
    tap.ok(sim_rate_ok(c2, 10.0), "--speed 10: simulated time runs ten times faster")
    c2.close()
    sim2.signal(signal.SIGINT)
    tap.eq(sim2.wait(10), 0, "SIGINT: exit 0 (and the ports were free again)")

    # ---- a stream client that never reads slows no one --------------------------
    sim3 = env.start_sim(cfg1, extra=["--speed", "1000"])
    c3 = connect_control(ports["control"], sim3)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", ports["stream"]))
    time.sleep(2.0)                       # ~180000 lines: far more than any buffer
    fast = Stream(ports["stream"])
    n = len(fast.lines(2.0))
    tap.ok(n > 1000, "with a stalled stream client, another still gets readings (%d in 2 s)" % n)
    tap.eq(c3.cmd("ping"), ["OK"], "and the control port answers")
    tap.ok(wait_until(lambda: "does not keep up" in sim3.output(), 5),
           "the stalled client loses lines (logged)")
    slow.close()
    fast.close()
    c3.close()
    tap.eq(sim3.stop(), 0, "stops cleanly")

tap.done()
