#!/usr/bin/env bash
# Runs test_store_rados (the store over the RADOS backend) on a throw-away cluster of its own
# (tests/ceph/cluster.sh), stopped on exit. Skips (77) without the ceph packages, or when the build
# has no RADOS backend (no TEST_BINARY given: librados was not found).
# Usage: store_rados.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without the RADOS backend (librados-dev)"; exit 77; }
lib_tmp cephst
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user" "$cdir/pids"
rc=$?
check "test_store_rados passes" "[ $rc -eq 0 ]"
finish
