#!/usr/bin/env bash
# chapar put over several connections, against a real chapard on port 0: --connections 4 opens
# four (--json "connections") and the file comes back intact; through flakyproxy.py, which resets
# every connection after a byte count, the put reconnects and resumes at the chunk ("reconnects"
# >= 1, "bytes_resent" at most the chunks in flight on the cut connections); a connection that
# stalls without closing does not hold the put: an idle one sends its chunks again (no
# reconnect: the put ends before the channel's 30 s timeout could make one); --retry-for 0 fails
# at the first cut (exit 2), --retry-for 2 once the relay has been gone that long. Usage: stripe_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp stripe
proxy=$(dirname "$0")/flakyproxy.py
chunk=4194304 # what a cut loses is what the path buffers: a few MB on loopback

relay_start R --log-level warn
raddr=${addr[R]}
rport=${raddr##*:}
head -c 48000000 /dev/urandom >"$tmp/in"
field() { printf '%s' "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
ticket_of() { printf '%s' "$1" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p'; }

# flaky NAME MODE N [K]: a flakyproxy in $tmp/NAME; its address in $flaky
flaky() {
        mkdir -p "$tmp/$1"
        python3 "$proxy" "$rport" "$tmp/$1" "$2" "$3" ${4:-} &
        lib_track $!
        wait_for 10 "[ -s '$tmp/$1/port' ]"
        flaky=127.0.0.1:$(cat "$tmp/$1/port")
}

json=$("$chapar" put "$tmp/in" --relay "$raddr" --trust-new-relay --json --connections 4 \
        2>"$tmp/put.err")
check "put --connections 4 exits 0" "[ -n '$json' ]" || cat "$tmp/put.err"
check "put --connections 4 used 4 ($(field "$json" connections))" "[ '$(field "$json" connections)' = 4 ]"
"$chapar" get "$(ticket_of "$json")" -o "$tmp/out4" 2>"$tmp/get.err"
check "the file put over 4 connections comes back intact" "cmp -s '$tmp/in' '$tmp/out4'" || cat "$tmp/get.err"
rm -rf "$XDG_CACHE_HOME"

json=$("$chapar" put "$tmp/in" --relay "$raddr" --json --connections auto 2>"$tmp/put.err")
check "put --connections auto starts with 2 ($(field "$json" connections))" \
        "[ '$(field "$json" connections)' -ge 2 ]" || cat "$tmp/put.err"
rm -rf "$XDG_CACHE_HOME"

# every connection reset after 16 MB sent, twice: two reconnects at least (each cut leaves one to
# make again before the put can go on), and what is resent is only what was in flight: S's window
# is one largest chunk frame, so each of 2 connections has one 4 MiB chunk in flight at most, and
# a cut can cost no more than a chunk per connection (chunks stored before it are not sent again)
printf '[server]\nwindow_bytes = %d\n' $((8388608 + 64)) >"$tmp/small.conf"
relay_start S --log-level warn --config "$tmp/small.conf"
rport=${addr[S]##*:}
flaky cut cut 16000000 2
head -c 48000000 /dev/urandom >"$tmp/in2"
json=$("$chapar" put "$tmp/in2" --relay "$flaky" --trust-new-relay --json --connections 2 \
        --chunk-size $chunk 2>"$tmp/put.err")
rc=$?
check "put through cuts exits 0 (exit $rc)" "[ $rc -eq 0 ]" || cat "$tmp/put.err"
check "the proxy cut twice" "[ \"\$(cat '$tmp/cut/cuts')\" = 2 ]"
resent=$(field "$json" bytes_resent)
check "put through cuts reconnected ($(field "$json" reconnects))" "[ '$(field "$json" reconnects)' -ge 2 ]"
check "put through cuts resent at most a chunk per connection per cut ($resent bytes)" \
        "[ -n '$resent' ] && [ '$resent' -le $((2 * 2 * chunk)) ]"
"$chapar" get "$(ticket_of "$json")" -o "$tmp/out2" 2>"$tmp/get.err"
check "the file put through cuts comes back intact" "cmp -s '$tmp/in2' '$tmp/out2'" || cat "$tmp/get.err"
rm -rf "$XDG_CACHE_HOME"

rport=${addr[R]##*:}
# the relay's acknowledgements are lost after 4 MB, then every connection is reset once the client
# has sent all it may: the relay stored those chunks, and OPEN's map after the reconnect says so,
# so none of them is sent again
flaky deaf deaf 4000000
json=$("$chapar" put "$tmp/in2" --relay "$flaky" --trust-new-relay --json --connections 2 \
        2>"$tmp/put.err")
rc=$?
check "put through lost acknowledgements exits 0 (exit $rc)" "[ $rc -eq 0 ] && [ -e '$tmp/deaf/cuts' ]" ||
        cat "$tmp/put.err"
check "chunks stored but not acknowledged are not sent again ($(field "$json" bytes_resent) bytes)" \
        "[ '$(field "$json" reconnects)' -ge 1 ] && [ '$(field "$json" bytes_resent)' = 0 ]"
"$chapar" get "$(ticket_of "$json")" -o "$tmp/out3" 2>"$tmp/get.err"
check "the file put through lost acknowledgements comes back intact" "cmp -s '$tmp/in2' '$tmp/out3'"
rm -rf "$XDG_CACHE_HOME"

# the second connection stops forwarding in its first chunk and never closes
flaky stall stall 100000 1
json=$(timeout 25 "$chapar" put "$tmp/in" --relay "$flaky" --trust-new-relay --json \
        --connections 2 --chunk-size $chunk 2>"$tmp/put.err")
rc=$?
check "put with a stalled connection exits 0 (exit $rc)" "[ $rc -eq 0 ]" || cat "$tmp/put.err"
check "the proxy stalled a connection" "[ -e '$tmp/stall/stalled' ]"
check "the stalled connection's chunks went again on the other ($(field "$json" bytes_resent))" \
        "[ '$(field "$json" bytes_resent)' -gt 0 ] && [ '$(field "$json" reconnects)' = 0 ]"
rm -rf "$XDG_CACHE_HOME"

flaky once cut 6000000 1
"$chapar" put "$tmp/in2" --relay "$flaky" --trust-new-relay --connections 2 --retry-for 0 \
        >/dev/null 2>"$tmp/err"
rc=$?
check "put --retry-for 0 fails at the first cut (exit $rc)" "[ $rc -eq 2 ] && [ -s '$tmp/once/cuts' ]"

# the relay goes away for good after 6 MB: the put keeps reconnecting (refused at once each time)
# until nothing has moved for --retry-for, then fails with the network's error
flaky down down 6000000
timeout 60 "$chapar" put "$tmp/in2" --relay "$flaky" --trust-new-relay --connections 2 --retry-for 2 \
        >/dev/null 2>"$tmp/err"
rc=$?
check "put --retry-for 2 gives up on a relay gone for good (exit $rc)" \
        "[ $rc -eq 2 ] && [ \"\$(cat '$tmp/down/refused' 2>/dev/null || echo 0)\" -ge 1 ]" || cat "$tmp/err"

"$chapar" put "$tmp/in" --relay "$raddr" --connections 9 >/dev/null 2>"$tmp/err"
rc=$?
check "--connections 9 is a usage error (exit $rc)" "[ $rc -eq 1 ] && grep -q connections '$tmp/err'"
"$chapar" put "$tmp/in" --relay "$raddr" --retry-for -1 >/dev/null 2>"$tmp/err"
rc=$?
check "--retry-for -1 is a usage error (exit $rc)" "[ $rc -eq 1 ] && grep -q retry-for '$tmp/err'"
finish
