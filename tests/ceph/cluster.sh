#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for the suite: one monitor and one OSD on the in-memory
# memstore objectstore, no ceph-mgr, no systemd, cephx on, everything (config, keys, data, logs,
# sockets, crash dumps) under DIR, on 127.0.0.1 only.
# Usage: cluster.sh start DIR [POOL]   prints conf=, pool=, user=, admin= lines to eval
#        cluster.sh stop DIR           kills the PIDs start wrote to DIR/pids, removes DIR
# DIR is made if missing; keep it short (mktemp -d /tmp/cph.XXXX): the admin sockets under it
# must fit a socket path (108 bytes). POOL (default chapar) has 8 PGs, size 1, min_size 1; user
# is client.chapar, with rwx on that pool only; admin is client.admin. Both keys are in the
# [client] keyring, so `rados -c CONF -n USER` needs nothing else. stop is safe to run twice.
# Without a mgr, `ceph pg stat`/`pg ls` hang and pool statistics read zero: readiness is a timed
# rados put/get. Nothing is written to /etc/ceph, /var/lib/ceph or /var/log/ceph.
set -uo pipefail
. "$(dirname "$0")/../lib.sh" # wait_for

die() {
        echo "cluster.sh: $*" >&2
        exit 1
}

# The last lines of every log, for an error message.
logs_tail() { # DIR
        local f
        for f in "$1"/log/*.log "$1"/*.out; do
                [ -s "$f" ] || continue
                echo "--- $f" >&2
                tail -n 15 "$f" >&2
        done
}

fail() { # DIR MESSAGE: the logs' tail, the cluster stopped, a clear error
        echo "cluster.sh: $2" >&2
        logs_tail "$1"
        stop "$1"
        exit 1
}

# PID is one of this cluster's daemons (not a process that reused a dead one's PID).
ours() { # PID DIR
        grep -qsF -- "$2/ceph.conf" "/proc/$1/cmdline"
}

# PID has not exited yet (an exiting daemon loses its cmdline before it is gone; a zombie is gone).
running() { # PID
        [ -e "/proc/$1" ] && ! grep -qs '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}

# Kills exactly the PIDs in DIR/pids, the last started first (an OSD stopped while its monitor is
# up exits at once; with the monitor gone it waits 5 s for it): TERM, then KILL after 10 s. Then
# removes DIR.
stop() { # DIR
        local d=$1 p end pids=()
        [ -d "$d" ] || return 0
        d=$(cd "$d" && pwd)
        [ -f "$d/pids" ] && mapfile -t pids < <(tac "$d/pids")
        for p in "${pids[@]}"; do
                ours "$p" "$d" || continue
                kill -TERM "$p" 2>/dev/null
                end=$((SECONDS + 10))
                while running "$p" && [ $SECONDS -lt $end ]; do sleep 0.05; done
                ours "$p" "$d" && kill -KILL "$p" 2>/dev/null
                end=$((SECONDS + 5))
                while running "$p" && [ $SECONDS -lt $end ]; do sleep 0.05; done
                running "$p" && echo "cluster.sh: process $p did not exit" >&2
        done
        rm -rf "$d"
}

# A free TCP port on 127.0.0.1 (the kernel's choice; the caller retries if it is taken before the
# monitor binds it).
free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

listening() { # PORT PID: PID listens on 127.0.0.1:PORT
        ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2,"
}

start() { # DIR POOL
        local d=$1 pool=$2 fsid port try mon osd uuid id c out
        command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null &&
                command -v ceph >/dev/null && command -v rados >/dev/null ||
                die "ceph-mon, ceph-osd, ceph and rados are needed (scripts/deps --test)"
        [[ $pool =~ ^[A-Za-z0-9_.-]+$ ]] || die "pool name '$pool': letters, digits, _ . - only"
        d=$(realpath -m -- "$d")
        # the daemons' sockets are DIR/run/ceph-mon.a.asok and the like (clients make none);
        # a socket path has at most 107 bytes
        [ ${#d} -le 80 ] || die "$d is ${#d} characters; the admin sockets under it need <= 80"
        mkdir -p "$d" || die "cannot make $d"
        [ -e "$d/pids" ] && die "$d already has a cluster (cluster.sh stop $d first)"
        mkdir -p "$d/log" "$d/run" "$d/crash" "$d/mon.a" "$d/osd.0" || die "cannot fill $d"
        : >"$d/pids"
        fsid=$(cat /proc/sys/kernel/random/uuid)
        c=$d/ceph.conf

        ceph-authtool --create-keyring "$d/mon.keyring" --gen-key -n mon. --cap mon 'allow *' \
                >/dev/null || die "ceph-authtool failed"
        ceph-authtool --create-keyring "$d/keyring" --gen-key -n client.admin --cap mon 'allow *' \
                --cap osd 'allow *' --cap mgr 'allow *' >/dev/null || die "ceph-authtool failed"
        ceph-authtool "$d/keyring" --gen-key -n client.chapar --cap mon 'allow r' \
                --cap osd "allow rwx pool=$pool" >/dev/null || die "ceph-authtool failed"
        ceph-authtool "$d/mon.keyring" --import-keyring "$d/keyring" >/dev/null ||
                die "ceph-authtool failed"

        # memstore holds objects in RAM (about twice the live data) and does not enforce its device
        # size; the size only feeds statfs, hence the full ratios. 8 GiB keeps the ~2 GB a 3 s
        # rados bench writes under the nearfull ratio; tests keep their own data small.
        # The monitor, on a port picked free; if another process takes it first, again.
        for try in 1 2 3 4 5; do
                port=$(free_port) || die "no free port"
                cat >"$c" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms bind retry count = 1
ms bind retry delay = 1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $d/run
crash dir = $d/crash
log file = $d/log/\$name.log
log to syslog = false
err to syslog = false
mon cluster log file = $d/log/cluster.log
mon cluster log to syslog = false
mon data = $d/\$name
osd data = $d/\$name
pid file =
paxos propose interval = 0.1
mon data avail warn = 2
mon data avail crit = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd objectstore = memstore
memstore device bytes = 8589934592
osd crush chooseleaf type = 0
[mon]
keyring = $d/mon.a/keyring
[osd]
keyring = $d/\$name/keyring
[client]
keyring = $d/keyring
EOF
                rm -rf "$d/mon.a" && mkdir "$d/mon.a"
                monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
                        "$d/monmap" >/dev/null || die "monmaptool failed"
                ceph-mon -c "$c" --mkfs -i a --monmap "$d/monmap" --keyring "$d/mon.keyring" \
                        >"$d/mon.mkfs.out" 2>&1 || fail "$d" "ceph-mon --mkfs failed"
                ceph-mon -c "$c" -i a -f >"$d/mon.out" 2>&1 &
                mon=$!
                echo "$mon" >>"$d/pids"
                wait_for 20 "listening $port $mon || ! ours $mon $d" ||
                        fail "$d" "the monitor did not listen on 127.0.0.1:$port in 20 s"
                ours "$mon" "$d" && break
                grep -qi 'bind' "$d/mon.out" "$d/log/mon.a.log" 2>/dev/null ||
                        fail "$d" "the monitor exited"
                [ $try -eq 5 ] && fail "$d" "the monitor found no free port in 5 tries"
        done
        local cephbin
        cephbin=$(command -v ceph)
        ceph() { timeout -k 2 20 "$cephbin" -c "$c" -n client.admin "$@"; }

        # The OSD: its key made by ceph-osd itself, then registered under cephx.
        uuid=$(cat /proc/sys/kernel/random/uuid)
        id=$(ceph osd new "$uuid" 2>"$d/osd.new.out") || fail "$d" "ceph osd new failed"
        [ "$id" = 0 ] || fail "$d" "ceph osd new gave id '$id', not 0"
        ceph-osd -c "$c" -i 0 --mkfs --mkkey --osd-uuid "$uuid" --no-mon-config \
                >"$d/osd.mkfs.out" 2>&1 || fail "$d" "ceph-osd --mkfs failed"
        ceph auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$d/osd.0/keyring" \
                >/dev/null 2>"$d/osd.auth.out" || fail "$d" "ceph auth add osd.0 failed"
        ceph-osd -c "$c" -i 0 -f >"$d/osd.out" 2>&1 &
        osd=$!
        echo "$osd" >>"$d/pids"

        ceph osd pool create "$pool" 8 8 >/dev/null 2>"$d/pool.out" ||
                fail "$d" "ceph osd pool create $pool failed"
        ceph osd pool application enable "$pool" rados >/dev/null 2>>"$d/pool.out" ||
                fail "$d" "ceph osd pool application enable failed"

        # Ready when a small object is written and read back through the dedicated user.
        echo "probe $fsid" >"$d/probe"
        wait_for 60 "! ours $osd $d || timeout -k 2 5 rados -c '$c' -n client.chapar -p '$pool' \
                put probe '$d/probe' 2>/dev/null" || fail "$d" "no rados put succeeded in 60 s"
        ours "$osd" "$d" || fail "$d" "the OSD exited"
        out=$(timeout -k 2 10 rados -c "$c" -n client.chapar -p "$pool" get probe - 2>&1)
        [ "$out" = "probe $fsid" ] || fail "$d" "rados get of the probe gave '$out'"
        timeout -k 2 10 rados -c "$c" -n client.chapar -p "$pool" rm probe ||
                fail "$d" "rados rm of the probe failed"
        echo "conf=$c"
        echo "pool=$pool"
        echo "user=client.chapar"
        echo "admin=client.admin"
}

case "${1:-}" in
start)
        [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: cluster.sh start DIR [POOL]"
        start "$2" "${3:-chapar}"
        ;;
stop)
        [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"
        stop "$2"
        ;;
*) die "usage: cluster.sh start DIR [POOL] | stop DIR" ;;
esac
