#!/usr/bin/env bash
# chapar get over several connections, against a real chapard on port 0 reached through
# faultproxy.py (which resets or stalls connections on a plan): --connections 4 opens 4 (the
# proxy counts them) and the file comes back whole, to a file and to stdout; a get whose
# connections are reset once, or again and again, reconnects and completes, resending at most a
# chunk per connection per cut; a connection that stops forwarding does not hold the get (its
# chunks are fetched again on another, before any timeout); --retry-for 0 fails at the first cut
# and a rerun resumes; a file still uploading (its put held by cutproxy) is fetched over two
# connections as its chunks arrive, to a file and to stdout; across an outage (every connection
# refused for a while) the get reconnects and completes by itself, and with --retry-for 1 it
# gives up while the outage lasts.
# Usage: get_stripe.sh CHAPARD CHAPAR CUTPROXY
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/lib.sh"
lib_tmp stripe

relay_start R --log-level warn --sync none
pdir=$tmp/proxy
mkdir -p "$pdir"
python3 "$(dirname "$0")/faultproxy.py" "${addr[R]##*:}" "$pdir" &
lib_track $!
wait_for 10 "[ -s '$pdir/port' ]"
via=127.0.0.1:$(cat "$pdir/port")

chunk=262144
head -c $((12 * 1024 * 1024 + 12345)) /dev/urandom >"$tmp/in"
t=$("$chapar" put "$tmp/in" --relay "$via" --trust-new-relay --chunk-size $chunk 2>"$tmp/put.err")
check "put through the proxy" "[ -n '$t' ]" || cat "$tmp/put.err"

num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; } # KEY: from --json on stdin
plan() { echo "$*" >"$pdir/plan.new" && mv "$pdir/plan.new" "$pdir/plan"; }
cuts() { cat "$pdir/cuts" 2>/dev/null || echo 0; }
n=0
get() { # [get args]: --json into $tmp/json, the file into $tmp/out.N; sets rc and out
        n=$((n + 1))
        out=$tmp/out.$n
        "$chapar" get "$t" -o "$out" --json "$@" >"$tmp/json" 2>"$tmp/err"
        rc=$?
}
get_stdout() { # [get args]: the file into $tmp/out.N by -o -
        n=$((n + 1))
        out=$tmp/out.$n
        "$chapar" get "$t" -o - "$@" >"$out" 2>"$tmp/err"
        rc=$?
}

# four connections, to a file and to stdout; each paced at 2 MB/s, so that the get takes long
# enough for all of them to open
echo 2000000 >"$pdir/rate"
rm -f "$pdir/max_open"
get --connections 4
conns=$(num connections <"$tmp/json")
check "--connections 4: the file is intact (exit $rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$out'" || cat "$tmp/err"
check "--connections 4: --json says 4 ($conns)" "[ '$conns' = 4 ]"
check "--connections 4: the proxy saw 4 open at once ($(cat "$pdir/max_open"))" "[ \"\$(cat '$pdir/max_open')\" = 4 ]"
rm -f "$pdir/max_open"
get_stdout --connections 4
check "--connections 4 -o -: the file is intact (exit $rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$out'" || cat "$tmp/err"
check "--connections 4 -o -: the proxy saw 4 open at once ($(cat "$pdir/max_open"))" "[ \"\$(cat '$pdir/max_open')\" = 4 ]"
rm -f "$pdir/max_open"
get --connections auto
check "--connections auto: the file is intact (exit $rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$out'" || cat "$tmp/err"
check "--connections auto: starts with 2 ($(num connections <"$tmp/json"))" "[ \"\$(num connections <'$tmp/json')\" -ge 2 ]"
rm -f "$pdir/rate"

# cuts part-way: the get reconnects and resends at most a chunk per connection per cut
cut_run() { # MODE CONNECTIONS BYTES N: N connections cut after BYTES each, the get checked
        local mode=$1 c=$2 before
        before=$(cuts)
        plan cut "$3" "$4"
        # several connections: paced, so that the others do not finish the file before the
        # cut one is made again (a get that no longer needs it does not reconnect)
        [ "$c" -gt 1 ] && echo 2000000 >"$pdir/rate"
        if [ "$mode" = file ]; then get --connections "$c"; else get_stdout --connections "$c"; fi
        made=$(($(cuts) - before))
        rm -f "$pdir/plan" "$pdir/rate"
        check "$mode, $c connection(s), $made cut(s) of $4 planned: the file is intact (exit $rc)" \
                "[ $made -ge 1 ] && [ $rc -eq 0 ] && cmp -s '$tmp/in' '$out'" || cat "$tmp/err"
        [ "$mode" = file ] || return 0
        re=$(num reconnects <"$tmp/json")
        rs=$(num bytes_resent <"$tmp/json")
        check "$mode, $c connection(s), $made cut(s): reconnects $re >= 1, resent $rs <= $c x $chunk x $made" \
                "[ '$re' -ge 1 ] && [ '$rs' -le $((c * chunk * made)) ]"
}
for mode in file stdout; do
        cut_run $mode 1 1000000 1
        cut_run $mode 4 1000000 1
        cut_run $mode 2 700000 6 # again and again: each of the next 6 connections
done

