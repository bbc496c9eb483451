#!/usr/bin/env python3
"""The state file's one rule, end to end, for the setpoint and every
parameter of get/set: a value set at run time survives a restart unless the
config file's value was changed while wavelockd was down (then the file's
value is used, and logged).  Format 2 is written; a format-1 file (as
earlier versions wrote it) still loads with the same meaning.

1. Every parameter (and the setpoint) set at run time, stop: the state file
   is format 2 with set.<key> (the run-time value) and file.<key> (the
   config's) for each.
2. Restart on the same file: every run-time value is back.
3. Half of the parameters and the setpoint edited in the file while down:
   those come from the file (logged, one line each), the rest keep their
   run-time values; an edited limit resets its partner (min_v/max_v), as on
   a reload.
4. Restart once more without an edit: nothing changes (the save after
   step 3 keeps the file's new values as file.<key>).
5. A format-1 file: its own setpoint and gain fields with file_<key>
   partners follow the same rule; the next save writes format 2.
"""

import zlib

from wltest import TAP, Env, ModbusRecorder, StreamPublisher, kv

tap = TAP()

A_THZ = 384.2304844

# The parameters of get/set and where the config file has them.
WHERE = {
    "kp": "pid", "ki": "pid", "kd": "pid", "d_filter_s": "pid", "polarity": "pid",
    "max_dt_s": "pid", "window_mhz": "", "capture_mhz": "", "modehop_mhz": "",
    "glitch_mhz": "", "lock_n": "", "unlock_m": "", "max_step_v": "piezo",
    "piezo_min_v": "piezo", "piezo_max_v": "piezo", "current_min_v": "current",
    "current_max_v": "current", "feedforward": "current", "sensitivity_mhz_per_v": "pid",
}
CONF_KEY = {"piezo_min_v": "min_v", "piezo_max_v": "max_v", "current_min_v": "min_v",
            "current_max_v": "max_v"}
PARTNER = {"piezo_min_v": "piezo_max_v", "piezo_max_v": "piezo_min_v",
           "current_min_v": "current_max_v", "current_max_v": "current_min_v"}

# The config file at first, the values set at run time, and the file edited
# while the daemon is down (every value different from the other two, but
# polarity, which has two).
FILE0 = {"kp": 0.001, "ki": 0.002, "kd": 0.0, "d_filter_s": 0.05, "polarity": 1,
         "max_dt_s": 1.0, "window_mhz": 5.0, "capture_mhz": 2000.0, "modehop_mhz": 1000.0,
         "glitch_mhz": 500.0, "lock_n": 5, "unlock_m": 3, "max_step_v": 0.0,
         "piezo_min_v": 0.0, "piezo_max_v": 10.0, "current_min_v": -1.0, "current_max_v": 1.0,
         "feedforward": -0.2, "sensitivity_mhz_per_v": 0.0}
RUN = {"kp": 0.002, "ki": 0.004, "kd": 0.0005, "d_filter_s": 0.1, "polarity": -1,
       "max_dt_s": 2.0, "window_mhz": 3.0, "capture_mhz": 1500.0, "modehop_mhz": 900.0,
       "glitch_mhz": 400.0, "lock_n": 4, "unlock_m": 2, "max_step_v": 0.5,
       "piezo_min_v": 1.0, "piezo_max_v": 9.0, "current_min_v": -0.8, "current_max_v": 0.8,
       "feedforward": 0.1, "sensitivity_mhz_per_v": 380.0}
EDIT = {"kp": 0.003, "kd": 0.0007, "polarity": -1, "window_mhz": 4.0, "modehop_mhz": 800.0,
        "lock_n": 6, "max_step_v": 0.25, "piezo_max_v": 8.5, "current_max_v": 0.9,
        "sensitivity_mhz_per_v": -250.0}
RUN_SP = A_THZ + 0.01
EDIT_SP = A_THZ + 0.05


