#!/usr/bin/env bash
# Two relays never share an address. With relay A running (four threads on port 0, so its threads
# share one kernel-chosen port), a second chapard on A's native address, or on A's HTTP address,
# exits non-zero with an error naming the address ("address in use"), writes no ready file, and
# A keeps answering every connection. The same command run twice (same data directory, same
# ready file) fails the second time without deleting the first relay's ready file.
# And who may reach a relay: without a tenant it says at start that only loopback clients may
# upload, and a native or HTTP address that is not loopback (0.0.0.0) makes it exit non-zero with
# what to do, before it opens its data directory; with --open or a [tenant] it starts there (it
# binds 0.0.0.0 port 0; no traffic is sent to it). A SIGHUP that would leave it on 0.0.0.0 with no
# tenant (the file moves the listener to loopback, which takes a restart, and drops the tenant) is
# refused and the relay keeps running; one that rotates a tenant's keys and adds a tenant is taken
# and logged.
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
check "the start-up log names the relay's public key (${key[a]:0:16}...), for operators to hand out" \
        "grep -qF 'relay public key ${key[a]}' '$tmp/a.log'"
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

# ---- no tenant: loopback only, unless --open ----
check "A (loopback, no tenant) said who may upload: $(grep -o 'no tenant configured.*' "$tmp/a.log")" \
        "grep -qF 'no tenant configured: uploads, offers and pull-through only from loopback clients' \
                '$tmp/a.log'"
rule="is not a loopback address and no tenant is configured"
second "$tmp/o1.ready" --data "$tmp/o1" --listen 0.0.0.0:0 --http off
check "no tenant, --listen 0.0.0.0:0: exits non-zero (exit $rc)" "[ '$rc' != running ] && [ '$rc' -ne 0 ]"
check "and says why and what to do: $(head -c 300 "$tmp/b.log")" \
        "grep -qF -- '--listen 0.0.0.0:0 $rule' '$tmp/b.log' && grep -qF 'pass --open' '$tmp/b.log' &&
                grep -qF 'token_key' '$tmp/b.log'"
check "it wrote no ready file and made no data directory" "! $wrote && [ ! -e '$tmp/o1' ]"
second "$tmp/o2.ready" --data "$tmp/o2" --listen 127.0.0.1:0 --http 0.0.0.0:0
check "no tenant, --http 0.0.0.0:0: exits non-zero (exit $rc) naming --http" \
        "[ '$rc' != running ] && [ '$rc' -ne 0 ] && grep -qF -- '--http 0.0.0.0:0 $rule' '$tmp/b.log'"
second "$tmp/o3.ready" --data "$tmp/o3" --listen 0.0.0.0:0 --http 0.0.0.0:0 --open
check "with --open it starts on 0.0.0.0 (wrote its ready file: $wrote)" "[ '$rc' = running ] && $wrote"
check "and says anyone may upload" \
        "grep -qF -- '--open: uploads, offers and pull-through without a token from any address' \
                '$tmp/b.log'"

# ---- a tenant: its tokens are checked, so it lifts the rule; reloads ----
# RFC 8032's test 1 and test 2 public keys: valid Ed25519 points, whoever holds their seeds
pk1=d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
pk2=3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c
printf '[server]\nlisten = 0.0.0.0:0\n[tenant "m"]\ntoken_key = 0000000000000001:%s\n' "$pk1" \
        >"$tmp/t.ini"
second "$tmp/t0.ready" --config "$tmp/t.ini" --data "$tmp/t0" --http off
check "with a tenant and no --open it starts on 0.0.0.0 (wrote its ready file: $wrote)" \
        "[ '$rc' = running ] && $wrote"
check "and says uploads need a token" \
        "grep -qF -- '1 tenant: uploads, offers and pull-through need a token' '$tmp/b.log'"
printf '[server]\nlisten = 0.0.0.0:0\nopen = true\n[tenant "m"]\ntoken_key = 0000000000000001:%s\n' \
        "$pk1" >"$tmp/t.ini"
"$chapard" --config "$tmp/t.ini" --data "$tmp/t" --http off --ready-file "$tmp/t.ready" \
        --log-level info 2>"$tmp/t.log" &
t=$!
lib_track "$t"
wait_file "$tmp/t.ready"
check "with a tenant and open = true it starts on $(sed -n 's/^native=//p' "$tmp/t.ready")" \
        "grep -q '^native=0.0.0.0:' '$tmp/t.ready'"
check "and says anyone may upload, tokens or not" \
        "grep -qF -- '--open and 1 tenant: uploads, offers and pull-through without a token from any address' '$tmp/t.log'"
# rotation: a second key, and a second tenant; reloaded at once, nothing that needs a restart
printf '[server]\nlisten = 0.0.0.0:0\nopen = true\n[tenant "m"]\ntoken_key = 0000000000000001:%s\n%s\n%s\n' \
        "$pk1" "token_key = 0000000000000002:$pk2" "[tenant \"n\"]" >"$tmp/t.ini"
echo "token_key = 0000000000000001:$pk2" >>"$tmp/t.ini"
kill -HUP "$t"
wait_for 20 "grep -qF 'SIGHUP: configuration reloaded' '$tmp/t.log'"
check "a SIGHUP adding a key and a tenant is taken, with no restart warning" \
        "grep -qF 'SIGHUP: configuration reloaded' '$tmp/t.log' && ! grep -q 'differs' '$tmp/t.log'"
check "and says what changed: $(grep -o 'SIGHUP: now.*' "$tmp/t.log")" \
        "grep -qF -- 'SIGHUP: now --open and 2 tenants: uploads' '$tmp/t.log'"
# the listener moves to loopback in the file (a restart setting: 0.0.0.0 stays), open and the
# tenants go
printf '[server]\nlisten = 127.0.0.1:0\n' >"$tmp/t.ini"
kill -HUP "$t"
wait_for 20 "grep -qF 'keeping the running configuration' '$tmp/t.log'"
check "a SIGHUP that would leave 0.0.0.0 with no tenant and no --open is refused: $(grep -o 'SIGHUP: --listen.\{0,60\}' "$tmp/t.log")" \
        "grep -qF 'SIGHUP: --listen 0.0.0.0:0 $rule' '$tmp/t.log' &&
                grep -qF 'keeping the running configuration' '$tmp/t.log' &&
                [ \$(grep -c 'SIGHUP: configuration reloaded' '$tmp/t.log') -eq 1 ]"
check "and the relay is still running" "kill -0 $t 2>/dev/null"
kill -TERM "$t"
wait "$t"
rc=$?
check "it stops cleanly (exit $rc)" "[ $rc -eq 0 ]"
finish
