#!/usr/bin/env bash
# Federation with real relays on loopback: A (origin), B (peers with A), C (peers with no one),
# D (lists A as a peer, but A does not list D). Put to A; get via B is identical; via C refused;
# a large get via B reaches the client before A has sent it all; an offer from A makes B fetch
# ahead of any request; A stopped: B serves from its cache; A killed mid-fetch: B says what it
# cannot do, then resumes when A is back; A serving a corrupted chunk: B refuses it, stores
# nothing of it, logs it; D's handshake is refused by A.
# Usage: test_federation.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
tmp=$(mktemp -d /tmp/chapar-fed-XXXXXX)
export XDG_CONFIG_HOME=$tmp/config XDG_CACHE_HOME=$tmp/cache
unset CHAPAR_RELAY
declare -A pid addr http key
passed=0
failed=0

cleanup() {
        for r in "${!pid[@]}"; do kill "${pid[$r]}" 2>/dev/null; done
        wait 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); return 1; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

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
start() { # relay [port]
        local r=$1 port=${2:-0}
        rm -f "$tmp/$r.ready"
        "$chapard" --config "$tmp/$r.ini" --data "$tmp/$r.data" --key "$tmp/$r.key" \
                --listen 127.0.0.1:$port --http 127.0.0.1:0 --ready-file "$tmp/$r.ready" \
                --log-level info 2>>"$tmp/$r.log" &
        pid[$r]=$!
        for _ in $(seq 200); do grep -q pubkey "$tmp/$r.ready" 2>/dev/null && break; sleep 0.05; done
        addr[$r]=$(sed -n 's/^native=//p' "$tmp/$r.ready")
        http[$r]=$(sed -n 's/^http=//p' "$tmp/$r.ready")
}
stop() { # relay [signal]; a TERM stop must exit 0 (a sanitizer report would not)
        kill -"${2:-TERM}" "${pid[$1]}"
        wait "${pid[$1]}" 2>/dev/null
        local rc=$?
        unset "pid[$1]"
        if [ "${2:-TERM}" = TERM ] && [ $rc -ne 0 ]; then
                bad "relay $1 stopped with exit $rc"
                tail -20 "$tmp/$1.log"
        fi
}

# A first (B's address is not known yet), then B and C and D, then A again with B's address
conf A B 127.0.0.1:1 "${key[B]}"
start A
conf B A "${addr[A]}" "${key[A]}"
start B
conf C
start C
conf D A "${addr[A]}" "${key[A]}"
start D
stop A
conf A B "${addr[B]}" "${key[B]}"
start A "${addr[A]##*:}"

yes CHAPAR-FED | head -c 5000000 >"$tmp/f1"
t1=$("$chapar" put "$tmp/f1" --relay "${addr[A]}")
"$chapar" get "$t1" --via "${addr[B]}" -o "$tmp/f1.b" >/dev/null 2>"$tmp/err"
check "get via B (peered with A) is identical" "cmp -s '$tmp/f1' '$tmp/f1.b'"
"$chapar" get "$t1" --via "${addr[C]}" -o "$tmp/f1.c" >/dev/null 2>"$tmp/err.c"
rc=$?
check "get via C (not peered) is refused (exit $rc): $(head -c 150 "$tmp/err.c")" "[ $rc -eq 2 ] && grep -q 'not a peer' '$tmp/err.c' && [ ! -e '$tmp/f1.c' ]"
"$chapar" get "$t1" --via "${addr[D]}" -o "$tmp/f1.d" >/dev/null 2>"$tmp/err.d"
rc=$?
check "D, unknown to A, gets nothing (exit $rc)" "[ $rc -ne 0 ] && [ ! -e '$tmp/f1.d' ]"
check "A logs the refused peer handshake" "grep -q 'refusing a peer handshake from unknown key ${key[D]}' '$tmp/A.log'"

# Waits (busy, without forking: a sleep per turn would be too coarse on a loaded machine) until
# the download into $1 has its first bytes, or it is done, or 20 s pass.
first_bytes() {
        local end=$((SECONDS + 20))
        while [ ! -s "$1.chapar-part" ] && [ ! -e "$1" ] && [ $SECONDS -lt $end ]; do :; done
}

