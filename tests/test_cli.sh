#!/usr/bin/env bash
# The chapar and chapard binaries end to end, over the encrypted transport: round trips at the
# chunk boundaries and of many chunks, no plaintext on the relay's disk, a put cut midway resumes
# (the two runs send at most the file plus two chunks), a second put of the same content sends
# under 1% of it, a get cut by a relay restart resumes, pinning, tampering and exit codes. The
# cuts go through cutproxy, which holds a connection's bytes at a set count, so they happen
# mid-transfer on every run; files of a few MiB in 64 KiB chunks prove what 50 MiB did.
# Usage: test_cli.sh CHAPARD CHAPAR CUTPROXY
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/lib.sh"
lib_tmp cli
json() { sed -n "s/.*\"$1\":\\([0-9]*\\).*/\\1/p"; } # a number field of a one-line object

start_relay() { # [extra args]
        relay_start R --log-level warn "$@"
        raddr=${addr[R]}
        rkey=${key[R]}
}
stop_relay() { relay_stop R; }

# a file with a recognisable plaintext pattern in it
mkfile() { # path size
        yes CHAPAR-PLAINTEXT-MARKER- | head -c "$2" >"$1"
}

start_relay
cs=65536
pc=$((cs - 40)) # plaintext bytes per chunk (CHP_E2E_CHUNK_OVERHEAD: nonce and tag)
many=$((4 * 1024 * 1024 + 3)) # 65 chunks: more than one window of them in flight
for size in 0 1 $((pc - 1)) $pc $((pc + 1)) $many; do
        mkfile "$tmp/in.$size" "$size"
        nopad=--no-pad # so that the sizes fall on the chunk boundaries; $many is padded (the default)
        [ "$size" = $many ] && nopad=
        t=$("$chapar" put "$tmp/in.$size" --relay "$raddr" --relay-key "$rkey" --chunk-size $cs $nopad 2>"$tmp/err") || { bad "put $size"; cat "$tmp/err"; continue; }
        "$chapar" get "$t" -o "$tmp/out.$size" >/dev/null 2>"$tmp/err" || { bad "get $size"; cat "$tmp/err"; continue; }
        check "round trip of $size bytes" "cmp -s '$tmp/in.$size' '$tmp/out.$size'"
done

