#!/usr/bin/env bash
# Chunk reads that complete later, as over a remote backend (scale-out step 3): chapard_fault with
# CHAPAR_STORE_DEFER_READS=MS has no file to splice from and completes every non-inline chunk read
# MS ms later on a thread of the store's. A native get and an HTTP GET with a Range of
# multi-chunk files come back byte for byte; clients that go away while reads are outstanding
# (an HTTP GET, a native get, killed mid-way) and a relay stopped mid-download leave it serving
# and exiting cleanly (under ASan: no leak). The store's report at close shows that the faces
# used the deferred path and never read on their loop thread. Record lookups (chp_store_lookup)
# are deferred the same way: GET and HEAD /f/ID, native get and STAT, a native put and a tus
# upload resumed after HEAD all work with every lookup answered later, none is read on a loop
# thread, and clients that close while their lookup is under way leave the relay serving.
# Usage: defer_reads.sh CHAPARD_FAULT CHAPAR      (needs curl)
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "defer_reads.sh: curl is not installed" >&2; exit 1; }
lib_tmp defer

start_relay() { # DELAY_MS
        CHAPAR_STORE_DEFER_READS=$1 relay_start R --log-level warn
}
put() { "$chapar" put "$1" --relay "${addr[R]}" --relay-key "${key[R]}" --chunk-size 65536 2>"$tmp/err"; }
get_same() { # TICKET FILE: downloads TICKET and compares it with FILE
        rm -f "$tmp/out" # get never overwrites
        "$chapar" get "$1" -o "$tmp/out" >/dev/null 2>"$tmp/err" && cmp -s "$2" "$tmp/out"
}
tus_put() { # FILE: stores FILE through tus as it is; prints its file id
        local len loc
        len=$(stat -c %s "$1")
        loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
                -H "Upload-Length: $len" "http://${http[R]}/files/" | tr -d '\r' |
                sed -n 's/^Location: //Ip')
        [ -n "$loc" ] || return 1
        curl -sS -D - -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
                -H 'Content-Type: application/offset+octet-stream' --data-binary @"$1" "$loc" |
                tr -d '\r' | sed -n 's/^Chapar-File-Id: //Ip'
}
range_same() { # FID FIRST LAST FILE: GET Range bytes=FIRST-LAST is that slice of FILE
        local st
        st=$(curl -sS -o "$tmp/range" -w '%{http_code}' -r "$2-$3" "http://${http[R]}/f/$1") &&
                [ "$st" = 206 ] &&
                tail -c +$(($2 + 1)) "$4" | head -c $(($3 - $2 + 1)) >"$tmp/want" &&
                cmp -s "$tmp/want" "$tmp/range"
}
report() { sed -n 's/.*fault injection: \([0-9]*\) chunk reads deferred, \([0-9]*\) read synchronously.*/\1 \2/p' "$tmp/R.log" | tail -n 1; }
lookups() { sed -n 's/.*fault injection: .* \([0-9]*\) lookups deferred, \([0-9]*\) record reads synchronous.*/\1 \2/p' "$tmp/R.log" | tail -n 1; }
tus_resume() { # FILE CUT: stores FILE through tus in two PATCHes, the second from HEAD's offset
        local len loc off
        len=$(stat -c %s "$1")
        loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
                -H "Upload-Length: $len" -H 'Upload-Metadata: filename cmVzdW1lZC5iaW4=' \
                "http://${http[R]}/files/" | tr -d '\r' | sed -n 's/^Location: //Ip')
        [ -n "$loc" ] || return 1
        head -c "$2" "$1" >"$tmp/part"
        curl -sS -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
                -H 'Content-Type: application/offset+octet-stream' --data-binary @"$tmp/part" "$loc"
        off=$(curl -sS -I -H 'Tus-Resumable: 1.0.0' "$loc" | tr -d '\r' |
                sed -n 's/^Upload-Offset: //Ip')
        [ "$off" = "$2" ] || { echo "HEAD says offset '$off', not $2" >&2; return 1; }
        tail -c +$((off + 1)) "$1" >"$tmp/rest"
        curl -sS -D - -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H "Upload-Offset: $off" \
                -H 'Content-Type: application/offset+octet-stream' --data-binary @"$tmp/rest" "$loc" |
                tr -d '\r' | sed -n 's/^Chapar-File-Id: //Ip'
}

