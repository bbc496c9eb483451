#!/usr/bin/env python3
"""The `exposure <channel> [<ms>|auto]` command (issue 13).

1. wlmdata, wavelockd on the libwlmData.so double (tests/.libs/fake_wlmdata.so,
   which keeps an exposure per channel and logs every call): reading gives
   channel= exposure_ms= auto=; setting a time switches auto exposure off
   and calls SetExposureNum(channel, 1, ms); 'auto' calls
   SetExposureMode(true); every value is read back from the library.
2. Bad values get ERR 422 (0, 10000, -5, 1.5, words, a channel outside
   1..17 for wlmdata); a monitor token may read but gets 403 for a set.
3. The library calls run off the event loop: with the double's exposure
   calls taking 600 ms, another connection's ping is answered at once.
4. On the stream backend: ERR 503 that names the backend.
"""

import os
import re
import secrets
import time

from wltest import TAP, Env, ModbusRecorder, kv, lab_conf, laser_conf
from hwtest import fake_wlmdata_path

tap = TAP()
DELAY_MS = 600


def wlm_conf(mb_port, library, tokens):
    lasers = [laser_conf("wlm1", 1, 384.2304844, reg=0, autolock=False),
              laser_conf("wlm2", 2, 377.1074635, reg=1, autolock=False)]
    text = lab_conf(lasers, [("ao1", mb_port)], 1, state_file="", server_extra=tokens)
    wm = ('wavemeter = { backend = "wlmdata"; library = "%s"; stale_ms = 1000; poll_ms = 50;'
          ' callback_silence_ms = 500; };' % library)
    text, n = re.subn(r"^wavemeter = \{.*\};$", lambda m: wm, text, flags=re.M)
    assert n == 1
    return text


def calls(env, since=0):
    """The double's exposure calls logged so far (from line since)."""
    try:
        with open(env.path("wlm.events")) as f:
            lines = [x.strip() for x in f]
    except OSError:
        return []
    return [x for x in lines[since:] if "Exposure" in x]


def log_len(env):
    try:
        with open(env.path("wlm.events")) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def start_with_fake(env, cfg, settings):
    keys = ("FAKE_WLM_SETTINGS", "FAKE_WLM_CONTROL", "FAKE_WLM_LOG")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["FAKE_WLM_SETTINGS"] = settings
    os.environ["FAKE_WLM_CONTROL"] = env.path("wlm.control")
    os.environ["FAKE_WLM_LOG"] = env.path("wlm.events")
    try:
        return env.start_daemon(cfg)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def set_control(env, text):
    tmp = env.path("wlm.control.tmp")
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.rename(tmp, env.path("wlm.control"))


