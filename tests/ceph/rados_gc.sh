#!/usr/bin/env bash
# Runs test_rados_gc (GC of the shared state in RADOS under its lock: what it removes, the lock
# busy and lapsed, the randomised race of commits, deletes and passes) on a throw-away cluster of
# its own (tests/ceph/cluster.sh), stopped on exit. Skips (77) without the ceph packages, or when
# the build has no RADOS support (no TEST_BINARY given). CHAPAR_GC_SEED / CHAPAR_GC_ROUNDS pass
# through to the race.
# Usage: rados_gc.sh [TEST_BINARY]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}

[ -n "$bin" ] || { echo "SKIP: built without RADOS support (librados-dev)"; exit 77; }
lib_tmp cephgc
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user"
rc=$?
check "test_rados_gc passes" "[ $rc -eq 0 ]"
finish
