#!/usr/bin/env bash
# The link lab: four network namespaces, a sender, relay A, relay B and a receiver, as issue 16's
# federated path:
#
#   PREFIX-sender ==linkem S== PREFIX-a --veth core-- PREFIX-b ==linkem R== PREFIX-receiver
#   198.18.1.1        198.18.1.2 | 198.18.2.1    198.18.2.2 | 198.18.3.2        198.18.3.1
#
# The two access links (S and R) carry a profile from bench/netlab/profiles: its "up" rules on
# sender->A and receiver->B (the phones' uplinks), its "down" rules on A->sender and B->receiver.
# A<->B is a veth pair with no emulation: the relays' path is a server-to-server link an order
# of magnitude faster than the mobile links, and a third user-space forwarder would take CPU
# from the two that matter on a small machine.
#
#   lab.sh up PROFILE [cubic|bbr]   create the namespaces, start one linkem per access link
#   lab.sh cc cubic|bbr|reno        congestion control on every route of every namespace
#   lab.sh exec NODE CMD...         run CMD in NODE's namespace (sender, a, b, receiver;
#                                   client = sender and server = a, as before)
#   lab.sh relink [N]               restart both linkems: empty queues, outage phase from 0,
#                                   loss seeds number N (0 at up)
#   lab.sh stats                    linkem's counters so far, per link
#   lab.sh env                      the names and addresses, as shell assignments
#   lab.sh down                     remove everything `up` made (safe to run twice)
#   lab.sh selftest [PROFILE]       up, ping along every link, prove nothing routes out, down
#
# NETLAB_PREFIX (default chp) names the namespaces (PREFIX-sender, ...) and the state directory
# (/run/PREFIX-netlab, or NETLAB_STATE), so two labs with different prefixes can be up at once;
# their addresses are the same, each lab being closed in its own namespaces. Needs root.
# Addresses come from 198.18.0.0/15 only; no namespace has a default route, the endpoints route
# only 198.18.0.0/15 into their link and the relays only their two neighbours' /24s, and IP
# forwarding stays off, so nothing leaves the lab and the endpoints reach only their own relay.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=${NETLAB_PREFIX:-chp}
[[ $prefix =~ ^[a-z0-9][a-z0-9-]{0,15}$ ]] || {
	echo "lab.sh: NETLAB_PREFIX '$prefix': 1-16 of a-z 0-9 -" >&2
	exit 2
}
state=${NETLAB_STATE:-/run/$prefix-netlab}
linkem=${LINKEM:-}
if [[ -z $linkem ]]; then
	for c in "$root/build/bin/linkem" "$root/build-asan/bin/linkem"; do
		[[ -x $c ]] && linkem=$c && break
	done
fi
SENDER_IP=198.18.1.1
A_IP=198.18.1.2 # A on link S: the address the sender uses
A_CORE_IP=198.18.2.1
B_CORE_IP=198.18.2.2
B_IP=198.18.3.2 # B on link R: the address the receiver uses
RECEIVER_IP=198.18.3.1
NODES=(sender a b receiver)
LINKS=(S R) # S: sender (end a) <-> A (end b); R: receiver (end a) <-> B (end b)

die() {
	echo "lab.sh: $*" >&2
	exit 1
}
ns() { echo "$prefix-$1"; }

profile_rules() { # NAME -> "UP DOWN"
	local line
	line=$(awk -v n="$1" '$1 == n && !/^#/ { print $2, $3; exit }' "$here/profiles")
	[[ -n $line ]] || die "no profile '$1' in $here/profiles"
	echo "$line"
}

routes() { # NODE -> "PREFIX DEV" lines: the node's routes, all of them
	case $1 in
	sender | receiver) echo "198.18.0.0/15 tun0" ;;
	a) printf '198.18.1.0/24 tun0\n198.18.2.0/24 core\n' ;;
	b) printf '198.18.2.0/24 core\n198.18.3.0/24 tun0\n' ;;
	esac
}

