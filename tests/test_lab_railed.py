#!/usr/bin/python3
"""Railed outputs (DESIGN.md section 3, issue 19): wavelock-sim and wavelockd
as real processes on a two-laser simulated lab (free ports, state file in a
temporary directory).  good780 is a healthy lock; wrong852's polarity is
wrong (its frequency rises with the piezo, but pid.polarity = -1), so its
loop drives the piezo to a limit instead of onto the setpoint and it stays
'acquiring', 926 MHz low at start, further off once the piezo is at 0 V.

  - wrong852's status shows railed=piezo_low within 1 s of its piezo output
    reaching the 2 % band above 0 V (polled at 20 Hz), a subscriber gets
    '* warning laser=wrong852 railed=piezo_low' and the log has a line;
  - good780 locks, shows railed=none all along and gets no warning event;
  - with the polarity put right ('set wrong852 polarity 1') the laser locks
    and railed=none comes back as an event; with it wrong again it rails
    again; 'unlock' (no longer regulating) ends railed at once, with an
    event;
  - both programs stop with status 0 on SIGTERM.
"""

import time

from wltest import TAP, Env
from lablib import Lab, LabError, log_text, programs_missing

CONF = """
server = { listen = [ "127.0.0.1:7470" ]; };
state_file = "railed.state";
wavemeter = { backend = "stream"; address = "127.0.0.1:7480"; stale_ms = 1000; };
sim = { seed = 1; control = "127.0.0.1:7481"; switch_ms = 1.0; };
devices = ( { name = "ao1"; url = "tcp://127.0.0.1:1502"; unit = 1; timeout_ms = 200; } );
# One wavemeter round: 2 x (10 ms exposure + 1 ms switch) = 22 ms per reading,
# G = 300 MHz/V: ki = 0.4 / (G T), kp = 0.1 / G.
lasers = (
  { name = "good780"; channel = 1; setpoint = "384.2304844 THz";
    min_thz = 384.220; max_thz = 384.240; autolock = true;
    window_mhz = 5.0; capture_mhz = 5000.0;
    pid = { kp = 0.00033; ki = 0.06; };
    piezo = { device = "ao1"; register = 0; format = "u16"; scale = 6553.5;
              min_v = 0.0; max_v = 10.0; start_v = 5.0; max_step_v = 1.0; };
    sim = { offset_mhz = 350; piezo_mhz_per_v = 300; walk_mhz_rts = 1.0; noise_mhz = 0.5;
            exposure_ms = 10; };
  },
  { name = "wrong852"; channel = 2; setpoint = "351.7217 THz";
    min_thz = 351.71; max_thz = 351.73; autolock = true;
    window_mhz = 5.0; capture_mhz = 5000.0;
    pid = { kp = 0.00033; ki = 0.06; polarity = -1; };     # wrong: G > 0
    piezo = { device = "ao1"; register = 1; format = "u16"; scale = 6553.5;
              min_v = 0.0; max_v = 10.0; start_v = 5.0; max_step_v = 1.0; };
    sim = { offset_mhz = -926; piezo_mhz_per_v = 300; walk_mhz_rts = 1.0; noise_mhz = 0.5;
            exposure_ms = 10; };
  }
);
"""

BAND_V = 0.02 * 10.0

tap = TAP()
why = programs_missing()
if why:
    tap.skip("railed outputs in the simulated lab", why)
    tap.done()


def warnings(lab, laser, t0=0.0, events=None):
    """[(time, railed)] of the laser's '* warning' events since t0 (from
    events when given: inside EventLog.wait_for, which holds its lock)."""
    if events is None:
        events = lab.events.since(t0)
    return [(t, d.get("railed")) for t, k, d in events
            if t >= t0 and k == "warning" and d.get("laser") == laser]


