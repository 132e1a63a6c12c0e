#!/usr/bin/env bash
# Runs test_rados_state (the shared state's operations in RADOS, two handles as two relays) on a
# throw-away cluster of its own (tests/ceph/cluster.sh), stopped on exit. Skips (77) without the
# ceph packages, or when the build has no RADOS support (no TEST_BINARY given).
# Usage: rados_state.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without RADOS support (librados-dev)"; exit 77; }
lib_tmp cephrs
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user" "$osd"
rc=$?
check "test_rados_state passes" "[ $rc -eq 0 ]"
finish
