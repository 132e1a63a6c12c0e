#!/usr/bin/env bash
# A relay whose disk fails: chapard built with the store's I/O fault hook (chapard_fault), armed
# through CHAPAR_STORE_FAULT. While segment writes fail with ENOSPC, then a segment sync and then
# the index commit with EIO, every put that meets the fault fails with a clear error, downloads of
# what was stored before go on, the same put succeeds once the fault has passed, and afterwards
# `chapard verify` finds the store clean and a relay without the hook serves every file.
# Usage: fault_relay.sh CHAPARD CHAPARD_FAULT CHAPAR
set -uo pipefail
chapard=$1
chapard_fault=$2
chapar=$3
. "$(dirname "$0")/lib.sh"
lib_tmp fault

start_relay() { # BINARY FAULTS
        CHAPARD_BIN=$1 CHAPAR_STORE_FAULT=$2 relay_start R --log-level warn
}
stop_relay() { relay_stop R; }

put() { "$chapar" put "$1" --relay "${addr[R]}" --relay-key "${key[R]}" --chunk-size 65536 2>"$tmp/err"; }
get_same() { # TICKET FILE: downloads TICKET and compares it with FILE
        rm -f "$tmp/out" # get never overwrites
        "$chapar" get "$1" -o "$tmp/out" >/dev/null 2>"$tmp/err" && cmp -s "$2" "$tmp/out"
}

# Puts FILE until it succeeds (at most 30 tries); every failure must say WHY. Sets ticket and
# failures; checks that FILE_BEFORE (ticket before_ticket) downloads after the first failure.
put_through_fault() { # FILE WHY FILE_BEFORE TICKET_BEFORE
        ticket=
        failures=0
        local unclear=0 served=1
        for _ in $(seq 30); do
                if ticket=$(put "$1"); then
                        break
                fi
                ticket=
                failures=$((failures + 1))
                grep -q "$2" "$tmp/err" || { unclear=$((unclear + 1)); cat "$tmp/err"; }
                if [ $failures = 1 ]; then get_same "$4" "$3" || served=0; fi
        done
        check "a put that meets the fault fails, $failures times, each saying '$2'" \
                "[ $failures -gt 0 ] && [ $unclear = 0 ]"
        check "while it fails, a file stored before downloads unchanged" "[ $served = 1 ]"
        check "the same put then succeeds" "[ -n '$ticket' ]"
}

for f in a b c d; do head -c 300000 /dev/urandom >"$tmp/$f"; done

# Segment writes 6..13 fail with ENOSPC: file a (5 chunks) is stored first.
start_relay "$chapard_fault" write:6:8:ENOSPC
ta=$(put "$tmp/a") || { cat "$tmp/err"; bad "put a before the fault"; }
put_through_fault "$tmp/b" "No space left on device" "$tmp/a" "$ta"
tb=$ticket
check "file b downloads" "get_same '$tb' '$tmp/b'"
stop_relay

# After a restart the first segment sync fails with EIO (fsyncgate: the batch is not
# acknowledged, and its segment takes no more appends); then the first index commit.
for fault in sync:1:1:EIO commit:1:1:EIO; do
        start_relay "$chapard_fault" $fault
        if [ "$fault" = sync:1:1:EIO ]; then f=c; else f=d; fi
        put_through_fault "$tmp/$f" "Input/output error" "$tmp/a" "$ta"
        eval "t$f=\$ticket"
        check "file $f downloads after a failed ${fault%%:*}" "get_same \"\$t$f\" '$tmp/$f'"
        check "file b still downloads" "get_same '$tb' '$tmp/b'"
        stop_relay
done
grep -q "fdatasync of a segment failed" "$tmp/R.log" || bad "the sync fault was never hit"

"$chapard" verify --data "$tmp/R.data" >"$tmp/verify" 2>&1
check "chapard verify finds the store clean" "grep -q ': 0 problems' '$tmp/verify'"
cat "$tmp/verify"

start_relay "$chapard" ""
for f in a b c d; do
        eval "t=\$t$f"
        check "a relay without the hook serves file $f" "get_same '$t' '$tmp/$f'"
done
stop_relay

finish && [ $passed -gt 0 ]
