#!/usr/bin/env python3
"""The worked register-scaling examples of wavelock-wiring(7), on the wire.

wavelockd runs with one laser per example of the page (the actuator groups as
printed there, on a Modbus recorder standing in for the module), each laser
off; every output the page quotes is set by hand (`output LASER piezo|current
VOLTS`) and the registers the recorder received are compared with the page's
numbers: 16-bit bipolar (s16), offset binary, the u16 default, 12-bit,
millivolts, and 1.1 V as an f32 in each of the four word orders.  The page
must also name, in its own words, the function codes the recorder sees:
06 for a single 16-bit register, 16 for an f32.
"""

import os
import re
import time

from wltest import (TAP, Env, ModbusRecorder, SRCDIR, StreamPublisher, kv, lab_conf,
                    wait_until)

tap = TAP()
PAGE = os.path.join(SRCDIR, "doc", "wavelock-wiring.7")

# (laser, actuator group as on the page (register moved so they do not
# overlap), [(actuator, volts, registers the page says)])
CASES = [
    ("s16", 'piezo = { device = "ao1"; register = 0; format = "s16"; scale = 3276.7;'
            ' min_v = -2.0; max_v = 8.0; };',
     [("piezo", 2.5, [8192])]),
    ("s16wide", 'piezo = { device = "ao1"; register = 2; format = "s16"; scale = 3276.7;'
                ' min_v = -10.0; max_v = 10.0; };',
     [("piezo", -2.5, [0xE000])]),
    ("offbin", 'piezo = { device = "ao1"; register = 4; format = "u16"; offset = 32767.5;'
               ' scale = 3276.75; min_v = -5.0; max_v = 5.0; };',
     [("piezo", 0.0, [32768]), ("piezo", 5.0, [49151]), ("piezo", -5.0, [16384])]),
    ("u16", 'piezo = { device = "ao1"; register = 6; };',
     [("piezo", 2.5, [16384])]),
    ("bits12", 'piezo = { device = "ao1"; register = 8; format = "u16"; scale = 409.5;'
               ' min_v = 0.0; max_v = 10.0; };',
     [("piezo", 2.5, [1024]), ("piezo", 10.0, [4095])]),
    ("bits12at5", 'piezo = { device = "ao1"; register = 10; format = "u16"; scale = 819;'
                  ' min_v = 0.0; max_v = 5.0; };',
     [("piezo", 5.0, [4095])]),
    ("millivolt", 'piezo = { device = "ao1"; register = 12; };\n'
                  '    current = { device = "ao1"; register = 14; format = "s16";'
                  ' scale = 1000.0; min_v = -1.0; max_v = 1.0; };',
     [("current", -0.25, [(-250) & 0xFFFF])]),
]
for i, (order, regs) in enumerate([("abcd", [0x3F8C, 0xCCCD]), ("cdab", [0xCCCD, 0x3F8C]),
                                   ("badc", [0x8C3F, 0xCDCC]), ("dcba", [0xCDCC, 0x8C3F])]):
    CASES.append(("f32" + order,
                  'piezo = { device = "ao1"; register = %d; format = "f32"; word_order = "%s";'
                  ' scale = 1.0; min_v = 0.0; max_v = 10.0; };' % (20 + 2 * i, order),
                  [("piezo", 1.1, regs)]))


with open(PAGE) as f:
    page = f.read()
page_text = re.sub(r"\\-", "-", page)

# The numbers quoted below must be the page's own.
quotes = ["+2.5 V is 8192 (0x2000), -2.5 V is -8192 (0xE000", "0 V is 32768, +5 V is 49151, -5 V is 16384",
          "2.5 V is 16384", "2.5 V is 1024", "scale = 819", "-0.25 V is -250",
          "1.1 V is 0x3F8CCCCD", "abcd        0x3F8C       0xCCCD",
          "cdab        0xCCCD       0x3F8C", "badc        0x8C3F       0xCDCC",
          "dcba        0xCDCC       0x8C3F"]
missing = [q for q in quotes if q not in page_text]
tap.ok(not missing, "the page quotes the values checked here", missing)
tap.ok("function 06" in page_text and "function 16" in page_text and "function 03" in page_text,
       "the page names function codes 03, 06 and 16")

with Env() as env:
    mb = ModbusRecorder()
    pub = StreamPublisher()
    lasers = []
    for n, (name, group, _) in enumerate(CASES, 1):
        lasers.append('  { name = "%s"; channel = %d; setpoint = "384.23 THz"; min_thz = 384.0;'
                      ' max_thz = 384.5; autolock = false;\n    %s\n  }' % (name, n, group))
    conf = env.write("wiring.conf", lab_conf(lasers, [("ao1", mb.port)], pub.port, state_file=""))
    d = env.start_daemon(conf)
    c = env.connect(d.port)
    up = wait_until(lambda: kv(c.cmd("devices")[0]).get("up") == "1", 10, 0.05)
    time.sleep(0.5)                        # the start outputs are written first
    tap.ok(up, "the daemon runs every example on one recorder")
    for name, group, checks in CASES:
        for act, volts, want in checks:
            m = re.search(r"%s = \{[^}]*register = (\d+)" % act, group)
            reg = int(m.group(1))
            n0 = len(mb.writes)
            r = c.cmd("output %s %s %r" % (name, act, volts))
            ok = wait_until(lambda: any(a == reg for _, a, _ in mb.writes[n0:]), 5, 0.02)
            got = mb.regs[reg:reg + len(want)]
            fcs = [len(v) for _, a, v in mb.writes[n0:] if a == reg]
            fc_ok = fcs and all(x == len(want) for x in fcs)
            tap.ok(r[-1].startswith("OK") and ok and got == want and fc_ok,
                   "%s: %s %g V -> %s (%s)" % (name, act, volts,
                                              " ".join("0x%04X" % v for v in want),
                                              "function 16, 2 registers" if len(want) == 2
                                              else "function 06, 1 register"),
                   (r, ["0x%04X" % v for v in got], fcs))
    pub.close()
    mb.close()
    tap.eq(d.stop(), 0, "the daemon stops cleanly")

tap.done()
