#!/usr/bin/env bash
# Type=notify without libsystemd: chapard sends READY=1 to $NOTIFY_SOCKET once it listens (when
# its ready file is there), to a socket path and to an abstract-namespace name ("@name"); without
# the variable it starts as before. A stand-in for systemd (python3) binds the socket and reads
# the datagram; it gives up after 30 s, which fails the test (the datagram is the event waited for).
# Usage: notify.sh CHAPARD
set -uo pipefail
chapard=$1
. "$(dirname "$0")/lib.sh"
lib_tmp notify

# $1: the NOTIFY_SOCKET value; binds it, prints "bound", then each datagram received (one line),
# and exits after READY=1 or 30 s
listener() {
        python3 -u - "$1" <<'PY'
import socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + name[1:] if name.startswith("@") else name)
print("bound", flush=True)
s.settimeout(30)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.replace("\n", "|"), flush=True)
        if "READY=1" in msg.split("\n"):
            break
except socket.timeout:
    print("timeout", flush=True)
PY
}

# $1 test name, $2 NOTIFY_SOCKET value
notified() {
        local out=$tmp/$1.out
        listener "$2" >"$out" &
        local lp=$!
        lib_track $lp
        wait_file "$out" bound
        NOTIFY_SOCKET=$2 relay_start "$1"
        local started=$?
        wait $lp
        check "$1: READY=1 received, after the ready file ($(tr '\n' ' ' <"$out"))" \
                "[ $started -eq 0 ] && grep -qx 'READY=1' '$out'"
        relay_stop "$1"
        local rc=$?
        check "$1: the relay then stops cleanly (exit $rc)" "[ $rc -eq 0 ]"
}

notified path "$tmp/notify.sock"
notified abstract "@chapar-notify-test-$$"

unset NOTIFY_SOCKET
relay_start plain
check "without NOTIFY_SOCKET the relay starts" "[ -s '$tmp/plain.ready' ]"
NOTIFY_SOCKET=vsock:2:9 relay_start vsock
check "an address it does not speak: the relay starts and says so" \
        "grep -q 'NOTIFY_SOCKET' '$tmp/vsock.log'"
finish
