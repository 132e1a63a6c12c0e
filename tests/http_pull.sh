#!/usr/bin/env bash
# HTTP pull-through (docs/http.md, docs/federation.md): relay B, peered with relay A (keys pinned
# both ways), serves a file stored on A to plain HTTP clients by content address:
# GET /f/ID?origin=A's key. Shown: the bytes are A's (sha256) and B fetched once (its /metrics);
# a second GET is served from B's copy; HEAD, Range and concurrent GETs through pull-through;
# Chapar-Relay-Key on /f/ answers names the relay; no origin, an origin that is not a peer (no
# fetch), a malformed origin, a file A lacks; with tenants on B an anonymous caller is refused
# (401) unless a pull token is shown or the peer is public_pull = true (taken by SIGHUP); A
# stopped, or a peer that never answers: 502 within B's fetch_timeout; a client that goes away
# ends its wait (its request is over while the fetch goes on); a request waiting on a peer when
# B stops: 503.
# Usage: http_pull.sh CHAPARD
set -uo pipefail
chapard=$1
here=$(dirname "$0")
. "$here/lib.sh"
lib_tmp httppull

for r in A B C; do
        key[$r]=$("$chapard" keygen --out "$tmp/$r.key")
done
mkdir -p "$tmp/S.stub" # a "peer" that accepts and never speaks: a fetch from it waits
python3 "$here/stub_peer.py" silent "$tmp/S.stub" &
lib_track $!
wait_for 10 "[ -s '$tmp/S.stub/port' ]"
s_key=$("$chapard" keygen --out "$tmp/S.key")

printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}" >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" --key "$tmp/A.key" || { bad "relay A starts"; finish; exit 1; }
tenant=chat.example
tline=$("$chapard" tenant-key --out "$tmp/t" | tail -n 1)
fetch_timeout=4
b_ini() { # [tenants] [public]: B's configuration
        printf '[server]\nfetch_timeout = %ss\n' $fetch_timeout
        printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}"
        [ "${2:-}" = public ] && printf 'public_pull = true\n'
        printf '[peer "S"]\naddress = 127.0.0.1:%s\npubkey = %s\n' "$(cat "$tmp/S.stub/port")" "$s_key"
        [ "${1:-}" = tenants ] && printf '[tenant "%s"]\n%s\n' "$tenant" "$tline"
        return 0
}
b_ini >"$tmp/B.ini"
relay_start B --config "$tmp/B.ini" --key "$tmp/B.key" --log-level info ||
        { bad "relay B starts"; finish; exit 1; }
echo "# A ${http[A]} key ${key[A]}; B ${http[B]}"

n=0
req() { # METHOD URL [curl args]: sets $code, the response's $hdr and $body files
        n=$((n + 1)) hdr=$tmp/$n.h body=$tmp/$n.b
        local m=(-X "$1")
        [ "$1" != HEAD ] || m=(-I)
        if ! code=$(curl -sS --max-time 30 -D "$hdr" -o "$body" -w '%{http_code}' "${m[@]}" \
                "${@:3}" "$2" 2>"$tmp/$n.err"); then code="curl: $(cat "$tmp/$n.err")"; fi
}
header() { sed -n "s/^$1: //Ip" "$hdr" | tr -d '\r'; } # NAME: the last response's header
upload() { # FILE: uploads FILE to A over tus (creation-with-upload), prints its file id
        curl -sS --max-time 30 -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
                -H "Upload-Length: $(stat -c %s "$1")" \
                -H 'Content-Type: application/offset+octet-stream' --data-binary "@$1" \
                "http://${http[A]}/files/" | sed -n 's/^Chapar-File-Id: //Ip' | tr -d '\r'
}
sha() { sha256sum "$1" | cut -c1-64; }
fetches() { # RELAY OUTCOME: chapar_fetches_total{outcome=OUTCOME}
        curl -s "http://${http[$1]}/metrics" |
                sed -n "s/^chapar_fetches_total{outcome=\"$2\"} //p"
}
pull() { echo "http://${http[B]}/f/$1?origin=${2:-${key[A]}}"; } # ID [KEY]: B's pull URL

for i in 1 2 3 4 5 6 7 8; do head -c $((300000 + i * 4099)) /dev/urandom >"$tmp/f$i"; done
for i in 1 2 3 4 5 6 7 8; do id[$i]=$(upload "$tmp/f$i"); done
check "eight files uploaded to A over tus (${id[1]:-none}...)" \
        "[ \${#id[1]} -eq 64 ] && [ \${#id[8]} -eq 64 ]"

# ---- the relay's key on /f/ answers ----------------------------------------------------------
req GET "http://${http[A]}/f/${id[1]}"
check "A's GET /f/ID -> 200 with Chapar-Relay-Key = A's key ($code, '$(header Chapar-Relay-Key)')" \
        "[ '$code' = 200 ] && [ '$(header Chapar-Relay-Key)' = '${key[A]}' ]"
