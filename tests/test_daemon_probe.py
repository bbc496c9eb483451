#!/usr/bin/env python3
"""Device probes (devices.[n].probe in wavelockd.conf(5)): before a Modbus
device counts as up, wavelockd reads one register of it, by default a
holding register (FC03) at the lowest register its lasers use.  A
write-only module answers FC03 with an exception and so never came up;
probe = { function = "none"; } brings it up once connected, "input" probes
with FC04, and register picks the register.  Against an in-process Modbus
module that refuses FC03 like such a module."""

from wltest import TAP, Env, ModbusRecorder, StreamPublisher, kv, lab_conf, laser_conf, wait_until

tap = TAP()


def conf(mb, pub, probe=None, state="wavelock.state"):
    text = lab_conf([laser_conf("cool780", 1, 384.2304844, reg=4, autolock=False)],
                    [("ao1", mb.port)], pub.port, state_file=state)
    if probe is not None:
        text = text.replace("timeout_ms = 200; }", "timeout_ms = 200; probe = { %s }; }" % probe)
    return text


def device(c):
    return kv(c.cmd("devices")[0])


def state(c):
    return kv(c.cmd("status cool780")[0])["state"]


with Env() as env:
    mb = ModbusRecorder()
    mb.refuse = {3}                 # a write-only module: FC03 is an illegal function
    pub = StreamPublisher()

    # ---- the default probe: FC03 of the lowest register, refused: never up ----------------
    cfg = env.write("probe.conf", conf(mb, pub))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    down = wait_until(lambda: state(c) == "fault", 5)
    tap.ok(down and device(c)["up"] == "0" and mb.writes == [],
           "default probe (FC03) on a module without FC03: device down, laser in fault, "
           "nothing written", (device(c), state(c), mb.writes))
    tap.ok("probe: exception 1 (illegal function)" in d.output(),
           "the log says why: the probe got exception 1", d.output()[-800:])

    # ---- reload with probe none: the device is made again and comes up --------------------
    env.write("probe.conf", conf(mb, pub, 'function = "none";'))
    r = c.cmd("reload")
    up = wait_until(lambda: device(c)["up"] == "1" and state(c) == "off", 5)
    tap.ok(r[-1].startswith("OK") and up, "reload to probe none: the device comes up, the laser"
           " leaves fault", (r, device(c), state(c)))
    n_reads = len(mb.reads)
    c.cmd("output cool780 piezo 6")
    tap.ok(wait_until(lambda: mb.regs[4] == 39321, 5), "output by hand lands (6 V: 39321)",
           mb.regs[4])
    tap.ok(len(mb.reads) == n_reads, "probe none reads nothing", mb.reads[n_reads:])
    c.close()
    tap.eq(d.stop(), 0, "stopped (exit 0)")

    # ---- probe none from the start --------------------------------------------------------
    mb.writes = []
    mb.reads = []
    cfg = env.write("none.conf", conf(mb, pub, 'function = "none";', state="none.state"))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    ok = wait_until(lambda: mb.regs[4] == 32768 and device(c)["up"] == "1", 5)
    tap.ok(ok and state(c) == "off" and mb.reads == [] and mb.writes[0][1:] == (4, [32768]),
           "probe none at start: up, start output (5 V) written, no read at all",
           (device(c), state(c), mb.reads))
    c.close()
    d.stop()

    # ---- an input-register probe at a chosen register ---------------------------------------
    mb.reads = []
    cfg = env.write("input.conf", conf(mb, pub, 'function = "input"; register = 9;'))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    ok = wait_until(lambda: device(c)["up"] == "1", 5)
    tap.ok(ok and [r[1:] for r in mb.reads] == [(4, 9, 1)],
           "probe input, register 9: one FC04 read of register 9, device up", mb.reads)
    c.close()
    d.stop()

    # ---- the register of the default function --------------------------------------------------
    mb.refuse = set()
    mb.reads = []
    cfg = env.write("reg.conf", conf(mb, pub, "register = 12;"))
    d = env.start_daemon(cfg)
    c = env.connect(d.port)
    ok = wait_until(lambda: device(c)["up"] == "1", 5)
    cfg2 = env.write("dflt.conf", conf(mb, pub))
    tap.ok(ok and [r[1:] for r in mb.reads] == [(3, 12, 1)],
           "probe register 12: one FC03 read of register 12", mb.reads)
    c.close()
    d.stop()
    mb.reads = []
    d = env.start_daemon(cfg2)
    c = env.connect(d.port)
    ok = wait_until(lambda: device(c)["up"] == "1", 5)
    tap.ok(ok and [r[1:] for r in mb.reads] == [(3, 4, 1)],
           "no probe group: FC03 of the lowest register the lasers use (4), as before", mb.reads)
    c.close()
    d.stop()
    mb.close()
    pub.close()

tap.done()