def conf_text(env, mb, pub, values, thz):
    groups = {"": [], "pid": [], "piezo": [], "current": []}
    for k, v in values.items():
        groups[WHERE[k]].append("%s = %r;" % (CONF_KEY.get(k, k), v))
    return ('server = { listen = ["127.0.0.1:0"]; };\n'
            'state_file = "%s";\n'
            'wavemeter = { backend = "stream"; address = "127.0.0.1:%d"; stale_ms = 1000; };\n'
            'devices = ( { name = "ao1"; url = "tcp://127.0.0.1:%d"; unit = 1; '
            'timeout_ms = 200; } );\n'
            'lasers = (\n'
            '  { name = "a"; channel = 1; setpoint = "%.9f THz"; autolock = false;\n'
            '    min_thz = %.9f; max_thz = %.9f; %s\n'
            '    pid = { %s };\n'
            '    piezo = { device = "ao1"; register = 0; format = "u16"; scale = 6553.5;'
            ' start_v = 5.0; %s };\n'
            '    current = { device = "ao1"; register = 1; format = "s16"; scale = 3276.7; %s };\n'
            '  }\n);\n'
            % (env.path("sf.state"), pub.port, mb.port, thz, A_THZ - 0.2, A_THZ + 0.2,
               " ".join(groups[""]), " ".join(groups["pid"]), " ".join(groups["piezo"]),
               " ".join(groups["current"])))


def params(c):
    r = c.cmd("get a all")
    return {k: float(v) for k, v in kv(r[0]).items() if k != "name"} if r[-1] == "OK" else {}


def setpoint(c):
    return float(kv(c.cmd("setpoint a")[0])["setpoint_thz"])


def state_fields(env):
    with open(env.path("sf.state")) as f:
        lines = f.read().splitlines()
    laser = [x for x in lines if x.startswith("laser name=a ")]
    return lines[0], (kv(laser[0]) if laser else {})


def diff(got, want):
    return ["%s=%s (want %s)" % (k, got.get(k), v) for k, v in want.items()
            if got.get(k) is None or abs(got[k] - v) > 1e-12 * max(1.0, abs(v))]


