#!/usr/bin/env python3
"""MQTT through a real mosquitto broker (password and ACL files) with
mosquitto_sub/mosquitto_pub/mosquitto_rr as the outside clients: readings
of all 14 simulated lasers, retained state for a late subscriber, commands
from an allowed user (MQTT 5 with correlation data, and 3.1.1) and from a
read-only one, bad payloads, two daemons on one broker and `wavelock
--mqtt ... lab`, reload adding/changing/removing the group, the will after
kill -9, and config errors (exit 78)."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import lablib
import mqttlib
from mqttlib import Broker, Sub, pub, mqtt_lab, set_mqtt, stats, retained, readings_by_laser
from wltest import TAP, Env, prog, wait_until

t = TAP()
miss = mqttlib.missing()
if miss:
    t.skip("mqtt tests", "missing: %s" % " ".join(miss))
    t.done()


def setpoint(lab, name):
    for line in lab.d.ok("setpoint %s" % name):
        for w in line.split():
            if w.startswith("setpoint_thz="):
                return float(w.split("=", 1)[1])
    return None


def api_status(lab):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % lab.ports[7471],
                                timeout=5) as r:
        return json.loads(r.read())


def remote_of(lab, instance):
    """The entry for instance in lab's /api/status "remote" (None if absent)."""
    try:
        for x in api_status(lab).get("remote", []):
            if x.get("instance") == instance:
                return x
    except OSError:
        pass
    return None


def remote_states(lab, instance):
    x = remote_of(lab, instance)
    return {l["name"]: l["state"] for l in x["lasers"]} if x else {}


def config_errors(env):
    base = ('server: { listen = ["127.0.0.1:0"]; };\n'
            'devices = ( { name = "ao1"; url = "tcp://127.0.0.1:1"; } );\n'
            'lasers = ( { name = "a"; channel = 1; setpoint = "384.0 THz"; min_thz = 383.0; '
            'max_thz = 385.0; piezo = { device = "ao1"; register = 0; }; } );\n')
    cases = [
        ('mqtt = { url = "http://127.0.0.1:1883"; instance = "x"; };', "mqtt.url"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; };', "mqtt.instance"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "a/b"; };', "mqtt.instance"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; qeueu = 5; };', "mqtt.qeueu"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; username = "u";\n'
         '  password_file = "/nonexistent/pw"; };', "mqtt.password_file"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; cafile = "ca.pem"; };',
         "mqtt.cafile"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; keepalive_s = 1; };',
         "mqtt.keepalive_s"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; protocol = "4"; };',
         "mqtt.protocol"),
        ('mqtt = { url = "mqtt://127.0.0.1:1883"; instance = "x"; remote = "yes"; };',
         "mqtt.remote"),
    ]
    for i, (group, key) in enumerate(cases):
        path = env.write("bad%d.conf" % i, base + group + "\n")
        r = subprocess.run([prog("wavelockd"), "-T", "-c", path], capture_output=True, text=True)
        t.ok(r.returncode == 78 and re.search(r"bad%d\.conf:\d+: %s" % (i, re.escape(key)),
                                               r.stderr),
             "config error exits 78 naming file:line:key (%s)" % key,
             "rc=%d stderr=%s" % (r.returncode, r.stderr))


