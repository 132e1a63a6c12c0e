#!/usr/bin/env bash
# Runs test_shared_admin (the administration reads over the shared state, [store] rados_shared:
# listings, tenants, the quarantine list and the counts of one store, of what another store on
# the same pool wrote) on a throw-away cluster of its own (tests/ceph/cluster.sh), stopped on exit.
# Then a chapard on that pool ([store] rados_shared) answers chapard admin stats and list and
# its status page with what the stores wrote, and with the OSD stopped its status page still
# answers (200), saying what is unavailable.
# Skips (77) without the ceph packages, or when the build has no RADOS support (no TEST_BINARY).
# Usage: shared_admin.sh [TEST_BINARY [CHAPARD]]
set -uo pipefail
. "$(dirname "$0")/../lib.sh"
bin=${1:-}
chapard=${2:-}

[ -n "$bin" ] || { echo "SKIP: built without RADOS support (librados-dev)"; exit 77; }
lib_tmp cephsa
. "$(dirname "$0")/up.sh"
"$bin" "$conf" "$pool" "$user"
rc=$?
check "test_shared_admin passes" "[ $rc -eq 0 ]"

# ---- the relay's admin face over the pool the test left: 6 files (3 tenants), 3 uploads
cat >"$tmp/r.ini" <<INI
[store]
rados_op_timeout = 3s
INI
relay_start R --config "$tmp/r.ini" --store rados --rados-shared --rados-conf "$conf" \
        --rados-pool "$pool" --rados-user "${user#client.}" || { cat "$tmp/R.log"; bad "relay starts"; }
adm() { "$chapard" admin --data "$tmp/R.data" "$@"; }
js() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"; }
adm --json stats >"$tmp/stats" 2>&1
check "chapard admin stats over the pool: $(head -c 300 "$tmp/stats")" \
        "[ \"\$(js '(j[\"store\"][\"files\"], j[\"store\"][\"uploads\"], [t[\"tenant\"] for t in j[\"tenants\"]])' <'$tmp/stats')\" = \"(6, 3, ['alpha', 'beta'])\" ]"
adm --json list --limit 4 --all >"$tmp/list" 2>&1
check "chapard admin list --all over the pool: 6 files on 2 pages" \
        "[ \$(grep -o '\"id\"' '$tmp/list' | wc -l) -eq 6 ] && [ \$(grep -c '\"files\"' '$tmp/list') -eq 2 ]"
page() { curl -s -o "$tmp/page" -w '%{http_code}' --unix-socket "$tmp/R.data/admin.sock" "http://admin$1"; }
code=$(page /)
check "the status page shows the pool's counts ($code): $(grep -o '<td id="store">[^<]*' "$tmp/page")" \
        "[ $code = 200 ] && grep -q '<td id=\"store\">6 files, 3 uploads' '$tmp/page'"

# ---- the OSD stopped: the pages still answer, saying what they cannot show
kill -STOP "$osd"
wait_for 5 "grep -q '^State:[[:space:]]*T' /proc/$osd/status"
code=$(page /)
check "OSD stopped: the status page answers $code: $(grep -o '<td id="store">[^<]*' "$tmp/page")" \
        "[ $code = 200 ] && grep -q '<td id=\"store\">unavailable' '$tmp/page'"
code=$(page /status)
kill -CONT "$osd"
check "OSD stopped: /status answers $code: $(head -c 200 "$tmp/page")" \
        "[ $code = 200 ] && [ \"\$(js '\"error\" in j[\"store\"] and \"tenants_error\" in j' <'$tmp/page')\" = True ]"
finish