head -c 3500000 /dev/urandom >"$tmp/big"   # tus: 4 chunks of 1 MiB, the last not inline
head -c 2000000 /dev/urandom >"$tmp/native" # native: 31 chunks of 64 KiB
head -c 19600000 /dev/urandom >"$tmp/long"  # native: 300 chunks of 64 KiB

start_relay 5
fid=$(tus_put "$tmp/big")
check "a file stored through tus" "[ -n '$fid' ]"
ticket=$(put "$tmp/native") || cat "$tmp/err"
check "a file stored through the native face" "[ -n '$ticket' ]"
tlong=$(put "$tmp/long") || cat "$tmp/err"
flong=$(echo "$tlong" | sed -n 's,^chapar://[^/]*/[0-9a-f]*/\([0-9a-f]*\)#.*,\1,p') # its file id

check "native get of 31 chunks, every read deferred: the same bytes" "get_same '$ticket' '$tmp/native'"
check "HTTP GET Range across three chunks: the same bytes" "range_same '$fid' 1000000 2500000 '$tmp/big'"
check "HTTP GET Range inside the last chunk: the same bytes" "range_same '$fid' 3400000 3499999 '$tmp/big'"
check "HTTP GET of the whole file: the same bytes" \
        "curl -sS -o '$tmp/whole' 'http://${http[R]}/f/$fid' && cmp -s '$tmp/big' '$tmp/whole'"
check "the relay stops cleanly" "relay_stop R"
read -r deferred sync <<<"$(report)"
check "the faces read through the store's thread (${deferred:-none} deferred)" \
        "[ '${deferred:-0}' -ge 38 ]"
check "no chunk read on a loop thread (${sync:-none} synchronous)" "[ '${sync:-x}' = 0 ]"

# Record lookups (chp_store_lookup: files, uploads, progress, pending) answered later too. Reads
# first, on a relay restarted over what is stored: every face's read of a record goes through
# the store's thread, none is made on a loop thread.
start_relay 5
check "GET /f/ID with every lookup deferred: the same bytes" \
        "curl -sS -o '$tmp/whole' 'http://${http[R]}/f/$fid' && cmp -s '$tmp/big' '$tmp/whole'"
check "HEAD /f/ID: 200 and the length" \
        "curl -sS -I 'http://${http[R]}/f/$fid' | tr -d '\r' | grep -qix 'Content-Length: 3500000'"
check "GET /f/ of an unknown file: 404" \
        "[ \$(curl -sS -o /dev/null -w '%{http_code}' 'http://${http[R]}/f/$(printf '%064d' 0)') = 404 ]"
check "native get (GET_MANIFEST) with every lookup deferred: the same bytes" \
        "get_same '$ticket' '$tmp/native'"
check "native STAT with every lookup deferred: the file's size" \
        "'$chapar' stat '$ticket' --json 2>'$tmp/err' | grep -q '\"size\"'"
check "the relay stops cleanly" "relay_stop R"
read -r looked sync <<<"$(lookups)"
check "the read faces asked the store's thread (${looked:-none} lookups deferred)" \
        "[ '${looked:-0}' -ge 7 ]"
check "no record read on a loop thread while reading (${sync:-none} synchronous)" \
        "[ '${sync:-x}' = 0 ]"

