#!/usr/bin/env python3
"""Calibration mode wlmdata (DESIGN.md section 7, issue 13) against the
libwlmData.so double: wavelockd calls the library's
Calibration(cOther = 2, cReturnFrequency = 2, f_ref, channel)

  - every period_s, with the configured reference frequency and channel
    (checked in the double's event log), off the event loop (the daemon
    answers `ping` while the call blocks);
  - never while the reference reading is out of tolerance_mhz (the double
    moves it 100 MHz away, or makes it an error code); `calibrate` is then
    refused with 409;
  - during the call the wavemeter measures nothing: the laser holds (never
    fault) and locks again afterwards;
  - `calibrate` (control) forces one and is answered when it is done;
    `calibration` shows mode=wlmdata and the counters;
  - a library without Calibration() refuses mode wlmdata at start (exit 1,
    one clear line).
"""

import os
import re
import time

from wltest import TAP, Env, ModbusRecorder, kv, lab_conf, laser_conf, prog, wait_until
from hwtest import fake_wlmdata_path, status_all

tap = TAP()
C_NM_THZ = 299792.458
NM1, NM_REF = 780.24, 794.978851
F_REF = C_NM_THZ / NM_REF
PERIOD = 10.0
CAL_MS = 1500


def conf(mb_port, library):
    lasers = [laser_conf("wlm1", 1, C_NM_THZ / NM1, reg=0,
                         pid={"kp": 0.0, "ki": 0.002, "kd": 0.0})]
    text = lab_conf(lasers, [("ao1", mb_port)], 1, state_file="")
    wm = ('wavemeter = { backend = "wlmdata"; library = "%s"; stale_ms = 1000; poll_ms = 50;'
          ' callback_silence_ms = 500; };' % library)
    text, n = re.subn(r"^wavemeter = \{.*\};$", lambda m: wm, text, flags=re.M)
    assert n == 1
    return text + ('calibration = { channel = 2; frequency = "%s nm"; mode = "wlmdata";\n'
                   '                tolerance_mhz = 50.0; period_s = %g; };\n' % (NM_REF, PERIOD))


class Control:
    def __init__(self, env):
        self.env, self.path, self.seq = env, env.path("wlm.control"), 0

    def set(self, text):
        self.seq += 1
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("seq=%d %s\n" % (self.seq, text))
        os.rename(tmp, self.path)


