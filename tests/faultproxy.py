#!/usr/bin/env python3
"""faultproxy.py - a TCP proxy for get tests that breaks connections on a plan.

Usage: faultproxy.py UPSTREAM-PORT DIR. Listens on 127.0.0.1:0, writes its port to DIR/port and
forwards every connection to 127.0.0.1:UPSTREAM-PORT. A script writes a plan to DIR/plan
(atomically: write aside and rename), taken by the next connections as they are accepted:
  cut BYTES [N]    the next N (default 1) connections are closed after BYTES upstream-to-client
                   bytes (DIR/cuts counts the cuts made); the close is a FIN, and the proxy
                   reads the client's side until it closes too, so the client gets every
                   byte up to the cut on any machine (a reset would drop what it has not read)
  outage BYTES     as cut, and then DIR/down is created: while it exists, every connection is
                   closed as soon as it is accepted (DIR/refused counts them), as when the
                   relay is away; the script removes it to end the outage
  stall BYTES      the next connection forwards nothing more after BYTES upstream-to-client
                   bytes and stays open until the client closes it (DIR/stalled then exists)
DIR/rate, when it exists when a connection is accepted, holds bytes per second: that connection's
upstream-to-client bytes are paced at that rate (so a small file takes long enough on loopback
for every connection a get opens to be open at once).
DIR/max_open is the most connections open at once since the file was last removed (a script
removes it before the run it measures); DIR/accepted counts the connections.
"""
import os
import socket
import time
import sys
import threading

up_port = int(sys.argv[1])
d = sys.argv[2]
lock = threading.Lock()
st = {"open": 0, "max": 0, "accepted": 0, "cuts": 0}


def put(name, value):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % value)
    os.replace(tmp, os.path.join(d, name))


def take_plan():
    """This connection's fault from DIR/plan, or None (called under lock)."""
    path = os.path.join(d, "plan")
    try:
        with open(path) as f:
            words = f.read().split()
    except FileNotFoundError:
        return None
    if len(words) < 2:
        return None
    left = int(words[2]) if len(words) > 2 else 1
    if left <= 1:
        os.unlink(path)
    else:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%s %s %d\n" % (words[0], words[1], left - 1))
        os.replace(tmp, path)
    return words[0], int(words[1])


def opened(delta):
    with lock:
        st["open"] += delta
        if not os.path.exists(os.path.join(d, "max_open")):
            st["max"] = 0
        if st["open"] > st["max"]:
            st["max"] = st["open"]
            put("max_open", st["max"])


def serve(down, fault, rate):
    up = socket.create_connection(("127.0.0.1", up_port))
    opened(1)
    left = fault[1] if fault else -1
    stalled = False
    try:
        import select
        while True:
            socks = [down] if stalled else [down, up]
            r, _, _ = select.select(socks, [], [])
            if down in r:
                b = down.recv(65536)
                if not b:
                    break
                if not stalled:
                    up.sendall(b)
            if up in r and not stalled:
                b = up.recv(65536 if left < 0 else min(65536, left))
                if not b:
                    break
                down.sendall(b)
                if rate:
                    time.sleep(len(b) / rate)
                if left > 0:
                    left -= len(b)
                    if left == 0 and fault[0] in ("cut", "outage"):
                        with lock:
                            st["cuts"] += 1
                            put("cuts", st["cuts"])
                            if fault[0] == "outage":
                                open(os.path.join(d, "down"), "w").close()
                        up.close()
                        down.shutdown(socket.SHUT_WR)
                        while down.recv(65536):
                            pass
                        break
                    if left == 0 and fault[0] == "stall":
                        stalled = True
                        open(os.path.join(d, "stalled"), "w").close()
    except OSError:
        pass
    finally:
        down.close()
        up.close()
        opened(-1)


def main():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    put("port", ls.getsockname()[1])
    while True:
        c, _ = ls.accept()
        with lock:
            if os.path.exists(os.path.join(d, "down")):
                st["refused"] = st.get("refused", 0) + 1
                put("refused", st["refused"])
                c.close()
                continue
            st["accepted"] += 1
            put("accepted", st["accepted"])
            fault = take_plan()
            try:
                with open(os.path.join(d, "rate")) as f:
                    rate = int(f.read())
            except FileNotFoundError:
                rate = 0
        threading.Thread(target=serve, args=(c, fault, rate), daemon=True).start()


if __name__ == "__main__":
    main()
