#!/usr/bin/env bash
# chapard keygen and the relay's identity: the key file (mode 0600) holds the printed public key,
# an existing file is never overwritten, a damaged one is refused at start-up, and without --key
# the relay creates one in its data directory and reports it in the ready file. A key file (--key
# or DATA/relay.key) that others may read is refused at start-up, naming the file, its mode and
# the fix.
set -euo pipefail
chapard=$1
. "$(dirname "$0")/lib.sh"
lib_tmp keygen

pub=$("$chapard" keygen --out "$tmp/k")
[ "$(stat -c %a "$tmp/k")" = 600 ] || { echo "key file mode is not 0600"; exit 1; }
grep -q "^public $pub\$" "$tmp/k" || { echo "printed key is not the file's"; exit 1; }
[[ $pub =~ ^[0-9a-f]{64}$ ]] || { echo "public key is not 64 lowercase hex digits"; exit 1; }
if "$chapard" keygen --out "$tmp/k" 2>/dev/null; then echo "keygen overwrote a key"; exit 1; fi

# a relay started with --key reports that key; one without keeps its own in the data directory
"$chapard" --data "$tmp/d1" --listen 127.0.0.1:0 --http off --key "$tmp/k" --ready-file "$tmp/r1" &
p1=$!
"$chapard" --data "$tmp/d2" --listen 127.0.0.1:0 --http off --ready-file "$tmp/r2" &
p2=$!
lib_track $p1 $p2
wait_file "$tmp/r1" && wait_file "$tmp/r2"
grep -q "^pubkey=$pub\$" "$tmp/r1" || { echo "ready file lacks the --key public key"; exit 1; }
own=$(sed -n 's/^pubkey=//p' "$tmp/r2")
grep -q "^public $own\$" "$tmp/d2/relay.key" || { echo "data-dir key differs from the ready file"; exit 1; }
kill -TERM $p1 $p2
wait $p1 $p2

# the same data directory keeps the same key across restarts
"$chapard" --data "$tmp/d2" --listen 127.0.0.1:0 --http off --ready-file "$tmp/r3" &
p3=$!
lib_track $p3
wait_file "$tmp/r3"
grep -q "^pubkey=$own\$" "$tmp/r3" || { echo "the relay's key changed across a restart"; exit 1; }
kill -TERM $p3
wait $p3

# a damaged key file is a clear start-up error
# (the public line's last hex digit changed: it no longer belongs to the private key)
last=$(sed -n 's/^public .*\(.\)$/\1/p' "$tmp/k")
if [ "$last" = 0 ]; then new=1; else new=0; fi
sed -i "s/^\(public .*\).\$/\1$new/" "$tmp/k"
if "$chapard" --data "$tmp/d4" --listen 127.0.0.1:0 --http off --key "$tmp/k" 2>"$tmp/err"; then
        echo "a damaged key file was accepted"; exit 1
fi
grep -q "key" "$tmp/err" || { echo "no clear message for a damaged key"; cat "$tmp/err"; exit 1; }

# a key file others may read is refused, naming the file, its mode and the fix; so is the data
# directory's own relay.key
refused() { # FILE MODE [chapard args]: the relay refuses to start with FILE at MODE
        local f=$1 m=$2
        shift 2
        chmod "$m" "$f"
        rm -f "$tmp/rr"
        "$chapard" --listen 127.0.0.1:0 --http off --ready-file "$tmp/rr" "$@" 2>"$tmp/err" &
        local p=$!
        lib_track $p
        wait_for 20 "[ -e '$tmp/rr' ] || ! kill -0 $p 2>/dev/null"
        if [ -e "$tmp/rr" ]; then echo "a key file of mode $m was accepted: $f"; exit 1; fi
        if wait $p; then echo "the relay exited 0 for a key file of mode $m"; exit 1; fi
        grep -q "$f" "$tmp/err" && grep -q "$m" "$tmp/err" && grep -q "chmod 600 $f" "$tmp/err" ||
                { echo "no clear message for a key file of mode $m"; cat "$tmp/err"; exit 1; }
}
"$chapard" keygen --out "$tmp/k2" >/dev/null
refused "$tmp/k2" 640 --data "$tmp/d5" --key "$tmp/k2"
refused "$tmp/k2" 604 --data "$tmp/d5" --key "$tmp/k2"
refused "$tmp/d2/relay.key" 644 --data "$tmp/d2"
chmod 600 "$tmp/d2/relay.key"
"$chapard" --data "$tmp/d2" --listen 127.0.0.1:0 --http off --ready-file "$tmp/r6" &
p6=$!
lib_track $p6
wait_file "$tmp/r6"
kill -TERM $p6
wait $p6
echo "keygen_cli: ok"
