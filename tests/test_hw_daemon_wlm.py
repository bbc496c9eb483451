#!/usr/bin/env python3
"""wavelockd on its two wavemeter backends (issue 4, daemon-level acceptance).

3. wlmdata: the daemon dlopen()s tests/.libs/fake_wlmdata.so by path, locks
   from its callback readings, falls back to polling when the callback goes
   silent (and back when it resumes), turns every error code into `holding`
   with the output held, and removes the callback at shutdown.  A missing
   library, a file that is no library, and a library without GetFrequencyNum
   each give one error line and exit status 1 or 78 -- before any actuator is
   written.
4. stream: with tests/stream_pub.py as the publisher, readings reach
   `status`, error codes give `holding` and show in `wavemeter`, malformed and
   over-long lines are counted and skipped without disturbing the next
   readings (the 256-byte limit exactly), and a publisher that drops the
   connection or goes down and comes back is reconnected to.
"""

import os
import re
import time

from wltest import TAP, Env, ModbusRecorder, lab_conf, laser_conf, prog, wait_until
from hwtest import StreamPub, fake_wlmdata_path, status_all, wavemeter

tap = TAP()
C_NM_THZ = 299792.458
GAINS = {"kp": 0.0, "ki": 0.002, "kd": 0.0}


status = status_all



def piezo_writes(mb, reg, since):
    return [(t, a, v) for t, a, v in mb.writes if t >= since and a <= reg < a + len(v)]


ERROR_NAMES = [(0, "no-value"), (-1, "no-signal"), (-2, "bad-signal"), (-3, "underexposed"),
               (-4, "overexposed"), (-5, "wavemeter-missing"), (-6, "not-available"),
               (-8, "no-pulse")]


# ============================================================================
# 3. wlmdata backend on the libwlmData.so double
# ============================================================================

NM1, NM2, STEP = 780.24, 795.0, 1e-8
# Readings walk from nm to nm + 999 steps (4.9 MHz at 780 nm): setpoints in
# the middle of that walk keep every reading inside the 5 MHz lock window.
SP1 = C_NM_THZ / (NM1 + 499.5 * STEP)
SP2 = C_NM_THZ / (NM2 + 499.5 * STEP)


def wlm_conf(mb_port, library, stale_ms=1000):
    lasers = [laser_conf("wlm1", 1, SP1, reg=0, pid=GAINS),
              laser_conf("wlm2", 2, SP2, reg=1, pid=GAINS)]
    text = lab_conf(lasers, [("ao1", mb_port)], 1, state_file="")
    wm = ('wavemeter = { backend = "wlmdata"; library = "%s"; stale_ms = %d; poll_ms = 50;'
          ' callback_silence_ms = 500; };' % (library, stale_ms))
    text, n = re.subn(r"^wavemeter = \{.*\};$", lambda m: wm, text, flags=re.M)
    assert n == 1
    return text


class Control:
    """The fake library's control file, replaced atomically."""

    def __init__(self, env):
        self.env, self.path, self.seq = env, env.path("wlm.control"), 0

    def set(self, text):
        self.seq += 1
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("seq=%d %s\n" % (self.seq, text))
        os.rename(tmp, self.path)


def start_with_fake(env, cfg, settings, ctl):
    saved = {k: os.environ.get(k) for k in ("FAKE_WLM_SETTINGS", "FAKE_WLM_CONTROL", "FAKE_WLM_LOG")}
    os.environ["FAKE_WLM_SETTINGS"] = settings
    os.environ["FAKE_WLM_CONTROL"] = ctl.path
    os.environ["FAKE_WLM_LOG"] = env.path("wlm.events")
    try:
        return env.start_daemon(cfg)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_failure(env, cfg, what):
    """Start wavelockd on a config that must fail; returns (status, output)."""
    p = env.start("wavelockd", [prog("wavelockd"), "-f", "-c", cfg])
    rc = p.wait(15)
    if rc is None:
        p.stop()
        return None, p.output()
    out = p.output()
    p.stop()
    return rc, out


