#!/usr/bin/env bash
# Runs test_shared_read (the store's reads over the shared state, [store] rados_shared) on a
# throw-away cluster of its own (tests/ceph/cluster.sh), stopped on exit. Skips (77) without the
# ceph packages, or when the build has no RADOS support (no TEST_BINARY given).
# Usage: shared_read.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without RADOS support (librados-dev)"; exit 77; }
lib_tmp cephsr
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user"
rc=$?
check "test_shared_read passes" "[ $rc -eq 0 ]"
finish
