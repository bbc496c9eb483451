#!/usr/bin/env python3
"""wavelockd's reload and restart: what they keep, change and refuse.

1. A value changed at run time with `set` survives a reload whose file
   gives that key the same value as before (polarity, window_mhz,
   max_step_v, feedforward, run-time piezo limits), and gives way to the
   file where the file changes it.
2. A ramp whose target is outside a narrowed min_thz..max_thz stops at the
   reload; the setpoint never leaves the range.
3. A current actuator added to a laser by a reload starts at its start
   output (the first value written to its register), not at 0 V or at a
   range edge.
4. A new device that cannot be set up (an RTU serial port in use with other
   line settings) refuses the whole reload with 422: the running config
   stays in force (a gain changed in the same file is not applied) and the
   daemon keeps serving; the next good reload applies.
5. A reload that drops a device whose thread is inside a long request (a
   4 s probe of a silent server) answers at once: the event loop never
   waits for the device thread, which is stopped and freed once its
   request has timed out.
6. A laser renamed only in case is the same laser (no new laser writing
   its start output); a laser moved to another channel forgets the readings
   of the old one.
7. A restart in the middle of a ramp resumes the ramp from the point it had
   reached (saved in the state file), instead of jumping to its target.
8. A SIGHUP that arrives while wavelockd is still starting does not kill it,
   and one started with SIGHUP blocked still reloads on SIGHUP.
9. A write already queued for a device (waiting behind another laser's
   request) when a reload narrows the laser's min_v..max_v goes out within
   the new limits, and nothing of it goes to a register the reload gave to
   another laser.
10. A state file that cannot be written (missing directory): the save
   command says so, background saves log it once, and the state is written
   as soon as it can be.
11. Values set at run time (gains, polarity, limits, window) survive a
   restart; one edited in the config file while wavelockd is down comes
   from the file at the next start.
"""

import os
import signal
import time

from wltest import (TAP, Env, ModbusRecorder, StreamPublisher, kv, lab_conf, laser_conf,
                    wait_until)
from hwtest import FaultServer

tap = TAP()

A_THZ, B_THZ, C_THZ = 384.2304844, 377.1074635, 351.7255


def get(c, laser, param):
    r = c.cmd("get %s %s" % (laser, param))
    return kv(r[0]).get(param) if r[-1] == "OK" else r[-1]


def status(c, laser):
    return kv(c.cmd("status %s" % laser)[0])


def conf(env, mb, pub, kp=0.001, window=5.0, a_max_thz=None, c_current=False, rtu_baud=None):
    cur = {"device": "ao1", "reg": 5, "fmt": "s16", "scale": 1000.0, "min_v": -1.0,
           "max_v": 1.0, "feedforward": -0.25}
    lasers = [
        laser_conf("a", 1, A_THZ, reg=0, autolock=False, pid={"kp": kp, "ki": 0.002}),
        laser_conf("b", 2, B_THZ, reg=2, autolock=False, current=cur),
        laser_conf("c", 3, C_THZ, reg=10, autolock=False,
                   current={"device": "ao1", "reg": 50, "fmt": "s16", "scale": 1000.0,
                            "min_v": 0.2, "max_v": 1.0, "feedforward": 0.0}
                   if c_current else None),
    ]
    if rtu_baud:
        lasers.append(laser_conf("d", 4, 370.5, device="bus", reg=0, autolock=False))
    text = lab_conf(lasers, [("ao1", mb.port)], pub.port)
    text = text.replace("window_mhz = 5.0;", "window_mhz = %r;" % window, 1)
    if a_max_thz is not None:
        text = text.replace("max_thz = %.9f;" % (A_THZ + 0.2), "max_thz = %.9f;" % a_max_thz, 1)
    if rtu_baud:
        text = text.replace(
            "timeout_ms = 200; }\n);",
            "timeout_ms = 200; },\n  { name = \"bus\"; url = \"rtu:%s?baud=%d\"; unit = 1; }\n);"
            % (env.path("ttyWL0"), rtu_baud))
    return text


