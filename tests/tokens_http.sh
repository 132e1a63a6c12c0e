#!/usr/bin/env bash
# Upload tokens on the HTTP (tus) face of a real chapard with one tenant (max_file_size 1 MiB, one
# upload in progress at a time): a POST needs `Authorization: Bearer TOKEN`, from loopback too
# (401 with a Bearer challenge, RFC 6750); expired, wrong-audience, unknown-key and tampered
# tokens are 401 invalid_token; an offer-only token 403; an Upload-Length over the tenant's
# largest file 413; a token's byte budget spent across two uploads 403; a second upload while
# the tenant's one slot is busy 429 with Retry-After. A good token gets 201, and the upload URL
# is the capability after that: PATCH and HEAD without the header, the file downloads by id. A
# deferred length is charged when a PATCH declares it (with the token). A token minted in Node
# from docs/tokens.md alone (tests/interop/mint_token.mjs) is accepted. A CORS preflight names
# Authorization and the configured cors_headers, and is answered without a token. /metrics counts
# the refusals by reason (token_invalid 6, scope 2, too_big 3, quota 3).
# Usage: tokens_http.sh CHAPARD     (needs curl and node >= 18)
set -uo pipefail
chapard=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
for tool in curl node; do
        command -v "$tool" >/dev/null || { echo "tokens_http.sh: $tool is not installed (scripts/deps --test)" >&2; exit 1; }
done
lib_tmp tokenshttp

# ---- a tenant, its key, a relay ------------------------------------------------------------

tenant=chat.example
line=$("$chapard" tenant-key --out "$tmp/k" | tail -n 1)
"$chapard" tenant-key --out "$tmp/other" >/dev/null # a key the relay does not know
qline=$("$chapard" tenant-key --out "$tmp/q" | tail -n 1) # a second tenant, with store quotas
seed=$(sed -n 's/^seed //p' "$tmp/k")
cat >"$tmp/relay.ini" <<EOF
[server]
cors_headers = X-Chat-Session, X-Trace-Id
[tenant "$tenant"]
$line
max_file_size = 1M
max_concurrent_uploads = 1
[tenant "q.example"]
$qline
max_incomplete_uploads = 2
max_stored = 500000
EOF
relay_start r --config "$tmp/relay.ini" --log-level warn || { bad "chapard starts with a tenant"; finish; exit 1; }
base=http://${http[r]}
relay_key=${key[r]}
echo "# chapard on ${http[r]}, tenant $tenant, relay key $relay_key"

token() { "$chapard" token --key "$tmp/k" --tenant "$tenant" "$@"; } # [chapard token args]

# ---- HTTP helpers --------------------------------------------------------------------------

n=0
req() { # METHOD PATH [curl args]: sets $code, $hdr, $body
        n=$((n + 1))
        hdr=$tmp/$n.h
        body=$tmp/$n.b
        local how=(-X "$1")
        [ "$1" = HEAD ] && how=(-I)
        code=$(curl -sS --max-time 30 -H 'Expect:' "${how[@]}" -D "$hdr" -o "$body" -w '%{http_code}' \
                "${@:3}" "$base$2" 2>"$tmp/$n.err") || code="curl: $(cat "$tmp/$n.err")"
        return 0
}
h() { sed -n "s/^$1: *\\([^\\r]*\\)\\r\\?$/\\1/Ip" "$hdr" | tail -n 1; } # NAME: a reply header
tus=(-H 'Tus-Resumable: 1.0.0')
octets=(-H 'Content-Type: application/offset+octet-stream')
post() { # LENGTH [curl args]: a tus POST of LENGTH bytes (no body)
        req POST /files/ "${tus[@]}" -H "Upload-Length: $1" "${@:2}"
}
auth() { printf 'Authorization: Bearer %s' "$1"; }
# Whether the last reply is status $1 (and, for a 401, the RFC 6750 challenge: with
# error="invalid_token" when $2 is "invalid", without an error when it is "missing").
is_refusal() { # STATUS [missing|invalid]
        [ "$code" = "$1" ] || return 1
        local c
        c=$(h WWW-Authenticate)
        case ${2:-} in
        missing) [[ $c == 'Bearer realm="chapar"' ]] ;;
        invalid) [[ $c == 'Bearer realm="chapar", error="invalid_token"' ]] ;;
        *) return 0 ;;
        esac
}
say() { echo "#   $1: $code $(head -c 200 "$body" | tr -d '\r\n')"; } # NAME: the reply, for the log

