#!/usr/bin/env bash
# A whole relay on the RADOS backend (chapard --store rados) on a throw-away cluster of its own:
# chapar put of a few MiB comes back with chapar get, a tus upload comes back from GET /f/ID, the
# chunks are objects of the namespace "c", a restarted relay still serves both, and chapard verify
# --store rados finds the store clean. /metrics counts the backend's writes and reads, shows what
# is in flight, and counts the writes that failed while the OSD was stopped. With the OSD stopped (SIGSTOP; rados_op_timeout 3 s), a tus
# PATCH is answered 503 with Retry-After and a native put fails saying to retry later; once the
# OSD runs again (SIGCONT) the same put succeeds. With [store] cache_size = 1M (the read cache):
# chunks read once are files of DATA/cache named by address, and with the OSD stopped the cached
# files still download byte for byte (GET /f/ID and chapar get); a truncated cache file is ignored
# and replaced; a restart finds the cached files again (and removes temporary ones); a deleted
# file's chunks leave the cache; after 3 MB more it holds at most 1 MiB.
# The live scrub (chapard admin verify) reads every chunk and fills nothing into the cache.
# CHAPAR_TEST_CACHE_SIZE=0 runs those checks without the cache (they fail). Skips (77) without the ceph packages or a relay
# built without the RADOS backend.
# Usage: relay_rados.sh CHAPARD CHAPAR [ON|OFF: built with the RADOS backend]
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/../lib.sh"

[ "${3:-ON}" = ON ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
lib_tmp cephrl
. "$(dirname "$0")/up.sh"

cat >"$tmp/r.ini" <<INI
[server]
tus_chunk_size = 64K
[store]
rados_op_timeout = 3s
INI
rados_args=(--store rados --rados-conf "$conf" --rados-pool "$pool" --rados-user "${user#client.}")
if ! relay_start R --config "$tmp/r.ini" "${rados_args[@]}"; then
        cat "$tmp/R.log"
        bad "chapard --store rados starts"
        finish
        exit
fi
ok "chapard --store rados starts"

trust=()
"$chapar" --help 2>&1 | grep -q -- --trust-new-relay && trust=(--trust-new-relay)
put() { "$chapar" put "$1" --relay "${addr[R]}" --relay-key "${key[R]}" --chunk-size 1048576 \
        "${trust[@]}" 2>"$tmp/put.err"; } # FILE: prints the ticket
get_back() { # TICKET FILE: fetched into $tmp/got, compared
        rm -rf "$tmp/got" && mkdir "$tmp/got" &&
                (cd "$tmp/got" && "$chapar" get "$1" >/dev/null 2>>"$tmp/get.err") &&
                cmp -s "$2" "$tmp/got/$(basename "$2")"
}
tus() { # FILE: uploads it by tus, prints the file id
        local loc size
        size=$(stat -c %s "$1")
        loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
                -H "Upload-Length: $size" "http://${http[R]}/files/" |
                tr -d '\r' | sed -n 's/^Location: //Ip')
        case "$loc" in http*) ;; *) loc=http://${http[R]}$loc ;; esac
        curl -sS -D "$tmp/patch.head" -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' \
                -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' \
                --data-binary @"$1" "$loc"
        tr -d '\r' <"$tmp/patch.head" | sed -n 's/^Chapar-File-Id: //Ip'
}
f_same() { # ID FILE
        rm -f "$tmp/f.out"
        curl -sS -o "$tmp/f.out" "http://${http[R]}/f/$1" && cmp -s "$2" "$tmp/f.out"
}
r() { timeout -k 2 30 rados -c "$conf" -n "$user" -p "$pool" "$@"; }
metric() { # NAME{LABELS}: its value on /metrics, 0 when absent
        curl -sS "http://${http[R]}/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}

head -c 3000000 /dev/urandom >"$tmp/big.bin"
ticket=$(put "$tmp/big.bin") || { cat "$tmp/put.err"; bad "chapar put"; }
check "chapar put of 3 MB, then chapar get: the same bytes" 'get_back "$ticket" "$tmp/big.bin"'
head -c 300000 /dev/urandom >"$tmp/tus.bin"
fid=$(tus "$tmp/tus.bin")
check "a tus upload, then GET /f/ID: the same bytes" "[ -n '$fid' ] && f_same '$fid' '$tmp/tus.bin'"
objs=$(r -N c ls | wc -l)
# 3 chunks of 1 MiB (the last one smaller) and 5 of 64 KiB (the last one 37856 bytes)
check "rados -N c ls lists the 8 chunk objects (got $objs)" "[ '$objs' = 8 ]"
n=$(metric 'chapar_store_op_seconds_count{backend="rados",op="chunk_write"}')
check "/metrics: the backend's chunk writes are counted ($n)" "[ '$n' -ge 8 ]"
n=$(metric 'chapar_store_op_seconds_count{backend="rados",op="chunk_read"}')
check "/metrics: the backend's chunk reads are counted ($n)" "[ '$n' -ge 8 ]"
check "/metrics: the in-flight gauge" \
        "curl -sS 'http://${http[R]}/metrics' | grep -q '^chapar_store_inflight{backend=\"rados\"} [0-9]'"
check "/metrics: no chapar_cache_* series without a cache" \
        "! curl -sS 'http://${http[R]}/metrics' | grep -q '^chapar_cache_'"
if command -v promtool >/dev/null; then
        curl -sS "http://${http[R]}/metrics" >"$tmp/metrics"
        echo "/metrics: $(wc -c <"$tmp/metrics") bytes"
        check "promtool check metrics accepts /metrics on rados" \
                "promtool check metrics <'$tmp/metrics' >'$tmp/promtool' 2>&1" || cat "$tmp/promtool"
fi
one=$(r -N c ls | head -1)
check "objects are named by the chunk's address" "[[ '$one' =~ ^[0-9a-f]{64}$ ]]"

check "the relay stops cleanly (exit 0)" "relay_stop R" || tail -20 "$tmp/R.log"
relay_start R --config "$tmp/r.ini" "${rados_args[@]}" || bad "the relay restarts"
check "after a restart, chapar get: the same bytes" 'get_back "$ticket" "$tmp/big.bin"'
check "after a restart, GET /f/ID: the same bytes" "f_same '$fid' '$tmp/tus.bin'"

# the OSD does not answer: clear, retryable errors within the op timeout
head -c 200000 /dev/urandom >"$tmp/late.bin"
kill -STOP "$osd"
# kill returns before a busy process's every thread has stopped
wait_for 5 "grep -q '^State:[[:space:]]*T' /proc/$osd/status"
loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 70000' \
        "http://${http[R]}/files/" | tr -d '\r' | sed -n 's/^Location: //Ip')
case "$loc" in http*) ;; *) loc=http://${http[R]}$loc ;; esac
curl -sS -D "$tmp/stopped.head" -o /dev/null -m 60 -X PATCH -H 'Tus-Resumable: 1.0.0' \
        -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' \
        --data-binary @<(head -c 70000 /dev/urandom) "$loc"