etag=$(header ETag)
req GET "http://${http[A]}/f/${id[1]}" -H "If-None-Match: $etag"
check "A's 304 carries Chapar-Relay-Key too ($code)" \
        "[ '$code' = 304 ] && [ '$(header Chapar-Relay-Key)' = '${key[A]}' ]"

# ---- pull-through: the bytes, once ----------------------------------------------------------
done0=$(fetches B done)
req GET "$(pull "${id[1]}")"
check "B's GET /f/ID?origin=A -> 200, the bytes are A's (sha256), Chapar-Relay-Key = B's ($code)" \
        "[ '$code' = 200 ] && [ '$(sha "$body")' = '$(sha "$tmp/f1")' ] &&
         [ '$(header Chapar-Relay-Key)' = '${key[B]}' ]" || head -c 300 "$body"
check "B fetched it from A (fetches done: ${done0:-none} -> $(fetches B done))" \
        "[ '$(fetches B done)' = $((${done0:-0} + 1)) ]"
req GET "$(pull "${id[1]}")"
check "again: 200, the same bytes, served from B's copy (fetches done: $(fetches B done))" \
        "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f1' && [ '$(fetches B done)' = $((${done0:-0} + 1)) ]"
req GET "http://${http[B]}/f/${id[1]}"
check "and with no origin: 200 from B's copy ($code)" "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f1'"

# ---- HEAD, Range, concurrent GETs -----------------------------------------------------------
req HEAD "$(pull "${id[2]}")"
check "HEAD ?origin=A of a file B lacks -> 200, Content-Length $(stat -c %s "$tmp/f2") ($code, $(header Content-Length))" \
        "[ '$code' = 200 ] && [ '$(header Content-Length)' = $(stat -c %s "$tmp/f2") ] &&
         [ '$(header ETag)' = '\"${id[2]}\"' ]"
req GET "http://${http[B]}/f/${id[2]}"
check "the HEAD fetched it: B serves it with no origin ($code)" \
        "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f2'"
req GET "$(pull "${id[3]}")" -H 'Range: bytes=70000-70099'
check "Range through pull-through -> 206, Content-Range, the 100 bytes ($code, $(header Content-Range))" \
        "[ '$code' = 206 ] && [ '$(header Content-Range)' = 'bytes 70000-70099/$(stat -c %s "$tmp/f3")' ] &&
         cmp -s '$body' <(tail -c +70001 '$tmp/f3' | head -c 100)"
d0=$(fetches B done)
for k in 1 2 3; do
        curl -sS --max-time 30 -o "$tmp/c$k" -w '%{http_code}' "$(pull "${id[4]}")" >"$tmp/c$k.code" &
        cpid[$k]=$!
done
for k in 1 2 3; do wait "${cpid[$k]}"; done
check "three concurrent GETs of one file: 200 each, the bytes, one fetch ($(cat "$tmp"/c?.code); fetches done $d0 -> $(fetches B done))" \
        "[ \"\$(cat '$tmp'/c?.code)\" = 200200200 ] &&
         cmp -s '$tmp/c1' '$tmp/f4' && cmp -s '$tmp/c2' '$tmp/f4' && cmp -s '$tmp/c3' '$tmp/f4' &&
         [ '$(fetches B done)' = $((d0 + 1)) ]"

# ---- refusals -------------------------------------------------------------------------------
d0=$(fetches B done)
f0=$(fetches B failed)
req GET "http://${http[B]}/f/${id[5]}"
check "no origin, a file B lacks -> 404 ($code)" "[ '$code' = 404 ]"
req GET "$(pull "${id[5]}" "${key[C]}")"
check "origin a relay that is not B's peer -> 404 saying so ($code: $(head -c 120 "$body"))" \
        "[ '$code' = 404 ] && grep -q 'not a peer of this relay' '$body'"
req GET "$(pull "${id[5]}" "${key[B]}")"
check "origin B itself -> 404 as with no origin ($code)" "[ '$code' = 404 ]"
req GET "http://${http[B]}/f/${id[5]}?origin=${key[A]:0:63}"
check "a malformed origin (63 hex digits) -> 400 ($code)" "[ '$code' = 400 ]"
req GET "http://${http[B]}/f/${id[5]}?origin=${key[A]}&origin=${key[A]}"
check "origin given twice -> 400 ($code)" "[ '$code' = 400 ]"
check "none of these fetched anything (done $d0 -> $(fetches B done), failed ${f0:-0} -> $(fetches B failed))" \
        "[ '$(fetches B done)' = '$d0' ] && [ '$(fetches B failed)' = '$f0' ]"
