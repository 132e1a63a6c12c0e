#!/usr/bin/env bash
# The link lab's smoke run: lab.sh selftest (every link pings, nothing routes out of the lab),
# then `bench/netlab/run --quick` (good-4g, a 1 MiB file, chapar put/get and curl put/get, cubic
# and bbr) while a second lab with another NETLAB_PREFIX is up. Checks a row per run with a
# completion time, the JSON lines, the chart, and that both labs' namespaces and state are gone
# afterwards (down run twice is fine). Skips (77) when not root, without /dev/net/tun or linkem.
# Usage: netlab_quick.sh CHAPARD CHAPAR LINKEM
set -uo pipefail
chapard=$1
chapar=$2
linkem=$3
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
lab=$root/bench/netlab/lab.sh

[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
[ -c /dev/net/tun ] || { echo "SKIP: no /dev/net/tun"; exit 77; }
[ -x "$linkem" ] || { echo "SKIP: linkem not built ($linkem)"; exit 77; }

lib_tmp netlab
p1=nq$$
p2=nq$$b
export LINKEM=$linkem
lib_at_exit+=("NETLAB_PREFIX=$p1 '$lab' down 2>/dev/null" "NETLAB_PREFIX=$p2 '$lab' down 2>/dev/null")
mkdir -p "$tmp/bin"
ln -s "$chapard" "$tmp/bin/chapard"
ln -s "$chapar" "$tmp/bin/chapar"
ln -s "$linkem" "$tmp/bin/linkem"

gone() { # PREFIX: no namespace and no state directory of that lab left
	! ip netns list | grep -q "^$1-" && [ ! -e "/run/$1-netlab" ]
}

NETLAB_PREFIX=$p1 "$lab" selftest good-4g >"$tmp/selftest" 2>&1
check "lab.sh selftest: every link pings, nothing leaves the lab" \
	"grep -q 'selftest: ok' '$tmp/selftest'" || cat "$tmp/selftest"
check "the selftest's lab is gone" "gone $p1"

NETLAB_PREFIX=$p2 "$lab" up good-4g >"$tmp/up2" 2>&1
check "a second lab ($p2) is up beside" "ip netns list | grep -q '^$p2-sender'" || cat "$tmp/up2"

NETLAB_PREFIX=$p1 CHAPAR_BIN=$tmp/bin timeout 120 "$root/bench/netlab/run" --quick --out "$tmp/out" \
	>"$tmp/run.out" 2>&1
rc=$?
check "run --quick exits 0 (exit $rc)" "[ $rc -eq 0 ]" || tail -20 "$tmp/run.out"
check "the run's lab is gone" "gone $p1"
check "the other lab is untouched" "ip netns exec $p2-sender ping -c 1 -W 2 -q 198.18.1.2 >/dev/null"
NETLAB_PREFIX=$p2 "$lab" down 2>/dev/null
NETLAB_PREFIX=$p2 "$lab" down 2>/dev/null
check "down twice is fine (exit $?) and leaves nothing" "[ $? -eq 0 ] && gone $p2"

# One row per peer and cc, each with a completion time; curl's may be n/a only without nginx.
nginx_dav=0
nginx -V 2>&1 | grep -q -- --with-http_dav_module && nginx_dav=1
for cc in cubic bbr; do
	for peer in chapar-put chapar-get curl-put curl-get; do
		row="^| good-4g | $cc | 1M | $peer | ok | [0-9]+\.[0-9]+ |"
		if [ $nginx_dav -eq 0 ] && [ "${peer#curl}" != "$peer" ]; then
			row="^| good-4g | $cc | 1M | $peer | n/a: no nginx"
		fi
		check "results.md: $peer $cc has a row with a time" \
			"grep -Eq '$(printf '%s' "$row" | sed 's/|/\\|/g')' '$tmp/out/results.md'"
	done
done
check "results.jsonl: 8 runs, a positive time in each ok one" "python3 -c '
import json, sys
rows = [json.loads(l) for l in open(\"$tmp/out/results.jsonl\")]
assert len(rows) == 8, len(rows)
for r in rows:
    assert r[\"status\"] == \"ok\" or (r[\"peer\"].startswith(\"curl\") and not $nginx_dav), r
    assert r[\"status\"] != \"ok\" or (r[\"seconds\"] > 0 and 0 < r[\"goodput_frac\"] < 1.5), r
'"
if command -v gnuplot >/dev/null; then
	check "chart.svg is an SVG" "grep -q '<svg' '$tmp/out/chart.svg'"
	check "chart.png is a PNG" "head -c 8 '$tmp/out/chart.png' | grep -q PNG"
fi
finish
