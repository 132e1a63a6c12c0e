#!/usr/bin/env bash
# Federation limits with real relays on loopback: A (origin), B (pulls from A and from two
# hostile "peers": S accepts TCP and never speaks, T trickles a byte every 0.5 s, both
# tests/stub_peer.py). Shown, each with the figures it measures:
# 1. two uploads left open at A, pulled through B, do not pin B's workers: a complete file is
#    served through B at once, and SIGTERM stops B within the grace period (5 s);
# 2. S and T do not take every worker (at most fetch_workers_per_peer = 2 against one peer: a
#    third fetch from S waits), a fetch from A is served while B still holds their connections,
#    T is abandoned for sending less than fetch_min_rate, and SIGTERM stops B within the grace
#    period while it is connected to both;
# 3. five requests for a file A does not have make B ask A once (A's NOT_FOUND count);
# 4. with fetch_timeout = 3 s, B stops polling an upload A never finishes, says so, and answers
#    the next request from memory instead of fetching again;
# 5. SIGTERM stops A, which still holds three uploads never committed, within the grace period
#    (exit 0).
# Usage: fed_limits.sh CHAPARD CHAPAR FED_CLIENT
set -uo pipefail
chapard=$1
chapar=$2
fedc=$3
here=$(dirname "$0")
. "$here/lib.sh"
lib_tmp fedlim
grace_ms=5000 # the relay's stop grace period (docs/operations.md, Stopping)

for r in A B S T; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done
for st in S:silent T:trickle; do
        r=${st%%:*}
        mkdir -p "$tmp/$r.stub"
        python3 "$here/stub_peer.py" "${st#*:}" "$tmp/$r.stub" &
        lib_track $!
        wait_for 10 "[ -s '$tmp/$r.stub/port' ]"
done
opens() { grep -c '^open' "$tmp/$1.stub/events" 2>/dev/null || true; }  # stub
closes() { grep -c '^close' "$tmp/$1.stub/events" 2>/dev/null || true; } # stub

printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}" >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key" --log-level info
{
        printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}"
        printf '[peer "S"]\naddress = 127.0.0.1:%s\npubkey = %s\n' "$(cat "$tmp/S.stub/port")" "${key[S]}"
        printf '[peer "T"]\naddress = 127.0.0.1:%s\npubkey = %s\n' "$(cat "$tmp/T.stub/port")" "${key[T]}"
} >"$tmp/B.ini"
startB() { relay_start B --config "$tmp/B.ini" --key "$tmp/B.key" --log-level info; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); } # MS
# gone PID: the process has exited (a zombie not yet reaped counts)
gone() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }
# SIGTERM to relay NAME; sets stop_ms (how long until it exited, or empty when it had not after
# 20 s and was killed) and stop_rc
stop_timed() { # NAME
        local p=${pid[$1]} t0
        t0=$(now_ms)
        kill -TERM "$p"
        if wait_for 20 "gone $p"; then
                stop_ms=$(($(now_ms) - t0))
                wait "$p"
                stop_rc=$?
        else
                stop_ms=
                kill -KILL "$p"
                wait "$p" 2>/dev/null
                stop_rc=137
        fi
        unset "pid[$1]"
}
stop_ok() { [ -n "$stop_ms" ] && [ "$stop_ms" -lt $grace_ms ] && [ "$stop_rc" -eq 0 ]; }
get_via_B() { # TICKET OUT: sets get_ms
        local t0
        t0=$(now_ms)
        timeout 30 "$chapar" get "$1" --via "${addr[B]}" --trust-new-relay -o "$2" >/dev/null 2>"$2.err"
        get_ms=$(($(now_ms) - t0))
}
put() { "$chapar" put "$1" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size 65536; }
fetches() { # OUTCOME: B's chapar_fetches_total{outcome=OUTCOME}
        curl -s "http://${http[B]}/metrics" | sed -n "s/^chapar_fetches_total{outcome=\"$1\"} //p"
}
rand_id() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# ---- 1. uploads left open at the origin ------------------------------------------------------
startB
p1=$("$fedc" partial "${addr[A]}" 1 8)
p2=$("$fedc" partial "${addr[A]}" 2 8)
p3=$("$fedc" partial "${addr[A]}" 3 2)
check "three uploads left open at A (8, 8 and 2 chunks of 8 sent)" \
        "[ \${#p1} -eq 64 ] && [ \${#p2} -eq 64 ] && [ \${#p3} -eq 64 ]"
r1=$("$fedc" pull "${addr[B]}" "$p1" "${key[A]}")
r2=$("$fedc" pull "${addr[B]}" "$p2" "${key[A]}")
r3=$("$fedc" pull "${addr[B]}" "$p3" "${key[A]}")
check "B pulls them through and serves what A has (answers: $r1; $r2; $r3)" \
        "[ '$r1' = 'manifest partial' ] && [ '$r2' = 'manifest partial' ] && [ '$r3' = 'manifest partial' ]"
