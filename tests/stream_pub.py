#!/usr/bin/env python3
"""stream_pub.py - a wavemeter stream publisher double for wavelock's tests.

Listens on 127.0.0.1 and sends lines of the DESIGN.md section 5 format
("<channel> <value> [<time_ms>]") -- and deliberately broken ones -- to every
connected client, as told by commands on standard input.  Each command is
answered with one line on standard output starting with "ok" (or "err"),
flushed, so a test can wait for it.

    stream_pub.py [--port N] [--port-file FILE]
        prints "listening 127.0.0.1:PORT" once bound (port 0: any free port)

Commands:
    reading CH VALUE [TIME_MS]   send "CH VALUE TIME_MS" (VALUE printed as given)
    send TEXT                    send TEXT and a newline (TEXT may be empty)
    sendraw HEX                  send these bytes as they are (no newline added)
    long N                       send a line of N 'x' bytes and a newline
    longchunks N [PIECES]        the same line in PIECES writes (default 10), 20 ms apart
    periodic CH THZ HZ           start sending readings of CH at HZ (time_ms counts up)
    periodic off                 stop every periodic sender
    drop                         close every client connection (keep listening)
    down                         close the listener and every connection
    up                           listen again on the same port
    clients                      "ok clients N"
    wait-clients N [TIMEOUT_S]   "ok clients N" once at least N are connected, else "err timeout"
    quit                         exit
"""

import argparse
import socket
import sys
import threading
import time


class Publisher:
    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.clients = []
        self.listener = None
        self.periodic = []
        self.t0 = time.monotonic()

    def listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self.accept_loop, args=(s,), daemon=True).start()

    def accept_loop(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                if self.listener is not s:
                    c.close()
                    return
                self.clients.append(c)
                self.cond.notify_all()

    def send(self, data):
        with self.lock:
            alive = []
            for c in self.clients:
                try:
                    c.sendall(data)
                    alive.append(c)
                except OSError:
                    c.close()
            self.clients = alive
            return len(alive)

    def drop(self):
        with self.lock:
            for c in self.clients:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.clients = []

    def down(self):
        with self.lock:
            s, self.listener = self.listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.drop()

    def count(self):
        with self.lock:
            return len(self.clients)

    def wait_clients(self, n, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.clients) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def start_periodic(self, ch, thz, hz):
        stop = threading.Event()

        def run():
            period = 1.0 / hz
            n = 0
            while not stop.wait(period):
                n += 1
                ms = int((time.monotonic() - self.t0) * 1000)
                self.send(("%d %.9f %d\n" % (ch, thz, ms)).encode())

        threading.Thread(target=run, daemon=True).start()
        self.periodic.append(stop)

    def stop_periodic(self):
        for stop in self.periodic:
            stop.set()
        self.periodic = []


def reply(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def command(pub, line):
    words = line.split()
    if not words:
        return True
    cmd, args = words[0], words[1:]
    try:
        if cmd == "reading":
            text = " ".join(args[:3])
            n = pub.send((text + "\n").encode())
            reply("ok sent %d" % n)
        elif cmd == "send":
            text = line.split(None, 1)[1] if len(words) > 1 else ""
            n = pub.send((text + "\n").encode())
            reply("ok sent %d" % n)
        elif cmd == "sendraw":
            n = pub.send(bytes.fromhex(args[0]))
            reply("ok sent %d" % n)
        elif cmd == "long":
            pub.send(b"x" * int(args[0]) + b"\n")
            reply("ok long")
        elif cmd == "longchunks":
            total = int(args[0])
            pieces = int(args[1]) if len(args) > 1 else 10
            size = max(1, total // pieces)
            sent = 0
            while sent < total:
                k = min(size, total - sent)
                pub.send(b"y" * k)
                sent += k
                time.sleep(0.02)
            pub.send(b"\n")
            reply("ok longchunks")
        elif cmd == "periodic":
            if args and args[0] == "off":
                pub.stop_periodic()
            else:
                pub.start_periodic(int(args[0]), float(args[1]), float(args[2]))
            reply("ok periodic")
        elif cmd == "drop":
            pub.drop()
            reply("ok drop")
        elif cmd == "down":
            pub.down()
            reply("ok down")
        elif cmd == "up":
            if pub.listener is None:
                pub.listen()
            reply("ok up")
        elif cmd == "clients":
            reply("ok clients %d" % pub.count())
        elif cmd == "wait-clients":
            n = int(args[0])
            timeout = float(args[1]) if len(args) > 1 else 10.0
            if pub.wait_clients(n, timeout):
                reply("ok clients %d" % pub.count())
            else:
                reply("err timeout clients %d" % pub.count())
        elif cmd == "quit":
            reply("ok quit")
            return False
        else:
            reply("err unknown command %s" % cmd)
    except (IndexError, ValueError, OSError) as e:
        reply("err %s" % e)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    opts = ap.parse_args()
    pub = Publisher(opts.port)
    pub.listen()
    if opts.port_file:
        with open(opts.port_file, "w") as f:
            f.write("%d\n" % pub.port)
    reply("listening 127.0.0.1:%d" % pub.port)
    for line in sys.stdin:
        if not command(pub, line.rstrip("\r\n")):
            break
    else:
        # End of input: keep serving until killed (tests stop us by PID).
        while True:
            time.sleep(3600)
    pub.down()


if __name__ == "__main__":
    main()