put "$tmp/late.bin" >/dev/null
put_rc=$?
kill -CONT "$osd"
check "OSD stopped: a tus PATCH is answered 503" "head -1 '$tmp/stopped.head' | grep -q ' 503'"
check "OSD stopped: the 503 says Retry-After" "grep -qi '^Retry-After: [0-9]' '$tmp/stopped.head'"
check "OSD stopped: chapar put fails saying to retry after N s" \
        "[ $put_rc != 0 ] && grep -qi 'retry after [0-9]* s' '$tmp/put.err'" || cat "$tmp/put.err"
n=$(metric 'chapar_store_errors_total{backend="rados",op="chunk_write",error="unavailable"}')
check "/metrics: the writes that failed with the OSD stopped are counted ($n)" "[ '$n' -ge 1 ]"
late=$(put "$tmp/late.bin") || cat "$tmp/put.err"
check "OSD running again: the same put succeeds" 'get_back "$late" "$tmp/late.bin"'

check "the relay stops cleanly after the outage (exit 0)" "relay_stop R" || tail -20 "$tmp/R.log"
"$chapard" verify --data "$tmp/R.data" "${rados_args[@]}" >"$tmp/verify" 2>&1
rc=$?
cat "$tmp/verify"
check "chapard verify --store rados: exit 0, no problems" \
        '[ $rc -eq 0 ] && grep -q ": 0 problems" "$tmp/verify"'

