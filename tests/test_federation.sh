#!/usr/bin/env bash
# Federation with real relays on loopback: A (origin), B (peers with A, reaching it through
# cutproxy so a test can hold A's bytes at a known count), C (peers with no one), D (lists A as
# a peer, but A does not list D). Put to A; get via B is identical; via C refused; a get via B
# reaches the client while A's bytes are held; two gets at once make B fetch once; an offer
# from A makes B fetch ahead of any request; A killed mid-fetch: B says what it cannot do, then
# resumes when A is back; A stopped: B serves from its cache; A serving a corrupted chunk: B
# refuses it, stores nothing of it, logs it; D's handshake is refused by A. /metrics counts
# fetches and offers by peer and its state (B: A up, a file done, one not found; D: A failing; A:
# B unused, then up once offered to). The access logs
# name the client's OFFER on A's native face, and A's PREFETCH and B's fetches on the peer face. Files are small,
# in 64 KiB chunks: what is proven is the chunk-by-chunk flow, not the volume.
# Usage: test_federation.sh CHAPARD CHAPAR CUTPROXY
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/lib.sh"
lib_tmp fed
cs=65536

for r in A B C D; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done

conf() { # relay [peer-name peer-addr peer-key]...
        local r=$1
        shift
        : >"$tmp/$r.ini"
        while [ $# -ge 3 ]; do
                printf '[peer "%s"]\naddress = %s\npubkey = %s\n' "$1" "$2" "$3" >>"$tmp/$r.ini"
                shift 3
        done
}
start() { # relay
        relay_start "$1" --config "$tmp/$1.ini" --key "$tmp/$1.key" --log-level info \
                --access-log "$tmp/$1.access"
}
stop() { # relay [signal]; a TERM stop must exit 0 (a sanitizer report would not)
        relay_stop "$@"
        local rc=$?
        if [ "${2:-TERM}" = TERM ] && [ $rc -ne 0 ]; then
                bad "relay $1 stopped with exit $rc"
                tail -20 "$tmp/$1.log"
        fi
}
put() { "$chapar" put "$1" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size $cs; }
# A first (B's address is not known yet), then the proxy to A, B and C and D, then A again
# with B's address
conf A B 127.0.0.1:1 "${key[B]}"
start A
proxy_start A "${addr[A]##*:}"
conf B A "127.0.0.1:${proxy_port[A]}" "${key[A]}"
start B
conf C
start C
conf D A "${addr[A]}" "${key[A]}"
start D
stop A
conf A B "${addr[B]}" "${key[B]}"
start A

yes CHAPAR-FED | head -c 300000 >"$tmp/f1"
t1=$(put "$tmp/f1")
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o "$tmp/f1.b" >/dev/null 2>"$tmp/err"
check "get via B (peered with A) is identical" "cmp -s '$tmp/f1' '$tmp/f1.b'"
"$chapar" get "$t1" --via "${addr[C]}" --trust-new-relay -o "$tmp/f1.c" >/dev/null 2>"$tmp/err.c"
rc=$?
check "get via C (not peered) is refused (exit $rc): $(head -c 150 "$tmp/err.c")" "[ $rc -eq 2 ] && grep -q 'not a peer' '$tmp/err.c' && [ ! -e '$tmp/f1.c' ]"
"$chapar" get "$t1" --via "${addr[D]}" --trust-new-relay -o "$tmp/f1.d" >/dev/null 2>"$tmp/err.d"
rc=$?
check "D, unknown to A, gets nothing (exit $rc)" "[ $rc -ne 0 ] && [ ! -e '$tmp/f1.d' ]"
check "A logs the refused peer handshake" "grep -q 'refusing a peer handshake from unknown key ${key[D]}' '$tmp/A.log'"

# /metrics by peer: B fetched f1 from A (done), then asks A for a file it lacks (not_found); D's
# fetch from A failed at the handshake (A's state there: failing); A has not used B yet
zeros=$(printf '0%.0s' $(seq 64))
"$chapar" get "chapar://${addr[A]}/${key[A]}/$(printf '7%.0s' $(seq 64))#$zeros" --via "${addr[B]}" \
        --trust-new-relay -o "$tmp/none.b" >/dev/null 2>"$tmp/err.none"
rc=$?
check "a get via B of a file A lacks fails (exit $rc): $(head -c 120 "$tmp/err.none")" \
        "[ $rc -ne 0 ] && [ ! -e '$tmp/none.b' ]"
for r in A B D; do curl -s "http://${http[$r]}/metrics" >"$tmp/$r.metrics"; done
has() { # RELAY LINE: /metrics of RELAY has exactly this line
        check "$1's /metrics: $2" "grep -qxF '$2' '$tmp/$1.metrics'"
}
has B 'chapar_peer_fetches_total{peer="A",outcome="done"} 1'
has B 'chapar_peer_fetches_total{peer="A",outcome="not_found"} 1'
has B 'chapar_peer_fetches_total{peer="A",outcome="failed"} 0'
has B 'chapar_peer_up{peer="A"} 1'
has D 'chapar_peer_fetches_total{peer="A",outcome="failed"} 1'
has D 'chapar_peer_up{peer="A"} 0'
has A 'chapar_peer_up{peer="B"} 0'
has A 'chapar_peer_fetches_total{peer="B",outcome="done"} 0'
check "the relay-wide series stay: B's chapar_fetches_total{outcome=\"done\"} 1" \
        "grep -qxF 'chapar_fetches_total{outcome=\"done\"} 1' '$tmp/B.metrics'"
if command -v promtool >/dev/null; then
        check "promtool check metrics accepts B's page" \
                "promtool check metrics <'$tmp/B.metrics' >'$tmp/promtool' 2>&1" || cat "$tmp/promtool"
fi

native_sent() { curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_bytes_sent_total{face="native"} //p'; }

# streaming: the client's first bytes arrive while A's are held after 256 KiB (of 2 MiB)
head -c $((2 * 1024 * 1024)) /dev/urandom >"$tmp/f2"
t2=$(put "$tmp/f2")
proxy_hold A $((256 * 1024))
"$chapar" get "$t2" --via "${addr[B]}" --trust-new-relay -o "$tmp/f2.b" >/dev/null 2>&1 &
g=$!
proxy_held A
wait_for 20 "[ -s '$tmp/f2.b.chapar-part' ]"
check "the first chunks reached the client while A's bytes were held after 256 KiB" \
        "[ -s '$tmp/f2.b.chapar-part' ] && [ ! -e '$tmp/f2.b' ]"
proxy_release A
wait $g
check "the streamed file is identical" "cmp -s '$tmp/f2' '$tmp/f2.b'"

# two users of B asking for the same new file at once: B fetches it from A once. A's bytes are
# held until both clients have their first chunk, so the two gets overlap on every run.
head -c $((1024 * 1024)) /dev/urandom >"$tmp/f6"
t6=$(put "$tmp/f6")
before=$(native_sent)
proxy_hold A $((256 * 1024))
"$chapar" get "$t6" --via "${addr[B]}" --trust-new-relay -o "$tmp/f6.x" >/dev/null 2>&1 &
g1=$!
proxy_held A
"$chapar" get "$t6" --via "${addr[B]}" --trust-new-relay -o "$tmp/f6.y" >/dev/null 2>&1 &
g2=$!
wait_for 20 "[ -s '$tmp/f6.x.chapar-part' ] && [ -s '$tmp/f6.y.chapar-part' ]"
check "both gets had their first chunks while A's bytes were held" \
        "[ -s '$tmp/f6.x.chapar-part' ] && [ -s '$tmp/f6.y.chapar-part' ]"
proxy_release A
wait $g1 $g2
sent=$(( $(native_sent) - before ))
size=$(stat -c %s "$tmp/f6")
check "two concurrent gets via B: A sent $sent bytes for a $size-byte file (once)" "[ $sent -lt $((size * 3 / 2)) ] && cmp -s '$tmp/f6' '$tmp/f6.x' && cmp -s '$tmp/f6' '$tmp/f6.y'"

# an offer: B fetches before anyone asks
yes CHAPAR-OFFER | head -c 200000 >"$tmp/f3"
t3=$(put "$tmp/f3")
"$chapar" offer "$t3" --to "${key[B]}" 2>"$tmp/err"
check "A accepts an offer to B" "[ $? -eq 0 ]"
wait_for 20 "'$chapar' stat '$t3' --via '${addr[B]}' --trust-new-relay --json 2>/dev/null | grep -q '\"complete\":true'"
check "B fetched the offered file in the background" "$chapar stat '$t3' --via '${addr[B]}' --trust-new-relay --json 2>/dev/null | grep -q '\"complete\":true'"
offered() { curl -s "http://${http[A]}/metrics" | grep -qxF 'chapar_peer_offers_sent_total{peer="B"} 1'; }
wait_for 20 offered
check "A's /metrics: one offer sent to B" offered
check "A's /metrics: chapar_peer_up{peer=\"B\"} 1 once it reached B" \
        "curl -s 'http://${http[A]}/metrics' | grep -qxF 'chapar_peer_up{peer=\"B\"} 1'"

# A dies when B has fetched 512 KiB of a 2 MiB file: the get stops and says why; A back, the
# fetch resumes where it stopped (the restarted A sends less than the file)
head -c $((2 * 1024 * 1024)) /dev/urandom >"$tmp/f4"
t4=$(put "$tmp/f4")
proxy_hold A $((512 * 1024))
"$chapar" get "$t4" --via "${addr[B]}" --trust-new-relay -o "$tmp/f4.b" >/dev/null 2>"$tmp/err.4" &
g=$!
proxy_held A
check "B's fetch of the file was cut after 512 KiB" "[ -e '$tmp/A.proxy/cut' ]"
stop A KILL
wait $g
rc=$?
check "with A gone, the get stops with a clear message (exit $rc): $(head -c 160 "$tmp/err.4")" \
        "[ $rc -ne 0 ] && [ ! -e '$tmp/f4.b' ] && grep -qi 'reach\|lost\|origin\|peer' '$tmp/err.4'"
start A
"$chapar" get "$t4" --via "${addr[B]}" --trust-new-relay -o "$tmp/f4.b" >/dev/null 2>"$tmp/err.4b"
check "A back: the fetch resumes and the file is identical" "cmp -s '$tmp/f4' '$tmp/f4.b'" ||
        cat "$tmp/err.4b"
sent=$(native_sent)
size=$(stat -c %s "$tmp/f4")
check "the restarted A sent only the rest ($sent bytes for a $size-byte file)" \
        "[ -n '$sent' ] && [ $sent -lt $size ]"

# A stopped: B serves from its cache
stop A
rm -f "$tmp/f1.b2"
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o "$tmp/f1.b2" >/dev/null 2>"$tmp/err"
check "A stopped: get via B still succeeds from B's cache" "cmp -s '$tmp/f1' '$tmp/f1.b2'"
"$chapar" get "$t3" --via "${addr[B]}" --trust-new-relay -o "$tmp/f3.b" >/dev/null 2>"$tmp/err"
check "A stopped: the offered file comes from B" "cmp -s '$tmp/f3' '$tmp/f3.b'"

# a peer serving bytes that do not match their address: B refuses them and stores nothing
yes CHAPAR-TAMPER | head -c 250000 >"$tmp/f5" # the last chunk is above inline_max: in a segment
start A
t5=$(put "$tmp/f5")
stop A
seg=$(ls "$tmp/A.data/segments/"*.seg | tail -1)
at=$(( $(stat -c %s "$seg") - 100 )) # inside the last chunk stored: f5's
byte=$(dd if="$seg" bs=1 skip=$at count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "\\x$(printf %02x $(( byte ^ 0xff )))" | dd of="$seg" bs=1 seek=$at conv=notrunc 2>/dev/null
start A
"$chapar" get "$t5" --via "${addr[B]}" --trust-new-relay -o "$tmp/f5.b" >/dev/null 2>"$tmp/err.5"
rc=$?
check "a corrupted chunk from A is refused (exit $rc), no file" "[ $rc -ne 0 ] && [ ! -e '$tmp/f5.b' ]" ||
        { cat "$tmp/err.5"; tail -5 "$tmp/B.log"; }
check "B logs the peer that sent bad bytes" "grep -q 'does not match its address' '$tmp/B.log'"
stop B
"$chapard" verify --data "$tmp/B.data" >"$tmp/verify" 2>&1
check "B's store is clean (nothing of the bad chunk kept)" "[ $? -eq 0 ]"
for r in "${!pid[@]}"; do stop "$r"; done
# the access logs (every relay stopped: every line written) tell clients from peer relays
check "A's access log: the client's OFFER on the native face" \
        "grep -q 'face=native .*method=OFFER .*status=ok' '$tmp/A.access'"
check "B's access log: A's PREFETCH on the peer face" \
        "grep -q 'face=peer .*method=PREFETCH .*status=ok' '$tmp/B.access'"
check "A's access log: B's fetches on the peer face" \
        "grep -q 'face=peer .*method=GET_MANIFEST .*status=ok' '$tmp/A.access'"
finish
