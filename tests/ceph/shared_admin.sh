#!/usr/bin/env bash
# Runs test_shared_admin (the administration reads over the shared state, [store] rados_shared:
# listings, tenants, the quarantine list and the counts of one store, of what another store on
# the same pool wrote) on a throw-away cluster of its own (tests/ceph/cluster.sh), stopped on exit.
# Skips (77) without the ceph packages, or when the build has no RADOS support (no TEST_BINARY).
# Usage: shared_admin.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without RADOS support (librados-dev)"; exit 77; }
lib_tmp cephsa
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user"
rc=$?
check "test_shared_admin passes" "[ $rc -eq 0 ]"
finish
