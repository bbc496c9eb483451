#!/usr/bin/env python3
"""The dashboard in a real browser (headless Chromium through Selenium)
against wavelockd + wavelock-sim on conf/sim.conf with tokens:
  - before login the page shows no laser and asks for a token; with the
    monitor token it shows all 14 lasers but no controls;
  - after login with the control token: all 14 lasers shown, their readings
    change, each error trace draws (pixels of the trace colour on the
    canvas), lock/unlock and a setpoint in nm from the page change the
    daemon (checked over the text protocol);
  - the page's delivery delay (reading time stamp to the page) is printed;
  - every request the browser made went to 127.0.0.1 (Chrome's network log);
  - a screenshot is kept next to the test log (tests/test_http_browser.png).
Skipped, saying why, only when Chromium or its driver cannot start."""

import json
import os
import time
from urllib.parse import urlparse

from wltest import TAP, Env, BUILDDIR, kv, wait_until
from lablib import Lab, SIM_CONF, programs_missing
from httptest import chromium

tap = TAP()
why = programs_missing()
if why:
    tap.skip("dashboard in Chromium", why)
    tap.done()
CONTROL = "ctl-7f3a9c0e55d2"
MONITOR = "mon-41b8d6a2e917"
SHOT = os.path.join(BUILDDIR, "tests", "test_http_browser.png")


def urls(drv):
    out = []
    for e in drv.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            out.append(m["params"]["request"]["url"])
    return out


drv, By = chromium(tap, "dashboard in Chromium", 1200, performance_log=True)

