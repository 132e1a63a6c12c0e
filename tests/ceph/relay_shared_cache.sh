#!/usr/bin/env bash
# The local read cache ([store] cache_size) of a relay over the shared state (--rados-shared), on
# a throw-away cluster of its own: a download (GET /f/ID, chapar get) fills DATA/cache with its
# chunks as files named by their address, holding those bytes (a truncated one is ignored and
# filled again); a chunk read from the pool counts as one miss; once the pool's chunk objects are
# gone, the cached files still download byte for byte (the file records stay in the pool, which
# over the shared state every lookup asks: with the OSD stopped nothing downloads), served from
# the cache (/metrics: chapar_cache_hits_total grows), while a file that was never downloaded
# fails cleanly and the relay goes on, holding no cached file open. CHAPAR_TEST_CACHE_SIZE=0
# runs those checks without the cache (they fail). Skips (77) without the ceph packages or a
# relay built without the RADOS backend.
# Usage: relay_shared_cache.sh CHAPARD CHAPAR [ON|OFF: built with the RADOS backend]
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/../lib.sh"

[ "${3:-ON}" = ON ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
lib_tmp cephsc
. "$(dirname "$0")/up.sh"

cat >"$tmp/r.ini" <<INI
[server]
tus_chunk_size = 64K
[store]
rados_op_timeout = 3s
cache_size = ${CHAPAR_TEST_CACHE_SIZE:-1M}
INI
if ! relay_start R --config "$tmp/r.ini" --store rados --rados-shared --rados-conf "$conf" \
        --rados-pool "$pool" --rados-user "${user#client.}"; then
        cat "$tmp/R.log"
        bad "chapard --store rados --rados-shared starts with cache_size"
        finish
        exit
fi
ok "chapard --store rados --rados-shared starts with cache_size"

trust=()
"$chapar" --help 2>&1 | grep -q -- --trust-new-relay && trust=(--trust-new-relay)
put() { "$chapar" put "$1" --relay "${addr[R]}" --relay-key "${key[R]}" --chunk-size 1048576 \
        "${trust[@]}" 2>"$tmp/put.err"; } # FILE: prints the ticket
get_back() { # TICKET FILE: fetched into $tmp/got, compared
        rm -rf "$tmp/got" && mkdir "$tmp/got" &&
                (cd "$tmp/got" && timeout -k 2 60 "$chapar" get "$1" >/dev/null 2>>"$tmp/get.err") &&
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
        curl -sS -m 60 -o "$tmp/f.out" "http://${http[R]}/f/$1" && cmp -s "$2" "$tmp/f.out"
}
r() { timeout -k 2 30 rados -c "$conf" -n "$user" -p "$pool" "$@"; }
metric() { # NAME: its value on /metrics, 0 when absent
        curl -sS "http://${http[R]}/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}
cdir_=$tmp/R.data/cache
ncached() { find "$cdir_" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{64}' 2>/dev/null | wc -l; }
cached() { [ -f "$cdir_/$1" ]; } # ADDRESS (hex)
named_by_bytes() { # every cached file holds the bytes of its name
        local f
        for f in $(find "$cdir_" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{64}'); do
                [ "$(sha256sum <"$f" | cut -c 1-64)" = "$(basename "$f")" ] || return 1
        done
}

head -c 300000 /dev/urandom >"$tmp/tus.bin"
fid=$(tus "$tmp/tus.bin")
head -c 200000 /dev/urandom >"$tmp/other.bin"
fid2=$(tus "$tmp/other.bin")
head -c 200000 /dev/urandom >"$tmp/late.bin"
late=$(put "$tmp/late.bin") || { cat "$tmp/put.err"; bad "chapar put"; }
check "two tus uploads and a chapar put" "[ -n '$fid' ] && [ -n '$fid2' ] && [ -n '$late' ]"
tus_addrs=() # the tus file's 5 chunks of 64 KiB (the last 37856 bytes), by their SHA-256
for i in 0 1 2 3 4; do
        tus_addrs+=("$(dd if="$tmp/tus.bin" bs=65536 skip=$i count=1 2>/dev/null | sha256sum | cut -c 1-64)")
done
all_cached() { for a in "${tus_addrs[@]}"; do cached "$a" || return 1; done; }

misses=$(metric chapar_cache_misses_total)
check "cold GET /f/ID: the same bytes" "f_same '$fid' '$tmp/tus.bin'"
n=$(metric chapar_cache_misses_total)
check "/metrics: its 5 chunks read from the pool are 5 misses ($misses -> $n)" \
        "[ $n = $((misses + 5)) ]"
check "its 5 chunks are then files of DATA/cache, named by address" "wait_for 20 all_cached"
check "cold chapar get: the same bytes" 'get_back "$late" "$tmp/late.bin"' || tail -3 "$tmp/get.err"
# (chapar's chunks are encrypted end to end: their addresses are not the plaintext's)
check "its chunk is then a file of DATA/cache too" "wait_for 20 '[ \$(ncached) = 6 ]'"
check "every cached file holds the bytes its name is the SHA-256 of" named_by_bytes
truncate -s 1000 "$cdir_/${tus_addrs[1]}"
check "a truncated cache file is ignored: GET /f/ID, the same bytes" "f_same '$fid' '$tmp/tus.bin'"
check "and replaced by the whole chunk" \
        "wait_for 20 '[ \"\$(stat -c %s \"$cdir_/${tus_addrs[1]}\" 2>/dev/null)\" = 65536 ]'"

# the chunks' objects gone from the pool: what is cached is served from the cache alone
hits=$(metric chapar_cache_hits_total)
for o in $(r -N c ls); do r -N c rm "$o"; done
check "the pool holds no chunk object any more" "[ \$(r -N c ls | wc -l) = 0 ]"
check "pool's chunks gone: GET /f/ID of the cached file, the same bytes" "f_same '$fid' '$tmp/tus.bin'"
check "pool's chunks gone: chapar get of the cached file, the same bytes" \
        'get_back "$late" "$tmp/late.bin"' || tail -3 "$tmp/get.err"
n=$(metric chapar_cache_hits_total)
check "/metrics: chapar_cache_hits_total grew by the 6 chunks or more ($hits -> $n)" \
        "[ $n -ge $((hits + 6)) ]"
check "pool's chunks gone: GET /f/ID of a file never downloaded fails" "! f_same '$fid2' '$tmp/other.bin'"
check "and the relay goes on: the cached file again, the same bytes" "f_same '$fid' '$tmp/tus.bin'"
open_cached() { find "/proc/${pid[R]}/fd" -lname "$cdir_/*" 2>/dev/null | wc -l; }
# a splice's descriptor is closed once the response is sent: give it until then
check "the relay holds no cached file open once its downloads are done" "wait_for 10 '[ \$(open_cached) = 0 ]'"
check "the relay stops cleanly with the cache (exit 0)" "relay_stop R" || tail -20 "$tmp/R.log"
finish
