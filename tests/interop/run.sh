#!/usr/bin/env bash
# Interop: real clients against a real chapard's HTTP face. tus-js-client (the npm package, in
# Node) uploads files at the relay's 1 MiB chunk boundaries and 40 MiB, whole and in chunks, and
# one 40 MiB upload is cut midway and resumed; curl fetches every file back by id and checks the
# bytes; curl then walks the tus 1.0.0 status codes and headers, Range/ETag downloads, CORS,
# /healthz and /metrics. Prints "ok   NAME" / "FAIL NAME (why)" with the HTTP exchange, then
# "N passed, N failed"; exits 0 only when nothing failed.
# Usage: run.sh CHAPARD     (needs node >= 18, curl, and `npm ci` run in this folder first)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: run.sh CHAPARD" >&2; exit 2; }
case $1 in /*) chapard=$1 ;; *) chapard=$PWD/$1 ;; esac
[ -x "$chapard" ] || { echo "run.sh: $chapard is not an executable file" >&2; exit 1; }
for tool in node curl cmp timeout; do
        command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done
nodemajor=$(node -p 'process.versions.node.split(".")[0]')
[ "$nodemajor" -ge 18 ] || { echo "run.sh: node >= 18 needed, found $(node --version)" >&2; exit 1; }
if [ ! -f "$here/node_modules/tus-js-client/package.json" ]; then
        echo "run.sh: $here/node_modules is missing: run 'npm ci' in tests/interop first" >&2
        exit 1
fi

. "$here/../lib.sh" # ok, the counters, wait_file, finish
tmp=$(mktemp -d /tmp/chapar-interop-XXXXXX)
mkdir "$tmp/x"
rpid=
pid2= # the second relay (a small tus_max_size)
started=$SECONDS

stop_relay() { # SIGTERM, then SIGKILL after 10 s; sets rc to the relay's exit status
        rc=
        [ -n "$rpid" ] || return 0
        kill -TERM "$rpid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$rpid" 2>/dev/null && { echo "run.sh: chapard ignored SIGTERM for 10 s, killing it"; kill -KILL "$rpid"; }
        wait "$rpid"
        rc=$?
        rpid=
}
cleanup() {
        [ -n "$pid2" ] && kill -KILL "$pid2" 2>/dev/null && wait "$pid2" 2>/dev/null
        stop_relay
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- reporting -------------------------------------------------------------------------------

why=     # the reasons of the check in progress
why_ex=  # the first request whose reply failed it
seen_n=0 # requests made before the check in progress began
n=0      # requests made so far; request N's files are $tmp/x/N.{req,code,h,b}
code=
hdr=/dev/null
body=/dev/null

bad() { # NAME REASON [N]: lib.sh's, with a reason; N = show the HTTP exchange of request N
        echo "FAIL $1${2:+ ($2)}"
        failed=$((failed + 1))
        [ -n "${3:-}" ] && exchange "$3"
        return 0
}
exchange() { # N: request N and its reply, indented
        local x=$tmp/x/$1
        echo "    > $(cat "$x.req")"
        echo "    < $(cat "$x.code")"
        [ -s "$x.h" ] && sed 's/\r$//; s/^/    < /' "$x.h"
        if [ -s "$x.b" ]; then
                echo "    < body ($(wc -c <"$x.b") bytes): $(head -c 200 "$x.b" | tr -c '[:print:]' '.')"
        fi
        return 0
}
need() { # DESC COMMAND...: records DESC as a reason when COMMAND fails
        "${@:2}" && return 0
        why="${why:+$why; }$1"
        [ -z "$why_ex" ] && [ "$n" -gt "$seen_n" ] && why_ex=$n
        return 0
}
verdict() { # NAME: ok when no need failed since the last verdict, else FAIL with the exchange
        if [ -z "$why" ]; then ok "$1"; else bad "$1" "$why" "$why_ex"; fi
        why=
        why_ex=
        seen_n=$n
}

# ---- HTTP helpers ----------------------------------------------------------------------------

req() { # METHOD URL [curl args...]: one request; sets $code, $hdr and $body (the reply's files)
        local method=$1 url=$2
        shift 2
        n=$((n + 1))
        hdr=$tmp/x/$n.h
        body=$tmp/x/$n.b
        local how=(-X "$method")
        [ "$method" = HEAD ] && how=(-I)
        printf '%s\n' "$method $url$(printf ' %q' "$@")" >"$tmp/x/$n.req"
        code=$(curl -sS --max-time 60 -H 'Expect:' "${how[@]}" -D "$hdr" -o "$body" -w '%{http_code}' \
                "$@" "$url" 2>"$tmp/x/$n.err") || code="curl failed: $(tr '\n' ' ' <"$tmp/x/$n.err")"
        [ "$method" = HEAD ] && : >"$body" # curl -I copies the headers there
        printf '%s\n' "$code" >"$tmp/x/$n.code"
        return 0
}
h() { # NAME: the value of header NAME in the last reply (several are joined with ", "), or ""
        awk -v name="$(printf %s "$1" | tr 'A-Z' 'a-z')" '
                /^HTTP\// { v = ""; next }
                { sub(/\r$/, "") ; i = index($0, ":") }
                i > 0 && tolower(substr($0, 1, i - 1)) == name {
                        x = substr($0, i + 1); sub(/^[ \t]+/, "", x); sub(/[ \t]+$/, "", x)
                        v = v == "" ? x : v ", " x
                }
                END { print v }' "$hdr"
}
has_h() { grep -qi "^$1:" "$hdr"; } # NAME: the last reply has header NAME
is() { [ "$1" = "$2" ]; }
lists() { # LIST TOKEN: TOKEN is one of the comma-separated items of LIST, case-insensitive
        printf ',%s,' "$1" | tr -d ' \t' | tr 'A-Z' 'a-z' | grep -qF ",$(printf %s "$2" | tr 'A-Z' 'a-z'),"
}
lists_or_star() { lists "$1" "$2" || lists "$1" '*'; }
hex() { [[ $2 =~ ^[0-9a-f]{$1}$ ]]; } # LEN VALUE: VALUE is LEN lowercase hex digits
uint() { [[ $1 =~ ^[0-9]+$ ]]; }
future_date() { local t; t=$(date -d "$1" +%s 2>/dev/null) && [ "$t" -gt "$(date +%s)" ]; }
b64digest() { # ALG FILE: the base64 digest that Upload-Checksum carries
        node -e 'const c = require("crypto"), fs = require("fs");
                process.stdout.write(c.createHash(process.argv[1]).update(fs.readFileSync(process.argv[2])).digest("base64"))' "$1" "$2"
}
tus=(-H 'Tus-Resumable: 1.0.0')
octets=(-H 'Content-Type: application/offset+octet-stream')

# ---- the relay -------------------------------------------------------------------------------

"$chapard" --data "$tmp/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 --ready-file "$tmp/ready" \
        --insecure-plaintext --log-level warn 2>"$tmp/relay.log" &
rpid=$!
wait_for 30 "grep -q '^pubkey=' '$tmp/ready' 2>/dev/null || ! kill -0 $rpid 2>/dev/null"
addr=$(sed -n 's/^http=//p' "$tmp/ready" 2>/dev/null)
if ! [[ $addr =~ ^127\.0\.0\.1:[0-9]+$ ]]; then
        echo "FAIL chapard did not write http=127.0.0.1:PORT to its ready file within 30 s"
        [ -f "$tmp/ready" ] && sed 's/^/    ready: /' "$tmp/ready"
        sed 's/^/    log: /' "$tmp/relay.log" | tail -20
        echo "0 passed, 1 failed"
        exit 1
fi
base=http://$addr
echo "# chapard $chapard, http on $addr"

# ---- tus-js-client uploads, fetched back with curl -------------------------------------------

MiB=1048576
mkdata() { head -c "$2" /dev/urandom >"$1"; } # PATH SIZE

up() { # FILE [tus_upload.mjs args...]: runs the CLI; its stdout in $tmp/up.out, stderr in up.err
        local f=$1
        shift
        timeout 120 node "$here/tus_upload.mjs" --endpoint "$base/files/" --file "$f" "$@" \
                >"$tmp/up.out" 2>"$tmp/up.err"
}
jstr() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "${2:-$tmp/up.out}" | head -1; } # string field
jnum() { sed -n "s/.*\"$1\":\\([0-9]*\\).*/\\1/p" "${2:-$tmp/up.out}" | head -1; }     # number field

