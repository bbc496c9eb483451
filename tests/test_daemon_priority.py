#!/usr/bin/env python3
"""Readings and cycle results run ahead of client work, and the fairness
guard keeps clients from starving: 64 lasers cycling as fast as the
publisher can send while 16 connections flood `status`, and fresh clients
still get their `status` answered (src/prio.c)."""

import socket
import threading
import time

from wltest import TAP, Env, ModbusRecorder, StreamPublisher, kv, lab_conf, laser_conf

tap = TAP()
N_LASERS = 64           # the shipped cap (CNF_MAX_CHANNEL)
N_DEVICES = 4
N_FLOOD = 16
FRESH = 20


def flood(port, stop, answered):
    """Keep 32 `status` requests in flight on one connection."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return
    s.settimeout(2.0)
    inflight = 0
    buf = b""
    try:
        while not stop.is_set():
            if inflight < 16:
                s.sendall(b"status\n" * 16)
                inflight += 16
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk
            n = buf.count(b"\nOK\n")
            if n:
                inflight -= n
                answered[0] += n
                buf = buf[buf.rfind(b"\nOK\n") + 4:]
    except OSError:
        pass
    finally:
        s.close()


def publish(pub, stop, sent):
    """All 64 channels every millisecond or so, near the setpoints."""
    t0 = time.monotonic()
    while not stop.is_set():
        t_ms = (time.monotonic() - t0) * 1000.0
        pub.send_raw("".join("%d %.9f %.1f\n" % (ch, 380.0 + ch * 1e-3, t_ms)
                             for ch in range(1, N_LASERS + 1)))
        sent[0] += N_LASERS
        time.sleep(0.001)


def fresh_status(port):
    """Connect, ask `status`, return (seconds, lines) for the whole answer."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.settimeout(30)
    buf = b""
    try:
        while b"\n" not in buf:                 # greeting
            chunk = s.recv(65536)
            if not chunk:
                return None, []
            buf += chunk
        buf = buf.split(b"\n", 1)[1]
        s.sendall(b"status\n")
        while not (buf.startswith(b"OK\n") or b"\nOK\n" in buf or b"ERR" in buf):
            chunk = s.recv(65536)
            if not chunk:
                return None, []
            buf += chunk
    except OSError:
        return None, []
    finally:
        s.close()
    return time.monotonic() - t0, buf.decode("utf-8", "replace").splitlines()


with Env() as env:
    mbs = [ModbusRecorder() for _ in range(N_DEVICES)]
    pub = StreamPublisher()
    lasers = [laser_conf("l%02d" % i, i + 1, 380.0 + (i + 1) * 1e-3, device="ao%d" % (i % N_DEVICES),
                         reg=i // N_DEVICES, pid={"kp": 0.0, "ki": 0.001, "kd": 0.0})
              for i in range(N_LASERS)]
    conf = env.write("prio.conf", lab_conf(lasers, [("ao%d" % i, m.port) for i, m in enumerate(mbs)],
                                            pub.port, server_extra="max_clients = 128;"))
    d = env.start_daemon(conf)
    from wltest import wait_until
    tap.ok(wait_until(lambda: pub.connected() > 0, 10), "the daemon subscribed to the stream")

    stop = threading.Event()
    sent, answered = [0], [0]
    threads = [threading.Thread(target=publish, args=(pub, stop, sent), daemon=True)]
    threads += [threading.Thread(target=flood, args=(d.port, stop, answered), daemon=True)
                for _ in range(N_FLOOD)]
    for t in threads:
        t.start()
    time.sleep(1.0)

    def cycles():
        _, lines = fresh_status(d.port)
        return sum(int(kv(x).get("cycles", 0)) for x in lines if x.startswith("name="))

    times, complete = [], 0
    for i in range(FRESH):
        dt, lines = fresh_status(d.port)
        rows = [x for x in lines if x.startswith("name=")]
        if dt is not None and len(rows) == N_LASERS and lines[-1] == "OK":
            complete += 1
            times.append(dt)
        time.sleep(0.05)
    c0 = None
    dt, lines = fresh_status(d.port)
    if dt is not None:
        c0 = sum(int(kv(x).get("cycles", 0)) for x in lines if x.startswith("name="))
    time.sleep(1.0)
    dt, lines = fresh_status(d.port)
    c1 = None
    if dt is not None:
        c1 = sum(int(kv(x).get("cycles", 0)) for x in lines if x.startswith("name="))
    stop.set()
    for t in threads:
        t.join(5)

    tap.ok(answered[0] > 0, "the flood is answered", "answered %d" % answered[0])
    tap.eq(complete, FRESH, "every fresh client's status answered in full under the flood")
    if times:
        times.sort()
        tap.diag("fresh status under the flood: %d answered, p50 %.1f ms, max %.1f ms; "
                 "flood answered %d status, %d readings sent"
                 % (len(times), 1e3 * times[len(times) // 2], 1e3 * times[-1], answered[0], sent[0]))
    tap.ok(c0 is not None and c1 is not None and c1 > c0,
           "the lasers keep cycling under the flood", "cycles %s -> %s in 1 s" % (c0, c1))
    tap.ok(d.alive(), "the daemon is alive")
    for m in mbs:
        m.close()
    pub.close()
tap.done()
