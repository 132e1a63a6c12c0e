#!/usr/bin/env bash
# chapard keygen and the relay's identity: the key file (mode 0600) holds the printed public key,
# an existing file is never overwritten, a damaged one is refused at start-up, and without --key
# the relay creates one in its data directory and reports it in the ready file.
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
echo "keygen_cli: ok"
