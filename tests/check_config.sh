#!/usr/bin/env bash
# chapard check-config FILE (like nginx -t): the checks chapard makes at start, on the file alone.
# Good files (the shipped sample as it is, and with every setting uncommented) pass with nginx's
# two lines and exit 0; bad ones (syntax, a bad value, an unknown key, the no-tenant rule, a
# tenant without a key or with a key that is no Ed25519 point, a peer's bad pubkey, a missing or
# unsafe key file, a missing file) exit 1 naming the file, and the line where there is one. Also:
# every key of server/conf/config.c's settings tables is in the sample config and in
# chapard.conf(5), so that neither drifts from the code.
# Usage: check_config.sh CHAPARD SOURCE-DIR
set -uo pipefail
chapard=$1
src=$2
. "$(dirname "$0")/lib.sh"
lib_tmp check-config
sample=$src/dist/chapard.conf

# $1 name, $2 file: expects success and both lines
accepts() {
        local out rc
        out=$("$chapard" check-config "$2" 2>"$tmp/err")
        rc=$?
        check "$1: accepted (exit $rc: $(head -n1 "$tmp/err" | cut -c1-200))" \
                "[ $rc -eq 0 ] && [ ! -s '$tmp/err' ] &&
                 grep -qxF 'chapard: the configuration file $2 syntax is ok' <<<\"\$out\" &&
                 grep -qxF 'chapard: configuration file $2 test is successful' <<<\"\$out\""
}
# $1 name, $2 file, $3 text the error must contain (grep -F)
refuses() {
        local rc
        want=$3
        "$chapard" check-config "$2" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        check "$1: refused with '$3' (exit $rc: $(head -n1 "$tmp/err" | cut -c1-200))" \
                "[ $rc -eq 1 ] && grep -qF -- \"\$want\" '$tmp/err' &&
                 grep -qxF 'chapard: configuration file $2 test failed' '$tmp/err' &&
                 ! grep -q 'test is successful' '$tmp/out'"
}

accepts "the shipped sample" "$sample"
"$chapard" keygen --out "$tmp/relay.key" >/dev/null
sed -e 's/^#\([a-z_[]\)/\1/' -e "s|^key = .*|key = $tmp/relay.key|" \
        -e "s|^data = .*|data = $tmp/data|" "$sample" >"$tmp/all.conf"
check "the sample with every setting uncommented has them all" \
        "[ \$(grep -c '^[a-z_]* = ' '$tmp/all.conf') -ge 49 ]"
accepts "the sample with every setting uncommented" "$tmp/all.conf"

w() { printf "$2" >"$tmp/$1.conf"; }
w syntax '[server]\nthreads = 2\nthis is not ini\n'
refuses "a line that is not INI" "$tmp/syntax.conf" "$tmp/syntax.conf:3:"
w value '[server]\n\nthreads = many\n'
refuses "a bad value" "$tmp/value.conf" "$tmp/value.conf:3: threads = 'many'"
w unknown '[store]\nmap_size = 1G\nnot_a_key = 1\n'
refuses "an unknown key" "$tmp/unknown.conf" "$tmp/unknown.conf:3: unknown key 'not_a_key'"
w public '[server]\nhttp = off\nlisten = 0.0.0.0:7700\n'
refuses "a public face with no tenant and no open (the no-tenant rule)" "$tmp/public.conf" \
        "is not a loopback address and no tenant is configured"
w public_open '[server]\nhttp = off\nlisten = 0.0.0.0:7700\nopen = true\n'
accepts "a public face with open = true" "$tmp/public_open.conf"
tk=$(grep -o 'token_key = .*' "$sample" | head -1)
w tenant "[server]\nlisten = 0.0.0.0:7700\nhttp = off\n\n[tenant \"a\"]\n$tk\nmax_stored = 1G\n"
accepts "a public face with a tenant" "$tmp/tenant.conf"
w nokey '[server]\nlisten = 0.0.0.0:7700\n[tenant "a"]\nmax_stored = 1G\n'
refuses "a tenant without token_key" "$tmp/nokey.conf" "$tmp/nokey.conf:3: [tenant \"a\"] has neither token_key nor xmpp_secret"
# 64 hex digits that are not a point on the curve libsodium would verify against
w badpoint "[tenant \"a\"]\ntoken_key = 0011223344556677:$(printf '%064d' 0)\n"
refuses "a tenant key that can never verify" "$tmp/badpoint.conf" "$tmp/badpoint.conf:2:"
w peer "[peer \"b\"]\naddress = 127.0.0.1:7701\npubkey = 1234\n"
refuses "a peer whose pubkey is not 64 hex digits" "$tmp/peer.conf" "[peer \"b\"] pubkey must be 64 hex digits"
w keymissing "[server]\nkey = $tmp/none.key\n"
refuses "a key file that does not exist" "$tmp/keymissing.conf" "$tmp/none.key"
cp "$tmp/relay.key" "$tmp/open.key" && chmod 644 "$tmp/open.key"
w keyopen "[server]\nkey = $tmp/open.key\n"
refuses "a key file others may read" "$tmp/keyopen.conf" "chmod 600"
refuses "a file that does not exist" "$tmp/missing.conf" "cannot read config file $tmp/missing.conf"
"$chapard" check-config >/dev/null 2>"$tmp/err"
rc=$?
check "no file: usage on stderr, exit 1 (exit $rc)" "[ $rc -eq 1 ] && grep -q 'check-config FILE' '$tmp/err'"

# every key of the settings tables (server/conf/config.c), in the sample and the man page
grep -oE '\{SEC_[A-Z]+, "[a-z_]+"' "$src/server/conf/config.c" | sed 's/.*"\(.*\)"/\1/' \
        >"$tmp/keys"
# keys parsed by hand, outside the tables: [server] audience, [peer] address/pubkey/public_pull,
# token_key
printf '%s\n' audience address pubkey public_pull token_key >>"$tmp/keys"
check "config.c's tables have their keys ($(wc -l <"$tmp/keys") found)" "[ \$(wc -l <'$tmp/keys') -ge 49 ]"
missing_sample=() missing_man=()
while read -r k; do
        grep -qE "^#?$k = " "$sample" || missing_sample+=("$k")
        grep -qE "^\\.BI \"$k = \"" "$src/man/chapard.conf.5" || missing_man+=("$k")
done <"$tmp/keys"
check "every key is in dist/chapard.conf (missing: ${missing_sample[*]:-none})" "[ ${#missing_sample[@]} -eq 0 ]"
check "every key is in man/chapard.conf.5 (missing: ${missing_man[*]:-none})" "[ ${#missing_man[@]} -eq 0 ]"
finish