def test_wlmdata(env):
    lib = fake_wlmdata_path()
    if not os.path.exists(lib):
        tap.bail("%s is not built (make check builds it)" % lib)
    mb = ModbusRecorder()
    mon, ctl = "mon-" + secrets.token_hex(8), "ctl-" + secrets.token_hex(8)
    tokens = ('tokens = ( { secret = "%s"; role = "monitor"; },'
              ' { secret = "%s"; role = "control"; } );' % (mon, ctl))
    set_control(env, "")
    cfg = env.write("wlm.conf", wlm_conf(mb.port, lib, tokens))
    d = start_with_fake(env, cfg, "channels=1,2 period_ms=20")
    c = env.connect(d.port)
    m = env.connect(d.port)
    tap.ok(c.cmd("auth %s" % ctl)[-1].startswith("OK") and
           m.cmd("auth %s" % mon)[-1].startswith("OK"), "control and monitor connections")

    # 1. read, set, auto
    n0 = log_len(env)
    r = m.cmd("exposure 1")
    got = kv(r[0]) if len(r) == 2 else {}
    tap.ok(r[-1] == "OK" and got == {"channel": "1", "exposure_ms": "10", "auto": "off"},
           "monitor reads channel 1: %s" % r[0], r)
    tap.ok(calls(env, n0) == ["GetExposureNum 1 1 = 10", "GetExposureMode = 0"],
           "read: GetExposureNum(1, 1), GetExposureMode (%s)" % "; ".join(calls(env, n0)))
    n0 = log_len(env)
    r = c.cmd("exposure 1 25")
    got = kv(r[0]) if len(r) == 2 else {}
    tap.ok(r[-1] == "OK" and got.get("exposure_ms") == "25" and got.get("auto") == "off",
           "control sets channel 1 to 25 ms: %s" % r[0], r)
    tap.ok(calls(env, n0) == ["SetExposureMode 0 = 0", "SetExposureNum 1 1 25 = 0",
                              "GetExposureNum 1 1 = 25", "GetExposureMode = 0"],
           "set: auto off, SetExposureNum(1, 1, 25), read back (%s)" % "; ".join(calls(env, n0)))
    r1, r2 = m.cmd("exposure 1"), m.cmd("exposure 2")
    tap.ok(kv(r1[0]).get("exposure_ms") == "25" and kv(r2[0]).get("exposure_ms") == "10",
           "per channel: channel 1 reads 25 ms, channel 2 still 10 ms", (r1, r2))
    n0 = log_len(env)
    r = c.cmd("exposure 2 AUTO")
    tap.ok(r[-1] == "OK" and kv(r[0]).get("auto") == "on" and
           calls(env, n0)[0] == "SetExposureMode 1 = 0",
           "'exposure 2 auto': SetExposureMode(true), reads back auto=on (%s)" % r[0],
           calls(env, n0))
    r = c.cmd("exposure 2 12")
    tap.ok(r[-1] == "OK" and kv(r[0]) == {"channel": "2", "exposure_ms": "12", "auto": "off"},
           "a time switches auto exposure off again: %s" % r[0], r)

    # 2. bad values, roles
    n0 = log_len(env)
    for arg in ("1 0", "1 10000", "1 -5", "1 1.5", "1 long", "0", "99", "x", "20", "20 5"):
        r = c.cmd("exposure %s" % arg)
        tap.ok(r[-1].startswith("ERR 422"), "exposure %s: %s" % (arg, r[-1]), r)
    r = m.cmd("exposure 1 30")
    tap.ok(r[-1].startswith("ERR 403"), "monitor may not set it: %s" % r[-1], r)
    r = m.cmd("exposure 1 auto")
    tap.ok(r[-1].startswith("ERR 403"), "nor switch auto exposure on: %s" % r[-1], r)
    tap.ok(not [x for x in calls(env, n0) if x.startswith("Set")],
           "no refused request reached the library")
    r = c.cmd("help exposure")
    tap.ok(r[-1].startswith("OK") and any("exposure <channel>" in x for x in r + [r[-1]]),
           "help exposure", r)

    # 3. off the event loop
    set_control(env, "exposure_delay_ms=%d" % DELAY_MS)
    time.sleep(0.3)
    t0 = time.monotonic()
    c.send("exposure 1 40\n")
    time.sleep(0.05)
    t1 = time.monotonic()
    p = m.cmd("ping")
    t_ping = time.monotonic() - t1
    r = c.response()
    t_exp = time.monotonic() - t0
    tap.ok(p == ["OK"] and t_ping < 0.3 and r[-1] == "OK" and t_exp >= 4 * DELAY_MS / 1000.0 * 0.9,
           "with %d ms library calls, 'exposure 1 40' takes %.2f s and a ping meanwhile %.3f s"
           % (DELAY_MS, t_exp, t_ping), (p, r))
    set_control(env, "")
    c.close()
    m.close()
    tap.eq(d.stop(), 0, "wavelockd (wlmdata) stops cleanly")
    mb.close()


def test_stream(env):
    mb = ModbusRecorder()
    lasers = [laser_conf("cool780", 1, 384.2304844, autolock=False)]
    cfg = env.write("stream.conf", lab_conf(lasers, [("ao1", mb.port)], 1, state_file=""))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    for line in ("exposure 1", "exposure 1 20", "exposure 1 auto"):
        r = c.cmd(line)
        tap.ok(r[-1].startswith("ERR 503") and "stream" in r[-1], "stream backend, '%s': %s"
               % (line, r[-1]), r)
    r = c.cmd("exposure 1 0")
    tap.ok(r[-1].startswith("ERR 422"), "a bad value is still 422 there: %s" % r[-1], r)
    c.close()
    tap.eq(d.stop(), 0, "wavelockd (stream) stops cleanly")
    mb.close()


with Env() as env:
    test_wlmdata(env)
with Env() as env:
    test_stream(env)
tap.done()