set_cc() {
	local cc=$1 n net dev
	[[ $cc == cubic || $cc == bbr || $cc == reno ]] || die "congestion control '$cc': cubic, bbr or reno"
	[[ -d $state ]] || die "no lab is up (lab.sh up PROFILE first)"
	for n in "${NODES[@]}"; do
		while read -r net dev; do
			ip -n "$(ns "$n")" route replace "$net" dev "$dev" congctl "$cc"
		done < <(routes "$n")
	done
	echo "$cc" >"$state/cc"
}

start_link() { # S|R: one linkem, its rules from $state/rules
	local l=$1 end_a end_b up dn seed n
	read -r up dn <"$state/rules"
	n=$(cat "$state/seed" 2>/dev/null || echo 0)
	# distinct seeds per link (with one, both links would lose the same packets of their
	# streams) and per relink N (else every run would lose the same early packet)
	if [[ $l == S ]]; then
		end_a=sender end_b=a seed=$(printf '0x%x' $(((n + 1) * 0x9e3779b97f4a7c15)))
	else
		end_a=receiver end_b=b seed=$(printf '0x%x' $(((n + 1) * 0x2545f4914f6cdd1d)))
	fi
	: >"$state/linkem-$l.log"
	"$linkem" --a-ns "/run/netns/$(ns $end_a)" --a-dev tun0 --b-ns "/run/netns/$(ns $end_b)" \
		--b-dev tun0 --up "$up" --down "$dn" --seed "$seed" </dev/null >/dev/null 2>"$state/linkem-$l.log" &
	echo $! >"$state/linkem-$l.pid"
}

wait_links() {
	local l ok
	for _ in $(seq 100); do
		ok=1
		for l in "${LINKS[@]}"; do
			grep -q running "$state/linkem-$l.log" && continue
			ok=0
			alive "$(cat "$state/linkem-$l.pid")" || {
				cat "$state/linkem-$l.log" >&2
				die "linkem $l did not start"
			}
		done
		[[ $ok -eq 1 ]] && return 0
		sleep 0.05
	done
	die "linkem did not start within 5 s"
}

# Running, not a zombie: linkem outlives the lab.sh that started it, and its new parent may
# take a while to reap it.
alive() { [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) != Z* ]]; }

stop_link() { # S|R: TERM, wait, keep its last counters on stderr
	local l=$1 pid
	[[ -f $state/linkem-$l.pid ]] || return 0
	pid=$(cat "$state/linkem-$l.pid")
	if alive "$pid"; then
		kill -TERM "$pid"
		for _ in $(seq 100); do
			alive "$pid" || break
			sleep 0.05
		done
		alive "$pid" && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$state/linkem-$l.pid"
}

up() {
	local prof=${1:?profile} cc=${2:-cubic} rules n ip
	[[ $EUID -eq 0 ]] || die "needs root"
	[[ -n $linkem && -x $linkem ]] || die "linkem not built (scripts/build Release build)"
	rules=$(profile_rules "$prof")
	[[ ! -e $state ]] || die "a lab '$prefix' is already up (NETLAB_PREFIX=$prefix lab.sh down first)"
	mkdir -p "$state"
	echo "$prof" >"$state/profile"
	echo "$rules" >"$state/rules"
	for n in "${NODES[@]}"; do
		ip netns add "$(ns "$n")"
		ip -n "$(ns "$n")" link set lo up
	done
	# the access links: a TUN device at each end, linkem between them
	for n in "${NODES[@]}"; do
		case $n in
		sender) ip=$SENDER_IP ;; a) ip=$A_IP ;; b) ip=$B_IP ;; receiver) ip=$RECEIVER_IP ;;
		esac
		ip -n "$(ns "$n")" tuntap add dev tun0 mode tun
		ip -n "$(ns "$n")" link set tun0 mtu 1500 up
		ip -n "$(ns "$n")" addr add "$ip/32" dev tun0
	done
	# the relays' path: a veth pair, A's end made in A and its peer moved into B
	ip -n "$(ns a)" link add core type veth peer name core netns "$(ns b)"
	ip -n "$(ns a)" addr add "$A_CORE_IP/24" dev core noprefixroute
	ip -n "$(ns b)" addr add "$B_CORE_IP/24" dev core noprefixroute
	ip -n "$(ns a)" link set core up
	ip -n "$(ns b)" link set core up
	set_cc "$cc"
	start_link S
	start_link R
	wait_links
}

