#!/usr/bin/env bash
# The client's keys, through the chapar command against a real relay:
# - pinning: a put to a relay that is neither pinned nor given by --relay-key is refused (exit 3,
#   naming --relay-key KEY and --trust-new-relay) and pins nothing; --trust-new-relay and
#   --relay-key pin it; `chapar relays` lists the pins and `relays remove` drops one.
# - the key cache: entries are 0600 in a 0700 directory; an entry or directory that others may
#   read, a symbolic link, an entry of another format or another owner is not used (a fresh key,
#   and a warning); an entry carries the relay's expiry for its file (STAT's) and is not used,
#   and is deleted, once that has passed; `chapar forget FILE|TICKET` removes an entry.
# Usage: keys_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp keys
pins=$tmp/config/chapar/known_relays
keys=$tmp/cache/chapar/keys
filekey() { echo "${1##*#}"; } # a ticket's file key
entries() { find "$keys" -maxdepth 1 -type f -name '????????????????????????????????????????????????????????????????' 2>/dev/null | wc -l; }

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
# a file whose last line has no newline (edited by hand): a new pin goes on a line of its own
cp "$pins" "$tmp/pins.saved"
printf '192.0.2.1:7700 %064d' 5 >"$pins"
"$chapar" put "$tmp/a" --relay "$ra" --trust-new-relay >/dev/null 2>"$tmp/err"
"$chapar" put "$tmp/a" --relay "$ra" >/dev/null 2>"$tmp/err"
rc=$?
check "a pin added to a file without a final newline is used (exit $rc) and keeps the old one" \
        "[ $rc -eq 0 ] && grep -qx '192.0.2.1:7700 $(printf '%064d' 5)' '$pins' && grep -qx '$ra $rk' '$pins'"
cp "$tmp/pins.saved" "$pins"

# --- the key cache: modes and what is refused ------------------------------------------------
check "the cache directory is 0700 ($(stat -c %a "$keys"))" "[ \$(stat -c %a '$keys') = 700 ]"
e=$(find "$keys" -maxdepth 1 -type f | head -1)
check "an entry is 0600 ($(stat -c %a "$e"))" "[ -n '$e' ] && [ \$(stat -c %a '$e') = 600 ]"
t2=$("$chapar" put "$tmp/a" --relay "$ra" 2>"$tmp/err")
check "the same content again reuses the cached key" "[ '$(filekey "$t1")' = '$(filekey "$t2")' ]"

# each of these makes the entry unusable: the put warns and uses a fresh key
refused() { # WHAT: the put of a warns, naming the cache, and its key is not t1's
        local t
        t=$("$chapar" put "$tmp/a" --relay "$ra" 2>"$tmp/err")
        check "$1: the put works ($?) with a fresh key and a warning: $(head -c 200 "$tmp/err")" \
                "[ -n '$t' ] && [ '$(filekey "$t1")' != '$(filekey "$t")' ] && grep -q 'warning' '$tmp/err' && grep -q '$keys' '$tmp/err'"
}
chmod 644 "$e"
refused "an entry others may read"
chmod 600 "$e"
chmod 755 "$keys"
refused "a cache directory others may enter"
chmod 700 "$keys"
mv "$e" "$tmp/entry"
ln -s "$tmp/entry" "$e"
refused "an entry that is a symbolic link"
rm "$e"
if [ "$(id -u)" = 0 ]; then
        cp -p "$tmp/entry" "$e"
        chown 65534 "$e"
        refused "an entry another user owns"
        rm -f "$e"
fi
# an entry of the old format (the bare key, then the metadata) is not read
filekey "$t1" | xxd -r -p >"$e"
chmod 600 "$e"
t=$("$chapar" put "$tmp/a" --relay "$ra" 2>"$tmp/err")
check "an entry of another format is not used" "[ -n '$t' ] && [ '$(filekey "$t1")' != '$(filekey "$t")' ]"
check "and it is replaced by one in the current format" "[ \$(head -c 4 '$e') = CHPK ]"

