#!/usr/bin/env bash
# XMPP uploads (/xmpp/NAME/, server/faces/xmpp.c) on two relays sharing one pool ([store]
# rados_shared) and one key, on a throw-away cluster of their own: a v1 PUT through relay 1 is
# served byte-identical by relay 2 (the upload id both derive from the key, tenant and path is the
# same), relay 2 refuses a second PUT to that path (409), and a relay on the same pool with
# another key does not find it (404: nobody without the key can name the upload). Skips (77)
# without the ceph packages or a relay built without the RADOS backend.
# Usage: xmpp_shared.sh CHAPARD [ON|OFF: built with the RADOS backend]
set -uo pipefail
chapard=$1
. "$(dirname "$0")/../lib.sh"

[ "${2:-ON}" = ON ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
py=/usr/bin/python3
command -v "$py" >/dev/null || { echo "xmpp_shared.sh: $py is not installed" >&2; exit 1; }
lib_tmp cephxs
. "$(dirname "$0")/up.sh"

secret=shared-pool-xmpp-secret-0001
cat >"$tmp/r.ini" <<INI
[server]
tus_chunk_size = 64K
[store]
rados_op_timeout = 3s
[tenant "chat.example"]
xmpp_secret = $secret
INI
"$chapard" keygen --out "$tmp/relay.key" >/dev/null 2>&1 || bad "chapard keygen"
"$chapard" keygen --out "$tmp/other.key" >/dev/null 2>&1 || bad "chapard keygen"
pool_args=(--config "$tmp/r.ini" --store rados --rados-shared --rados-conf "$conf"
        --rados-pool "$pool" --rados-user "${user#client.}")
for r in R1 R2 R3; do
        k=$tmp/relay.key
        [ $r = R3 ] && k=$tmp/other.key
        if ! relay_start $r "${pool_args[@]}" --key "$k"; then
                cat "$tmp/$r.log"
                bad "relay $r starts with --store rados --rados-shared and an xmpp_secret"
                finish
                exit
        fi
done
ok "three relays start on one pool, R1 and R2 with one key, R3 with another"

mac() { # DECODED-PATH SIZE
        "$py" -c 'import hashlib, hmac, sys
print(hmac.new(sys.argv[3].encode(), f"{sys.argv[1]} {sys.argv[2]}".encode(), hashlib.sha256).hexdigest())' \
                "$1" "$2" "$secret"
}
head -c 300000 /dev/urandom >"$tmp/a.bin"
p="9f8e7d6c-uuid/shared.bin"
m=$(mac "$p" 300000)
st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type:' --data-binary "@$tmp/a.bin" \
        "http://${http[R1]}/xmpp/chat.example/$p?v=$m")
check "v1 PUT through relay 1: 201 ($st)" "[ '$st' = 201 ]"
st=$(curl -s -o "$tmp/got" -w '%{http_code}' "http://${http[R2]}/xmpp/chat.example/$p")
check "GET through relay 2: 200, byte-identical ($st)" "[ '$st' = 200 ] && cmp -s '$tmp/got' '$tmp/a.bin'"
st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type:' --data-binary "@$tmp/a.bin" \
        "http://${http[R2]}/xmpp/chat.example/$p?v=$m")
check "the same PUT through relay 2: 409 ($st)" "[ '$st' = 409 ]"
st=$(curl -s -o /dev/null -w '%{http_code}' "http://${http[R3]}/xmpp/chat.example/$p")
check "GET through a relay on the pool with another key: 404 ($st)" "[ '$st' = 404 ]"
finish
