#!/usr/bin/env bash
# Upload tokens on the native face, against real relays with a tenant ("acme", its key from
# chapard tenant-key, its tokens from chapard token and one from Node's mint_token.mjs): no token,
# expired, wrong audience, wrong tenant key, tampered and out-of-scope tokens are refused with
# their reasons; a good token uploads and chapar get fetches without one; a token's byte budget
# holds across a resumed upload (charged once) and across two uploads at once; max_files holds;
# an anonymous client cannot make a relay pull a file through from its peer, while a token with
# the pull scope can; a tenant's concurrent uploads are bounded (LIMITED, "retry after") and a
# slot comes back when its connection goes; a cut upload is resumed only with a token of the
# subject that began it (another token id of it is charged for the file); what a token spent
# stays spent when the relay restarts (the ledger file, a torn tail warned of and skipped); A's
# /metrics counts every refusal by its reason (token_missing 1, token_invalid 6, scope 2, quota 5,
# too_big 1). Files are put --no-pad in 64 KiB chunks, so their sizes are known.
# Usage: tokens_native.sh CHAPARD CHAPAR CUTPROXY     (the Node case needs node >= 18)
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
lib_tmp toknat
cs=65536
unset CHAPAR_TOKEN

for r in A B; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done
line=$("$chapard" tenant-key --out "$tmp/acme.tk" | tail -n 1)
"$chapard" tenant-key --out "$tmp/other.tk" >/dev/null # a key the relays do not have
check "chapard tenant-key prints the config line: ${line:0:30}..." \
        "[[ '$line' =~ ^token_key\ =\ [0-9a-f]{16}:[0-9a-f]{64}$ ]]"

solo=$("$chapard" tenant-key --out "$tmp/solo.tk" | tail -n 1) # one upload at a time
small=$("$chapard" tenant-key --out "$tmp/small.tk" | tail -n 1) # 320000 bytes stored at most
conf() { # relay peer-name peer-addr peer-key
        printf '[server]\naudience = fed.example\n[tenant "acme"]\n%s\n' "$line" >"$tmp/$1.ini"
        printf '[tenant "solo"]\n%s\nmax_concurrent_uploads = 1\n' "$solo" >>"$tmp/$1.ini"
        printf '[tenant "small"]\n%s\nmax_stored = 320000\n' "$small" >>"$tmp/$1.ini"
        printf '[peer "%s"]\naddress = %s\npubkey = %s\n' "$2" "$3" "$4" >>"$tmp/$1.ini"
}
start() { relay_start "$1" --config "$tmp/$1.ini" --key "$tmp/$1.key" --log-level info; }
# A is the origin; B fetches from A (A only needs B's key to take its handshake)
conf A B 127.0.0.1:1 "${key[B]}"
start A
conf B A "${addr[A]}" "${key[A]}"
start B
check "A says uploads need a token" \
        "grep -qF '3 tenants: uploads, offers and pull-through need a token' '$tmp/A.log'"

mint() { # [chapard token args]: a token of acme for A unless --audience says otherwise
        "$chapard" token --key "$tmp/acme.tk" --tenant acme --audience "${key[A]}" "$@"
}
put() { # FILE [chapar put args]: through A, or $via
        "$chapar" put "$1" --relay "${via:-${addr[A]}}" --relay-key "${key[A]}" --chunk-size $cs \
                --no-pad "${@:2}"
}
refused() { # NAME EXIT-WANTED MESSAGE -- put args: the put fails with that exit and message
        local name=$1 want=$2 msg=$3
        shift 4
        put "$@" >"$tmp/out" 2>"$tmp/err"
        local rc=$?
        check "$name: refused (exit $rc): $(head -c 200 "$tmp/err" | tr '\n' ' ')" \
                "[ $rc -eq $want ] && grep -qF -- \"\$msg\" '$tmp/err' && [ ! -s '$tmp/out' ]"
}
head -c 200000 /dev/urandom >"$tmp/f1"

# ---- refusals ----
refused "no token" 2 "needs an upload token" -- "$tmp/f1"
check "and says how to give one" "grep -qF 'pass --token TOKEN or set CHAPAR_TOKEN' '$tmp/err'"
past=$(($(date +%s) - 7200))
refused "a token expired an hour ago" 2 "token has expired" -- "$tmp/f1" \
        --token "$(mint --now $past --ttl 3600)"
