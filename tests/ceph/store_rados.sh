#!/usr/bin/env bash
# Runs test_store_rados (the store over the RADOS backend) on a throw-away cluster of its own
# (tests/ceph/cluster.sh), stopped on exit. Skips (77) without the ceph packages, or when the build
# has no RADOS backend (no TEST_BINARY given: librados was not found).
# Usage: store_rados.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
cluster=$(cd "$(dirname "$0")" && pwd)/cluster.sh
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
for p in ceph-mon ceph-osd ceph rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done

lib_tmp cephst
cdir=$(mktemp -d /tmp/cph.XXXX)
rmdir "$cdir"
# the test resumes the OSD on every exit path of its own; this covers its being killed
lib_at_exit+=("[ -f '$cdir/pids' ] && kill -CONT \$(cat '$cdir/pids') 2>/dev/null")
lib_at_exit+=("'$cluster' stop '$cdir'")
if ! out=$("$cluster" start "$cdir" 2>"$tmp/start.err"); then
        cat "$tmp/start.err"
        bad "cluster.sh start"
        finish
        exit
fi
eval "$out"
"$bin" "$conf" "$pool" "$user" "$cdir/pids"
rc=$?
check "test_store_rados passes" "[ $rc -eq 0 ]"
finish
