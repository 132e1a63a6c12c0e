#!/usr/bin/env bash
# The admin face against a real chapard, driven by chapard admin: files uploaded under two tenants
# (acme, bolt: tokens from chapard token) and without one (an --open relay first, the same data
# directory after); list by tenant newest first, paging covers every file exactly once; stats per
# tenant match what was uploaded (sizes from HTTP HEAD /f/ID); delete -> GET /f/ID 404 and chapar
# get fails at once, the chunks' bytes leave the store; quarantine -> GET 451, a native get and a
# new upload of the same file refused with the reason, unquarantine lets it back; a live verify
# (a throttled scrub while serving) reports progress and a clean store; DATA/admin.sock is 0600;
# the TCP admin face refuses to start without a key and answers 401 without it; the status page
# (HTML and JSON) shows each peer's state and fetches.
# Usage: admin_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
lib_tmp admin
cs=65536
unset CHAPAR_TOKEN

adm() { "$chapard" admin --data "$tmp/A.data" "$@"; }
js() { # PYTHON-EXPR over the JSON on stdin as j
        python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"
}
put() { # FILE [chapar put args]: prints the file id
        "$chapar" put "$1" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size $cs --no-pad \
                "${@:2}" | sed -n 's|^chapar://[^/]*/[0-9a-f]*/\([0-9a-f]\{64\}\)#.*|\1|p'
}
native_get_fails() { # FILE-ID MESSAGE: chapar get of it fails, saying MESSAGE (the key is moot)
        "$chapar" get "chapar://${addr[A]}/${key[A]}/$1#$(printf '0%.0s' $(seq 64))" -o "$tmp/got" \
                >/dev/null 2>"$tmp/err"
        local rc=$?
        check "a native get fails (exit $rc): $(head -c 150 "$tmp/err")" \
                "[ $rc -ne 0 ] && grep -qi '$2' '$tmp/err'"
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "http://${http[A]}/f/$1"; }

# ---- files without a tenant: an --open relay ----
"$chapard" keygen --out "$tmp/A.key" >/dev/null
relay_start A --key "$tmp/A.key" --open --log-level info
declare -A tenant_of size_of
ids=()
for i in 1 2; do
        head -c $((100000 + i * 1000)) /dev/urandom >"$tmp/n$i"
        id=$(put "$tmp/n$i")
        ids+=("$id")
        tenant_of[$id]=""
done
check "two files uploaded without a tenant" "[ \${#ids[@]} -eq 2 ] && [ -n '${ids[1]}' ]"
relay_stop A

# ---- the same data directory with two tenants ----
acme=$("$chapard" tenant-key --out "$tmp/acme.tk" | tail -n 1)
bolt=$("$chapard" tenant-key --out "$tmp/bolt.tk" | tail -n 1)
printf '[tenant "acme"]\n%s\n[tenant "bolt"]\n%s\n' "$acme" "$bolt" >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key" --log-level info
check "the admin socket is DATA/admin.sock, mode 0600: $(stat -c '%A %F' "$tmp/A.data/admin.sock")" \
        "[ \"\$(stat -c %a '$tmp/A.data/admin.sock')\" = 600 ] && [ -S '$tmp/A.data/admin.sock' ]"
check "the ready file has no admin= without --admin-listen" "! grep -q '^admin=' '$tmp/A.ready'"
tok() { "$chapard" token --key "$tmp/$1.tk" --tenant "$1" --audience "${key[A]}" --bytes 100000000; }
for t in acme bolt; do
        n=5
        [ $t = bolt ] && n=3
        for i in $(seq $n); do
                head -c $((70000 + i * 37000)) /dev/urandom >"$tmp/$t$i"
                id=$(put "$tmp/$t$i" --token "$(tok $t)")
                ids+=("$id")
                tenant_of[$id]=$t
        done
done
check "10 files uploaded in all" "[ \${#ids[@]} -eq 10 ]"
for id in "${ids[@]}"; do
        size_of[$id]=$(curl -sI "http://${http[A]}/f/$id" | tr -d '\r' |
                sed -n 's/^Content-Length: //Ip')
done

