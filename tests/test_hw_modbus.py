#!/usr/bin/env python3
"""Modbus writes through wavelock's device layer (MB_*) and register encoding
(REG_*), via tests/mbtool, against peers nobody here wrote: python3-pymodbus
serves the holding registers, mbpoll reads them back.  Checks u16, s16 and
all four f32 word orders against an encoding computed here independently,
and which function code each write used (06 for one register, 16 for more),
both as pymodbus's datastore saw it and as tests/fault_server counts it."""

import shutil
import struct
import subprocess

from wltest import TAP, Env
from hwtest import PYTHON3, FaultServer, PymodbusServer, mbpoll_read, mbtool

tap = TAP()


def expected(fmt, order, scale, offset, volts):
    """Registers for volts, computed independently of src/regenc.c."""
    raw = offset + scale * volts
    if fmt == "u16":
        return [min(65535, max(0, int(round(raw))))]
    if fmt == "s16":
        return [min(32767, max(-32768, int(round(raw)))) & 0xFFFF]
    a, b, c, d = struct.pack(">f", raw)
    return {"abcd": [a << 8 | b, c << 8 | d],
            "cdab": [c << 8 | d, a << 8 | b],
            "badc": [b << 8 | a, d << 8 | c],
            "dcba": [d << 8 | c, b << 8 | a]}[order]


# (register, format, word order, scale, offset, volts); no .5 ties in raw.
CASES = [
    (0, "u16", "abcd", 6553.5, 0.0, 3.3),
    (1, "u16", "abcd", 6553.5, 0.0, 10.0),
    (2, "u16", "abcd", 6553.5, 100.0, 0.0),
    (3, "s16", "abcd", 3276.7, 0.0, -0.5),
    (4, "s16", "abcd", 3276.7, 0.0, 0.75),
    (5, "s16", "abcd", 3276.7, 0.0, -10.0),
    (10, "f32", "abcd", 1.0, 0.0, 1.2345),
    (12, "f32", "cdab", 1.0, 0.0, -7.25),
    (14, "f32", "badc", 2.0, 0.5, 3.3),
    (16, "f32", "dcba", 1.0, 0.0, 9.87654),
    (18, "f32", "abcd", 1000.0, 0.0, -4.321),
    (20, "f32", "cdab", 1.0, 0.0, 123.456),
]

if shutil.which("mbpoll") is None:
    tap.skip("mbpoll round trips", "mbpoll not installed")
    tap.done()
