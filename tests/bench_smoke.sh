#!/usr/bin/env bash
# chapar-bench end to end, tiny: every scenario on both faces of a real chapard (encrypted native
# face, HTTP face, ephemeral ports, a temp directory), each with --json: exit 0 and the keys a
# report must have; uploads and resumes again with --plaintext (the relay has
# --insecure-plaintext); a short soak (both faces at once with its slow/idle/flood background)
# with its per-interval curve. Then the failures: no relay, the wrong face, a usage error, a soak
# whose watched process grows its fds or exits; and a second relay without --insecure-plaintext,
# which serves chapar-bench but refuses its --plaintext. Finally the relay stops cleanly on
# SIGTERM and `chapard verify` finds its store clean after the cut uploads and the soak.
# Usage: bench_smoke.sh CHAPARD CHAPAR_BENCH
set -uo pipefail
chapard=$1
bench=$2
. "$(dirname "$0")/lib.sh"
lib_tmp bench-smoke

relay_start R --insecure-plaintext --sync none --log-level warn
native=${addr[R]}
web=${http[R]}
if [ -z "$native" ] || [ -z "$web" ]; then
        echo "FAIL chapard did not start"
        cat "$tmp/R.log"
        echo "0 passed, 1 failed"
        exit 1
fi

# run NAME "KEYS..." ARGS...: chapar-bench on both faces; exit 0, one JSON object with every key
# and a run for each face.
run() {
        local name=$1 keys=$2
        shift 2
        "$bench" --native "$native" --http "$web" --pid "${pid[R]}" --seconds 20 --json "$@" \
                >"$tmp/out" 2>"$tmp/err"
        local rc=$?
        if [ $rc -ne 0 ]; then
                bad "$name: exit $rc"
                cat "$tmp/err"
                return
        fi
        local missing=
        for k in scenario seed runs face phase bytes requests seconds mb_per_s req_per_s p50_ms \
                p99_ms p999_ms relay_cpu_s relay_cpu_s_per_gb relay_vm_rss_kib relay_vm_hwm_kib \
                client_cpu_s capped $keys; do
                grep -q "\"$k\":" "$tmp/out" || missing="$missing $k"
        done
        local faces
        faces=$(grep -o '"face":"native"' "$tmp/out" | head -1; grep -o '"face":"http"' "$tmp/out" | head -1)
        if [ "$(head -c 1 "$tmp/out")" != "{" ] || [ "$(wc -l <"$tmp/out")" -ne 1 ]; then
                bad "$name: not one JSON object on one line"
                cat "$tmp/out"
        elif [ -n "$missing" ]; then
                bad "$name: keys missing:$missing"
                cat "$tmp/out"
        elif [ "$(echo "$faces" | wc -l)" -ne 2 ] || grep -q '"capped":true' "$tmp/out"; then
                bad "$name: not a complete run on each face"
                cat "$tmp/out"
        elif command -v python3 >/dev/null && ! python3 -c 'import json,sys; json.load(sys.stdin)' <"$tmp/out"; then
                bad "$name: invalid JSON"
                cat "$tmp/out"
        else
                ok "$name"
        fi
}

run upload "upload" --scenario upload --files 4 --size 300K --conns 2
run download "download" --scenario download --files 4 --size 200K --conns 2
run mix "mix photos voice videos files" --scenario mix --files 12 --size 300K --conns 3
run fanout "download" --scenario fanout --size 256K --conns 4
run resume "cuts retries bytes_sent resent_bytes resent_ratio" \
        --scenario resume --files 4 --size 300K --chunk 64K --conns 2
run "upload, plaintext" "upload" --scenario upload --files 4 --size 300K --conns 2 --plaintext
run "resume, plaintext" "cuts retries bytes_sent resent_bytes resent_ratio" \
        --scenario resume --files 4 --size 300K --chunk 64K --conns 2 --plaintext
run idle "idle conns alive_after bytes_per_conn relay_before_rss_kib relay_after_rss_kib" \
        --scenario idle --idle 50 --files 4 --size 64K --conns 2
run soak "soak rounds interval_s samples transfers verified intervals t_s rss_kib anon_kib fds seg_fds \
        rss_growth_kib fd_growth first_third_max last_third_max background closed_by_relay \
        longest_s flood cuts" \
        --scenario soak --seconds 12 --files 12 --size 1M --conns 2 --background 10 --flood 5 \
        --rate 20
