#!/usr/bin/env bash
# The suite's throw-away Ceph cluster (tests/ceph/cluster.sh): started in a temp dir, a 1 MiB
# object round-trips byte for byte through rados put/get and is listed, an xattr is set and read
# back (what the RADOS backend's guarded write ops compare), rados bench writes then reads for 3 s
# each (the bandwidths are printed for the record, not judged), and stop leaves no daemon (by
# PID), no directory, and nothing under /etc/ceph, /var/lib/ceph or /var/log/ceph. Skips (77)
# without ceph-mon, ceph-osd or rados (scripts/deps --test installs them).
# Usage: ceph_cluster.sh
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cluster=$(cd "$(dirname "$0")" && pwd)/ceph/cluster.sh

for p in ceph-mon ceph-osd ceph rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done

t0=$EPOCHREALTIME
lib_tmp ceph
cdir=$tmp/c
lib_at_exit+=("'$cluster' stop '$cdir'")
touch "$tmp/stamp"

if ! out=$("$cluster" start "$cdir" 2>"$tmp/start.err"); then
        cat "$tmp/start.err"
        bad "cluster.sh start"
        finish
        exit
fi
eval "$out"
ok "cluster.sh start: up in $(bc <<<"scale=1; ($EPOCHREALTIME - $t0) / 1") s"
check "start prints conf, pool and user" "[ -f '$conf' ] && [ '$pool' = chapar ] && [ '$user' = client.chapar ]"
daemons=$(tr "\n" " " <"$cdir/pids")
check "start wrote two PIDs (monitor, OSD)" "[ \$(wc -w <<<'$daemons') -eq 2 ]"

r() { timeout -k 2 30 rados -c "$conf" -n "$user" -p "$pool" "$@"; }

head -c 1048576 /dev/urandom >"$tmp/obj"
r put big "$tmp/obj"
r get big "$tmp/back"
check "a 1 MiB object round-trips byte for byte" "cmp -s '$tmp/obj' '$tmp/back'"
check "rados ls lists it" "r ls | grep -qx big"
r setxattr big expiry 1700000000
check "an xattr set on it reads back" "[ \"\$(r getxattr big expiry)\" = 1700000000 ]"
check "a missing xattr is an error" "! r getxattr big nosuch 2>/dev/null"

r bench 3 write -t 16 -b 1M --no-cleanup >"$tmp/bench.write" 2>&1
write=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/bench.write")
check "rados bench write prints a bandwidth" "[ -n '$write' ]" || cat "$tmp/bench.write"
r bench 3 seq -t 16 >"$tmp/bench.seq" 2>&1
seq=$(sed -n 's/^Bandwidth (MB\/sec): *//p' "$tmp/bench.seq")
check "rados bench seq prints a bandwidth" "[ -n '$seq' ]" || cat "$tmp/bench.seq"
echo "bandwidth: write $write MB/s, seq read $seq MB/s (rados bench -t 16 -b 1M, 3 s each)"
r cleanup >/dev/null 2>&1
check "rados cleanup removes the bench objects" "[ \"\$(r ls)\" = big ]"

"$cluster" stop "$cdir"
gone() { # PID: no such process, or only its zombie
        [ ! -e "/proc/$1" ] || grep -qs '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}
left=
for p in $daemons; do gone "$p" || left+=" $p"; done
check "stop leaves no daemon running (PIDs ${daemons% })" "[ -z '$left' ]"
check "stop removes the cluster's directory" "[ ! -e '$cdir' ]"
check "stop again is fine" "'$cluster' stop '$cdir'"
check "nothing written under /etc/ceph, /var/lib/ceph, /var/log/ceph" \
        "[ -z \"\$(find /etc/ceph /var/lib/ceph /var/log/ceph -newer '$tmp/stamp' 2>/dev/null)\" ]"
echo "took $(bc <<<"scale=1; ($EPOCHREALTIME - $t0) / 1") s"
finish