fetch_check() { # FILE FILE_ID: GET /f/FILE_ID is 200 with exactly FILE's bytes (adds to $why)
        local f=$1 fid=$2 size
        size=$(stat -c %s "$f")
        req GET "$base/f/$fid"
        need "GET /f/$fid: status $code, want 200" is "$code" 200
        need "GET /f/: Content-Length '$(h Content-Length)', want $size" is "$(h Content-Length)" "$size"
        need "GET /f/: the bytes differ from the upload" cmp -s "$f" "$body"
        rm -f "$body"
}
upload_url_ok() { [[ $1 == "$base/files/"* ]] && hex 32 "${1#"$base/files/"}"; }

tus_case() { # NAME FILE [tus_upload.mjs args...]: upload, check the reply, fetch back, compare
        local name=$1 f=$2 size url fid last
        shift 2
        last_fid=
        size=$(stat -c %s "$f")
        if ! up "$f" "$@"; then
                bad "$name" "tus_upload.mjs failed: $(tail -c 600 "$tmp/up.err" | tr '\n' ' ')"
                return
        fi
        url=$(jstr url)
        fid=$(jstr file_id)
        last=$(jstr final_request)
        need "upload URL '$url' is not $base/files/<32 hex>" upload_url_ok "$url"
        need "file id '$fid' is not 64 hex" hex 64 "$fid"
        # an upload that ends with a PATCH must get its file id in that PATCH's reply
        if [[ $last == PATCH* ]]; then
                need "the final $last carried no Chapar-File-Id" hex 64 "$(jstr final_response_file_id)"
        fi
        need "HEAD of the upload URL: Upload-Offset '$(jnum head_offset)', want $size" \
                is "$(jnum head_offset)" "$size"
        hex 64 "$fid" && fetch_check "$f" "$fid"
        verdict "$name"
        last_fid=$fid
}

small_fid=
for size in 0 1 $((MiB - 1)) $MiB $((MiB + 1)) $((40 * MiB)); do
        mkdata "$tmp/in.$size" "$size"
        tus_case "tus-js-client $size B, one PATCH (Buffer)" "$tmp/in.$size"
        [ "$size" = $((MiB + 1)) ] && small_fid=$last_fid
        tus_case "tus-js-client $size B, chunkSize 262144 (stream)" "$tmp/in.$size" --chunk-size 262144
        [ "$size" = $((MiB + 1)) ] && [ -z "$small_fid" ] && small_fid=$last_fid
        tus_case "tus-js-client $size B, chunkSize 5242880 (stream)" "$tmp/in.$size" --chunk-size 5242880
        [ "$size" = $((MiB + 1)) ] && [ -z "$small_fid" ] && small_fid=$last_fid
done
small=$tmp/in.$((MiB + 1)) # the file the Range checks read: it crosses a chunk boundary
small_len=$((MiB + 1))

tus_case "tus-js-client $((MiB + 1)) B, creation-with-upload" "$small" --creation-with-upload
tus_case "tus-js-client $((MiB + 1)) B, creation-defer-length (stream, chunkSize 262144)" "$small" \
        --defer-length --chunk-size 262144
tus_case "tus-js-client with Upload-Metadata" "$tmp/in.1" --metadata filename=photo.jpg \
        --metadata filetype=image/jpeg --metadata 'note=ünïcode, comma'

# several clients at once
pids=()
for i in 1 2 3 4; do
        mkdata "$tmp/par.$i" $((3 * MiB + i * 7))
        args=()
        [ $((i % 2)) -eq 0 ] && args=(--chunk-size 262144)
        timeout 120 node "$here/tus_upload.mjs" --endpoint "$base/files/" --file "$tmp/par.$i" \
                "${args[@]}" >"$tmp/par.$i.out" 2>"$tmp/par.$i.err" &
        pids+=($!)
done
for i in 1 2 3 4; do
        if wait "${pids[$((i - 1))]}"; then
                fid=$(jstr file_id "$tmp/par.$i.out")
                need "upload $i: file id '$fid' is not 64 hex" hex 64 "$fid"
                hex 64 "$fid" && fetch_check "$tmp/par.$i" "$fid"
        else
                why="${why:+$why; }upload $i failed: $(tail -c 300 "$tmp/par.$i.err" | tr '\n' ' ')"
        fi
done
verdict "4 concurrent tus-js-client uploads (3 MiB each), fetched back"

# a 40 MiB upload cut off after ~10 MiB, in the middle of a PATCH, then resumed
big=$tmp/in.$((40 * MiB))
if up "$big" --chunk-size 5242880 --abort-after $((10 * MiB)) --state "$tmp/state.json"; then
        acked=$(jnum acked "$tmp/state.json")
        aurl=$(jstr url "$tmp/state.json")
        if upload_url_ok "$aurl" && uint "$acked" && [ "$acked" -ge $((10 * MiB)) ] && [ "$acked" -lt $((40 * MiB)) ]; then
                ok "interrupted 40 MiB upload: cut after $acked acknowledged bytes ($(jstr cut "$tmp/state.json"))"
        else
                bad "interrupted 40 MiB upload" "state: $(cat "$tmp/state.json")"
        fi
        if timeout 120 node "$here/tus_upload.mjs" --file "$big" --chunk-size 5242880 \
                --resume-from "$tmp/state.json" >"$tmp/up.out" 2>"$tmp/up.err"; then
                from=$(jnum resumed_from)
                need "resumed at the same URL" is "$(jstr url)" "$aurl"
                need "HEAD before resuming said Upload-Offset '$from', want >= the $acked acknowledged" \
                        eval 'uint "$from" && [ "$from" -ge "$acked" ]'
                fid=$(jstr file_id)
                need "file id '$fid' is not 64 hex" hex 64 "$fid"
                hex 64 "$fid" && fetch_check "$big" "$fid"
                verdict "resumed 40 MiB upload (from offset ${from:-?}) finishes and reads back identical"
        else
                bad "resumed 40 MiB upload" "tus_upload.mjs failed: $(tail -c 600 "$tmp/up.err" | tr '\n' ' ')"
        fi
else
        bad "interrupted 40 MiB upload" "tus_upload.mjs failed: $(tail -c 600 "$tmp/up.err" | tr '\n' ' ')"
        bad "resumed 40 MiB upload" "nothing to resume"
fi
rm -f "$tmp"/in.$((40 * MiB))

# ---- downloads: GET/HEAD /f/<id>, Range, ETag ------------------------------------------------

fid=$small_fid
len=$small_len
slice() { tail -c +$(($1 + 1)) "$small" | head -c $(($2 - $1 + 1)) >"$tmp/want"; } # A B: bytes A..B
if ! hex 64 "$fid"; then
        bad "downloads" "no file id from the $len B upload to test with"
