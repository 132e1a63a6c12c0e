#!/usr/bin/env bash
# Interop in a real browser: chromium (Debian's, driven by playwright-core) uploads with
# tus-js-client's browser bundle to a real chapard with a tenant, from another origin, the upload
# token in an Authorization header (browser_tus.mjs says what is checked). Skips (exit 77) only
# when chromium is not installed: scripts/deps --test installs it, and tolerates a machine where
# it cannot be.
# Usage: browser.sh CHAPARD     (needs node >= 20 and `npm ci` run in this folder first)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: browser.sh CHAPARD" >&2; exit 2; }
case $1 in /*) chapard=$1 ;; *) chapard=$PWD/$1 ;; esac
chromium=${CHAPAR_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
        echo "SKIP: $chromium is not installed (scripts/deps --test installs Debian's chromium)"
        exit 77
fi
command -v node >/dev/null || { echo "browser.sh: node is not installed (scripts/deps --test)" >&2; exit 1; }
nodemajor=$(node -p 'process.versions.node.split(".")[0]')
[ "$nodemajor" -ge 20 ] || { echo "browser.sh: playwright-core needs node >= 20, found $(node --version)" >&2; exit 1; }
if [ ! -f "$here/node_modules/playwright-core/package.json" ] ||
        [ ! -f "$here/node_modules/tus-js-client/dist/tus.js" ]; then
        echo "browser.sh: $here/node_modules is incomplete: run 'npm ci' in tests/interop first" >&2
        exit 1
fi

. "$here/../lib.sh"
lib_tmp browser

line=$("$chapard" tenant-key --out "$tmp/k" | tail -n 1)
printf '[tenant "web.example"]\n%s\n' "$line" >"$tmp/relay.ini"
relay_start r --config "$tmp/relay.ini" --log-level warn || { bad "chapard starts"; finish; exit 1; }
token=$("$chapard" token --key "$tmp/k" --tenant web.example --audience "${key[r]}" --ttl 600 \
        --bytes 10000000)

timeout 60 node "$here/browser_tus.mjs" --endpoint "http://${http[r]}/files/" --token "$token" \
        --chromium "$chromium"
rc=$?
relay_stop r || { echo "FAIL chapard did not exit 0 on SIGTERM"; rc=1; }
exit $rc