# ---- list: by tenant, newest first, every file on exactly one page ----
listed() { # [list args]: the ids, in order, of every page of 2 (--all follows the cursors)
        adm --json list --limit 2 --all "$@" | python3 -c '
import json, sys
dec = json.JSONDecoder(); s = sys.stdin.read(); i = 0; last = None; bad = False
while i < len(s):
    while i < len(s) and s[i].isspace(): i += 1
    if i >= len(s): break
    page, i = dec.raw_decode(s, i)
    for f in page["files"]:
        if last is not None and f["created"] > last: bad = True
        last = f["created"]
        print(f["id"], f["tenant"] or "-")
if bad: print("NOT-NEWEST-FIRST")'
}
expect() { # TENANT|all: the ids uploaded, sorted
        for id in "${ids[@]}"; do
                [ "$1" = all ] || [ "${tenant_of[$id]}" = "$1" ] && echo "$id ${tenant_of[$id]:--}"
        done | sort
}
for t in acme bolt all; do
        if [ $t = all ]; then listed >"$tmp/l.$t"; else listed --tenant $t >"$tmp/l.$t"; fi
        check "list ${t/all/(every tenant)} in pages of 2: $(wc -l <"$tmp/l.$t") files, each once, newest first" \
                "! grep -q NOT-NEWEST '$tmp/l.$t' && [ \"\$(sort '$tmp/l.$t')\" = \"\$(expect $t)\" ] &&
                 [ \"\$(sort -u '$tmp/l.$t' | wc -l)\" = \"\$(wc -l <'$tmp/l.$t')\" ]"
done
listed --tenant "" >"$tmp/l.none"
check "list --tenant '' (files stored without one): 2" "[ \"\$(sort '$tmp/l.none')\" = \"\$(expect '')\" ]"
adm list --tenant acme --limit 2 >"$tmp/out"
check "a page for people: 2 lines and the cursor of the next ($(tail -n 1 "$tmp/out" | cut -c 1-30)...)" \
        "[ \$(grep -c ' acme ' '$tmp/out') -eq 2 ] && grep -qE '^more: --cursor [0-9a-f]{80}$' '$tmp/out'"
adm --json list --uploads >"$tmp/out"
check "list --uploads: none under way" "[ \"\$(js 'len(j[\"uploads\"])' <'$tmp/out')\" = 0 ]"
adm list --cursor zz >"$tmp/out" 2>"$tmp/err"
check "a bad cursor is refused (exit $?): $(cat "$tmp/err")" "grep -q 'cursor' '$tmp/err'"

# ---- stats per tenant ----
adm --json stats >"$tmp/stats"
for t in acme bolt; do
        want_n=0 want_b=0
        for id in "${ids[@]}"; do
                [ "${tenant_of[$id]}" = $t ] && want_n=$((want_n + 1)) && want_b=$((want_b + size_of[$id]))
        done
        got=$(js "[(t['files'], t['stored_bytes']) for t in j['tenants'] if t['tenant']=='$t'][0]" <"$tmp/stats")
        check "stats $t: $got = ($want_n, $want_b) (files, bytes by HEAD /f/ID)" "[ '$got' = '($want_n, $want_b)' ]"
done
check "stats: the store holds 10 files" "[ \"\$(js 'j[\"store\"][\"files\"]' <'$tmp/stats')\" = 10 ]"

# ---- delete: gone at once, bytes reclaimed ----
live() { curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_store_live_bytes //p'; }
victim=${ids[2]}
before=$(live)
status_of "$victim" >"$tmp/st"
check "GET /f/ID before the delete: $(cat "$tmp/st")" "[ \"\$(cat '$tmp/st')\" = 200 ]"
adm delete "$victim" >"$tmp/out"
check "chapard admin delete: $(cat "$tmp/out")" "grep -q '^deleted $victim' '$tmp/out'"
check "GET /f/ID at once after: $(status_of "$victim")" "[ \"\$(status_of $victim)\" = 404 ]"
native_get_fails "$victim" 'no such file'
after=$(live)
check "its chunks' bytes left the store: live bytes $before -> $after (the file was ${size_of[$victim]})" \
        "[ $((before - after)) -ge ${size_of[$victim]} ]"
adm delete "$victim" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "deleting it again: exit $rc, $(cat "$tmp/err")" "[ $rc -eq 1 ] && grep -q 'no such file' '$tmp/err'"
check "listings no longer have it" "! listed | grep -q $victim"
adm --json stats >"$tmp/stats"
check "the tenant's stats lost it" \
        "[ \"\$(js \"[t['files'] for t in j['tenants'] if t['tenant']=='${tenant_of[$victim]}'][0]\" <'$tmp/stats')\" = 4 ]"

# ---- quarantine: 451, never uploaded again ----
q=${ids[7]} # bolt's first file
qfile=$tmp/bolt1
adm quarantine "$q" >"$tmp/out"
check "chapard admin quarantine: $(cat "$tmp/out")" "grep -q \"^quarantined $q (stored copy deleted)\" '$tmp/out'"
check "GET /f/ID: $(status_of "$q") Unavailable For Legal Reasons" "[ \"\$(status_of $q)\" = 451 ]"
native_get_fails "$q" 'legal reasons'
again=$(put "$qfile" --token "$(tok bolt)" 2>"$tmp/err")
rc=$?
check "uploading the same file again is refused: $(head -c 150 "$tmp/err")" \
        "[ -z '$again' ] && grep -qi 'legal reasons' '$tmp/err'"
check "GET /f/ID still 451" "[ \"\$(status_of $q)\" = 451 ]"
adm quarantined >"$tmp/out"
check "chapard admin quarantined lists it" "grep -q '^$q ' '$tmp/out'"
adm unquarantine "$q" >"$tmp/out"
check "unquarantine: $(cat "$tmp/out"), GET /f/ID now $(status_of "$q")" \
        "grep -q '^unquarantined $q' '$tmp/out' && [ \"\$(status_of $q)\" = 404 ]"
back=$(put "$qfile" --token "$(tok bolt)" 2>"$tmp/err")
check "and it may be uploaded again (the same id)" "[ '$back' = '$q' ] && [ \"\$(status_of $q)\" = 200 ]"
adm quarantine 1234 >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a malformed id is refused by the command (exit $rc)" "[ $rc -eq 2 ] && grep -q '64 hex digits' '$tmp/err'"

# ---- hostile or mistaken requests: a clear error each, and the face goes on ----
raw() { # METHOD PATH: the status code over the socket
        curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$tmp/A.data/admin.sock" -X "$1" "http://admin$2"
}
for req in "DELETE /files/xyz 400" "PUT /quarantine/$(printf 'g%.0s' $(seq 64)) 400" \
        "GET /files?limit=0 400" "GET /files?limit=1001 400" "GET /files?tenant=%zz 400" "GET /files?tenant=%41cme 200" \
        "GET /nothing 404" "POST /files 404" "GET /files?cursor=$(printf 'f%.0s' $(seq 81)) 400"; do
        set -- $req
        code=$(raw "$1" "$2")
        check "$1 ${2:0:40}: $code $(head -c 80 "$tmp/body")" "[ '$code' = '$3' ]"
done
python3 - "$tmp/A.data/admin.sock" >"$tmp/out" <<'PY'
import socket, sys
for req in [b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n"]:
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(req)
    print(s.recv(100).split(b"\r\n")[0].decode()); s.close()
PY
check "malformed heads: $(tr '\n' ';' <"$tmp/out")" \
        "[ \"\$(cut -d' ' -f2 '$tmp/out' | tr '\n' ' ')\" = '400 431 400 ' ]"
check "and the face still answers" "adm stats | grep -q '^store: '"

# ---- live verify: while serving, throttled, progress and result ----
adm verify --rate 400000 >"$tmp/out"
rc=$?
check "chapard admin verify while the relay serves: exit $rc, $(head -n 1 "$tmp/out")" \
        "[ $rc -eq 0 ] && grep -qE '^verify: done, [1-9][0-9]* of [0-9]+ chunks .* 0 problems' '$tmp/out'"
adm --json verify >"$tmp/out"
check "verify --json: $(js 'j["state"], j["problems"]' <"$tmp/out")" \
        "[ \"\$(js 'j[\"state\"], j[\"problems\"]' <'$tmp/out')\" = 'done 0' ]"
# a slow scrub is still running when asked, and a second start is refused
curl -s --unix-socket "$tmp/A.data/admin.sock" -X POST "http://admin/verify?rate=1000" >"$tmp/out"
check "a scrub at 1000 bytes/s: running" "[ \"\$(js 'j[\"state\"]' <'$tmp/out')\" = running ]"
adm verify >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a second verify meanwhile is refused (exit $rc): $(cat "$tmp/err")" "[ $rc -eq 1 ] && grep -q 'running' '$tmp/err'"
check "the relay still serves meanwhile: GET /f/ID $(status_of "${ids[0]}")" "[ \"\$(status_of ${ids[0]})\" = 200 ]"
relay_stop A
check "the relay stops with a scrub running (and removes its socket)" "[ ! -e '$tmp/A.data/admin.sock' ]"

# ---- the TCP admin face: a key or nothing ----
"$chapard" --data "$tmp/B.data" --listen 127.0.0.1:0 --http off --admin-listen 127.0.0.1:0 \
        >"$tmp/out" 2>&1
rc=$?
check "--admin-listen without --admin-key: refused at start (exit $rc): $(head -c 100 "$tmp/out")" \
        "[ $rc -ne 0 ] && grep -q 'admin-key' '$tmp/out'"
"$chapard" admin-key --out "$tmp/admin.key" >"$tmp/out"
check "chapard admin-key writes a 0600 key: $(cat "$tmp/out")" \
        "[ \"\$(stat -c %a '$tmp/admin.key')\" = 600 ] && grep -qE '^[0-9a-f]{64}$' '$tmp/admin.key'"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key" --admin-listen 127.0.0.1:0 \
        --admin-key "$tmp/admin.key"
aaddr=$(sed -n 's/^admin=//p' "$tmp/A.ready")
check "the ready file gains admin=$aaddr" "[[ '$aaddr' =~ ^127\.0\.0\.1:[0-9]+$ ]]"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$aaddr/stats")
check "TCP without the key: $code" "[ $code = 401 ]"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(printf 'a%.0s' $(seq 64))" \
        "http://$aaddr/stats")
check "TCP with another key: $code" "[ $code = 401 ]"
"$chapard" admin --admin "$aaddr" --key "$tmp/admin.key" --json stats >"$tmp/out"
check "chapard admin --admin HOST:PORT --key FILE: 9 files" "[ \"\$(js 'j[\"store\"][\"files\"]' <'$tmp/out')\" = 9 ]"
"$chapard" admin-key --out "$tmp/other.key" >/dev/null
"$chapard" admin --admin "$aaddr" --key "$tmp/other.key" stats >"$tmp/out" 2>"$tmp/err"
rc=$?
check "chapard admin with a wrong key: exit $rc, $(cat "$tmp/err")" "[ $rc -eq 2 ] && grep -q 'operator key' '$tmp/err'"
check "the Unix socket still answers beside it" "adm stats | grep -q '^store: 9 files'"
relay_stop A

# ---- federation: a quarantined id is not pulled from a peer ----
okey=$("$chapard" keygen --out "$tmp/O.key")
mpub=$("$chapard" keygen --out "$tmp/M.key")
printf '[peer "M"]\naddress = 127.0.0.1:1\npubkey = %s\n' "$mpub" >"$tmp/O.ini"
relay_start O --config "$tmp/O.ini" --key "$tmp/O.key" --open
printf '[peer "O"]\naddress = %s\npubkey = %s\n' "${addr[O]}" "$okey" >"$tmp/M.ini"
relay_start M --config "$tmp/M.ini" --key "$tmp/M.key" --open
oput() { "$chapar" put "$1" --relay "${addr[O]}" --relay-key "${key[O]}" --no-pad; }
fetched() { curl -s "http://${http[M]}/metrics" | awk '/^chapar_fetches_total\{/ {n += $2} END {print n + 0}'; }
head -c 150000 /dev/urandom >"$tmp/p1"
head -c 150000 /dev/urandom >"$tmp/p2"
t1=$(oput "$tmp/p1")
t2=$(oput "$tmp/p2")
p1=${t1#chapar://*/*/}
p1=${p1%%#*}
"$chapard" admin --data "$tmp/M.data" quarantine "$p1" >"$tmp/out"
check "M quarantines a file it has never held: $(cat "$tmp/out")" "grep -q '^quarantined $p1$' '$tmp/out'"
"$chapar" get "$t1" --via "${addr[M]}" --trust-new-relay -o "$tmp/p1.got" >/dev/null 2>"$tmp/err"
rc=$?
check "a get of it via M is refused (exit $rc): $(head -c 120 "$tmp/err")" \
        "[ $rc -ne 0 ] && grep -qi 'legal reasons' '$tmp/err' && [ ! -e '$tmp/p1.got' ]"
check "and M fetched nothing from O: $(fetched) fetches" "[ \"\$(fetched)\" = 0 ]"
"$chapar" get "$t2" --via "${addr[M]}" --trust-new-relay -o "$tmp/p2.got" >/dev/null 2>"$tmp/err"
check "while another file is pulled through M as usual ($(fetched) fetch)" \
        "cmp -s '$tmp/p2' '$tmp/p2.got' && [ \"\$(fetched)\" = 1 ]"
page() { curl -s --unix-socket "$tmp/$1.data/admin.sock" "http://admin$2"; } # RELAY PATH
page M / >"$tmp/M.html"
check "M's status page: peer O up, 1 fetch done: $(grep -o '<td id="peer-O-[a-z_]*">[^<]*' "$tmp/M.html" | tr '\n' ' ')" \
        "grep -qF '<td id=\"peer-O-state\">up</td><td id=\"peer-O-done\">1</td>' '$tmp/M.html'"
page M /status >"$tmp/M.json"
check "M's /status: O $(js '[(p["state"], p["fetches"]["done"]) for p in j["peers"]]' <"$tmp/M.json")" \
        "[ \"\$(js '[(p[\"name\"], p[\"state\"], p[\"fetches\"][\"done\"]) for p in j[\"peers\"]]' <'$tmp/M.json')\" = \"[('O', 'up', 1)]\" ]"
page O / >"$tmp/O.html"
check "O's status page: peer M never used" "grep -qF '<td id=\"peer-M-state\">never used</td>' '$tmp/O.html'"
relay_stop M
relay_stop O
finish
