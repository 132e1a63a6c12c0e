# Sourced by the RADOS tests after tests/lib.sh and lib_tmp: skips (77) without the ceph packages,
# else starts a throw-away cluster (tests/ceph/cluster.sh) in a short directory of its own, stopped
# by the EXIT trap (the OSD resumed first, should a test have stopped it), and sets conf, pool,
# user (eval'd from cluster.sh), cdir and osd (the OSD's PID). A cluster that fails to start is a
# failed test.
for p in ceph-mon ceph-osd ceph rados; do
        command -v $p >/dev/null || { echo "SKIP: $p is not installed (scripts/deps --test)"; exit 77; }
done
cdir=$(mktemp -d /tmp/cph.XXXX)
rmdir "$cdir"
lib_at_exit+=("[ -f '$cdir/pids' ] && kill -CONT \$(cat '$cdir/pids') 2>/dev/null")
lib_at_exit+=("'$(dirname "${BASH_SOURCE[0]}")/cluster.sh' stop '$cdir'")
if ! out=$("$(dirname "${BASH_SOURCE[0]}")/cluster.sh" start "$cdir" 2>"$tmp/start.err"); then
        cat "$tmp/start.err"
        bad "cluster.sh start"
        finish
        exit
fi
eval "$out"
osd=$(sed -n 2p "$cdir/pids")
