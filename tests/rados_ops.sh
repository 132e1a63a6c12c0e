#!/usr/bin/env bash
# The librados facts docs/scale-out.md rests on (tests/ceph/test_rados_ops.c, one "fact:" line
# each), against a throw-away cluster of this test's own (tests/ceph/cluster.sh): the program
# gets the cluster's conf, pool, user and the OSD's PID (it stops and continues the OSD to pin the
# op timeout; the EXIT trap continues it too, before the cluster is stopped). Skips (77) when the
# build found no librados (PROGRAM not given) or ceph-mon, ceph-osd or rados are not installed.
# Usage: rados_ops.sh [PROGRAM]
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cluster=$(cd "$(dirname "$0")" && pwd)/ceph/cluster.sh
prog=${1:-}

[ -n "$prog" ] || { echo "SKIP: built without librados (librados-dev)"; exit 77; }
for p in ceph-mon ceph-osd ceph rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done

lib_tmp rados-ops
cdir=$tmp/c
osd=
# the OSD continued (it may be stopped if the program died mid-test), then the cluster stopped
lib_at_exit+=("[ -z \"\$osd\" ] || kill -CONT \"\$osd\" 2>/dev/null" "'$cluster' stop '$cdir'")

if ! out=$("$cluster" start "$cdir" 2>"$tmp/start.err"); then
        cat "$tmp/start.err"
        bad "cluster.sh start"
        finish
        exit
fi
eval "$out"
osd=$(sed -n 2p "$cdir/pids")
check "cluster.sh start gave conf, pool, user and an OSD PID" \
        "[ -f '$conf' ] && [ -n '$pool' ] && [ -n '$user' ] && [ -e '/proc/$osd' ]"

timeout -k 5 150 "$prog" "$conf" "$pool" "$user" "$osd"
rc=$?
check "test_rados_ops: every fact holds (exit $rc)" "[ $rc -eq 0 ]"
check "the OSD was continued (not left stopped)" \
        "! grep -q '^State:[[:space:]]*T' /proc/$osd/status"
finish