if subprocess.run([PYTHON3, "-c", "import pymodbus.server"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
    tap.skip("pymodbus round trips", "python3-pymodbus not installed")
    tap.done()

with Env() as env:
    try:
        pm = PymodbusServer(env)
    except RuntimeError as e:
        tap.bail(str(e))
    url = "tcp://127.0.0.1:%d" % pm.port

    want = {}
    for reg, fmt, order, scale, offset, volts in CASES:
        rc, out, err = mbtool(["-f", fmt, "-w", order, "-s", scale, "-o", offset,
                               url, "write", reg, volts])
        regs = expected(fmt, order, scale, offset, volts)
        for i, v in enumerate(regs):
            want[reg + i] = v
        tap.eq((rc, out.strip()),
               (0, "wrote addr=%d n=%d regs=%s" % (reg, len(regs), ",".join(map(str, regs)))),
               "mbtool writes %s/%s %g V at %d" % (fmt, order, volts, reg))

    vals, out = mbpoll_read(pm.port, 0, 22)
    got = {k: int(v) & 0xFFFF for k, v in vals.items()}
    if not tap.ok(len(got) == 22, "mbpoll reads registers 0..21", out):
        tap.done()
    for reg, fmt, order, scale, offset, volts in CASES:
        n = 2 if fmt == "f32" else 1
        tap.eq([got.get(reg + i) for i in range(n)], [want[reg + i] for i in range(n)],
               "mbpoll reads back %s/%s %g V at register %d" % (fmt, order, volts, reg))
    untouched = [r for r in range(22) if r not in want]
    tap.eq([got[r] for r in untouched], [0] * len(untouched),
           "registers not written are still 0")

    # mbpoll's own float decoding agrees for the two orders it knows:
    # -B = big-endian words (ABCD), default = little-endian words (CDAB).
    for reg, order, volts, extra in ((10, "abcd", 1.2345, ["-B"]), (12, "cdab", -7.25, []),
                                     (18, "abcd", -4321.0, ["-B"]),
                                     (20, "cdab", 123.456, [])):
        vals, out = mbpoll_read(pm.port, reg, 1, dtype="4:float", extra=extra)
        v = float(vals.get(reg, "nan"))
        tap.ok(abs(v - volts) <= 1e-4 * max(1.0, abs(volts)),
               "mbpoll decodes the %s float at %d as %g" % (order, reg, volts), out)

    # Function codes as pymodbus's datastore saw them: 06 for a single
    # register, 16 for an f32 pair or several registers in one request.
    writes = pm.writes()
    want_fc = [(6 if fmt != "f32" else 16, reg, 2 if fmt == "f32" else 1)
               for reg, fmt, _, _, _, _ in CASES]
    tap.eq(writes, want_fc, "pymodbus saw fc06 for single registers and fc16 for f32 pairs")
    rc, out, err = mbtool(["-f", "u16", url, "write", 30, 1, 2, 3])
    tap.eq((rc, pm.writes()[-1:]), (0, [(16, 30, 3)]),
           "three u16 values in one request use fc16")
    vals, out = mbpoll_read(pm.port, 30, 3)
    tap.eq([vals.get(30), vals.get(31), vals.get(32)], ["1", "2", "3"],
           "mbpoll reads the three values back")

    # raw writes and reads through MB_Read
    rc, out, err = mbtool([url, "raw", 40, 65535, 0, 4660])
    tap.eq(rc, 0, "mbtool raw write")
    rc, out, err = mbtool([url, "read", 40, 3])
    tap.eq(out.strip(), "read addr=40 n=3 regs=65535,0,4660", "mbtool reads them back")

    # the same against the fault server, which counts function codes itself
    fs = FaultServer(env, verbose=True)
    furl = "tcp://127.0.0.1:%d" % fs.port
    mbtool(["-f", "u16", "-s", 6553.5, furl, "write", 0, 5.1])
    mbtool(["-f", "s16", "-s", 3276.7, furl, "write", 1, -1.0])
    mbtool(["-f", "f32", "-w", "dcba", furl, "write", 2, 2.5])
    st = fs.stats()
    tap.eq((st["fc06"], st["fc16"]), (2, 1), "fault_server counts 2 x fc06 and 1 x fc16")
    tap.eq(fs.regs(0, 4),
           expected("u16", "abcd", 6553.5, 0, 5.1) + expected("s16", "abcd", 3276.7, 0, -1.0)
           + expected("f32", "dcba", 1, 0, 2.5),
           "fault_server holds the expected registers")
    tap.eq([w[0] for w in fs.writes], [6, 6, 16], "fault_server's write log shows the codes")

    # errors: nobody listening, bad URL, exception reply
    fs.cmd("exception code=2 writes")
    rc, out, err = mbtool(["-W", 5, furl, "write", 0, 1])
    tap.ok(rc == 1 and "illegal data address" in err,
           "an exception reply is a clear error with exit status 1", err)
    fs.cmd("down")
    rc, out, err = mbtool(["-W", 0.5, furl, "write", 0, 1])
    tap.ok(rc == 1 and "not reachable" in err and "refused" in err,
           "a refused connection is a clear error with exit status 1", err)
    rc, out, err = mbtool(["bogus://x", "write", 0, 1])
    tap.ok(rc == 2 and err.startswith("mbtool: "), "a bad URL is a usage error", err)

tap.done()
