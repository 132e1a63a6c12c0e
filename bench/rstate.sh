#!/usr/bin/env bash
# The shared state's operations (server/store/rados_state.h, not yet wired into chapard) beside
# RADOS itself, in one run on one pool (docs/scale-out.md, "The goal's budget"). Each round:
#   rados-write  `rados bench T write -t 16 -b 1M`           the cluster's write bandwidth
#   rados-seq    `rados bench T seq -t 16` of those objects   its read bandwidth
#   bench_rstate (bench/bench_rstate.c): FILES files of 8 MiB uploaded (upload create, CHUNK_PUT +
#                UPLOAD_PUT_CHUNK of 1 MiB chunks, 16 in flight, COMMIT) and downloaded
#                (FILE_GET, CHUNK_READ, 16 in flight; then CHUNK_READ_XXH3); SMALL files of one 64 KiB chunk, 16 at
#                once and then one at a time: files per second, mean COMMIT latency; and 16 at
#                once again with tenant "" (usage untracked, no compare-and-set on t/<tenant>);
#                upload creates and commits answered CHP_ELIMITED are counted and retried
# then every object of the pool is removed, so that rounds start alike. Figures are medians of
# ROUNDS rounds; upload and download also as ratios to rados bench write and seq of the same
# round (medians of those ratios).
# Everything runs on this machine: a throw-away cluster (tests/ceph/cluster.sh: one monitor, one
# memstore OSD) shares its cores with the benchmark, which the report says beside the ratios.
# Usage: bench/rstate.sh [-t SECONDS] [-n ROUNDS] [-f FILES] [-m SMALL] [BENCH_RSTATE]
#   defaults: -t 10 -n 3 -f 16 -m 200 build/bin/bench_rstate
# Prints a Markdown table; exits 77 without the Ceph packages or a RADOS-enabled build.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=10 rounds=3 files=16 small=200
while getopts t:n:f:m: o; do
        case $o in
        t) secs=$OPTARG ;;
        n) rounds=$OPTARG ;;
        f) files=$OPTARG ;;
        m) small=$OPTARG ;;
        *) sed -n 15,16p "$0" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
bin=${1:-$here/../build/bin/bench_rstate}
for p in ceph-mon ceph-osd rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done
[ -x "$bin" ] || { echo "SKIP: no $bin (built without librados-dev?)"; exit 77; }
tmp=$(mktemp -d /tmp/rstbench.XXXX)
cdir=$(mktemp -d /tmp/cph.XXXX)
trap '"$here/../tests/ceph/cluster.sh" stop "$cdir"; rm -rf "$tmp"' EXIT
eval "$("$here/../tests/ceph/cluster.sh" start "$cdir" rsbench)" || exit 1
r() { timeout -k 2 $((secs * 4 + 60)) rados -c "$conf" -n "$user" -p "$pool" "$@"; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { bc -l <<<"scale=2; $1 / $2"; }
declare -A v # v[NAME] = the rounds' values, one a line
add() { v[$1]+="$2"$'\n'; }

for ((i = 0; i < rounds; i++)); do
        r bench "$secs" write -t 16 -b 1M --no-cleanup >"$tmp/w" 2>&1
        r bench "$secs" seq -t 16 >"$tmp/s" 2>&1
        r cleanup >/dev/null 2>&1
        rw=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/w")
        rs=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/s")
        [ -n "$rw" ] && [ -n "$rs" ] || { cat "$tmp/w" "$tmp/s"; exit 1; }
        timeout 600 "$bin" -f "$files" -n "$small" -1 "$conf" "$pool" "$user" >"$tmp/b" ||
                { cat "$tmp/b"; exit 1; }
        # the small files again with usage untracked (tenant ""): what the tenant's counter costs
        timeout 600 "$bin" -f 1 -n "$small" -u "$conf" "$pool" "$user" >"$tmp/u" ||
                { cat "$tmp/u"; exit 1; }
        sed -n 's/^\(small_files_per_s\|commit_ms\) /untracked_\1 /p' "$tmp/u" >>"$tmp/b"
        add rw "$rw"
        add rs "$rs"
        while read -r name val; do add "$name" "$val"; done <"$tmp/b"
        add up_ratio "$(ratio "$(awk '$1 == "upload_MBps" {print $2}' "$tmp/b")" "$rw")"
        add down_ratio "$(ratio "$(awk '$1 == "download_MBps" {print $2}' "$tmp/b")" "$rs")"
        add downh_ratio "$(ratio "$(awk '$1 == "download_xxh3_MBps" {print $2}' "$tmp/b")" "$rs")"
        # every object of every namespace, so that the next round starts from an empty pool
        timeout 300 rados -c "$conf" -n "$admin" purge "$pool" --yes-i-really-really-mean-it \
                >/dev/null 2>&1 || { echo "purging $pool failed" >&2; exit 1; }
        echo "round $((i + 1)): $(tr '\n' ' ' <"$tmp/b") rados write $rw seq $rs" >&2
done
m() { printf '%s' "${v[$1]}" | median; }
all() { printf '%s' "${v[$1]}" | sort -g | paste -sd/ -; }
cat <<EOF
| $(date -u +%F) · median of $rounds rounds (all rounds sorted) · $(nproc) cores shared by the OSD, the monitor and the benchmark | median | ratio |
|---|---|---|
| rados bench write -t 16 -b 1M (${secs} s), MB/s | $(m rw) ($(all rw)) | 1 |
| rados bench seq -t 16 (${secs} s), MB/s | $(m rs) ($(all rs)) | 1 |
| upload over rados_state, $files files of 8 MiB, 1 MiB chunks, 16 in flight, MB/s | $(m upload_MBps) ($(all upload_MBps)) | $(m up_ratio) ($(all up_ratio)) of rados write (goal ≥ 0.8) |
| download over rados_state (FILE_GET, CHUNK_READ), 16 in flight, MB/s | $(m download_MBps) ($(all download_MBps)) | $(m down_ratio) ($(all down_ratio)) of rados seq (goal ≥ 0.8) |
| the same with CHUNK_READ_XXH3 (the store's read: the put's XXH3 checked), MB/s | $(m download_xxh3_MBps) ($(all download_xxh3_MBps)) | $(m downh_ratio) ($(all downh_ratio)) of rados seq (goal ≥ 0.8) |
| one core's SHA-256 (CHUNK_PUT and CHUNK_READ hash each chunk), MB/s | $(m sha256_MBps) ($(all sha256_MBps)) | |
| commit of an 8-chunk file (amid the uploads), mean ms | $(m big_commit_ms) ($(all big_commit_ms)) | |
| $small files of one 64 KiB chunk, 16 at once, files/s | $(m small_files_per_s) ($(all small_files_per_s)) | |
| their commit, mean ms | $(m commit_ms) ($(all commit_ms)) | |
| the same, tenant "" (usage untracked), 16 at once, files/s | $(m untracked_small_files_per_s) ($(all untracked_small_files_per_s)) | |
| their commit, mean ms | $(m untracked_commit_ms) ($(all untracked_commit_ms)) | |
| upload creates and commits answered CHP_ELIMITED (usage compare-and-set lost 8×) and retried, per round | $(m limited) ($(all limited)) | |
| tracked, one at a time, files/s | $(m small_files_per_s_1) ($(all small_files_per_s_1)) | |
| its commit, mean ms | $(m commit_ms_1) ($(all commit_ms_1)) | |
EOF
