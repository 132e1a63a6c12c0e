#!/usr/bin/env bash
# chapard over Ceph RADOS beside RADOS itself, in one run on one pool (issue 17's goals):
#   rados-write  `rados bench T write -t 16 -b 1M`           the cluster's write bandwidth
#   rados-seq    `rados bench T seq -t 16` of those objects   its read bandwidth
#   put-rados    `chapar put` of a fresh random file through chapard --store rados
#   get-rados    `chapar get` of it back
#   put-local, get-local   the same through chapard --store local (segments), the baseline
#   relay upload/download  chapar-bench (FILES files of 8 MiB over 4 connections, per face):
#                the relay's own throughput, without the client's end-to-end encryption, which
#                bounds `chapar put/get` on two cores (the goal's ratios are these over rados
#                bench's; chapar put/get is what a user feels)
# Each put/get figure is the median of RUNS runs (a fresh file each run, so nothing deduplicates);
# get-rados/get-local says what the hop to the OSD costs a download.
# Everything runs on this machine: a throw-away cluster (tests/ceph/cluster.sh: one monitor, one
# memstore OSD) and the relays share its cores with the OSD, which the report says beside the
# ratios. Data directories are on /dev/shm so that the index is not what is measured.
# Usage: bench/rados.sh [-s MIB] [-n RUNS] [-t SECONDS] [CHAPARD CHAPAR]
#   defaults: -s 256 -n 3 -t 10 build/bin/chapard build/bin/chapar
# Prints a Markdown table; exits 77 without the Ceph packages or a RADOS-enabled chapard.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mib=256 runs=3 secs=10
while getopts s:n:t: o; do
        case $o in
        s) mib=$OPTARG ;;
        n) runs=$OPTARG ;;
        t) secs=$OPTARG ;;
        *) sed -n 14,15p "$0" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
chapard=$(realpath "${1:-$here/../build/bin/chapard}")
chapar=$(realpath "${2:-$here/../build/bin/chapar}")
bench=$(dirname "$chapard")/chapar-bench
files=$((mib / 8))
declare -A bench
for p in ceph-mon ceph-osd rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done
. "$here/../tests/lib.sh"
tmp=$(mktemp -d -p /dev/shm radosbench.XXXX)
cdir=$(mktemp -d /tmp/cph.XXXX)
trap 'for r in "${!pid[@]}"; do kill "${pid[$r]}" 2>/dev/null; wait "${pid[$r]}" 2>/dev/null; done
      "$here/../tests/ceph/cluster.sh" stop "$cdir"; rm -rf "$tmp"' EXIT
eval "$("$here/../tests/ceph/cluster.sh" start "$cdir")" || exit 1
r() { timeout -k 2 $((secs * 4 + 60)) rados -c "$conf" -n "$user" -p "$pool" "$@"; }