# streaming: the client's first bytes arrive while A is still sending
head -c $((120 * 1024 * 1024)) /dev/urandom >"$tmp/f2"
t2=$("$chapar" put "$tmp/f2" --relay "${addr[A]}")
native_sent() { curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_bytes_sent_total{face="native"} //p'; }
before=$(native_sent)
"$chapar" get "$t2" --via "${addr[B]}" -o "$tmp/f2.b" >/dev/null 2>&1 &
g=$!
first_bytes "$tmp/f2.b"
during=$(( $(native_sent) - before ))
wait $g
size=$(stat -c %s "$tmp/f2")
check "the first chunk reached the client when A had sent $during of $size bytes" "[ $during -lt $size ]"
check "the streamed file is identical" "cmp -s '$tmp/f2' '$tmp/f2.b'"

# two users of B asking for the same new file at once: B fetches it from A once
head -c $((20 * 1024 * 1024)) /dev/urandom >"$tmp/f6"
t6=$("$chapar" put "$tmp/f6" --relay "${addr[A]}")
before=$(native_sent)
"$chapar" get "$t6" --via "${addr[B]}" -o "$tmp/f6.x" >/dev/null 2>&1 &
g1=$!
"$chapar" get "$t6" --via "${addr[B]}" -o "$tmp/f6.y" >/dev/null 2>&1 &
g2=$!
wait $g1 $g2
sent=$(( $(native_sent) - before ))
size=$(stat -c %s "$tmp/f6")
check "two concurrent gets via B: A sent $sent bytes for a $size-byte file (once)" "[ $sent -lt $((size * 3 / 2)) ] && cmp -s '$tmp/f6' '$tmp/f6.x' && cmp -s '$tmp/f6' '$tmp/f6.y'"

# an offer: B fetches before anyone asks
yes CHAPAR-OFFER | head -c 3000000 >"$tmp/f3"
t3=$("$chapar" put "$tmp/f3" --relay "${addr[A]}")
"$chapar" offer "$t3" --to "${key[B]}" 2>"$tmp/err"
check "A accepts an offer to B" "[ $? -eq 0 ]"
for _ in $(seq 100); do
        "$chapar" stat "$t3" --via "${addr[B]}" --json 2>/dev/null | grep -q '"complete":true' && break
        sleep 0.1
done
check "B fetched the offered file in the background" "$chapar stat '$t3' --via '${addr[B]}' --json 2>/dev/null | grep -q '\"complete\":true'"

# a file fetched halfway when A dies: B says what it cannot do; A back, the fetch resumes
head -c $((80 * 1024 * 1024)) /dev/urandom >"$tmp/f4"
t4=$("$chapar" put "$tmp/f4" --relay "${addr[A]}")
aport=${addr[A]##*:}
"$chapar" get "$t4" --via "${addr[B]}" -o "$tmp/f4.b" >/dev/null 2>"$tmp/err.4" &
g=$!
first_bytes "$tmp/f4.b"
stop A KILL
wait $g
rc=$?
# what B holds it still serves; what it cannot, it says
if [ $rc -ne 0 ]; then
        check "with A gone, the get stops with a clear message (exit $rc): $(head -c 160 "$tmp/err.4")" "grep -qi 'reach\|lost\|origin\|peer' '$tmp/err.4'"
else
        ok "(the get finished before A died)"
fi
start A "$aport"
"$chapar" get "$t4" --via "${addr[B]}" -o "$tmp/f4.b" >/dev/null 2>"$tmp/err.4b"
check "A back: the fetch resumes and the file is identical" "cmp -s '$tmp/f4' '$tmp/f4.b'" ||
        cat "$tmp/err.4b"

# A stopped: B serves from its cache
stop A
rm -f "$tmp/f1.b2"
"$chapar" get "$t1" --via "${addr[B]}" -o "$tmp/f1.b2" >/dev/null 2>"$tmp/err"
check "A stopped: get via B still succeeds from B's cache" "cmp -s '$tmp/f1' '$tmp/f1.b2'"
"$chapar" get "$t3" --via "${addr[B]}" -o "$tmp/f3.b" >/dev/null 2>"$tmp/err"
check "A stopped: the offered file comes from B" "cmp -s '$tmp/f3' '$tmp/f3.b'"

# a peer serving bytes that do not match their address: B refuses them and stores nothing
yes CHAPAR-TAMPER | head -c 2000000 >"$tmp/f5"
start A "$aport"
t5=$("$chapar" put "$tmp/f5" --relay "${addr[A]}")
stop A
seg=$(ls "$tmp/A.data/segments/"*.seg | tail -1)
at=$(( $(stat -c %s "$seg") - 100 )) # inside the last chunk stored: f5's
byte=$(dd if="$seg" bs=1 skip=$at count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "\\x$(printf %02x $(( byte ^ 0xff )))" | dd of="$seg" bs=1 seek=$at conv=notrunc 2>/dev/null
start A "$aport"
"$chapar" get "$t5" --via "${addr[B]}" -o "$tmp/f5.b" >/dev/null 2>"$tmp/err.5"
rc=$?
check "a corrupted chunk from A is refused (exit $rc), no file" "[ $rc -ne 0 ] && [ ! -e '$tmp/f5.b' ]" ||
        { cat "$tmp/err.5"; tail -5 "$tmp/B.log"; }
check "B logs the peer that sent bad bytes" "grep -q 'does not match its address' '$tmp/B.log'"
stop B
"$chapard" verify --data "$tmp/B.data" >"$tmp/verify" 2>&1
check "B's store is clean (nothing of the bad chunk kept)" "[ $? -eq 0 ]"
for r in "${!pid[@]}"; do stop "$r"; done

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
