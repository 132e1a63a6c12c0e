#!/usr/bin/env bash
# Relays over the shared state ([store] rados_shared) beside RADOS itself, in one run on one pool
# (issue 17's goals: downloads against `rados bench seq`, two relays against one):
#   rados-write / rados-seq   `rados bench T write -t 16 -b 1M` and `seq -t 16`
#   upload     FILES files of 8 MiB by tus (one PATCH each), CONNS at once, through relay 1
#   one relay  every file fetched by GET /f/ID, CONNS curls at once, all through relay 1
#   two relays the same, half the curls through relay 1 and half through relay 2
#   faces      chapar-bench upload and download, native and HTTP (FILES files of 8 MiB, 4
#              connections) on relay 1, and on a relay without rados_shared (its own index, the
#              chunk backend alone: the baseline of steps 1-4) started on the same pool after
# Each download figure is the median of RUNS runs (each run fetches every file once; bytes are
# checked by length). Everything runs on this machine: one monitor, one memstore OSD, the relays
# and the curls share its cores, which the report says beside the ratios.
# Usage: bench/relays_shared.sh [-f FILES] [-c CONNS] [-n RUNS] [-t SECONDS] [CHAPARD]
#   defaults: -f 32 -c 8 -n 3 -t 10 build/bin/chapard
# Prints a Markdown table; exits 77 without the Ceph packages or a RADOS-enabled chapard.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
files=32 conns=8 runs=3 secs=10
while getopts f:c:n:t: o; do
        case $o in
        f) files=$OPTARG ;;
        c) conns=$OPTARG ;;
        n) runs=$OPTARG ;;
        t) secs=$OPTARG ;;
        *) sed -n 10,11p "$0" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
chapard=$(realpath "${1:-$here/../build/bin/chapard}")
for p in ceph-mon ceph-osd rados curl; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done
. "$here/../tests/lib.sh"
tmp=$(mktemp -d -p /dev/shm rsbench.XXXX)
cdir=$(mktemp -d /tmp/cph.XXXX)
trap 'for r in "${!pid[@]}"; do kill "${pid[$r]}" 2>/dev/null; wait "${pid[$r]}" 2>/dev/null; done
      "$here/../tests/ceph/cluster.sh" stop "$cdir"; rm -rf "$tmp"' EXIT
eval "$("$here/../tests/ceph/cluster.sh" start "$cdir")" || exit 1
r() { timeout -k 2 $((secs * 4 + 60)) rados -c "$conf" -n "$user" -p "$pool" "$@"; }

r bench "$secs" write -t 16 -b 1M --no-cleanup >"$tmp/w" 2>&1
r bench "$secs" seq -t 16 >"$tmp/s" 2>&1
r cleanup >/dev/null 2>&1
rw=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/w")
rs=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/s")
[ -n "$rw" ] && [ -n "$rs" ] || { cat "$tmp/w" "$tmp/s"; exit 1; }

"$chapard" keygen --out "$tmp/relay.key" >/dev/null 2>&1 || exit 1
printf '[server]\ntus_chunk_size = 1M\n[store]\nrados_shared = true\n' >"$tmp/r.ini"
for n in R1 R2; do
        relay_start $n --config "$tmp/r.ini" --key "$tmp/relay.key" --sync none --log-level warn \
                --store rados --rados-conf "$conf" --rados-pool "$pool" \
                --rados-user "${user#client.}" || { cat "$tmp/$n.log"; exit 1; }
done

size=$((8 << 20))
upload_one() { # I: a fresh 8 MiB file by tus through relay 1; its id into $tmp/ids.I
        local loc
        head -c $size /dev/urandom >"$tmp/in.$1"
        loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
                -H "Upload-Length: $size" "http://${http[R1]}/files/" | tr -d '\r' |
                sed -n 's/^Location: //Ip')
        case "$loc" in http*) ;; *) loc=http://${http[R1]}$loc ;; esac
        curl -sS -D "$tmp/h.$1" -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' \
                -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' \
                --data-binary @"$tmp/in.$1" "$loc"
        tr -d '\r' <"$tmp/h.$1" | sed -n 's/^Chapar-File-Id: //Ip' >"$tmp/ids.$1"
        rm -f "$tmp/in.$1"
}
t0=$EPOCHREALTIME
ups=() # (a bare `wait` would wait for the relays too)
for ((i = 0; i < files; i++)); do
        upload_one $i &
        ups+=($!)
        if (((i + 1) % conns == 0)); then wait "${ups[@]}"; ups=(); fi
