#!/usr/bin/env python3
"""wavelockd's text protocol, as a person with nc or telnet would use it:
every command and error code over a real TCP connection, against an
in-process Modbus module and wavemeter publisher."""

import os
import socket
import time

from wltest import (TAP, Env, ModbusRecorder, StreamPublisher, kv, lab_conf, laser_conf,
                    wait_until)

tap = TAP()


def final(lines):
    return lines[-1] if lines else ""


def code(lines):
    f = final(lines)
    return int(f.split()[1]) if f.startswith("ERR ") else 0


with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()
    lasers = [
        laser_conf("cool780", 1, 384.2304844, autolock=False,
                   current={"reg": 1, "fmt": "s16", "scale": 3276.7}),
        laser_conf("repump795", 2, 377.1074635, reg=4, fmt="f32", order="cdab", scale=1.0,
                   autolock=False),
    ]
    cfg = env.write("proto.conf", lab_conf(lasers, [("ao1", mb.port)], pub.port,
                                           server_extra="max_clients = 6;"))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)

    # ---- framing ------------------------------------------------------------
    tap.ok(c.greeting.startswith("* wavelock ") and "protocol 1" in c.greeting,
           "greeting names wavelock and protocol 1", c.greeting)
    tap.eq(c.cmd("ping"), ["OK"], "ping")
    c.send("PING\r\n")
    tap.eq(c.response(), ["OK"], "CRLF line and upper-case command")
    c.send("  \t pInG  \t \n")
    tap.eq(c.response(), ["OK"], "extra spaces and tabs, mixed case")
    c.send("\n\r\n   \nping\n")
    tap.eq(c.response(), ["OK"], "empty lines are ignored")
    c.send("x" * 5000 + "\n")
    r = c.response()
    tap.ok(code(r) == 413, "5000-byte line gets ERR 413", r)
    tap.eq(c.cmd("ping"), ["OK"], "connection usable after 413")
    c.send(bytes(b for b in range(1, 256) if b not in (10, 13, 255)) + b"\n")
    r = c.response()
    tap.ok(code(r) in (400, 404), "binary garbage gets ERR 400/404", r)
    tap.eq(c.cmd("ping"), ["OK"], "connection usable after garbage")
    c.send(b"\xff\xfb\x01\xff\xfd\x03ping\n")
    tap.eq(c.response(), ["OK"], "telnet IAC negotiation is ignored")
    r = c.cmd("frobnicate now")
    tap.ok(code(r) == 404, "unknown command gets 404", r)
    r = c.cmd("lock")
    tap.ok(code(r) == 400, "missing argument gets 400 with usage", r)

    # ---- help, version, lasers, status -----------------------------------------
    r = c.cmd("help")
    tap.ok(final(r) == "OK" and any("setpoint" in x for x in r) and len(r) > 10,
           "help lists the commands", r)
    tap.ok(all(x and not x.startswith(("OK", "ERR", "*")) for x in r[:-1]),
           "data lines are never empty and never look like final lines")
    r = c.cmd("help setpoint")
    tap.ok(final(r) == "OK" and "setpoint" in " ".join(r), "help <command>", r)
    r = c.cmd("version")
    v = kv(r[0])
    tap.ok(final(r) == "OK" and v.get("protocol") == "1" and "wavelock" in v, "version", r)
    r = c.cmd("lasers")
    tap.eq([kv(x).get("name") for x in r[:-1]], ["cool780", "repump795"], "lasers lists both")
    r = c.cmd("status")
    st = kv(r[0])
    tap.ok(len(r) == 3 and all(k in st for k in ("name", "state", "setpoint_thz", "freq_thz",
                                                 "error_mhz", "piezo_v", "current_v")),
           "status has the documented keys", r)
    tap.ok("current_v" not in kv(r[1]), "no current_v for a piezo-only laser", r[1])
    tap.ok(code(c.cmd("status nosuch")) == 404, "status of an unknown laser: 404")

    # ---- outputs reach the device -----------------------------------------------
    ok = wait_until(lambda: mb.regs[0] == 32768, 5)
    tap.ok(ok, "start output 5.0 V written as u16 32768", mb.regs[:8])
    r = c.cmd("output cool780 piezo 6")
    tap.eq(final(r).split()[0], "OK", "output set by hand while unlocked")
    tap.ok(wait_until(lambda: mb.regs[0] == 39321, 5), "6 V written as 39321", mb.regs[:4])
    r = c.cmd("output cool780 current -0.5")
    tap.ok(wait_until(lambda: mb.regs[1] == 65536 - 1638, 5), "current -0.5 V as s16 -1638",
           mb.regs[:4])
    r = c.cmd("output cool780 piezo 10.5")
    tap.ok(code(r) == 422, "output above max_v: 422", r)
    r = c.cmd("output cool780 piezo")
    tap.ok(abs(float(kv(r[0])["piezo_v"]) - 6.0) < 1e-9, "output reads back 6 V", r)
    r = c.cmd("output repump795 current 0.1")
    tap.ok(code(r) == 404, "current on a piezo-only laser: 404", r)
    c.cmd("output repump795 piezo 2.5")
    tap.ok(wait_until(lambda: mb.regs[4:6] == [0x0000, 0x4020], 5),
           "f32 CDAB 2.5 V written as 0000 4020", mb.regs[4:6])

    # ---- setpoint and units -------------------------------------------------------
    r = c.cmd("setpoint cool780")
    tap.ok(abs(float(kv(r[0])["setpoint_thz"]) - 384.2304844) < 1e-9, "setpoint read", r)
    for text, want in (("384.25", 384.25), ("384.26THz", 384.26), ("384270 GHz", 384.27),
                       ("780.2 nm", 299792.458 / 780.2), ("12816.5cm-1", 0.0299792458 * 12816.5)):
        r = c.cmd("setpoint cool780 " + text)
        got = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
        tap.ok(final(r).startswith("OK") and abs(got - want) < 1e-8,
               "setpoint %s" % text, (r, got, want))
    r = c.cmd("setpoint cool780 390 THz")
    tap.ok(code(r) == 422, "setpoint outside the allowed range: 422", r)
    r = c.cmd("setpoint cool780 384.25 furlongs")
    tap.ok(code(r) in (400, 422), "unknown unit refused", r)
    r = c.cmd("setpoint cool780 banana")
    tap.ok(code(r) == 422, "garbage setpoint: 422", r)
    got = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
    tap.ok(abs(got - 0.0299792458 * 12816.5) < 1e-8, "refused setpoints changed nothing")
    # A unit error is found before the range check, worded one way.
    r = c.cmd("setpoint cool780 780.2412 mn")
    tap.ok(code(r) == 422 and "unknown unit 'mn' (use THz, GHz, MHz, nm or cm-1)" in final(r)
           and "range" not in final(r), "780.2412 mn: refused for the unit, not the range", r)
    r2 = c.cmd("setpoint cool780 384.25 furlongs")
    tap.ok(code(r2) == 422 and final(r2).replace("furlongs", "mn") == final(r),
           "one wording for unit errors", (r, r2))
    r = c.cmd("setpoint cool780 780.2412mn")
    tap.ok(code(r) == 422 and "unknown unit 'mn'" in final(r), "780.2412mn (glued): unit error", r)
    r = c.cmd("setpoint cool780 780,2412 nm")
    tap.ok(code(r) == 422 and "decimal comma" in final(r) and "780.2412" in final(r)
           and "two units" not in final(r), "780,2412 nm: decimal comma named", r)
    r = c.cmd("ramp cool780 780.2412 mn 100")
    tap.ok(code(r) == 422 and "unknown unit 'mn'" in final(r), "ramp: unit error first too", r)
    # A leading sign: relative to the present setpoint.
    c.cmd("setpoint cool780 384.23")
    steps = (("+50 MHz", lambda f: f + 50e-6), ("-0.2 GHz", lambda f: f - 0.2e-3),
             ("+0.001 nm", lambda f: 299792.458 / (299792.458 / f + 0.001)),
             ("-0.5cm-1", lambda f: (f / 0.0299792458 - 0.5) * 0.0299792458),
             ("-0.0001", lambda f: f - 0.0001))
    for text, step in steps:
        before = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
        r = c.cmd("setpoint cool780 " + text)
        got = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
        tap.ok(final(r).startswith("OK") and abs(got - step(before)) < 2e-9,
               "relative setpoint %s: %.9f -> %.9f THz" % (text, before, got), (r, step(before)))
    before = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
    r = c.cmd("setpoint cool780 +1 THz")
    got = float(kv(c.cmd("setpoint cool780")[0])["setpoint_thz"])
    tap.ok(code(r) == 422 and "allowed range" in final(r) and got == before,
           "relative setpoint outside the allowed range: 422, setpoint unchanged", r)
    r = c.cmd("setpoint cool780 +50 mn")
    tap.ok(code(r) == 422 and "unknown unit 'mn'" in final(r), "relative with a bad unit: unit error", r)
    r = c.cmd("ramp cool780 +100 MHz 1000")
    sp = kv(c.cmd("setpoint cool780")[0])
    tap.ok(final(r).startswith("OK") and abs(float(sp["target_thz"]) - (before + 100e-6)) < 2e-9,
           "relative ramp target: +100 MHz", (r, sp))
    c.cmd("setpoint cool780 384.23")
    r = c.cmd("ramp cool780 384.2304844 THz 1000")
    tap.ok(final(r).startswith("OK"), "ramp accepted", r)
    tap.ok(kv(c.cmd("setpoint cool780")[0]).get("ramp") == "1", "ramp in progress")
    tap.ok(code(c.cmd("ramp cool780 384.23 -5")) == 422, "negative ramp rate: 422")
    tap.ok(code(c.cmd("ramp cool780 999 5")) == 422, "ramp target out of range: 422")

    # ---- get/set -----------------------------------------------------------------
    r = c.cmd("get cool780 all")
    g = kv(r[0])
    tap.ok(all(k in g for k in ("kp", "ki", "kd", "window_mhz", "piezo_min_v")), "get all", r)
    tap.eq(c.cmd("set cool780 ki 0.004")[-1].split()[0], "OK", "set ki")
    tap.ok(abs(float(kv(c.cmd("get cool780 ki")[0])["ki"]) - 0.004) < 1e-12, "get ki reads it")
    # Numbers print in the shortest form that reads back exactly.
    r = c.cmd("set cool780 kp 0.0003")
    tap.eq(r, ["OK kp=0.0003"], "set kp 0.0003 answers kp=0.0003")
    r = c.cmd("get cool780 kp")
    tap.eq(r, ["name=cool780 kp=0.0003", "OK"], "get kp prints 0.0003, not 0.00029999999999999997")
    r = c.cmd("get cool780 all")
    tap.ok(" kp=0.0003 " in r[0] and " ki=0.004 " in r[0], "get all: kp=0.0003 ki=0.004", r)
    r = c.cmd("set cool780 kd 0.1234567890123")
    tap.eq(r, ["OK kd=0.1234567890123"], "set answers the value exactly (not %g's 0.123457)")
    tap.eq(kv(c.cmd("get cool780 kd")[0]).get("kd"), "0.1234567890123", "get kd reads it back")
    c.cmd("set cool780 kp 0")
    c.cmd("set cool780 kd 0")
    tap.ok(code(c.cmd("set cool780 ki -1")) == 422, "negative gain: 422")
    tap.ok(code(c.cmd("set cool780 piezo_max_v 12")) == 422,
           "run-time limit beyond the configured one: 422")
    tap.ok(code(c.cmd("set cool780 polarity 0")) == 422, "polarity 0: 422")
    tap.ok(code(c.cmd("get cool780 nonsense")) == 404, "unknown parameter: 404")
    tap.ok(code(c.cmd("set nosuch ki 1")) == 404, "unknown laser: 404")
    tap.eq(c.cmd("set cool780 piezo_max_v 5.5")[-1].split()[0], "OK", "narrow piezo_max_v")
    tap.ok(wait_until(lambda: mb.regs[0] == round(5.5 * 6553.5), 5),
           "output above a narrowed limit is brought inside it", mb.regs[0])

    # ---- lock state and 409 ----------------------------------------------------------
    tap.eq(c.cmd("lock cool780"), ["OK"], "lock")
    r = c.cmd("output cool780 piezo 3")
    tap.ok(code(r) == 409, "output by hand while locked: 409", r)
    tap.eq(c.cmd("unlock cool780"), ["OK"], "unlock")
    tap.ok(kv(c.cmd("status cool780")[0])["state"] == "off", "state off after unlock")

    # ---- wavemeter and subscriptions ---------------------------------------------------
    wait_until(lambda: pub.connected() > 0, 5)
    pub.send(1, 384.2304844)
    pub.send_raw("2 -3 100\n")
    time.sleep(0.3)
    r = c.cmd("wavemeter 1")
    tap.ok(final(r) == "OK" and abs(float(kv(r[0])["freq_thz"]) - 384.2304844) < 1e-9,
           "wavemeter shows the reading", r)
    r = c.cmd("wavemeter 2")
    tap.ok(final(r) == "OK" and kv(r[0]).get("status") not in (None, "ok"),
           "wavemeter shows an error code as a status", r)
    tap.ok(code(c.cmd("wavemeter 9")) == 404, "channel without readings: 404")
    tap.ok(code(c.cmd("wavemeter x")) == 422, "bad channel: 422")
    s = env.connect(d.port)
    r = s.cmd("subscribe cool780")
    tap.ok(final(r).startswith("OK"), "subscribe", r)
    pub.send(1, 384.2304850)
    line = s.readline(timeout=5)
    tap.ok(line.startswith("* reading") and kv(line).get("laser") == "cool780",
           "subscriber gets a reading event", line)
    pub.send(2, 377.1074635)
    pub.send(1, 384.2304851)
    line = s.readline(timeout=5)
    tap.ok(kv(line).get("laser") == "cool780", "events filtered to the subscribed laser", line)
    s.cmd("lock cool780")
    events = []
    s.send("ping\n")
    r = s.response(events)
    c.cmd("unlock cool780")
    tap.ok(r == ["OK"], "responses are whole while events flow")
    tap.eq(s.cmd("unsubscribe"), ["OK"], "unsubscribe")
    s.close()

    # ---- save, reload ----------------------------------------------------------------
    r = c.cmd("save")
    tap.ok(final(r).startswith("OK") and os.path.exists(env.path("wavelock.state")),
           "save writes the state file", r)
    with open(env.path("wavelock.state")) as f:
        saved = f.read()
    tap.ok(" set.ki=0.004 " in saved and "0.0040000000000000001" not in saved,
           "the state file holds set.ki=0.004 (shortest exact form)", saved)
    r = c.cmd("reload")
    tap.ok(final(r).startswith("OK"), "reload of a good config", r)
    with open(cfg) as f:
        good = f.read()
    with open(cfg, "w") as f:
        f.write(good.replace("lasers = (", "lasers = ((", 1))
    r = c.cmd("reload")
    tap.ok(code(r) == 422 and "proto.conf" in final(r), "reload of a broken config: error names the file", r)
    tap.eq(c.cmd("ping"), ["OK"], "daemon still serving after a refused reload")
    with open(cfg, "w") as f:
        f.write(good)

    # ---- subscriptions follow their lasers across a reload that reorders them ----
    s = env.connect(d.port)
    s.cmd("subscribe repump795")
    with open(cfg, "w") as f:
        f.write(lab_conf([laser_conf("blue461", 3, 650.5032, reg=8, autolock=False)] + lasers,
                         [("ao1", mb.port)], pub.port, server_extra="max_clients = 6;"))
    r = c.cmd("reload")
    tap.ok(final(r).startswith("OK") and len(c.cmd("lasers")) == 4, "reload added a laser", r)
    pub.send(3, 650.5032)
    pub.send(1, 384.2304844)
    pub.send(2, 377.1074640)
    line = s.readline(timeout=5)
    tap.ok(kv(line).get("laser") == "repump795",
           "after the reload the subscriber still gets exactly its laser", line)
    s.close()
    # A reload that replaces the device: the old one is retired, the new one drives.
    moved = [x.replace('device = "ao1"', 'device = "ao7"') for x in lasers]
    with open(cfg, "w") as f:
        f.write(lab_conf(moved, [("ao7", mb.port)], pub.port, server_extra="max_clients = 6;"))
    r = c.cmd("reload")
    dv = [kv(x).get("name") for x in c.cmd("devices")[:-1]]
    tap.ok(final(r).startswith("OK") and dv == ["ao7"], "reload replaced device ao1 by ao7", (r, dv))
    c.cmd("output cool780 piezo 4")      # inside the run-time piezo_max_v 5.5 set above
    tap.ok(wait_until(lambda: mb.regs[0] == int(4 * 6553.5 + 0.5), 5),
           "outputs go through the new device", mb.regs[0])
    with open(cfg, "w") as f:
        f.write(good)
    c.cmd("reload")
    tap.ok(final(c.cmd("ping")) == "OK", "daemon fine after the old device was retired")

    # ---- 503 when the device is gone -----------------------------------------------------
    mb.silent = True
    c.cmd("output cool780 piezo 4")
    st = wait_until(lambda: kv(c.cmd("status cool780")[0])["state"] == "fault", 5)
    tap.ok(st, "an unanswering device puts its laser in fault")
    r = c.cmd("output cool780 piezo 4.5")
    tap.ok(code(r) == 503, "output while the device is unreachable: 503", r)
    mb.silent = False
    mb.drop_all()
    st = wait_until(lambda: kv(c.cmd("status cool780")[0])["state"] == "off", 15)
    tap.ok(st, "laser leaves fault when the device answers again")

    # ---- max_clients and quit -----------------------------------------------------------
    extra = [env.connect(d.port) for _ in range(4)]   # c + 4 = 5 of 6
    sixth = env.connect(d.port)
    tap.eq(sixth.cmd("ping"), ["OK"], "sixth client served (max_clients = 6)")
    try:
        seventh = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        data = b""
        while not data.endswith(b"\n"):
            chunk = seventh.recv(4096)
            if not chunk:
                break
            data += chunk
        tap.ok(b"ERR 429" in data, "seventh client gets ERR 429", data)
        seventh.close()
    except OSError as e:
        tap.ok(False, "seventh client gets ERR 429", e)
    tap.eq(c.cmd("ping"), ["OK"], "existing clients unaffected by 429")
    for x in extra:
        x.close()
    sixth.close()
    r = c.cmd("quit")
    tap.ok(final(r) == "OK", "quit answers OK")
    try:
        c.readline(timeout=5)
        closed = False
    except EOFError:
        closed = True
    tap.ok(closed, "quit closes the connection")

    # ---- roles ---------------------------------------------------------------------------
    c2 = env.connect(d.port)
    tap.ok(code(c2.cmd("auth whatever")) in (401, 409, 404, 0),
           "auth without tokens configured does not crash")
    c2.close()
    mb.close()
    pub.close()
    status = d.stop()
    tap.eq(status, 0, "SIGTERM: exit status 0")

