#!/usr/bin/env bash
# Concurrent senders of the same content: eight `chapar put` of one file at once against one
# relay all succeed with the same file id, and the file downloads intact. They share the key
# cache, so they send the same manifest and the relay gives them one upload; whoever commits
# first ends it under the others' in-flight chunks, which then get ERROR COMMITTED (or, from an
# older relay, NOT_FOUND) and must re-OPEN (COMPLETE) instead of failing. The key cache is filled
# by a put to a second relay first, so the race relay starts empty and the eight really race.
# Usage: put_race.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp race

relay_start seed --log-level warn
relay_start R --log-level warn
cs=65536
head -c $((8 * 1024 * 1024)) /dev/urandom >"$tmp/in"
"$chapar" put "$tmp/in" --relay "${addr[seed]}" --relay-key "${key[seed]}" --chunk-size $cs \
        --json >"$tmp/seed.json" 2>"$tmp/seed.err" || { bad "seed put"; cat "$tmp/seed.err"; }
want=$(sed -n 's/.*"file_id":"\([0-9a-f]*\)".*/\1/p' "$tmp/seed.json")

n=8
pids=()
for i in $(seq 1 $n); do
        "$chapar" put "$tmp/in" --relay "${addr[R]}" --relay-key "${key[R]}" --chunk-size $cs \
                --json >"$tmp/put.$i.json" 2>"$tmp/put.$i.err" &
        pids+=($!)
done
lib_track "${pids[@]}"
failures=0
for i in $(seq 1 $n); do
        if ! wait "${pids[$((i - 1))]}"; then
                failures=$((failures + 1))
                echo "put $i: $(cat "$tmp/put.$i.err")"
        fi
done
check "$n concurrent puts of one file all succeed ($failures failed)" "[ $failures -eq 0 ]"
ids=$(sed -n 's/.*"file_id":"\([0-9a-f]*\)".*/\1/p' "$tmp"/put.*.json | sort -u)
check "they all name the same file id, the one the key cache gives" \
        "[ -n '$want' ] && [ '$ids' = '$want' ]"
t=$(sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p' "$tmp/put.1.json")
"$chapar" get "$t" -o "$tmp/out" >/dev/null 2>"$tmp/get.err" || cat "$tmp/get.err"
check "the file downloads intact" "cmp -s '$tmp/in' '$tmp/out'"
finish