# the soak's curve: an interval a fifth of the run, each with a p99, nothing unverified
if python3 -c '
import json, sys
s = json.load(sys.stdin)["soak"]
iv = s["intervals"]
assert len(iv) >= 4, "%d intervals" % len(iv)
assert all(i["fds"] > i["seg_fds"] > 0 and i["rss_kib"] > 0 for i in iv), iv
assert all((i["p99_ms"] is None) == (i["transfers"] == 0) for i in iv), iv
assert sum(i["transfers"] > 0 for i in iv) >= len(iv) - 1, iv  # a slow machine may lose one
assert s["verified"] > 0 and not s["relay_exited"], s
assert s["background"]["http_head_trickle"]["opened"] > 0, s["background"]
assert s["background"]["native_chunk_trickle"]["opened"] > 0, s["background"]
' <"$tmp/out" 2>"$tmp/err"; then
        ok "soak: intervals with transfers, p99s and the relay's memory and fds; downloads verified"
else
        bad "soak: the curve"
        cat "$tmp/err" "$tmp/out"
fi

# the table (no --json) names both faces
if "$bench" --native "$native" --http "$web" --scenario upload --files 2 --size 64K --conns 2 \
        >"$tmp/out" 2>"$tmp/err" && grep -q '^native upload' "$tmp/out" &&
        grep -q '^http   upload' "$tmp/out"; then
        ok "the human table"
else
        bad "the human table"
        cat "$tmp/out" "$tmp/err"
fi

# failures: a non-zero exit and a message that says what went wrong
expect_fail() { # name code pattern args...
        local name=$1 code=$2 pattern=$3
        shift 3
        "$bench" "$@" >"$tmp/out" 2>"$tmp/err"
        local rc=$?
        if [ $rc -eq "$code" ] && grep -q "$pattern" "$tmp/err"; then
                ok "$name (exit $rc)"
        else
                bad "$name: exit $rc, wanted $code and '$pattern'"
                cat "$tmp/err"
        fi
}
expect_fail "no relay at the address" 2 "refused" --native 127.0.0.1:1 --scenario upload --files 1
expect_fail "the HTTP port given as native" 2 "chapar relay" --native "$web" --scenario upload \
        --files 1 --size 64K
expect_fail "a missing --scenario" 1 "scenario" --native "$native"
expect_fail "a size it cannot parse" 1 "size" --native "$native" --scenario upload --size 12Q
expect_fail "a soak without --pid" 1 "pid" --native "$native" --scenario soak --seconds 5

# the native face is encrypted unless --plaintext: a relay without --insecure-plaintext serves
# chapar-bench, and refuses it with --plaintext
"$chapard" --data "$tmp/data2" --listen 127.0.0.1:0 --http off --ready-file "$tmp/ready2" \
        --sync none --log-level warn 2>>"$tmp/relay2.log" &
other=$!
lib_track "$other"
for _ in $(seq 200); do grep -q '^native=' "$tmp/ready2" 2>/dev/null && break; sleep 0.05; done
native2=$(sed -n 's/^native=//p' "$tmp/ready2" 2>/dev/null)
if "$bench" --native "$native2" --scenario resume --files 2 --size 128K --chunk 64K --conns 2 \
        >"$tmp/out" 2>"$tmp/err"; then
        ok "a relay without --insecure-plaintext serves chapar-bench (encrypted)"
else
        bad "a relay without --insecure-plaintext: chapar-bench failed"
        cat "$tmp/err" "$tmp/relay2.log"
fi
expect_fail "--plaintext toward a relay without --insecure-plaintext" 2 "insecure-plaintext" \
        --native "$native2" --scenario upload --files 1 --size 64K --plaintext
kill "$other"
wait "$other" 2>/dev/null
other=

# the soak's judgement, on a watched process that is not the relay (the transfers still go to the
# relay): one that opens 20 fds a second, far past --fd-slack 10 between the soak's first and last
# thirds; one that exits in the middle
soak_args=(--native "$native" --http "$web" --scenario soak --files 4 --size 256K --conns 2
        --background 2 --flood 0)
bash -c 'for _ in $(seq 400); do exec {fd}</dev/null; sleep 0.05; done; sleep 60' &
other=$!
lib_track "$other"
expect_fail "a soak that sees fds grow" 5 "file descriptors (besides the store.s segments) grew" "${soak_args[@]}" --pid "$other" \
        --seconds 6 --fd-slack 10
kill "$other"
wait "$other" 2>/dev/null
sleep 3 &
other=$!
lib_track "$other"
expect_fail "a soak whose relay exits" 5 "exited during the soak" "${soak_args[@]}" --pid "$other" \
        --seconds 8
wait "$other"

relay_stop R
rc=$?
if [ $rc -eq 0 ]; then ok "chapard stops on SIGTERM with exit 0"; else bad "chapard exit $rc on SIGTERM"; fi
if "$chapard" verify --data "$tmp/R.data" >"$tmp/verify" 2>&1; then
        ok "chapard verify: the store is clean"
else
        bad "chapard verify"
        cat "$tmp/verify"
fi

finish
