#!/usr/bin/env python3
"""flakyproxy — a TCP relay for test scripts that breaks the links it carries at byte counts.

Usage: flakyproxy.py UPSTREAM-PORT DIR MODE N [K]
Listens on 127.0.0.1:0, writes its port to DIR/port, forwards each connection to
127.0.0.1:UPSTREAM-PORT. Counted are the bytes clients send (all connections together):
  cut N [K]  after N bytes, reset every connection open (RST); again every N bytes after that,
             K times in all (default 1). DIR/cuts holds how many cuts were made.
  stall N K  after N bytes of connection number K (0: the first accepted), stop forwarding that
             connection either way without closing it; DIR/stalled appears.
  deaf N     after N bytes, drop what the relay sends (its acknowledgements) but forward what
             clients send; once clients have sent nothing for a second (all they had in flight
             is at the relay), reset every connection, once. DIR/cuts appears then.
  down N     after N bytes, reset every connection, and every one made after at once (the relay
             is gone for good); DIR/refused holds how many connections were refused after.
So "the link went down after N bytes" happens at the same point on any machine.
"""
import os
import select
import socket
import struct
import sys
import threading
import time

up_port, d, mode, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
k = int(sys.argv[5]) if len(sys.argv) > 5 else (0 if mode == "stall" else 1)
lock = threading.Lock()
state = {"deaf": False, "last": 0.0, "total": 0, "next_cut": n, "cuts": 0, "conns": [], "accepted": 0}


def write(name, text):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, name))


def reset(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def serve(client, number):
    if mode == "down":
        with lock:
            down = state["cuts"] > 0
            if down:
                state["refused"] = state.get("refused", 0) + 1
                write("refused", "%d\n" % state["refused"])
        if down:
            reset(client)
            return
    upstream = socket.create_connection(("127.0.0.1", up_port))
    pair = (client, upstream)
    with lock:
        state["conns"].append(pair)
    sent = 0
    stalled = False
    try:
        while True:
            r, _, _ = select.select([client, upstream], [], [], 0.5 if not stalled else 3600)
            if stalled:
                continue
            for s in r:
                data = s.recv(65536)
                if not data:
                    raise OSError("closed")
                other = upstream if s is client else client
                if s is upstream and mode == "deaf" and state["deaf"]:
                    continue
                if s is client:
                    if mode == "stall" and number == k and sent + len(data) >= n:
                        other.sendall(data[: n - sent])
                        stalled = True
                        write("stalled", "1\n")
                        break
                    sent += len(data)
                    with lock:
                        state["total"] += len(data)
                        state["last"] = time.monotonic()
                        if mode == "deaf" and state["cuts"] == 0 and state["total"] >= n:
                            state["deaf"] = True
                        cut = mode in ("cut", "down") and state["cuts"] < k and state["total"] >= state["next_cut"]
                        if cut:
                            state["cuts"] += 1
                            state["next_cut"] = state["total"] + n
                            victims = list(state["conns"])
                            state["conns"].clear()
                            write("cuts", "%d\n" % state["cuts"])
                    if cut:
                        for a, b in victims:
                            reset(a)
                            reset(b)
                        return
                other.sendall(data)
    except OSError:
        pass
    finally:
        with lock:
            if pair in state["conns"]:
                state["conns"].remove(pair)
        reset(client)
        reset(upstream)


def deaf_watch():
    """deaf: the cut, once the clients have had nothing more to send for a second."""
    while True:
        time.sleep(0.1)
        with lock:
            if not state["deaf"] or time.monotonic() - state["last"] < 1.0:
                continue
            state["deaf"] = False
            state["cuts"] = 1
            victims = list(state["conns"])
            state["conns"].clear()
            write("cuts", "1\n")
        for a, b in victims:
            reset(a)
            reset(b)
        return


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    write("port", "%d\n" % ls.getsockname()[1])
    if mode == "deaf":
        threading.Thread(target=deaf_watch, daemon=True).start()
    while True:
        c, _ = ls.accept()
        with lock:
            number = state["accepted"]
            state["accepted"] += 1
        threading.Thread(target=serve, args=(c, number), daemon=True).start()


main()
