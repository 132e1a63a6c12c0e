#!/usr/bin/env bash
# The RADOS backend's read cache ([store] cache_size, docs/scale-out.md) against the segment
# store, in one run on one throw-away cluster: chapar-bench's download scenarios through
#   rados        chapard --store rados, no cache (every chunk from the OSD)
#   cache        chapard --store rados, cache_size 2G (fanout: one file downloaded 16 times by
#                each of 4 connections: all but the first 4 are warm, spliced from DATA/cache;
#                download: each file downloaded once after its upload, so cold)
#   local        chapard --store local (segments), the baseline
# Paired: each round runs the three relays one after the other, and the report gives each
# round's ratio to local, then their median. Data directories on /dev/shm.
# Usage: bench/rados_cache.sh [-s MIB] [-n ROUNDS] [CHAPARD]   (defaults: -s 64 -n 3)
# Prints a Markdown table; exits 77 without the Ceph packages or a RADOS-enabled chapard.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mib=64 rounds=3
while getopts s:n: o; do
        case $o in
        s) mib=$OPTARG ;;
        n) rounds=$OPTARG ;;
        *) sed -n 11p "$0" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
chapard=$(realpath "${1:-$here/../build/bin/chapard}")
bench=$(dirname "$chapard")/chapar-bench
for p in ceph-mon ceph-osd rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done
. "$here/../tests/lib.sh"
tmp=$(mktemp -d -p /dev/shm radoscache.XXXX)
cdir=$(mktemp -d /tmp/cph.XXXX)
rmdir "$cdir"
trap 'for r in "${!pid[@]}"; do kill "${pid[$r]}" 2>/dev/null; wait "${pid[$r]}" 2>/dev/null; done
      "$here/../tests/ceph/cluster.sh" stop "$cdir"; rm -rf "$tmp"' EXIT
eval "$("$here/../tests/ceph/cluster.sh" start "$cdir")" || exit 1
rados_args=(--store rados --rados-conf "$conf" --rados-pool "$pool" --rados-user "${user#client.}")
printf '[store]\ncache_size = 2G\n' >"$tmp/cache.ini"

# chapar-bench's MB/s (its table's sixth column) for FACE and SCENARIO against relay NAME
rate() { # NAME FACE SCENARIO
        local extra=(--files 16 --size "$((mib << 20))" --conns 4)
        [ "$3" = download ] && extra=(--files "$((mib / 8 > 0 ? mib / 8 : 1))" --size 8388608 --conns 4)
        timeout 300 "$bench" --native "${addr[$1]}" --http "${http[$1]}" --scenario "$3" "${extra[@]}" |
                awk -v f="$2" -v s="$3" '$1 == f && $2 == s {print $6}'
}
declare -A got
for ((i = 0; i < rounds; i++)); do
        for name in rados cache local; do
                case $name in
                rados) args=("${rados_args[@]}") ;;
                cache) args=("${rados_args[@]}" --config "$tmp/cache.ini") ;;
                local) args=() ;;
                esac
                rm -rf "$tmp/$name.data"
                relay_start "$name" --sync none --log-level warn "${args[@]}" || { cat "$tmp/$name.log"; exit 1; }
                for sc in fanout download; do
                        for f in http native; do
                                got[$name.$f.$sc.$i]=$(rate "$name" $f $sc)
                        done
                done
                relay_stop "$name"
                unset "addr[$name]"
        done
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { # FACE SCENARIO NAME: median MB/s, and the median of the rounds' ratios to local
        local i rates=() ratios=()
        for ((i = 0; i < rounds; i++)); do
                rates+=("${got[$3.$1.$2.$i]}")
                ratios+=("$(bc -l <<<"scale=2; ${got[$3.$1.$2.$i]:-0} / ${got[local.$1.$2.$i]:-1}")")
        done
        echo "| $2, $1, $3 | $(printf '%s\n' "${rates[@]}" | median) | $(printf '%s\n' "${ratios[@]}" | median) |"
}
echo "| $(date -u +%F) · $rounds paired rounds · $(nproc) cores shared by the OSD, monitor, relay and client | MB/s (median) | ratio to local (median of rounds) |"
echo "|---|---|---|"
for sc in fanout download; do
        for f in http native; do
                for name in rados cache local; do row $f $sc $name; done
        done
done
