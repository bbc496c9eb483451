#!/usr/bin/python3
"""Calibration against a reference laser (DESIGN.md section 7, issue 13):
wavelock-sim and wavelockd as real processes over the real protocols.  The
simulated wavemeter's calibration drifts by 40 MHz/min (104 ppb/min at
384 THz, the same relative error on every channel); a reference laser of
fixed true frequency sits on channel 4.

  - two labs side by side for 60 s, one with the calibration group (mode
    correct) and one without: every laser's true frequency within 3 MHz RMS
    of its setpoint over the last 10 s with the correction, over 25 MHz off
    without it (figures printed);
  - status carries raw_freq_thz next to freq_thz, the calibration command
    its one line, the data log a calibration comment line;
  - the reference drops out for 10 s: hold (invalid or stale), the
    correction frozen, the lasers stay within the drift of those seconds,
    and it resumes (tracking) with the correction never moving faster than
    max_rate_mhz_per_min;
  - the reference jumps by 200 MHz (unlocked): hold with reason moved within
    a few readings, the other lasers' true frequencies move < 2 MHz;
  - the correction survives a restart (state file) and a reload; removing
    the group on a reload turns it off, adding it back turns it on;
  - bad calibration groups: file:line errors, exit 78.
"""

import re
import subprocess
import time

from wltest import TAP, Env, kv, prog, wait_until
from lablib import Lab, LabError, TruthLog, log_text, programs_missing, rms

F_REF = 384.2304844
DRIFT_MHZ_MIN = 40.0
DRIFT_PPB_MIN = DRIFT_MHZ_MIN / F_REF * 1e3    # 104.1 ppb/min
MAX_RATE = 120.0

CAL_GROUP = """
calibration = { channel = 4; frequency = "384.2304844 THz"; mode = "correct";
                tau_s = 2.0; max_rate_mhz_per_min = %g; tolerance_mhz = 150.0; };
""" % MAX_RATE

# One wavemeter round: 4 x (10 ms exposure + 1 ms switch) = 44 ms per
# reading; ki = 0.4 / (G T), kp = 0.1 / G.
CONF = """
server = { listen = [ "127.0.0.1:7470" ]; };
state_file = "cal.state";
wavemeter = { backend = "stream"; address = "127.0.0.1:7480"; stale_ms = 1000; };
devices = ( { name = "ao1"; url = "tcp://127.0.0.1:1502"; unit = 1; timeout_ms = 200; } );
lasers = (
  { name = "cool780"; channel = 1; setpoint = "384.2304844 THz";
    min_thz = 384.220; max_thz = 384.240; autolock = true; capture_mhz = 5000.0;
    pid = { kp = 0.00033; ki = 0.03; };
    piezo = { device = "ao1"; register = 0; format = "u16"; scale = 6553.5;
              min_v = 0.0; max_v = 10.0; start_v = 5.0; max_step_v = 1.0; };
    datalog = "DATALOG";
    sim = { offset_mhz = 150; piezo_mhz_per_v = 300; walk_mhz_rts = 1.0; noise_mhz = 0.5;
            linear_mhz_per_h = 20; exposure_ms = 10; };
  },
  { name = "probe852"; channel = 2; setpoint = "351.7219606 THz";
    min_thz = 351.712; max_thz = 351.732; autolock = true; capture_mhz = 5000.0;
    pid = { kp = 0.00022; ki = 0.02; polarity = -1; };
    piezo = { device = "ao1"; register = 1; format = "u16"; scale = 6553.5;
              min_v = 0.0; max_v = 10.0; start_v = 5.0; max_step_v = 1.0; };
    sim = { offset_mhz = -120; piezo_mhz_per_v = -450; walk_mhz_rts = 1.0; noise_mhz = 0.8;
            linear_mhz_per_h = 30; exposure_ms = 10; };
  },
  { name = "cool671"; channel = 3; setpoint = "446.799677 THz";
    min_thz = 446.789; max_thz = 446.809; autolock = true; capture_mhz = 5000.0;
    pid = { kp = 0.00029; ki = 0.026; };
    piezo = { device = "ao1"; register = 2; format = "u16"; scale = 6553.5;
              min_v = 0.0; max_v = 10.0; start_v = 5.0; max_step_v = 1.0; };
    sim = { offset_mhz = 100; piezo_mhz_per_v = 350; walk_mhz_rts = 1.0; noise_mhz = 1.0;
            linear_mhz_per_h = 15; exposure_ms = 10; };
  }
);
CALIBRATION
sim = { seed = 3; control = "127.0.0.1:7481"; switch_ms = 1.0;
        calibration_drift_ppb_per_min = %.4f; calibration_walk_ppb_rts = 0.0;
        references = ( { name = "ref780"; channel = 4; frequency = "384.2304844 THz";
                         noise_mhz = 0.5; exposure_ms = 10; } ); };
""" % DRIFT_PPB_MIN

