#!/usr/bin/env python3
"""MQTT over TLS: a mosquitto broker with a certificate made by openssl in
the test; wavelockd with the right CA file connects and publishes, with a
wrong CA (after a reload) it is refused with a clear log line and keeps
regulating."""

import subprocess
import time

import mqttlib
from mqttlib import Broker, Sub, mqtt_group, mqtt_lab, set_mqtt, stats, readings_by_laser
from wltest import TAP, Env, wait_until

t = TAP()
miss = mqttlib.missing()
if miss:
    t.skip("mqtt tls tests", "missing: %s" % " ".join(miss))
    t.done()


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_ca(env, name):
    key, pem = env.path(name + ".key"), env.path(name + ".pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem,
            "-days", "2", "-subj", "/CN=wavelock test %s" % name)
    return key, pem


with Env() as env:
    ca_key, ca = make_ca(env, "ca")
    _, other_ca = make_ca(env, "otherca")
    skey, csr, spem = env.path("srv.key"), env.path("srv.csr"), env.path("srv.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", skey, "-out", csr,
            "-subj", "/CN=localhost")
    ext = env.write("san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", spem, "-days", "2", "-extfile", ext)
    b = Broker(env, tls=(ca, spem, skey))
    url = "mqtts://localhost:%d" % b.tls_port
    watch = Sub(b, "wavelock/#", user="bob")
    lab = None
    try:
        lab = mqtt_lab(env, b, "tls1", url=url, extra='cafile = "%s";' % ca)
        t0 = time.monotonic()
        ok = wait_until(lambda: len(readings_by_laser(watch.messages(), "tls1")) == 14, 20, 0.2)
        t.ok(ok and stats(lab).get("mqtt") == "up",
             "with the broker's CA file the daemon connects over TLS and publishes all 14 "
             "lasers (%.1f s)" % (time.monotonic() - t0), lab.outputs())
        t.ok(("wavelock/tls1/status", False, "online") in watch.messages(),
             "status online over TLS")
        pwf = env.write("bob.password", "bpass\n")
        from wltest import prog
        out = subprocess.run([prog("wavelock"), "--mqtt", url, "--mqtt-user", "bob",
                              "--mqtt-password-file", pwf, "--mqtt-cafile", ca, "lab"],
                             capture_output=True, text=True, timeout=20)
        t.ok(out.returncode == 0 and out.stdout.count("instance=tls1 laser=") == 14,
             "wavelock --mqtt mqtts://... --mqtt-cafile lists the lasers", out.stdout + out.stderr)

        cyc0 = int(stats(lab)["cycles"])
        set_mqtt(lab, mqtt_group(url, "tls1", password_file=env.path("wl.password"),
                                 extra='cafile = "%s";' % other_ca))
        lab.d.ok("reload")
        got = wait_until(lambda: "certificate verify failed" in lab.outputs(20000), 10)
        log = [l for l in lab.outputs(20000).splitlines() if "mqtt: TLS with" in l]
        t.ok(got and log and "not trusted" in log[-1],
             "a wrong CA is refused with a clear log line", log[-1:] or lab.outputs())
        if log:
            t.diag("log: " + log[-1].split("wavelockd", 1)[-1])
        time.sleep(2)
        st = stats(lab)
        t.ok(st.get("mqtt") != "up" and int(st["cycles"]) > cyc0 and lab.alive(),
             "refused: not connected, the lasers keep being regulated (cycles %d -> %s)"
             % (cyc0, st["cycles"]))
    finally:
        watch.close()
        if lab:
            lab.close()

t.done()