with Env() as env:
    conf = env.write("railed.conf", CONF)
    try:
        lab = Lab(env, conf=conf, name="railed")
    except (LabError, RuntimeError, OSError) as e:
        tap.bail("the lab did not start: %s" % e)

    # ---- wrong polarity: the piezo runs to 0 V and stays there ---------------------------
    t_band = t_flag = None
    good_railed = set()
    end = time.monotonic() + 15.0
    while time.monotonic() < end and t_flag is None:
        st = lab.d.status()
        now = time.monotonic()
        w = st["wrong852"]
        if t_band is None and float(w["piezo_v"]) <= BAND_V:
            t_band = now
        if w.get("railed") not in (None, "none"):
            t_flag = now
            flagged = w
        good_railed.add(st["good780"].get("railed"))
        time.sleep(0.05)
    tap.ok(t_band is not None and t_flag is not None and flagged["railed"] == "piezo_low"
           and t_flag - t_band <= 1.0 and flagged["state"] == "acquiring",
           "wrong polarity: status railed=piezo_low %.2f s after the piezo reached %.1f V "
           "(state %s, error %s MHz)" % ((t_flag or 0) - (t_band or 0), BAND_V,
                                         flagged["state"] if t_flag else "?",
                                         flagged["error_mhz"] if t_flag else "?"),
           "t_band=%r t_flag=%r\n%s" % (t_band, t_flag, lab.outputs()))
    ev = lab.events.wait_for(lambda e: warnings(lab, "wrong852", 0.0, e), 2.0)
    tap.ok(ev and ev[0][1] == "piezo_low" and t_band is not None and ev[0][0] - t_band <= 1.0,
           "subscribers get '* warning laser=wrong852 railed=piezo_low' within 1 s (%s)"
           % (("%.2f s" % (ev[0][0] - t_band)) if ev and t_band else "none"), ev)
    tap.ok("laser wrong852: railed=piezo_low" in log_text(lab.daemon),
           "the log has a line for it", log_text(lab.daemon)[-1500:])

    # ---- the healthy lock: never railed ------------------------------------------------------
    locked = lab.wait_states("locked", names=["good780"], timeout=20)
    time.sleep(1.0)
    good_railed.add(lab.d.status("good780")["good780"].get("railed"))
    tap.ok(locked and good_railed == {"none"} and not warnings(lab, "good780"),
           "good780 locks, shows railed=none all along and gets no warning event",
           (good_railed, warnings(lab, "good780")))

    # ---- polarity put right: the lock pulls in and railed ends ------------------------------
    t0 = time.monotonic()
    lab.d.ok("set wrong852 polarity 1")
    ok = lab.wait_states("locked", names=["wrong852"], timeout=20)
    ev = lab.events.wait_for(lambda e: [x for x in warnings(lab, "wrong852", t0, e)
                                        if x[1] == "none"], 5.0)
    st = lab.d.status("wrong852")["wrong852"]
    tap.ok(ok and ev and st.get("railed") == "none" and 5.0 < float(st["piezo_v"]) < 9.5,
           "polarity put right: locked at %s V, '* warning ... railed=none' (%.2f s after)"
           % (st["piezo_v"], ev[0][0] - t0 if ev else -1), (st, warnings(lab, "wrong852", t0)))

    # ---- wrong again: railed again; unlock ends it at once ---------------------------------------
    t1 = time.monotonic()
    lab.d.ok("set wrong852 polarity -1")
    ev = lab.events.wait_for(lambda e: [x for x in warnings(lab, "wrong852", t1, e)
                                        if x[1] != "none"], 10.0)
    st = lab.d.status("wrong852")["wrong852"]
    tap.ok(ev and st.get("railed") in ("piezo_low", "piezo_high"),
           "polarity wrong again while locked: railed=%s (%.2f s after the change)"
           % (st.get("railed"), ev[0][0] - t1 if ev else -1), (st, warnings(lab, "wrong852", t1)))
    t2 = time.monotonic()
    lab.d.ok("unlock wrong852")
    ev = lab.events.wait_for(lambda e: [x for x in warnings(lab, "wrong852", t2, e)
                                        if x[1] == "none"], 2.0)
    st = lab.d.status("wrong852")["wrong852"]
    tap.ok(ev and st.get("railed") == "none" and st["state"] == "off",
           "unlock: railed=none at once, with its event (%.3f s)" % (ev[0][0] - t2 if ev else -1),
           (st, warnings(lab, "wrong852", t2)))
    tap.ok(not warnings(lab, "good780"), "good780 never got a warning event")

    lab.close()
    rc_d = lab.daemon.stop()
    rc_s = lab.simproc.stop()
    tap.ok(rc_d == 0 and rc_s == 0, "both programs exit 0 on SIGTERM (%s, %s)" % (rc_d, rc_s),
           lab.outputs())

tap.done()