done
[ ${#ups[@]} = 0 ] || wait "${ups[@]}"
t1=$EPOCHREALTIME
up=$(bc -l <<<"scale=1; $files * $size / 1000000 / ($t1 - $t0)")
for ((i = 0; i < files; i++)); do
        [ -s "$tmp/ids.$i" ] || { echo "upload $i failed" >&2; cat "$tmp/h.$i" >&2; exit 1; }
done

fetcher() { # RELAY K: fetches files K, K+conns, ...: exits 1 on a short body
        local i n
        for ((i = $2; i < files; i += conns)); do
                n=$(curl -sS -o /dev/null -w '%{size_download}' "http://${http[$1]}/f/$(cat "$tmp/ids.$i")")
                [ "$n" = $size ] || { echo "file $i via $1: $n bytes" >&2; return 1; }
        done
}
download() { # RELAY... (curl k goes to relay k mod count): MB/s of one pass over every file
        local relays=("$@") k t0 t1 bad=0 ps=()
        t0=$EPOCHREALTIME
        for ((k = 0; k < conns; k++)); do
                fetcher "${relays[k % ${#relays[@]}]}" $k &
                ps+=($!)
        done
        for k in "${ps[@]}"; do wait "$k" || bad=1; done
        t1=$EPOCHREALTIME
        [ $bad = 0 ] || exit 1
        bc -l <<<"scale=1; $files * $size / 1000000 / ($t1 - $t0)"
}
# the relay's own faces (chapar-bench: no end-to-end encryption), as bench/rados.sh
bench=$(dirname "$chapard")/chapar-bench
declare -A cb
faces() { # RELAY NAME: cb[NAME.FACE.SCENARIO] = MB/s (chapar-bench's sixth column)
        local sc f
        for sc in upload download; do
                timeout 300 "$bench" --native "${addr[$1]}" --http "${http[$1]}" --scenario $sc \
                        --files "$files" --size $size --conns 4 >"$tmp/cb" || exit 1
                for f in native http; do
                        cb[$2.$f.$sc]=$(awk -v f=$f -v s=$sc '$1 == f && $2 == s {print $6}' "$tmp/cb")
                done
        done
}
faces R1 shared
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
one=() two=()
for ((i = 0; i < runs; i++)); do # paired, alternating which goes first
        if ((i % 2)); then two+=("$(download R1 R2)"); one+=("$(download R1)")
        else one+=("$(download R1)"); two+=("$(download R1 R2)"); fi
done
d1=$(printf '%s\n' "${one[@]}" | median)
d2=$(printf '%s\n' "${two[@]}" | median)
# the baseline: one relay on the same pool without rados_shared (records in its own index)
relay_stop R1
relay_stop R2
relay_start R0 --sync none --log-level warn --store rados --rados-conf "$conf" \
        --rados-pool "$pool" --rados-user "${user#client.}" || { cat "$tmp/R0.log"; exit 1; }
faces R0 index
ratio() { bc -l <<<"scale=2; $1 / $2"; }
cat <<EOF
| $(date -u +%F) · $files files of 8 MiB, $conns at once, median of $runs · $(nproc) cores shared by the OSD, the monitor, the relays and curl | MB/s | ratio |
|---|---|---|
| rados bench write -t 16 -b 1M (${secs} s) | $rw | 1 |
| rados bench seq -t 16 (${secs} s) | $rs | 1 |
| tus upload through relay 1 (--rados-shared) | $up | $(ratio "$up" "$rw") of rados write |
| native upload, chapar-bench, 4 connections, --rados-shared | ${cb[shared.native.upload]} | $(ratio "${cb[shared.native.upload]}" "$rw") of rados write (goal ≥ 0.8); $(ratio "${cb[shared.native.upload]}" "${cb[index.native.upload]}") of the same without rados_shared |
| http upload, chapar-bench, 4 connections, --rados-shared | ${cb[shared.http.upload]} | $(ratio "${cb[shared.http.upload]}" "$rw") of rados write (goal ≥ 0.8); $(ratio "${cb[shared.http.upload]}" "${cb[index.http.upload]}") of the same without rados_shared |
| native upload, chapar-bench, 4 connections, one relay without rados_shared | ${cb[index.native.upload]} | $(ratio "${cb[index.native.upload]}" "$rw") of rados write |
| http upload, chapar-bench, 4 connections, one relay without rados_shared | ${cb[index.http.upload]} | $(ratio "${cb[index.http.upload]}" "$rw") of rados write |
| native download, chapar-bench, 4 connections, --rados-shared | ${cb[shared.native.download]} | $(ratio "${cb[shared.native.download]}" "$rs") of rados seq (goal ≥ 0.8); $(ratio "${cb[shared.native.download]}" "${cb[index.native.download]}") of the same without rados_shared |
| http download, chapar-bench, 4 connections, --rados-shared | ${cb[shared.http.download]} | $(ratio "${cb[shared.http.download]}" "$rs") of rados seq (goal ≥ 0.8); $(ratio "${cb[shared.http.download]}" "${cb[index.http.download]}") of the same without rados_shared |
| native download, chapar-bench, 4 connections, one relay without rados_shared | ${cb[index.native.download]} | $(ratio "${cb[index.native.download]}" "$rs") of rados seq |
| http download, chapar-bench, 4 connections, one relay without rados_shared | ${cb[index.http.download]} | $(ratio "${cb[index.http.download]}" "$rs") of rados seq |
| GET /f/ID, one relay | $d1 | $(ratio "$d1" "$rs") of rados seq |
| GET /f/ID, two relays | $d2 | $(ratio "$d2" "$d1") of one relay (goal ≥ 1.7); runs: one ${one[*]}, two ${two[*]} |
EOF