# padding is on by default: 1000 bytes are stored as 4 KiB (one chunk of 4096 + 40 bytes) and
# come back as 1000; with --no-pad as 1000 + 40
mkfile "$tmp/small" 1000
out=$("$chapar" put "$tmp/small" --relay "$raddr" --chunk-size $cs --json)
total=$(echo "$out" | json bytes_total)
t=$(echo "$out" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p')
"$chapar" get "$t" -o "$tmp/small.out" >/dev/null 2>&1
check "a 1000-byte file is stored padded to 4 KiB ($total bytes) and comes back whole" "[ '$total' = 4136 ] && cmp -s '$tmp/small' '$tmp/small.out'"
out=$("$chapar" put "$tmp/small" --relay "$raddr" --chunk-size $cs --no-pad --json)
total=$(echo "$out" | json bytes_total)
check "--no-pad stores the exact size ($total bytes)" "[ '$total' = 1040 ]"

check "the relay's disk holds no plaintext" "! grep -rqa CHAPAR-PLAINTEXT-MARKER '$tmp/R.data'"
check "the relay's key given by --relay-key was pinned" "grep -q '$raddr $rkey' '$tmp/config/chapar/known_relays'"

# the same content again: the relay already has every chunk
out=$("$chapar" put "$tmp/in.$many" --relay "$raddr" --chunk-size $cs --json)
sent=$(echo "$out" | json bytes_sent)
total=$(echo "$out" | json bytes_total)
check "a second put sends under 1% ($sent of $total bytes)" "[ -n '$sent' ] && [ \$(( sent * 100 )) -lt $total ]"
cp "$tmp/in.$many" "$tmp/other-name"
out=$("$chapar" put "$tmp/other-name" --relay "$raddr" --chunk-size $cs --json)
sent=$(echo "$out" | json bytes_sent)
check "the same content under another name sends under 1% ($sent bytes)" "[ -n '$sent' ] && [ \$(( sent * 100 )) -lt $total ]"

# From here on the client reaches the relay through cutproxy (the tickets name the proxy).
proxy_start R "${raddr##*:}"
via=127.0.0.1:${proxy_port[R]}
"$chapar" put "$tmp/in.1" --relay "$via" --relay-key "$rkey" >/dev/null 2>&1 # pin it

# a put cut after 1 MiB of its 4 MiB, then killed, run again: both runs together send at most
# the file plus two chunks. What the cut run got across is what the relay stored for it (the
# segments' growth: a chunk it had fully received is stored; only one cut mid-chunk is lost).
stored() { stat -c %s "$tmp"/R.data/segments/*.seg 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mkfile "$tmp/big" $((4 * 1024 * 1024))
head -c 1000 /dev/urandom >>"$tmp/big" # new content: nothing to deduplicate
before=$(stored)
proxy_hold R $((1024 * 1024)) up
"$chapar" put "$tmp/big" --relay "$via" --chunk-size $cs --json >"$tmp/first" 2>/dev/null &
ppid=$!
proxy_held R
check "the put was held after 1 MiB of its bytes" "[ -e '$tmp/R.proxy/cut' ]"
kill -KILL $ppid 2>/dev/null
wait $ppid 2>/dev/null
wait_for 10 "[ \$(( \$(stored) - before )) -ge $((1024 * 1024 - 2 * cs)) ]" # what fully arrived is stored
first=$(( $(stored) - before ))
out=$("$chapar" put "$tmp/big" --relay "$via" --chunk-size $cs --json)
sent2=$(echo "$out" | json bytes_sent)
total=$(echo "$out" | json bytes_total)
check "the cut put had stored $first bytes; the resumed one sent $sent2 of $total" "[ -n '$sent2' ] && [ $first -gt 0 ] && [ $sent2 -gt 0 ] && [ $sent2 -lt $total ]"
check "both runs send at most the file plus two chunks" "[ \$(( first + cs + sent2 )) -le \$(( total + 2 * cs )) ]"
t=$(echo "$out" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p')
"$chapar" get "$t" -o "$tmp/big.out" >/dev/null
check "the resumed file downloads identical" "cmp -s '$tmp/big' '$tmp/big.out'"

# a get cut by a relay restart resumes where it stopped: the relay's bytes are held after
# 1 MiB, the relay is killed and started again on the same port
rm -f "$tmp/big.out"
proxy_hold R $((1024 * 1024))
"$chapar" get "$t" -o "$tmp/big.out" --json --retry-for 0 --connections 1 >"$tmp/get1" 2>"$tmp/get1.err" &
gpid=$!
proxy_held R
relay_stop R KILL
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
mv "$tmp/R.data" "$tmp/R.data.a"
start_relay # a new data directory: a new key, on the same port
"$chapar" put "$tmp/in.1" --relay "$raddr" >/dev/null 2>"$tmp/err"
rc=$?
check "a relay with another key is refused (exit $rc): $(head -c 120 "$tmp/err")" "[ $rc -eq 3 ] && grep -qi 'key' '$tmp/err'"
"$chapar" put "$tmp/in.1" --relay "$raddr" --relay-key "$rkey" >/dev/null 2>&1
check "--relay-key overrides the pin" "[ $? -eq 0 ]"

# usage and network errors
"$chapar" put >/dev/null 2>&1
check "usage errors exit 1" "[ $? -eq 1 ]"
"$chapar" put "$tmp/in.1" --relay 127.0.0.1:1 --trust-new-relay >/dev/null 2>&1
check "an unreachable relay exits 2" "[ $? -eq 2 ]"
"$chapar" put "$tmp/does-not-exist" --relay "$raddr" --relay-key "$rkey" >/dev/null 2>&1
check "a missing input file exits 4" "[ $? -eq 4 ]"
stop_relay
check "the relay stops cleanly" "[ $? -eq 0 ]"
finish
