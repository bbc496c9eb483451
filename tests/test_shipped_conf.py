#!/usr/bin/env python3
"""conf/wavelockd.conf, the example for real hardware, starts as shipped.

Only what a test cannot use is rewritten, each by an exact match that must
hit (so a change to the file that slips past the rewrite fails here): the
listen ports (to free loopback ports; a listen address that is not loopback
fails the test, since tests bind 127.0.0.1 only), the state file and data
logs (to the temporary directory), log = "syslog" (to stderr), the wavemeter
library (to the libwlmData.so double), and the Modbus devices (TCP to
loopback ports nobody listens on, the RS-485 port to a path that does not
exist).  Everything else (the three lasers, their registers, formats,
scales and gains, the server limits) is the file as shipped.

The daemon must pass -t, start, stay up with every device unreachable,
report the devices down (`devices`) and their lasers in `fault` (`status`)
while the wavemeter readings arrive (`wavemeter`), and stop with exit 0,
saving its state file.
"""

import os
import re
import subprocess
import time

from wltest import TAP, Env, SRCDIR, kv, prog, wait_until
from hwtest import fake_wlmdata_path

tap = TAP()
SHIPPED = os.path.join(SRCDIR, "conf", "wavelockd.conf")


def replace_once(text, old, new, what):
    n = text.count(old)
    if n != 1:
        tap.bail("conf/wavelockd.conf: expected %s (%r) once, found it %d times"
                 % (what, old, n))
    return text.replace(old, new)


def loopback(host):
    return host in ("localhost", "::1") or re.fullmatch(r"127\.\d+\.\d+\.\d+", host) is not None


with Env() as env:
    with open(SHIPPED) as f:
        text = f.read()
    lib = fake_wlmdata_path()
    if not os.path.exists(lib):
        tap.bail("%s is not built (make check builds it)" % lib)

    # ---- listen: loopback only, ports rewritten ----------------------------------------
    m = re.search(r"^\s*listen\s*=\s*\[([^\]]*)\];", text, re.M)
    if not m:
        tap.bail("conf/wavelockd.conf: no active listen = [ ... ]; line")
    addrs = re.findall(r'"([^"]*)"', m.group(1))
    hosts = []
    for a in addrs:
        hm = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", a)
        hosts.append(hm.group(1) if hm else a)
    tap.ok(addrs and all(loopback(h) for h in hosts),
           "the shipped config listens on loopback only: %s" % ", ".join(addrs), addrs)
    ports = {}
    new_list = m.group(1)
    for a, h in zip(addrs, hosts):
        if not loopback(h):
            tap.bail("refusing to bind %s in a test" % a)
        p = env.free_port()
        ports[a] = p
        new_list = new_list.replace('"%s"' % a, '"%s:%d"' % ("127.0.0.1" if h != "::1" else "[::1]", p))
    text = text[:m.start(1)] + new_list + text[m.end(1):]

    # ---- files, log, library ----------------------------------------------------------
    sm = re.search(r'^state_file = "([^"]+)";', text, re.M)
    state = env.path("wavelockd.state")
    text = replace_once(text, sm.group(0), 'state_file = "%s";' % state, "state_file")
    text = replace_once(text, 'log = "syslog";', 'log = "stderr";', "log")
    lm = re.search(r'^\s*library = "([^"]+)";', text, re.M)
    text = replace_once(text, lm.group(0), '  library = "%s";' % lib, "wavemeter library")
    for d in re.findall(r'datalog = "([^"]+)";', text):
        text = replace_once(text, 'datalog = "%s";' % d,
                            'datalog = "%s";' % env.path(os.path.basename(d)), "datalog")

    # ---- devices: unreachable ----------------------------------------------------------
    urls = re.findall(r'^[^#\n]*url = "([^"]+)";', text, re.M)   # not the commented examples
    for u in urls:
        if u.startswith("tcp://"):
            new = "tcp://127.0.0.1:%d" % env.free_port()
        elif u.startswith("rtu:"):
            path, _, query = u[4:].partition("?")
            new = "rtu:%s%s" % (env.path("no-such-" + os.path.basename(path)),
                                "?" + query if query else "")
        else:
            tap.bail("conf/wavelockd.conf: a device URL of an unknown kind: %s" % u)
        text = replace_once(text, 'url = "%s";' % u, 'url = "%s";' % new, "device url")
    tap.ok(len(urls) >= 2 and any(u.startswith("rtu:") for u in urls),
           "the shipped devices (%s) are replaced by unreachable ones" % ", ".join(urls))

    conf = env.write("wavelockd.conf", text)
    os.chmod(conf, 0o600)
    rc = subprocess.run([prog("wavelockd"), "-t", "-c", conf], capture_output=True, text=True,
                        timeout=30)
    tap.ok(rc.returncode == 0, "wavelockd -t passes the shipped config (with the rewrites)",
           rc.stdout + rc.stderr)

    # The double measures the three channels near each laser's setpoint.
    os.environ["FAKE_WLM_SETTINGS"] = "channels=1,2,3 nm1=780.2412 nm2=780.2331 nm3=852.356"
    d = env.start_daemon(conf, timeout=15)
    c = env.connect(d.port)

    def statuses():
        return {kv(x)["name"]: kv(x) for x in c.cmd("status")[:-1]}

    def devices():
        return {kv(x)["name"]: kv(x) for x in c.cmd("devices")[:-1]}

    ok = wait_until(lambda: all(v["state"] == "fault" for v in statuses().values()) and
                    all(v.get("up") == "0" for v in devices().values()), 15, 0.1)
    time.sleep(2.0)
    st, dv = statuses(), devices()
    tap.ok(d.alive() and ok, "the daemon runs with every device unreachable (still up 2 s after"
           " they were all found down)", d.output())
    tap.eq(sorted(dv), ["ao1", "ao2", "rs485"], "devices lists the shipped devices")
    tap.ok(all(v.get("up") == "0" for v in dv.values()),
           "devices: every device down (up=0)", dv)
    tap.eq(sorted(st), ["cool780", "probe852", "repump780"], "status lists the shipped lasers")
    tap.ok(all(v["state"] == "fault" for v in st.values()),
           "status: every laser in fault (%s)" % " ".join("%s=%s" % (k, v["state"])
                                                          for k, v in sorted(st.items())), st)
    head = kv(c.cmd("wavemeter")[0])
    tap.ok(head.get("backend") == "wlmdata" and head.get("library") == lib and
           int(head.get("readings", 0)) > 10,
           "the wavemeter library is loaded and reading (%s readings)" % head.get("readings"),
           head)
    out = d.output()
    downs = sorted(set(re.findall(r"device (\w+): down", out)))
    tap.ok(downs == ["ao1", "ao2", "rs485"] and "[error]" not in out,
           "the log names each device down, and no error", out)
    tap.eq(c.cmd("ping")[-1], "OK", "the protocol answers (no token needed on loopback)")
    c.close()
    rc = d.stop()
    with open(d.log_path) as f:
        tail = f.read()[-800:]
    tap.ok(rc == 0 and os.path.exists(state), "SIGTERM: exit 0, the state file is saved",
           (rc, tail))

tap.done()