with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()
    lasers = [laser_conf("cool780", 1, 384.2304844, autolock=False)]
    tokens = ('tokens = ( { secret = "mon-secret-1"; role = "monitor"; },'
              ' { secret = "ctl-secret-2"; role = "control"; } );')
    cfg = env.write("auth.conf", lab_conf(lasers, [("ao1", mb.port)], pub.port,
                                          server_extra=tokens))
    os.chmod(cfg, 0o600)
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    tap.eq(c.cmd("ping"), ["OK"], "ping needs no token")
    tap.ok(code(c.cmd("status")) == 401, "status before auth: 401")
    tap.ok(code(c.cmd("auth wrong")) == 401, "wrong token: 401")
    r = c.cmd("auth mon-secret-1")
    tap.ok(final(r).startswith("OK"), "monitor token accepted", r)
    tap.ok(final(c.cmd("status")) == "OK", "monitor may read status")
    for cmd in ("lock cool780", "unlock cool780", "setpoint cool780 384.25", "set cool780 ki 1",
                "output cool780 piezo 1", "ramp cool780 384.25 10", "save", "reload"):
        tap.ok(code(c.cmd(cmd)) == 403, "monitor refused: %s (403)" % cmd)
    tap.ok(final(c.cmd("setpoint cool780")) == "OK", "monitor may read the setpoint")
    c2 = env.connect(d.port)
    tap.ok(final(c2.cmd("auth ctl-secret-2")).startswith("OK"), "control token accepted")
    tap.eq(c2.cmd("lock cool780"), ["OK"], "control may lock")
    log = d.output()
    tap.ok("mon-secret-1" not in log and "ctl-secret-2" not in log and "wrong" not in log.split(),
           "tokens never appear in the log")
    c.close()
    c2.close()
    d.stop()
    mb.close()
    pub.close()

tap.done()