def reload_with(env, c, text):
    """Rewrite the config and reload: True when the daemon took it."""
    env.write("reload.conf", text)
    return c.cmd("reload")[-1].startswith("OK reloaded")


with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()
    cfg = env.write("reload.conf", conf(env, mb, pub, rtu_baud=19200))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)

    # ---- 1. run-time values and the file ------------------------------------------------
    changes = {"polarity": "-1", "window_mhz": "3", "max_step_v": "0.05", "piezo_max_v": "8",
               "piezo_min_v": "1"}
    for k, v in changes.items():
        tap.ok(c.cmd("set a %s %s" % (k, v))[-1].startswith("OK"), "set a %s %s" % (k, v))
    tap.ok(c.cmd("set b feedforward 0.5")[-1].startswith("OK"), "set b feedforward 0.5")
    tap.ok(reload_with(env, c, conf(env, mb, pub, kp=0.004, rtu_baud=19200)),
           "reload with a new kp for laser a")
    kept = {k: get(c, "a", k) for k in changes}
    tap.ok(all(float(kept[k]) == float(v) for k, v in changes.items()),
           "values set at run time survive a reload that leaves their keys alone (%s)" % kept, kept)
    tap.ok(float(get(c, "b", "feedforward")) == 0.5, "b's feedforward kept (%s)"
           % get(c, "b", "feedforward"))
    tap.ok(float(get(c, "a", "kp")) == 0.004, "the file's new kp applies (%s)" % get(c, "a", "kp"))
    tap.ok(reload_with(env, c, conf(env, mb, pub, kp=0.004, window=4.0, rtu_baud=19200)),
           "reload with a new window_mhz for every laser")
    tap.ok(float(get(c, "a", "window_mhz")) == 4.0 and float(get(c, "a", "polarity")) == -1 and
           float(get(c, "a", "piezo_max_v")) == 8.0,
           "the file's window_mhz replaces the run-time one, the other run-time values stay "
           "(window %s, polarity %s, piezo_max_v %s)"
           % (get(c, "a", "window_mhz"), get(c, "a", "polarity"), get(c, "a", "piezo_max_v")))

    # ---- 2. a ramp whose target leaves a narrowed range ---------------------------------
    r = c.cmd("ramp a %.9f THz 1" % (A_THZ + 0.15))
    tap.ok(r[-1].startswith("OK"), "ramp a towards +150 GHz at 1 MHz/s", r)
    time.sleep(0.3)
    tap.ok(status(c, "a").get("ramp") == "1", "ramp running")
    tap.ok(reload_with(env, c, conf(env, mb, pub, kp=0.004, window=4.0, a_max_thz=A_THZ + 0.1,
                                    rtu_baud=19200)),
           "reload narrowing a's max_thz below the ramp target")
    sp0 = float(status(c, "a")["setpoint_thz"])
    time.sleep(0.5)
    st = status(c, "a")
    tap.ok(st.get("ramp") == "0" and float(st["setpoint_thz"]) == sp0 and
           A_THZ - 0.2 <= sp0 <= A_THZ + 0.1,
           "the ramp stopped at %.9f THz, inside the new range (ramp=%s)" % (sp0, st.get("ramp")),
           st)

    # ---- 3. a current actuator added by a reload ----------------------------------------
    n_writes = len(mb.writes)
    tap.ok(reload_with(env, c, conf(env, mb, pub, kp=0.004, window=4.0, a_max_thz=A_THZ + 0.1,
                                    c_current=True, rtu_baud=19200)),
           "reload adding a current actuator (0.2..1.0 V, start mid-range) to laser c")
    wait_until(lambda: any(a == 50 for _, a, _ in list(mb.writes)[n_writes:]), 5, 0.02)
    first = [v for _, a, v in list(mb.writes)[n_writes:] if a == 50]
    volts = (first[0][0] - 65536 if first[0][0] >= 32768 else first[0][0]) / 1000.0 if first else None
    tap.ok(volts is not None and abs(volts - 0.6) < 1e-9 and
           abs(float(status(c, "c").get("current_v", "nan")) - 0.6) < 1e-9,
           "its first write is its start output 0.6 V (wrote %s V, status %s V)"
           % (volts, status(c, "c").get("current_v")))

    # ---- 4. a device that cannot be set up refuses the reload ---------------------------
    bad = conf(env, mb, pub, kp=0.009, window=4.0, a_max_thz=A_THZ + 0.1, c_current=True,
               rtu_baud=9600)
    env.write("reload.conf", bad)
    r = c.cmd("reload")
    tap.ok(r[-1].startswith("ERR 422") and "bus" in r[-1] and "restart" in r[-1],
           "reload changing the baud rate of a serial port in use: refused (%s)" % r[-1])
    tap.ok(d.alive() and c.cmd("ping") == ["OK"], "the daemon keeps serving")
    tap.ok(float(get(c, "a", "kp")) == 0.004,
           "nothing of the refused file applied (kp %s, the file says 0.009)" % get(c, "a", "kp"))
    devs = {kv(x)["name"]: kv(x) for x in c.cmd("devices")[:-1]}
    tap.ok(sorted(devs) == ["ao1", "bus"], "both devices still there (%s)" % sorted(devs))
    tap.ok(reload_with(env, c, conf(env, mb, pub, kp=0.009, window=4.0, a_max_thz=A_THZ + 0.1,
                                    c_current=True, rtu_baud=19200)),
           "the same change with the port's settings as they were: accepted")
    tap.ok(float(get(c, "a", "kp")) == 0.009, "and applied (kp %s)" % get(c, "a", "kp"))
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")
    mb.close()
    pub.close()


