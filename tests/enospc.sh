#!/usr/bin/env bash
# A full disk recovers by itself: a store on a 48 MiB tmpfs, with the default segment size, is
# filled until puts fail with ENOSPC; once its files expire, one GC makes puts work again without
# a restart, and after a second fill, across a restart. `chapard verify` must find the store clean
# afterwards. Needs root (mount); skipped with exit 77 when the mount is refused.
set -euo pipefail
chapard=$1
test_store=$2
tmp=$(mktemp -d)
mnt="$tmp/disk"
mounted=0
cleanup() {
        if [ "$mounted" = 1 ]; then umount "$mnt" || umount -l "$mnt"; fi
        rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$mnt"
if ! mount -t tmpfs -o size=48m tmpfs "$mnt" 2>"$tmp/mount.err"; then
        echo "skipped: cannot mount a tmpfs here ($(cat "$tmp/mount.err")); this test needs root"
        exit 77
fi
mounted=1

"$test_store" full-disk "$mnt/store"
df -B1 "$mnt" | tail -1
"$chapard" verify --data "$mnt/store" >"$tmp/verify" || { cat "$tmp/verify"; echo "verify failed"; exit 1; }
cat "$tmp/verify"
grep -q ': 0 problems' "$tmp/verify"
echo "enospc: ok"