# Connections that close while their lookup is under way (500 ms): the lookup completes into a
# freed connection only if the faces do not hold it (ASan would say so), and the relay serves on.
start_relay 500
cut_request() { # REQUEST-HEAD: sends it on a fresh connection and closes at once
        exec {fd}<>/dev/tcp/${http[R]%:*}/${http[R]##*:}
        printf '%b' "$1" >&$fd
        exec {fd}>&-
}
cut_request "GET /f/$fid HTTP/1.1\r\nHost: x\r\n\r\n"
cut_request "HEAD /f/$fid HTTP/1.1\r\nHost: x\r\n\r\n"
check "after clients closed during their lookups, GET /f/ID still serves" \
        "range_same '$fid' 0 99999 '$tmp/big'"
check "the relay stops cleanly" "relay_stop R"
read -r looked sync <<<"$(lookups)"
check "the closed requests' lookups were under way (${looked:-none} deferred)" "[ '${looked:-0}' -ge 4 ]"

# Uploads: a native put (OPEN, the chunk map, COMMIT) and a tus upload resumed after HEAD.
start_relay 5
head -c 2500000 /dev/urandom >"$tmp/resumed"
head -c 700000 /dev/urandom >"$tmp/native2"
rfid=$(tus_resume "$tmp/resumed" 1500000)
check "a tus upload resumed from HEAD's offset, every lookup deferred" "[ -n '$rfid' ]"
check "and it reads back the same" \
        "curl -sS -o '$tmp/whole' 'http://${http[R]}/f/$rfid' && cmp -s '$tmp/resumed' '$tmp/whole'"
t2=$(put "$tmp/native2") || cat "$tmp/err"
check "a native put with every lookup deferred" "[ -n '$t2' ] && get_same '$t2' '$tmp/native2'"
# a tus DELETE (termination) reads the upload's record first, for its subject's limits
loc=$(curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 1000' \
        "http://${http[R]}/files/" | tr -d '\r' | sed -n 's/^Location: //Ip')
del=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H 'Tus-Resumable: 1.0.0' "$loc")
gone=$(curl -sS -o /dev/null -w '%{http_code}' -I -H 'Tus-Resumable: 1.0.0' "$loc")
check "a tus DELETE with every lookup deferred: $del, then HEAD $gone" "[ '$del' = 204 ] && [ '$gone' = 404 ]"
check "the relay stops cleanly" "relay_stop R"
read -r looked sync <<<"$(lookups)"
check "the upload faces asked the store's thread (${looked:-none} lookups deferred)" \
        "[ '${looked:-0}' -ge 7 ]"
check "no record read on a loop thread while uploading (${sync:-none} synchronous)" \
        "[ '${sync:-x}' = 0 ]"

# Reads that complete as soon as they are queued: often before the face's call has returned.
start_relay 0
for i in 1 2 3; do
        check "no delay, round $i: a native get of 300 chunks and an HTTP GET, the same bytes" \
                "get_same '$tlong' '$tmp/long' && range_same '$fid' 0 3499999 '$tmp/big'"
done
check "the relay stops cleanly" "relay_stop R"

# Clients that go away while reads are outstanding: reads of 100 ms each, of 300 chunks, at most
# 16 (HTTP) or 64 (native) under way at once, so that a download is always waiting on some when
# the client is killed once its first bytes have arrived.
start_relay 100
downloading() { # OUT COMMAND...: runs COMMAND (stdout to OUT) until its first bytes arrive; sets dpid
        "${@:2}" >"$1" 2>/dev/null &
        dpid=$!
        lib_track $dpid
        wait_for 20 "[ \$(stat -c %s '$1' 2>/dev/null || echo 0) -gt 0 ]"
}
downloading "$tmp/cut" curl -sS "http://${http[R]}/f/$flong"
check "the HTTP client is cut mid-download" "kill -9 $dpid 2>/dev/null"
wait $dpid 2>/dev/null
downloading "$tmp/cut3" "$chapar" get "$tlong" -o -
check "the native client is cut mid-download" "kill -9 $dpid 2>/dev/null"
wait $dpid 2>/dev/null
check "after both clients went away mid-download, the relay serves the next GET" \
        "range_same '$fid' 0 99999 '$tmp/big'"
check "and the next native get" "get_same '$ticket' '$tmp/native'"
# A relay stopped while a download waits on its reads.
downloading "$tmp/cut2" curl -sS "http://${http[R]}/f/$flong"
check "a relay stopped mid-download exits cleanly (no leak under ASan)" "relay_stop R"
wait $dpid 2>/dev/null
grep -E "ERROR: (Address|Leak)Sanitizer|runtime error" "$tmp/R.log" && bad "the sanitizers report"

finish