def devices(c):
    return {kv(x)["name"]: kv(x) for x in c.cmd("devices")[:-1]}


with Env() as env:
    fs = FaultServer(env)
    mb = ModbusRecorder()
    pub = StreamPublisher()

    def slow_conf(device):
        devs = [("slow", fs.port), ("ok", mb.port)] if device == "slow" else [("ok", mb.port)]
        text = lab_conf([laser_conf("a", 1, A_THZ, device=device, reg=0)], devs, pub.port)
        return text.replace('"tcp://127.0.0.1:%d"; unit = 1; timeout_ms = 200;' % fs.port,
                            '"tcp://127.0.0.1:%d"; unit = 1; timeout_ms = 4000;' % fs.port)

    cfg = env.write("slow.conf", slow_conf("slow"))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    up = wait_until(lambda: devices(c).get("slow", {}).get("up") == "1", 10, 0.05)
    fs.cmd("silent")
    # A reading makes a write; it times out after 4 s, the device goes down and
    # its thread reconnects at once and sends its probe read, which hangs 4 s.
    pub.send(1, A_THZ)
    down = wait_until(lambda: devices(c).get("slow", {}).get("up") == "0", 15, 0.05)
    time.sleep(0.5)
    env.write("slow.conf", slow_conf("ok"))
    t0 = time.monotonic()
    r = c.cmd("reload")
    took = time.monotonic() - t0
    tap.ok(up and down and r[-1].startswith("OK") and took < 1.0,
           "reload dropping a device inside a 4 s request answers in %.3f s" % took, r)
    gone = wait_until(lambda: sorted(devices(c)) == ["ok"], 15, 0.05)
    tap.ok(gone and c.cmd("ping") == ["OK"],
           "the dropped device is stopped once its request timed out (%s)" % sorted(devices(c)))
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")
    fs.stop()
    mb.close()
    pub.close()

