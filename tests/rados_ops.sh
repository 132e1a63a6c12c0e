#!/usr/bin/env bash
# The librados facts docs/scale-out.md rests on (tests/ceph/test_rados_ops.c, one "fact:" line
# each), against a throw-away cluster of this test's own (tests/ceph/cluster.sh): the program
# gets the cluster's conf, pool, user and the OSD's PID (it stops and continues the OSD to pin the
# op timeout; the EXIT trap continues it too, before the cluster is stopped). Skips (77) when the
# build found no librados (PROGRAM not given) or ceph-mon, ceph-osd or rados are not installed.
# Usage: rados_ops.sh [PROGRAM]
set -uo pipefail
. "$(dirname "$0")/lib.sh"
prog=${1:-}

[ -n "$prog" ] || { echo "SKIP: built without librados (librados-dev)"; exit 77; }
lib_tmp rados-ops
. "$(dirname "$0")/ceph/up.sh" # the cluster (conf, pool, user, osd), stopped at exit
check "cluster.sh start gave conf, pool, user and an OSD PID" \
        "[ -f '$conf' ] && [ -n '$pool' ] && [ -n '$user' ] && [ -e '/proc/$osd' ]"

timeout -k 5 150 "$prog" "$conf" "$pool" "$user" "$osd"
rc=$?
check "test_rados_ops: every fact holds (exit $rc)" "[ $rc -eq 0 ]"
check "the OSD was continued (not left stopped)" \
        "! grep -q '^State:[[:space:]]*T' /proc/$osd/status"
finish
