#!/usr/bin/env bash
# Verifies linkem against iperf3 and ping on the lab's sender<->A link: for each profile and
# congestion control, the goodput of one TCP stream each way against the configured rate, and the
# idle ping RTT against the configured one (up delay + down delay). The receiver<->B link is the
# same linkem with the same rules. Prints a Markdown table. Needs root and iperf3, ping.
#   verify.sh [-t SECONDS] [PROFILE...]      (default: clean trial good-4g evening long)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab=$here/lab.sh
secs=15
if [[ ${1:-} == -t ]]; then secs=$2; shift 2; fi
profiles=("$@")
[[ ${#profiles[@]} -gt 0 ]] || profiles=(clean trial good-4g evening long)
for t in iperf3 ping python3; do command -v "$t" >/dev/null || { echo "verify.sh: needs $t" >&2; exit 1; }; done
eval "$("$lab" env)" # the lab's addresses (A_IP) and NETLAB_PREFIX
tmp=$(mktemp -d)
trap '"$lab" down >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

rule() { # PROFILE FIELD(2=up,3=down) KEY -> value or "-"
	awk -v n="$1" -v f="$2" -v k="$3" '$1 == n && !/^#/ {
		c = split($f, kv, ","); for (i = 1; i <= c; i++) { split(kv[i], p, "="); if (p[1] == k) { print p[2]; exit } }
		print "-"; exit }' "$here/profiles"
}
ms() { python3 -c "import sys; v=sys.argv[1]; print(float(v[:-2]) if v.endswith('ms') else float(v[:-1])*1000 if v.endswith('s') else float(v))" "$1"; }
mbit() { python3 -c "
import sys
v = sys.argv[1].lower()
for k, x in (('gbit', 1e3), ('mbit', 1), ('kbit', 1e-3), ('bit', 1e-6)):
    if v.endswith(k):
        print(float(v[:-len(k)]) * x); break
else:
    print(float(v) / 1e6)" "$1"; }

iperf() { # DIR(up|down) -> "Mbit/s retransmits"
	local rev=() out
	[[ $1 == down ]] && rev=(-R)
	"$lab" exec a iperf3 -s -1 -B "$A_IP" >/dev/null 2>&1 &
	local spid=$!
	sleep 0.5
	out=$("$lab" exec sender iperf3 -c "$A_IP" -t "$secs" "${rev[@]}" -J 2>/dev/null || true)
	wait "$spid" 2>/dev/null || true
	python3 -c '
import json, sys
try:
    e = json.loads(sys.stdin.read())["end"]
    print("%.2f %d" % (e["sum_received"]["bits_per_second"] / 1e6, e["sum_sent"].get("retransmits", 0)))
except Exception:
    print("fail -")' <<<"$out"
}

printf '| profile | cc | up rate | up goodput (×) | down rate | down goodput (×) | RTT set | ping idle avg/max | ping loaded up avg/max | up retrans |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for p in "${profiles[@]}"; do
	up_rate=$(mbit "$(rule "$p" 2 rate)")
	dn_rate=$(mbit "$(rule "$p" 3 rate)")
	rtt=$(python3 -c "print($(ms "$(rule "$p" 2 delay)") + $(ms "$(rule "$p" 3 delay)"))")
	for cc in cubic bbr; do
		"$lab" up "$p" "$cc" >/dev/null
		pr=$("$lab" exec sender ping -c 20 -i 0.2 -q "$A_IP" | awk -F/ '/^rtt/ { printf "%.1f/%.1f", $5, $6 }')
		# Ping again while the uplink is loaded: the queue bound caps the added delay.
		"$lab" exec sender ping -c 16 -i 0.25 -q "$A_IP" >"$tmp/lp" 2>&1 &
		lpid=$!
		read -r ug ur < <(iperf up)
		wait "$lpid" || true
		lp=$(awk -F/ '/^rtt/ { printf "%.1f/%.1f", $5, $6 }' "$tmp/lp")
		read -r dg _ < <(iperf down)
		"$lab" down 2>/dev/null
		ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])) if sys.argv[1] != 'fail' else '-')" "$1" "$2"; }
		printf '| %s | %s | %g | %s (%s) | %g | %s (%s) | %g | %s | %s | %s |\n' "$p" "$cc" \
			"$up_rate" "$ug" "$(ratio "$ug" "$up_rate")" "$dn_rate" "$dg" "$(ratio "$dg" "$dn_rate")" \
			"$rtt" "$pr" "${lp:--}" "$ur"
	done
done
