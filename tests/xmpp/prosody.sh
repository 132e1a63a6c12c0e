#!/usr/bin/env bash
# The real thing: Debian's Prosody with mod_http_upload_external (prosody-modules) pointed at
# chapard, and XMPP users on slixmpp's XEP-0363 plugin (client.py). Two relays, each the upload
# service of one XMPP domain ([tenant "DOMAIN"] xmpp_secret): A for a.test (the module's
# protocol v1, ?v=), B for b.test (v2, ?v2=), B peered with A (public_pull). One Prosody in the
# foreground with its own config, data, pid and log in the temp dir, c2s only on a free loopback
# port, no TLS, no s2s (both hosts are on it). alice@a.test puts a random file of a few MiB and a
# small one with a non-ASCII name and sends their URLs to bob@a.test and bob@b.test, who download
# them; bob@b.test puts one through B (v2) and sends it to alice. Each copy's SHA-256 is the
# original's. Federation: bob@b.test's relay B serves alice's file by content address (HEAD on
# A: Chapar-File-Id, Chapar-Relay-Key; GET B/f/ID?origin=KEY) and B's /metrics counts the fetch.
# A forged HMAC is refused (403). Skipped (77) only if Prosody cannot be installed.
# Usage: prosody.sh CHAPARD
set -uo pipefail
chapard=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"

. "$here/common.sh"
xmpp_need prosody prosody-modules python3-slixmpp python3-aiohttp
module=/usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua
[ -r "$module" ] || { echo "FAIL: prosody-modules has no $module"; exit 1; }

lib_tmp xmpp
for r in A B; do "$chapard" keygen --out "$tmp/$r.key" >"$tmp/$r.pub"; done
secret_a=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret_b=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# A only needs B's key to take its handshake; B reaches A at its native address
printf '[tenant "a.test"]\nxmpp_secret = %s\n[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' \
        "$secret_a" "$(cat "$tmp/B.pub")" >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key" || { bad "relay A starts"; tail "$tmp/A.log"; exit 1; }
printf '[tenant "b.test"]\nxmpp_secret = %s\n[peer "A"]\naddress = %s\npubkey = %s\npublic_pull = true\n' \
        "$secret_b" "${addr[A]}" "${key[A]}" >"$tmp/B.ini"
relay_start B --config "$tmp/B.ini" --key "$tmp/B.key" || { bad "relay B starts"; tail "$tmp/B.log"; exit 1; }