down() {
	local l n
	if [[ -d $state ]]; then
		for l in "${LINKS[@]}"; do
			stop_link "$l"
			if [[ -f $state/linkem-$l.log ]]; then
				grep -v '^linkem: running' "$state/linkem-$l.log" | sed "s/^/$l: /" | tail -n 2 >&2 || true
			fi
		done
	fi
	for n in "${NODES[@]}"; do
		ip netns del "$(ns "$n")" 2>/dev/null || true
	done
	rm -rf "$state"
}

relink() { # [N]: the loss seeds' index (0 at up), so a run can be repeated packet for packet
	[[ -f $state/rules ]] || die "no lab '$prefix' is up"
	[[ ${1:-0} =~ ^[0-9]+$ ]] || die "relink: N is a number"
	echo "${1:-0}" >"$state/seed"
	stop_link S
	stop_link R
	start_link S
	start_link R
	wait_links
}

node_ok() {
	case $1 in
	sender | a | b | receiver) echo "$1" ;;
	client) echo sender ;;
	server) echo a ;;
	*) die "node '$1': sender, a, b or receiver" ;;
	esac
}

lab_exec() {
	local n
	n=$(node_ok "${1:?node}")
	shift
	[[ $# -gt 0 ]] || die "exec: which command?"
	exec ip netns exec "$(ns "$n")" "$@"
}

stats() { # counters so far, without stopping linkem
	local l
	for l in "${LINKS[@]}"; do
		kill -USR1 "$(cat "$state/linkem-$l.pid")"
	done
	sleep 0.2
	for l in "${LINKS[@]}"; do
		grep '^linkem \(up\|down\)' "$state/linkem-$l.log" | tail -2 | sed "s/^/$l: /"
	done
}

env_out() {
	local n
	echo "NETLAB_PREFIX=$prefix"
	echo "NETLAB_STATE=$state"
	for n in "${NODES[@]}"; do echo "NS_${n^^}=$(ns "$n")"; done
	echo "SENDER_IP=$SENDER_IP A_IP=$A_IP A_CORE_IP=$A_CORE_IP"
	echo "B_CORE_IP=$B_CORE_IP B_IP=$B_IP RECEIVER_IP=$RECEIVER_IP"
}

selftest() {
	trap down EXIT
	up "${1:-good-4g}"
	local n
	x() { ip netns exec "$(ns "$1")" "${@:2}"; }
	x sender ping -c 3 -i 0.2 -q "$A_IP"
	x a ping -c 3 -i 0.2 -q "$SENDER_IP"
	x receiver ping -c 3 -i 0.2 -q "$B_IP"
	x b ping -c 3 -i 0.2 -q "$RECEIVER_IP"
	x a ping -c 3 -i 0.2 -q "$B_CORE_IP"
	# Nothing routes out: an address outside the lab is unreachable from any node, and an
	# endpoint reaches only its own relay (the relays do not forward).
	for n in "${NODES[@]}"; do
		if x "$n" ping -c 1 -W 1 -q 192.0.2.1 >/dev/null 2>&1; then
			die "a packet from $n left the lab"
		fi
		x "$n" ip route get 192.0.2.1 >/dev/null 2>&1 && die "$n has a route out of the lab"
	done
	if x sender ping -c 1 -W 1 -q "$B_CORE_IP" >/dev/null 2>&1; then
		die "the sender reaches relay B: A forwards"
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
relink) relink "$@" ;;
stats) stats ;;
env) env_out ;;
selftest) selftest "$@" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
