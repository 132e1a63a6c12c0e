#!/usr/bin/env bash
# The admin face's status page in a real browser: a relay with a tenant and the TCP admin face
# (--admin-listen on loopback, its operator key), two files uploaded under the tenant and one
# upload refused for want of a token; chromium (Debian's, driven by playwright-core) opens GET /
# with the key, takes a full-page PNG screenshot and reads the numbers from the DOM
# (browser_status.mjs says which); here the screenshot is checked to be a PNG and read back with
# OCR (tesseract): the store's file count, the tenant's bytes and the refusal are on it. Skips
# (exit 77) only when chromium is not installed: scripts/deps --test installs it.
# Usage: status_page.sh CHAPARD CHAPAR     (needs node >= 20 and `npm ci` run in this folder)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: status_page.sh CHAPARD CHAPAR" >&2; exit 2; }
chapard=$1
chapar=$2
chromium=${CHAPAR_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
        echo "SKIP: $chromium is not installed (scripts/deps --test installs Debian's chromium)"
        exit 77
fi
command -v node >/dev/null || { echo "status_page.sh: node is not installed (scripts/deps --test)" >&2; exit 1; }
[ -f "$here/node_modules/playwright-core/package.json" ] ||
        { echo "status_page.sh: run 'npm ci' in tests/interop first" >&2; exit 1; }

. "$here/../lib.sh"
lib_tmp status
unset CHAPAR_TOKEN
line=$("$chapard" tenant-key --out "$tmp/k" | tail -n 1)
printf '[tenant "acme"]\n%s\n' "$line" >"$tmp/relay.ini"
"$chapard" admin-key --out "$tmp/admin.key" >/dev/null
relay_start r --config "$tmp/relay.ini" --admin-listen 127.0.0.1:0 --admin-key "$tmp/admin.key" \
        --log-level warn || { bad "chapard starts"; finish; exit 1; }
admin=$(sed -n 's/^admin=//p' "$tmp/r.ready")
token=$("$chapard" token --key "$tmp/k" --tenant acme --audience "${key[r]}" --bytes 10000000)
put() { "$chapar" put "$1" --relay "${addr[r]}" --relay-key "${key[r]}" --no-pad "${@:2}"; }
bytes=0
for i in 1 2; do
        head -c $((150000 * i)) /dev/urandom >"$tmp/f$i"
        t=$(put "$tmp/f$i" --token "$token") || bad "upload $i"
        id=${t#chapar://*/*/}
        id=${id%%#*}
        n=$(curl -sI "http://${http[r]}/f/$id" | tr -d '\r' | sed -n 's/^Content-Length: //Ip')
        bytes=$((bytes + n))
done
put "$tmp/f1" >/dev/null 2>&1 && bad "an upload without a token is refused"

timeout 90 node "$here/browser_status.mjs" --url "http://$admin/" --key "$(cat "$tmp/admin.key")" \
        --screenshot "$tmp/status.png" --chromium "$chromium" --files 2 \
        --tenant "acme=2:$bytes" --refused token_missing=1
rc=$?
size=$(stat -c %s "$tmp/status.png" 2>/dev/null || echo 0)
check "the screenshot is a PNG of $size bytes" \
        "[ $size -gt 5000 ] && [ \"\$(head -c 8 '$tmp/status.png' | od -An -tx1 | tr -d ' ')\" = 89504e470d0a1a0a ]"
# the screenshot itself, read back by OCR (tesseract): the numbers a person would see
if command -v tesseract >/dev/null; then
        tesseract "$tmp/status.png" "$tmp/ocr" >/dev/null 2>&1
        ocr=$(tr -s ' \t' ' ' <"$tmp/ocr.txt" 2>/dev/null)
        check "the screenshot shows the store's 2 files" "grep -Eq '(^| )2 files' <<<\"\$ocr\""
        check "the screenshot shows acme's $bytes bytes" "grep -Eq 'acme.*(^| )$bytes( |\$)' <<<\"\$ocr\""
        check "the screenshot shows the refusal for want of a token" \
                "grep -Eq 'token_missing.*(^| )1( |\$)' <<<\"\$ocr\""
        [ $failed -eq 0 ] || { echo "--- what OCR read:"; cat "$tmp/ocr.txt"; }
else
        bad "tesseract is not installed (scripts/deps --test installs tesseract-ocr)"
fi
relay_stop r || bad "chapard exits 0 on SIGTERM"
[ $rc -eq 0 ] || failed=$((failed + 1))
finish