seen_urls = []
try:
    with Env() as env:
        with open(SIM_CONF) as f:
            text = f.read()
        text = text.replace("  max_clients = 64;\n", '  max_clients = 64;\n  tokens = ( '
                            '{ secret = "%s"; role = "control"; }, { secret = "%s"; '
                            'role = "monitor"; } );\n' % (CONTROL, MONITOR), 1)
        conf = env.write("sim-tokens.conf", text)
        lab = Lab(env, seed=4, conf=conf, events=False)
        lab.d.cmd("auth " + CONTROL)
        hp = lab.ports[7471]
        base = "http://127.0.0.1:%d/" % hp
        names = lab.cfg.names

        drv.get(base)
        wait_until(lambda: "log in" in drv.find_element(By.ID, "summary").text, 10)
        tap.ok("log in" in drv.find_element(By.ID, "summary").text and
               not drv.find_elements(By.CSS_SELECTOR, "section.row"),
               "without a token the page asks for one and shows no laser")

        def login(token):
            drv.find_element(By.ID, "token").send_keys(token)
            drv.find_element(By.ID, "login").click()

        def rows():
            return drv.find_elements(By.CSS_SELECTOR, "section.row")
        login(MONITOR)
        wait_until(lambda: len(rows()) == 14, 10)
        ctl_shown = any(b.is_displayed() for b in
                        drv.find_elements(By.CSS_SELECTOR, 'button[data-action="lock"]'))
        tap.ok(len(rows()) == 14 and not ctl_shown,
               "with the monitor token: 14 lasers, no controls", (len(rows()), ctl_shown))
        drv.find_element(By.ID, "logout").click()
        wait_until(lambda: drv.find_element(By.ID, "token").is_displayed(), 5)
        login(CONTROL)
        wait_until(lambda: drv.find_element(By.ID, "role").text == "control", 10)
        tap.eq(drv.find_element(By.ID, "role").text, "control", "logged in with the control token")
        shown = [r.get_attribute("data-laser") for r in rows()]
        tap.eq(shown, names, "all 14 lasers are shown, in config order")

        def readings():
            return {r.get_attribute("data-laser"): int(r.get_attribute("data-readings") or 0)
                    for r in rows()}
        wait_until(lambda: min(readings().values()) > 0, 10)
        r0 = readings()
        text0 = {r.get_attribute("data-laser"): r.find_element(By.CSS_SELECTOR, ".rd").text
                 for r in rows()}
        time.sleep(3)
        r1 = readings()
        text1 = {r.get_attribute("data-laser"): r.find_element(By.CSS_SELECTOR, ".rd").text
                 for r in rows()}
        tap.ok(all(r1[n] > r0[n] for n in names), "every laser's readings arrive",
               {n: (r0[n], r1[n]) for n in names})
        changed = sum(text0[n] != text1[n] for n in names)
        tap.ok(changed >= 10, "the shown readings change (%d of 14 in 3 s)" % changed)

        lit = drv.execute_script("""
          const out = {};
          document.querySelectorAll('section.row').forEach(r => {
            const c = r.querySelector('canvas.trace'), g = c.getContext('2d');
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && (d[i] > 60 || d[i + 1] > 60)) n++;
            out[r.dataset.laser] = [n, +c.dataset.points || 0];
          });
          return out;""")
        tap.ok(all(lit[n][0] > 20 and lit[n][1] > 3 for n in names),
               "every error trace draws (bright pixels on the canvas)", lit)

        lab.wait_states("locked", names=["cool780"], timeout=60)
        row = drv.find_element(By.CSS_SELECTOR, 'section.row[data-laser="cool780"]')
        row.find_element(By.CSS_SELECTOR, 'button[data-action="unlock"]').click()
        ok = wait_until(lambda: lab.d.states()["cool780"] == "off", 5)
        tap.ok(ok, "unlock from the page: the text protocol sees cool780 off")
        wait_until(lambda: row.get_attribute("data-state") == "off", 5)
        tap.eq(row.get_attribute("data-state"), "off", "the row shows off")
        row.find_element(By.CSS_SELECTOR, 'button[data-action="lock"]').click()
        ok = wait_until(lambda: lab.d.states()["cool780"] in ("acquiring", "locked"), 5)
        tap.ok(ok, "lock from the page: the text protocol sees cool780 engaged")
        spv = row.find_element(By.CSS_SELECTOR, "input.spv")
        spv.send_keys("780.2414")
        row.find_element(By.CSS_SELECTOR, "select.spu option[value='nm'], select.spu").click()
        drv.execute_script("arguments[0].value = 'nm'", row.find_element(By.CSS_SELECTOR, "select.spu"))
        row.find_element(By.CSS_SELECTOR, 'button[data-action="setpoint"]').click()

        def sp_nm():
            return float(kv(lab.d.cmd("setpoint cool780")[0])["setpoint_nm"])
        ok = wait_until(lambda: abs(sp_nm() - 780.2414) < 1e-6, 5)
        tap.ok(ok, "a setpoint in nm from the page lands (%.7f nm)" % sp_nm())
        spv.clear()
        spv.send_keys("900")
        drv.execute_script("arguments[0].value = 'THz'", row.find_element(By.CSS_SELECTOR, "select.spu"))
        row.find_element(By.CSS_SELECTOR, 'button[data-action="setpoint"]').click()
        wait_until(lambda: "422" in row.find_element(By.CSS_SELECTOR, ".msg").text, 5)
        tap.ok("422" in row.find_element(By.CSS_SELECTOR, ".msg").text and
               abs(sp_nm() - 780.2414) < 1e-6,
               "an out-of-range setpoint shows the daemon's 422 and changes nothing",
               row.find_element(By.CSS_SELECTOR, ".msg").text)

        lags = drv.execute_script("return window.wavelockStats.lags.slice()")
        lags.sort()
        if lags:
            p50 = lags[len(lags) // 2]
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            tap.diag("reading -> page delivery: %d readings, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
                     % (len(lags), p50, p99, lags[-1]))
        tap.ok(len(lags) > 50, "the page timed %d readings" % len(lags))
        time.sleep(1)
        drv.save_screenshot(SHOT)
        tap.ok(os.path.getsize(SHOT) > 10000, "screenshot kept: %s" % SHOT)
        seen_urls = urls(drv)
        lab.close()
finally:
    drv.quit()

off = [u for u in seen_urls if urlparse(u).scheme not in ("data", "about") and
       urlparse(u).hostname != "127.0.0.1"]
tap.ok(seen_urls and not off, "all %d browser requests went to 127.0.0.1" % len(seen_urls), off)
tap.done()
