#!/usr/bin/env python3
"""A real Prometheus scrapes wavelockd's /metrics on loopback (the
simulated lab of conf/sim.conf): queried over its HTTP API, it holds one
wavelock_laser_frequency_hertz series per laser (values near the lasers'
setpoints, in hertz), one state series per laser and state, and the target
is up with no scrape errors.  Skipped, saying why, without prometheus."""

import json
import shutil
import time
import urllib.parse
import urllib.request

from wltest import TAP, Env, wait_until
from lablib import Lab, programs_missing

tap = TAP()
why = programs_missing()
prom = shutil.which("prometheus")
if why or not prom:
    tap.skip("prometheus scrape", why or "prometheus is not installed (scripts/deps.sh)")
    tap.done()


def query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.load(r)
    return doc["data"]["result"] if doc.get("status") == "success" else []


with Env() as env:
    lab = Lab(env, seed=5, events=False)
    hp = lab.ports[7471]
    pp = env.free_port()
    cfg = env.write("prometheus.yml",
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: wavelock\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % hp)
    p = env.start("prometheus", [prom, "--config.file=" + cfg,
                                 "--storage.tsdb.path=" + env.path("tsdb"),
                                 "--web.listen-address=127.0.0.1:%d" % pp,
                                 "--log.level=warn"])

    def series():
        try:
            return query(pp, "wavelock_laser_frequency_hertz")
        except OSError:
            return []
    t0 = time.monotonic()
    wait_until(lambda: len(series()) >= 14 or not p.alive(), 60, 0.5)
    res = series()
    tap.diag("prometheus had all series after %.1f s" % (time.monotonic() - t0))
    lasers = sorted(r["metric"].get("laser") for r in res)
    tap.eq(lasers, sorted(lab.cfg.names), "one wavelock_laser_frequency_hertz series per laser")
    text = {r["metric"]["laser"]: float(r["value"][1]) for r in res}
    status = lab.d.status()
    near = all(abs(text[n] - float(status[n]["setpoint_thz"]) * 1e12) < 1e9 for n in text)
    tap.ok(near, "the values are the lasers' frequencies in hertz (within 1 GHz of setpoint)",
           text)
    st = query(pp, "wavelock_laser_state")
    tap.eq(len(st), 14 * 6, "wavelock_laser_state: 6 states for each of the 14 lasers")
    up = query(pp, 'up{job="wavelock"}')
    tap.ok(up and up[0]["value"][1] == "1", "the wavelockd target is up", up)
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/targets" % pp, timeout=5) as r:
        targets = json.load(r)["data"]["activeTargets"]
    errs = [t.get("lastError") for t in targets if t.get("lastError")]
    tap.ok(targets and not errs, "no scrape errors", errs)
    lab.close()
tap.done()
