#!/usr/bin/env bash
# chapard verify through its command line: exit 0 on a clean store, 1 with the problem listed on a
# damaged one, 2 when the directory is held by another process is not tested here.
set -euo pipefail
chapard=$1
maker=$2
. "$(dirname "$0")/lib.sh"
lib_tmp verify

"$maker" make-store "$tmp/clean"
"$chapard" verify --data "$tmp/clean" >"$tmp/out" || { cat "$tmp/out"; echo "clean store: verify failed"; exit 1; }
grep -q ': 0 problems' "$tmp/out"

CHAPAR_DAMAGE=1 "$maker" make-store "$tmp/bad"
set +e
"$chapard" verify --data "$tmp/bad" >"$tmp/out"
rc=$?
set -e
cat "$tmp/out"
[ "$rc" -eq 1 ] || { echo "damaged store: expected exit 1, got $rc"; exit 1; }
grep -q 'checksum mismatch' "$tmp/out"
grep -q ': 1 problems' "$tmp/out"
echo "verify_cli: ok"
