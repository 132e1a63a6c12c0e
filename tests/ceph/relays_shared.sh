#!/usr/bin/env bash
# Three relays on one pool ([store] rados_shared), one identity (the same --key), on a
# throw-away cluster of their own (docs/scale-out.md, the test plan's item 3):
# - a file put via relay 1 is fetched via relays 2 and 3 (the ticket's address swapped: one name);
# - a native put cut mid-way on relay 1 (cutproxy) is resumed on relay 2, which is sent only the
#   chunks relay 1 did not store, and comes back whole via relay 3;
# - a tus upload begun on relay 1 is finished on relay 2 (HEAD there gives relay 1's offset) and
#   downloaded from relay 3 (GET /f/ID);
# - the same content put through relays 2 and 3 at once is stored once: the pool holds one object
#   per chunk of it;
# - a relay stopped does not stop the others, and comes back serving what they stored meanwhile.
# Skips (77) without the ceph packages or a relay built without the RADOS backend.
# Usage: relays_shared.sh CHAPARD CHAPAR CUTPROXY [ON|OFF: built with the RADOS backend]
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/../lib.sh"

[ "${4:-ON}" = ON ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
lib_tmp cephsh
. "$(dirname "$0")/up.sh"

cat >"$tmp/r.ini" <<INI
[server]
tus_chunk_size = 64K
[store]
rados_op_timeout = 3s
INI
"$chapard" keygen --out "$tmp/relay.key" >/dev/null 2>&1 || bad "chapard keygen"
args=(--config "$tmp/r.ini" --key "$tmp/relay.key" --store rados --rados-shared
        --rados-conf "$conf" --rados-pool "$pool" --rados-user "${user#client.}")
for r in R1 R2 R3; do
        if ! relay_start $r "${args[@]}"; then
                cat "$tmp/$r.log"
                bad "relay $r starts with --store rados --rados-shared"
                finish
                exit
        fi
done
ok "three relays start on one pool with --rados-shared"
check "the three relays have one key" "[ '${key[R1]}' = '${key[R2]}' ] && [ '${key[R2]}' = '${key[R3]}' ]"

put() { # RELAY-ADDRESS FILE [extra args]: the put's --json line on stdout
        local a=$1 f=$2
        shift 2
        "$chapar" put "$f" --relay "$a" --relay-key "${key[R1]}" --chunk-size 1048576 --json "$@" \
                2>>"$tmp/put.err"
}
json() { sed -n "s/.*\"$1\":\\(\"[^\"]*\"\\|[0-9]*\\).*/\\1/p" | tr -d '"'; } # FIELD
via() { sed "s#^chapar://[^/]*/#chapar://$1/#"; } # ADDRESS: the ticket, for another relay
get_back() { # TICKET FILE: fetched into $tmp/got, compared
        rm -rf "$tmp/got" && mkdir "$tmp/got" &&
                (cd "$tmp/got" && "$chapar" get "$1" >/dev/null 2>>"$tmp/get.err") &&
                cmp -s "$2" "$tmp/got/$(basename "$2")"
}
r() { timeout -k 2 30 rados -c "$conf" -n "$user" -p "$pool" "$@"; }

# ---- put on 1, get on 2 and 3
head -c 3000000 /dev/urandom >"$tmp/one.bin"
out=$(put "${addr[R1]}" "$tmp/one.bin") || { cat "$tmp/put.err"; bad "chapar put via relay 1"; }
t1=$(json ticket <<<"$out")
check "put via relay 1, get via relay 1: the same bytes" 'get_back "$t1" "$tmp/one.bin"'
check "put via relay 1, get via relay 2: the same bytes" \
        'get_back "$(via "${addr[R2]}" <<<"$t1")" "$tmp/one.bin"' || tail -5 "$tmp/get.err"
check "put via relay 1, get via relay 3: the same bytes" \
        'get_back "$(via "${addr[R3]}" <<<"$t1")" "$tmp/one.bin"' || tail -5 "$tmp/get.err"

# ---- a native put cut on relay 1, resumed on relay 2
head -c 6000000 /dev/urandom >"$tmp/cut.bin"
proxy_start P1 "${addr[R1]##*:}"
proxy_hold P1 3500000 up # the client's bytes to relay 1 stop after ~3 chunks
# (--connections 1: the cut holds one connection; a second would carry the chunks past it)
objs0=$(r -N c ls | wc -l)
"$chapar" put "$tmp/cut.bin" --relay "127.0.0.1:${proxy_port[P1]}" --relay-key "${key[R1]}" \
        --chunk-size 1048576 --connections 1 >/dev/null 2>>"$tmp/put.err" &
cut_pid=$!
lib_track $cut_pid
proxy_held P1 || bad "the put through the proxy reaches its cut"
# the chunks before the cut reach the pool (their acknowledgements cannot come back)
check "relay 1 stored chunks of the cut put" "wait_for 20 '[ \$(r -N c ls | wc -l) -ge $((objs0 + 2)) ]'"
kill "$cut_pid" 2>/dev/null
wait "$cut_pid" 2>/dev/null
proxy_release P1
out=$(put "${addr[R2]}" "$tmp/cut.bin") || { tail -5 "$tmp/put.err"; bad "the cut put, again via relay 2"; }
total=$(json chunks_total <<<"$out")
sent=$(json chunks_sent <<<"$out")
echo "resumed on relay 2: $sent of $total chunks sent"
check "relay 2 resumed relay 1's upload: it was sent fewer chunks ($sent) than the file has ($total)" \
        "[ -n '$sent' ] && [ -n '$total' ] && [ '$sent' -lt '$total' ]"
t2=$(json ticket <<<"$out")
check "the resumed file via relay 3: the same bytes" \
        'get_back "$(via "${addr[R3]}" <<<"$t2")" "$tmp/cut.bin"' || tail -5 "$tmp/get.err"

# ---- tus: begun on relay 1, finished on relay 2, downloaded from relay 3
head -c 300000 /dev/urandom >"$tmp/tus.bin"
loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 300000' \
        "http://${http[R1]}/files/" | tr -d '\r' | sed -n 's/^Location: //Ip')
path=/${loc#http*://*/}
curl -sS -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
        -H 'Content-Type: application/offset+octet-stream' \
        --data-binary @<(head -c 150000 "$tmp/tus.bin") "http://${http[R1]}$path"
off=$(curl -sS -I -H 'Tus-Resumable: 1.0.0' "http://${http[R2]}$path" | tr -d '\r' |
        sed -n 's/^Upload-Offset: //Ip')
check "tus HEAD on relay 2 gives the offset relay 1 reached (150000; got $off)" "[ '$off' = 150000 ]"
curl -sS -D "$tmp/patch2.head" -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' \
        -H 'Upload-Offset: 150000' -H 'Content-Type: application/offset+octet-stream' \
        --data-binary @<(tail -c +150001 "$tmp/tus.bin") "http://${http[R2]}$path"
fid=$(tr -d '\r' <"$tmp/patch2.head" | sed -n 's/^Chapar-File-Id: //Ip')
check "tus PATCH of the rest on relay 2 completes the file" "[ -n '$fid' ]" || cat "$tmp/patch2.head"
curl -sS -o "$tmp/f.out" "http://${http[R3]}/f/$fid"
check "GET /f/ID on relay 3: the tus file's bytes" "cmp -s '$tmp/tus.bin' '$tmp/f.out'"

# ---- the same content through two relays at once: stored once
# (two puts of one file from one machine send the same ciphertext only once its key is in the
# client's key cache: a first put, cut before its first chunk is whole, leaves it there)
before=$(r -N c ls | wc -l)
head -c 2500000 /dev/urandom >"$tmp/twice.bin"
proxy_hold P1 200000 up
"$chapar" put "$tmp/twice.bin" --relay "127.0.0.1:${proxy_port[P1]}" --relay-key "${key[R1]}" \
        --chunk-size 1048576 --connections 1 >/dev/null 2>>"$tmp/put.err" &
cut_pid=$!
lib_track $cut_pid
proxy_held P1 || bad "the first put of the twice-put file reaches its cut"
kill "$cut_pid" 2>/dev/null
wait "$cut_pid" 2>/dev/null
proxy_release P1
put "${addr[R2]}" "$tmp/twice.bin" >"$tmp/twice2.json" &
p2=$!
put "${addr[R3]}" "$tmp/twice.bin" >"$tmp/twice3.json" &
p3=$!
wait $p2
rc2=$?
wait $p3
rc3=$?
check "the same file put via relays 2 and 3 at once: both puts succeed" "[ $rc2 = 0 ] && [ $rc3 = 0 ]" ||
        tail -5 "$tmp/put.err"
total=$(json chunks_total <"$tmp/twice2.json")
after=$(r -N c ls | wc -l)
check "its $total chunks are $((after - before)) new objects: stored once" \
        "[ -n '$total' ] && [ $((after - before)) = '$total' ]"
check "and it comes back via relay 1" \
        'get_back "$(via "${addr[R1]}" <<<"$(json ticket <"$tmp/twice3.json")")" "$tmp/twice.bin"'

# ---- a relay stopped: the others go on; back, it serves what they stored meanwhile
check "relay 2 stops cleanly (exit 0)" "relay_stop R2" || tail -20 "$tmp/R2.log"
head -c 1200000 /dev/urandom >"$tmp/late.bin"
out=$(put "${addr[R3]}" "$tmp/late.bin") || bad "put via relay 3 while relay 2 is down"
t3=$(json ticket <<<"$out")
check "with relay 2 down, relay 1 serves relay 3's new file" \
        'get_back "$(via "${addr[R1]}" <<<"$t3")" "$tmp/late.bin"'
relay_start R2 "${args[@]}" || bad "relay 2 restarts"
check "relay 2, restarted, serves it too" \
        'get_back "$(via "${addr[R2]}" <<<"$t3")" "$tmp/late.bin"'

# ---- the OSD stopped mid-upload: clean, retryable errors; once it is back the upload resumes
head -c 3000000 /dev/urandom >"$tmp/osd.bin"
kill -STOP "$osd"
wait_for 5 "grep -q '^State:[[:space:]]*T' /proc/$osd/status" # every thread stopped
loc=$(curl -sS -D - -o /dev/null -m 60 -X POST -H 'Tus-Resumable: 1.0.0' \
        -H 'Upload-Length: 70000' "http://${http[R1]}/files/" | tr -d '\r' | sed -n '1s/^HTTP[^ ]* //p')
put "${addr[R3]}" "$tmp/osd.bin" >/dev/null
put_rc=$?
kill -CONT "$osd"
check "OSD stopped: a tus POST is answered 503 (got $loc)" "[[ '$loc' == 503* ]]"
check "OSD stopped: chapar put via relay 3 fails saying to retry after N s" \
        "[ $put_rc != 0 ] && tail -3 '$tmp/put.err' | grep -qi 'retry after [0-9]* s'" || tail -3 "$tmp/put.err"
# a client retries after the N s it was told; here: once the OSD answers again
wait_for 30 "r -N i stat none 2>&1 | grep -q 'No such file'"
out=$(put "${addr[R3]}" "$tmp/osd.bin") || tail -3 "$tmp/put.err"
check "OSD running again: the same put via relay 3 succeeds, and comes back via relay 1" \
        'get_back "$(via "${addr[R1]}" <<<"$(json ticket <<<"$out")")" "$tmp/osd.bin"'

# ---- /metrics counts the shared state's operations
metric() { # RELAY NAME{LABELS}: its value on the relay's /metrics, 0 when absent
        curl -sS "http://${http[$1]}/metrics" | awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }'
}
for op in record_write record_read chunk_write chunk_read; do
        n=$(metric R1 "chapar_store_op_seconds_count{backend=\"rados\",op=\"$op\"}")
        check "/metrics of relay 1: its $op operations are counted ($n)" "[ '$n' -ge 1 ]"
done
n=$(metric R1 'chapar_store_errors_total{backend="rados",op="record_write",error="unavailable"}')
n2=$(metric R1 'chapar_store_errors_total{backend="rados",op="record_read",error="unavailable"}')
check "/metrics of relay 1: what the stopped OSD did not answer is counted ($n + $n2)" \
        "[ $((n + n2)) -ge 1 ]"

for rr in R1 R2 R3; do
        check "relay $rr stops cleanly (exit 0)" "relay_stop $rr" || tail -20 "$tmp/$rr.log"
done

# ---- chapard verify of the shared state: clean, then two damages it must name
vargs=(--store rados --rados-shared --rados-conf "$conf" --rados-pool "$pool" --rados-user "${user#client.}")
"$chapard" verify --data "$tmp/R1.data" "${vargs[@]}" >"$tmp/verify" 2>&1
rc=$?
cat "$tmp/verify"
check "chapard verify --store rados --rados-shared: exit 0, no problems" \
        '[ $rc -eq 0 ] && grep -q ": 0 problems" "$tmp/verify"'
check "verify counted the files (4 or more)" \
        "grep -Eq ', ([4-9]|[1-9][0-9]+) files' '$tmp/verify'"
victim=$(r -N c ls | sort | head -1)
gone=$(r -N c ls | sort | sed -n 2p)
head -c 100 /dev/urandom >"$tmp/junk"
r -N c put "$victim" "$tmp/junk"
r -N c rm "$gone"
"$chapard" verify --data "$tmp/R1.data" "${vargs[@]}" >"$tmp/verify2" 2>&1
rc=$?
check "verify after damage: exit 1" "[ $rc -eq 1 ]" || cat "$tmp/verify2"
check "verify names the chunk whose bytes do not hash to its name" \
        "grep -q '$victim: its bytes do not hash' '$tmp/verify2'" || cat "$tmp/verify2"
check "verify names the removed chunk as not stored" \
        "grep -q '($gone) is not stored' '$tmp/verify2'" || cat "$tmp/verify2"
finish
