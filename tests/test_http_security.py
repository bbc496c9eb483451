#!/usr/bin/env python3
"""wavelockd's HTTP face under attack and load (wavelockd + wavelock-sim on
conf/sim.conf with a monitor and a control token):
  - failed token attempts: after three from one address, token checks from
    it are refused (429) for 2 s (doubling), other addresses are served;
  - every endpoint per role: no credentials and a wrong token 401, the
    monitor token 403 for every change, the control token allowed; the
    same through the session cookie (POST /api/session), which ends with
    DELETE /api/session; the page itself is public (it holds no data);
  - a cross-site POST (Origin, Sec-Fetch-Site) and a form POST are refused
    even with a control session, and change nothing;
  - oversized headers and bodies are refused, the daemon serves on;
  - path traversal (plain, percent-encoded, in a laser name) is refused;
  - 1000 keep-alive HTTP connections and 200 event-stream readers are held
    at once, the daemon's resident memory grows by less than 64 MiB
    (printed), status and the text protocol still answer, readers all get
    events;
  - a reader that never reads: its events are dropped (counted) once
    HTP_EVENTS_MAX is buffered and it is closed when its output has made no
    progress for HTP_STALL_S (30 s); memory stays bounded meanwhile."""

import json
import resource
import socket
import time


import wltest
from wltest import TAP, Env, wait_until
from lablib import Lab, SIM_CONF, programs_missing
from httptest import EventStream, request

tap = TAP()
why = programs_missing()
if why:
    tap.skip("http security", why)
    tap.done()

CONTROL = "ctl-sec-5c0d1f2a9b"
MONITOR = "mon-sec-77e2a1c4d0"
N_CONN, N_READERS, RSS_BOUND_MB = 1000, 200, 64


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return True
    if hard != resource.RLIM_INFINITY and hard < want:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return True


sanitized = wltest.sanitized


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def bearer(tok):
    return {"Authorization": "Bearer " + tok} if tok else {}