# ---- the read cache ([store] cache_size): chunks read from the pool become files of DATA/cache
# that downloads splice from; with the OSD stopped, cached files still download
cache_size=${CHAPAR_TEST_CACHE_SIZE:-1M} # 0 shows these checks failing without the cache
cat >"$tmp/c.ini" <<INI
[server]
tus_chunk_size = 64K
[store]
rados_op_timeout = 3s
cache_size = $cache_size
INI
relay_start R --config "$tmp/c.ini" "${rados_args[@]}" || bad "the relay starts with cache_size"
cached() { [ -f "$tmp/R.data/cache/$1" ]; } # ADDRESS (hex)
cache_bytes() {
        find "$tmp/R.data/cache" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{64}' \
                -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}
tus_addrs=() # the tus file's 5 chunks of 64 KiB (the last 37856 bytes), by their SHA-256
for i in 0 1 2 3 4; do
        tus_addrs+=("$(dd if="$tmp/tus.bin" bs=65536 skip=$i count=1 2>/dev/null | sha256sum | cut -c 1-64)")
done
ncached() { find "$tmp/R.data/cache" -maxdepth 1 -regextype egrep -regex '.*/[0-9a-f]{64}' | wc -l; }
all_cached() { for a in "${tus_addrs[@]}"; do cached "$a" || return 1; done; }
none_cached() { for a in "${tus_addrs[@]}"; do cached "$a" && return 1; done; return 0; }

check "cold GET /f/ID: the same bytes" "f_same '$fid' '$tmp/tus.bin'"
check "its 5 chunks are then files of DATA/cache, named by address" "wait_for 20 all_cached"
check "cold chapar get: the same bytes" 'get_back "$late" "$tmp/late.bin"'
# (chapar's chunks are encrypted end to end: their addresses are not the plaintext's)
check "its chunk is then a file of DATA/cache too" "wait_for 20 '[ \$(ncached) = 6 ]'"
kill -STOP "$osd"
f_same "$fid" "$tmp/tus.bin"
f_rc=$?
get_back "$late" "$tmp/late.bin"
get_rc=$?
kill -CONT "$osd"
check "OSD stopped: GET /f/ID of the cached file, the same bytes" "[ $f_rc = 0 ]"
check "OSD stopped: chapar get of the cached file, the same bytes" "[ $get_rc = 0 ]"

# a restart rebuilds the index from the directory, removing the filler's temporary files
check "the relay stops cleanly with a cache (exit 0)" "relay_stop R"
echo torn >"$tmp/R.data/cache/.tmp-${tus_addrs[0]}"
relay_start R --config "$tmp/c.ini" "${rados_args[@]}" || bad "the relay restarts with its cache"
check "a restart removes the cache's temporary files" "[ ! -e '$tmp/R.data/cache/.tmp-${tus_addrs[0]}' ]"
kill -STOP "$osd"
f_same "$fid" "$tmp/tus.bin"
f_rc=$?
kill -CONT "$osd"
check "after a restart, OSD stopped: GET /f/ID from the cache, the same bytes" "[ $f_rc = 0 ]"
n=$(metric chapar_cache_hits_total)
check "/metrics: that GET's 5 chunks were cache hits ($n)" "[ $n -ge 5 ]"
n=$(metric chapar_cache_chunks)
check "/metrics: chapar_cache_chunks is the cache's files ($n)" "[ $n = $(ncached) ]"

truncate -s 1000 "$tmp/R.data/cache/${tus_addrs[1]}"
check "a truncated cache file is ignored: GET /f/ID, the same bytes" "f_same '$fid' '$tmp/tus.bin'"
check "and replaced by the whole chunk" \
        "wait_for 20 '[ \"\$(stat -c %s \"$tmp/R.data/cache/${tus_addrs[1]}\" 2>/dev/null)\" = 65536 ]'"

"$chapard" admin --data "$tmp/R.data" delete "$fid" >"$tmp/del" 2>&1 || cat "$tmp/del"
check "a deleted file's chunks leave DATA/cache" "wait_for 20 none_cached"

check "chapar get of 3 MB through a cache of 1 MiB: the same bytes" \
        'get_back "$ticket" "$tmp/big.bin"'
big_in() { find "$tmp/R.data/cache" -maxdepth 1 -size +500000c | grep -q .; } # a chunk of ~1 MiB
check "one of its chunks of ~1 MiB is cached" "wait_for 20 big_in"
check "the cache holds at most cache_size bytes ($(cache_bytes))" "[ $(cache_bytes) -le 1048576 ]"
n=$(metric chapar_cache_evictions_total)
check "/metrics: evictions counted ($n)" "[ $n -ge 1 ]"
n=$(metric 'chapar_cache_fills_total{outcome="stored"}')
check "/metrics: fills stored counted ($n)" "[ $n -ge 2 ]"
n=$(metric chapar_cache_misses_total)
check "/metrics: misses counted ($n)" "[ $n -ge 2 ]"
# the live scrub reads every chunk of the pool: it must not push them through the cache
before=$(metric 'chapar_cache_fills_total{outcome="stored"}')
"$chapard" admin --data "$tmp/R.data" verify >"$tmp/scrub" 2>&1
scrub_rc=$?
check "the live scrub read every chunk, clean (exit $scrub_rc)" \
        "[ $scrub_rc = 0 ] && grep -Eq 'verify: [a-z]+, ([0-9]+) of \\1 chunks' '$tmp/scrub'" || cat "$tmp/scrub"
sleep 0.5 # a fill is queued on the read's thread and written by the filler: give a stray one time
check "the live scrub fills nothing into the cache" \
        "[ \$(metric 'chapar_cache_fills_total{outcome=\"stored\"}') = $before ]"
check "/metrics: chapar_cache_bytes is the cache's bytes" \
        "[ \$(metric chapar_cache_bytes) = \$(cache_bytes) ]"
check "the relay stops cleanly with the cache (exit 0)" "relay_stop R" || tail -20 "$tmp/R.log"
finish