else
        req GET "$base/f/$fid"
        need "status $code, want 200" is "$code" 200
        need "ETag '$(h ETag)', want \"$fid\"" is "$(h ETag)" "\"$fid\""
        need "Accept-Ranges '$(h Accept-Ranges)', want bytes" is "$(h Accept-Ranges)" bytes
        need "Content-Length '$(h Content-Length)', want $len" is "$(h Content-Length)" "$len"
        need "the bytes differ" cmp -s "$small" "$body"
        verdict "GET /f/<id>: 200, ETag, Accept-Ranges, Content-Length, bytes"

        req HEAD "$base/f/$fid"
        need "status $code, want 200" is "$code" 200
        need "Content-Length '$(h Content-Length)', want $len" is "$(h Content-Length)" "$len"
        need "ETag '$(h ETag)', want \"$fid\"" is "$(h ETag)" "\"$fid\""
        verdict "HEAD /f/<id>: 200 with the GET's headers"

        range_case() { # RANGE A B: want 206 with bytes A..B
                req GET "$base/f/$fid" -H "Range: bytes=$1"
                slice "$2" "$3"
                need "status $code, want 206" is "$code" 206
                need "Content-Range '$(h Content-Range)', want bytes $2-$3/$len" is "$(h Content-Range)" "bytes $2-$3/$len"
                need "Content-Length '$(h Content-Length)', want $(($3 - $2 + 1))" is "$(h Content-Length)" $(($3 - $2 + 1))
                need "the bytes differ from $2..$3 of the file" cmp -s "$tmp/want" "$body"
                verdict "Range: bytes=$1 -> 206, bytes $2-$3/$len"
        }
        range_case 100-199 100 199
        range_case $((MiB - 6))-$((MiB + 0)) $((MiB - 6)) $MiB # across the relay's chunk boundary
        range_case 0-0 0 0
        range_case $((MiB - 100))- $((MiB - 100)) $((len - 1))
        range_case -10 $((len - 10)) $((len - 1))
        range_case $((len - 5))-$((len + 1000)) $((len - 5)) $((len - 1)) # end past the length is clamped

        req GET "$base/f/$fid" -H "Range: bytes=$len-"
        need "status $code, want 416" is "$code" 416
        need "Content-Range '$(h Content-Range)', want bytes */$len" is "$(h Content-Range)" "bytes */$len"
        verdict "Range: bytes=$len- (past the end) -> 416, bytes */$len"

        req GET "$base/f/$fid" -H "If-None-Match: \"$fid\""
        need "status $code, want 304" is "$code" 304
        need "a 304 has no body" eval '[ ! -s "$body" ]'
        verdict "If-None-Match: \"<id>\" -> 304"

        req GET "$base/f/$fid" -H "If-None-Match: \"$(printf '%064d' 0)\""
        need "status $code, want 200" is "$code" 200
        verdict "If-None-Match with another ETag -> 200"
fi

req GET "$base/f/$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
need "status $code, want 404" is "$code" 404
verdict "GET /f/<unknown id> -> 404"
req HEAD "$base/f/$(printf '%064d' 0)"
need "status $code, want 404" is "$code" 404
verdict "HEAD /f/<unknown id> -> 404"
for bogus in xyz "$(printf '%063d' 0)" "$(printf '%064d' 0 | tr 0 A)" "$(printf '%064d' 0)0"; do
        req GET "$base/f/$bogus"
        need "status $code, want 404 or 400" eval '[ "$code" = 404 ] || [ "$code" = 400 ]'
        verdict "GET /f/$bogus (malformed id) -> 404 or 400"
done

# ---- tus 1.0.0 with curl ---------------------------------------------------------------------

req OPTIONS "$base/files/"
need "status $code, want 204" is "$code" 204
need "Tus-Resumable '$(h Tus-Resumable)', want 1.0.0" is "$(h Tus-Resumable)" 1.0.0
need "Tus-Version '$(h Tus-Version)' lacks 1.0.0" lists "$(h Tus-Version)" 1.0.0
for ext in creation creation-with-upload creation-defer-length termination checksum expiration; do
        need "Tus-Extension '$(h Tus-Extension)' lacks $ext" lists "$(h Tus-Extension)" $ext
done
maxsize=$(h Tus-Max-Size)
need "Tus-Max-Size '$maxsize' is not a positive integer" eval 'uint "$maxsize" && [ "$maxsize" -gt 0 ]'
for alg in sha1 sha256; do
        need "Tus-Checksum-Algorithm '$(h Tus-Checksum-Algorithm)' lacks $alg" lists "$(h Tus-Checksum-Algorithm)" $alg
done
verdict "OPTIONS /files/: 204 with Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"

