#!/usr/bin/env bash
# chapar put and get's transfer flags, against a real chapard on port 0: --ticket-out writes the
# ticket the put prints (whole: written aside and renamed); --congestion-control asks the kernel
# for an algorithm and --json says which ran ("congestion"), beside "connections", "reconnects"
# and "bytes_resent"; a name too long or a missing value is a usage error (exit 1).
# Usage: transfer_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp transfer

relay_start R --log-level warn
raddr=${addr[R]}
head -c 3000000 /dev/urandom >"$tmp/in"

json=$("$chapar" put "$tmp/in" --relay "$raddr" --trust-new-relay --json --ticket-out "$tmp/ticket" \
        --congestion-control reno 2>"$tmp/put.err")
check "put --json --ticket-out exits 0" "[ -n '$json' ]" || cat "$tmp/put.err"
ticket=$(printf '%s' "$json" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p')
check "--ticket-out holds the ticket put printed" "[ -n '$ticket' ] && [ \"\$(cat '$tmp/ticket')\" = '$ticket' ]"
check "no temporary ticket file is left" "[ ! -e '$tmp/ticket.tmp' ]"
check "put --json says reno ran" "printf '%s' '$json' | grep -q '\"congestion\":\"reno\"'"
check "put --json counts its connections" "printf '%s' '$json' | grep -Eq '\"connections\":[1-9]'"
check "put --json has reconnects and bytes_resent" \
        "printf '%s' '$json' | grep -Eq '\"reconnects\":[0-9]+,\"bytes_resent\":[0-9]+'"

json=$("$chapar" get "$ticket" -o "$tmp/out" --json --congestion-control reno 2>"$tmp/get.err")
check "get --congestion-control reno fetches the file" "cmp -s '$tmp/in' '$tmp/out'" || cat "$tmp/get.err"
check "get --json says reno ran" "printf '%s' '$json' | grep -q '\"congestion\":\"reno\"'"

"$chapar" put "$tmp/in" --relay "$raddr" --congestion-control abcdefghijklmnopq >/dev/null 2>"$tmp/err"
rc=$?
check "a congestion name over 15 bytes is a usage error (exit $rc)" "[ $rc -eq 1 ] && grep -q congestion '$tmp/err'"
"$chapar" put "$tmp/in" --relay "$raddr" --ticket-out >/dev/null 2>"$tmp/err"
rc=$?
check "--ticket-out without a path is a usage error (exit $rc)" "[ $rc -eq 1 ] && grep -q 'needs a value' '$tmp/err'"
finish