def start(env, cfg, ctl, settings, wait=True):
    saved = {k: os.environ.get(k) for k in ("FAKE_WLM_SETTINGS", "FAKE_WLM_CONTROL", "FAKE_WLM_LOG")}
    os.environ["FAKE_WLM_SETTINGS"] = settings
    os.environ["FAKE_WLM_CONTROL"] = ctl.path
    os.environ["FAKE_WLM_LOG"] = env.path("wlm.events")
    try:
        if wait:
            return env.start_daemon(cfg)
        return env.start("wavelockd", [prog("wavelockd"), "-f", "-c", cfg])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def calls(env):
    try:
        with open(env.path("wlm.events")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [kv(x[len("calibration "):]) for x in lines if x.startswith("calibration ")]


lib = fake_wlmdata_path()
if not os.path.exists(lib):
    tap.bail("%s is not built (make check builds it)" % lib)

with Env() as env:
    mb = ModbusRecorder()
    ctl = Control(env)
    ctl.set("")
    cfg = env.write("wlm.conf", conf(mb.port, lib))
    t_start = time.monotonic()
    d = start(env, cfg, ctl, "channels=1,2 nm1=%r nm2=%r period_ms=20 cal_ms=%d"
              % (NM1, NM_REF, CAL_MS))
    c = env.connect(d.port)

    def state():
        return status_all(c)["wlm1"]["state"]

    def calib():
        lines = c.cmd("calibration")
        return kv(lines[0])

    tap.ok(wait_until(lambda: state() == "locked", 20, 0.1), "wlm1 locks (%s)" % state())
    cal = calib()
    tap.ok(cal.get("mode") == "wlmdata" and cal.get("state") == "tracking"
           and cal.get("calibrations") == "0",
           "calibration: mode=wlmdata state=tracking, none yet (%s)" % cal)

    # ---- the periodic call, off the loop; the laser holds meanwhile ------------------
    ok = wait_until(lambda: len(calls(env)) >= 1, PERIOD + 5, 0.02)
    t_call = time.monotonic()
    first = calls(env)[0] if ok else {}
    pings = []
    seen = set()
    while time.monotonic() < t_call + CAL_MS / 1000.0 - 0.2:
        t0 = time.monotonic()
        pong = c.cmd("ping")[-1]
        pings.append(time.monotonic() - t0)
        seen.add(state())
        time.sleep(0.05)
    tap.ok(ok and abs((t_call - t_start) - PERIOD) < 3.0,
           "Calibration() called %.1f s after the start (period_s %g)" % (t_call - t_start, PERIOD))
    tap.ok(first.get("type") == "2" and first.get("unit") == "2"
           and abs(float(first.get("value", 0)) - F_REF) < 1e-9 and first.get("channel") == "2",
           "called with type=2 (cOther) unit=2 (cReturnFrequency) value=%s (want %.9f) channel=%s"
           % (first.get("value"), F_REF, first.get("channel")))
    tap.ok(pings and max(pings) < 0.5,
           "the loop answers during the %d ms call (slowest ping %.3f s)"
           % (CAL_MS, max(pings) if pings else -1))
    tap.ok("holding" in seen and "fault" not in seen,
           "during the calibration the laser holds, never fault (states seen: %s)"
           % ",".join(sorted(seen)))
    tap.ok(wait_until(lambda: state() == "locked", 5, 0.1),
           "locked again after it (%s)" % state())
    with open(d.log_path) as f:
        log = f.read()
    tap.ok("calibrated on channel 2" in log, "the result is logged")

    # ---- second period ----------------------------------------------------------------
    ok = wait_until(lambda: len(calls(env)) >= 2, PERIOD + 4, 0.05)
    t2 = time.monotonic()
    tap.ok(ok and abs(t2 - t_call - PERIOD) < 3.0,
           "the next call %.1f s later (period_s %g)" % (t2 - t_call, PERIOD))
    wait_until(lambda: calib().get("running") == "0", 5, 0.1)

    # ---- reference out of tolerance: never called --------------------------------------
    off_nm = C_NM_THZ / (F_REF + 100e-6)
    ctl.set("nm2=%r" % off_nm)
    tap.ok(wait_until(lambda: calib().get("reason") == "tolerance", 3, 0.05),
           "reference 100 MHz off: hold, reason tolerance (%s)" % calib())
    r = c.cmd("calibrate")[-1]
    tap.ok(r.startswith("ERR 409"), "calibrate now: %s" % r)
    n = len(calls(env))
    time.sleep(PERIOD + 2)
    tap.ok(len(calls(env)) == n, "no Calibration() for %g s while out of tolerance" % (PERIOD + 2))
    ctl.set("err2=-3")
    time.sleep(1.0)
    tap.ok(calib().get("state") == "hold" and len(calls(env)) == n,
           "reference underexposed: hold (%s), no call" % calib().get("reason"))

    # ---- back: calibrate forces one, answered when done ---------------------------------
    ctl.set("")
    wait_until(lambda: calib().get("state") == "tracking", 3, 0.05)
    t0 = time.monotonic()
    r = c.cmd("calibrate")[-1]
    dt = time.monotonic() - t0
    tap.ok(r.startswith("OK") and dt > CAL_MS / 1000.0 - 0.2 and len(calls(env)) == n + 1,
           "calibrate: %s after %.2f s" % (r, dt))
    cal = calib()
    tap.ok(cal.get("calibrations") == str(n + 1) and cal.get("last_rc") == "0",
           "calibration counters: %s" % cal)
    c.close()
    tap.eq(d.stop(), 0, "wavelockd exits 0")

    # ---- a library without Calibration() --------------------------------------------------
    mb.close()
    mb = ModbusRecorder()
    nocal = os.path.join(os.path.dirname(lib), "fake_wlmdata_nocal.so")
    cfg2 = env.write("nocal.conf", conf(mb.port, nocal))
    p = start(env, cfg2, ctl, "channels=1,2", wait=False)
    rc = p.wait(15)
    out = p.output()
    tap.ok(rc == 1 and "Calibration()" in out and not mb.writes,
           "library without Calibration(): exit %s, %s" %
           (rc, [x for x in out.splitlines() if "Calibration" in x][:1]))
    p = env.start("wavelockd-t", [prog("wavelockd"), "-t", "-c", cfg2])
    rc = p.wait(15)
    out = p.output()
    tap.ok(rc == 1 and "has no symbol 'Calibration'" in out,
           "wavelockd -t: exit %s, %s" % (rc, out.strip().splitlines()[-1:] if out else out))
    mb.close()

tap.done()