prosody_conf() { # PORT
        cat <<EOF
-- $tmp/prosody.cfg.lua, written by tests/xmpp/prosody.sh
run_as_root = true -- the suite may run as root; this Prosody is the test's own
pidfile = "$tmp/prosody.pid"
data_path = "$tmp/prosody.data"
certificates = "$tmp/prosody.certs"
log = { { levels = { min = "info" }, to = "file", filename = "$tmp/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $1 }
c2s_direct_tls_ports = {}
legacy_ssl_ports = {}
s2s_ports = {}
component_ports = {}
http_ports = {}
https_ports = {}
c2s_require_encryption = false
authentication = "internal_plain"
modules_enabled = { "roster", "saslauth", "disco", "presence", "ping" }
modules_disabled = { "s2s", "offline" }

VirtualHost "a.test"
Component "upload.a.test" "http_upload_external"
        http_upload_external_base_url = "http://${http[A]}/xmpp/a.test/"
        http_upload_external_secret = "$secret_a"
        http_upload_external_file_size_limit = 67108864

VirtualHost "b.test"
Component "upload.b.test" "http_upload_external"
        http_upload_external_base_url = "http://${http[B]}/xmpp/b.test/"
        http_upload_external_secret = "$secret_b"
        http_upload_external_protocol = "v2"
EOF
}
mkdir -p "$tmp/prosody.data" "$tmp/prosody.certs"
prosody_conf 1 >"$tmp/prosody.cfg.lua"
for u in alice@a.test bob@a.test bob@b.test; do
        prosodyctl --config "$tmp/prosody.cfg.lua" register "${u%@*}" "${u#*@}" "pw-${u%@*}" \
                >>"$tmp/prosodyctl.log" 2>&1 || { bad "prosodyctl register $u"; cat "$tmp/prosodyctl.log"; exit 1; }
done
prosody_conf_at() { prosody_conf "$1" >"$tmp/prosody.cfg.lua"; }
xmpp_server_start prosody prosody_conf_at "$tmp/prosody.log" "Activated service .c2s. on .127\.0\.0\.1.:%s\$" \
        prosody -F --config "$tmp/prosody.cfg.lua"
check "Prosody listens on 127.0.0.1:${port:-?}" "[ -n '$port' ]" || exit 1

head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$tmp/big.bin"
small="$tmp/grüße + ünïcødé.txt"
echo "small file with a non-ASCII name $RANDOM" >"$small"
head -c 100000 /dev/urandom >"$tmp/reply.bin"

# the receivers first (no offline storage: a message to a user who is not online is lost)
user bob_a bob@a.test recv:2
user bob_b bob@b.test --to alice@a.test recv:2 "put:$tmp/reply.bin:application/x-test"
check "bob@a.test and bob@b.test are online" \
        "wait_for 30 \"[ -e '$tmp/bob_a/ready' ] && [ -e '$tmp/bob_b/ready' ]\""
user alice alice@a.test --to bob@a.test --to bob@b.test "put:$tmp/big.bin" "put:$small:text/plain" recv:1
check "alice@a.test put two files (v1 slots) and got one" "user_done alice"
check "bob@a.test got two messages" "user_done bob_a"
check "bob@b.test got two and put one (v2 slot)" "user_done bob_b"

url_big=$(sent "$tmp/big.bin" 1 "$tmp/alice/sent")
url_small=$(sent "$small" 1 "$tmp/alice/sent")
url_reply=$(sent "$tmp/reply.bin" 1 "$tmp/bob_b/sent")
check "a.test's module signs with protocol v1: ?v=" "[[ '$(sent "$tmp/big.bin" 2 "$tmp/alice/sent")' == '$url_big?v='* ]]"
check "b.test's with v2: ?v2=" "[[ '$(sent "$tmp/reply.bin" 2 "$tmp/bob_b/sent")' == '$url_reply?v2='* ]]"
check "the slots point at the relays' XMPP faces: $url_big" \
        "[[ '$url_big' == http://${http[A]}/xmpp/a.test/* ]] && [[ '$url_reply' == http://${http[B]}/xmpp/b.test/* ]]"
check "the non-ASCII name is percent-encoded in its URL: ${url_small##*/}" \
        "[[ '${url_small##*/}' == *%* ]]"
for who in bob_a bob_b; do
        check "$who: the big file's SHA-256 is alice's" "[ \"\$(sha '$(got "$tmp/$who" "$url_big")')\" = '$(sha "$tmp/big.bin")' ]"
        check "$who: the non-ASCII one's too" "[ \"\$(sha '$(got "$tmp/$who" "$url_small")')\" = '$(sha "$small")' ]"
done
check "alice: bob@b.test's file (through relay B, v2) is identical" \
        "cmp -s '$(got "$tmp/alice" "$url_reply")' '$tmp/reply.bin'"
check "bob@b.test's message came from bob@b.test" "grep -q ' bob@b.test $url_reply\$' '$tmp/alice/received'"

# federation: bob@b.test's relay B serves alice's file by its content address, pulled from A
curl -sS -I "$url_big" >"$tmp/head" 2>&1
hdr() { tr -d '\r' <"$tmp/head" | sed -n "s/^$1: *//Ip" | head -1; }
fid=$(hdr Chapar-File-Id)
origin=$(hdr Chapar-Relay-Key)
etag=$(hdr ETag)
check "HEAD on A names the file (Chapar-File-Id $fid, ETag $etag)" "[[ '$fid' =~ ^[0-9a-f]{64}\$ ]] && [ -n '$etag' ]"
check "and its relay (Chapar-Relay-Key is A's key)" "[ '$origin' = '${key[A]}' ]"
code=$(curl -sS -o "$tmp/big.via-b" -w '%{http_code}' "http://${http[B]}/f/$fid?origin=$origin")
check "GET B/f/ID?origin=A's key: $code, the same SHA-256" \
        "[ '$code' = 200 ] && [ \"\$(sha '$tmp/big.via-b')\" = '$(sha "$tmp/big.bin")' ]"
curl -s "http://${http[B]}/metrics" >"$tmp/B.metrics"
check "B's /metrics counts the fetch from A: $(grep 'peer_fetches_total{peer="A",outcome="done"}' "$tmp/B.metrics")" \
        "grep -qE '^chapar_peer_fetches_total\\{peer=\"A\",outcome=\"done\"\\} [1-9]' '$tmp/B.metrics'"

# what the module signs is what chapard checks: a forged HMAC is refused
put_url=http://${http[A]}/xmpp/a.test/forged-$RANDOM/x.bin?v=$(printf '0%.0s' $(seq 64))
code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$tmp/reply.bin" "$put_url")
check "a PUT with a forged ?v= is refused: $code" "[ '$code' = 403 ]"

check "Prosody is still up" "kill -0 $server_pid"
relays_stop A B
finish