with Env() as env:
    config_errors(env)
    b = Broker(env)
    watch = Sub(b, "wavelock/#", user="bob")
    lab = None
    lab2 = None
    try:
        lab = mqtt_lab(env, b, "lab1", commands=True)
        names = list(lab.cfg.names)
        t.eq(len(names), 14, "the simulated lab has 14 lasers")

        # ---- readings from every laser --------------------------------------
        t0 = time.monotonic()
        wait_until(lambda: len(readings_by_laser(watch.messages(t0), "lab1")) == 14, 20, 0.2)
        time.sleep(3)
        by = readings_by_laser(watch.messages(t0), "lab1")
        t.eq(sorted(by), sorted(names), "readings of all 14 lasers reach an outside subscriber")
        counts = {n: len(v) for n, v in by.items()}
        t.diag("readings per laser in %.1f s: %s" % (time.monotonic() - t0, counts))
        sample = by.get("cool780", [{}])[-1]
        t.ok(all(k in sample for k in ("t", "freq_thz", "error_mhz", "piezo_v", "current_v",
                                        "state")), "a reading's JSON has t, freq_thz, "
             "error_mhz, piezo_v, current_v, state", sample)

        # ---- retained state for a late subscriber ----------------------------
        ret = retained(b, "wavelock/lab1/#")
        states = {k.split("/")[3]: json.loads(v) for k, v in ret.items()
                  if k.endswith("/state") and v}
        t.eq(sorted(states), sorted(names), "a late subscriber gets every laser's retained state")
        t.eq(ret.get("wavelock/lab1/status"), "online", "status is retained 'online'")
        s780 = states.get("cool780", {})
        t.ok(abs(s780.get("setpoint_thz", 0) - setpoint(lab, "cool780")) < 1e-9 and
             "limits" in s780 and "owner" in s780 and "state" in s780,
             "the retained state carries state, setpoint_thz, owner and limits", s780)

        # ---- commands: MQTT 5 with response topic and correlation data --------
        sp0 = setpoint(lab, "cool780")
        rsub = Sub(b, "wavelock/lab1/resp/#", user="alice", fmt="%t %D %p")
        time.sleep(0.3)
        t1 = time.monotonic()
        r = pub(b, "wavelock/lab1/cmd", "setpoint cool780 +10 MHz", user="alice", version=5,
                extra=["-D", "publish", "response-topic", "wavelock/lab1/resp/alice",
                       "-D", "publish", "correlation-data", "req-42"])
        got = wait_until(lambda: [l for l in rsub.since(t1) if "req-42" in l], 5)
        t.ok(got and got[0].split(" ", 2)[2].startswith("OK"),
             "v5 command: the reply goes to the response topic with the correlation data",
             (r.stderr, rsub.since(t1)))
        sp1 = setpoint(lab, "cool780")
        t.ok(abs((sp1 - sp0) * 1e6 - 10.0) < 1e-3, "v5 command from alice changed the setpoint "
             "by +10 MHz", (sp0, sp1))
        # mosquitto_rr: request/response the v5 way
        rr = subprocess.run(["mosquitto_rr"] + mqttlib.client_args(b, "alice") +
                            ["-t", "wavelock/lab1/cmd", "-e", "wavelock/lab1/resp/rr",
                             "-m", "iam alice\nstatus cool780", "-W", "5"],
                            capture_output=True, text=True, timeout=10)
        t.ok("name=cool780" in rr.stdout and rr.stdout.rstrip().endswith("OK"),
             "mosquitto_rr gets a status reply (all lines)", rr.stdout + rr.stderr)

        # ---- commands: MQTT 3.1.1, reply on .../reply ------------------------
        replies = Sub(b, "wavelock/lab1/reply", user="alice")
        time.sleep(0.3)
        t2 = time.monotonic()
        pub(b, "wavelock/lab1/cmd", "setpoint cool780 -10 MHz", user="alice", version=4)
        got = wait_until(lambda: replies.messages(t2), 5)
        t.ok(got and got[0][2].startswith("OK"), "3.1.1 command: the reply arrives on "
             "wavelock/lab1/reply", replies.since(t2))
        sp2 = setpoint(lab, "cool780")
        t.ok(abs(sp2 - sp0) < 1e-9, "3.1.1 command from alice moved the setpoint back", (sp0, sp2))

        # ---- a deferred answer (save) and a command right behind it -----------
        t2b = time.monotonic()
        pub(b, "wavelock/lab1/cmd", "save", user="alice", version=4)
        pub(b, "wavelock/lab1/cmd", "ping", user="alice", version=4)
        got = wait_until(lambda: len(replies.messages(t2b)) >= 2, 10)
        ps = [p for _, _, p in replies.messages(t2b)]
        t.ok(got and ps[0].startswith("OK saved") and ps[1] == "OK",
             "a deferred answer (save) comes first, the command queued behind it next", ps)

        # ---- a read-only user --------------------------------------------------
        before = stats(lab).get("mqtt_commands")
        t3 = time.monotonic()
        pub(b, "wavelock/lab1/cmd", "setpoint cool780 +50 MHz", user="bob", version=5)
        pub(b, "wavelock/lab1/cmd", "unlock all", user="bob", version=4)
        time.sleep(1.5)
        t.ok(abs(setpoint(lab, "cool780") - sp0) < 1e-9 and stats(lab).get("mqtt_commands") == before
             and not replies.messages(t3), "commands from read-only bob change nothing "
             "(the broker's ACL drops them)", (stats(lab), replies.since(t3)))

        # ---- bad input ----------------------------------------------------------
        def ask(payload, **kw):
            tt = time.monotonic()
            if isinstance(payload, bytes):
                f = env.path("payload.bin")
                with open(f, "wb") as fh:
                    fh.write(payload)
                pub(b, "wavelock/lab1/cmd", None, file=f, **kw)
            else:
                pub(b, "wavelock/lab1/cmd", payload, **kw)
            got = wait_until(lambda: replies.messages(tt), 5)
            return got[0][2] if got else None

        bad = [
            (b"x" * 8000, "ERR 413", "an oversized payload"),
            (b"setpoint cool780 384.23\x00 THz", "ERR 400", "a NUL byte"),
            ("setpoint cool780 999 THz", "ERR 422", "a setpoint out of range"),
            ("setpoint cool780 384.2 furlongs", "ERR 422", "an unknown unit"),
            ("frobnicate", "ERR 404", "an unknown command"),
            ("\n".join(["ping"] * 40), "ERR 400", "too many lines"),
            ("iam", "ERR 400", "iam without a name"),
            ("setpoint cool780 " + "9" * 1100, "ERR 413", "a line over 1024 bytes"),
            ("subscribe cool780", "ERR 400", "subscribe over MQTT"),
            ("", "ERR 400", "an empty payload"),
        ]
        for payload, want, what in bad:
            got = ask(payload, version=4)
            t.ok(got is not None and got.startswith(want), "%s gets %s" % (what, want), got)
        t.ok(abs(setpoint(lab, "cool780") - sp0) < 1e-9 and lab.alive(),
             "after the bad payloads the setpoint is unchanged and the daemon runs")

        # ---- claims by the MQTT sender's name -------------------------------------
        carol = lablib.Daemon(lab.port)
        carol.ok("iam carol")
        carol.ok("claim cool780 60")
        got = ask("iam dave\nsetpoint cool780 +50 MHz", version=4)
        t.ok(got is not None and got.startswith("ERR 409") and "carol" in got and
             abs(setpoint(lab, "cool780") - sp0) < 1e-9,
             "a command named dave (iam line) on a laser claimed by carol: 409, nothing changes",
             got)
        got = ask("setpoint cool780 +1 MHz", version=4)
        t.ok(got is not None and got.startswith("ERR 409") and
             abs(setpoint(lab, "cool780") - sp0) < 1e-9,
             "an unnamed MQTT command on a claimed laser: 409", got)
        got = ask("setpoint cool780 +0 MHz", extra=["-D", "publish", "user-property", "name",
                                                    "carol"])
        t.ok(got is not None and got.startswith("OK"),
             "a command from carol (MQTT 5 user property name) passes her claim", got)
        st = wait_until(lambda: json.loads(retained(b, "wavelock/lab1/laser/cool780/state")
                                           .get("wavelock/lab1/laser/cool780/state", "{}"))
                        .get("owner") == "carol", 5, 0.5)
        t.ok(st, "the retained state of cool780 names its owner carol")
        carol.ok("release cool780")
        carol.close()

        # ---- two daemons on one broker -------------------------------------------
        lab2 = mqtt_lab(env, b, "lab2", seed=2, extra='protocol = "3.1.1";')
        t4 = time.monotonic()
        ok2 = wait_until(lambda: len(readings_by_laser(watch.messages(t4), "lab2")) == 14 and
                         len(readings_by_laser(watch.messages(t4), "lab1")) == 14, 20, 0.2)
        t.ok(ok2, "one subscriber sees the readings of both daemons (lab1, lab2)")
        t.eq((stats(lab).get("mqtt_protocol"), stats(lab2).get("mqtt_protocol")), ("5", "3.1.1"),
             "lab1 speaks MQTT 5, lab2 (protocol = \"3.1.1\") MQTT 3.1.1")
        pwf = env.write("bob.password", "bpass\n")
        out = subprocess.run([prog("wavelock"), "--mqtt", b.url(), "--mqtt-user", "bob",
                              "--mqtt-password-file", pwf, "lab"],
                             capture_output=True, text=True, timeout=20)
        rows = [dict(w.split("=", 1) for w in l.split() if "=" in w)
                for l in out.stdout.splitlines()]
        lasers = {(r["instance"], r["laser"]) for r in rows if "laser" in r}
        status = {r["instance"]: r.get("status") for r in rows if "laser" not in r}
        t.ok(out.returncode == 0 and len(lasers) == 28 and
             status == {"lab1": "online", "lab2": "online"},
             "wavelock --mqtt ... lab lists both instances' 28 lasers, both online",
             out.stdout[-2000:] + out.stderr)
        t.diag("wavelock --mqtt lab: %d rows" % len(rows))

        # ---- the dashboard's view of the other instance (mqtt.remote) ----------
        got = wait_until(lambda: len(remote_states(lab, "lab2")) == 14 and
                         remote_states(lab, "lab2") == lab2.d.states(), 10, 0.2)
        st1 = api_status(lab)
        r2 = remote_of(lab, "lab2") or {}
        truth = lab2.d.states()
        t.ok(got and r2.get("status") == "online" and len(r2.get("lasers", [])) == 14,
             "lab1's /api/status shows lab2 online with its 14 lasers and their states",
             (r2, truth))
        t.ok([x["instance"] for x in st1.get("remote", [])] == ["lab2"] and
             st1.get("remote_info", {}).get("link") == "up",
             "... and no other instance (not lab1 itself); remote_info link up",
             (st1.get("remote"), st1.get("remote_info")))
        l780 = [l for l in r2.get("lasers", []) if l["name"] == "cool780"]
        t.ok(l780 and abs(l780[0]["setpoint_thz"] - setpoint(lab2, "cool780")) < 1e-9 and
             "owner" in l780[0], "a remote laser carries its setpoint_thz and owner", l780)
        got = wait_until(lambda: len(remote_states(lab2, "lab1")) == 14, 10, 0.2)
        t.ok(got, "and lab2's /api/status shows lab1's 14 lasers")
        lab2.wait_states("locked", names=["cool780"], timeout=60)
        wait_until(lambda: remote_states(lab, "lab2").get("cool780") == "locked", 10, 0.1)
        t10 = time.monotonic()
        lab2.d.ok("unlock cool780")
        got = wait_until(lambda: remote_states(lab, "lab2").get("cool780") == "off", 10, 0.05)
        t.ok(got, "unlock cool780 on lab2: lab1's /api/status shows it off (%.3f s)"
             % (time.monotonic() - t10))
        lab2.d.ok("lock cool780")
        # malformed and oversized state payloads of some instance: ignored, counted
        m0 = api_status(lab)["remote_info"]["malformed"]
        pub(b, "wavelock/labx/laser/a/state", "{not json")
        pub(b, "wavelock/labx/laser/b/state", '{"state": 5}')
        pub(b, "wavelock/labx/laser/c/state", '{"state": "locked", "pad": "%s"}' % ("x" * 5000))
        pub(b, "wavelock/labx/status", "maybe")
        got = wait_until(lambda: api_status(lab)["remote_info"]["malformed"] >= m0 + 4, 5, 0.1)
        t.ok(got and remote_of(lab, "labx") is None and lab.alive(),
             "malformed, wrong-typed and oversized remote payloads are ignored and counted "
             "(%d -> %d)" % (m0, api_status(lab)["remote_info"]["malformed"]))
        pub(b, "wavelock/labx/laser/d/state", '{"state": "locked", "setpoint_thz": 384.1}',
            extra=["-r"])
        got = wait_until(lambda: remote_states(lab, "labx") == {"d": "locked"}, 5, 0.1)
        t.ok(got and remote_of(lab, "labx")["status"] == "unknown",
             "a retained state of a third instance shows (status unknown without its status)")
        pub(b, "wavelock/labx/laser/d/state", "", extra=["-r"])
        got = wait_until(lambda: remote_of(lab, "labx") is None, 5, 0.1)
        t.ok(got, "clearing its retained state removes it from the view")

        # ---- reload: change, remove, add the group -----------------------------
        cyc0 = int(stats(lab).get("cycles", 0))
        grp = lab.mqtt_group
        set_mqtt(lab, grp.replace('mqtt://', 'mqtq://'))
        r = lab.d.cmd("reload")
        t.ok(r[-1].startswith("ERR") and "mqtt.url" in r[-1] and stats(lab).get("mqtt") == "up",
             "reload with a bad mqtt group is refused naming file:line:key; MQTT stays up", r)
        set_mqtt(lab, grp.replace('instance = "lab1"', 'instance = "lab1b"')
                 .replace("commands = true;", "commands = true; remote = false;"))
        t5 = time.monotonic()
        lab.d.ok("reload")
        t.ok("remote" not in api_status(lab) and "remote_info" not in api_status(lab),
             "with remote = false /api/status has no remote view")
        got = wait_until(lambda: ("wavelock/lab1b/status", False, "online") in watch.messages(t5)
                         and ("wavelock/lab1/status", False, "offline") in watch.messages(t5), 10)
        t.ok(got, "reload with a new instance name: lab1 says offline, lab1b online")
        ok3 = wait_until(lambda: len(readings_by_laser(watch.messages(t5), "lab1b")) == 14, 10)
        t.ok(ok3, "after the reload the readings come as lab1b")
        set_mqtt(lab, "")
        t6 = time.monotonic()
        lab.d.ok("reload")
        got = wait_until(lambda: ("wavelock/lab1b/status", False, "offline") in
                         watch.messages(t6), 10)
        time.sleep(1)
        t.ok(got and not readings_by_laser(watch.messages(time.monotonic() - 0.8), "lab1b")
             and "mqtt" not in stats(lab), "reload without the mqtt group: offline, no more "
             "readings, no mqtt in stats")
        set_mqtt(lab, grp)
        t7 = time.monotonic()
        lab.d.ok("reload")
        ok4 = wait_until(lambda: len(readings_by_laser(watch.messages(t7), "lab1")) == 14 and
                         stats(lab).get("mqtt") == "up", 10)
        t.ok(ok4, "reload adding the group back: connected, readings flow")
        cyc1 = int(stats(lab).get("cycles", 0))
        t.ok(cyc1 > cyc0 and lab.alive(), "cycles went on through the reloads (%d -> %d)"
             % (cyc0, cyc1))

        # ---- the will after kill -9 ------------------------------------------------
        t8 = time.monotonic()
        os.kill(lab2.daemon.pid, signal.SIGKILL)
        got = wait_until(lambda: ("wavelock/lab2/status", False, "offline") in
                         watch.messages(t8), 10)
        t.ok(got, "the will says 'offline' after kill -9 (%.1f s)" % (time.monotonic() - t8))
        ret = retained(b, "wavelock/lab2/status")
        t.eq(ret.get("wavelock/lab2/status"), "offline", "... and it is retained")
        got = wait_until(lambda: (remote_of(lab, "lab2") or {}).get("status") == "offline", 10)
        r2 = remote_of(lab, "lab2") or {}
        t.ok(got and len(r2.get("lasers", [])) == 14, "lab1's /api/status shows lab2 offline "
             "(its 14 lasers as last known)", r2.get("status"))
        t9 = time.monotonic()
        rc = lab.daemon.stop()
        got = wait_until(lambda: ("wavelock/lab1/status", False, "offline") in
                         watch.messages(t9), 5)
        t.ok(rc == 0 and got, "a clean stop (SIGTERM) says 'offline' itself (exit %r)" % rc)
    finally:
        watch.close()
        for name in ("rsub", "replies"):
            if name in globals():
                globals()[name].close()
        if lab:
            lab.close()
        if lab2:
            lab2.close()

t.done()