# the cluster alone: the same 1 MiB objects, 16 in flight, as the goal names them
r bench "$secs" write -t 16 -b 1M --no-cleanup >"$tmp/w" 2>&1
r bench "$secs" seq -t 16 >"$tmp/s" 2>&1
r cleanup >/dev/null 2>&1
rw=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/w")
rs=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/s")
[ -n "$rw" ] && [ -n "$rs" ] || { cat "$tmp/w" "$tmp/s"; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# MB/s (10^6, as rados bench prints) of MIB MiB moved in SECONDS
rate() { bc -l <<<"scale=1; $mib * 1048576 / 1000000 / $1"; }

# chapar-bench's MB/s for FACE and SCENARIO against relay NAME (its table's sixth column)
relay_rate() { # NAME FACE SCENARIO
        timeout 300 "$bench" --native "${addr[$1]}" --http "${http[$1]}" --scenario "$3" \
                --files "$files" --size 8388608 --conns 4 | awk -v f="$2" -v s="$3" '$1 == f && $2 == s {print $6}'
}

# one relay's put and get, RUNS times: fills put_s and get_s with the medians' seconds, and
# bench[NAME.FACE.SCENARIO] with the relay's MB/s
measure() { # NAME [chapard args]
        local name=$1 i t0 t1 ticket
        shift
        relay_start "$name" --sync none --log-level warn "$@" || { cat "$tmp/$name.log"; exit 1; }
        local puts=() gets=()
        for ((i = 0; i < runs; i++)); do
                head -c $((mib << 20)) /dev/urandom >"$tmp/in"
                t0=$EPOCHREALTIME
                ticket=$(XDG_CONFIG_HOME=$tmp/cfg XDG_CACHE_HOME=$tmp/cache "$chapar" put "$tmp/in" \
                        --relay "${addr[$name]}" --relay-key "${key[$name]}") || exit 1
                t1=$EPOCHREALTIME
                puts+=("$(bc -l <<<"$t1 - $t0")")
                rm -f "$tmp/out"
                t0=$EPOCHREALTIME
                XDG_CONFIG_HOME=$tmp/cfg XDG_CACHE_HOME=$tmp/cache "$chapar" get "$ticket" \
                        -o "$tmp/out" >/dev/null || exit 1
                t1=$EPOCHREALTIME
                gets+=("$(bc -l <<<"$t1 - $t0")")
                cmp -s "$tmp/in" "$tmp/out" || { echo "$name: the file came back different" >&2; exit 1; }
        done
        put_s=$(printf '%s\n' "${puts[@]}" | median)
        get_s=$(printf '%s\n' "${gets[@]}" | median)
        for sc in upload download; do
                for f in native http; do
                        bench[$name.$f.$sc]=$(relay_rate "$name" $f $sc)
                done
        done
        relay_stop "$name"
}

measure rados --store rados --rados-conf "$conf" --rados-pool "$pool" \
        --rados-user "${user#client.}"
pr=$(rate "$put_s") gr=$(rate "$get_s")
measure local
pl=$(rate "$put_s") gl=$(rate "$get_s")

ratio() { bc -l <<<"scale=2; $1 / $2"; }
cat <<EOF
| $(date -u +%F) · ${mib} MiB files, median of $runs · $(nproc) cores shared by the OSD, the monitor, the relay and the client | MB/s | ratio |
|---|---|---|
| rados bench write -t 16 -b 1M (${secs} s) | $rw | 1 |
| rados bench seq -t 16 (${secs} s) | $rs | 1 |
| relay upload, native, --store rados | ${bench[rados.native.upload]} | $(ratio "${bench[rados.native.upload]}" "$rw") of rados write (goal ≥ 0.8) |
| relay upload, http (tus), --store rados | ${bench[rados.http.upload]} | $(ratio "${bench[rados.http.upload]}" "$rw") of rados write (goal ≥ 0.8) |
| relay download, native, --store rados | ${bench[rados.native.download]} | $(ratio "${bench[rados.native.download]}" "$rs") of rados seq (goal ≥ 0.8) |
| relay download, http, --store rados | ${bench[rados.http.download]} | $(ratio "${bench[rados.http.download]}" "$rs") of rados seq (goal ≥ 0.8) |
| relay upload, native, --store local | ${bench[local.native.upload]} | rados/local $(ratio "${bench[rados.native.upload]}" "${bench[local.native.upload]}") |
| relay upload, http, --store local | ${bench[local.http.upload]} | rados/local $(ratio "${bench[rados.http.upload]}" "${bench[local.http.upload]}") |
| relay download, native, --store local | ${bench[local.native.download]} | rados/local $(ratio "${bench[rados.native.download]}" "${bench[local.native.download]}") |
| relay download, http, --store local | ${bench[local.http.download]} | rados/local $(ratio "${bench[rados.http.download]}" "${bench[local.http.download]}") |
| chapar put (E2E), --store rados | $pr | rados/local $(ratio "$pr" "$pl") |
| chapar get (E2E), --store rados | $gr | rados/local $(ratio "$gr" "$gl") |
| chapar put (E2E), --store local | $pl | |
| chapar get (E2E), --store local | $gl | |
EOF