def test_wlmdata(env):
    lib = fake_wlmdata_path()
    if not os.path.exists(lib):
        tap.bail("%s is not built (make check builds it)" % lib)
    mb = ModbusRecorder()
    ctl = Control(env)
    ctl.set("")
    cfg = env.write("wlm.conf", wlm_conf(mb.port, lib))
    d = start_with_fake(env, cfg, "channels=1,2 nm1=%r nm2=%r step_nm=%r period_ms=20"
                        % (NM1, NM2, STEP), ctl)
    c = env.connect(d.port)

    def states():
        return {n: v["state"] for n, v in status(c).items()}

    ok = wait_until(lambda: states() == {"wlm1": "locked", "wlm2": "locked"}, 20, 0.1)
    tap.ok(ok, "wlmdata: both lasers lock from the fake library's callback readings", states())
    head, ch = wavemeter(c)
    tap.ok(head.get("backend") == "wlmdata" and head.get("library") == lib and
           head.get("mode") == "callback" and int(head.get("callbacks", 0)) > 0,
           "wavemeter: backend=wlmdata, the library by path, mode=callback", head)
    s = status(c)
    f1 = float(s["wlm1"]["freq_thz"])
    lo, hi = C_NM_THZ / (NM1 + 1000 * STEP), C_NM_THZ / NM1
    tap.ok(lo - 1e-9 <= f1 <= hi + 1e-9 and ch[1]["status"] == "ok" and ch[1]["laser"] == "wlm1",
           "readings are 299792.458/nm: wlm1 %.9f THz (expected %.9f..%.9f)" % (f1, lo, hi),
           (s["wlm1"], ch.get(1)))
    ok = wait_until(lambda: len(mb.writes) > 100, 10, 0.05)
    tap.ok(ok, "the lasers regulate: %d writes to the device" % len(mb.writes))

    # ---- the callback goes silent: polling takes over -----------------------------
    cyc0 = int(status(c)["wlm1"]["cycles"])
    t_off = time.monotonic()
    ctl.set("callbacks=off")
    ok = wait_until(lambda: wavemeter(c)[0].get("mode") == "polling", 10, 0.05)
    t_poll = time.monotonic() - t_off
    head0 = wavemeter(c)[0]
    tap.ok(ok, "callbacks=off: the daemon falls back to polling (mode=polling after %.2f s)"
           % t_poll, head0)
    time.sleep(2.0)
    head1 = wavemeter(c)[0]
    s = status(c)
    polls = int(head1["polls"]) - int(head0["polls"])
    reads = int(head1["readings"]) - int(head0["readings"])
    cyc1 = int(s["wlm1"]["cycles"])
    tap.ok(polls >= 20 and reads >= 20 and head1["callbacks"] == head0["callbacks"],
           "while polling, readings keep coming (%d polls, %d readings in 2 s, no callbacks)"
           % (polls, reads), (head0, head1))
    tap.ok(s["wlm1"]["state"] == "locked" and s["wlm2"]["state"] == "locked" and
           int(s["wlm1"]["age_ms"]) < 1000 and cyc1 - cyc0 >= 20,
           "the lasers stay locked on polled readings (age %s ms, %d cycles)" %
           (s["wlm1"]["age_ms"], cyc1 - cyc0), s)
    ctl.set("callbacks=on")
    ok = wait_until(lambda: wavemeter(c)[0].get("mode") == "callback", 10, 0.05)
    head2 = wavemeter(c)[0]
    tap.ok(ok and int(head2["callbacks"]) > int(head1["callbacks"]),
           "callbacks=on: back to mode=callback", head2)

    # ---- error codes: holding with the output held --------------------------------
    ok = wait_until(lambda: states()["wlm2"] == "locked", 10, 0.05)
    held = status(c)["wlm2"]["piezo_v"]
    results = []
    t_first = None
    for code, name in ERROR_NAMES:
        ctl.set("err2=%d" % code)

        def shows():
            st = status(c)["wlm2"]
            _, chs = wavemeter(c)
            return (st["state"] == "holding" and st.get("wm_status") == name and
                    chs[2]["status"] == name and float(chs[2]["code"]) == code)
        got = wait_until(shows, 5, 0.02)
        if t_first is None:
            # The output as holding began (a cycle of the last reading
            # before the error may still have been on its way when the
            # laser was seen locked above).
            time.sleep(0.2)
            held = status(c)["wlm2"]["piezo_v"]
            t_first = time.monotonic()
        results.append((code, name, got))
    st = status(c)
    tap.ok(all(g for _, _, g in results),
           "error codes %s give holding, named in status and wavemeter" %
           " ".join("%d=%s" % (cd, n) for cd, n, _ in results), [r for r in results if not r[2]])
    late = piezo_writes(mb, 1, t_first)
    tap.ok(st["wlm2"]["piezo_v"] == held and not late and st["wlm1"]["state"] == "locked",
           "while holding the output is held (%s V, no writes to its register); wlm1 unaffected"
           % held, (st, late[:3]))
    ctl.set("")
    ok = wait_until(lambda: states()["wlm2"] in ("acquiring", "locked"), 10, 0.05)
    tap.ok(ok, "err2 cleared: wlm2 regulates again", states())
    ok = wait_until(lambda: states()["wlm2"] == "locked", 10, 0.05)
    tap.ok(ok, "wlm2 locks again", states())

    # Polling delivers error codes too.
    ctl.set("callbacks=off err1=-4")
    ok = wait_until(lambda: wavemeter(c)[0].get("mode") == "polling" and
                    status(c)["wlm1"].get("wm_status") == "overexposed" and
                    states()["wlm1"] == "holding", 10, 0.05)
    tap.ok(ok, "polling: err1=-4 gives holding with wm_status=overexposed", status(c)["wlm1"])
    ctl.set("callbacks=off")
    ok = wait_until(lambda: states()["wlm1"] in ("acquiring", "locked"), 10, 0.05)
    tap.ok(ok, "polling: err1 cleared, wlm1 regulates again", states())

    ctl.set("")

    # ---- reload: a changed wavemeter group, then a missing library -------------------
    ok = wait_until(lambda: states() == {"wlm1": "locked", "wlm2": "locked"} and
                    wavemeter(c)[0].get("mode") == "callback", 10, 0.05)
    env.write("wlm.conf", wlm_conf(mb.port, lib).replace("poll_ms = 50", "poll_ms = 60"))
    r = c.cmd("reload")
    cyc0 = int(status(c)["wlm1"]["cycles"])
    time.sleep(1.0)
    head = wavemeter(c)[0]
    s = status(c)
    ev = open(env.path("wlm.events")).read().split()
    tap.ok(ok and r[-1].startswith("OK") and head.get("mode") == "callback" and
           int(head["readings"]) > 20 and s["wlm1"]["state"] == "locked" and
           int(s["wlm1"]["cycles"]) - cyc0 > 20 and "remove" not in ev,
           "reload with a changed wavemeter group: the new backend gets the callbacks (%s readings"
           " in 1 s), lasers stay locked, the callback was not removed" % head.get("readings"),
           (r, head, s, ev))
    env.write("wlm.conf", wlm_conf(mb.port, "/nonexistent/libwlmData.so"))
    r = c.cmd("reload")
    h0 = wavemeter(c)[0]
    time.sleep(0.5)
    h1 = wavemeter(c)[0]
    tap.ok(r[-1].startswith("ERR 422") and "cannot load" in r[-1] and
           int(h1["readings"]) > int(h0["readings"]) and states()["wlm1"] == "locked",
           "reload naming a missing library is refused (422) and the running backend carries on",
           (r, h0, h1))

    rc = d.stop()
    ev = open(env.path("wlm.events")).read().split()
    tap.ok(rc == 0 and ev[:1] == ["install"] and ev[-1:] == ["remove"] and ev.count("remove") == 1,
           "SIGTERM: exit 0, callback installed at start and removed once, at shutdown", (rc, ev))
    mb.close()


