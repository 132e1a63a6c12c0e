#!/usr/bin/env bash
# XMPP external uploads (server/faces/xmpp.c) on a real chapard: the URLs Prosody's
# mod_http_upload_external (v1 "?v=", v2 "?v2=") and ejabberd's external secret (v1, a
# three-segment path) sign with a tenant's xmpp_secret. PUT then GET byte-identical (SHA-256),
# HEAD, Range 206, If-None-Match 304, the Content-Disposition of a UTF-8 name sent with uppercase
# escapes and a literal '+', Chapar-File-Id; refusals: a wrong, missing or other-size MAC 403, over
# max_file_size 413, the tenant's max_stored 403, its max_concurrent_uploads 429, an existing path
# 409, a path being written 409, an unknown tenant 404, a bad escape 400, no Content-Length 411;
# a CORS preflight allowing PUT; dedup (the same bytes under two paths: chunks stored once); the
# file still served after a restart and after a SIGHUP that changes the secret (the old one then
# 403); a cut PUT retried on its path succeeds; after the relay's GC (60 s after its start) a file
# of a tenant with max_file_life 2 s is gone (404) while one whose upload session expired
# (upload_expiry 2 s) is still served; check-config refuses a short secret and a tenant with
# neither token_key nor xmpp_secret.
# Usage: xmpp_upload.sh CHAPARD CUTPROXY     (needs curl and /usr/bin/python3)
set -uo pipefail
chapard=$1
cutproxy=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
py=/usr/bin/python3
for tool in curl $py; do
        command -v "$tool" >/dev/null || { echo "xmpp_upload.sh: $tool is not installed" >&2; exit 1; }
done
lib_tmp xmpp

secret=0123456789abcdef-xmpp-secret
conf() { # SECRET: the relay's config
        cat >"$tmp/relay.ini" <<EOF
[server]
upload_expiry = 2s
file_expiry = 1d
tus_chunk_size = 64K
[tenant "chat.example"]
xmpp_secret = $1
max_file_size = 4M
[tenant "short.example"]
xmpp_secret = $1
max_file_life = 2s
[tenant "q.example"]
xmpp_secret = $1
max_stored = 100000
[tenant "lim.example"]
xmpp_secret = $1
max_concurrent_uploads = 1
EOF
}
conf "$secret"