req GET "$(pull "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')")&x=1"
check "a file A does not have -> 404 with A's answer ($code: $(head -c 120 "$body"))" \
        "[ '$code' = 404 ] && grep -q 'peer A: no such file' '$body'"

# ---- who may pull: tenants on B ---------------------------------------------------------------
b_ini tenants >"$tmp/B.ini"
relay_stop B
relay_start B --config "$tmp/B.ini" --key "$tmp/B.key" --log-level info --access-log "$tmp/B.access" ||
        { bad "relay B restarts with a tenant"; finish; exit 1; }
req GET "$(pull "${id[5]}")"
check "tenants on B, an anonymous caller -> 401 with a Bearer challenge, saying pull-through needs a token ($code)" \
        "[ '$code' = 401 ] && grep -qi 'Bearer' <<<\"\$(header WWW-Authenticate)\" && grep -q 'pull scope' '$body'"
up=$("$chapard" token --key "$tmp/t" --tenant "$tenant" --scope upload)
req GET "$(pull "${id[5]}")" -H "Authorization: Bearer $up"
check "a token without the pull scope -> 403 insufficient_scope ($code)" \
        "[ '$code' = 403 ] && grep -q 'scope=\"pull\"' '$hdr'"
tok=$("$chapard" token --key "$tmp/t" --tenant "$tenant" --scope pull)
req GET "$(pull "${id[5]}")" -H "Authorization: Bearer $tok"
check "a token with the pull scope -> 200, the bytes ($code)" \
        "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f5'"
req GET "$(pull "${id[6]}")"
check "still anonymous, another file -> 401 ($code)" "[ '$code' = 401 ]"
b_ini tenants public >"$tmp/B.ini"
reloads=$(grep -c 'configuration reloaded' "$tmp/B.log")
kill -HUP "${pid[B]}"
wait_for 20 "[ \$(grep -c 'configuration reloaded' '$tmp/B.log') -gt $reloads ]"
req GET "$(pull "${id[6]}")"
check "public_pull = true for A (SIGHUP): anonymous -> 200, the bytes ($code)" \
        "[ '$code' = 200 ] && cmp -s '$body' '$tmp/f6'"

# ---- a peer that never answers, A gone: 502 ---------------------------------------------------
t0=$SECONDS
req GET "$(pull "${id[7]}" "$s_key")" -H "Authorization: Bearer $tok" --max-time $((fetch_timeout + 10))
check "a peer that never answers: 502 after B's fetch_timeout ($fetch_timeout s; $((SECONDS - t0)) s), saying why ($code: $(head -c 120 "$body"))" \
        "[ '$code' = 502 ] && grep -q 'fetch_timeout' '$body'"
relay_stop A
a_rc=$?
check "A stops cleanly (exit $a_rc)" "[ $a_rc -eq 0 ]"
req GET "$(pull "${id[7]}")" --max-time $((fetch_timeout + 10))
check "A stopped: 502 within B's fetch_timeout (${fetch_timeout} s), saying why ($code: $(head -c 120 "$body"))" \
        "[ '$code' = 502 ] && grep -q 'peer A' '$body'"

# ---- a client that goes away; B stopping while a request waits on a peer: 503 -----------------
opens() { grep -cs '^open' "$tmp/S.stub/events"; }
closes() { grep -cs '^close' "$tmp/S.stub/events"; }
o0=$(opens) c0=$(closes)
curl -sS --max-time 30 -o /dev/null -H "Authorization: Bearer $tok" "$(pull "${id[8]}" "$s_key")" 2>/dev/null &
gpid=$!
wait_for 20 "[ \$(opens) -gt $o0 ]"
kill "$gpid"
wait "$gpid" 2>/dev/null
wait_for 20 "grep -q '/f/${id[8]}' '$tmp/B.access' || [ \$(closes) -gt $c0 ]"
check "a client that goes away ends its wait: its request is logged while the fetch from S still runs ($(grep -c "/f/${id[8]}" "$tmp/B.access") lines; S closed $(($(closes) - c0)))" \
        "grep -q '/f/${id[8]}' '$tmp/B.access' && [ \$(closes) -eq $c0 ]"
opened=$(opens)
curl -sS --max-time 30 -o "$tmp/w.b" -w "%{http_code}" -H "Authorization: Bearer $tok" \
        "$(pull "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$s_key")" >"$tmp/w.code" &
wpid=$!
wait_for 20 "[ \$(opens) -gt $opened ]"
relay_stop B
b_rc=$?
wait "$wpid"
check "B stops while a GET waits on a peer that never answers: 503 ($(cat "$tmp/w.code")), exit $b_rc" \
        "[ \"\$(cat '$tmp/w.code')\" = 503 ] && [ $b_rc -eq 0 ]"

finish