yes CHAPAR-LIMITS | head -c 300000 >"$tmp/f1"
t1=$(put "$tmp/f1")
get_via_B "$t1" "$tmp/f1.b"
check "a complete file is served through B meanwhile ($(secs $get_ms) s)" "cmp -s '$tmp/f1' '$tmp/f1.b'" ||
        head -c 300 "$tmp/f1.b.err"
stop_timed B
check "SIGTERM stops B within the grace period: ${stop_ms:-more than 20000} ms of $grace_ms (exit $stop_rc)" stop_ok

# ---- 2. peers that never answer or trickle -------------------------------------------------
startB
"$fedc" pull "${addr[B]}" "$(rand_id)" "${key[T]}" once >/dev/null
for i in 1 2 3; do "$fedc" pull "${addr[B]}" "$(rand_id)" "${key[S]}" once >/dev/null; done
wait_for 20 "[ \$(opens T) -ge 1 ] && [ \$(opens S) -ge 2 ]"
s_open=$(opens S) s_closed=$(closes S)
check "B fetches from S on $s_open connections at once ($s_closed closed) of 3 requests (per-peer limit 2), T on $(opens T)" \
        "[ $s_open -eq 2 ] && [ $s_closed -eq 0 ] && [ \$(opens T) -eq 1 ]"
yes CHAPAR-LIMITS-2 | head -c 300000 >"$tmp/f2"
t2=$(put "$tmp/f2")
get_via_B "$t2" "$tmp/f2.b"
s_closed=$(closes S) t_closed=$(closes T)
check "a file from A is served through B ($(secs $get_ms) s) while B still holds S's and T's connections (closed: $s_closed, $t_closed)" \
        "cmp -s '$tmp/f2' '$tmp/f2.b' && [ $s_closed -eq 0 ] && [ $t_closed -eq 0 ]"
t0=$(now_ms)
wait_for 30 "[ \$(closes T) -ge 1 ]"
slow=$(fetches too_slow)
check "B abandons T's trickle ($(secs $(($(now_ms) - t0))) s after the get; too_slow fetches: $slow)" \
        "grep -q 'below fetch_min_rate' '$tmp/B.log' && [ '$slow' -ge 1 ]" || tail -5 "$tmp/B.log"
"$fedc" pull "${addr[B]}" "$(rand_id)" "${key[T]}" once >/dev/null
wait_for 20 "[ \$(opens T) -ge 2 ]"
check "B connects to T again" "[ \$(opens T) -ge 2 ]"
stop_timed B
check "SIGTERM stops B within the grace period while connected to S and T: ${stop_ms:-more than 20000} ms of $grace_ms (exit $stop_rc)" stop_ok

# ---- 3. the negative cache ---------------------------------------------------------------
startB
not_found() { # NOT_FOUND answers A sent
        local n
        n=$(curl -s "http://${http[A]}/metrics" | sed -n 's/^chapar_errors_total{code="4"} //p')
        echo "${n:-0}"
}
before=$(not_found)
missing=$(rand_id)
answers=
for i in 1 2 3 4 5; do
        answers+="$("$fedc" pull "${addr[B]}" "$missing" "${key[A]}" | head -c 60); "
done
asked=$(($(not_found) - before))
nf=$(fetches not_found)
hits=$(curl -s "http://${http[B]}/metrics" | sed -n 's/^chapar_fetch_negative_hits_total //p')
check "5 requests for a file A lacks: B asked A $asked time(s) (B counts $nf not_found fetch, $hits answered from memory); answers: $answers" \
        "[ $asked -eq 1 ] && [ '$nf' = 1 ] && [ '$hits' = 4 ] && [ \$(grep -o 'no such file' <<<'$answers' | wc -l) -eq 5 ]"
stop_timed B
check "B stops cleanly (exit $stop_rc)" stop_ok

# ---- 4. an origin that never finishes --------------------------------------------------
{ printf '[server]\nfetch_timeout = 3s\n'; cat "$tmp/B.ini"; } >"$tmp/B3.ini"
relay_start B --config "$tmp/B3.ini" --key "$tmp/B.key" --log-level info
t0=$(now_ms)
r=$("$fedc" pull "${addr[B]}" "$p3" "${key[A]}")
wait_for 20 "grep -q 'is not finished' '$tmp/B.log'"
gave_up=$(($(now_ms) - t0))
check "B gives up polling A's unfinished upload after $(secs $gave_up) s (fetch_timeout 3 s; first answer: $r)" \
        "[ '$r' = 'manifest partial' ] && grep -q 'is not finished' '$tmp/B.log'"
r=$("$fedc" pull "${addr[B]}" "$p3" "${key[A]}")
unf=$(fetches unfinished)
check "the next request is answered from memory: $r (unfinished fetches: $unf)" \
        "grep -q '^error 11 .*is not finished' <<<'$r' && [ '$unf' = 1 ]"
stop_timed B
check "B stops cleanly (exit $stop_rc)" stop_ok
# A still holds the three uploads never committed (p1, p2, p3): they do not hold its stop either
stop_timed A
check "SIGTERM stops A, holding 3 never-committed uploads, within the grace period: ${stop_ms:-more than 20000} ms of $grace_ms (exit $stop_rc)" stop_ok
finish