# mac v1|v2 DECODED-PATH SIZE [TYPE] [SECRET]: the hex HMAC an XMPP server puts in the URL
mac() {
        "$py" - "$@" "$secret" <<'EOF'
import hashlib, hmac, sys
v, path, size, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if v == "v1":  # [OTHER-SECRET] SECRET
    secret, msg = rest[0], f"{path} {size}"
else:  # TYPE [OTHER-SECRET] SECRET
    secret, msg = rest[1], f"{path}\0{size}\0{rest[0]}"
print(hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest())
EOF
}
unquote() { "$py" -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.argv[1]))' "$1"; }
base() { echo "http://${http[r]}/xmpp/$1"; }
# put URL FILE [curl args]: the status; the head in $tmp/head
put() {
        local url=$1 file=$2
        shift 2
        curl -s -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' -X PUT --data-binary "@$file" \
                "$@" "$url"
}
# v1put TENANT ENCODED-PATH FILE: a v1 PUT as Prosody's default protocol signs it
v1put() {
        local size
        size=$(stat -c %s "$3")
        put "$(base "$1")/$2?v=$(mac v1 "$(unquote "$2")" "$size")" "$3" -H 'Content-Type:'
}
get() { # URL [curl args]: the status, the body in $tmp/got, the head in $tmp/ghead
        local url=$1
        shift
        curl -s -o "$tmp/got" -D "$tmp/ghead" -w '%{http_code}' "$@" "$url"
}
hdr() { sed -n "s/^$2: \(.*\)\r$/\1/Ip" "$1" | head -1; }
metric() { curl -s "http://${http[r]}/metrics" | sed -n "s/^$1 //p"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

head -c 3000000 /dev/urandom >"$tmp/a.bin"
head -c 200000 /dev/urandom >"$tmp/b.bin"
head -c 1000 /dev/urandom >"$tmp/c.bin"
head -c 5000000 /dev/urandom >"$tmp/big.bin"

relay_start r --config "$tmp/relay.ini" || { echo "the relay did not start"; exit 1; }
check "the start-up log says who uploads how" \
        "grep -qF '4 tenants: uploads, offers and pull-through need a token; 4 XMPP domains upload by signed URLs at /xmpp/' '$tmp/r.log'"

# ---- a v1 upload, served after a restart -------------------------------------------------------

p1="0b1c2d3e-uuid/f%C3%BCr+Bilder.bin" # Prosody: urlencode(uuid)/urlencode(name); re-encoded
st=$(v1put chat.example "$p1" "$tmp/a.bin")
fid=$(hdr "$tmp/head" Chapar-File-Id)
check "v1 PUT: 201 Created with Chapar-File-Id ($st $fid)" \
        "[ '$st' = 201 ] && [ \${#fid} -eq 64 ] && grep -qi '^ETag: \"$fid\"' '$tmp/head'"
st=$(get "$(base chat.example)/$p1")
check "GET: 200, byte-identical ($st)" "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/a.bin') ]"
check "GET: Chapar-File-Id and ETag of the file" \
        "[ \"\$(hdr '$tmp/ghead' Chapar-File-Id)\" = '$fid' ] && [ \"\$(hdr '$tmp/ghead' ETag)\" = '\"$fid\"' ]"
disp=$(hdr "$tmp/ghead" Content-Disposition)
check "GET: the UTF-8 name sent with uppercase escapes and a literal + ($disp)" \
        "[ \"\$disp\" = \"attachment; filename=\\\"f_r+Bilder.bin\\\"; filename*=UTF-8''f%C3%BCr+Bilder.bin\" ]"
check "GET: no type given: application/octet-stream, nosniff" \
        "[ \"\$(hdr '$tmp/ghead' Content-Type)\" = application/octet-stream ] && grep -qi '^X-Content-Type-Options: nosniff' '$tmp/ghead'"
st=$(get "$(base chat.example)/0b1c2d3e-uuid/f%c3%bcr%2BBilder.bin")
check "GET: the path as any encoding of the same bytes ($st)" \
        "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/a.bin') ]"
relay_stop r
relay_start r --config "$tmp/relay.ini" || { echo "the relay did not restart"; exit 1; }
st=$(get "$(base chat.example)/$p1")
check "GET after a restart: 200, byte-identical ($st)" \
        "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/a.bin') ]"
# the relay's GC runs 60 s after this start: the expiry cases below wait for it
st=$(v1put short.example "u0/short.txt" "$tmp/c.bin")
check "v1 PUT to the tenant with max_file_life 2s: 201 ($st)" "[ '$st' = 201 ]"
st=$(v1put chat.example "u0/kept.txt" "$tmp/c.bin")
check "v1 PUT of a file that outlives its upload session (upload_expiry 2s): 201 ($st)" "[ '$st' = 201 ]"

# ---- v2, HEAD, ranges, conditionals ------------------------------------------------------------

p2="5a6b/photo.txt"
m2=$(mac v2 "$p2" 200000 "text/plain; charset=utf-8")
st=$(put "$(base chat.example)/$p2?v2=$m2" "$tmp/b.bin" -H 'Content-Type: text/plain; charset=utf-8')
fid2=$(hdr "$tmp/head" Chapar-File-Id)
check "v2 PUT (path, size, Content-Type): 201 ($st)" "[ '$st' = 201 ] && [ \${#fid2} -eq 64 ]"
st=$(get "$(base chat.example)/$p2")
check "v2 GET: 200, byte-identical, the type it was signed with ($st)" \
        "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/b.bin') ] && [ \"\$(hdr '$tmp/ghead' Content-Type)\" = 'text/plain; charset=utf-8' ]"
st=$(curl -s -I -o /dev/null -D "$tmp/ghead" -w '%{http_code} %{size_download}' "$(base chat.example)/$p2")
check "HEAD: 200, Content-Length, no body ($st)" \
        "[ '$st' = '200 0' ] && [ \"\$(hdr '$tmp/ghead' Content-Length)\" = 200000 ]"
st=$(get "$(base chat.example)/$p2" -H 'Range: bytes=100-199')
check "Range: 206 with the bytes asked ($st)" \
        "[ '$st' = 206 ] && cmp -s '$tmp/got' <(tail -c +101 '$tmp/b.bin' | head -c 100) && [ \"\$(hdr '$tmp/ghead' Content-Range)\" = 'bytes 100-199/200000' ]"
st=$(get "$(base chat.example)/$p2" -H "If-None-Match: \"$fid2\"")
check "If-None-Match of its ETag: 304 ($st)" "[ '$st' = 304 ]"
st=$(put "$(base chat.example)/5a6b/other.txt?v2=$m2" "$tmp/b.bin" -H 'Content-Type: text/plain; charset=utf-8')
check "v2 MAC of another path: 403 ($st)" "[ '$st' = 403 ]"
st=$(put "$(base chat.example)/$p2-x?v2=$(mac v2 "$p2-x" 200000 "text/plain")" "$tmp/b.bin" -H 'Content-Type: image/png')
check "v2 MAC of another Content-Type: 403 ($st)" "[ '$st' = 403 ]"

# ejabberd: v1 over <sha1(jid)>/<random>/<name>
pe="3a5b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b/Xy7pQ2/notes.txt"
st=$(v1put chat.example "$pe" "$tmp/c.bin")
st2=$(get "$(base chat.example)/$pe")
check "ejabberd's three-segment v1 path: 201, then GET 200 ($st $st2)" \
        "[ '$st' = 201 ] && [ '$st2' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/c.bin') ]"

# ---- refusals ----------------------------------------------------------------------------------

refused0=$(metric 'chapar_refusals_total{reason="token_invalid"}')
st=$(put "$(base chat.example)/u1/x.bin?v=$(mac v1 u1/x.bin 1000 x-wrong-secret-xxxxx)" "$tmp/c.bin")
check "wrong MAC (another secret): 403 ($st)" "[ '$st' = 403 ]"
st=$(put "$(base chat.example)/u1/x.bin" "$tmp/c.bin")
check "no MAC: 403 ($st)" "[ '$st' = 403 ]"
st=$(put "$(base chat.example)/u1/x.bin?v=$(mac v1 u1/x.bin 999)" "$tmp/c.bin")
check "a MAC for another size: 403 ($st)" "[ '$st' = 403 ]"
st=$(put "$(base chat.example)/u1/x.bin?v=zz$(mac v1 u1/x.bin 1000 | cut -c3-)" "$tmp/c.bin")
check "a MAC that is not hex: 403 ($st)" "[ '$st' = 403 ]"
st=$(put "$(base chat.example)/u1/x.bin?v=$(mac v1 u1/x.bin 1000 | tr a-f A-F)" "$tmp/c.bin")
check "the right MAC in uppercase hex: 201 ($st)" "[ '$st' = 201 ]"
refused=$(metric 'chapar_refusals_total{reason="token_invalid"}')
check "/metrics counts the bad MACs as invalid credentials ($refused0 -> $refused)" \
        "[ \$((refused - refused0)) -eq 3 ]"
st=$(v1put chat.example "u2/big.bin" "$tmp/big.bin")
check "over the tenant's max_file_size: 413 ($st)" "[ '$st' = 413 ]"
st=$(v1put q.example "u3/b.bin" "$tmp/b.bin")
check "over the tenant's max_stored: 403 naming it ($st: $(head -c 80 "$tmp/body"))" \
        "[ '$st' = 403 ] && grep -q max_stored '$tmp/body'"
st=$(v1put chat.example "$p1" "$tmp/a.bin")
check "a PUT to a path already uploaded: 409 ($st)" "[ '$st' = 409 ]"
st=$(v1put nobody.example "u4/x.bin" "$tmp/c.bin")
check "unknown tenant: 404 ($st)" "[ '$st' = 404 ]"
st=$(get "$(base chat.example)/u4/none.bin")
check "GET of a path never uploaded: 404 ($st)" "[ '$st' = 404 ]"
st=$(put "$(base chat.example)/u4/%zz.bin?v=00" "$tmp/c.bin")
check "a bad escape: 400 ($st)" "[ '$st' = 400 ]"
st=$(get "$(base chat.example)/u4/%00.bin")
check "an escaped NUL: 400 ($st)" "[ '$st' = 400 ]"
st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$(base chat.example)/u4/n.bin?v=$(mac v1 u4/n.bin 0)")
check "no Content-Length: 411 ($st)" "[ '$st' = 411 ]"
st=$(curl -s -o /dev/null -D "$tmp/ohead" -w '%{http_code}' -X OPTIONS -H 'Origin: https://chat.example' \
        -H 'Access-Control-Request-Method: PUT' -H 'Access-Control-Request-Headers: content-type' \
        "$(base chat.example)/u5/x.bin")
check "a CORS preflight allows PUT and Content-Type ($st)" \
        "[ '$st' = 204 ] && grep -qi '^Access-Control-Allow-Methods:.*PUT' '$tmp/ohead' && grep -qi '^Access-Control-Allow-Headers:.*Content-Type' '$tmp/ohead' && grep -qi '^Access-Control-Allow-Origin:' '$tmp/ohead'"

# ---- dedup --------------------------------------------------------------------------------------

dedup0=$(metric chapar_dedup_hits_total)
stored0=$(metric chapar_chunks_stored_total)
st=$(v1put chat.example "u6/again.bin" "$tmp/a.bin")
dedup=$(metric chapar_dedup_hits_total)
stored=$(metric chapar_chunks_stored_total)
check "the same bytes under another path: 201, the same file id, every chunk a dedup hit ($st; dedup +$((dedup - dedup0)), stored +$((stored - stored0)))" \
        "[ '$st' = 201 ] && [ \"\$(hdr '$tmp/head' Chapar-File-Id)\" = '$fid' ] && [ \$((dedup - dedup0)) -eq 46 ] && [ \$((stored - stored0)) -eq 0 ]"

# ---- a PUT held mid-body: the path busy (409), the tenant's one slot busy (429); then cut -------

proxy_start p "${http[r]##*:}"
pc="u7/cut.bin"
proxy_hold p 1000000 up
curl -s -o /dev/null -X PUT --data-binary "@$tmp/a.bin" -H 'Content-Type:' \
        "http://127.0.0.1:${proxy_port[p]}/xmpp/chat.example/$pc?v=$(mac v1 $pc 3000000)" &
cpid=$!
lib_track $cpid
proxy_held p
st=$(v1put chat.example "$pc" "$tmp/a.bin")
check "a PUT to a path another request is writing: 409 ($st)" "[ '$st' = 409 ]"
kill $cpid 2>/dev/null
wait $cpid 2>/dev/null
wait_for 20 "[ \"\$(metric chapar_connections)\" = 1 ]"
st=$(v1put chat.example "$pc" "$tmp/a.bin")
st2=$(get "$(base chat.example)/$pc")
check "the cut PUT retried on its path: 201, then byte-identical ($st $st2)" \
        "[ '$st' = 201 ] && [ '$st2' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/a.bin') ]"

proxy_hold p 1000000 up
curl -s -o /dev/null -X PUT --data-binary "@$tmp/a.bin" -H 'Content-Type:' \
        "http://127.0.0.1:${proxy_port[p]}/xmpp/lim.example/u8/a.bin?v=$(mac v1 u8/a.bin 3000000)" &
cpid=$!
lib_track $cpid
proxy_held p
st=$(v1put lim.example "u8/b.bin" "$tmp/c.bin")
check "a second upload while the tenant's one slot is busy: 429 with Retry-After ($st)" \
        "[ '$st' = 429 ] && grep -qi '^Retry-After: [0-9]' '$tmp/head'"
proxy_release p
wait $cpid
st=$(get "$(base lim.example)/u8/a.bin")
check "the held upload, released, finishes ($st)" "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/a.bin') ]"

# ---- a reload with a new secret -----------------------------------------------------------------

conf "another-secret-for-xmpp-0001"
n=$(($(grep -c 'configuration reloaded' "$tmp/r.log") + 1))
kill -HUP "${pid[r]}"
wait_for 20 "[ \$(grep -c 'configuration reloaded' '$tmp/r.log') -ge $n ]"
st=$(v1put chat.example "u9/x.bin" "$tmp/c.bin")
old=$secret
secret="another-secret-for-xmpp-0001"
st2=$(v1put chat.example "u9/x.bin" "$tmp/c.bin")
st3=$(get "$(base chat.example)/$p1")
secret=$old
check "after SIGHUP with a new secret: the old one 403, the new one 201, old files served ($st $st2 $st3)" \
        "[ '$st' = 403 ] && [ '$st2' = 201 ] && [ '$st3' = 200 ]"

# ---- expiry: the relay's GC, 60 s after its start ----------------------------------------------

wait_for 100 "grep -q 'gc: .* uploads expired' '$tmp/r.log'" || echo "the relay's GC did not run"
st=$(get "$(base short.example)/u0/short.txt")
check "after GC: the file of the tenant with max_file_life 2s is gone: 404 ($st)" "[ '$st' = 404 ]"
st=$(get "$(base chat.example)/u0/kept.txt")
check "after GC: a file whose upload session expired is still served ($st)" \
        "[ '$st' = 200 ] && [ \$(sha '$tmp/got') = \$(sha '$tmp/c.bin') ]"

# ---- check-config ------------------------------------------------------------------------------

printf '[tenant "a.example"]\nxmpp_secret = short\n' >"$tmp/short.ini"
"$chapard" check-config "$tmp/short.ini" >/dev/null 2>"$tmp/err"
check "check-config: a secret under 16 bytes is refused ($(head -c 120 "$tmp/err"))" \
        "grep -q 'xmpp_secret: 5 bytes' '$tmp/err' && ! grep -q 'short' <(sed 's/short.ini//' '$tmp/err')"
printf '[tenant "a.example"]\nmax_stored = 1G\n' >"$tmp/none.ini"
"$chapard" check-config "$tmp/none.ini" >/dev/null 2>"$tmp/err"
check "check-config: a tenant with neither key is refused" \
        "grep -q 'has neither token_key nor xmpp_secret' '$tmp/err'"
printf '[tenant "a.example"]\nxmpp_secret = %s\n' "$secret" >"$tmp/ok.ini"
check "check-config: a tenant with only an xmpp_secret is accepted" \
        "'$chapard' check-config '$tmp/ok.ini' >/dev/null 2>&1"

finish
