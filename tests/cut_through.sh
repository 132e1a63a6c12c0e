#!/usr/bin/env bash
# Cut-through across relays on loopback: a sender uploads to A (its bytes to A rate-limited, so
# the upload lasts a few seconds), a receiver gets the file through B (A's peer) while the
# upload runs. Shown:
# 1. the sender stopped (SIGSTOP) once A holds some chunks: the receiver's `get -o -` through B
#    writes the first chunk's bytes while the sender is still stopped and A's upload incomplete;
# 2. the sender continued: B follows A's upload for as long as it makes progress, beyond B's
#    fetch_timeout (3 s here, counted from the last progress, not from the request), and the
#    receiver's file is the sender's (sha256);
# 3. a sender killed for good mid-upload: B gives up once A's upload has stored nothing for
#    fetch_timeout, the receiver's get ends with a clear error (not a hang), B's log and /metrics
#    (outcome "unfinished") say so.
# Runs in a network namespace of its own (unshare -n): only its loopback, where traffic to A's
# port goes through an htb class of 32 Mbit/s. Skipped (77) where it cannot make one.
# Usage: cut_through.sh CHAPARD CHAPAR
set -uo pipefail
if [ -z "${CUT_THROUGH_NS:-}" ]; then
        unshare -n true 2>/dev/null || exit 77
        CUT_THROUGH_NS=1 exec unshare -n "$0" "$@"
fi
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp cut
cs=65536
ip link set lo up && ip link set lo mtu 1500 || exit 77
command -v tc >/dev/null || exit 77

for r in A B; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done
start() { # relay [extra config]
        relay_start "$1" --config "$tmp/$1.ini" --key "$tmp/$1.key" --log-level info
}
printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}" >"$tmp/A.ini"
start A
{
        printf '[server]\nfetch_timeout = 3s\n'
        printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}"
} >"$tmp/B.ini"
start B
relay_stop A
printf '[peer "B"]\naddress = %s\npubkey = %s\n' "${addr[B]}" "${key[B]}" >"$tmp/A.ini"
start A
# what goes to A's port (the sender's chunks) is limited to 32 Mbit/s, with a short queue
tc qdisc add dev lo root handle 1: htb default 20 &&
        tc class add dev lo parent 1: classid 1:10 htb rate 32mbit burst 32k quantum 1514 &&
        tc class add dev lo parent 1: classid 1:20 htb rate 10gbit quantum 65536 &&
        tc qdisc add dev lo parent 1:10 pfifo limit 100 &&
        tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport "${addr[A]##*:}" 0xffff \
                flowid 1:10 || exit 77

present() { # TICKET RELAY: chunks the relay holds of the file
        "$chapar" stat "$1" --via "$2" --trust-new-relay --json 2>/dev/null |
                sed -n 's/.*"chunks_present":\([0-9]*\).*/\1/p'
}
complete_at_A() { "$chapar" stat "$1" --via "${addr[A]}" --json 2>/dev/null | grep -q '"complete":true'; }
# put FILE TICKET-OUT: starts the sender in the background (sets sender), waits for its ticket
put_bg() {
        rm -f "$2"
        "$chapar" put "$1" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size $cs \
                --ticket-out "$2" >"$2.out" 2>"$2.err" &
        sender=$!
        lib_at_exit+=("kill -KILL $sender 2>/dev/null") # a stopped process ignores TERM
        wait_for 20 "[ -s '$2' ]"
}

# ---- 1. the first chunk reaches the receiver while the sender is stopped --------------------
head -c $((16 * 1024 * 1024)) /dev/urandom >"$tmp/f1"
put_bg "$tmp/f1" "$tmp/t1"
t1=$(cat "$tmp/t1")
wait_for 20 "[ \"\$(present '$t1' '${addr[A]}')\" -ge 2 ] 2>/dev/null"
kill -STOP $sender
atA=$(present "$t1" "${addr[A]}")
"$chapar" get "$t1" --via "${addr[B]}" --trust-new-relay -o - >"$tmp/f1.b" 2>"$tmp/err.1" &
g=$!
lib_track $g
plain=$((cs - 40)) # a chunk's plaintext: the chunk less its nonce and tag (e2e.h)
wait_for 20 "[ \$(stat -c %s '$tmp/f1.b') -ge $plain ]"
got=$(stat -c %s "$tmp/f1.b")
check "the sender stopped with $atA chunks at A: the receiver via B has $got bytes, the first chunk's" \
        "[ $got -ge $plain ] && cmp -s -n $plain '$tmp/f1' '$tmp/f1.b' && ! complete_at_A '$t1'" ||
        cat "$tmp/err.1"

# ---- 2. the sender goes on: B follows it to the end, past its fetch_timeout ------------------
kill -CONT $sender
wait $sender
check "the sender's put ends well" "[ $? -eq 0 ]" || cat "$tmp/t1.err"
wait $g
rc=$?
check "the receiver's get via B ends well (exit $rc) with the sender's file" \
        "[ $rc -eq 0 ] && [ \"\$(sha256sum <'$tmp/f1')\" = \"\$(sha256sum <'$tmp/f1.b')\" ]" ||
        { cat "$tmp/err.1"; tail -5 "$tmp/B.log"; }

# ---- 3. a sender killed for good: B gives up, the receiver is told ---------------------------
unfinished() {
        curl -s "http://${http[B]}/metrics" |
                sed -n 's/^chapar_peer_fetches_total{peer="A",outcome="unfinished"} //p'
}
before=$(unfinished)
head -c $((16 * 1024 * 1024)) /dev/urandom >"$tmp/f3"
put_bg "$tmp/f3" "$tmp/t3"
t3=$(cat "$tmp/t3")
wait_for 20 "[ \"\$(present '$t3' '${addr[A]}')\" -ge 2 ] 2>/dev/null"
kill -KILL $sender
wait $sender 2>/dev/null
"$chapar" get "$t3" --via "${addr[B]}" --trust-new-relay -o - >"$tmp/f3.b" 2>"$tmp/err.3" &
g=$!
lib_track $g
wait_for 30 "! kill -0 $g 2>/dev/null"
if kill -0 $g 2>/dev/null; then
        bad "the receiver's get via B still runs 30 s after the sender died"
else
        wait $g
        rc=$?
        check "the sender killed: the get via B ends (exit $rc) saying why: $(head -c 200 "$tmp/err.3")" \
                "[ $rc -ne 0 ] && grep -q 'not finished' '$tmp/err.3'"
fi
check "B's log says it gave up on A's unfinished upload" "grep -q 'is not finished' '$tmp/B.log'"
after=$(unfinished)
check "B's /metrics count the fetch as unfinished ($before, then $after)" "[ $((after - before)) -eq 1 ]"
finish