# ---- no token, bad tokens ------------------------------------------------------------------

post 1000
say "no token"
check "POST without a token (from loopback, tenant configured) -> 401, Bearer challenge, no error" \
        "is_refusal 401 missing"
check "the 401 made no upload (no Location)" "[ -z \"\$(h Location)\" ]"

now=$(date +%s)
bad_token() { # NAME TOKEN
        post 1000 -H "$(auth "$2")"
        say "$1"
        check "$1 -> 401 invalid_token" "is_refusal 401 invalid"
}
bad_token "expired token (issued 2 h ago, 10 min life)" "$(token --now $((now - 7200)) --ttl 600)"
bad_token "token for another relay's key" "$(token --audience "$(printf '%064x' 7)")"
bad_token "token signed by a key the tenant lacks" \
        "$("$chapard" token --key "$tmp/other" --tenant "$tenant")"
good=$(token --audience "$relay_key")
pos=$(( ${#good} / 2 ))
c=${good:$pos:1}
if [ "$c" = A ]; then r=B; else r=A; fi
bad_token "tampered token (one character changed)" "${good:0:$pos}$r${good:$((pos + 1))}"
bad_token "not a token" "not.a.token"
req POST /files/ "${tus[@]}" -H 'Upload-Length: 10' -H "$(auth "$good")" -H "$(auth "$good")"
check "two Authorization lines -> 401 invalid_token" "is_refusal 401 invalid"

post 1000 -H "$(auth "$(token --scope offer)")"
say "offer-only token"
check "a token without the upload scope -> 403 insufficient_scope" \
        "[ '$code' = 403 ] && grep -q 'insufficient_scope' '$hdr' && grep -qi 'does not allow' '$body'"

post 1000 -H "$(auth "$(token --file-id "$(printf '%064x' 9)")")"
say "token for one file (a native upload's file id)"
check "a token for one file -> 403 (a tus upload has no file id until it is complete)" \
        "[ '$code' = 403 ] && grep -qi 'another file' '$body'"

post $((1024 * 1024 + 1)) -H "$(auth "$(token)")"
say "Upload-Length 1 MiB + 1 (max_file_size 1 MiB)"
check "Upload-Length over the tenant's max_file_size -> 413" "[ '$code' = 413 ]"

# ---- a good token: 201, then the upload URL is the capability ----------------------------

head -c 300000 /dev/urandom >"$tmp/f1"
post 300000 -H "$(auth "$good")"
say "good token"
loc=$(h Location)
check "a good token -> 201 with a Location" "[ '$code' = 201 ] && [[ '$loc' == '$base/files/'* ]]"
path=${loc#"$base"}
req PATCH "$path" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' --data-binary @"$tmp/f1"
fid=$(h Chapar-File-Id)
check "PATCH without the header -> 204, complete (file id $fid)" \
        "[ '$code' = 204 ] && [ '$(h Upload-Offset)' = 300000 ] && [[ '$fid' =~ ^[0-9a-f]{64}$ ]]"
req HEAD "$path" "${tus[@]}"
check "HEAD without the header -> 200, Upload-Offset 300000" \
        "[ '$code' = 200 ] && [ '$(h Upload-Offset)' = 300000 ]"
req GET "/f/$fid"
check "GET /f/<id> without a token -> 200, the exact bytes" "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f1'"
req HEAD "/f/$fid"
check "HEAD /f/<id> tells no creation or expiry time" \
        "[ '$code' = 200 ] && ! grep -qiE '^(Last-Modified|Expires|Upload-Expires):' '$hdr'"
req DELETE "/files/$(printf '%032x' 1)" "${tus[@]}"
check "DELETE of an unknown upload without a token -> 404, not 401" "[ '$code' = 404 ]"

# creation-with-upload carries the token in the same request
head -c 5000 /dev/urandom >"$tmp/f2"
req POST /files/ "${tus[@]}" -H 'Upload-Length: 5000' "${octets[@]}" -H "$(auth "$good")" \
        --data-binary @"$tmp/f2"
fid2=$(h Chapar-File-Id)
check "creation-with-upload with a token -> 201, complete" \
        "[ '$code' = 201 ] && [ '$(h Upload-Offset)' = 5000 ] && [[ '$fid2' =~ ^[0-9a-f]{64}$ ]]"
req POST /files/ "${tus[@]}" -H 'Upload-Length: 5000' "${octets[@]}" --data-binary @"$tmp/f2"
check "creation-with-upload without a token -> 401, nothing stored" \
        "is_refusal 401 missing && [ -z \"\$(h Chapar-File-Id)\" ]"

# the token's file life caps the upload's (and so the file's) expiry: an hour, not upload_expiry's
# 7 days
post 1000 -H "$(auth "$(token --file-life 3600)")"
exp=$(date -d "$(h Upload-Expires)" +%s 2>/dev/null || echo 0)
echo "#   file life 3600 s: Upload-Expires in $((exp - $(date +%s))) s"
check "a token's max_file_life caps Upload-Expires (in $((exp - $(date +%s))) s, want <= 3600)" \
        "[ '$code' = 201 ] && [ $exp -gt 0 ] && [ $((exp - $(date +%s))) -le 3600 ]"

# ---- a token's budget across uploads -------------------------------------------------------

budget=$(token --bytes 700000)
post 400000 -H "$(auth "$budget")"
first=$code
post 400000 -H "$(auth "$budget")"
say "second 400000 B upload on a 700000 B budget"
check "budget 700000 B: a first 400000 B upload $first (want 201), a second 403" \
        "[ '$first' = 201 ] && [ '$code' = 403 ] && grep -qi budget '$body'"
post 300000 -H "$(auth "$budget")"
check "... and 300000 B more still fits: 201" "[ '$code' = 201 ]"

# ---- a deferred length is charged when it is declared ---------------------------------------

req POST /files/ "${tus[@]}" -H 'Upload-Defer-Length: 1' -H "$(auth "$good")"
dpath=$(h Location)
dpath=${dpath#"$base"}
check "deferred length with a token -> 201" "[ '$code' = 201 ]"
head -c 2000 /dev/urandom >"$tmp/f3"
req PATCH "$dpath" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' -H 'Upload-Length: 2000' \
        --data-binary @"$tmp/f3"
say "PATCH declaring the length, no token"
check "a PATCH declaring a deferred length without the token -> 401" "is_refusal 401 missing"
req PATCH "$dpath" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' \
        -H "Upload-Length: $((2 * 1024 * 1024))" -H "$(auth "$good")"
check "declaring a length over max_file_size -> 413" "[ '$code' = 413 ]"
req PATCH "$dpath" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' -H 'Upload-Length: 2000' \
        -H "$(auth "$good")" --data-binary @"$tmp/f3"
check "declaring it with the token -> 204, complete" \
        "[ '$code' = 204 ] && [[ '$(h Chapar-File-Id)' =~ ^[0-9a-f]{64}$ ]]"
req POST /files/ "${tus[@]}" -H 'Upload-Defer-Length: 1' -H "$(auth "$good")"
d2=$(h Location)
d2=${d2#"$base"}
head -c $((1024 * 1024 + 1)) /dev/zero >"$tmp/big"
req PATCH "$d2" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' --data-binary @"$tmp/big"
check "deferred length: a body over max_file_size before the length is declared -> 413" \
        "[ '$code' = 413 ]"

# ---- one upload in progress per tenant (max_concurrent_uploads = 1) ---------------------------

# a creation-with-upload whose body stays unfinished holds the tenant's one slot
hold_req() {
        printf 'POST /files/ HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 100000\r\nContent-Type: application/offset+octet-stream\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n0123456789' \
                "${http[r]}" "$good"
}
metric() { curl -sS --max-time 5 "$base/metrics" | sed -n "s/^$1 //p"; }
active0=$(metric chapar_uploads_active)
exec 3<>"/dev/tcp/${http[r]%:*}/${http[r]##*:}"
hold_req >&3
# the held upload is created (its slot taken) once the store counts it
wait_for 10 "[ \"\$(metric chapar_uploads_active)\" -gt '$active0' ]"
post 1000 -H "$(auth "$good")"
say "a second upload while the tenant's one slot is held"
check "a second upload while one is in progress -> 429 with Retry-After ($(h Retry-After) s)" \
        "[ '$code' = 429 ] && [[ '$(h Retry-After)' =~ ^[1-9][0-9]*$ ]]"
exec 3>&-
# the slot comes back when that request ends (its connection closed)
wait_for 10 "post 1000 -H \"\$(auth \"\$good\")\"; [ \"\$code\" = 201 ]"
check "the slot is given back when the held request's connection closes: 201" "[ '$code' = 201 ]"

# ---- the tenant's store quota, checked by the store's writer --------------------------------

qtoken() { "$chapard" token --key "$tmp/q" --tenant q.example "$@"; }
qt=$(qtoken --files 3)
post 1000 -H "$(auth "$qt")"
q1=$(h Location)
q1=${q1#"$base"}
c1=$code
post 1000 -H "$(auth "$qt")"
c2=$code
post 1000 -H "$(auth "$qt")"
say "a third incomplete upload (max_incomplete_uploads = 2)"
check "max_incomplete_uploads 2: $c1, $c2, then 403 naming the limit" \
        "[ '$c1' = 201 ] && [ '$c2' = 201 ] && [ '$code' = 403 ] && grep -q max_incomplete_uploads '$body'"
req DELETE "$q1" "${tus[@]}"
post 1000 -H "$(auth "$qt")"
say "after a DELETE, a token of 3 files whose third was refused by the store"
check "the store's refusal took no file from the token: after a DELETE a third file -> 201" \
        "[ '$code' = 201 ]"
req DELETE "$(h Location | sed "s|^$base||")" "${tus[@]}"
qt2=$(qtoken)
req POST /files/ "${tus[@]}" -H 'Upload-Defer-Length: 1' -H "$(auth "$qt2")"
say "a deferred-length POST under the quota tenant"
qd=$(h Location)
qd=${qd#"$base"}
req PATCH "$qd" "${tus[@]}" "${octets[@]}" -H 'Upload-Offset: 0' -H 'Upload-Length: 600000' \
        -H "$(auth "$qt2")"
say "declaring a deferred length of 600000 B (max_stored = 500000)"
check "a deferred length past the tenant's max_stored -> 403" "[ '$code' = 403 ]"

# ---- a token minted in Node from the spec alone ---------------------------------------------

id=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ntok=$(node "$here/interop/mint_token.mjs" --seed "$seed" --tenant "$tenant" --subject node-user \
        --token-id "$id" --issued-at "$(date +%s)" --ttl 600 --bytes 100000 --files 2 \
        --file-life 3600 --scope upload --audience-key "$relay_key")
head -c 1234 /dev/urandom >"$tmp/f4"
req POST /files/ "${tus[@]}" -H 'Upload-Length: 1234' "${octets[@]}" -H "$(auth "$ntok")" \
        --data-binary @"$tmp/f4"
fid4=$(h Chapar-File-Id)
req GET "/f/$fid4"
check "a Node-minted token (node:crypto, docs/tokens.md) -> 201, the file reads back" \
        "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f4'"

# ---- CORS: the preflight names Authorization and cors_headers, needs no token ----------------

req OPTIONS /files/ -H 'Origin: http://app.example' -H 'Access-Control-Request-Method: POST' \
        -H 'Access-Control-Request-Headers: authorization, tus-resumable, x-chat-session'
allow=$(h Access-Control-Allow-Headers)
echo "#   preflight: $code, Allow-Headers: $allow"
check "preflight without a token -> 204" "[ '$code' = 204 ]"
check "Access-Control-Allow-Headers lists Authorization" "[[ '$allow' == *Authorization* ]]"
check "... and cors_headers' X-Chat-Session and X-Trace-Id" \
        "[[ '$allow' == *', X-Chat-Session, X-Trace-Id' ]]"
post 10 -H 'Origin: http://app.example'
expose=$(h Access-Control-Expose-Headers)
check "a cross-origin 401 lets the page read WWW-Authenticate and Location, Upload-Offset" \
        "[ '$code' = 401 ] && [[ '$expose' == *WWW-Authenticate* ]] && [[ '$expose' == *Location* ]] && [[ '$expose' == *Upload-Offset* ]]"

# ---- the refusals, counted ---------------------------------------------------------------

# each by its reason, as the cases above made them: five bad tokens and the doubled header
# (token_invalid); the offer-only and the one-file token (scope); the POST over max_file_size,
# the PATCH declaring a length over it, the deferred body past it (too_big); the second upload
# over the budget, the third incomplete upload, the deferred length past max_stored (quota)
for want in token_invalid=6 scope=2 too_big=3 quota=3; do
        got=$(metric "chapar_refusals_total{reason=\"${want%=*}\"}")
        check "counted refusals{reason=\"${want%=*}\"}: ${got:-absent}, want ${want#*=}" \
                "[ '${got:-}' = '${want#*=}' ]"
done

echo "# $n requests; relay log: $(wc -l <"$tmp/r.log") lines"
relay_stop r
check "chapard exits 0 on SIGTERM" "[ $? -eq 0 ]"
finish
