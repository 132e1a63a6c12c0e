#!/usr/bin/env bash
# The link lab: two network namespaces (chp-client, chp-server) joined by linkem over TUN devices.
#   lab.sh up PROFILE [cubic|bbr]   create the namespaces and start linkem with a profile
#   lab.sh cc cubic|bbr             congestion control on both namespaces' routes
#   lab.sh exec client|server CMD...
#   lab.sh down                     remove everything `up` made (safe to run twice)
#   lab.sh selftest                 up, ping both ways, down (an EXIT trap cleans up on failure)
# Needs root. Addresses come from 198.18.0.0/15 (client .0.1, server .0.2); the only route in each
# namespace is 198.18.0.0/15 over its TUN device, so nothing leaves the lab.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${NETLAB_STATE:-/run/chp-netlab}
linkem=${LINKEM:-}
if [[ -z $linkem ]]; then
	for c in "$root/build/bin/linkem" "$root/build-asan/bin/linkem"; do
		[[ -x $c ]] && linkem=$c && break
	done
fi
CLIENT_IP=198.18.0.1
SERVER_IP=198.18.0.2
NETS=(client server)

die() { echo "lab.sh: $*" >&2; exit 1; }

profile_rules() { # NAME -> "UP DOWN"
	local line
	line=$(awk -v n="$1" '$1 == n && !/^#/ { print $2, $3; exit }' "$here/profiles")
	[[ -n $line ]] || die "no profile '$1' in $here/profiles"
	echo "$line"
}

set_cc() {
	local cc=$1 n
	[[ $cc == cubic || $cc == bbr || $cc == reno ]] || die "congestion control '$cc': cubic, bbr or reno"
	for n in "${NETS[@]}"; do
		ip -n "chp-$n" route replace 198.18.0.0/15 dev tun0 congctl "$cc"
	done
	echo "$cc" >"$state/cc"
}

up() {
	local prof=${1:?profile} cc=${2:-cubic} rules n ip
	[[ $EUID -eq 0 ]] || die "needs root"
	[[ -n $linkem && -x $linkem ]] || die "linkem not built (scripts/build Release build)"
	rules=$(profile_rules "$prof")
	[[ ! -e $state/linkem.pid ]] || die "a lab is already up (lab.sh down first)"
	mkdir -p "$state"
	for n in "${NETS[@]}"; do
		[[ $n == client ]] && ip=$CLIENT_IP || ip=$SERVER_IP
		ip netns add "chp-$n"
		ip -n "chp-$n" link set lo up
		ip -n "chp-$n" tuntap add dev tun0 mode tun
		ip -n "chp-$n" link set tun0 mtu 1500 up
		ip -n "chp-$n" addr add "$ip/32" dev tun0
	done
	set_cc "$cc"
	# shellcheck disable=SC2086
	set -- $rules
	"$linkem" --a-ns /run/netns/chp-client --a-dev tun0 --b-ns /run/netns/chp-server --b-dev tun0 \
		--up "$1" --down "$2" 2>"$state/linkem.log" &
	echo $! >"$state/linkem.pid"
	echo "$prof" >"$state/profile"
	for _ in $(seq 50); do
		grep -q running "$state/linkem.log" && return 0
		kill -0 "$(cat "$state/linkem.pid")" 2>/dev/null || break
		sleep 0.1
	done
	cat "$state/linkem.log" >&2
	die "linkem did not start"
}

down() {
	local pid n
	if [[ -f $state/linkem.pid ]]; then
		pid=$(cat "$state/linkem.pid")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid"
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
		rm -f "$state/linkem.pid"
		if [[ -f $state/linkem.log ]]; then
			grep -v '^linkem: running' "$state/linkem.log" | tail -n 2 >&2 || true
		fi
	fi
	for n in "${NETS[@]}"; do
		ip netns del "chp-$n" 2>/dev/null || true
	done
	rm -rf "$state"
}

lab_exec() {
	local n=${1:?client or server}
	shift
	[[ $n == client || $n == server ]] || die "exec: client or server, not '$n'"
	ip netns exec "chp-$n" "$@"
}

stats() { # counters so far, without stopping linkem
	kill -USR1 "$(cat "$state/linkem.pid")"
	sleep 0.2
	grep '^linkem \(up\|down\)' "$state/linkem.log" | tail -2
}

selftest() {
	trap down EXIT
	up "${1:-good-4g}"
	lab_exec client ping -c 3 -i 0.2 -q "$SERVER_IP"
	lab_exec server ping -c 3 -i 0.2 -q "$CLIENT_IP"
	# Nothing routes out: an address outside the lab is unreachable.
	if lab_exec client ping -c 1 -W 1 -q 192.0.2.1 >/dev/null 2>&1; then
		die "a packet left the lab"
	fi
	echo "lab.sh selftest: ok"
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
down) down ;;
cc) set_cc "${1:?cubic|bbr}" ;;
exec) lab_exec "$@" ;;
stats) stats ;;
selftest) selftest "$@" ;;
*) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
