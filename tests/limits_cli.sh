#!/usr/bin/env bash
# Limits per client address against a real chapard, loopback counted (limit_loopback = true):
#   - connections over max_connections_per_address: HTTP answered 429 with Retry-After and closed,
#     native closed at once; counted in /metrics;
#   - uploads over uploads_per_minute: tus POST 429 with Retry-After, native OPEN ERROR LIMITED
#     "retry after N s" (the address's count is shared by both faces);
#   - incomplete uploads over max_incomplete_per_address: refused until one is committed;
#   - upload_rate_per_address: an upload of N bytes at R bytes/s takes at least about N/R (the
#     figures are printed; only a loose lower bound, 0.5 x (N - R) / R, is asserted);
#   - /metrics: chapar_refusals_total{reason="limited"} and the table's gauges;
#   - uploads_per_minute per subject, with a tenant: two tokens of one subject, used from two
#     addresses (127.0.0.1 native, 127.0.0.2 tus) that are not counted as addresses (loopback
#     exempt), share one count and are refused together (LIMITED "retry after", 429), while
#     another subject from the same addresses is not;
#   - the subject's own limits, with a tenant, addresses not counted (loopback exempt):
#     max_incomplete_per_subject: one subject's uploads begun from two addresses (tus from
#     127.0.0.2, tus and native from 127.0.0.1) are refused together once it has that many
#     incomplete (429 Retry-After 60, native LIMITED "retry after"), another subject's are not;
#     max_connections_per_subject and upload_rate_per_subject: while one native put of a subject
#     is held back by the subject's byte rate (reads throttled, which the address's rate, off,
#     cannot do), a second native connection of the subject is refused at HELLO (LIMITED
#     "retry after"), another subject's put goes through; the refusals are counted;
#   - download_rate_per_address, set by a reload: a download of N bytes at R bytes/s (curl GET
#     /f/ID and chapar get) takes at least about (N - R) / R (the figures are printed; only a
#     loose lower bound, half of N / R, is asserted); before the reload, the same downloads take
#     less than that. The relay's window is its smallest and its header_timeout 1 s: chapar get
#     asks for more than the window ahead, and those requests, held back while the throttled
#     output drains, are not a slow head (nor is the wait a stalled send: io_timeout 2 s).
# Usage: limits_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp limits
for tool in curl timeout; do
        command -v $tool >/dev/null || { echo "skipped: no $tool"; exit 77; }
done

conf() { # NAME KEY=VALUE...: a config file with [server] limit_loopback and the keys given
        local f=$tmp/$1.ini
        shift
        { echo "[server]"; echo "limit_loopback = true"; printf '%s\n' "$@"; } >"$f"
        echo "$f"
}
metric() { # NAME METRIC-WITH-LABELS: its value on relay NAME's /metrics (empty when absent)
        curl -s --max-time 10 "http://${http[$1]}/metrics" | awk -v k="$2" '$1 == k {print $2}'
}
metric_is() { # NAME METRIC OP VALUE: checks METRIC on relay NAME's /metrics ([ OP ]: -ge, = ...)
        local v
        v=$(metric "$1" "$2")
        check "/metrics: $2 = ${v:-absent} ($3 $4)" "[ '${v:-0}' $3 $4 ]"
}
now_ms() { date +%s%3N; }
tus_post() { # NAME [curl args...]: a tus POST to relay NAME; prints "STATUS RETRY-AFTER LOCATION"
        local r=$1 h=$tmp/post.hdr
        shift
        local code
        code=$(curl -s --max-time 60 -H 'Expect:' -H 'Tus-Resumable: 1.0.0' -X POST -D "$h" \
                -o /dev/null -w '%{http_code}' "$@" "http://${http[$r]}/files/")
        local ra loc
        ra=$(sed -n 's/^Retry-After: *\([0-9]*\).*/\1/Ip' "$h" | tr -d '\r')
        loc=$(sed -n 's/^Location: *//Ip' "$h" | tr -d '\r')
        echo "$code ${ra:--} ${loc:--}"
}