if uint "$maxsize" && [ ${#maxsize} -lt 19 ]; then
        req POST "$base/files/" "${tus[@]}" -H "Upload-Length: $((maxsize + 1))"
        need "status $code, want 413" is "$code" 413
        verdict "POST with Upload-Length above Tus-Max-Size -> 413"
fi

req POST "$base/files/" -H 'Upload-Length: 10'
need "status $code, want 412" is "$code" 412
need "a 412 must carry Tus-Version" has_h Tus-Version
verdict "POST without Tus-Resumable -> 412 with Tus-Version"

req POST "$base/files/" "${tus[@]}"
need "status $code, want 4xx" eval '[[ $code == 4?? ]]'
verdict "POST without Upload-Length or Upload-Defer-Length -> 4xx"

meta='filename cGhvdG8uanBn,filetype aW1hZ2UvanBlZw==,flag'
req POST "$base/files/" "${tus[@]}" -H 'Upload-Length: 10' -H "Upload-Metadata: $meta"
u=$(h Location)
need "status $code, want 201" is "$code" 201
need "Location '$u' is not $base/files/<32 hex>" upload_url_ok "$u"
need "Tus-Resumable '$(h Tus-Resumable)', want 1.0.0" is "$(h Tus-Resumable)" 1.0.0
need "Upload-Expires '$(h Upload-Expires)' is not a future HTTP date" future_date "$(h Upload-Expires)"
verdict "POST /files/ -> 201, absolute Location, Upload-Expires"

if upload_url_ok "$u"; then
        req HEAD "$u" "${tus[@]}"
        need "status $code, want 200" is "$code" 200
        need "Upload-Offset '$(h Upload-Offset)', want 0" is "$(h Upload-Offset)" 0
        need "Upload-Length '$(h Upload-Length)', want 10" is "$(h Upload-Length)" 10
        need "Upload-Metadata '$(h Upload-Metadata)', want '$meta'" is "$(h Upload-Metadata)" "$meta"
        need "Cache-Control '$(h Cache-Control)', want no-store" lists "$(h Cache-Control)" no-store
        need "Upload-Expires '$(h Upload-Expires)' is not a future HTTP date" future_date "$(h Upload-Expires)"
        need "Tus-Resumable '$(h Tus-Resumable)', want 1.0.0" is "$(h Tus-Resumable)" 1.0.0
        verdict "HEAD /files/<id>: 200, Upload-Offset 0, Upload-Length, Upload-Metadata as sent, no-store"

        printf abcdefghij >"$tmp/ten"
        printf abcd >"$tmp/four"
        printf xxxx >"$tmp/wrong"
        offset_is() { # WANT: HEAD of $u says Upload-Offset WANT
                req HEAD "$u" "${tus[@]}"
                is "$(h Upload-Offset)" "$1"
        }

        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' -H 'Content-Type: application/octet-stream' \
                --data-binary @"$tmp/four"
        need "status $code, want 415" is "$code" 415
        verdict "PATCH with Content-Type application/octet-stream -> 415"

        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 5' "${octets[@]}" --data-binary @"$tmp/four"
        need "status $code, want 409" is "$code" 409
        verdict "PATCH with a wrong Upload-Offset -> 409"

        req PATCH "$u" -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/four"
        need "status $code, want 412" is "$code" 412
        need "a 412 must carry Tus-Version" has_h Tus-Version
        verdict "PATCH without Tus-Resumable -> 412"

        req PATCH "$u" -H 'Tus-Resumable: 0.2.2' -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/four"
        need "status $code, want 412" is "$code" 412
        need "a 412 must carry Tus-Version" has_h Tus-Version
        verdict "PATCH with Tus-Resumable: 0.2.2 -> 412"

        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" \
                -H "Upload-Checksum: sha1 $(b64digest sha1 "$tmp/wrong")" --data-binary @"$tmp/four"
        need "status $code, want 460" is "$code" 460
        verdict "PATCH with a mismatched sha1 Upload-Checksum -> 460"
        need "Upload-Offset '$(h Upload-Offset)' after the 460, want 0" offset_is 0
        verdict "a 460 PATCH appends nothing (Upload-Offset still 0)"

        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" \
                -H "Upload-Checksum: md5 $(node -p 'require("crypto").createHash("md5").update("abcd").digest("base64")')" \
                --data-binary @"$tmp/four"
        need "status $code, want 400" is "$code" 400
        verdict "PATCH with Upload-Checksum md5 (unsupported) -> 400"

        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" \
                -H "Upload-Checksum: sha256 $(b64digest sha256 "$tmp/four")" --data-binary @"$tmp/four"
        off=$(h Upload-Offset)
        need "status $code, want 204" is "$code" 204
        need "Upload-Offset '$off', want 0..4" eval 'uint "$off" && [ "$off" -le 4 ]'
        need "Tus-Resumable '$(h Tus-Resumable)', want 1.0.0" is "$(h Tus-Resumable)" 1.0.0
        verdict "PATCH with a good sha256 Upload-Checksum -> 204 with Upload-Offset${off:+ $off}"

        rest_patch() { # [ALG]: HEAD, then PATCH the rest of ten from the offset it says (with an
                       # Upload-Checksum in ALG); true when that completed the upload
                req HEAD "$u" "${tus[@]}"
                off=$(h Upload-Offset)
                uint "$off" && [ "$off" -le 10 ] || return 1
                tail -c +$((off + 1)) "$tmp/ten" >"$tmp/rest"
                local sum=()
                [ -n "${1:-}" ] && sum=(-H "Upload-Checksum: $1 $(b64digest "$1" "$tmp/rest")")
                req PATCH "$u" "${tus[@]}" -H "Upload-Offset: $off" "${octets[@]}" "${sum[@]}" \
                        --data-binary @"$tmp/rest"
                [ "$code" = 204 ] && [ "$(h Upload-Offset)" = 10 ]
        }
        # the rest, with a checksum, from wherever the relay says it is (it may keep less than it
        # was sent: a client resends from there, so up to three tries)
        for _ in 1 2 3; do
                rest_patch sha1 && break
        done
        tenid=$(h Chapar-File-Id)
        need "status $code, want 204" is "$code" 204
        need "Upload-Offset '$(h Upload-Offset)', want 10" is "$(h Upload-Offset)" 10
        need "Chapar-File-Id '$tenid' is not 64 hex" hex 64 "$tenid"
        verdict "the completing PATCH (with a good sha1 Upload-Checksum) -> 204, Upload-Offset 10, Chapar-File-Id"
        if ! hex 64 "$tenid"; then # finish it without a checksum, so the checks below still run
                rest_patch
                tenid=$(h Chapar-File-Id)
        fi

        req HEAD "$u" "${tus[@]}"
        need "status $code, want 200" is "$code" 200
        need "Upload-Offset '$(h Upload-Offset)', want 10" is "$(h Upload-Offset)" 10
        need "Chapar-File-Id '$(h Chapar-File-Id)', want '$tenid'" is "$(h Chapar-File-Id)" "$tenid"
        verdict "HEAD of a complete upload carries its Chapar-File-Id"
        if hex 64 "$tenid"; then
                fetch_check "$tmp/ten" "$tenid"
                verdict "GET /f/<the curl upload's id> returns its 10 bytes"
        fi
fi

# a body of several relay chunks and a tail, in one PATCH with its checksum
csize=$(stat -c %s "$tmp/par.1")
req POST "$base/files/" "${tus[@]}" -H "Upload-Length: $csize"
u=$(h Location)
if upload_url_ok "$u"; then
        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" \
                -H "Upload-Checksum: sha256 $(b64digest sha256 "$tmp/par.1")" --data-binary @"$tmp/par.1"
        cid=$(h Chapar-File-Id)
        need "status $code, want 204" is "$code" 204
        need "Upload-Offset '$(h Upload-Offset)', want $csize" is "$(h Upload-Offset)" "$csize"
        need "Chapar-File-Id '$cid' is not 64 hex" hex 64 "$cid"
        hex 64 "$cid" && fetch_check "$tmp/par.1" "$cid"
        verdict "one $csize B PATCH with a good sha256 Upload-Checksum completes the upload"
else
        bad "one $csize B PATCH with a good sha256 Upload-Checksum" "POST gave no usable Location" "$n"
fi

printf hello >"$tmp/hello"
req POST "$base/files/" "${tus[@]}" -H 'Upload-Length: 5' "${octets[@]}" --data-binary @"$tmp/hello"
u=$(h Location)
need "status $code, want 201" is "$code" 201
need "Upload-Offset '$(h Upload-Offset)', want 5" is "$(h Upload-Offset)" 5
need "Location '$u' is not $base/files/<32 hex>" upload_url_ok "$u"
if upload_url_ok "$u"; then
        req HEAD "$u" "${tus[@]}"
        hid=$(h Chapar-File-Id)
        need "HEAD: Upload-Offset '$(h Upload-Offset)', want 5" is "$(h Upload-Offset)" 5
        need "HEAD: Chapar-File-Id '$hid' is not 64 hex" hex 64 "$hid"
        hex 64 "$hid" && fetch_check "$tmp/hello" "$hid"
fi
verdict "POST with a body (creation-with-upload) -> 201 with Upload-Offset, complete"

req POST "$base/files/" "${tus[@]}" -H 'Upload-Defer-Length: 1'
u=$(h Location)
need "status $code, want 201" is "$code" 201
need "Location '$u' is not $base/files/<32 hex>" upload_url_ok "$u"
if upload_url_ok "$u"; then
        req HEAD "$u" "${tus[@]}"
        need "HEAD: Upload-Defer-Length '$(h Upload-Defer-Length)', want 1" is "$(h Upload-Defer-Length)" 1
        need "HEAD: Upload-Length '$(h Upload-Length)' before it is known" eval '! has_h Upload-Length'
        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' -H 'Upload-Length: 5' "${octets[@]}" --data-binary @"$tmp/hello"
        need "PATCH with Upload-Length: status $code, want 204" is "$code" 204
        need "PATCH: Upload-Offset '$(h Upload-Offset)', want 5" is "$(h Upload-Offset)" 5
        need "PATCH: Chapar-File-Id '$(h Chapar-File-Id)' is not 64 hex" hex 64 "$(h Chapar-File-Id)"
        req HEAD "$u" "${tus[@]}"
        need "HEAD after: Upload-Length '$(h Upload-Length)', want 5" is "$(h Upload-Length)" 5
fi
verdict "Upload-Defer-Length: 1, then Upload-Length on the PATCH (creation-defer-length)"

req POST "$base/files/" "${tus[@]}" -H 'Upload-Length: 10'
u=$(h Location)
if upload_url_ok "$u"; then
        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/four"
        req DELETE "$u" "${tus[@]}"
        need "DELETE: status $code, want 204" is "$code" 204
        need "DELETE: Tus-Resumable '$(h Tus-Resumable)', want 1.0.0" is "$(h Tus-Resumable)" 1.0.0
        req HEAD "$u" "${tus[@]}"
        need "HEAD after DELETE: status $code, want 404" is "$code" 404
        req PATCH "$u" "${tus[@]}" -H 'Upload-Offset: 4' "${octets[@]}" --data-binary @"$tmp/four"
        need "PATCH after DELETE: status $code, want 404 or 410" eval '[ "$code" = 404 ] || [ "$code" = 410 ]'
        verdict "DELETE /files/<id> -> 204, then HEAD -> 404 (termination)"
else
        bad "DELETE /files/<id>" "POST gave no usable Location" "$n"
fi

req HEAD "$base/files/$(printf '%032d' 0)" "${tus[@]}"
need "status $code, want 404" is "$code" 404
verdict "HEAD /files/<unknown id> -> 404"
req PATCH "$base/files/$(printf '%032d' 0)" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/four"
need "status $code, want 404" is "$code" 404
verdict "PATCH /files/<unknown id> -> 404"
req HEAD "$base/files/nothex" "${tus[@]}"
need "status $code, want 404 or 400" eval '[ "$code" = 404 ] || [ "$code" = 400 ]'
verdict "HEAD /files/nothex -> 404 or 400"

# ---- CORS ------------------------------------------------------------------------------------

origin=(-H 'Origin: http://app.example')
expose_ok() { # the last reply lets a browser app read the tus and chapar headers
        local allow=$(h Access-Control-Allow-Origin) expose=$(h Access-Control-Expose-Headers) name
        need "no Access-Control-Allow-Origin" eval '[ -n "$allow" ]'
        need "Access-Control-Allow-Origin '$allow', want * or http://app.example" \
                eval '[ "$allow" = "*" ] || [ "$allow" = http://app.example ]'
        for name in Upload-Offset Upload-Length Location Tus-Resumable Chapar-File-Id; do
                need "Access-Control-Expose-Headers '$expose' lacks $name" lists "$expose" $name
        done
}
req POST "$base/files/" "${tus[@]}" "${origin[@]}" -H 'Upload-Length: 4'
u=$(h Location)
need "status $code, want 201" is "$code" 201
expose_ok
verdict "CORS: POST /files/ with Origin -> Allow-Origin, Expose-Headers"
if upload_url_ok "$u"; then
        req HEAD "$u" "${tus[@]}" "${origin[@]}"
        need "status $code, want 200" is "$code" 200
        expose_ok
        verdict "CORS: HEAD /files/<id> with Origin -> Allow-Origin, Expose-Headers"
fi
if hex 64 "$fid"; then
        req GET "$base/f/$fid" "${origin[@]}" -H 'Range: bytes=0-9'
        need "status $code, want 206" is "$code" 206
        need "no Access-Control-Allow-Origin" has_h Access-Control-Allow-Origin
        verdict "CORS: GET /f/<id> with Origin -> Access-Control-Allow-Origin"
fi
preflight() { # PATH METHOD HEADERS
        req OPTIONS "$base$1" "${origin[@]}" -H "Access-Control-Request-Method: $2" \
                -H "Access-Control-Request-Headers: $3"
        need "status $code, want 204" is "$code" 204
        need "no Access-Control-Allow-Origin" has_h Access-Control-Allow-Origin
        need "Access-Control-Allow-Methods '$(h Access-Control-Allow-Methods)' lacks $2" \
                lists_or_star "$(h Access-Control-Allow-Methods)" "$2"
        local x
        for x in ${3//,/ }; do
                need "Access-Control-Allow-Headers '$(h Access-Control-Allow-Headers)' lacks $x" \
                        lists_or_star "$(h Access-Control-Allow-Headers)" "$x"
        done
        verdict "CORS preflight: OPTIONS $1 for $2 with $3 -> 204"
}
preflight /files/ POST tus-resumable,upload-length,upload-metadata,authorization
upload_url_ok "$u" && preflight "${u#"$base"}" PATCH tus-resumable,upload-offset,content-type,upload-checksum,authorization
upload_url_ok "$u" && preflight "${u#"$base"}" DELETE tus-resumable
hex 64 "$fid" && preflight "/f/$fid" GET range,if-none-match

# ---- one writer per upload ----------------------------------------------------------------------

# a PATCH that streams into an upload holds it: a second PATCH meanwhile gets 423 Locked (which
# tus clients retry), and once the first is done the upload goes on from its offset. The first
# PATCH is a raw connection that has sent its head and 1000 of its 1000000 bytes and waits for
# the test, so the window is held open deterministically (no rate limit, no sleep); the second
# PATCH's body is 4 KiB, within what the relay reads and drops after a response that leaves a
# body unread (64 KiB), so curl sees the 423 instead of a connection cut mid-send (EPIPE).
req POST "$base/files/" "${tus[@]}" -H "Upload-Length: 2000000"
lock_url=$(h Location)
head -c 1000000 /dev/urandom >"$tmp/lock.part"
head -c 4096 "$tmp/lock.part" >"$tmp/lock.small"
exec {slow}<>"/dev/tcp/${addr%:*}/${addr#*:}"
printf 'PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n' \
        "${lock_url#"$base"}" "$addr" >&"$slow"
head -c 1000 "$tmp/lock.part" >&"$slow"
# the relay holds the upload once it has that head: HEAD answers 423 from then on (at most 10 s)
for _ in $(seq 200); do
        req HEAD "$lock_url" "${tus[@]}"
        [ "$code" = 423 ] && break
        sleep 0.05
done
need "HEAD while a PATCH streams: status $code, want 423" is "$code" 423
req PATCH "$lock_url" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/lock.small"
need "status $code, want 423" is "$code" 423
verdict "a PATCH while another streams into the same upload -> 423 Locked"
tail -c +1001 "$tmp/lock.part" >&"$slow"
timeout 20 cat <&"$slow" >"$tmp/slow.reply"
exec {slow}>&-
need "the streaming PATCH got '$(head -1 "$tmp/slow.reply" | tr -d '\r')', want 204" \
        grep -qa '^HTTP/1.1 204' "$tmp/slow.reply"
req HEAD "$lock_url" "${tus[@]}"
need "Upload-Offset $(h Upload-Offset), want 1000000" is "$(h Upload-Offset)" 1000000
verdict "after the first PATCH, the upload stands where it left it"

# ---- a body is never taken for a request -----------------------------------------------------

# raw FILE [ADDR]: FILE's bytes on one new connection; what comes back until the relay closes (at
# most 10 s) is request N's reply: $body the whole stream, $code its status codes in order
raw() {
        local fd to=${2:-$addr}
        n=$((n + 1))
        hdr=$tmp/x/$n.h
        body=$tmp/x/$n.b
        printf 'raw %s\n' "$(head -c 300 "$1" | tr '\r\n' '  ')" >"$tmp/x/$n.req"
        exec {fd}<>"/dev/tcp/${to%:*}/${to#*:}"
        cat "$1" >&"$fd"
        timeout 10 cat <&"$fd" >"$body"
        exec {fd}>&-
        code=$(grep -a '^HTTP/1\.1 [0-9]' "$body" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')
        sed -n '1,/^\r$/p' "$body" >"$hdr"
        printf '%s\n' "$code" >"$tmp/x/$n.code"
        return 0
}
crlf() { printf '%s\r\n' "$@"; } # LINE...: each line with CRLF

# request smuggling: a request answered without reading its body, whose body is itself a
# request (DELETE of a live upload, a fresh one each time), then a legitimate pipelined request.
# The body must be read and dropped (the next answer is the /healthz) or the connection closed;
# never executed.
victim_new() { # a fresh 10 B upload: $victim its URL, $vpath its path, $tmp/inner its DELETE
        req POST "$base/files/" "${tus[@]}" -H 'Upload-Length: 10'
        victim=$(h Location)
        vpath=${victim#"$base"}
        crlf "DELETE $vpath HTTP/1.1" "Host: $addr" 'Tus-Resumable: 1.0.0' '' >"$tmp/inner"
        upload_url_ok "$victim"
}
victim_alive() { # adds a reason unless the victim upload is still there
        req HEAD "$victim" "${tus[@]}"
        need "the body's DELETE was executed: HEAD of the upload says $code" is "$code" 200
}
crlf 'GET /healthz HTTP/1.1' "Host: $addr" 'Connection: close' '' >"$tmp/next"
smuggle() { # WANT METHOD PATH [HEADER...]: METHOD PATH carrying the DELETE, then /healthz
        local want=$1 method=$2 path=$3
        shift 3
        if ! victim_new; then
                bad "smuggling: $method $path" "POST gave no usable Location" "$n"
                return
        fi
        [ "$path" = VICTIM ] && path=$vpath
        { crlf "$method $path HTTP/1.1" "Host: $addr" "$@" "Content-Length: $(stat -c %s "$tmp/inner")" ''
          cat "$tmp/inner" "$tmp/next"; } >"$tmp/smuggle"
        raw "$tmp/smuggle"
        need "replies '$code', want '$want'" is "$code" "$want"
        victim_alive
        verdict "smuggling: $method $path with a DELETE as its body -> $want, the DELETE never runs"
}
zeros=$(printf '%032d' 0)
smuggle '405 200' PUT /files/
smuggle '405 200' POST /metrics
smuggle '405 200' POST /healthz
smuggle '405 200' POST VICTIM 'Tus-Resumable: 1.0.0'
smuggle '405 200' PUT "/f/$(printf '%064d' 0)"
smuggle '404 200' POST /no/such/path
smuggle '404 200' PATCH "/files/$zeros" 'Tus-Resumable: 1.0.0' 'Upload-Offset: 0' \
        'Content-Type: application/offset+octet-stream'
smuggle '412 200' PATCH VICTIM 'Upload-Offset: 0' 'Content-Type: application/offset+octet-stream'
smuggle '415 200' PATCH VICTIM 'Tus-Resumable: 1.0.0' 'Upload-Offset: 0'
smuggle '409 200' PATCH VICTIM 'Tus-Resumable: 1.0.0' 'Upload-Offset: 3' \
        'Content-Type: application/offset+octet-stream'
smuggle '413 200' POST /files/ 'Tus-Resumable: 1.0.0' 'Upload-Length: 5' \
        'Content-Type: application/offset+octet-stream'
smuggle '400' POST /files/ 'Tus-Resumable: 1.0.0'
smuggle '400' GET "/f/$(printf '%064d' 0)"
smuggle '400' HEAD VICTIM 'Tus-Resumable: 1.0.0'
smuggle '400' OPTIONS /files/
smuggle '400' GET /metrics
smuggle '400' DELETE "/files/$zeros" 'Tus-Resumable: 1.0.0'

# a deferred-length PATCH refused after its Upload-Length was parsed (body past it, a bad
# checksum): one answer, nothing recorded, the body dropped -- not read into the upload later
for bad_patch in 'Upload-Length: 5|Content-Length: 10|413' \
        'Upload-Length: 10|Upload-Checksum: md5 AAAA|Content-Length: 10|400'; do
        IFS='|' read -r -a hs <<<"$bad_patch"
        want=${hs[-1]}
        unset 'hs[-1]'
        req POST "$base/files/" "${tus[@]}" -H 'Upload-Defer-Length: 1'
        du=$(h Location)
        { crlf "PATCH ${du#"$base"} HTTP/1.1" "Host: $addr" 'Tus-Resumable: 1.0.0' 'Upload-Offset: 0' \
                'Content-Type: application/offset+octet-stream' "${hs[@]}" ''
          printf 0123456789; cat "$tmp/next"; } >"$tmp/r"
        raw "$tmp/r"
        [ "$want" = 400 ] && want_codes=400 || want_codes="$want 200"
        need "replies '$code', want '$want_codes'" is "$code" "$want_codes"
        req HEAD "$du" "${tus[@]}"
        need "HEAD after: Upload-Offset '$(h Upload-Offset)', want 0" is "$(h Upload-Offset)" 0
        need "HEAD after: Upload-Defer-Length '$(h Upload-Defer-Length)', want 1 (no length recorded)" \
                is "$(h Upload-Defer-Length)" 1
        verdict "deferred length, PATCH with ${hs[*]} -> $want only, nothing recorded"
done

# the body arrives only after the response (the relay drops it as it is received, 60000 bytes
# that hold a DELETE at their start), then a request on the same connection is answered
if victim_new; then
        n=$((n + 1))
        printf 'raw PUT /files/ (405), then its 60000 B body, then GET /healthz\n' >"$tmp/x/$n.req"
        exec {late}<>"/dev/tcp/${addr%:*}/${addr#*:}"
        crlf 'PUT /files/ HTTP/1.1' "Host: $addr" 'Content-Length: 60000' '' >&"$late"
        first=
        IFS= read -r -t 10 first <&"$late"
        while IFS= read -r -t 10 line <&"$late" && [ "$line" != $'\r' ]; do :; done
        { cat "$tmp/inner"; head -c $((60000 - $(stat -c %s "$tmp/inner"))) /dev/zero; cat "$tmp/next"; } >&"$late"
        timeout 10 cat <&"$late" >"$tmp/x/$n.b"
        exec {late}>&-
        code="$(printf %s "$first" | cut -d' ' -f2) $(grep -a '^HTTP/1\.1 [0-9]' "$tmp/x/$n.b" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
        printf '%s\n' "$code" >"$tmp/x/$n.code"
        need "replies '$code', want '405 200'" is "$code" '405 200'
        victim_alive
fi
verdict "smuggling: a body sent after the 405 is received and dropped, then the next request is served"

# more than the relay drops (64 KiB) is left unread: it answers, says it closes, and closes
if victim_new; then
        { crlf 'PUT /files/ HTTP/1.1' "Host: $addr" 'Content-Length: 100000' ''
          cat "$tmp/inner" "$tmp/next"; } >"$tmp/smuggle"
        raw "$tmp/smuggle"
        need "replies '$code', want '405' and a close" is "$code" 405
        need "no 'Connection: close' on the 405" grep -qi '^Connection: close' "$hdr"
        victim_alive
fi
verdict "smuggling: a 100000 B body left unread -> 405, Connection: close, closed"

# a client that writes its whole 16 MiB body before it reads (as most do) must get to read the
# answer: the relay closes after it (more than it drops is unread), but lingers, reading and
# dropping until the client is done, rather than resetting the connection under its writes
early=$(node -e '
const net = require("net"), [host, port] = process.argv[1].split(":");
const n = 16 << 20, s = net.connect(+port, host);
let got = "", err = "";
s.on("error", (e) => { err = e.code; });
s.on("data", (d) => { got += d.toString("latin1"); });
s.on("close", () => console.log((err ? "write-or-read-error " + err : "clean") + " " +
                                 (got.split("\r\n")[0] || "no-answer")) || process.exit(0));
s.write(`PUT /files/ HTTP/1.1\r\nHost: ${process.argv[1]}\r\nContent-Length: ${n}\r\n\r\n`);
s.end(Buffer.alloc(n));
setTimeout(() => { console.log("timeout " + got.split("\r\n")[0]); process.exit(0); }, 20000);
' "$addr")
need "the client saw '$early', want 'clean HTTP/1.1 405 Method Not Allowed'" \
        is "$early" "clean HTTP/1.1 405 Method Not Allowed"
verdict "a 16 MiB body written whole before reading: the client reads its 405 (lingering close)"

# a client that waits for 100 Continue may not send its body at all: close, never guess
if victim_new; then
        { crlf 'PUT /files/ HTTP/1.1' "Host: $addr" 'Expect: 100-continue' \
                "Content-Length: $(stat -c %s "$tmp/inner")" ''
          cat "$tmp/inner" "$tmp/next"; } >"$tmp/smuggle"
        raw "$tmp/smuggle"
        need "replies '$code', want '405' and a close" is "$code" 405
        need "no 'Connection: close' on the 405" grep -qi '^Connection: close' "$hdr"
        victim_alive
fi
verdict "smuggling: Expect: 100-continue answered 405 -> closed, the body is never read as a request"

# ---- operations ------------------------------------------------------------------------------

req GET "$base/healthz"
need "status $code, want 200" is "$code" 200
need "body '$(head -c 40 "$body")', want ok" eval '[ "$(tr -d "\r\n" <"$body")" = ok ]'
verdict "GET /healthz -> 200 ok"

req GET "$base/metrics"
need "status $code, want 200" is "$code" 200
need "Content-Type '$(h Content-Type)', want text/plain" eval '[[ $(h Content-Type) == text/plain* ]]'
need "no chapar_ sample line" grep -qE '^chapar_[a-zA-Z0-9_:]*(\{[^}]*\})? ' "$body"
bad_lines=$(grep -vE '^(#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEaINnf]+( -?[0-9]+)?|)$' "$body" | head -3)
need "lines that are not Prometheus text: $bad_lines" eval '[ -z "$bad_lines" ]'
verdict "GET /metrics -> 200 text/plain, Prometheus text with chapar_ samples"

# two requests over one connection: HTTP/1.1 keep-alive
reuse=$(curl -sS --max-time 20 -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
        "$base/healthz" "$base/healthz" 2>&1 | tr '\n' ' ')
if [ "$reuse" = "200 1 200 0 " ]; then
        ok "HTTP/1.1 keep-alive: two GETs on one connection"
else
        bad "HTTP/1.1 keep-alive: two GETs on one connection" "curl said: status connects = $reuse"
fi

req GET "$base/no/such/path"
need "status $code, want 404" is "$code" 404
verdict "GET /no/such/path -> 404"

# ---- Host and the request target (RFC 9112 3.2) ------------------------------------------------

crlf 'GET /healthz HTTP/1.1' 'Connection: close' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want 400" is "$code" 400
verdict "HTTP/1.1 without Host -> 400"
crlf 'GET /healthz HTTP/1.1' "Host: $addr" "Host: $addr" 'Connection: close' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want 400" is "$code" 400
verdict "two Host lines -> 400"
crlf 'GET /healthz HTTP/1.1' 'Host: a/b@c' 'Connection: close' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want 400" is "$code" 400
verdict "an invalid Host -> 400"
crlf 'GET /healthz HTTP/1.0' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want 200" is "$code" 200
verdict "HTTP/1.0 without Host -> 200"

crlf "GET http://$addr/healthz HTTP/1.1" "Host: $addr" '' "GET http://$addr/healthz?x=1 HTTP/1.1" \
        "Host: $addr" 'Connection: close' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want '200 200'" is "$code" '200 200'
verdict "absolute-form GET http://HOST/healthz (twice, pipelined) -> 200"
crlf 'POST http://relay.example:8443/files/ HTTP/1.1' "Host: $addr" 'Tus-Resumable: 1.0.0' \
        'Upload-Length: 1' 'Connection: close' '' >"$tmp/r"
raw "$tmp/r"
need "replies '$code', want 201" is "$code" 201
need "Location '$(h Location)' is not from the target's authority" \
        eval '[[ $(h Location) == http://relay.example:8443/files/* ]]'
verdict "absolute-form POST: 201, Location from the target's authority, not Host"

# ---- If-Range (RFC 9110 13.1.5) ----------------------------------------------------------------

if hex 64 "$fid"; then
        req GET "$base/f/$fid" -H 'Range: bytes=0-9' -H "If-Range: \"$fid\""
        need "status $code, want 206" is "$code" 206
        need "Content-Length '$(h Content-Length)', want 10" is "$(h Content-Length)" 10
        verdict "If-Range with the file's ETag -> the Range applies (206)"
        for ir in '"0000"' "W/\"$fid\"" 'Sat, 29 Oct 1994 19:43:31 GMT'; do
                req GET "$base/f/$fid" -H 'Range: bytes=0-9' -H "If-Range: $ir"
                need "status $code, want 200" is "$code" 200
                need "Content-Length '$(h Content-Length)', want $len" is "$(h Content-Length)" "$len"
                need "the bytes differ" cmp -s "$small" "$body"
                need "a Content-Range on the 200" eval '! has_h Content-Range'
                verdict "If-Range: $ir (not a strong match) -> the whole file (200)"
        done
fi

# ---- download names from tus Upload-Metadata ---------------------------------------------------

b64() { printf '%s' "$1" | base64 -w0; }
named_upload() { # METADATA: uploads 100 fresh random bytes with it; $named_fid the file id
        named_fid=
        head -c 100 /dev/urandom >"$tmp/named"
        req POST "$base/files/" "${tus[@]}" -H 'Upload-Length: 100' -H "Upload-Metadata: $1" \
                "${octets[@]}" --data-binary @"$tmp/named"
        need "POST: status $code, want 201" is "$code" 201
        [ "$code" = 201 ] || return 0
        req HEAD "$(h Location)" "${tus[@]}"
        named_fid=$(h Chapar-File-Id)
        need "no Chapar-File-Id" hex 64 "$named_fid"
        hex 64 "$named_fid" && req GET "$base/f/$named_fid"
        return 0
}
named_upload "filename $(b64 'report 2024.pdf'),filetype $(b64 'application/pdf')"
need "Content-Type '$(h Content-Type)', want application/pdf" is "$(h Content-Type)" application/pdf
need "Content-Disposition '$(h Content-Disposition)'" \
        is "$(h Content-Disposition)" 'attachment; filename="report 2024.pdf"'
need "the bytes differ" cmp -s "$tmp/named" "$body"
verdict "GET /f/<id> of a tus upload: Content-Type and Content-Disposition from its metadata"
req HEAD "$base/f/$named_fid"
need "HEAD: Content-Disposition '$(h Content-Disposition)'" \
        is "$(h Content-Disposition)" 'attachment; filename="report 2024.pdf"'
verdict "HEAD /f/<id> carries the same Content-Disposition"

named_upload "filename $(b64 'نامه "سری".txt'),filetype $(b64 'text/plain; charset=utf-8')"
need "Content-Type '$(h Content-Type)', want text/plain; charset=utf-8" is "$(h Content-Type)" 'text/plain; charset=utf-8'
need "Content-Disposition '$(h Content-Disposition)'" is "$(h Content-Disposition)" \
        "attachment; filename=\"____ _____.txt\"; filename*=UTF-8''%D9%86%D8%A7%D9%85%D9%87%20%22%D8%B3%D8%B1%DB%8C%22.txt"
verdict "a non-ASCII file name: an ASCII fallback and filename*=UTF-8'' percent-encoded"

named_upload "filename $(b64 $'x.txt\r\nSet-Cookie: a=b'),filetype $(b64 $'text/html\r\nX-Injected: 1')"
need "Content-Type '$(h Content-Type)', want application/octet-stream" is "$(h Content-Type)" application/octet-stream
need "a header was injected" eval '! has_h Set-Cookie && ! has_h X-Injected'
need "Content-Disposition '$(h Content-Disposition)'" \
        is "$(h Content-Disposition)" 'attachment; filename="x.txt__Set-Cookie: a=b"'
verdict "metadata with CR LF: no header injected, filetype refused (octet-stream), name made safe"

named_upload "filetype $(b64 'text/html'),note $(b64 x)"
need "Content-Type '$(h Content-Type)', want text/html" is "$(h Content-Type)" text/html
need "Content-Disposition '$(h Content-Disposition)', want attachment" is "$(h Content-Disposition)" attachment
need "X-Content-Type-Options '$(h X-Content-Type-Options)', want nosniff" is "$(h X-Content-Type-Options)" nosniff
verdict "a filetype without a filename (text/html): served as an attachment, never inline"

named_upload "filetype $(b64 'not a type'),note $(b64 x)"
need "Content-Type '$(h Content-Type)', want application/octet-stream" is "$(h Content-Type)" application/octet-stream
need "a Content-Disposition without a filename" eval '! has_h Content-Disposition'
verdict "no filename and an invalid filetype: application/octet-stream, no Content-Disposition"

# ---- Tus-Max-Size with a deferred length: a second relay with tus_max_size = 1 MiB ----------

printf '[server]\ntus_max_size = 1M\n' >"$tmp/small.ini"
"$chapard" --config "$tmp/small.ini" --data "$tmp/data2" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
        --ready-file "$tmp/ready2" --log-level warn 2>"$tmp/relay2.log" &
pid2=$!
wait_for 30 "grep -q '^pubkey=' '$tmp/ready2' 2>/dev/null || ! kill -0 $pid2 2>/dev/null"
addr2=$(sed -n 's/^http=//p' "$tmp/ready2" 2>/dev/null)
if [[ $addr2 =~ ^127\.0\.0\.1:[0-9]+$ ]]; then
        base2=http://$addr2
        head -c 700000 /dev/urandom >"$tmp/d700k"
        head -c 348576 /dev/urandom >"$tmp/drest" # 700000 + 348576 = 1 MiB exactly
        head_only() { # PATH CONTENT-LENGTH [HEADER...]: a PATCH head alone, its body never sent
                local path=$1 cl=$2
                shift 2
                crlf "PATCH $path HTTP/1.1" "Host: $addr2" 'Tus-Resumable: 1.0.0' \
                        'Content-Type: application/offset+octet-stream' "$@" "Content-Length: $cl" \
                        '' >"$tmp/headonly"
                raw "$tmp/headonly" "$addr2"
        }
        req POST "$base2/files/" "${tus[@]}" -H 'Upload-Defer-Length: 1'
        du=$(h Location)
        need "POST: status $code, want 201" is "$code" 201
        if [[ $du == "$base2/files/"* ]]; then
                dpath=${du#"$base2"}
                req PATCH "$du" "${tus[@]}" -H 'Upload-Offset: 0' "${octets[@]}" --data-binary @"$tmp/d700k"
                need "700000 B PATCH: status $code, want 204" is "$code" 204
                need "700000 B PATCH: Upload-Offset '$(h Upload-Offset)', want 700000" is "$(h Upload-Offset)" 700000
                verdict "deferred length, tus_max_size 1 MiB: a 700000 B PATCH -> 204"

                # the relay answers from the head, so the 413 is seen whatever the body's size
                head_only "$dpath" 400000 'Upload-Offset: 700000'
                need "a PATCH to 1100000 B: replies '$code', want 413" is "$code" 413
                head_only "$dpath" 5242880 'Upload-Offset: 700000'
                need "a 5 MiB PATCH: replies '$code', want 413" is "$code" 413
                req HEAD "$du" "${tus[@]}"
                need "HEAD after the 413s: Upload-Offset '$(h Upload-Offset)', want 700000" is "$(h Upload-Offset)" 700000
                verdict "deferred length: a PATCH that would pass Tus-Max-Size -> 413, nothing stored"

                req PATCH "$du" "${tus[@]}" -H 'Upload-Offset: 700000' -H 'Upload-Length: 2000000' "${octets[@]}"
                need "Upload-Length over the max: status $code, want 413" is "$code" 413
                req HEAD "$du" "${tus[@]}"
                need "HEAD after: Upload-Defer-Length '$(h Upload-Defer-Length)', want 1" is "$(h Upload-Defer-Length)" 1
                verdict "deferred length: an Upload-Length declared over Tus-Max-Size -> 413"

                req PATCH "$du" "${tus[@]}" -H 'Upload-Offset: 700000' -H 'Upload-Length: 1048576' \
                        "${octets[@]}" --data-binary @"$tmp/drest"
                need "the last PATCH: status $code, want 204" is "$code" 204
                need "the last PATCH: Upload-Offset '$(h Upload-Offset)', want 1048576" is "$(h Upload-Offset)" 1048576
                need "the last PATCH: no Chapar-File-Id" hex 64 "$(h Chapar-File-Id)"
                verdict "deferred length: up to exactly Tus-Max-Size -> 204, complete"
        else
                verdict "deferred length, tus_max_size 1 MiB: POST"
        fi
        crlf 'POST /files/ HTTP/1.1' "Host: $addr2" 'Tus-Resumable: 1.0.0' 'Upload-Defer-Length: 1' \
                'Content-Type: application/offset+octet-stream' 'Content-Length: 1048577' '' >"$tmp/headonly"
        raw "$tmp/headonly" "$addr2"
        need "replies '$code', want 413" is "$code" 413
        verdict "deferred length: creation-with-upload with a body over Tus-Max-Size -> 413"
else
        bad "a second relay (tus_max_size 1M) did not start" "$(tail -3 "$tmp/relay2.log" | tr '\n' ' ')"
fi
[ -n "$pid2" ] && kill -TERM "$pid2" 2>/dev/null && wait "$pid2"
pid2=

# ---- stop ------------------------------------------------------------------------------------

stop_relay
if [ "$rc" = 0 ]; then ok "chapard exits 0 on SIGTERM"; else bad "chapard exits 0 on SIGTERM" "exit status $rc"; fi
if "$chapard" verify --data "$tmp/data" >"$tmp/verify.out" 2>&1; then
        ok "chapard verify: the store is clean after the run"
else
        bad "chapard verify: the store is clean after the run" "$(tail -5 "$tmp/verify.out" | tr '\n' ' ')"
fi

if [ "$failed" -gt 0 ] && [ -s "$tmp/relay.log" ]; then
        echo "# chapard's log (last 30 lines):"
        tail -30 "$tmp/relay.log" | sed 's/^/#   /'
fi
echo "# $((SECONDS - started)) s"
finish
