#!/usr/bin/env bash
# The chapar and chapard binaries end to end, over the encrypted transport: round trips at the
# chunk boundaries and 50 MiB, no plaintext on the relay's disk, a put killed midway resumes
# (the two runs send at most the file plus two chunks), a second put of the same content sends
# under 1% of it, a get cut by a relay restart resumes, pinning, tampering and exit codes.
# Usage: test_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
tmp=$(mktemp -d /tmp/chapar-cli-XXXXXX)
export XDG_CONFIG_HOME=$tmp/config XDG_CACHE_HOME=$tmp/cache
unset CHAPAR_RELAY
pid=
passed=0
failed=0

cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
json() { sed -n "s/.*\"$1\":\\([0-9]*\\).*/\\1/p"; } # a number field of a one-line object

start_relay() { # [extra args]
        rm -f "$tmp/ready"
        "$chapard" --data "$tmp/data" --listen 127.0.0.1:${PORT:-0} --http 127.0.0.1:0 \
                --ready-file "$tmp/ready" \
                --log-level warn "$@" 2>>"$tmp/relay.log" &
        pid=$!
        for _ in $(seq 200); do [ -s "$tmp/ready" ] && grep -q pubkey "$tmp/ready" && break; sleep 0.05; done
        addr=$(sed -n 's/^native=//p' "$tmp/ready")
        key=$(sed -n 's/^pubkey=//p' "$tmp/ready")
        PORT=${addr##*:} # a restart keeps the port, so tickets stay valid
}
stop_relay() { kill -TERM "$pid"; wait "$pid"; local rc=$?; pid=; return $rc; }

# a file with a recognisable plaintext pattern in it
mkfile() { # path size
        yes CHAPAR-PLAINTEXT-MARKER- | head -c "$2" >"$1"
}

start_relay
cs=65536
pc=$((cs - 16)) # plaintext bytes per chunk
for size in 0 1 $((pc - 1)) $pc $((pc + 1)) $((50 * 1024 * 1024)); do
        mkfile "$tmp/in.$size" "$size"
        t=$("$chapar" put "$tmp/in.$size" --relay "$addr" --chunk-size $cs 2>"$tmp/err") || { bad "put $size"; cat "$tmp/err"; continue; }
        "$chapar" get "$t" -o "$tmp/out.$size" >/dev/null 2>"$tmp/err" || { bad "get $size"; cat "$tmp/err"; continue; }
        check "round trip of $size bytes" "cmp -s '$tmp/in.$size' '$tmp/out.$size'"
done

check "the relay's disk holds no plaintext" "! grep -rqa CHAPAR-PLAINTEXT-MARKER '$tmp/data'"
check "the relay's key was pinned on first use" "grep -q '$addr $key' '$tmp/config/chapar/known_relays'"

# the same content again: the relay already has every chunk
out=$("$chapar" put "$tmp/in.52428800" --relay "$addr" --chunk-size $cs --json)
sent=$(echo "$out" | json bytes_sent)
total=$(echo "$out" | json bytes_total)
check "a second put sends under 1% ($sent of $total bytes)" "[ -n '$sent' ] && [ \$(( sent * 100 )) -lt $total ]"
cp "$tmp/in.52428800" "$tmp/other-name"
out=$("$chapar" put "$tmp/other-name" --relay "$addr" --chunk-size $cs --json)
sent=$(echo "$out" | json bytes_sent)
check "the same content under another name sends under 1% ($sent bytes)" "[ -n '$sent' ] && [ \$(( sent * 100 )) -lt $total ]"

# a put killed midway, run again: both runs together send at most the file plus two chunks.
# What the killed run got across is what the relay stored for it (the segments' growth: a
# chunk it had fully sent is stored even after the kill; only one cut mid-chunk is lost).
stored() { stat -c %s "$tmp"/data/segments/*.seg 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mkfile "$tmp/big" $((40 * 1024 * 1024))
head -c 1000 /dev/urandom >>"$tmp/big" # new content: nothing to deduplicate
before=$(stored)
"$chapar" put "$tmp/big" --relay "$addr" --chunk-size $cs --json >"$tmp/first" 2>/dev/null &
ppid=$!
for _ in $(seq 5000); do # kill it once some, not all, of it has been stored
        [ $(( $(stored) - before )) -gt $((4 * 1024 * 1024)) ] && break
        sleep 0.001
done
kill -KILL $ppid 2>/dev/null
wait $ppid 2>/dev/null
sleep 0.5 # the relay finishes storing what had fully arrived
first=$(( $(stored) - before ))
out=$("$chapar" put "$tmp/big" --relay "$addr" --chunk-size $cs --json)
sent2=$(echo "$out" | json bytes_sent)
total=$(echo "$out" | json bytes_total)
check "the killed put had stored $first bytes; the resumed one sent $sent2 of $total" "[ -n '$sent2' ] && [ $first -gt 0 ] && [ $sent2 -lt $total ]"
check "both runs send at most the file plus two chunks" "[ \$(( first + cs + sent2 )) -le \$(( total + 2 * cs )) ]"
t=$(echo "$out" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p')
"$chapar" get "$t" -o "$tmp/big.out" >/dev/null
check "the resumed file downloads identical" "cmp -s '$tmp/big' '$tmp/big.out'"

# a get cut by a relay restart resumes where it stopped: the relay is frozen as soon as the
# first bytes land, then killed and started again on the same port
rm -f "$tmp/big.out"
"$chapar" get "$t" -o "$tmp/big.out" --json >"$tmp/get1" 2>"$tmp/get1.err" &
gpid=$!
for _ in $(seq 2000); do
        [ -s "$tmp/big.out.chapar-part" ] && break
        sleep 0.002
done
kill -STOP "$pid"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
pid=
wait $gpid
grc=$?
start_relay
out=$("$chapar" get "$t" -o "$tmp/big.out" --json 2>"$tmp/get2.err")
check "a get cut by a relay restart (exit $grc) resumes" "[ $grc -eq 2 ] && cmp -s '$tmp/big' '$tmp/big.out'"
recv=$(echo "$out" | json bytes_received)
check "the resumed get fetched only the rest ($recv of $total bytes)" "[ -n '$recv' ] && [ $recv -lt $total ]"
check "no partial files are left" "! ls '$tmp'/big.out.chapar-part* >/dev/null 2>&1"

# integrity: a wrong key, a tampered ticket
last=${t: -1}
if [ "$last" = 0 ]; then bad_t="${t%?}1"; else bad_t="${t%?}0"; fi
"$chapar" get "$bad_t" -o "$tmp/wrong" >/dev/null 2>"$tmp/err"
rc=$?
check "a wrong file key exits 3 with a clear message and no file (exit $rc)" "[ $rc -eq 3 ] && grep -q 'verification\|does not open' '$tmp/err' && [ ! -e '$tmp/wrong' ] && ! ls '$tmp'/wrong.chapar-part* >/dev/null 2>&1"

# pinning: another relay behind the same address and port is refused
stop_relay
mv "$tmp/data" "$tmp/data.a"
start_relay # a new data directory: a new key, on the same port
"$chapar" put "$tmp/in.1" --relay "$addr" >/dev/null 2>"$tmp/err"
rc=$?
check "a relay with another key is refused (exit $rc): $(head -c 120 "$tmp/err")" "[ $rc -eq 3 ] && grep -qi 'key' '$tmp/err'"
"$chapar" put "$tmp/in.1" --relay "$addr" --relay-key "$key" >/dev/null 2>&1
check "--relay-key overrides the pin" "[ $? -eq 0 ]"

# usage and network errors
"$chapar" put >/dev/null 2>&1
check "usage errors exit 1" "[ $? -eq 1 ]"
"$chapar" put "$tmp/in.1" --relay 127.0.0.1:1 >/dev/null 2>&1
check "an unreachable relay exits 2" "[ $? -eq 2 ]"
"$chapar" put "$tmp/does-not-exist" --relay "$addr" --relay-key "$key" >/dev/null 2>&1
check "a missing input file exits 4" "[ $? -eq 4 ]"
stop_relay
check "the relay stops cleanly" "[ $? -eq 0 ]"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
