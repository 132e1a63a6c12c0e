#!/usr/bin/env bash
# Cut-through across relays, measured: a sender uploads to relay A over a rate-limited path, a
# receiver downloads through relay B (A's peer). Three timings per run, each with a fresh file:
#   upload  `chapar put` to A alone (put start to exit)
#   cut     put start to the receiver's last byte, the receiver's `chapar get --via B` started
#           as soon as the put's --ticket-out appears (cut-through)
#   s&f     put start to the receiver's last byte, the get started after the put ended
#           (store-and-forward, the baseline)
# and the ratios cut/upload and s&f/upload (the medians of the runs). Issue 16's goal: cut/upload
# <= 1.2 (s&f is about 1 + the B leg's share).
# Runs in a network namespace of its own (unshare -n, as root): only its loopback, where what goes
# to A's port (the sender's uplink: its chunks, B's requests) passes an htb class of RATE, and
# what comes from B's port (the receiver's downlink) one of DOWN; the A->B leg is not limited (a
# datacenter path between relays). No delay or loss (netem is not in this kernel): bench/netlab
# has those.
# Usage: bench/cut_through.sh [-r RATE] [-d DOWN] [-s MIB] [-n RUNS] [-c CHUNK] [CHAPARD CHAPAR]
#   defaults: -r 20mbit -d RATE -s 20 -n 3 -c 1048576 build/bin/chapard build/bin/chapar
# Compare two relays' builds by passing another CHAPARD (e.g. one built from main).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rate=20mbit down= mib=20 runs=3 chunk=1048576
while getopts r:d:s:n:c: o; do
        case $o in
        r) rate=$OPTARG ;;
        d) down=$OPTARG ;;
        s) mib=$OPTARG ;;
        n) runs=$OPTARG ;;
        c) chunk=$OPTARG ;;
        *) sed -n 15,17p "$0" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
down=${down:-$rate}
chapard=$(realpath "${1:-$here/../build/bin/chapard}")
chapar=$(realpath "${2:-$here/../build/bin/chapar}")
if [ -z "${CUT_BENCH_NS:-}" ]; then
        unshare -n true 2>/dev/null || { echo "needs root (unshare -n)" >&2; exit 77; }
        CUT_BENCH_NS=1 exec unshare -n "$0" -r "$rate" -d "$down" -s "$mib" -n "$runs" -c "$chunk" \
                "$chapard" "$chapar"
fi
. "$here/../tests/lib.sh"
lib_tmp cutbench
ip link set lo up && ip link set lo mtu 1500

for r in A B; do key[$r]=$("$chapard" keygen --out "$tmp/$r.key"); done
start() { relay_start "$1" --config "$tmp/$1.ini" --key "$tmp/$1.key"; }
printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}" >"$tmp/A.ini"
start A
printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}" >"$tmp/B.ini"
start B
relay_stop A
printf '[peer "B"]\naddress = %s\npubkey = %s\n' "${addr[B]}" "${key[B]}" >"$tmp/A.ini"
start A
tc qdisc add dev lo root handle 1: htb default 20
tc class add dev lo parent 1: classid 1:10 htb rate "$rate" burst 64k quantum 1514
tc class add dev lo parent 1: classid 1:20 htb rate 10gbit quantum 65536
tc class add dev lo parent 1: classid 1:11 htb rate "$down" burst 64k quantum 1514
tc qdisc add dev lo parent 1:10 pfifo limit 200
tc qdisc add dev lo parent 1:11 pfifo limit 200
tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport "${addr[A]##*:}" 0xffff flowid 1:10
tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "${addr[B]##*:}" 0xffff flowid 1:11

now() { date +%s%N; }
put() { # FILE [more put args]
        "$chapar" put "$@" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size "$chunk" \
                2>>"$tmp/put.err"
}
get() { "$chapar" get "$1" --via "${addr[B]}" --trust-new-relay -o - 2>>"$tmp/get.err" | sha256sum; }
fresh() { head -c $((mib * 1024 * 1024)) /dev/urandom >"$tmp/f"; sha256sum <"$tmp/f"; }
same() { [ "$1" = "$2" ] || { echo "the received file differs" >&2; exit 1; }; }
ms() { echo $((($2 - $1) / 1000000)); }

up=() cut=() sf=() ttfb=()
for i in $(seq "$runs"); do
        fresh >/dev/null
        t0=$(now)
        put "$tmp/f" >/dev/null || exit 1
        up+=($(ms "$t0" "$(now)"))

        want=$(fresh)
        rm -f "$tmp/t"
        t0=$(now)
        put "$tmp/f" --ticket-out "$tmp/t" >/dev/null &
        p=$!
        until [ -s "$tmp/t" ]; do
                kill -0 $p 2>/dev/null || { echo "put failed: $(tail -1 "$tmp/put.err")" >&2; exit 1; }
                sleep 0.01
        done
        got=$("$chapar" get "$(cat "$tmp/t")" --via "${addr[B]}" --trust-new-relay -o - \
                2>>"$tmp/get.err" |
                { dd bs=1 count=1 status=none; now >"$tmp/first.t"; cat; } | sha256sum)
        t1=$(now)
        wait $p || exit 1
        same "$want" "$got"
        cut+=($(ms "$t0" "$t1"))
        ttfb+=($(ms "$t0" "$(cat "$tmp/first.t")"))

        want=$(fresh)
        t0=$(now)
        t=$(put "$tmp/f") || exit 1
        got=$(get "$t")
        sf+=($(ms "$t0" "$(now)"))
        same "$want" "$got"
        echo "run $i: upload ${up[-1]} ms, cut-through ${cut[-1]} ms (first byte ${ttfb[-1]} ms), store-and-forward ${sf[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
mu=$(median "${up[@]}") mc=$(median "${cut[@]}") ms_=$(median "${sf[@]}") mt=$(median "${ttfb[@]}")
echo "$mib MiB, chunks of $chunk bytes, sender to A at $rate, B to receiver at $down, $runs runs (medians):"
echo "  upload alone        $mu ms"
echo "  cut-through         $mc ms   ratio $(awk "BEGIN {printf \"%.2f\", $mc / $mu}")  (first byte at the receiver: $mt ms)"
echo "  store-and-forward   $ms_ ms   ratio $(awk "BEGIN {printf \"%.2f\", $ms_ / $mu}")"
