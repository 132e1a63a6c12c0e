#!/usr/bin/env bash
# Signals: SIGHUP re-reads the --config file (flags still win) and applies what can be applied
# while running - log level, limits, peers - and never stops the relay; a file with an error, or a
# peer key that does not decode, is logged and the running configuration kept; a setting that
# takes a restart is named and left alone. SIGTERM and SIGINT stop with exit 0 and remove the
# ready file.
#
# A: log_level and tus_max_size change on SIGHUP (seen in its log and in OPTIONS' Tus-Max-Size);
# a burst of SIGHUPs; a bad file; a bad peer key. B peers with no one, then with A after a
# SIGHUP (A, reloaded to peer with C only, refuses B's handshake until a SIGHUP adds B), then
# with no one.
# Usage: signals_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp signals

start() { # relay [flags]
        local r=$1
        shift
        relay_start "$r" --config "$tmp/$r.ini" --key "$tmp/$r.key" "$@"
}
alive() { kill -0 "${pid[$1]}" 2>/dev/null; }
# Waits (at most 20 s) until relay $1's log has at least $3 lines matching $2.
wait_log() {
        local end=$((SECONDS + 20))
        while [ "$(grep -c -- "$2" "$tmp/$1.log")" -lt "$3" ] && [ $SECONDS -lt $end ]; do
                alive "$1" || break
                sleep 0.05
        done
        [ "$(grep -c -- "$2" "$tmp/$1.log")" -ge "$3" ]
}
reloads() { grep -c 'configuration reloaded' "$tmp/$1.log"; }
hup() { # relay: sends SIGHUP and waits until the relay logs one more reload or reload error
        local n=$(($(grep -c 'configuration reloaded\|SIGHUP: ' "$tmp/$1.log") + 1))
        kill -HUP "${pid[$1]}"
        wait_log "$1" 'configuration reloaded\|SIGHUP: ' "$n"
}
tus_max() { curl -s -X OPTIONS -D - -o /dev/null "http://${http[$1]}/files/" | tr -d '\r' |
        sed -n 's/^Tus-Max-Size: //p'; }
