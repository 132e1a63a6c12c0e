#!/usr/bin/env bash
# chapard tenant-key and chapard token: the key file (mode 0600, never overwritten, its last
# printed line the relay's config line), a key file others may read refused, docs/tokens.md's
# vector 1 minted byte for byte, and --verify's verdicts: a fresh token valid, a tampered,
# expired, early, wrong-audience, wrong-key, wrong-tenant and out-of-scope one refused, each
# naming why.
set -euo pipefail
chapard=$1
. "$(dirname "$0")/lib.sh"
lib_tmp token

# the key file
out=$("$chapard" tenant-key --out "$tmp/k")
line=$(printf '%s\n' "$out" | tail -n 1)
check "tenant-key's key file has mode 0600" "[ \"\$(stat -c %a '$tmp/k')\" = 600 ]"
check "tenant-key's last line is token_key = KID:PUBLIC-KEY" \
        "[[ '$line' =~ ^token_key\ =\ [0-9a-f]{16}:[0-9a-f]{64}\$ ]]"
kl=${line#token_key = }
pub=$(sed -n 's/^public //p' "$tmp/k")
check "the printed public key is the file's" "[ '${kl#*:}' = '$pub' ]"
kid=$(printf '%s' "$pub" | xxd -r -p | sha256sum | cut -c1-16)
check "the key id is the first 8 bytes of SHA-256(public key)" "[ '${kl%%:*}' = '$kid' ]"
cp "$tmp/k" "$tmp/k.before"
check "tenant-key never overwrites a key" \
        "! '$chapard' tenant-key --out '$tmp/k' >/dev/null 2>'$tmp/err' && cmp -s '$tmp/k' '$tmp/k.before'"
check "tenant-key says why it refused" "grep -q 'never overwritten' '$tmp/err'"
cp -p "$tmp/k" "$tmp/k644"
chmod 644 "$tmp/k644"
check "a key file others may read is refused" \
        "! '$chapard' token --key '$tmp/k644' --tenant t >/dev/null 2>'$tmp/err' && grep -q 'chmod 600' '$tmp/err'"

# docs/tokens.md's vector 1, from a key file holding its seed
printf 'chapar-tenant-key 1\nseed %s\npublic %s\n' \
        9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60 \
        d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a >"$tmp/v"
chmod 600 "$tmp/v"
v1=AQEh_jHfoVSiYQARIjNEVWZ3iJmqu8zd7v8AuVVpAAAAABDHVWkAAAAAAAAAQAAAAAAQAAAAgDoJAAGFIPAJiTCnVHSLfdy0PvdaDb86DSY4GvTrpKmOqptOahFleGFtcGxlLW1lc3Nlbmdlcgh1XzVmM2E5YwBtkKKWdiZWuVFGAhoV5K9ij1xndxCWrd_X2edMIBTpPLjNQthH4aqlSNhETiQxSQ1uI4wrVM5DSVb_wUAopEMI
got=$("$chapard" token --key "$tmp/v" --tenant example-messenger --subject u_5f3a9c \
        --token-id 00112233445566778899aabbccddeeff --now 1767225600 --ttl 3600 \
        --bytes 1073741824 --files 16 --file-life 604800 --scope upload \
        --audience 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a)
check "chapard token mints docs/tokens.md's vector 1" "[ '$got' = '$v1' ]"
vkl=21fe31dfa154a261:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
check "vector 1 verifies at its issue time" \
        "'$chapard' token --verify '$v1' --key-line $vkl --now 1767225600 | tail -n 1 | grep -qx valid"

# verdicts on a fresh token
relay=$(head -c 32 /dev/urandom | xxd -p -c 64)
tok=$("$chapard" token --key "$tmp/k" --tenant chat.example --scope upload,offer --ttl 600 \
        --audience "$relay" --subject alice --files 3 --bytes 5000)
"$chapard" token --verify "$tok" --key-line "$kl" --audience "$relay" >"$tmp/out"
check "a fresh token is valid" "tail -n 1 '$tmp/out' | grep -qx valid"
check "--verify prints the fields" \
        "grep -qx 'tenant chat.example' '$tmp/out' && grep -qx 'subject alice' '$tmp/out' && grep -qx 'scopes upload offer' '$tmp/out' && grep -qx 'max_files 3' '$tmp/out' && grep -qx 'max_bytes 5000' '$tmp/out' && grep -qx 'audience relay $relay' '$tmp/out'"
refused() { # NAME REASON TOKEN [verify args]: --verify exits 1 naming REASON
        local name=$1 reason=$2 t=$3
        shift 3
        local rc=0
        "$chapard" token --verify "$t" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
        if [ $rc -eq 1 ] && grep -q -- "$reason" "$tmp/err" && ! grep -qx valid "$tmp/out"; then
                ok "$name"
        else
                bad "$name (exit $rc: $(cat "$tmp/err"))"
        fi
}
# a character in the signature's part changed: another signature, same length
i=$((${#tok} - 20))
c=${tok:$i:1}
if [ "$c" = A ]; then n=B; else n=A; fi
refused "a tampered signature is refused" "signature is not valid" "${tok:0:$i}$n${tok:$((i + 1))}" --key-line "$kl"
# the byte budget's first byte (offset 42, characters 56..57 of the text) changed
i=57
c=${tok:$i:1}
if [ "$c" = A ]; then n=B; else n=A; fi
refused "a tampered field is refused" "signature is not valid" "${tok:0:$i}$n${tok:$((i + 1))}" --key-line "$kl"
refused "a cut token is refused" "malformed" "${tok:0:100}" --key-line "$kl"
refused "another relay's token is refused" "another relay" "$tok" --key-line "$kl" --audience chat.example
refused "an expired token is refused" "expired" "$tok" --key-line "$kl" --now $(($(date +%s) + 600 + 61))
refused "a token from the future is refused" "not valid yet" "$tok" --key-line "$kl" --now $(($(date +%s) - 3600))
refused "a token out of scope is refused" "does not allow" "$tok" --key-line "$kl" --scope pull
refused "another tenant's token is refused" "key the tenant does not have" "$tok" --key-line "$kl" --tenant other
refused "a token under another key is refused" "key the tenant does not have" "$tok" --key-line "$vkl"
check "the same token under the right key of two is valid" \
        "'$chapard' token --verify '$tok' --key-line $vkl --key-line '$kl' | tail -n 1 | grep -qx valid"
# options minting refuses
check "--ttl over 24 h is refused" "! '$chapard' token --key '$tmp/k' --tenant t --ttl 86401 >/dev/null 2>&1"
check "an unknown scope is refused" "! '$chapard' token --key '$tmp/k' --tenant t --scope upload,delete >/dev/null 2>&1"
check "a bad tenant name is refused" "! '$chapard' token --key '$tmp/k' --tenant 'Chat Example' >/dev/null 2>&1"
finish
