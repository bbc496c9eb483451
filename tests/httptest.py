"""httptest - small HTTP helpers for wavelockd's HTTP tests (stdlib only)."""

import http.client
import json
import socket
import threading
import time


def request(port, method, path, body=None, headers=None, host="127.0.0.1", timeout=10,
            source=None):
    """(status, headers dict (lower-case names), body bytes); source: a
    local address to send from (e.g. "127.0.0.7": another loopback peer)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, data


def get_json(port, path, headers=None):
    st, _, data = request(port, "GET", path, headers=headers)
    return st, (json.loads(data) if data else None)


class EventStream:
    """A background reader of /api/events: keeps (monotonic t, event, data)."""

    def __init__(self, port, headers=None, source=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0) if source else None)
        h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s"
                           "Accept: text/event-stream\r\n\r\n" % (port, h)).encode())
        self.events = []
        self.status = None
        self.closed = False
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        buf = b""
        head_done = False
        self.sock.settimeout(0.5)
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if not head_done:
                if b"\r\n\r\n" not in buf:
                    continue
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.status = int(head.split()[1])
                head_done = True
            # chunked transfer: strip chunk-size lines by parsing the stream
            text = buf
            out = b""
            while True:
                i = text.find(b"\r\n")
                if i < 0:
                    break
                try:
                    n = int(text[:i], 16)
                except ValueError:
                    break
                if len(text) < i + 2 + n + 2:
                    break
                out += text[i + 2:i + 2 + n]
                text = text[i + 2 + n + 2:]
            buf = text
            self._feed(out)
        self.closed = True

    _pending = b""

    def _feed(self, data):
        self._pending += data
        while b"\n\n" in self._pending:
            block, self._pending = self._pending.split(b"\n\n", 1)
            ev, payload = "message", None
            for line in block.decode("utf-8", "replace").split("\n"):
                if line.startswith("event: "):
                    ev = line[7:]
                elif line.startswith("data: "):
                    payload = line[6:]
            if payload is not None:
                with self.lock:
                    self.events.append((time.monotonic(), ev, json.loads(payload)))

    def of(self, kind):
        with self.lock:
            return [e for e in self.events if e[1] == kind]

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def chromium(tap, what, height, performance_log=False):
    """(driver, By) of a headless Chromium through chromedriver (Debian's
    chromium, chromium-driver and python3-selenium), window 1400 x height;
    performance_log keeps the network log (to list requests).  Where
    Selenium is missing or Chromium cannot start, the test is skipped with
    the reason (tap.skip on what) and ends here."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError as e:
        tap.skip(what, "python3-selenium missing (scripts/deps.sh): %s" % e)
        tap.done()
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,%d" % height, "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-sync",
              "--disable-component-update", "--disable-default-apps"):
        o.add_argument(a)
    if performance_log:
        o.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o), By
    except Exception as e:   # no binary, a driver that does not match
        tap.skip(what, "Chromium/chromedriver cannot start: %s" %
                 (str(e).splitlines()[0] if str(e) else type(e).__name__))
        tap.done()