# Opens a native connection, sends a preamble that is not chapar's, and waits for the relay to
# close it: the relay logs "refusing a connection" at info, before it closes.
junk() {
        local port=${addr[$1]##*:}
        exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
        printf 'NOTCHAPR' >&3
        timeout 10 cat <&3 >/dev/null
        exec 3<&-
}
refused() { grep -c 'refusing a connection: not a chapar native preamble' "$tmp/$1.log"; }
stop() { # relay signal: must exit 0 and remove its ready file
        relay_stop "$1" "$2"
        local rc=$?
        check "SIG$2 stops $1 with exit 0 (exit $rc) and removes its ready file" \
                "[ $rc -eq 0 ] && [ ! -e '$tmp/$1.ready' ]" || tail -5 "$tmp/$1.log"
}

for r in A B C; do key[$r]=$("$chapard" keygen --out "$tmp/$r.key"); done
aconf() { # log_level tus_max_size [extra lines]
        printf '[server]\nlog_level = %s\ntus_max_size = %s\nthreads = 2\n%s' "$1" "$2" "${3:-}" \
                >"$tmp/A.ini"
}

# ---- A: reloadable settings, errors, a burst
aconf warn 1M
start A
check "A is up; Tus-Max-Size is 1 MiB" "[ '$(tus_max A)' = 1048576 ]"
junk A
check "at log level warn, a refused connection is not logged" "[ $(refused A) -eq 0 ]"

aconf info 2M 'threads = 3
'
kill -HUP "${pid[A]}"
for _ in $(seq 400); do [ "$(tus_max A)" = 2097152 ] && break; alive A || break; sleep 0.05; done
check "after SIGHUP A still runs" "alive A"
check "a new tus_max_size applies: Tus-Max-Size is $(tus_max A)" "[ '$(tus_max A)' = 2097152 ]"
junk A
check "a new log_level applies: at info the refused connection is logged" "[ $(refused A) -eq 1 ]"
check "the reload is logged" "wait_log A 'configuration reloaded' 1"
check "a setting that takes a restart (threads) is named, not applied" \
        "grep -q \"'threads'.*restart\" '$tmp/A.log'"

hup A
check "SIGHUP with the file unchanged: still running, reloaded again" \
        "alive A && [ $(reloads A) -eq 2 ] && [ '$(tus_max A)' = 2097152 ]"

cp "$tmp/A.ini" "$tmp/A.good"
printf '[server]\nlog_level = info\ntus_max_size = 5M\nwindow_bytes = banana\n' >"$tmp/A.ini"
hup A
check "a file with an error: the error is logged with its line" \
        "grep -q 'SIGHUP: .*A.ini:4' '$tmp/A.log'" || tail -3 "$tmp/A.log"
check "and the running configuration is kept (Tus-Max-Size $(tus_max A))" \
        "alive A && [ '$(tus_max A)' = 2097152 ]"
aconf info 5M '[peer "x"]
address = 127.0.0.1:1
pubkey = 00zz
'
hup A
check "a peer key that does not decode: logged, configuration kept" \
        "grep -q 'SIGHUP: .*pubkey' '$tmp/A.log' && alive A && [ '$(tus_max A)' = 2097152 ]"
rm -f "$tmp/A.ini"
hup A
check "a config file that is gone: logged, configuration kept" \
        "alive A && [ $(reloads A) -eq 2 ] && [ '$(tus_max A)' = 2097152 ]"

cp "$tmp/A.good" "$tmp/A.ini"
for _ in $(seq 20); do kill -HUP "${pid[A]}"; done
check "20 SIGHUPs in a row: A still runs and reloads" "wait_log A 'configuration reloaded' 3 && alive A"
aconf info 3M
hup A
check "and the next change still applies (Tus-Max-Size $(tus_max A))" "[ '$(tus_max A)' = 3145728 ]"
echo hello >"$tmp/f0"
t0=$("$chapar" put "$tmp/f0" --relay "${addr[A]}" --relay-key "${key[A]}" 2>/dev/null)
"$chapar" get "$t0" -o "$tmp/f0.out" >/dev/null 2>&1
check "A still answers the native protocol" "cmp -s '$tmp/f0' '$tmp/f0.out'"

# ---- peers: B (log level from a flag, which a reload must not undo) learns of A, and A of B
printf '[server]\nlog_level = warn\n' >"$tmp/B.ini"
start B --log-level info
yes CHAPAR-SIGNALS | head -c 300000 >"$tmp/f1"
t1=$("$chapar" put "$tmp/f1" --relay "${addr[A]}")
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o "$tmp/f1.b" >/dev/null 2>"$tmp/err"
check "B with no peers refuses a get of A's file" "[ ! -e '$tmp/f1.b' ] && grep -q 'not a peer' '$tmp/err'"

printf '[server]\nlog_level = warn\n[peer "A"]\naddress = %s\npubkey = %s\n' \
        "${addr[A]}" "${key[A]}" >"$tmp/B.ini"
hup B
aconf info 3M "[peer \"C\"]
address = 127.0.0.1:1
pubkey = ${key[C]}
"
hup A
check "B reloaded its peers" "grep -q '1 peers configured' '$tmp/B.log'"
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o "$tmp/f1.b" >/dev/null 2>"$tmp/err"
check "B now fetches from A, which does not know B yet and refuses" \
        "[ ! -e '$tmp/f1.b' ] && wait_log A 'refusing a peer handshake from unknown key ${key[B]}' 1"

aconf info 3M "[peer \"C\"]
address = 127.0.0.1:1
pubkey = ${key[C]}
[peer \"B\"]
address = ${addr[B]}
pubkey = ${key[B]}
"
hup A
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o "$tmp/f1.b" >/dev/null 2>"$tmp/err"
check "A reloaded with B as a peer: the get via B is identical" "cmp -s '$tmp/f1' '$tmp/f1.b'" ||
        cat "$tmp/err"

printf '[server]\nlog_level = warn\n' >"$tmp/B.ini"
hup B
yes CHAPAR-SIGNALS-2 | head -c 300000 >"$tmp/f2"
t2=$("$chapar" put "$tmp/f2" --relay "${addr[A]}")
"$chapar" get "$t2" --via "${addr[B]}" --trust-new-relay -o "$tmp/f2.b" >/dev/null 2>"$tmp/err"
check "B reloaded without peers refuses again" "[ ! -e '$tmp/f2.b' ] && grep -q 'not a peer' '$tmp/err'"
junk B
check "B's --log-level info flag still wins over the file's warn" "[ $(refused B) -eq 1 ]"

# peers are bounded: 64 new peers per reload take new slots until a reload is refused
for round in 1 2 3 4 5; do
        printf '[server]\nlog_level = warn\n' >"$tmp/B.ini"
        for i in $(seq 64); do
                printf '[peer "p%d"]\naddress = 127.0.0.1:%d\npubkey = %s\n' "$i" "$round" \
                        "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$tmp/B.ini"
        done
        hup B
        grep -q 'SIGHUP: peers were changed too often' "$tmp/B.log" && break
done
check "a reload beyond the peer slots is refused in round $round, not before the 4th" \
        "[ $round -ge 4 ] && grep -q 'SIGHUP: peers were changed too often.*restart' '$tmp/B.log'"
none=$(grep -c ' 0 peers configured' "$tmp/B.log")
printf '[server]\nlog_level = warn\n' >"$tmp/B.ini"
hup B
check "B still runs and reloads (to no peers)" \
        "alive B && [ $(grep -c ' 0 peers configured' "$tmp/B.log") -eq $((none + 1)) ]"

stop A TERM
stop B INT
finish
