#!/usr/bin/env python3
"""A hostile "peer" for tests/fed_limits.sh: it accepts TCP and never completes a handshake.

Usage: stub_peer.py silent|trickle DIR. Listens on 127.0.0.1:0, writes the port to DIR/port and
appends "open" and "close" lines to DIR/events as connections come and go (a close is the relay
giving up). silent: reads what comes, never sends. trickle: sends a handshake length prefix of
1024 bytes, then one byte every 0.5 s, so the relay's inactivity timeout never fires.
"""
import os
import selectors
import socket
import sys
import time

mode, d = sys.argv[1], sys.argv[2]
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
ls.setblocking(False)
with open(os.path.join(d, "port.new"), "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(os.path.join(d, "port.new"), os.path.join(d, "port"))


def event(what):
    with open(os.path.join(d, "events"), "a") as f:
        f.write(what + "\n")


sel = selectors.DefaultSelector()
sel.register(ls, selectors.EVENT_READ)
conns = []
next_drip = time.monotonic()
while True:
    for key, _ in sel.select(timeout=0.1):
        if key.fileobj is ls:
            c, _ = ls.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            conns.append(c)
            event("open")
            if mode == "trickle":
                c.send(b"\x04\x00")
        else:
            c = key.fileobj
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                sel.unregister(c)
                conns.remove(c)
                c.close()
                event("close")
    if mode == "trickle" and time.monotonic() >= next_drip:
        next_drip = time.monotonic() + 0.5
        for c in conns:
            try:
                c.send(b"\x00")
            except OSError:
                pass
