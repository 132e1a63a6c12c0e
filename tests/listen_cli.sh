#!/usr/bin/env bash
# Two relays never share an address. With relay A running (four threads on port 0, so its threads
# share one kernel-chosen port), a second chapard on A's native address, or on A's HTTP address,
# exits non-zero with an error naming the address ("address in use"), writes no ready file, and
# A keeps answering every connection. The same command run twice (same data directory, same
# ready file) fails the second time without deleting the first relay's ready file.
# Usage: listen_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp listen

relay_start a --threads 4 --log-level info
native=${addr[a]}
web=${http[a]}
check "relay A is up with four threads on $native and $web" "[ -n '$native' ] && [ -n '$web' ]"
# port 0: the four threads' sockets on each face share the one port the kernel chose
listeners() { ss -Hltn "sport = :${1##*:}" | wc -l; }
if command -v ss >/dev/null; then
        check "four listening sockets on A's native port ($(listeners "$native"))" \
                "[ $(listeners "$native") -eq 4 ]"
        check "four listening sockets on A's HTTP port ($(listeners "$web"))" \
                "[ $(listeners "$web") -eq 4 ]"
fi

# Runs a second chapard with the given flags; waits until it exits or (when its ready file is its
# own) writes its ready file, at most 20 s. Sets rc (its exit status, or "running": it was then
# stopped) and wrote (whether its ready file existed before it was stopped); its stderr is left
# in $tmp/b.log.
second() { # ready-file [flags]
        local ready=$1 own=true
        shift
        [ -e "$ready" ] && own=false
        "$chapard" --ready-file "$ready" --log-level info "$@" 2>"$tmp/b.log" &
        local b=$!
        lib_track "$b"
        local end=$((SECONDS + 20))
        while kill -0 "$b" 2>/dev/null && [ $SECONDS -lt $end ]; do
                $own && grep -qs pubkey "$ready" && break
                sleep 0.05
        done
        wrote=false
        $own && [ -e "$ready" ] && wrote=true
        if kill -0 "$b" 2>/dev/null; then
                rc=running
                kill -TERM "$b"
                wait "$b" 2>/dev/null
        else
                wait "$b"
                rc=$?
        fi
}

second "$tmp/b1.ready" --data "$tmp/b1" --listen "$native" --http 127.0.0.1:0 --threads 2
check "a second relay on A's native address $native exits non-zero (exit $rc)" \
        "[ '$rc' != running ] && [ '$rc' -ne 0 ]"
check "it says the address is in use, naming it: $(head -c 200 "$tmp/b.log")" \
        "grep -qi 'address.*in use' '$tmp/b.log' && grep -qF '$native' '$tmp/b.log'"
check "it wrote no ready file" "! $wrote"

second "$tmp/b2.ready" --data "$tmp/b2" --listen 127.0.0.1:0 --http "$web" --threads 2
check "a second relay on A's HTTP address $web exits non-zero (exit $rc)" \
        "[ '$rc' != running ] && [ '$rc' -ne 0 ]"
check "it says the address is in use, naming it: $(head -c 200 "$tmp/b.log")" \
        "grep -qi 'address.*in use' '$tmp/b.log' && grep -qF '$web' '$tmp/b.log'"
check "it wrote no ready file" "! $wrote"

# the same command twice: the second fails and leaves the first one's ready file alone
cp "$tmp/a.ready" "$tmp/a.ready.orig"
second "$tmp/a.ready" --data "$tmp/a.data" --listen "$native" --http "$web" --threads 4
check "the same command run twice fails the second time (exit $rc)" \
        "[ '$rc' != running ] && [ '$rc' -ne 0 ]"
check "and the first relay's ready file is still there, unchanged" \
        "cmp -s '$tmp/a.ready' '$tmp/a.ready.orig'"

# every connection reaches A: 20 stat calls on one file, all answered with A's key
echo hello >"$tmp/f"
t=$("$chapar" put "$tmp/f" --relay "$native" --trust-new-relay 2>"$tmp/err")
check "A takes a put" "[ -n '$t' ]" || cat "$tmp/err"
good=0
for _ in $(seq 20); do
        "$chapar" stat "$t" --json >/dev/null 2>>"$tmp/err" && good=$((good + 1))
done
check "20 of 20 stat calls answered by A ($good)" "[ $good -eq 20 ]"
good=0
for _ in $(seq 20); do
        curl -sf "http://$web/healthz" >/dev/null && good=$((good + 1))
done
check "20 of 20 HTTP requests answered by A ($good)" "[ $good -eq 20 ]"

relay_stop a
rc=$?
check "A stops cleanly (exit $rc) and removes its ready file" "[ $rc -eq 0 ] && [ ! -e '$tmp/a.ready' ]"
finish
