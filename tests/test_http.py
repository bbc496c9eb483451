#!/usr/bin/env python3
"""wavelockd's HTTP face against the simulated lab (conf/sim.conf, which
turns it on), no tokens (loopback):
  - /api/status: the 14 lasers with the fields of DESIGN.md section 9, the
    same setpoints as the text protocol's status, a summary line;
  - control endpoints go through the text protocol's commands: unlock and
    lock change the state seen over the text protocol; a setpoint in nm
    lands; out of range is 422 and changes nothing; an unknown laser 404;
    hold and resume reach the text protocol's commands (state holding,
    reason=hold, then back); a laser claimed by a name refuses the page's
    (unnamed) changes with 409;
  - /api/events: reading events for every laser, a state event on unlock;
  - /metrics: one frequency series per laser, clean under promtool;
  - without tokens, a Host that is not loopback (DNS rebinding) is refused,
    and so are a cross-origin POST and a form POST."""

import json
import shutil
import subprocess
import time

from wltest import TAP, Env, kv, wait_until
from lablib import Lab, programs_missing
from httptest import EventStream, get_json, request

tap = TAP()
why = programs_missing()
if why:
    tap.skip("http", why)
    tap.done()

with Env() as env:
    lab = Lab(env, seed=2, events=False)
    hp = lab.ports[7471]
    names = lab.cfg.names

    st, doc = get_json(hp, "/api/status")
    tap.ok(st == 200 and [l["name"] for l in doc["lasers"]] == names,
           "GET /api/status lists the 14 lasers in config order", (st, doc and len(doc["lasers"])))
    fields = {"name", "state", "setpoint_thz", "freq_thz", "error_mhz", "piezo_v"}
    tap.ok(all(fields <= set(l) for l in doc["lasers"]),
           "every laser has name, state, setpoint_thz, freq_thz, error_mhz, piezo_v")
    tap.ok({"version", "devices", "calibration", "summary"} <= set(doc),
           "the status has version, devices, calibration and a summary")
    tap.ok(doc["actions"]["lock"] and doc["actions"]["hold"] and doc["actions"]["resume"],
           "the status says which actions exist (lock, hold, resume)", doc.get("actions"))
    text = {kv(x)["name"]: kv(x) for x in lab.d.cmd("status")[:-1]}
    tap.ok(all(abs(l["setpoint_thz"] - float(text[l["name"]]["setpoint_thz"])) < 1e-9
               for l in doc["lasers"]), "setpoints match the text protocol's status")
    tap.ok(lab.wait_states("locked", timeout=90), "all lasers lock")

    ev = EventStream(hp)
    wait_until(lambda: {e[2]["laser"] for e in ev.of("reading")} >= set(names), 10)
    seen = {e[2]["laser"] for e in ev.of("reading")}
    tap.ok(ev.status == 200 and seen >= set(names),
           "/api/events delivers reading events for all 14 lasers", (ev.status, len(seen)))

    st, _, body = request(hp, "POST", "/api/lasers/cool780/unlock", body="")
    tap.ok(st == 204, "POST unlock answers 204", (st, body))
    tap.eq(lab.d.states()["cool780"], "off", "unlock over HTTP: the text protocol sees off")
    wait_until(lambda: any(e[2]["laser"] == "cool780" and e[2]["state"] == "off"
                           for e in ev.of("state")), 5)
    tap.ok(any(e[2]["laser"] == "cool780" and e[2]["state"] == "off" and e[2]["from"] == "locked"
               for e in ev.of("state")), "a state event (locked -> off) on the stream")
    st, _, _ = request(hp, "POST", "/api/lasers/cool780/lock", body="{}")
    tap.ok(st == 204 and lab.d.states()["cool780"] in ("acquiring", "locked"),
           "POST lock engages it again", st)

    st, _, body = request(hp, "PUT", "/api/lasers/cool780/setpoint",
                          body={"value": 780.2413, "unit": "nm"})
    sp = float(kv(lab.d.cmd("setpoint cool780")[0])["setpoint_nm"])
    tap.ok(st == 204 and abs(sp - 780.2413) < 1e-6, "PUT setpoint in nm lands", (st, body, sp))
    before = lab.d.cmd("setpoint cool780")[0]
    st, _, body = request(hp, "PUT", "/api/lasers/cool780/setpoint", body={"value": 500})
    tap.ok(st == 422 and "outside" in json.loads(body)["error"] and
           lab.d.cmd("setpoint cool780")[0].split()[1] == before.split()[1],
           "a setpoint out of range is 422 and changes nothing", (st, body))
    st, _, body = request(hp, "PUT", "/api/lasers/cool780/setpoint", body='{"value": ')
    tap.ok(st == 422, "a broken JSON body is 422", (st, body))
    st, _, body = request(hp, "PUT", "/api/lasers/cool780/setpoint",
                          body={"value": 384.23, "unit": "furlong"})
    tap.ok(st == 422, "an unknown unit is 422", (st, body))
    st, _, body = request(hp, "POST", "/api/lasers/nosuch/lock", body="{}")
    tap.ok(st == 404 and b"unknown laser" in body, "an unknown laser is 404", (st, body))
    st, _, body = request(hp, "POST", "/api/lasers/cool780/hold", body="{}")
    line = lab.d.cmd("status cool780")[0]
    tap.ok(st == 204 and kv(line)["state"] == "holding" and kv(line).get("reason") == "hold",
           "POST hold: 204, the laser is holding with reason=hold", (st, body, line))
    st, _, body = request(hp, "POST", "/api/lasers/cool780/resume", body="{}")
    tap.ok(st == 204 and wait_until(lambda: lab.d.states()["cool780"] != "holding", 5.0),
           "POST resume: 204, the laser leaves holding", (st, body, lab.d.states()["cool780"]))
    lab.d.cmd("iam alice")
    lab.d.cmd("claim cool780 60")
    st, _, body = request(hp, "POST", "/api/lasers/cool780/unlock", body="{}")
    tap.ok(st == 409 and b"claimed by alice" in body and lab.d.states()["cool780"] != "off",
           "a laser claimed by alice refuses the page's unlock with 409", (st, body))
    _, doc = get_json(hp, "/api/status")
    own = [x for x in doc["lasers"] if x["name"] == "cool780"][0]
    tap.ok(own.get("owner") == "alice" and 0 < own.get("claim_s", 0) <= 60,
           "/api/status shows owner and claim_s", own.get("owner"))
    lab.d.cmd("release cool780")

    st, _, body = request(hp, "POST", "/api/lasers/cool780/unlock", body="{}",
                          headers={"Origin": "http://evil.example"})
    tap.ok(st == 403 and lab.d.states()["cool780"] != "off", "a cross-origin POST is refused",
           (st, body))
    st, _, body = request(hp, "POST", "/api/lasers/cool780/unlock", body="a=1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    tap.ok(st == 415 and lab.d.states()["cool780"] != "off", "a form POST is refused", (st, body))
    st, _, body = request(hp, "GET", "/api/status", headers={"Host": "attacker.example:%d" % hp})
    tap.ok(st == 403, "a non-loopback Host is refused without tokens (DNS rebinding)", st)

    st, hdrs, body = request(hp, "GET", "/")
    tap.ok(st == 200 and hdrs.get("content-type", "").startswith("text/html") and
           "default-src 'none'" in hdrs.get("content-security-policy", ""),
           "GET / serves the page with a CSP that allows nothing from outside", (st, hdrs))

    st, hdrs, body = request(hp, "GET", "/metrics")
    text = body.decode()
    series = [l for l in text.splitlines() if l.startswith("wavelock_laser_frequency_hertz{")]
    tap.ok(st == 200 and len(series) == 14, "/metrics: one frequency series per laser",
           (st, len(series)))
    for name in ("wavelock_laser_error_hertz", "wavelock_laser_output_volts",
                 "wavelock_laser_state", "wavelock_laser_cycles_total", "wavelock_device_up",
                 "wavelock_wavemeter_readings_total", "wavelock_clients"):
        tap.ok("\n# TYPE %s " % name in text, "/metrics has %s" % name)
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        tap.ok(p.returncode == 0, "promtool check metrics: clean",
               (p.stdout + p.stderr).decode())
    else:
        tap.skip("promtool check metrics", "promtool not installed (scripts/deps.sh: prometheus)")
    ev.close()

    # reload: a changed http.listen is reported (it needs a restart), the
    # server keeps serving on the old address
    with open(lab.conf) as f:
        conf_text = f.read()
    newport = env.free_port()
    with open(lab.conf, "w") as f:
        f.write(conf_text.replace("127.0.0.1:%d" % hp, "127.0.0.1:%d" % newport))
    ans = lab.d.cmd("reload")
    time.sleep(0.3)
    log = open(lab.daemon.log_path, "rb").read().decode("utf-8", "replace")
    tap.ok(ans[-1].startswith("OK") and "http group's listen addresses changed" in log and
           "next restart" in log and request(hp, "GET", "/api/status")[0] == 200,
           "reload: a changed http.listen is reported as needing a restart; the old one serves",
           (ans, log[-500:]))
    lab.close()
tap.done()
