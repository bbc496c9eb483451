#!/usr/bin/env python3
"""Broker outages under lock: the broker is stopped for 5 s every 15 s for
2 minutes (WL_MQTT_OUTAGE_S shortens the whole phase), then the daemon is
pointed (by reload) at a broker that accepts the connection and never
reads.  Meanwhile: no cycle lost (cycle rate and coalesced readings as in
a baseline phase with the broker up), lock RMS as in the baseline, a
reconnect and a republish of every retained state after each outage, and
bounded memory (RSS printed)."""

import os
import signal
import socket
import statistics
import threading
import time

import mqttlib
from mqttlib import Broker, mqtt_group, mqtt_lab, set_mqtt, stats, retained, rss_kb
from lablib import TruthLog, rms
from wltest import TAP, Env, sanitized, wait_until

OUTAGE_TOTAL_S = float(os.environ.get("WL_MQTT_OUTAGE_S", "120"))
PERIOD_S, DOWN_S, BASELINE_S, STALL_S = 15.0, 5.0, 30.0, 25.0

t = TAP()
miss = mqttlib.missing()
if miss:
    t.skip("mqtt outage tests", "missing: %s" % " ".join(miss))
    t.done()


class Stalled:
    """Accepts TCP connections on 127.0.0.1 and never reads from them."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.conns = []
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        self.s.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.s.accept()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.th.join(2)
        for c in self.conns:
            c.close()
        self.s.close()


def phase(lab, truth, t0, t1, st0, st1, names):
    dt = t1 - t0
    cyc = (int(st1["cycles"]) - int(st0["cycles"])) / dt
    coal = int(st1["coalesced"]) - int(st0["coalesced"])
    r = {n: rms(v for _, v in truth.series(n, "error_mhz", t0, t1)) for n in names}
    return cyc, coal, r


with Env() as env:
    b = Broker(env)
    lab = None
    truth = None
    stalled = None
    try:
        lab = mqtt_lab(env, b, "out1", extra="keepalive_s = 5;")
        names = list(lab.cfg.names)
        locked = lab.wait_states("locked", timeout=90)
        t.ok(locked, "all lasers locked before the outages", lab.d.states())
        truth = TruthLog(lab.sim_port, 0.1)

        # ---- baseline -------------------------------------------------------
        s0, tb0 = stats(lab), time.monotonic()
        time.sleep(BASELINE_S)
        s1, tb1 = stats(lab), time.monotonic()
        base_cyc, base_coal, base_rms = phase(lab, truth, tb0, tb1, s0, s1, names)
        base_s = tb1 - tb0

        def coal_allowed(t0, t1):
            """The baseline's coalesced readings scaled to a phase's length, + 2."""
            return base_coal * (t1 - t0) / base_s + 2
        t.diag("baseline %.0f s: %.1f cycles/s, %d coalesced, rms (MHz) %s"
               % (tb1 - tb0, base_cyc, base_coal,
                  " ".join("%s=%.3f" % kv for kv in sorted(base_rms.items()))))

        # ---- the broker stops for 5 s every 15 s ------------------------------
        rss0 = rss_kb(lab.daemon.pid)
        n_out = max(1, int(OUTAGE_TOTAL_S // PERIOD_S))
        t.diag("outages: broker stopped %.0f s every %.0f s, %d times (%.0f s)"
               % (DOWN_S, PERIOD_S, n_out, n_out * PERIOD_S))
        s2, to0 = stats(lab), time.monotonic()
        reconnected = republished = 0
        worst_reconnect = 0.0
        for i in range(n_out):
            start = time.monotonic()
            st0 = stats(lab)
            conn0 = int(st0["mqtt_connects"])
            rep0 = int(st0.get("mqtt_republished", 0))
            b.stop()
            time.sleep(DOWN_S)
            b.start()
            tr = time.monotonic()
            if wait_until(lambda: int(stats(lab)["mqtt_connects"]) > conn0, PERIOD_S - DOWN_S - 1,
                          0.1):
                reconnected += 1
                worst_reconnect = max(worst_reconnect, time.monotonic() - tr)
            # The daemon counts what it republished after the CONNACK; look at
            # the broker once that is done (a subscriber that comes earlier
            # gets the republished states live, not as retained messages).
            wait_until(lambda: int(stats(lab).get("mqtt_republished", 0)) >= rep0 + len(names),
                       5, 0.1)
            ret = retained(b, "wavelock/out1/#", timeout=3)
            states = [k for k in ret if k.endswith("/state")]
            if len(states) == len(names) and ret.get("wavelock/out1/status") == "online":
                republished += 1
            rest = PERIOD_S - (time.monotonic() - start)
            if rest > 0:
                time.sleep(rest)
        s3, to1 = stats(lab), time.monotonic()
        rss1 = rss_kb(lab.daemon.pid)
        out_cyc, out_coal, out_rms = phase(lab, truth, to0, to1, s2, s3, names)
        t.ok(reconnected == n_out, "reconnected after each of the %d outages (slowest %.1f s "
             "after the broker came back)" % (n_out, worst_reconnect), (reconnected, n_out))
        t.ok(republished == n_out, "every laser's retained state and status 'online' were "
             "republished after each outage (%d/%d)" % (republished, n_out))
        t.ok(out_cyc >= 0.97 * base_cyc and out_coal <= coal_allowed(to0, to1),
             "no cycle lost: %.1f cycles/s with outages vs %.1f baseline, %d coalesced vs %d"
             % (out_cyc, base_cyc, out_coal, base_coal))
        ratios = [out_rms[n] / base_rms[n] for n in names if base_rms[n] > 0]
        med = statistics.median(ratios)
        t.diag("rms with outages (MHz): %s" % " ".join("%s=%.3f" % kv
                                                       for kv in sorted(out_rms.items())))
        t.ok(med < 1.3, "lock RMS unchanged: median ratio with/without outages %.2f" % med)
        t.diag("daemon RSS %d kB before the outages, %d kB after; mqtt %s"
               % (rss0, rss1, {k: v for k, v in s3.items() if k.startswith("mqtt")}))
        if sanitized():
            t.skip("memory bounded across the outages (RSS %+d kB)" % (rss1 - rss0), sanitized())
        else:
            t.ok(rss1 - rss0 < 16384, "memory bounded across the outages (RSS %+d kB)"
                 % (rss1 - rss0))

        # ---- the broker freezes (SIGSTOP) with the connection up -----------------
        conn0 = int(stats(lab)["mqtt_connects"])
        s6, tf0 = stats(lab), time.monotonic()
        os.kill(b.proc.pid, signal.SIGSTOP)
        gone = wait_until(lambda: stats(lab).get("mqtt") != "up", 15, 0.2)
        t_gone = time.monotonic() - tf0
        time.sleep(max(0.0, 12 - t_gone))
        os.kill(b.proc.pid, signal.SIGCONT)
        back = wait_until(lambda: int(stats(lab)["mqtt_connects"]) > conn0, 20, 0.2)
        s7, tf1 = stats(lab), time.monotonic()
        fz_cyc, fz_coal, _ = phase(lab, truth, tf0, tf1, s6, s7, names)
        t.ok(gone and back, "a frozen broker (SIGSTOP 12 s): the daemon drops the connection "
             "after %.1f s (keepalive 5 s) and reconnects once it runs again" % t_gone)
        t.ok(fz_cyc >= 0.97 * base_cyc and fz_coal <= coal_allowed(tf0, tf1),
             "... no cycle lost meanwhile (%.1f cycles/s, %d coalesced)" % (fz_cyc, fz_coal))

        # ---- a broker that accepts and never reads --------------------------------
        stalled = Stalled()
        set_mqtt(lab, mqtt_group("mqtt://localhost:%d" % stalled.port, "out1",
                                 password_file=env.path("wl.password"),
                                 extra="keepalive_s = 5;"))
        lab.d.ok("reload")
        time.sleep(2)
        s4, ts0, rss2 = stats(lab), time.monotonic(), rss_kb(lab.daemon.pid)
        time.sleep(STALL_S)
        s5, ts1, rss3 = stats(lab), time.monotonic(), rss_kb(lab.daemon.pid)
        st_cyc, st_coal, st_rms = phase(lab, truth, ts0, ts1, s4, s5, names)
        st_med = statistics.median(st_rms[n] / base_rms[n] for n in names if base_rms[n] > 0)
        t.diag("stalled broker %.0f s: %d connections accepted, mqtt=%s dropped %s -> %s, "
               "%.1f cycles/s, RSS %d -> %d kB, rms ratio %.2f"
               % (ts1 - ts0, len(stalled.conns), s5.get("mqtt"), s4.get("mqtt_dropped"),
                  s5.get("mqtt_dropped"), st_cyc, rss2, rss3, st_med))
        t.ok(s5.get("mqtt") != "up" and len(stalled.conns) >= 2,
             "a broker that never reads: never up, the daemon gives up and retries "
             "(%d connections)" % len(stalled.conns))
        t.ok(st_cyc >= 0.97 * base_cyc and st_coal <= coal_allowed(ts0, ts1) and st_med < 1.3,
             "... no cycle lost and the lock unchanged meanwhile")
        if sanitized():
            t.skip("... memory bounded (RSS %+d kB)" % (rss3 - rss2), sanitized())
        else:
            t.ok(rss3 - rss2 < 8192, "... memory bounded (RSS %+d kB)" % (rss3 - rss2))

        # ---- back to the real broker ------------------------------------------
        set_mqtt(lab, lab.mqtt_group)
        lab.d.ok("reload")
        ok = wait_until(lambda: stats(lab).get("mqtt") == "up", 15)
        ret = retained(b, "wavelock/out1/#", timeout=3)
        t.ok(ok and len([k for k in ret if k.endswith("/state")]) == len(names),
             "reload back to the real broker: connected, retained states there")
        t.ok(lab.alive() and all(s == "locked" for s in lab.d.states().values()),
             "every laser still locked at the end")
    finally:
        if truth:
            truth.close()
        if stalled:
            stalled.close()
        if lab:
            lab.close()

t.done()