# ---- connections per address ------------------------------------------------------------------
# (a handshake_timeout well past the reads' 10 s: a connection that was taken is not closed
# by it while the test waits)
relay_start C --config "$(conf C 'max_connections_per_address = 3' 'handshake_timeout = 60')" \
        --log-level warn
IFS=: read -r hhost hport <<<"${http[C]}"
IFS=: read -r nhost nport <<<"${addr[C]}"
# three connections held open, each known to be accepted (it answered a request): the relay's
# loops accept from listeners of their own, so a later connection may otherwise be taken first
held=0
for fd in 11 12 13; do
        eval "exec $fd<>/dev/tcp/$hhost/$hport"
        printf 'GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n' >&$fd
        read -r -t 10 line <&$fd && case $line in "HTTP/1.1 200"*) held=$((held + 1)) ;; esac
done
check "three connections from one address are taken ($held)" "[ $held -eq 3 ]"
# a fourth connection from the address: the HTTP face says 429 and closes, reading nothing
exec 14<>"/dev/tcp/$hhost/$hport"
reply=$(timeout 10 cat <&14 | tr -d '\r')
exec 14<&-
echo "fourth HTTP connection: $(echo "$reply" | head -1)"
check "a connection over max_connections_per_address gets 429 on the HTTP face" \
        "echo \"\$reply\" | head -1 | grep -q '^HTTP/1.1 429'"
check "... with Retry-After" "echo \"\$reply\" | grep -q '^Retry-After: [1-9]'"
# the native face has no word before its handshake: closed at once (not left to time out); the
# count is per address, both faces together
exec 14<>"/dev/tcp/$nhost/$nport"
t0=$(now_ms)
timeout 10 cat <&14 >"$tmp/native4.out"
rc=$?
exec 14<&-
echo "fourth native connection: closed after $(($(now_ms) - t0)) ms, rc $rc"
check "a native connection over the cap is closed at once, without a byte" \
        "[ $rc -eq 0 ] && [ ! -s '$tmp/native4.out' ]"
exec 11<&- 12<&- 13<&-
# once they are closed the address may connect again (the count came down)
wait_for 10 "curl -s --max-time 5 -o /dev/null 'http://${http[C]}/healthz'"
check "after closing, the address connects again" \
        "[ \"\$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' http://${http[C]}/healthz)\" = 200 ]"
# (at least two: the first connection after the closes may come before the relay has seen them)
metric_is C 'chapar_connections_closed_total{reason="address_cap"}' -ge 2
metric_is C 'chapar_refusals_total{reason="limited"}' -ge 2
metric_is C 'chapar_limits_entries' = 1 # 127.0.0.1
relay_stop C

# ---- uploads per minute -------------------------------------------------------------------------
relay_start U --config "$(conf U 'uploads_per_minute = 2' 'max_incomplete_per_address = 0')" \
        --log-level warn
for i in 1 2 3; do head -c $((1000 + i)) /dev/urandom >"$tmp/small.$i"; done
r1=$(tus_post U -H 'Upload-Length: 10')
r2=$(tus_post U -H 'Upload-Length: 10')
r3=$(tus_post U -H 'Upload-Length: 10')
echo "tus POSTs: [$r1] [$r2] [$r3]"
check "two tus POSTs a minute are created" "[ '${r1%% *}' = 201 ] && [ '${r2%% *}' = 201 ]"
read -r code ra _ <<<"$r3"
check "the third is refused 429" "[ '$code' = 429 ]"
# two a minute: the next one accrues within 30 s
check "... with Retry-After: $ra (1..31 s)" "[ '$ra' != - ] && [ '$ra' -ge 1 ] && [ '$ra' -le 31 ]"
"$chapar" put "$tmp/small.1" --relay "${addr[U]}" --relay-key "${key[U]}" >"$tmp/put.out" \
        2>"$tmp/put.err"
