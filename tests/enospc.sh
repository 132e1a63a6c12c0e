#!/usr/bin/env bash
# A full disk recovers by itself, on a 48 MiB tmpfs with the default segment size.
# 1. The store (test_store full-disk): filled until puts fail with ENOSPC; once its files expire,
#    one GC makes puts work again without a restart, and after a second fill, across a restart;
#    then the filesystem's own ENOSPC part-way through an append (no reserve).
# 2. A relay: chapard with file_expiry 2 s, filled with `chapar put` until a put fails saying the
#    disk is full, while a stored file still downloads; when the relay's own GC (60 s after start)
#    has run, a put works again, without a restart.
# `chapard verify` must find both stores clean. Needs root (mount); skipped with exit 77 when
# the mount is refused.
set -euo pipefail
chapard=$1
test_store=$2
chapar=$3
. "$(dirname "$0")/lib.sh"
lib_tmp enospc
mnt="$tmp/disk"
mkdir "$mnt"
if ! mount -t tmpfs -o size=48m tmpfs "$mnt" 2>"$tmp/mount.err"; then
        echo "skipped: cannot mount a tmpfs here ($(cat "$tmp/mount.err")); this test needs root"
        exit 77
fi
lib_at_exit+=("umount '$mnt' || umount -l '$mnt'")

"$test_store" full-disk "$mnt/store"
df -B1 "$mnt" | tail -1
"$chapard" verify --data "$mnt/store" >"$tmp/verify" || { cat "$tmp/verify"; echo "verify failed"; exit 1; }
cat "$tmp/verify"
grep -q ': 0 problems' "$tmp/verify"
rm -rf "$mnt/store"

# 2. a relay
printf '[server]\nfile_expiry = 2s\n' >"$tmp/relay.conf"
"$chapard" --config "$tmp/relay.conf" --data "$mnt/relay" --listen 127.0.0.1:0 --http off \
        --ready-file "$tmp/ready" --log-level info 2>"$tmp/relay.log" &
rpid=$!
lib_track $rpid
wait_file "$tmp/ready" || true
addr=$(sed -n 's/^native=//p' "$tmp/ready")
[ -n "$addr" ] || { cat "$tmp/relay.log"; echo "the relay did not start"; exit 1; }
put() { "$chapar" put "$1" --relay "$addr" --trust-new-relay 2>"$tmp/err"; }
n=0
first=
while [ $n -lt 40 ]; do
        head -c $((2 * 1024 * 1024)) /dev/urandom >"$tmp/f$n"
        if ! t=$(put "$tmp/f$n"); then break; fi
        [ -n "$first" ] || { first=$t; cp "$tmp/f$n" "$tmp/first"; }
        n=$((n + 1))
done
echo "relay: $n files of 2 MiB stored, then: $(cat "$tmp/err")"
[ $n -gt 3 ] && [ $n -lt 40 ] || { echo "expected the disk to fill after a few files"; exit 1; }
grep -q "No space left on device" "$tmp/err" || { echo "the full disk was not reported clearly"; exit 1; }
"$chapar" get "$first" -o "$tmp/back" >/dev/null 2>"$tmp/err" && cmp -s "$tmp/first" "$tmp/back" ||
        { cat "$tmp/err"; echo "a stored file did not download while the disk was full"; exit 1; }
# the relay's GC runs 60 s after start: wait for its log line (every file has expired by then)
for _ in $(seq 1500); do grep -q "gc: .* files and" "$tmp/relay.log" && break; sleep 0.1; done
grep "gc: " "$tmp/relay.log" || { echo "the relay's GC never ran"; exit 1; }
head -c $((2 * 1024 * 1024)) /dev/urandom >"$tmp/after"
t=$(put "$tmp/after") || { cat "$tmp/err"; echo "after GC the relay still refuses puts"; exit 1; }
rm -f "$tmp/back" # get never overwrites
"$chapar" get "$t" -o "$tmp/back" >/dev/null && cmp -s "$tmp/after" "$tmp/back" ||
        { echo "the file put after GC does not download"; exit 1; }
kill -TERM "$rpid"
wait "$rpid" || true
df -B1 "$mnt" | tail -1
"$chapard" verify --data "$mnt/relay" >"$tmp/verify" || { cat "$tmp/verify"; echo "verify failed"; exit 1; }
cat "$tmp/verify"
grep -q ': 0 problems' "$tmp/verify"
echo "enospc: ok"
