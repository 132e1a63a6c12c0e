#!/usr/bin/env bash
# Upload tokens minted from docs/tokens.md alone: tests/interop/mint_token.mjs (node:crypto, no
# chapar code) and chapard token, given the same inputs, print the same token — the doc's two
# vectors and a fresh key's token — and chapard's verifier accepts Node's token and refuses it
# with any character changed.
# Usage: token_node.sh CHAPARD     (needs node >= 18)
set -euo pipefail
chapard=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
command -v node >/dev/null || { echo "token_node.sh: node is not installed (scripts/deps --test)" >&2; exit 1; }
lib_tmp tokennode
mint=$here/interop/mint_token.mjs

# the doc's vectors: the seed of RFC 8032's first test key
seed=9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60
printf 'chapar-tenant-key 1\nseed %s\npublic %s\n' "$seed" \
        d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a >"$tmp/v"
chmod 600 "$tmp/v"
vkl=21fe31dfa154a261:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
both() { # NAME KEYFILE SEED [common args] -- [chapard-only args] -- [node-only args]
        local name=$1 kf=$2 sd=$3 common=() conly=() nonly=()
        shift 3
        while [ $# -gt 0 ] && [ "$1" != -- ]; do common+=("$1"); shift; done
        shift
        while [ $# -gt 0 ] && [ "$1" != -- ]; do conly+=("$1"); shift; done
        shift
        nonly=("$@")
        c=$("$chapard" token --key "$kf" "${common[@]}" "${conly[@]}")
        n=$(node "$mint" --seed "$sd" "${common[@]}" "${nonly[@]}")
        if [ -n "$c" ] && [ "$c" = "$n" ]; then ok "$name"; else bad "$name: chapard $c, node $n"; fi
}
v1=AQEh_jHfoVSiYQARIjNEVWZ3iJmqu8zd7v8AuVVpAAAAABDHVWkAAAAAAAAAQAAAAAAQAAAAgDoJAAGFIPAJiTCnVHSLfdy0PvdaDb86DSY4GvTrpKmOqptOahFleGFtcGxlLW1lc3Nlbmdlcgh1XzVmM2E5YwBtkKKWdiZWuVFGAhoV5K9ij1xndxCWrd_X2edMIBTpPLjNQthH4aqlSNhETiQxSQ1uI4wrVM5DSVb_wUAopEMI
v2=AQch_jHfoVSiYfDh0sO0pZaHeGlaSzwtHg8AuVVpAAAAAIAKV2kAAAAAQEtMAAAAAAABAAAAgFEBAAIScmVsYXlzLmV4YW1wbGUub3JnDGNoYXQuZXhhbXBsZQdhbGljZS03AeOwxEKY_BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhVasXrjIDQvH3CFdJi60P6JhxcJYvLINZ7mrUmPiAy37asZJSkiZfzvsarHNEFYbe5UHNJVrHYrYo2xQYtU6jDDA
relay=8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a
both "vector 1: node and chapard mint the same token" "$tmp/v" "$seed" \
        --tenant example-messenger --subject u_5f3a9c --token-id 00112233445566778899aabbccddeeff \
        --ttl 3600 --bytes 1073741824 --files 16 --file-life 604800 --scope upload \
        -- --now 1767225600 --audience $relay -- --issued-at 1767225600 --audience-key $relay
check "vector 1 is docs/tokens.md's" "[ '$n' = '$v1' ]"
both "vector 2: node and chapard mint the same token" "$tmp/v" "$seed" \
        --tenant chat.example --subject alice-7 --token-id f0e1d2c3b4a5968778695a4b3c2d1e0f \
        --ttl 86400 --bytes 5000000 --files 1 --file-life 86400 --scope upload,offer,pull \
        --file-id e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
        -- --now 1767225600 --audience relays.example.org \
        -- --issued-at 1767225600 --audience-name relays.example.org
check "vector 2 is docs/tokens.md's" "[ '$n' = '$v2' ]"
check "docs/tokens.md carries both tokens" "grep -qx '$v1' '$here/../docs/tokens.md' && grep -qx '$v2' '$here/../docs/tokens.md'"

# a fresh key, a random token id, now: Node's token is chapard's, and chapard accepts it
line=$("$chapard" tenant-key --out "$tmp/k" | tail -n 1)
kl=${line#token_key = }
fresh=$(sed -n 's/^seed //p' "$tmp/k")
now=$(date +%s)
id=$(head -c 16 /dev/urandom | xxd -p -c 32)
both "a fresh key's token: node and chapard agree" "$tmp/k" "$fresh" \
        --tenant chat.example --subject "user-$id" --token-id "$id" --ttl 900 --bytes 12345 \
        --files 2 --file-life 3600 --scope upload,pull \
        -- --now "$now" --audience chat.example -- --issued-at "$now" --audience-name chat.example
"$chapard" token --verify "$n" --key-line "$kl" --audience chat.example --tenant chat.example \
        --scope upload,pull >"$tmp/out" 2>"$tmp/err" || true
check "chapard accepts node's token" "tail -n 1 '$tmp/out' | grep -qx valid"
check "chapard reads node's fields" \
        "grep -qx 'subject user-$id' '$tmp/out' && grep -qx 'token_id $id' '$tmp/out' && grep -qx 'max_bytes 12345' '$tmp/out'"
# every 5th character changed: each is refused (exit 1), never accepted
changed=0 accepted=0
for ((i = 0; i < ${#n}; i += 5)); do
        c=${n:$i:1}
        if [ "$c" = A ]; then r=Q; else r=A; fi
        t="${n:0:$i}$r${n:$((i + 1))}"
        rc=0
        "$chapard" token --verify "$t" --key-line "$kl" --audience chat.example >/dev/null 2>&1 || rc=$?
        changed=$((changed + 1))
        [ $rc -eq 1 ] || accepted=$((accepted + 1))
done
check "node's token with one character changed is refused ($changed tries)" "[ $accepted -eq 0 ] && [ $changed -gt 40 ]"
# Node refuses what the spec forbids
check "node refuses an unknown scope" "! node '$mint' --seed $seed --tenant t --subject s --token-id $id --issued-at 1 --ttl 1 --bytes 0 --files 0 --file-life 0 --scope delete --audience-name t 2>/dev/null"
finish