rc=$?
echo "native put after them: rc $rc: $(cat "$tmp/put.err")"
check "a native put from the same address is refused too" "[ $rc -ne 0 ]"
check "... ERROR LIMITED saying 'retry after N s'" "grep -q 'retry after [0-9][0-9]* s' '$tmp/put.err'"
metric_is U 'chapar_refusals_total{reason="limited"}' = 2
metric_is U 'chapar_errors_total{code="18"}' = 1 # the native ERROR LIMITED
relay_stop U

# ---- incomplete uploads per address -------------------------------------------------------------
relay_start I --config "$(conf I 'uploads_per_minute = 0' 'max_incomplete_per_address = 2')" \
        --log-level warn
r1=$(tus_post I -H 'Upload-Length: 10')
r2=$(tus_post I -H 'Upload-Length: 10')
r3=$(tus_post I -H 'Upload-Length: 10')
echo "tus POSTs: [$r1] [$r2] [$r3]"
check "two incomplete uploads are allowed" "[ '${r1%% *}' = 201 ] && [ '${r2%% *}' = 201 ]"
check "a third is refused 429 while they are incomplete" "[ '${r3%% *}' = 429 ]"
loc=$(echo "$r1" | awk '{print $3}')
case $loc in http*) ;; *) loc="http://${http[I]}$loc" ;; esac
pcode=$(printf '0123456789' | curl -s --max-time 20 -H 'Expect:' -H 'Tus-Resumable: 1.0.0' \
        -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' -X PATCH \
        --data-binary @- -o /dev/null -w '%{http_code}' "$loc")
check "the first is finished (PATCH $pcode)" "[ '$pcode' = 204 ]"
r4=$(tus_post I -H 'Upload-Length: 10')
check "then a new one is allowed again ($r4)" "[ '${r4%% *}' = 201 ]"
# native: an upload committed is no longer incomplete (one more is at the cap: two are open)
"$chapar" put "$tmp/small.1" --relay "${addr[I]}" --relay-key "${key[I]}" >/dev/null \
        2>"$tmp/put.err"
check "a native put at the cap is refused ($(cat "$tmp/put.err"))" "grep -q 'retry after' '$tmp/put.err'"
relay_stop I
relay_start I2 --config "$(conf I2 'uploads_per_minute = 0' 'max_incomplete_per_address = 1')" \
        --log-level warn
fails=0
for i in 1 2 3; do
        "$chapar" put "$tmp/small.$i" --relay "${addr[I2]}" --relay-key "${key[I2]}" >/dev/null \
                2>"$tmp/put.err" || { fails=$((fails + 1)); cat "$tmp/put.err"; }
done
check "three native puts in a row with max_incomplete_per_address = 1 ($fails failed)" \
        "[ $fails -eq 0 ]"
relay_stop I2

# ---- bytes per second ---------------------------------------------------------------------------
R=$((256 * 1024))
N=$((3 * 512 * 1024))
head -c $N /dev/urandom >"$tmp/big"
timed_uploads() { # NAME: "TUS-MS NATIVE-MS" for one upload of $tmp/big on each face
        local t0 t1 t2 c
        t0=$(now_ms)
        c=$(curl -s --max-time 120 -H 'Expect:' -H 'Tus-Resumable: 1.0.0' -X POST \
                -H "Upload-Length: $N" -H 'Content-Type: application/offset+octet-stream' \
                --data-binary @"$tmp/big" -o /dev/null -w '%{http_code}' "http://${http[$1]}/files/")
        t1=$(now_ms)
        "$chapar" put "$tmp/big" --relay "${addr[$1]}" --relay-key "${key[$1]}" >/dev/null \
                2>"$tmp/put.err" || c="$c native-failed: $(cat "$tmp/put.err")"
        t2=$(now_ms)
        echo "$((t1 - t0)) $((t2 - t1)) $c"
}
relay_start B0 --config "$(conf B0)" --log-level warn
read -r base_tus base_nat base_c <<<"$(timed_uploads B0)"
relay_stop B0
relay_start B --config "$(conf B "upload_rate_per_address = $R")" --log-level warn
read -r lim_tus lim_nat lim_c <<<"$(timed_uploads B)"
floor=$(((N - R) * 1000 / R))
echo "upload of $N bytes at $R bytes/s: (N - R) / R = $floor ms"
echo "  tus:    $lim_tus ms limited, $base_tus ms unlimited (ratio $((lim_tus / (base_tus + 1))))"
echo "  native: $lim_nat ms limited, $base_nat ms unlimited (ratio $((lim_nat / (base_nat + 1))))"
check "both uploads went through ($base_c / $lim_c)" "[ '$base_c' = 201 ] && [ '$lim_c' = 201 ]"
check "the tus upload took at least half of (N - R) / R" "[ $lim_tus -ge $((floor / 2)) ]"
check "the native upload took at least half of (N - R) / R" "[ $lim_nat -ge $((floor / 2)) ]"
metric_is B 'chapar_reads_throttled_total' -gt 0
relay_stop B

# ---- uploads per minute per subject -------------------------------------------------------------
# limit_loopback off: 127.0.0.1 and 127.0.0.2 are not counted as addresses, so what is refused is
# refused by the subject's count, whichever address its uploads come from
skey=$("$chapard" keygen --out "$tmp/S.key")
tline=$("$chapard" tenant-key --out "$tmp/acme.tk" | tail -n 1)
printf '[server]\nuploads_per_minute = 2\nmax_incomplete_per_address = 0\n' >"$tmp/S.ini"
printf '[tenant "acme"]\n%s\n' "$tline" >>"$tmp/S.ini"
relay_start S --config "$tmp/S.ini" --key "$tmp/S.key" --log-level warn
token() { # SUBJECT: a token of acme for relay S
        "$chapard" token --key "$tmp/acme.tk" --tenant acme --audience "$skey" --bytes 10000000 \
                --subject "$1"
}
both() { # TUS-TOKEN NATIVE-TOKEN FILE: a tus POST from 127.0.0.2 (its "STATUS RETRY-AFTER
        # LOCATION" in $post) and a native put of FILE from 127.0.0.1 (its exit in $nat, its
        # stderr in $tmp/sput.err)
        post=$(tus_post S --interface 127.0.0.2 -H 'Upload-Length: 10' -H "Authorization: Bearer $1")
        "$chapar" put "$3" --relay "${addr[S]}" --relay-key "$skey" --token "$2" >/dev/null \
                2>"$tmp/sput.err"
        nat=$?
}
alice1=$(token alice)
alice2=$(token alice)
bob=$(token bob)
check "two tokens of the subject alice, each its own" "[ -n '$alice1' ] && [ '$alice1' != '$alice2' ]"
both "$alice1" "$alice2" "$tmp/small.1"
echo "alice: tus POST from 127.0.0.2 [$post], native put from 127.0.0.1 exit $nat"
check "alice's first two uploads (one on each face, each from its own address) are taken" \
        "[ '${post%% *}' = 201 ] && [ $nat -eq 0 ]"
both "$alice1" "$alice2" "$tmp/small.2"
echo "alice again: tus POST [$post], native put exit $nat: $(cat "$tmp/sput.err")"
read -r code ra _ <<<"$post"
check "alice's third upload is refused 429 on the tus face" "[ '$code' = 429 ]"
check "... with Retry-After: $ra (1..31 s)" "[ '$ra' != - ] && [ '$ra' -ge 1 ] && [ '$ra' -le 31 ]"
check "alice's native put from the other address is refused: LIMITED 'retry after N s'" \
        "[ $nat -ne 0 ] && grep -q 'retry after [0-9][0-9]* s' '$tmp/sput.err'"
both "$bob" "$bob" "$tmp/small.3"
echo "bob from the same addresses: tus POST [$post], native put exit $nat: $(cat "$tmp/sput.err")"
check "another subject from the same two addresses is not refused" \
        "[ '${post%% *}' = 201 ] && [ $nat -eq 0 ]"
metric_is S 'chapar_refusals_total{reason="limited"}' = 2
relay_stop S

# ---- incomplete uploads, connections and bytes per second per subject --------------------------
printf '[server]\nuploads_per_minute = 0\nmax_incomplete_per_subject = 2\n' >"$tmp/P.ini"
printf 'max_connections_per_subject = 1\nupload_rate_per_subject = 64K\n' >>"$tmp/P.ini"
printf '[tenant "acme"]\n%s\n' "$tline" >>"$tmp/P.ini"
relay_start P --config "$tmp/P.ini" --key "$tmp/S.key" --log-level warn
http[S]=${http[P]} addr[S]=${addr[P]} # both() and tus_post S now go to P
alice=$(token alice)
bob=$(token bob)
p1=$(tus_post P --interface 127.0.0.2 -H 'Upload-Length: 10' -H "Authorization: Bearer $alice")
p2=$(tus_post P --interface 127.0.0.1 -H 'Upload-Length: 10' -H "Authorization: Bearer $alice")
echo "alice: tus POSTs from 127.0.0.2 [$p1] and 127.0.0.1 [$p2]"
check "alice's two incomplete uploads, from two addresses, are taken" \
        "[ '${p1%% *}' = 201 ] && [ '${p2%% *}' = 201 ]"
both "$alice" "$alice" "$tmp/small.1"
echo "alice's third: tus POST [$post], native put exit $nat: $(cat "$tmp/sput.err")"
read -r code ra _ <<<"$post"
check "alice's third upload is refused 429 Retry-After: 60 (max_incomplete_per_subject)" \
        "[ '$code' = 429 ] && [ '$ra' = 60 ]"
check "... and her native put from the other address: LIMITED 'retry after N s'" \
        "[ $nat -ne 0 ] && grep -q 'retry after [0-9][0-9]* s' '$tmp/sput.err'"
both "$bob" "$bob" "$tmp/small.2"
echo "bob from the same addresses: tus POST [$post], native put exit $nat: $(cat "$tmp/sput.err")"
check "bob's uploads from the same two addresses are taken" \
        "[ '${post%% *}' = 201 ] && [ $nat -eq 0 ]"
metric_is P 'chapar_refusals_total{reason="limited"}' = 2
# carol's put of 4 MiB at 64 KiB/s takes a minute: held back by her subject's rate (the
# address's is off), it holds her one connection while the next are tried
carol=$(token carol)
head -c $((4 << 20)) /dev/urandom >"$tmp/carol"
"$chapar" put "$tmp/carol" --relay "${addr[P]}" --relay-key "$skey" --token "$carol" \
        --connections 1 >/dev/null 2>"$tmp/carol.err" &
carol_pid=$!
lib_track $carol_pid
wait_for 30 "[ \"\$(metric P chapar_reads_throttled_total)\" -gt 0 ] 2>/dev/null"
metric_is P 'chapar_reads_throttled_total' -gt 0
"$chapar" put "$tmp/small.3" --relay "${addr[P]}" --relay-key "$skey" --token "$(token carol)" \
        --connections 1 >/dev/null 2>"$tmp/carol2.err"
rc=$?
echo "carol's second connection: exit $rc: $(cat "$tmp/carol2.err")"
check "a second connection of carol's is refused: LIMITED 'retry after N s'" \
        "[ $rc -ne 0 ] && grep -q 'retry after [0-9][0-9]* s' '$tmp/carol2.err'"
check "... while her first put still runs" "kill -0 $carol_pid"
"$chapar" put "$tmp/small.3" --relay "${addr[P]}" --relay-key "$skey" --token "$(token dave)" \
        --connections 1 >/dev/null 2>"$tmp/dave.err"
rc=$?
check "dave's put meanwhile goes through (exit $rc)" "[ $rc -eq 0 ]"
kill $carol_pid 2>/dev/null
wait $carol_pid 2>/dev/null
metric_is P 'chapar_refusals_total{reason="limited"}' = 3
relay_stop P

# ---- download bytes per second ------------------------------------------------------------------
R=$((1024 * 1024))
N=$((12 * 1024 * 1024))
head -c $N /dev/urandom >"$tmp/dl"
conf D 'window_bytes = 8388672' 'header_timeout = 1' 'io_timeout = 2' >/dev/null
relay_start D --config "$tmp/D.ini" --log-level info
ticket=$("$chapar" put "$tmp/dl" --relay "${addr[D]}" --relay-key "${key[D]}" --no-pad 2>"$tmp/put.err")
fid=$(echo "$ticket" | sed -n 's,^chapar://[^/]*/[0-9a-f]*/\([0-9a-f]*\)#.*,\1,p')
check "a file of $N bytes is put (file id ${fid:0:16}...)" "[ -n '$fid' ] || { cat '$tmp/put.err'; false; }"
timed_downloads() { # TAG: "CURL-MS GET-MS CURL-STATUS CURL-BYTES GET-OK" for one download each
        local t0 t1 t2 c ok=no
        t0=$(now_ms)
        c=$(curl -s --max-time 120 -o "$tmp/dl.$1.curl" -w '%{http_code} %{size_download}' \
                "http://${http[D]}/f/$fid")
        t1=$(now_ms)
        "$chapar" get "$ticket" -o "$tmp/dl.$1" >/dev/null 2>"$tmp/get.err" &&
                cmp -s "$tmp/dl" "$tmp/dl.$1" && ok=yes || ok="no($(head -c 100 "$tmp/get.err"))"
        t2=$(now_ms)
        echo "$((t1 - t0)) $((t2 - t1)) $c $ok"
}
read -r base_curl base_get base_code base_bytes base_ok <<<"$(timed_downloads base)"
echo "download_rate_per_address = $R" >>"$tmp/D.ini"
kill -HUP "${pid[D]}"
wait_for 20 "grep -qF 'SIGHUP: configuration reloaded' '$tmp/D.log'"
read -r lim_curl lim_get lim_code lim_bytes lim_ok <<<"$(timed_downloads lim)"
half=$((N * 1000 / R / 2))
echo "download of $N bytes ($lim_bytes over HTTP) at $R bytes/s: N / R = $((N * 1000 / R)) ms," \
        "(N - R) / R = $(((N - R) * 1000 / R)) ms"
echo "  curl GET /f/ID: $lim_curl ms limited, $base_curl ms unlimited" \
        "(ratio $((lim_curl / (base_curl + 1))))"
echo "  chapar get:     $lim_get ms limited, $base_get ms unlimited (ratio $((lim_get / (base_get + 1))))"
check "all four downloads are whole ($base_code $base_bytes $base_ok / $lim_code $lim_bytes $lim_ok)" \
        "[ '$base_code' = 200 ] && [ '$lim_code' = 200 ] && [ '$base_bytes' = '$lim_bytes' ] &&
         [ '$lim_bytes' -ge $N ] && [ \"\$base_ok\" = yes ] && [ \"\$lim_ok\" = yes ]"
check "limited, the HTTP download took at least half of N / R ($half ms)" "[ $lim_curl -ge $half ]"
check "limited, chapar get took at least half of N / R" "[ $lim_get -ge $half ]"
check "unlimited, both took less than that" "[ $base_curl -lt $half ] && [ $base_get -lt $half ]"
metric_is D 'chapar_sends_throttled_total' -gt 0
relay_stop D
finish