# --- expiry ----------------------------------------------------------------------------------
# relay E keeps files 3 s: the cache entry of a file put there must follow it
printf '[server]\nfile_expiry = 3s\n' >"$tmp/e.conf"
relay_start E --log-level warn --config "$tmp/e.conf"
"$chapar" get "$t1" --via "${addr[E]}" -o "$tmp/x" >/dev/null 2>"$tmp/err"
rc=$?
check "a get --via a relay that is not pinned is refused with exit 3 too (exit $rc)" \
        "[ $rc -eq 3 ] && grep -q -- '--trust-new-relay' '$tmp/err' && ! grep -qs '${addr[E]}' '$pins'"
head -c 5000 /dev/urandom >"$tmp/b"
tb=$("$chapar" put "$tmp/b" --relay "${addr[E]}" --relay-key "${key[E]}" 2>"$tmp/err")
rexp=$("$chapar" stat "$tb" --json | sed -n 's/.*"expires":\([0-9]*\).*/\1/p')
eexp=
for f in "$keys"/*; do # the entry that holds tb's key: bytes 48..79; its expiry: bytes 8..15
        k=$(od -An -tx1 -v -j 48 -N 32 "$f" | tr -d ' \n')
        [ "$k" = "$(filekey "$tb")" ] && eexp=$(od -An -tu8 -j 8 -N 8 "$f" | tr -d ' ')
done
check "an entry carries the relay's expiry of its file ($eexp = $rexp)" "[ -n '$rexp' ] && [ '$rexp' != 0 ] && [ '$eexp' = '$rexp' ]"
wait_for 20 "[ \$(date +%s) -ge $rexp ]"
n=$(entries)
"$chapar" forget "$tb" >/dev/null 2>&1
rc=$?
check "an expired entry is deleted when seen, and is not a key to forget (exit $rc)" "[ $rc -eq 1 ] && [ $(entries) -eq $((n - 1)) ]"
tb2=$("$chapar" put "$tmp/b" --relay "${addr[E]}" 2>"$tmp/err")
check "after it expired, the same content gets a fresh key" "[ -n '$tb2' ] && [ '$(filekey "$tb")' != '$(filekey "$tb2")' ]"

# --- forget ----------------------------------------------------------------------------------
head -c 3000 /dev/urandom >"$tmp/c"
tc=$("$chapar" put "$tmp/c" --relay "$ra" --chunk-size 131072 2>/dev/null)
n=$(entries)
"$chapar" forget "$tmp/c" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "chapar forget FILE removes its entry (exit $rc): $(cat "$tmp/out")" \
        "[ $rc -eq 0 ] && [ $(entries) -eq $((n - 1)) ] && grep -q '$tmp/c' '$tmp/out'"
"$chapar" forget "$tmp/c" >/dev/null 2>"$tmp/err"
rc=$?
check "forgetting it again exits 1 with a message (exit $rc): $(cat "$tmp/err")" "[ $rc -eq 1 ] && [ -s '$tmp/err' ]"
tc2=$("$chapar" put "$tmp/c" --relay "$ra" --chunk-size 131072 2>/dev/null)
check "a forgotten file is put under a fresh key" "[ -n '$tc2' ] && [ '$(filekey "$tc")' != '$(filekey "$tc2")' ]"
n=$(entries)
"$chapar" forget "$tc2" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "chapar forget TICKET removes its entry (exit $rc): $(cat "$tmp/out")" "[ $rc -eq 0 ] && [ $(entries) -eq $((n - 1)) ]"
"$chapar" forget "$tc2" >/dev/null 2>"$tmp/err"
check "forgetting the ticket again exits 1" "[ $? -eq 1 ]"
"$chapar" forget "$tmp/does-not-exist" >/dev/null 2>"$tmp/err"
rc=$?
check "forget of a missing file exits 4 naming it (exit $rc)" "[ $rc -eq 4 ] && grep -q does-not-exist '$tmp/err'"
relay_stop R
relay_stop E
finish