with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cfg = env.write("sf.conf", conf_text(env, mb, pub, FILE0, A_THZ))

    # ---- 1. every parameter set at run time ------------------------------------------------
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    tap.eq(sorted(params(c)), sorted(WHERE), "get all lists exactly the parameters this test "
           "covers (%d)" % len(WHERE))
    # limits first narrowed from the inside, so that every set is valid on its own
    order = sorted(RUN, key=lambda k: k not in ("piezo_min_v", "current_min_v"))
    bad = [(k, c.cmd("set a %s %r" % (k, RUN[k]))[-1]) for k in order]
    bad = [x for x in bad if not x[1].startswith("OK")]
    c.cmd("setpoint a %.9f THz" % RUN_SP)
    tap.eq(bad, [], "every parameter set at run time")
    tap.eq(d.stop(), 0, "wavelockd stopped")
    head, f = state_fields(env)
    want_fields = {}
    for k in WHERE:
        want_fields["set." + k] = RUN[k]
        want_fields["file." + k] = FILE0[k]
    want_fields["set.setpoint_thz"] = RUN_SP
    want_fields["file.setpoint_thz"] = A_THZ
    got_fields = {k: float(v) for k, v in f.items() if k.startswith(("set.", "file."))}
    tap.ok(head.startswith("# wavelock runtime state, format 2 ") and
           not diff(got_fields, want_fields) and
           not any(k in f for k in ("setpoint_thz", "kp", "file_kp", "file_setpoint_thz")),
           "the state file is format 2: set.<key> and file.<key> for the setpoint and all %d "
           "parameters, no fields of their own" % len(WHERE),
           "%s\n%s" % (head, diff(got_fields, want_fields)))

    # ---- 2. restart on the same file --------------------------------------------------------
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got, sp = params(c), setpoint(c)
    tap.ok(not diff(got, RUN) and abs(sp - RUN_SP) < 1e-9,
           "every run-time value survives a restart (setpoint %.9f THz)" % sp,
           "%s\n%s" % (diff(got, RUN), d.output()[-2000:]))
    tap.eq(d.stop(), 0, "wavelockd stopped")

    # ---- 3. half of them edited in the file while down ------------------------------------
    file1 = dict(FILE0, **EDIT)
    env.write("sf.conf", conf_text(env, mb, pub, file1, EDIT_SP))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got, sp = params(c), setpoint(c)
    want = {}
    for k in WHERE:
        if k in EDIT or PARTNER.get(k) in EDIT:
            want[k] = file1[k]
        else:
            want[k] = RUN[k]
    from_file = [k for k in WHERE if k in EDIT or PARTNER.get(k) in EDIT]
    tap.ok(not diff(got, want) and abs(sp - EDIT_SP) < 1e-9,
           "edited in the file while down: the setpoint and %s come from the file; %s keep "
           "their run-time values" % (" ".join(from_file),
                                      " ".join(k for k in WHERE if k not in from_file)),
           "%s\nsetpoint %.9f\n%s" % (diff(got, want), sp, d.output()[-3000:]))
    out = d.output()
    logged = [k for k in sorted(WHERE)
              if "state file: laser a: %s from the config, which changed it" % k in out]
    want_logged = sorted(k for k in WHERE if k in EDIT or PARTNER.get(k) in EDIT)
    tap.ok(logged == want_logged and
           "state file: laser a: setpoint %.9f THz from the config" % EDIT_SP in out,
           "each value taken from the edited file is logged (%d parameters and the setpoint)"
           % len(logged), "%s\n%s" % (logged, out[-3000:]))
    tap.eq(d.stop(), 0, "wavelockd stopped")

    # ---- 4. once more without an edit -------------------------------------------------------
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got2, sp2 = params(c), setpoint(c)
    tap.ok(not diff(got2, want) and abs(sp2 - EDIT_SP) < 1e-9 and
           "from the config, which changed it" not in d.output(),
           "a second restart without an edit changes nothing",
           "%s\n%s" % (diff(got2, want), d.output()[-2000:]))
    tap.eq(d.stop(), 0, "wavelockd stopped")

    # ---- 5. a format-1 file -----------------------------------------------------------------
    # The config now has kp=0.003 and ki=0.002, setpoint EDIT_SP, glitch_mhz 500.
    body = ("# wavelock runtime state, format 1 (written by wavelockd; do not edit)\n"
            "laser name=a setpoint_thz=%.9f engaged=0 kp=0.0042 ki=0.0043 kd=0.0001 "
            "piezo_v=6.5 current_v=0.25 file_setpoint_thz=%.9f file_kp=0.001 file_ki=0.002 "
            "file_kd=0.0007 set.glitch_mhz=321 file.glitch_mhz=500 set.lock_n=9 "
            "file.lock_n=5\n" % (A_THZ + 0.02, EDIT_SP))
    env.write("sf.state", body + "end count=1 crc32=%08x\n" % (zlib.crc32(body.encode()) &
                                                                 0xffffffff))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got, sp = params(c), setpoint(c)
    out_v = kv(c.cmd("output a piezo")[0]).get("piezo_v")
    want1 = {"kp": 0.003, "ki": 0.0043, "kd": 0.0001, "glitch_mhz": 321, "lock_n": 6}
    tap.ok(not diff(got, want1) and abs(sp - (A_THZ + 0.02)) < 1e-9 and
           out_v is not None and abs(float(out_v) - 6.5) < 1e-6,
           "a format-1 file loads under the same rule: kp edited since (file_kp) from the "
           "file, ki, kd, the setpoint and glitch_mhz saved; lock_n edited since "
           "(file.lock_n) from the file; piezo at %s V" % out_v,
           "%s\nsetpoint %.9f\n%s" % (diff(got, want1), sp, d.output()[-2000:]))
    r = c.cmd("save")
    head, f = state_fields(env)
    tap.ok(r[-1].startswith("OK") and head.startswith("# wavelock runtime state, format 2 ") and
           abs(float(f.get("set.setpoint_thz", 0)) - (A_THZ + 0.02)) < 1e-9 and
           float(f.get("set.kp", -1)) == 0.003 and float(f.get("file.kp", -1)) == 0.003,
           "the next save writes format 2", "%s %s" % (r, f))
    tap.eq(d.stop(), 0, "wavelockd stopped")
    mb.close()
    pub.close()
tap.done()