# a stalled connection: the proxy stops forwarding the first one and never resumes; the get
# fetches its chunks again on the other (endgame) instead of waiting for the 30 s timeout and
# reconnecting
for mode in file stdout; do
        rm -f "$pdir/stalled"
        plan stall 600000
        if [ $mode = file ]; then get --connections 2; else get_stdout --connections 2; fi
        check "$mode: a stalled connection ($( [ -e "$pdir/stalled" ] && echo stalled)) does not hold the get (exit $rc)" \
                "[ -e '$pdir/stalled' ] && [ $rc -eq 0 ] && cmp -s '$tmp/in' '$out'" || cat "$tmp/err"
        if [ $mode = file ]; then
                re=$(num reconnects <"$tmp/json")
                rs=$(num bytes_resent <"$tmp/json")
                check "$mode: the stalled chunks were fetched again, not after a timeout and a reconnect ($re)" \
                        "[ '$re' = 0 ]"
        fi
done

# --retry-for 0: the first cut fails the get (exit 2), and a rerun resumes from the partial file
plan cut 1000000 1
n=$((n + 1))
out=$tmp/out.$n
"$chapar" get "$t" -o "$out" --connections 1 --retry-for 0 >/dev/null 2>"$tmp/err"
rc=$?
check "--retry-for 0 fails at the first cut (exit $rc)" "[ $rc -eq 2 ] && [ ! -e '$out' ] && ls '$out'.chapar-part >/dev/null"
"$chapar" get "$t" -o "$out" --json >"$tmp/json" 2>"$tmp/err"
rc=$?
recv=$(num bytes_received <"$tmp/json")
check "a rerun resumes (exit $rc, $recv bytes fetched)" "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$out' && [ '$recv' -lt $(stat -c %s "$tmp/in") ]"

# a file still uploading: the put's bytes are held after 3 MB by cutproxy, its ticket out
# before; both gets wait for the rest (they cannot end while it is held), which comes once it
# is released
proxy_start C "${addr[R]##*:}"
head -c $((6 * 1024 * 1024)) /dev/urandom >"$tmp/up"
proxy_hold C 3000000 up
"$chapar" put "$tmp/up" --relay "127.0.0.1:${proxy_port[C]}" --trust-new-relay --chunk-size $chunk \
        --ticket-out "$tmp/up.ticket" >/dev/null 2>"$tmp/up.err" &
ppid=$!
lib_track $ppid
proxy_held C
wait_file "$tmp/up.ticket" chapar
ut=$(cat "$tmp/up.ticket")
"$chapar" get "$ut" -o "$tmp/up.out" --connections 2 --json >"$tmp/up.json" 2>"$tmp/up.get.err" &
g1=$!
"$chapar" get "$ut" -o - --connections 2 >"$tmp/up.stdout" 2>"$tmp/up.get2.err" &
g2=$!
lib_track $g1 $g2
# both have fetched what is stored (a partial file with bytes, bytes on stdout) and wait
wait_for 30 "[ -s '$tmp/up.out.chapar-part' ] && [ -s '$tmp/up.stdout' ]"
check "the gets of a file still uploading fetch what is stored and wait for the rest" \
        "[ -s '$tmp/up.out.chapar-part' ] && [ -s '$tmp/up.stdout' ] && kill -0 $g1 && kill -0 $g2"
proxy_release C
wait $ppid
check "the held put completes (exit $?)" "[ -s '$tmp/up.ticket' ]"
wait $g1
rc=$?
check "a get of a file uploading completes when the upload does (exit $rc)" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/up' '$tmp/up.out'" || cat "$tmp/up.get.err"
wait $g2
rc=$?
check "and to stdout (exit $rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/up' '$tmp/up.stdout'" || cat "$tmp/up.get2.err"

# an outage: the get's connection is cut and the proxy then refuses every connection until the
# script ends it, after the get has been refused twice; the get keeps reconnecting and completes
# by itself
refused() { cat "$pdir/refused" 2>/dev/null || echo 0; }
plan outage 1000000
"$chapar" get "$t" -o "$tmp/o1" --connections 1 --json >"$tmp/o1.json" 2>"$tmp/o1.err" &
g1=$!
lib_track $g1
base=$(refused)
wait_for 30 "[ -e '$pdir/down' ] && [ \$(refused) -ge $((base + 2)) ]"
rm -f "$pdir/down"
wait $g1
rc=$?
re=$(num reconnects <"$tmp/o1.json")
check "a get across an outage completes by itself (exit $rc, $re reconnects)" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$tmp/o1' && [ '$re' -ge 1 ]" || cat "$tmp/o1.err"
# ... and with --retry-for 1 gives up while the outage lasts, then a rerun resumes
plan outage 1000000
"$chapar" get "$t" -o "$tmp/o2" --connections 1 --retry-for 1 >/dev/null 2>"$tmp/o2.err"
rc=$?
check "--retry-for 1 gives up while the outage lasts (exit $rc): $(head -c 200 "$tmp/o2.err")" \
        "[ $rc -eq 2 ] && [ ! -e '$tmp/o2' ] && ls '$tmp/o2'.chapar-part >/dev/null"
rm -f "$pdir/down"
"$chapar" get "$t" -o "$tmp/o2" --json >"$tmp/json" 2>"$tmp/err"
rc=$?
check "a rerun after it resumes (exit $rc, $(num bytes_received <"$tmp/json") bytes fetched)" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$tmp/o2' && [ \"\$(num bytes_received <'$tmp/json')\" -lt $(stat -c %s "$tmp/in") ]"
finish
