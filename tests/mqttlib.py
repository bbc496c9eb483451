"""mqttlib - a real mosquitto broker and its command-line clients for the
MQTT tests (Debian: mosquitto, mosquitto-clients).

    b = Broker(env)                          # free 127.0.0.1 port, password + ACL files
    sub = Sub(b, "wavelock/#", user="bob")   # background mosquitto_sub, lines recorded
    pub(b, "wavelock/lab1/cmd", "status", user="alice", version=5)
    lab = mqtt_lab(env, b, "lab1", commands=True)   # sim + wavelockd with an mqtt group

Users: alice may read and write wavelock/#, bob may only read it, wl is the
daemons' own user (read and write).
"""

import json
import os
import pwd
import shutil
import subprocess
import threading
import time

from lablib import Lab, SIM_CONF
from wltest import port_open, wait_until

USERS = {"alice": "apass", "bob": "bpass", "wl": "wpass"}
ACL = """user alice
topic readwrite wavelock/#
user bob
topic read wavelock/#
user wl
topic readwrite wavelock/#
"""


def missing():
    """The programs these tests need that are not installed."""
    return [p for p in ("mosquitto", "mosquitto_sub", "mosquitto_pub", "mosquitto_passwd",
                        "mosquitto_rr", "openssl")
            if not shutil.which(p) and not os.path.exists("/usr/sbin/" + p)]


def _mosquitto():
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """mosquitto on 127.0.0.1 with a password file and an ACL file; tls =
    (cafile, certfile, keyfile) adds a TLS listener on tls_port."""

    def __init__(self, env, tls=None, name="broker"):
        self.env = env
        self.name = name
        self.port = env.free_port()
        self.tls_port = env.free_port() if tls else None
        pw = env.path("%s.passwd" % name)
        first = True
        for u, p in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if first else []) + [pw, u, p],
                           check=True, capture_output=True)
            first = False
        acl = env.write("%s.acl" % name, ACL)
        # as root mosquitto would become user mosquitto, which cannot read
        # the test's private directory: stay who we are
        conf = ["user %s" % pwd.getpwuid(os.getuid()).pw_name,
                "per_listener_settings false", "allow_anonymous false",
                "password_file %s" % pw, "acl_file %s" % acl, "persistence false",
                "log_dest stdout", "log_type error", "log_type warning", "log_type notice",
                "listener %d 127.0.0.1" % self.port]
        if tls:
            conf += ["listener %d 127.0.0.1" % self.tls_port, "cafile %s" % tls[0],
                     "certfile %s" % tls[1], "keyfile %s" % tls[2]]
        self.conf = env.write("%s.conf" % name, "\n".join(conf) + "\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = self.env.start("mosquitto", [_mosquitto(), "-c", self.conf])
        if not wait_until(lambda: port_open(self.port) or not self.proc.alive(), 10):
            raise RuntimeError("mosquitto did not start:\n" + self.proc.output())
        if not self.proc.alive():
            raise RuntimeError("mosquitto did not start:\n" + self.proc.output())

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def url(self, tls=False):
        return "mqtt%s://127.0.0.1:%d" % ("s" if tls else "", self.tls_port if tls else self.port)


def client_args(b, user, version=5, port=None):
    return ["-h", "127.0.0.1", "-p", str(port or b.port), "-u", user, "-P", USERS[user],
            "-V", {5: "5", 4: "311"}[version]]


class Sub:
    """mosquitto_sub in the background: lines (topic, retained, payload) with
    arrival times.  fmt: mosquitto_sub's -F format."""

    def __init__(self, b, *topics, user="bob", version=5, retained_only=False,
                 fmt="%t %r %p"):
        argv = ["mosquitto_sub"] + client_args(b, user, version) + ["-F", fmt]
        if retained_only:
            argv.append("--retained-only")
        for t in topics:
            argv += ["-t", t]
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.lines = []
        self.lock = threading.Lock()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append((time.monotonic(), line))

    def since(self, t0=0.0):
        with self.lock:
            return [l for t, l in self.lines if t >= t0]

    def messages(self, t0=0.0):
        """[(topic, retained, payload)] of lines in the default format."""
        out = []
        for line in self.since(t0):
            parts = line.split(" ", 2)
            if len(parts) == 3:
                out.append((parts[0], parts[1] == "1", parts[2]))
        return out

    def close(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.th.join(2)


def retained(b, topic, user="bob", timeout=5):
    """{topic: payload} of the retained messages under topic now."""
    s = Sub(b, topic, user=user, retained_only=True)
    time.sleep(0.2)
    # --retained-only exits at the first live message; a quiet pause ends it too
    last = -1
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = len(s.since())
        if n == last and n > 0:
            break
        last = n
        time.sleep(0.4)
    s.close()
    return {t: p for t, r, p in s.messages() if r}


def pub(b, topic, payload, user="alice", version=5, extra=(), file=None):
    """mosquitto_pub one message (payload str or bytes; bytes go through a file)."""
    argv = ["mosquitto_pub"] + client_args(b, user, version) + ["-t", topic] + list(extra)
    if file is not None:
        argv += ["-f", file]
    else:
        argv += ["-m", payload]
    return subprocess.run(argv, capture_output=True, timeout=10)


def mqtt_group(url, instance, user="wl", password_file=None, commands=False, extra=""):
    return ('mqtt = { url = "%s"; instance = "%s"; username = "%s"; password_file = "%s"; '
            'commands = %s; %s };\n' % (url, instance, user, password_file,
                                        "true" if commands else "false", extra))


def mqtt_lab(env, b, instance, commands=False, seed=1, extra="", url=None):
    """A simulated lab (conf/sim.conf) whose daemon publishes as instance.
    The broker is named localhost in the url (the lab's port rewriting
    changes every 127.0.0.1 port); set_mqtt() changes the group for a
    reload."""
    pwf = env.write("wl.password", USERS["wl"] + "\n")
    group = mqtt_group(url or b.url().replace("127.0.0.1", "localhost"), instance,
                       password_file=pwf, commands=commands, extra=extra)
    with open(SIM_CONF) as f:
        text = f.read()
    conf = env.write("%s-base.conf" % instance, text + "\n" + group)
    lab = Lab(env, seed=seed, conf=conf, events=False, name=instance)
    lab.mqtt_group = group
    return lab


def set_mqtt(lab, group):
    """Replace the lab's mqtt group line (group "" removes it)."""
    with open(lab.conf) as f:
        lines = f.read().split("\n")
    lines = [l for l in lines if not l.startswith("mqtt = {")]
    with open(lab.conf, "w") as f:
        f.write("\n".join(lines) + "\n" + group)


def stats(lab):
    """The daemon's stats lines merged into one dict."""
    out = {}
    for line in lab.d.ok("stats"):
        for w in line.split():
            if "=" in w:
                k, v = w.split("=", 1)
                out[k] = v
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def readings_by_laser(msgs, instance):
    out = {}
    pre = "wavelock/%s/laser/" % instance
    for t, r, p in msgs:
        if t.startswith(pre) and t.endswith("/reading"):
            try:
                out.setdefault(t[len(pre):-len("/reading")], []).append(json.loads(p))
            except ValueError:
                pass
    return out