def test_wlm_nocallback(env):
    """A library that refuses the callback: polling from the start."""
    mb = ModbusRecorder()
    ctl = Control(env)
    ctl.set("")
    cfg = env.write("wlm-nocb.conf", wlm_conf(mb.port, fake_wlmdata_path()))
    d = start_with_fake(env, cfg, "channels=1,2 nm1=%r nm2=%r step_nm=%r period_ms=20 install=fail"
                        % (NM1, NM2, STEP), ctl)
    c = env.connect(d.port)
    ok = wait_until(lambda: {n: v["state"] for n, v in status(c).items()} ==
                    {"wlm1": "locked", "wlm2": "locked"}, 20, 0.1)
    head = wavemeter(c)[0]
    tap.ok(ok and head.get("mode") == "polling" and int(head["polls"]) > 0 and
           head["callbacks"] == "0",
           "install=fail: the daemon polls from the start and both lasers lock (%s polls)"
           % head.get("polls"), (status(c), head))
    rc = d.stop()
    ev = open(env.path("wlm.events")).read().split()
    tap.ok(rc == 0 and "install-refused" in ev and "install" not in ev,
           "install=fail: the refused install was seen, exit 0", (rc, ev))
    os.unlink(env.path("wlm.events"))
    mb.close()


def test_wlm_failures(env):
    mb = ModbusRecorder()
    notlib = env.write("not-a-library.so", "this is not a shared object\n")
    cases = [
        ("missing library", "/nonexistent/dir/libwlmData.so", "cannot load"),
        ("file that is no library", notlib, "cannot load"),
        ("library without GetFrequencyNum", fake_wlmdata_path(nofreq=True),
         "no symbol 'GetFrequencyNum'"),
    ]
    for name, lib, text in cases:
        cfg = env.write("bad.conf", wlm_conf(mb.port, lib))
        # Several starts: the device threads used to race the failure.
        runs = []
        for i in range(4):
            n0 = len(mb.writes)
            t0 = time.monotonic()
            rc, out = start_failure(env, cfg, name)
            dt = time.monotonic() - t0
            time.sleep(0.1)
            runs.append((rc, dt, out, len(mb.writes) - n0))
        rc, dt, out, _ = runs[0]
        errors = [l for l in out.splitlines() if "[error]" in l]
        crash = [l for r in runs for l in r[2].splitlines() if "Sanitizer" in l or
                 "runtime error" in l or "Segmentation" in l or "Aborted" in l]
        tap.ok(all(r[0] in (1, 78) and r[1] < 10 for r in runs),
               "%s: exit status %s after %.2f s (4 starts: %s)"
               % (name, rc, dt, " ".join(str(r[0]) for r in runs)), out)
        tap.ok(len(errors) == 1 and lib in errors[0] and text in errors[0] and not crash,
               "%s: one error line naming the library" % name, out)
        if errors:
            tap.diag(errors[0])
        tap.ok(all(r[3] == 0 for r in runs),
               "%s: no actuator was written by the failed starts (writes per start: %s)"
               % (name, [r[3] for r in runs]))
    mb.close()


