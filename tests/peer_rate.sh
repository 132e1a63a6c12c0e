#!/usr/bin/env bash
# download_rate_per_address holds back clients, not peer relays: origin A limits every address
# (limit_loopback = true) to 256 KiB/s of sends; a client's chapar get of a 1.5 MiB file from A
# waits for the rate (A's chapar_sends_throttled_total grows), while relay B, A's configured peer,
# pulls another 1.5 MiB file through from A without one wait.
# Usage: peer_rate.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
here=$(dirname "$0")
. "$here/lib.sh"
lib_tmp peerrate

for r in A B; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done
{
        printf '[server]\nlimit_loopback = true\ndownload_rate_per_address = 256K\n'
        printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}"
} >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key"
printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}" >"$tmp/B.ini"
relay_start B --config "$tmp/B.ini" --key "$tmp/B.key"

throttled() { # A's chapar_sends_throttled_total
        curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_sends_throttled_total //p'
}
put() { "$chapar" put "$1" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size 65536; }
head -c 1572864 /dev/urandom >"$tmp/one"
head -c 1572864 /dev/urandom >"$tmp/two"
t1=$(put "$tmp/one" 2>"$tmp/put.err")
t2=$(put "$tmp/two" 2>>"$tmp/put.err")
check "two files of 1.5 MiB put at A" "[ -n '$t1' ] && [ -n '$t2' ]" || cat "$tmp/put.err"

n0=$(throttled)
timeout 60 "$chapar" get "$t2" --via "${addr[B]}" --trust-new-relay -o "$tmp/two.got" \
        >/dev/null 2>"$tmp/via.err"
n1=$(throttled)
check "B pulls the second file through from A: the same bytes" "cmp -s '$tmp/two' '$tmp/two.got'" ||
        cat "$tmp/via.err"
check "A's sends to its peer B never waited for the address's rate (throttled $n0 -> $n1)" \
        "[ -n '$n1' ] && [ '$n1' = '$n0' ]"

timeout 60 "$chapar" get "$t1" -o "$tmp/one.got" >/dev/null 2>"$tmp/get.err"
n2=$(throttled)
check "a client's get from A: the same bytes" "cmp -s '$tmp/one' '$tmp/one.got'" || cat "$tmp/get.err"
check "the client's get waited for the rate (throttled $n1 -> $n2)" \
        "[ -n '$n2' ] && [ '$n2' -gt '${n1:-0}' ]"
finish