def raw(port, data, timeout=5):
    """Send raw bytes, return everything until the peer closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            c = s.recv(65536)
        except OSError:
            break
        if not c:
            break
        out += c
        if b"\r\n\r\n" in out and b"Content-Length: " in out:
            head, body = out.split(b"\r\n\r\n", 1)
            n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(body) >= n:
                break
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


raise_fd_limit(4096)
with Env() as env:
    with open(SIM_CONF) as f:
        text = f.read()
    text = text.replace("  max_clients = 64;\n", '  max_clients = 64;\n  tokens = ( '
                        '{ secret = "%s"; role = "control"; }, { secret = "%s"; '
                        'role = "monitor"; } );\n' % (CONTROL, MONITOR), 1)
    text = text.replace('listen = [ "127.0.0.1:7471" ];',
                        'listen = [ "127.0.0.1:7471" ]; max_event_readers = 400;', 1)
    lab = Lab(env, seed=7, conf=env.write("sec.conf", text), events=False)
    lab.d.cmd("auth " + CONTROL)
    hp = lab.ports[7471]
    pid = lab.daemon.pid

    reads = [("GET", "/api/status", None), ("GET", "/metrics", None)]
    changes = [("POST", "/api/lasers/cool780/lock", "{}"),
               ("POST", "/api/lasers/cool780/unlock", "{}"),
               ("POST", "/api/lasers/cool780/hold", "{}"),
               ("POST", "/api/lasers/cool780/resume", "{}"),
               ("PUT", "/api/lasers/cool780/setpoint", '{"value": "+1", "unit": "MHz"}')]

    def events_status(headers, source=None):
        ev = EventStream(hp, headers, source)
        wait_until(lambda: ev.status is not None or ev.closed, 5)
        st = ev.status
        ev.close()
        return st

    # (wrong tokens from a loopback address each, as one peer is refused
    # token checks after three failures)
    for who, hdr in (("no credentials", {}), ("a wrong token", bearer("nope-123"))):
        src = iter("127.0.0.%d" % i for i in range(10, 40))
        got = [request(hp, m, p, body=b, headers=hdr, source=next(src))[0]
               for m, p, b in reads + changes]
        got.append(events_status(hdr, next(src)))
        tap.ok(all(g == 401 for g in got), "%s: 401 on every endpoint" % who, got)

    # failed attempts: the fourth from one peer is refused (429) even with the
    # right token, others are served, and after the delay it works again
    got = [request(hp, "GET", "/api/status", headers=bearer("guess-%d" % i),
                   source="127.0.0.50")[0] for i in range(3)]
    got.append(request(hp, "GET", "/api/status", headers=bearer(MONITOR), source="127.0.0.50")[0])
    got.append(request(hp, "POST", "/api/session", body={"token": MONITOR},
                       source="127.0.0.50")[0])
    other = request(hp, "GET", "/api/status", headers=bearer(MONITOR), source="127.0.0.51")[0]
    tap.ok(got == [401, 401, 401, 429, 429] and other == 200,
           "three wrong tokens: that peer is refused (429) even with the right one, "
           "another peer is served", (got, other))
    time.sleep(2.2)
    tap.eq(request(hp, "GET", "/api/status", headers=bearer(MONITOR), source="127.0.0.50")[0],
           200, "after the delay (2 s) the right token works again")
    mon = bearer(MONITOR)
    got = [request(hp, m, p, body=b, headers=mon)[0] for m, p, b in reads]
    tap.ok(got == [200, 200] and events_status(mon) == 200, "monitor: reads allowed", got)
    sp0 = lab.d.cmd("setpoint cool780")[0]
    got = [request(hp, m, p, body=b, headers=mon)[0] for m, p, b in changes]
    tap.ok(all(g == 403 for g in got) and lab.d.cmd("setpoint cool780")[0] == sp0,
           "monitor: 403 on every change, nothing changed", got)
    ctl = bearer(CONTROL)
    got = [request(hp, m, p, body=b, headers=ctl)[0] for m, p, b in reads]
    tap.ok(got == [200, 200] and events_status(ctl) == 200, "control: reads allowed", got)
    got = {p.rsplit("/", 1)[1]: request(hp, m, p, body=b, headers=ctl)[0] for m, p, b in changes}
    tap.ok(got["lock"] == 204 and got["unlock"] == 204 and got["setpoint"] == 204 and
           got["hold"] in (204, 404) and got["resume"] in (204, 404),
           "control: changes allowed (hold/resume 404 without the commands)", got)
    request(hp, "POST", "/api/lasers/cool780/lock", body="{}", headers=ctl)
    tap.eq(request(hp, "GET", "/")[0], 200, "the page itself is public (no data in it)")

    # sessions
    st, h, body = request(hp, "POST", "/api/session", body={"token": MONITOR})
    cookie = h.get("set-cookie", "")
    tap.ok(st == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie and
           MONITOR not in cookie, "a session cookie: HttpOnly, SameSite=Strict, no token in it",
           cookie)
    mc = {"Cookie": cookie.split(";")[0]}
    got = [request(hp, "GET", "/api/status", headers=mc)[0],
           request(hp, "POST", "/api/lasers/cool780/unlock", body="{}", headers=mc)[0]]
    tap.eq(got, [200, 403], "monitor session: reads 200, changes 403")
    st, h, _ = request(hp, "POST", "/api/session", body={"token": CONTROL})
    cc = {"Cookie": h.get("set-cookie", "").split(";")[0]}
    tap.eq(request(hp, "POST", "/api/lasers/cool780/lock", body="{}", headers=cc)[0], 204,
           "control session: changes 204")
    tap.eq(request(hp, "POST", "/api/session", body={"token": "wrong"}, source="127.0.0.60")[0],
           401, "a session for a wrong token: 401")
    tap.eq(request(hp, "GET", "/api/status", headers={"Cookie": "wlsession=" + "ab" * 32})[0],
           401, "a made-up session cookie: 401")

    # cross-site
    state0 = lab.d.states()["cool780"]
    got = [request(hp, "POST", "/api/lasers/cool780/unlock", body="{}",
                   headers=dict(cc, Origin="http://evil.example"))[0],
           request(hp, "POST", "/api/lasers/cool780/unlock", body="{}",
                   headers=dict(cc, **{"Sec-Fetch-Site": "cross-site"}))[0],
           request(hp, "POST", "/api/lasers/cool780/unlock", body="x=1",
                   headers=dict(cc, **{"Content-Type": "application/x-www-form-urlencoded"}))[0],
           request(hp, "POST", "/api/lasers/cool780/unlock", body="{}",
                   headers=dict(cc, **{"Content-Type": "text/plain"}))[0]]
    tap.ok(got[:2] == [403, 403] and got[2:] == [415, 415] and
           lab.d.states()["cool780"] == state0,
           "cross-site and form POSTs are refused with a control session, nothing changes", got)
    tap.eq(request(hp, "POST", "/api/lasers/cool780/lock", body="{}",
                   headers=dict(cc, Origin="http://127.0.0.1:%d" % hp))[0], 204,
           "a POST from the page's own origin is allowed")
    tap.eq(request(hp, "DELETE", "/api/session", headers=dict(cc, **{"Content-Type":
                                                                     "application/json"}))[0],
           204, "DELETE /api/session")
    tap.eq(request(hp, "GET", "/api/status", headers=cc)[0], 401, "the ended session is refused")

    # sizes
    big = raw(hp, b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
              + CONTROL.encode() + b"\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
    tap.ok(status_of(big) in (0, 400, 413, 431) and status_of(big) != 200,
           "oversized headers refused (%s)" % (status_of(big) or "closed"))
    body = json.dumps({"value": "+1", "unit": "MHz", "pad": "x" * 10000})
    st, _, _ = request(hp, "PUT", "/api/lasers/cool780/setpoint", body=body, headers=ctl)
    tap.ok(st in (400, 413), "an oversized body refused (%d)" % st)
    tap.eq(request(hp, "GET", "/api/status", headers=ctl)[0], 200, "and the daemon serves on")

    # traversal
    paths = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/../../etc/passwd",
             "/api/lasers/..%2f..%2fetc%2fpasswd/lock", "//etc/passwd", "/api/lasers/../lock",
             "/index.html/../../etc/passwd", "/.%2e/metrics"]
    got = []
    for p in paths:
        r = raw(hp, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                     "Connection: close\r\n\r\n" % (p, CONTROL)).encode())
        got.append((p, status_of(r), b"root:" in r))
    tap.ok(all(s in (400, 404, 405) and not leak for _, s, leak in got),
           "path traversal refused (%d paths)" % len(paths), got)

    # many connections and readers
    rss0 = rss_kb(pid)
    conns = []
    req = ("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
           % (hp, MONITOR)).encode()
    t0 = time.monotonic()
    for i in range(N_CONN):
        s = socket.create_connection(("127.0.0.1", hp), timeout=10)
        s.sendall(req)
        conns.append(s)
    answered = 0
    for s in conns:
        data = b""
        while b"\r\n\r\n" not in data:
            c = s.recv(65536)
            if not c:
                break
            data += c
        if data.startswith(b"HTTP/1.1 200"):
            answered += 1
            head, rest = data.split(b"\r\n\r\n", 1)
            n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            while len(rest) < n:
                rest += s.recv(65536)
    tap.eq(answered, N_CONN, "%d keep-alive connections each got its status (%.1f s)"
           % (N_CONN, time.monotonic() - t0))
    readers = [EventStream(hp, mon) for _ in range(N_READERS)]
    wait_until(lambda: all(len(r.of("reading")) >= 5 for r in readers), 30)
    fed = sum(len(r.of("reading")) >= 5 for r in readers)
    tap.eq(fed, N_READERS, "%d event-stream readers all get readings" % N_READERS)
    rss1 = rss_kb(pid)
    st, _, _ = request(hp, "GET", "/api/status", headers=mon)
    tap.ok(st == 200 and lab.d.cmd("ping")[-1] == "OK",
           "status and the text protocol answer meanwhile")
    tap.diag("daemon RSS %.1f MiB before, %.1f MiB with %d connections and %d readers "
             "(+%.1f MiB)" % (rss0 / 1024, rss1 / 1024, N_CONN, N_READERS, (rss1 - rss0) / 1024))
    if sanitized():
        tap.skip("memory grows by less than %d MiB" % RSS_BOUND_MB, sanitized())
    else:
        tap.ok(rss1 - rss0 < RSS_BOUND_MB * 1024,
               "memory grows by less than %d MiB" % RSS_BOUND_MB)
    for r in readers:
        r.close()
    for s in conns:
        s.close()

    # a reader that never reads
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", hp))
    s.sendall(("GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
               % (hp, MONITOR)).encode())
    t0 = time.monotonic()

    def http_stats():
        _, d = request(hp, "GET", "/api/status", headers=mon)[0], json.loads(
            request(hp, "GET", "/api/status", headers=mon)[2])
        return d["http"]
    rss_a = rss_kb(pid)
    wait_until(lambda: http_stats()["events_dropped"] > 0, 60, 0.5)
    dropped_at = time.monotonic() - t0
    rss_b = rss_kb(pid)
    tap.ok(http_stats()["events_dropped"] > 0,
           "a stalled reader's events are dropped once its buffer is full (after %.1f s)"
           % dropped_at)
    wait_until(lambda: http_stats()["event_readers"] == 0, 60, 0.5)
    tap.ok(http_stats()["event_readers"] == 0,
           "the stalled reader is closed (after %.1f s)" % (time.monotonic() - t0))
    tap.diag("stalled reader: RSS %.1f -> %.1f MiB while dropping" % (rss_a / 1024, rss_b / 1024))
    if sanitized():
        tap.skip("memory stays bounded meanwhile", sanitized())
    else:
        tap.ok(rss_b - rss_a < 8 * 1024, "memory stays bounded meanwhile")
    s.close()
    tap.ok(lab.alive(), "the daemon runs on")
    lab.close()
tap.done()