# ============================================================================
# 4. stream backend with tests/stream_pub.py
# ============================================================================

T1, T2 = 384.2304844, 377.1074635


def test_stream(env):
    mb = ModbusRecorder()
    pub = StreamPub(env)
    lasers = [laser_conf("s1", 1, T1, reg=0, pid=GAINS), laser_conf("s2", 2, T2, reg=1, pid=GAINS)]
    cfg = env.write("stream.conf", lab_conf(lasers, [("ao1", mb.port)], pub.port, state_file=""))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    ms = [1000]

    def t_ms():
        ms[0] += 7
        return ms[0]

    def send(ch, value):
        pub.cmd("reading %d %s %d" % (ch, value, t_ms()))

    def st(name):
        return status(c)[name]

    def head():
        return wavemeter(c)[0]

    tap.ok(pub.cmd("wait-clients 1 10").startswith("ok"), "stream: the daemon connects")
    pub.cmd("periodic 1 %.9f 50" % T1)
    ok = wait_until(lambda: st("s1")["state"] == "locked", 15, 0.05)
    tap.ok(ok, "stream: s1 locks on periodic readings at its setpoint", st("s1"))

    # From here to the disconnects, only this test's own lines are on the
    # stream, so the counters can be checked exactly.
    pub.cmd("periodic off")
    time.sleep(0.1)

    # ---- readings reach status --------------------------------------------------------
    v = "%.9f" % (T2 + 0.5e-6)
    send(2, v)
    ok = wait_until(lambda: st("s2").get("freq_thz") == v, 5, 0.02)
    s2 = st("s2")
    _, chs = wavemeter(c)
    tap.ok(ok and abs(float(s2["error_mhz"]) - 0.5) < 1e-3 and chs[2]["freq_thz"] == v and
           chs[2]["status"] == "ok" and s2["state"] in ("acquiring", "locked"),
           "a reading reaches status (freq_thz=%s error_mhz=%s) and wavemeter" %
           (s2.get("freq_thz"), s2.get("error_mhz")), (s2, chs.get(2)))

    # ---- error codes -----------------------------------------------------------------
    h0 = head()
    results = []
    for code, name in ERROR_NAMES:
        send(2, "%.9f" % (T2 + 0.1e-6))           # regulating again first
        ok1 = wait_until(lambda: st("s2")["state"] in ("acquiring", "locked"), 5, 0.01)
        send(2, str(code))
        ok2 = wait_until(lambda: st("s2")["state"] == "holding" and
                         st("s2").get("wm_status") == name, 5, 0.01)
        _, chs = wavemeter(c)
        results.append((code, name, ok1 and ok2 and chs[2]["status"] == name and
                        float(chs[2]["code"]) == code))
    h1 = head()
    tap.ok(all(r[2] for r in results),
           "error codes %s: holding, named in status and in wavemeter" %
           " ".join("%d=%s" % (cd, n) for cd, n, _ in results), [r for r in results if not r[2]])
    tap.eq(int(h1["errors"]) - int(h0["errors"]), len(ERROR_NAMES),
           "wavemeter counts the %d error readings" % len(ERROR_NAMES))
    held2 = st("s2")["piezo_v"]
    time.sleep(0.3)
    t_hold = time.monotonic()
    for i in range(10):               # error readings keep coming: still no output change
        send(2, "-3")
        time.sleep(0.07)
    late = piezo_writes(mb, 1, t_hold)
    tap.ok(not late and st("s2")["piezo_v"] == held2 and st("s2")["state"] == "holding",
           "holding holds the output through 10 more error readings (%s V, no writes)" % held2,
           late[:3])

    # ---- malformed lines -----------------------------------------------------------------
    bad = ["garbage", "1 abc 5", "1", "0 384.1 5", "65 384.1 5", "99999 384.1 5", "2 384.1 -5",
           "2 384.1 5 extra", "2 -2.5 5", "2 20000 5", "2.5 384.1 5", "2 nan 5", "2 inf 5",
           "2 1e999 5", "x2 384.1 5", "2 384.1 5x", "2 0x10 5", "-2 384.1 5", "2 -2000 5"]
    h0 = head()
    last = "%.9f" % (T2 + 0.25e-6)
    send(2, last)
    wait_until(lambda: st("s2").get("freq_thz") == last, 5, 0.02)
    for line in bad:
        pub.cmd("send " + line)
    pub.cmd("sendraw " + (b"\x002 384.1 5\n\xff\xfe\n2 384.2\x00 5\n").hex())
    pub.cmd("send ")                  # an empty line: neither a reading nor malformed
    pub.cmd("sendraw 0d0a")           # nor is a lone CR
    nbad = len(bad) + 3
    v = "%.9f" % (T2 + 0.75e-6)
    send(2, v)
    ok = wait_until(lambda: st("s2").get("freq_thz") == v, 5, 0.02)
    h1 = head()
    tap.ok(ok, "the reading after %d malformed lines arrives intact (%s)" % (nbad, v), st("s2"))
    tap.eq((int(h1["malformed"]) - int(h0["malformed"]), int(h1["readings"]) - int(h0["readings"]),
            int(h1["overlong"]) - int(h0["overlong"])), (nbad, 2, 0),
           "malformed lines counted (%d), only the 2 good readings delivered, none over-long" % nbad)
    # Junk and a good reading in one write.
    v = "%.9f" % (T2 + 0.8e-6)
    pub.cmd("sendraw " + ("junk line\n2 %s %d\n" % (v, t_ms())).encode().hex())
    ok = wait_until(lambda: st("s2").get("freq_thz") == v, 5, 0.02)
    tap.ok(ok and int(head()["malformed"]) == int(h1["malformed"]) + 1,
           "junk followed by a reading in the same segment: junk counted, reading delivered")

    # ---- over-long lines ------------------------------------------------------------------
    h0 = head()

    def padded(value, total, crlf=False):
        text = "2 %s %d" % (value, t_ms())
        return (text + " " * (total - len(text))).encode() + (b"\r\n" if crlf else b"\n")

    pub.cmd("long 300")
    pub.cmd("longchunks 2000 10")
    v257 = "%.9f" % (T2 + 0.9e-6)
    pub.cmd("sendraw " + padded(v257, 257).hex())          # a real reading, 1 byte too long
    v256 = "%.9f" % (T2 + 0.95e-6)
    pub.cmd("sendraw " + padded(v256, 256).hex())          # exactly 256 bytes: accepted
    ok256 = wait_until(lambda: st("s2").get("freq_thz") == v256, 5, 0.02)
    v256crlf = "%.9f" % (T2 + 0.85e-6)
    pub.cmd("sendraw " + padded(v256crlf, 256, crlf=True).hex())
    okcrlf = wait_until(lambda: st("s2").get("freq_thz") == v256crlf, 5, 0.02)
    v = "%.9f" % (T2 + 0.6e-6)
    send(2, v)
    ok = wait_until(lambda: st("s2").get("freq_thz") == v, 5, 0.02)
    h1 = head()
    tap.ok(ok256 and okcrlf, "a 256-byte line (LF or CRLF) is a reading", st("s2"))
    tap.ok(ok, "the reading after the over-long lines arrives intact", st("s2"))
    tap.eq((int(h1["overlong"]) - int(h0["overlong"]), int(h1["malformed"]) - int(h0["malformed"]),
            int(h1["readings"]) - int(h0["readings"])), (3, 0, 3),
           "over-long lines (300, 2000 in 10 pieces, a 257-byte reading) counted and discarded;"
           " nothing malformed; 3 readings delivered")

    # ---- publisher disconnects -----------------------------------------------------------------
    pub.cmd("periodic 1 %.9f 50" % T1)
    ok = wait_until(lambda: st("s1")["state"] == "locked", 15, 0.05)
    tap.ok(ok, "s1 locked again on periodic readings", st("s1"))
    for how in ("drop", "down"):
        h0 = head()
        cyc0 = int(st("s1")["cycles"])
        t0 = time.monotonic()
        pub.cmd(how)
        if how == "down":
            ok = wait_until(lambda: head()["connected"] == "0", 5, 0.02)
            hold = wait_until(lambda: st("s1")["state"] == "holding", 5, 0.05)
            tap.ok(ok and hold, "publisher down: connected=0, s1 goes holding once readings are"
                   " stale (%.2f s)" % (time.monotonic() - t0), (head(), st("s1")))
            time.sleep(1.0)
            pub.cmd("up")
            t0 = time.monotonic()
        ok = pub.cmd("wait-clients 1 15").startswith("ok")
        t_re = time.monotonic() - t0
        resumed = wait_until(lambda: int(st("s1")["cycles"]) >= cyc0 + 10 and
                             int(st("s1")["age_ms"]) < 500, 10, 0.05)
        h1 = head()
        locked = wait_until(lambda: st("s1")["state"] == "locked", 10, 0.05)
        tap.ok(ok and h1["connected"] == "1" and int(h1["reconnects"]) == int(h0["reconnects"]) + 1,
               "publisher %s: the daemon reconnects (after %.2f s, reconnects %s -> %s)"
               % (how, t_re, h0["reconnects"], h1["reconnects"]), (h0, h1))
        tap.ok(resumed and locked, "publisher %s: readings resume and s1 is locked" % how, st("s1"))
    pub.cmd("periodic off")
    tap.eq(d.stop(), 0, "stream: wavelockd stops cleanly")
    mb.close()


t0 = time.monotonic()
with Env() as env:
    test_wlmdata(env)
    os.unlink(env.path("wlm.events"))
    test_wlm_nocallback(env)
    test_wlm_failures(env)
tap.diag("wlmdata part: %.1f s" % (time.monotonic() - t0))
t1 = time.monotonic()
with Env() as env:
    test_stream(env)
tap.diag("stream part: %.1f s" % (time.monotonic() - t1))
tap.done()