refused "a token for relay B" 2 "token is for another relay" -- "$tmp/f1" \
        --token "$(mint --audience "${key[B]}")"
refused "a token for the name other.example" 2 "token is for another relay" -- "$tmp/f1" \
        --token "$(mint --audience other.example)"
refused "a token signed with a key acme does not have" 2 \
        "token signed by a key the tenant does not have" -- "$tmp/f1" \
        --token "$("$chapard" token --key "$tmp/other.tk" --tenant acme --audience "${key[A]}")"
good=$(mint --bytes 10000000)
i=$((${#good} / 2))
c=${good:$i:1}
[ "$c" = A ] && r=B || r=A
refused "the token with its character $i changed ($c to $r)" 2 "token" -- "$tmp/f1" \
        --token "${good:0:$i}$r${good:$((i + 1))}"
check "which the relay calls not valid: $(grep -o 'the HELLO token: [a-z ]*' "$tmp/err")" \
        "grep -qE 'the HELLO token: token (signature is not valid|signed by a key)' '$tmp/err'"
refused "an offer-only token used to upload" 2 "token does not allow this" -- "$tmp/f1" \
        --token "$(mint --scope offer)"
export CHAPAR_TOKEN
CHAPAR_TOKEN=$(mint --ttl 60 --now $past)
refused "an expired token from CHAPAR_TOKEN" 2 "token has expired" -- "$tmp/f1"
unset CHAPAR_TOKEN
refused "a 200000-byte file under a 100000-byte token (it could never fit)" 2 \
        "size over limit" -- "$tmp/f1" --token "$(mint --bytes 100000)"

# ---- a good token uploads; get needs none ----
t1=$(put "$tmp/f1" --token "$good" 2>"$tmp/err")
check "a good token uploads 200000 bytes: ${t1:0:40}..." "[ -n '$t1' ]"
"$chapar" get "$t1" -o "$tmp/f1.got" >/dev/null 2>"$tmp/err"
check "chapar get fetches it without a token ($(stat -c %s "$tmp/f1.got" 2>/dev/null) bytes)" \
        "cmp -s '$tmp/f1' '$tmp/f1.got'"
export CHAPAR_TOKEN
CHAPAR_TOKEN=$(mint --audience fed.example)
t1b=$(put "$tmp/f1" 2>"$tmp/err")
unset CHAPAR_TOKEN
check "a token from CHAPAR_TOKEN naming the [server] audience fed.example: the same file" \
        "[ '$t1b' = '$t1' ]"
t1c=$(put "$tmp/f1" --token "$(mint --audience acme)" 2>"$tmp/err")
check "a token naming its tenant as audience: the same file" "[ '$t1c' = '$t1' ]"
"$chapar" stat "$t1" --json >"$tmp/stat" 2>"$tmp/err"
check "stat without a token: complete, neither created nor expires told ($(cut -c 60-200 "$tmp/stat"))" \
        "grep -q '\"complete\":true' '$tmp/stat' && grep -q '\"created\":0,' '$tmp/stat' &&
         grep -q '\"expires\":0,' '$tmp/stat' && grep -q '\"times_withheld\":true' '$tmp/stat'"
"$chapar" stat "$t1" --json --token "$(mint)" >"$tmp/stat" 2>"$tmp/err"
told=$(sed -n 's/.*"expires":\([0-9]*\).*/\1/p' "$tmp/stat")
check "stat with a token: created and expires told (expires in $((${told:-0} - $(date +%s))) s)" \
        "grep -q '\"times_withheld\":false' '$tmp/stat' && [ '${told:-0}' -gt $(date +%s) ]"

# ---- Node's token ----
if command -v node >/dev/null; then
        seed=$(sed -n 's/^seed //p' "$tmp/acme.tk")
        kid=${line#token_key = }
        kid=${kid%%:*}
        id=$(head -c 16 /dev/urandom | xxd -p -c 32)
        nt=$(node "$here/interop/mint_token.mjs" --seed "$seed" --kid "$kid" --tenant acme \
                --subject node-user --token-id "$id" --issued-at "$(date +%s)" --ttl 600 \
                --bytes 1000000 --files 2 --file-life 3600 --scope upload \
                --audience-key "${key[A]}")
        head -c 150000 /dev/urandom >"$tmp/fn"
        tn=$(put "$tmp/fn" --token "$nt" 2>"$tmp/err")
        "$chapar" get "$tn" -o "$tmp/fn.got" >/dev/null 2>&1
        check "a Node-minted token (${#nt} characters) uploads 150000 bytes, fetched back" \
                "[ -n '$tn' ] && cmp -s '$tmp/fn' '$tmp/fn.got'"
else
        bad "node is not installed (scripts/deps --test): the Node-minted token is not tried"
fi

# ---- max_files ----
mf=$(mint --files 2 --bytes 10000000)
for n in 1 2 3; do head -c $((20000 + n)) /dev/urandom >"$tmp/m$n"; done
put "$tmp/m1" --token "$mf" >/dev/null 2>&1
r1=$?
put "$tmp/m2" --token "$mf" >/dev/null 2>&1
r2=$?
refused "a third file under a 2-file token (the first two: exit $r1, $r2)" 2 \
        "over the token's budget" -- "$tmp/m3" --token "$mf"
check "the first two went through" "[ $r1 -eq 0 ] && [ $r2 -eq 0 ]"
put "$tmp/m1" --token "$mf" >/dev/null 2>&1
rc=$?
check "and the first again is no new file (exit $rc)" "[ $rc -eq 0 ]"

# ---- the byte budget across a resume: the same file is charged once ----
head -c 600000 /dev/urandom >"$tmp/r1"
head -c 600000 /dev/urandom >"$tmp/r2"
rt=$(mint --bytes 900000 --files 10)
cut_put() { # NAME FILE TOKEN: a put through a proxy of its own, cut after 300000 bytes
        # (a proxy of its own for each held upload: no earlier connection can claim its cut)
        proxy_start "$1" "${addr[A]##*:}"
        proxy_hold "$1" 300000 up
        "$chapar" put "$2" --relay "127.0.0.1:${proxy_port[$1]}" --relay-key "${key[A]}" \
                --chunk-size $cs --no-pad --token "$3" >/dev/null 2>&1 &
        local p=$!
        lib_track $p
        proxy_held "$1"
        kill $p 2>/dev/null
        wait $p 2>/dev/null
        proxy_release "$1"
}
cut_put resume "$tmp/r1" "$rt"
t=$(put "$tmp/r1" --token "$rt" --json 2>"$tmp/err")
sent=$(sed -n 's/.*"bytes_sent":\([0-9]*\).*/\1/p' <<<"$t")
total=$(sed -n 's/.*"bytes_total":\([0-9]*\).*/\1/p' <<<"$t")
check "a 600000-byte file cut after 300000 bytes resumes under a 900000-byte token (sent $sent of $total)" \
        "[ -n '$sent' ] && [ '$sent' -gt 0 ] && [ '$sent' -lt '$total' ]"
refused "then a second 600000-byte file is over that budget" 2 "over the token's budget" -- \
        "$tmp/r2" --token "$rt"

# ---- a resume needs a token of the subject that began the upload ----
head -c 600000 /dev/urandom >"$tmp/sa"
head -c 100000 /dev/urandom >"$tmp/sb"
head -c 400000 /dev/urandom >"$tmp/sc"
cut_put subject "$tmp/sa" "$(mint --subject alice --bytes 10000000)"
bob=$(mint --subject bob --bytes 700000 --files 1)
refused "alice's upload cut after 300000 bytes, resumed with a token of bob" 2 \
        "the upload was begun under another subject" -- "$tmp/sa" --token "$bob"
check "with the relay's reason: $(grep -o 'OPEN (a resume[^)]*)' "$tmp/err")" \
        "grep -qF 'OPEN (a resume needs a token of the subject that began the upload)' '$tmp/err'"
tb=$(put "$tmp/sb" --token "$bob" 2>"$tmp/err")
check "bob's 1-file token was not charged for the refused resume: it uploads another file" \
        "[ -n '$tb' ]"
alice2=$(mint --subject alice --bytes 900000 --files 10) # another token id of alice
t=$(put "$tmp/sa" --token "$alice2" --json 2>"$tmp/err")
sent=$(sed -n 's/.*"bytes_sent":\([0-9]*\).*/\1/p' <<<"$t")
total=$(sed -n 's/.*"bytes_total":\([0-9]*\).*/\1/p' <<<"$t")
check "another token of alice resumes it and completes (sent $sent of $total)" \
        "[ -n '$sent' ] && [ '$sent' -gt 0 ] && [ '$sent' -lt '$total' ]"
refused "that token was charged for the file (600000 of 900000): 400000 more bytes are over" 2 \
        "over the token's budget" -- "$tmp/sc" --token "$alice2"

# ---- the byte budget across two uploads at once ----
ct=$(mint --bytes 900000 --files 10)
proxy_start two "${addr[A]##*:}"
proxy_hold two 300000 up
via=127.0.0.1:${proxy_port[two]} put "$tmp/r2" --token "$ct" >"$tmp/c1.out" 2>"$tmp/c1.err" &
p=$!
lib_track $p
proxy_held two
head -c 600000 /dev/urandom >"$tmp/r3"
refused "while one 600000-byte upload is under way, a second under the same token" 2 \
        "over the token's budget" -- "$tmp/r3" --token "$ct"
proxy_release two
wait $p
rc=$?
check "and the first one finishes (exit $rc)" "[ $rc -eq 0 ] && [ -s '$tmp/c1.out' ]"

# ---- a tenant's uploads in progress: the slot is given back when the connection goes ----
st=$("$chapard" token --key "$tmp/solo.tk" --tenant solo --audience "${key[A]}" --bytes 10000000)
proxy_start solo "${addr[A]##*:}"
proxy_hold solo 300000 up
"$chapar" put "$tmp/r3" --relay "127.0.0.1:${proxy_port[solo]}" --relay-key "${key[A]}" \
        --chunk-size $cs --no-pad --token "$st" >/dev/null 2>&1 &
p=$!
lib_track $p
proxy_held solo
head -c 100000 /dev/urandom >"$tmp/s2"
refused "a second upload of a tenant with max_concurrent_uploads = 1" 2 "retry after 5 s" -- \
        "$tmp/s2" --token "$st"
check "which says it is a limit: $(grep -o 'the relay is over a limit[^:]*' "$tmp/err")" \
        "grep -qF 'the relay is over a limit: retry later' '$tmp/err'"
kill $p 2>/dev/null
wait $p 2>/dev/null
proxy_release solo
tries=0
wait_for 20 "tries=\$((tries + 1)); put '$tmp/s2' --token '$st' >/dev/null 2>&1"
rc=$?
check "once the first client is gone its slot is free: the second uploads (after $tries tries)" \
        "[ $rc -eq 0 ]"

# ---- pull-through: B fetches from A only for a token with the pull scope ----
native_sent() {
        curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_bytes_sent_total{face="native"} //p'
}
head -c 300000 /dev/urandom >"$tmp/p1"
tp=$(put "$tmp/p1" --token "$good" 2>"$tmp/err")
s0=$(native_sent)
"$chapar" get "$tp" --via "${addr[B]}" --trust-new-relay -o "$tmp/p1.anon" >/dev/null 2>"$tmp/err"
rc=$?
s1=$(native_sent)
check "an anonymous get via B is refused (exit $rc): $(head -c 160 "$tmp/err")" \
        "[ $rc -eq 2 ] && grep -qF 'pull-through' '$tmp/err' && [ ! -e '$tmp/p1.anon' ]"
check "and A sent B nothing for it ($((s1 - s0)) bytes)" "[ $((s1 - s0)) -lt 1000 ]"
"$chapar" get "$tp" --via "${addr[B]}" --token "$(mint --audience "${key[B]}" --scope upload)" \
        -o "$tmp/p1.up" >/dev/null 2>"$tmp/err"
rc=$?
check "a token without the pull scope is refused too (exit $rc): $(head -c 120 "$tmp/err")" \
        "[ $rc -eq 2 ] && grep -qF 'token does not allow this' '$tmp/err'"
"$chapar" get "$tp" --via "${addr[B]}" --token "$(mint --audience "${key[B]}" --scope pull)" \
        -o "$tmp/p1.pull" >/dev/null 2>"$tmp/err"
rc=$?
s2=$(native_sent)
check "a token with the pull scope gets it via B (exit $rc, A sent $((s2 - s1)) bytes)" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/p1' '$tmp/p1.pull' && [ $((s2 - s1)) -ge 300000 ]"

# ---- the tenant's store quota (max_stored), checked by A's writer ----
smint() { "$chapard" token --key "$tmp/small.tk" --tenant small --audience "${key[A]}" "$@"; }
head -c 200000 /dev/urandom >"$tmp/s1"
head -c 200000 /dev/urandom >"$tmp/s2"
put "$tmp/s1" --token "$(smint)" >/dev/null 2>"$tmp/err"
rc1=$?
st=$(smint --files 2)
refused "a second 200000 B file for a tenant with max_stored 320000 (the first: exit $rc1)" 2 \
        "max_stored" -- "$tmp/s2" --token "$st"
check "... the first went through" "[ $rc1 -eq 0 ]"
# the refusal took nothing from the token: its two files are both still there
head -c 50000 /dev/urandom >"$tmp/s3"
head -c 50000 /dev/urandom >"$tmp/s4"
put "$tmp/s3" --token "$st" >/dev/null 2>"$tmp/err" && put "$tmp/s4" --token "$st" >/dev/null 2>>"$tmp/err"
rc=$?
check "the refused file cost the 2-file token nothing: two 50000 B files fit (exit $rc)" \
        "[ $rc -eq 0 ]"

# ---- every refusal on A so far, counted by its reason ----
refusals() { # REASON: A's chapar_refusals_total{reason="REASON"}
        curl -s --max-time 10 "http://${http[A]}/metrics" |
                sed -n "s/^chapar_refusals_total{reason=\"$1\"} //p"
}
for want in token_missing=1 token_invalid=6 scope=2 quota=5 too_big=1; do
        got=$(refusals "${want%=*}")
        check "A counted refusals{reason=\"${want%=*}\"}: ${got:-absent}, want ${want#*=}" \
                "[ '${got:-}' = '${want#*=}' ]"
done

# ---- the ledger survives a restart: what a token spent before it stays spent ----
lt=$(mint --bytes 520000 --files 5) # (room for the encryption's overhead)
head -c 300000 /dev/urandom >"$tmp/l1"
head -c 250000 /dev/urandom >"$tmp/l2"
head -c 200000 /dev/urandom >"$tmp/l3"
put "$tmp/l1" --token "$lt" >/dev/null 2>"$tmp/err"
rc=$?
check "300000 bytes of a 520000-byte token are spent (exit $rc)" "[ $rc -eq 0 ]"
relay_stop A
rc=$?
check "A stops (exit $rc)" "[ $rc -eq 0 ]"
# as if A had been killed while appending a record: a torn tail, which it warns of and skips
check "A's ledger is in its data directory" "[ -s '$tmp/A.data/ledger' ]"
printf 'C torn' >>"$tmp/A.data/ledger"
start A
check "A, restarted, replays its token ledger" "grep -qE 'token ledger: [1-9][0-9]* charges kept' '$tmp/A.log'"
check "... and warns of the 6 torn bytes at its end" \
        "grep -qF 'ends in 6 bytes that are torn or corrupt: ignored' '$tmp/A.log'"
refused "after the restart, 250000 more bytes are over that token's budget" 2 \
        "over the token's budget" -- "$tmp/l2" --token "$lt"
put "$tmp/l3" --token "$lt" >/dev/null 2>"$tmp/err"
rc=$?
check "the rest of it applies: 200000 more bytes fit (exit $rc)" "[ $rc -eq 0 ]"
put "$tmp/l1" --token "$lt" >/dev/null 2>"$tmp/err"
rc=$?
check "the file spent before the restart is not charged again (exit $rc)" "[ $rc -eq 0 ]"

for r in A B; do
        relay_stop $r
        rc=$?
        check "relay $r stops cleanly (exit $rc)" "[ $rc -eq 0 ]"
done
finish
