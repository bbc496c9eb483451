#!/usr/bin/env python3
"""The dashboard's view of the other controllers in a real browser
(headless Chromium through Selenium): two simulated labs on one mosquitto
broker; lab1's page shows a read-only section for lab2 with its 14 lasers
(state colour, setpoint, owner) and no controls in it, follows a state
change on lab2 (unlock), and shows lab2 offline after kill -9 (the will).
A screenshot is kept next to the test log (tests/test_mqtt_browser.png).
Skipped, saying why, when mosquitto, Chromium or its driver is missing."""

import os
import signal
import time

import mqttlib
from mqttlib import Broker, mqtt_lab
from wltest import TAP, Env, BUILDDIR, wait_until
from lablib import programs_missing
from httptest import chromium

tap = TAP()
miss = mqttlib.missing()
if miss:
    tap.skip("other controllers on the dashboard", "missing: %s" % " ".join(miss))
    tap.done()
why = programs_missing()
if why:
    tap.skip("other controllers on the dashboard", why)
    tap.done()
SHOT = os.path.join(BUILDDIR, "tests", "test_mqtt_browser.png")


drv, By = chromium(tap, "other controllers on the dashboard", 1600)

try:
    with Env() as env:
        b = Broker(env)
        lab1 = mqtt_lab(env, b, "lab1")
        lab2 = mqtt_lab(env, b, "lab2", seed=2)
        try:
            names2 = list(lab2.cfg.names)
            drv.get("http://127.0.0.1:%d/" % lab1.ports[7471])

            # read in one script: the section is rebuilt when the status changes
            def inst():
                return drv.execute_script("""
                  const x = document.querySelector('#remotes .inst[data-instance="lab2"]');
                  if (!x) return null;
                  const rows = {};
                  x.querySelectorAll('.rrow').forEach(r => rows[r.dataset.laser] = {
                    state: r.dataset.state, text: r.innerText,
                    colour: getComputedStyle(r).borderLeftColor });
                  return { status: x.dataset.status, text: x.innerText, rows: rows,
                           controls: x.querySelectorAll('button, input, select').length };""")

            def rrows():
                x = inst()
                return {k: v["state"] for k, v in x["rows"].items()} if x else {}
            t0 = time.monotonic()
            got = wait_until(lambda: len(rrows()) == 14, 20, 0.2)
            tap.ok(got and sorted(rrows()) == sorted(names2),
                   "lab1's page shows a section for lab2 with its 14 lasers (%.1f s)"
                   % (time.monotonic() - t0), rrows())
            local = [r.get_attribute("data-laser")
                     for r in drv.find_elements(By.CSS_SELECTOR, "#lasers section.row")]
            tap.eq(len(local), 14, "lab1's own 14 lasers are still shown above it")
            x = inst()
            tap.ok(x is not None and drv.find_element(By.ID, "remote").is_displayed() and
                   "read-only" in drv.find_element(By.ID, "remote").text and
                   x["status"] == "online" and x["controls"] == 0,
                   "the section is marked read-only, says online and has no controls")
            lab2.wait_states("locked", names=["cool780"], timeout=60)
            got = wait_until(lambda: rrows().get("cool780") == "locked", 15, 0.2)
            row = inst()["rows"]["cool780"]
            sp = [w for w in lab2.d.ok("setpoint cool780")[0].split()
                  if w.startswith("setpoint_thz=")][0].split("=")[1]
            tap.ok(got and ("%.7f" % float(sp)) in row["text"],
                   "cool780 of lab2 shows locked with its setpoint", row["text"])
            colour = row["colour"]
            tap.ok("46, 160, 67" in colour, "a locked remote laser is marked green", colour)
            t1 = time.monotonic()
            lab2.d.ok("unlock cool780")
            got = wait_until(lambda: rrows().get("cool780") == "off", 15, 0.1)
            tap.ok(got, "unlock cool780 on lab2: lab1's page shows it off (%.1f s; the page "
                   "polls the status every 5 s)" % (time.monotonic() - t1))
            drv.execute_script("document.getElementById('remote').scrollIntoView()")
            time.sleep(0.5)
            drv.save_screenshot(SHOT)
            tap.ok(os.path.getsize(SHOT) > 10000, "screenshot kept: %s" % SHOT)
            os.kill(lab2.daemon.pid, signal.SIGKILL)
            got = wait_until(lambda: (inst() or {}).get("status") == "offline", 15, 0.2)
            tap.ok(got and "offline" in inst()["text"],
                   "after kill -9 of lab2 the page shows it offline")
            drv.save_screenshot(SHOT.replace(".png", "-offline.png"))
        finally:
            lab1.close()
            lab2.close()
finally:
    drv.quit()
tap.done()