LASERS = ("cool780", "probe852", "cool671")
READING_S = 0.044

tap = TAP()
why = programs_missing()
if why:
    tap.skip("calibration against a reference laser in the simulated lab", why)
    tap.done()


def calibration(lab):
    lines = lab.d.ok("calibration")
    return kv(lines[0])


def true_rms(tl, t0, t1):
    return {n: rms(e for _, e in tl.series(n, "error_mhz", t0, t1)) for n in LASERS}


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


with Env() as env:
    datalog = env.path("cool780.dat")
    on_conf = env.write("cal-on.conf", CONF.replace("CALIBRATION", CAL_GROUP)
                        .replace("DATALOG", datalog))
    off_conf = env.write("cal-off.conf", CONF.replace("CALIBRATION", "")
                         .replace("DATALOG", env.path("off.dat")))
    try:
        on = Lab(env, conf=on_conf, name="calon")
        off = Lab(env, conf=off_conf, name="caloff")
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the labs did not start: %s" % e)
    tl_on, tl_off = TruthLog(on.sim_port, 0.1), TruthLog(off.sim_port, 0.1)

    # ---- 60 s of drift, with and without the correction ----------------------------
    t0 = time.monotonic()
    time.sleep(60.0)
    t1 = time.monotonic()
    r_on, r_off = true_rms(tl_on, t1 - 10, t1), true_rms(tl_off, t1 - 10, t1)
    cal = calibration(on)
    tap.diag("after 60 s at %.0f MHz/min: calibration %s" % (DRIFT_MHZ_MIN, cal))
    tap.ok(all(v < 3.0 for v in r_on.values()),
           "correction on: true error RMS over 50..60 s < 3 MHz: %s"
           % " ".join("%s=%.2f" % (n, v) for n, v in r_on.items()), on.outputs())
    tap.ok(all(v > 25.0 for v in r_off.values()),
           "correction off: true error RMS over 50..60 s > 25 MHz: %s"
           % " ".join("%s=%.2f" % (n, v) for n, v in r_off.items()))
    tap.ok(cal.get("mode") == "correct" and cal.get("state") == "tracking"
           and cal.get("reason") == "none"
           and abs(float(cal["offset_mhz"]) - DRIFT_MHZ_MIN) < 10.0
           and abs(float(cal["ppb"]) - float(cal["offset_mhz"]) / F_REF * 1e3) < 0.01
           and float(cal["age_s"]) < 1.0,
           "calibration: mode=correct state=tracking, offset_mhz %s (about 40 after 60 s), "
           "ppb %s, age_s %s" % (cal.get("offset_mhz"), cal.get("ppb"), cal.get("age_s")))
    st = on.d.status()
    raw_ok = all("raw_freq_thz" in st[n] for n in LASERS)
    diff = {n: (float(st[n]["raw_freq_thz"]) - float(st[n]["freq_thz"])) * 1e6 for n in LASERS
            if "raw_freq_thz" in st[n]}
    tap.ok(raw_ok and all(25.0 < v < 60.0 for v in diff.values()),
           "status: raw_freq_thz next to freq_thz, raw - corrected: %s MHz"
           % " ".join("%s=%.1f" % kv_ for kv_ in diff.items()))
    st_off = off.d.status()
    tap.ok(all("raw_freq_thz" not in st_off[n] for n in LASERS),
           "no raw_freq_thz without a calibration group")
    tl_off.close()
    off.close()
    off.daemon.stop()
    off.simproc.stop()

    with open(datalog) as f:
        lines = f.read().splitlines()
    cal_lines = [x for x in lines if x.startswith("# calibration ")]
    tap.ok(len(cal_lines) >= 3 and "state=tracking" in cal_lines[-1]
           and "applied=1" in cal_lines[-1],
           "data log: calibration comment lines (%d), last: %s"
           % (len(cal_lines), cal_lines[-1] if cal_lines else None))

    # ---- the reference drops out for 10 s --------------------------------------------
    def poll_cal(seconds, period=0.1):
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            out.append((time.monotonic(), calibration(on)))
            time.sleep(period)
        return out

    base = true_rms(tl_on, time.monotonic() - 5, time.monotonic())
    t_drop = time.monotonic()
    on.sim.ok("dropout 4 10")
    polls = poll_cal(16.0)
    during = [c for t, c in polls if t_drop + 1.0 < t < t_drop + 9.5]
    after = [c for t, c in polls if t > t_drop + 14.0]
    held = during and all(c["state"] == "hold" and c["reason"] in ("invalid", "stale")
                          for c in during)
    frozen = during and len(set(c["offset_mhz"] for c in during)) == 1
    tap.ok(held and frozen, "dropout: hold (%s) with the correction frozen at %s MHz for 10 s"
           % (during[0]["reason"] if during else None,
              during[0]["offset_mhz"] if during else None))
    tap.ok(after and all(c["state"] == "tracking" for c in after),
           "dropout: tracking again after it (%s)" % (after[-1] if after else None))
    # The rate over spans of 2 s or more: a poll sees the daemon's readings
    # with the jitter of their arrival (50 ms over 2 s is 2.5 %), while a
    # correction that jumped its 6.7 MHz at once would show over 200 MHz/min.
    steps = []
    for i, (ta, a) in enumerate(polls):
        for tb, b in polls[i + 1:]:
            if tb - ta >= 2.0:
                steps.append((float(b["offset_mhz"]) - float(a["offset_mhz"])) / (tb - ta) * 60)
                break
    fastest = max(abs(x) for x in steps)
    tap.ok(fastest <= MAX_RATE * 1.1,
           "dropout: the correction never moved faster than max_rate (fastest %.1f MHz/min "
           "over 2 s, max %g)" % (fastest, MAX_RATE))
    worst = {n: max(abs(e) for _, e in tl_on.series(n, "error_mhz", t_drop, t_drop + 16))
             for n in LASERS}
    # 10 s uncorrected at 40 MHz/min: 6.7 MHz of drift, then re-acquired; the
    # largest of 160 samples adds a few times the noise seen before.  A
    # correction lost instead of held would leave the whole offset (~40 MHz).
    drift10 = DRIFT_MHZ_MIN / 6.0
    bound = {n: drift10 + max(5.0, 6.0 * base[n]) for n in LASERS}
    tap.ok(all(worst[n] < bound[n] for n in LASERS),
           "dropout: largest true error during and after it %s MHz (bound: drift of 10 s "
           "%.1f MHz + 6x the RMS before, at least 5: %s)"
           % (" ".join("%s=%.1f" % x for x in worst.items()), drift10,
              " ".join("%s=%.1f" % x for x in bound.items())))

    # ---- the reference jumps by 200 MHz ------------------------------------------------
    on.sim.ok("calib rate 0")      # the drag alone, no drift meanwhile
    time.sleep(6.0)
    t_jump = time.monotonic()
    before = {n: mean(e for _, e in tl_on.series(n, "error_mhz", t_jump - 3, t_jump))
              for n in LASERS}
    on.sim.ok("drift ref780 200")
    t_moved = None
    polls = poll_cal(6.0, 0.02)
    for t, c in polls:
        if c["state"] == "hold" and c["reason"] == "moved":
            t_moved = t
            break
    time.sleep(1.0)
    t_end = time.monotonic()
    after_j = {n: mean(e for _, e in tl_on.series(n, "error_mhz", t_end - 4, t_end))
               for n in LASERS}
    moved = {n: after_j[n] - before[n] for n in LASERS}
    tap.ok(t_moved is not None and t_moved - t_jump < 1.0,
           "jump of 200 MHz: hold with reason moved after %s s (%s readings of 44 ms)"
           % ("%.2f" % (t_moved - t_jump) if t_moved else None,
              "%.0f" % ((t_moved - t_jump) / READING_S) if t_moved else None))
    tap.ok(all(abs(v) < 2.0 for v in moved.values()),
           "jump: the other lasers' true frequencies moved %s MHz (< 2)"
           % " ".join("%s=%+.2f" % x for x in moved.items()))
    c = calibration(on)
    tap.ok(c["state"] == "hold" and c["reason"] == "moved"
           and abs(float(c["measured_mhz"]) - float(c["offset_mhz"]) - 200) < 10,
           "jump: still hold/moved, measured %s MHz against a correction of %s MHz"
           % (c.get("measured_mhz"), c.get("offset_mhz")))
    on.sim.ok("drift ref780 -200")
    tap.ok(wait_until(lambda: calibration(on)["state"] == "tracking", 5),
           "the reference back: tracking again (%s)" % calibration(on))

    # ---- restart: the correction comes back from the state file ------------------------
    c_before = calibration(on)
    on.d.ok("save")
    on.events.close()
    on.d.close()
    rc = on.daemon.stop()
    on.daemon = env.start_daemon(on.conf, timeout=15)
    on.port = on.daemon.port
    from lablib import Daemon
    on.d = Daemon(on.port)
    c_after = calibration(on)
    tap.ok(abs(float(c_after["offset_mhz"]) - float(c_before["offset_mhz"])) < 1.0,
           "restart: correction %s MHz before, %s MHz right after (state file)"
           % (c_before["offset_mhz"], c_after["offset_mhz"]), log_text(on.daemon))
    tap.ok("calibration correction" in log_text(on.daemon),
           "restart: the restored correction is logged")

    # ---- reload: remove the group, add it back -------------------------------------------
    with open(on.conf) as f:
        text = f.read()
    no_cal = re.sub(r"\ncalibration = \{.*?\};\n", "\n", text, flags=re.S)
    with open(on.conf, "w") as f:
        f.write(no_cal)
    on.d.ok("reload")
    c_none = calibration(on)
    st = on.d.status()
    tap.ok(c_none["mode"] == "none" and c_none["state"] == "off"
           and all("raw_freq_thz" not in st[n] for n in LASERS),
           "reload without the group: calibration off (%s), readings raw" % c_none)
    with open(on.conf, "w") as f:
        f.write(text.replace("tau_s = 2.0", "tau_s = 3.0"))
    on.d.ok("reload")
    ok = wait_until(lambda: calibration(on)["state"] == "tracking", 5)
    st = on.d.status()
    tap.ok(ok and all("raw_freq_thz" in st[n] for n in LASERS),
           "reload with the group again: tracking, raw_freq_thz back (%s)" % calibration(on))

    tap.ok(on.d.cmd("calibrate")[-1].startswith("ERR 409"),
           "calibrate in mode correct: ERR 409 (%s)" % on.d.cmd("calibrate")[-1])
    tl_on.close()
    on.close()

    # ---- bad input ------------------------------------------------------------------------
    bad = [
        ('channel = 0;', 'calibration.channel'),
        ('channel = 65;', 'calibration.channel'),
        ('frequency = "384 furlongs";', 'calibration.frequency'),
        ('mode = "sometimes";', 'calibration.mode'),
        ('mode = "wlmdata";', 'calibration.mode'),          # stream backend
        ('tau_s = 0;', 'calibration.tau_s'),
        ('max_rate_mhz_per_min = -1;', 'calibration.max_rate_mhz_per_min'),
        ('tolerance_mhz = 0;', 'calibration.tolerance_mhz'),
        ('period_s = 1;', 'calibration.period_s'),
        ('tau = 3;', 'calibration.tau'),
    ]
    for i, (setting, key) in enumerate(bad):
        group = "calibration = {\n  channel = 4; frequency = \"384.2304844 THz\";\n  %s\n};\n" % setting
        if setting.startswith("channel"):
            group = "calibration = {\n  frequency = \"384.2304844 THz\";\n  %s\n};\n" % setting
        elif setting.startswith("frequency"):
            group = "calibration = {\n  channel = 4;\n  %s\n};\n" % setting
        text = CONF.replace("CALIBRATION", group).replace("DATALOG", env.path("x.dat"))
        path = env.write("bad%d.conf" % i, text)
        line = text.splitlines().index([x for x in text.splitlines() if setting in x][0]) + 1
        p = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True, text=True,
                           timeout=10)
        tap.ok(p.returncode == 78 and ("%s:%d:" % (path, line)) in p.stderr and key in p.stderr,
               "bad %s: exit %d, %s" % (setting, p.returncode, p.stderr.strip()))
    text = CONF.replace("CALIBRATION", "calibration = { channel = 4; };\n").replace(
        "DATALOG", env.path("x.dat"))
    path = env.write("bad-nofreq.conf", text)
    p = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True, text=True,
                       timeout=10)
    tap.ok(p.returncode == 78 and "frequency" in p.stderr,
           "calibration without frequency: exit %d, %s" % (p.returncode, p.stderr.strip()))
    shared = CONF.replace("CALIBRATION", CAL_GROUP.replace("channel = 4", "channel = 1")) \
        .replace("DATALOG", env.path("x.dat"))
    path = env.write("shared.conf", shared)
    p = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True, text=True,
                       timeout=10)
    tap.ok(p.returncode == 0, "a calibration channel shared with a laser is allowed (%s)"
           % (p.stdout.strip() or p.stderr.strip()))
    wlm = shared.replace('backend = "stream"; address = "127.0.0.1:7480";',
                         'backend = "wlmdata";').replace("channel = 1; frequency", "channel = 18; frequency")
    path = env.write("wlm18.conf", wlm)
    p = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True, text=True,
                       timeout=10)
    tap.ok(p.returncode == 78 and "channels 1 to 17" in p.stderr,
           "wlmdata backend, calibration channel 18: exit %d, %s" % (p.returncode, p.stderr.strip()))

tap.done()
