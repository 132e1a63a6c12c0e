#!/usr/bin/env bash
# The client's keys, through the chapar command against a real relay:
# - pinning: a put to a relay that is neither pinned nor given by --relay-key is refused (exit 3,
#   naming --relay-key KEY and --trust-new-relay) and pins nothing; --trust-new-relay and
#   --relay-key pin it; `chapar relays` lists the pins and `relays remove` drops one.
# Usage: keys_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp keys
pins=$tmp/config/chapar/known_relays

relay_start R --log-level warn
ra=${addr[R]}
rk=${key[R]}
head -c 100000 /dev/urandom >"$tmp/a"

# --- pinning -------------------------------------------------------------------------------
"$chapar" put "$tmp/a" --relay "$ra" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a put to an unknown relay without a key is refused with exit 3 (exit $rc): $(head -c 200 "$tmp/err")" \
        "[ $rc -eq 3 ] && [ ! -s '$tmp/out' ] && grep -q -- '--relay-key KEY' '$tmp/err' && grep -q -- '--trust-new-relay' '$tmp/err'"
check "and pins nothing" "! grep -qs '$ra' '$pins'"
"$chapar" put "$tmp/a" --relay "$ra" --relay-key "$(printf '%064d' 7)" >/dev/null 2>"$tmp/err"
rc=$?
check "a put with a wrong --relay-key is refused with exit 3 (exit $rc)" "[ $rc -eq 3 ]"
check "and pins nothing" "! grep -qs '$ra' '$pins'"
t1=$("$chapar" put "$tmp/a" --relay "$ra" --trust-new-relay 2>"$tmp/err")
check "--trust-new-relay puts and pins the key the relay presents" \
        "[ -n '$t1' ] && grep -qx '$ra $rk' '$pins'" || cat "$tmp/err"
t=$("$chapar" put "$tmp/a" --relay "$ra" 2>"$tmp/err")
check "then a put without a key uses the pin" "[ -n '$t' ]" || cat "$tmp/err"
out=$("$chapar" relays 2>"$tmp/err")
check "chapar relays lists the pin ($out)" "[ '$out' = '$ra $rk' ]"
"$chapar" relays remove "$ra" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "chapar relays remove drops it (exit $rc): $(cat "$tmp/out")" \
        "[ $rc -eq 0 ] && grep -q '$ra' '$tmp/out' && [ -z \"\$('$chapar' relays)\" ]"
"$chapar" relays remove "$ra" >/dev/null 2>"$tmp/err"
rc=$?
check "removing it again exits 1 with a message (exit $rc): $(cat "$tmp/err")" \
        "[ $rc -eq 1 ] && grep -q '$ra' '$tmp/err'"
"$chapar" put "$tmp/a" --relay "$ra" >/dev/null 2>&1
check "with the pin removed the relay is unknown again" "[ $? -eq 3 ]"
"$chapar" put "$tmp/a" --relay "$ra" --relay-key "$rk" >/dev/null 2>"$tmp/err"
check "a put with the right --relay-key pins that key" "[ $? -eq 0 ] && grep -qx '$ra $rk' '$pins'"

relay_stop R
finish