with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()

    def one(name, channel):
        return lab_conf([laser_conf(name, channel, A_THZ, reg=0, autolock=False)],
                        [("ao1", mb.port)], pub.port)

    cfg = env.write("case.conf", one("a", 1))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    c.cmd("output a piezo 7.5")
    wait_until(lambda: any(a == 0 and v[0] == round(7.5 * 6553.5) for _, a, v in list(mb.writes)), 5)
    n = len(mb.writes)
    env.write("case.conf", one("A", 1))
    r = c.cmd("reload")
    time.sleep(0.5)
    st = kv(c.cmd("status A")[0]) if r[-1].startswith("OK") else {}
    tap.ok(r[-1].startswith("OK") and st.get("piezo_v") == "7.500000" and len(mb.writes) == n,
           "a laser renamed a -> A is the same laser: no write, output still %s V (%d writes)"
           % (st.get("piezo_v"), len(mb.writes) - n), r)
    pub.send(1, A_THZ + 1e-6)
    seen = wait_until(lambda: kv(c.cmd("status A")[0]).get("freq_thz") != "none", 5, 0.05)
    env.write("case.conf", one("A", 2))
    r = c.cmd("reload")
    st = kv(c.cmd("status A")[0])
    tap.ok(seen and r[-1].startswith("OK") and st.get("channel") == "2" and
           st.get("freq_thz") == "none",
           "moved to channel 2 it forgets channel 1's reading (freq_thz=%s)" % st.get("freq_thz"), st)
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")

    # ---- 7. a restart in the middle of a ramp ---------------------------------------------
    cfg = env.write("ramp.conf", lab_conf([laser_conf("r", 1, A_THZ, reg=0, autolock=False)],
                                          [("ao1", mb.port)], pub.port,
                                          state_file=env.path("ramp.state")))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    target = A_THZ + 0.1
    c.cmd("ramp r %.9f THz 1000" % target)          # 100 GHz at 1 GHz/s: 100 s
    time.sleep(1.0)
    before = float(kv(c.cmd("status r")[0])["setpoint_thz"])
    tap.eq(d.stop(), 0, "wavelockd stopped (SIGTERM) in the middle of a ramp")
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    st = kv(c.cmd("status r")[0])
    after = float(st["setpoint_thz"])
    tap.ok(st.get("ramp") == "1" and abs(after - before) < 0.005 and after < target - 0.05,
           "the restart resumes the ramp from %.6f THz (was at %.6f THz when stopped; target "
           "%.6f THz)" % (after, before, target), st)
    time.sleep(0.5)
    later = float(kv(c.cmd("status r")[0])["setpoint_thz"])
    tap.ok(later > after, "and it goes on (%.6f THz 0.5 s later)" % later)
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")

    # ---- 8. SIGHUP while starting, and a blocked SIGHUP -----------------------------------
    def hup_pending():
        """In the child before exec: SIGHUP blocked and already pending, as
        from a supervisor that blocks it and a reload sent at once."""
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])
        os.kill(os.getpid(), signal.SIGHUP)

    d = env.start_daemon(cfg, wait=False, preexec_fn=hup_pending)
    portfile = env.path("wavelockd.%d.port" % (len(env.procs) - 1))
    up = wait_until(lambda: os.path.exists(portfile) or not d.alive(), 10, 0.02)
    alive = d.alive()
    if alive:
        with open(portfile) as f:
            d.port = int(f.read().split()[0])
        env.connect(d.port).cmd("ping")       # the event loop runs
    tap.ok(up and alive, "a SIGHUP pending when wavelockd starts does not kill it (alive: %s)"
           % alive, d.output()[-2000:])
    reloaded = False
    if alive:
        d.signal(signal.SIGHUP)
        reloaded = wait_until(lambda: "SIGHUP: reloading" in d.output() or not d.alive(), 5) \
            and d.alive() and d.output().count("SIGHUP: reloading") == 1
    tap.ok(reloaded, "and started with SIGHUP blocked, it still reloads on one", d.output()[-2000:])
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")

    # ---- 9. a write in flight when a reload narrows the limits ---------------------------
    def narrow_conf(a_max_v):
        text = lab_conf([laser_conf("a", 1, A_THZ, reg=0, autolock=False, max_v=a_max_v),
                         laser_conf("b", 2, B_THZ, reg=2, autolock=False)],
                        [("ao1", mb.port)], pub.port, state_file=env.path("narrow.state"))
        return text.replace("timeout_ms = 200;", "timeout_ms = 5000;")

    def queued_reload(text, seen, settle=0.0):
        """b's write holds the device 1 s; a's hand-set 9 V waits in the
        device queue behind it while the reload to text happens.  Waits
        until seen(writes after the reload); returns the answer and those
        writes as (register, volts)."""
        mb.delay = 1.0
        c.cmd("output b piezo 3")
        c.cmd("output a piezo 9")
        env.write("narrow.conf", text)
        r = c.cmd("reload")
        t_reload = time.monotonic()

        def late():
            return [(a, round(v[0] / 6553.5, 4)) for t, a, v in list(mb.writes) if t > t_reload]
        wait_until(lambda: seen(late()), 6, 0.02)
        time.sleep(settle)
        mb.delay = 0.0
        return r, late()

    cfg = env.write("narrow.conf", narrow_conf(10.0))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    wait_until(lambda: {a for _, a, _ in list(mb.writes)} >= {0, 2}, 5, 0.02)
    # the reload lowers a's max_v under the queued 9 V
    r, late = queued_reload(narrow_conf(6.0), lambda w: any(a == 0 for a, _ in w))
    after = [v for a, v in late if a == 0]
    tap.ok(r[-1].startswith("OK") and after and max(after) <= 6.0 + 1e-9,
           "a write queued before a reload that lowers max_v to 6 V goes out within it "
           "(wrote %s V)" % ["%.4f" % v for v in after], r)
    tap.ok(abs(float(kv(c.cmd("output a piezo")[0]).get("piezo_v", "nan")) - 6.0) < 1e-3,
           "and the laser reports the value written", c.cmd("output a piezo"))

    # The same when the reload swaps the two lasers' registers: a's queued
    # 9 V must not land on register 0, which is b's now (b: at most 5 V).
    def swap_conf(a_reg, b_reg):
        text = lab_conf([laser_conf("a", 1, A_THZ, reg=a_reg, autolock=False),
                         laser_conf("b", 2, B_THZ, reg=b_reg, autolock=False, max_v=5.0,
                                    start_v=2.5)],
                        [("ao1", mb.port)], pub.port, state_file=env.path("narrow.state"))
        return text.replace("timeout_ms = 200;", "timeout_ms = 5000;")

    env.write("narrow.conf", swap_conf(0, 2))
    tap.ok(c.cmd("reload")[-1].startswith("OK"), "reload: a on register 0, b on 2 (max 5 V)")
    time.sleep(0.3)
    r, late = queued_reload(swap_conf(2, 0), lambda w: any(a == 2 and v > 6 for a, v in w))
    tap.ok(r[-1].startswith("OK") and all(v <= 5.0 + 1e-9 for a, v in late if a == 0) and
           (2, 9.0001) in late,
           "a reload swapping registers under a queued write: nothing over b's 5 V on "
           "register 0, a's 9 V follows it to register 2 (writes after the reload: %s)" % late)

    # And when the reload removes the laser and gives its register to a new
    # one (c, at most 5 V): the removed laser's queued 9 V is not written.
    def remove_conf(with_a):
        lasers = [laser_conf("b", 2, B_THZ, reg=2, autolock=False)]
        lasers.insert(0, laser_conf("a", 1, A_THZ, reg=0, autolock=False) if with_a else
                      laser_conf("c", 3, C_THZ, reg=0, autolock=False, max_v=5.0, start_v=2.5))
        text = lab_conf(lasers, [("ao1", mb.port)], pub.port, state_file=env.path("narrow.state"))
        return text.replace("timeout_ms = 200;", "timeout_ms = 5000;")

    env.write("narrow.conf", remove_conf(True))
    tap.ok(c.cmd("reload")[-1].startswith("OK"), "reload: a on register 0, b on 2")
    time.sleep(0.5)
    # b's write, then c's start output (2.5 V), each held 1 s
    r, late = queued_reload(remove_conf(False), lambda w: any(a == 0 for a, _ in w), settle=1.5)
    tap.ok(r[-1].startswith("OK") and all(v <= 5.0 + 1e-9 for a, v in late if a == 0) and
           (0, 2.5) in late,
           "a reload removing a laser with a queued 9 V write and giving its register to a "
           "laser limited to 5 V: the 9 V is not written (writes after the reload: %s)" % late)
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")

    # ---- 10. a state file that cannot be written --------------------------------------------
    sub = env.path("statedir")
    cfg = env.write("nodir.conf", lab_conf([laser_conf("a", 1, A_THZ, reg=0, autolock=False)],
                                           [("ao1", mb.port)], pub.port,
                                           state_file=os.path.join(sub, "state")))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    r = c.cmd("save")
    tap.ok(r[-1].startswith("ERR 500") and "statedir" in r[-1],
           "save into a missing directory: %s" % r[-1])
    for ki in ("0.003", "0.004"):
        c.cmd("set a ki %s" % ki)
        time.sleep(2.2)            # the save after a change (1 s), the writer's report (1 s)
    logged = d.output().count("cannot write state file")
    tap.ok(logged == 1 and c.cmd("ping") == ["OK"],
           "background saves that fail are logged once (%d line%s) and the daemon serves on"
           % (logged, "" if logged == 1 else "s"), d.output()[-1500:])
    os.mkdir(sub)
    c.cmd("set a ki 0.005")
    again = wait_until(lambda: "state file written again" in d.output(), 5, 0.1)
    saved = ""
    if os.path.exists(os.path.join(sub, "state")):
        with open(os.path.join(sub, "state")) as f:
            saved = f.read()
    tap.ok(again and "ki=0.005" in saved,
           "once the directory exists the state is written and that is logged", saved)
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")

    # ---- 11. the config file edited while the daemon is down ------------------------------
    def edit_conf(kp, thz, max_v=10.0):
        text = lab_conf([laser_conf("a", 1, A_THZ, reg=0, autolock=False, max_v=max_v,
                                    pid={"kp": kp, "ki": 0.002, "kd": 0.0})],
                        [("ao1", mb.port)], pub.port, state_file=env.path("edit.state"))
        return text.replace('setpoint = "%.9f THz"' % A_THZ, 'setpoint = "%.9f THz"' % thz)

    cfg = env.write("edit.conf", edit_conf(0.001, A_THZ))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    run = {"ki": "0.005", "polarity": "-1", "piezo_max_v": "8", "window_mhz": "3"}
    for k, v in run.items():
        c.cmd("set a %s %s" % (k, v))
    c.cmd("setpoint a %.9f THz" % (A_THZ + 0.01))
    tap.eq(d.stop(), 0, "wavelockd stopped after run-time changes (%s, setpoint)"
           % " ".join("%s=%s" % kv_ for kv_ in run.items()))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got = {k: get(c, "a", k) for k in run}
    tap.ok(all(float(got[k]) == float(v) for k, v in run.items()),
           "values set at run time survive a restart (%s)" % got, d.output()[-1500:])
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")
    env.write("edit.conf", edit_conf(0.003, A_THZ))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    got = (get(c, "a", "kp"), get(c, "a", "ki"), status(c, "a").get("setpoint_thz"))
    tap.ok(float(got[0]) == 0.003 and float(got[1]) == 0.005 and
           abs(float(got[2]) - (A_THZ + 0.01)) < 1e-9,
           "kp edited in the file while down comes from the file; ki and the setpoint set at "
           "run time stay (kp %s, ki %s, setpoint %s THz)" % got, d.output()[-1500:])
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")
    env.write("edit.conf", edit_conf(0.003, A_THZ + 0.05, max_v=9.0))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    sp = float(status(c, "a").get("setpoint_thz"))
    got = {k: get(c, "a", k) for k in ("ki", "polarity", "piezo_max_v")}
    tap.ok(abs(sp - (A_THZ + 0.05)) < 1e-9 and float(got["ki"]) == 0.005 and
           float(got["polarity"]) == -1 and float(got["piezo_max_v"]) == 9.0,
           "a setpoint and a max_v edited in the file while down come from the file "
           "(%.9f THz, %s); the rest stays" % (sp, got), d.output()[-1500:])
    tap.eq(d.stop(), 0, "wavelockd stops cleanly")
    mb.close()
    pub.close()
tap.done()
