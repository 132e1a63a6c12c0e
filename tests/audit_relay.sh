#!/usr/bin/env bash
# The relay audits its store on a schedule (audit_interval), online: the chunk a tus PATCH stored
# before its body failed Upload-Checksum (460) is referenced by nothing; a first audit records it,
# one after its grace (upload_expiry, here 2 s) frees it. A file put before and one put while the
# audits run come back whole, and chapard verify finds the store clean with nothing unreferenced.
# Usage: audit_relay.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp audit

cat >"$tmp/r.ini" <<EOF
[server]
upload_expiry = 2s
audit_interval = 1s
tus_chunk_size = 64K
EOF
relay_start R --config "$tmp/r.ini" || { bad "relay starts with audit_interval"; finish; exit; }
h=${http[R]}
trust=()
"$chapar" --help 2>&1 | grep -q -- --trust-new-relay && trust=(--trust-new-relay)
put() { "$chapar" put "$1" --relay "${addr[R]}" "${trust[@]}"; } # FILE: prints the ticket
get_back() { # TICKET FILE: fetched into $tmp/got, compared
        rm -rf "$tmp/got" && mkdir "$tmp/got" &&
                (cd "$tmp/got" && "$chapar" get "$1" >/dev/null 2>>"$tmp/get.err") &&
                cmp -s "$2" "$tmp/got/$(basename "$2")"
}

head -c 300000 /dev/urandom >"$tmp/before.bin"
t1=$(put "$tmp/before.bin") || bad "put before the orphan"

# a tus upload whose first PATCH fails its checksum: one whole 64 KiB chunk was stored
head -c 70000 /dev/urandom >"$tmp/body"
loc=$(curl -s -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 70000' \
        "http://$h/files/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case "$loc" in http*) url=$loc ;; *) url=http://$h$loc ;; esac
empty_sha256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= # not this body's
code=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -H 'Tus-Resumable: 1.0.0' \
        -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' \
        -H "Upload-Checksum: sha256 $empty_sha256" --data-binary @"$tmp/body" "$url")
check "the PATCH with a wrong checksum is refused with 460 (got $code)" '[ "$code" = 460 ]'

head -c 500000 /dev/urandom >"$tmp/during.bin"
t2=$(put "$tmp/during.bin") || bad "put while the audits run"
check "the audit frees the unattached chunk once its grace has passed" \
        "wait_for 30 \"grep -q 'audit: .* 1 chunks (65536 bytes) freed' '$tmp/R.log'\""
grep 'audit:' "$tmp/R.log" | head -3
check "the file put before comes back whole" 'get_back "$t1" "$tmp/before.bin"'
check "the file put during the audits comes back whole" 'get_back "$t2" "$tmp/during.bin"'

relay_stop R
"$chapard" verify --data "$tmp/R.data" >"$tmp/verify" 2>&1
rc=$?
cat "$tmp/verify"
check "chapard verify: exit 0, no problems" '[ $rc -eq 0 ] && grep -q ": 0 problems" "$tmp/verify"'
check "chapard verify: nothing unreferenced" 'grep -q "(.* bytes, 0 unreferenced)" "$tmp/verify"'
finish
