#!/usr/bin/env bash
# MIMI ExternalPart descriptors (docs/interop.md), against a real chapard on port 0: put --json
# emits "mimi_external_part" with the draft's field names and chapar's values (checked here
# independently: the key and url are the ticket's halves, size and contentHash are the file's
# own, from stat and sha256sum); get takes the descriptor as a file, on stdin (-), as its JSON
# text, or the whole put --json output, and writes the file byte for byte, also with -o -; stat
# takes it too. Malformed descriptors (not JSON, cut short, a member missing or twice, a key of
# the wrong size, another encAlg or hashAlg, a nonce, a url with the key in it) exit 1 before
# any connection; a contentHash or size that does not match what arrived exits 3. No case
# leaves a file behind. A file touched while its put runs (the upload held by cutproxy) gets no
# descriptor: put --json exits 4.
# Usage: mimi_cli.sh CHAPARD CHAPAR CUTPROXY
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/lib.sh"
lib_tmp mimi
py=/usr/bin/python3
[ -x "$py" ] || py=python3

relay_start R --log-level warn
raddr=${addr[R]}

files_in() { (cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort); }
recv() { mktemp -d "$tmp/recv-XXXXXX"; } # a fresh empty receiving directory
field() { # JSON-FILE KEY: the value of mimi_external_part.KEY (JSON-encoded)
        "$py" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["mimi_external_part"].get(sys.argv[2], "<missing>")))' "$1" "$2" 2>/dev/null
}

mkdir -p "$tmp/send"
head -c 300000 /dev/urandom >"$tmp/send/report.bin"
size=$(stat -c %s "$tmp/send/report.bin")
sum=$(sha256sum "$tmp/send/report.bin" | cut -d' ' -f1)

# --- put --json ------------------------------------------------------------------------------
"$chapar" put "$tmp/send/report.bin" --relay "$raddr" --trust-new-relay --json \
        --type 'text/plain; charset=utf-8' --name 'report "Q4".txt' >"$tmp/put.json" 2>"$tmp/err"
rc=$?
check "put --type --name --json exits 0 (exit $rc: $(head -c 300 "$tmp/err"))" "[ $rc -eq 0 ]"
check "its output is one JSON object with mimi_external_part" \
        "'$py' -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d[\"mimi_external_part\"], dict)' '$tmp/put.json'"
ticket=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ticket"])' "$tmp/put.json")
check "cardinality is 2 (external)" "[ \"\$(field '$tmp/put.json' cardinality)\" = 2 ]"
check "url is the ticket without its key: $(field "$tmp/put.json" url)" \
        "[ \"\$(field '$tmp/put.json' url)\" = '\"${ticket%%#*}\"' ]"
check "key is the ticket's file key (64 hex digits)" \
        "[ \"\$(field '$tmp/put.json' key)\" = '\"${ticket##*#}\"' ] && [ \${#ticket} -gt 70 ]"
check "size is the file's size ($size): $(field "$tmp/put.json" size)" \
        "[ \"\$(field '$tmp/put.json' size)\" = $size ]"
check "contentHash is the file's SHA-256 (sha256sum)" \
        "[ \"\$(field '$tmp/put.json' contentHash)\" = '\"$sum\"' ]"
check "hashAlg is 1 (sha-256)" "[ \"\$(field '$tmp/put.json' hashAlg)\" = 1 ]"
check "encAlg is 51714 (private use: chapar's format v2)" \
        "[ \"\$(field '$tmp/put.json' encAlg)\" = 51714 ]"
check "nonce and aad are empty" \
        "[ \"\$(field '$tmp/put.json' nonce)\" = '\"\"' ] && [ \"\$(field '$tmp/put.json' aad)\" = '\"\"' ]"
check "contentType is what --type gave: $(field "$tmp/put.json" contentType)" \
        "[ \"\$(field '$tmp/put.json' contentType)\" = '\"text/plain; charset=utf-8\"' ]"
check "filename is --name's, escaped: $(field "$tmp/put.json" filename)" \
        "[ \"\$(field '$tmp/put.json' filename)\" = '\"report \\\"Q4\\\".txt\"' ]"
check "description is empty" "[ \"\$(field '$tmp/put.json' description)\" = '\"\"' ]"
now=$(date +%s)
exp=$(field "$tmp/put.json" expires)
check "expires is the relay's expiry, in the future ($exp, now $now)" \
        "[ \"$exp\" -gt $now ] 2>/dev/null"
"$chapar" put "$tmp/send/report.bin" --relay "$raddr" --json >"$tmp/put2.json" 2>/dev/null
check "without --type contentType is application/octet-stream, filename the base name" \
        "[ \"\$(field '$tmp/put2.json' contentType)\" = '\"application/octet-stream\"' ] && [ \"\$(field '$tmp/put2.json' filename)\" = '\"report.bin\"' ]"
"$py" -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["mimi_external_part"], open(sys.argv[2], "w"))' \
        "$tmp/put.json" "$tmp/part.json"

# a file that changes (here only its time) between the descriptor's hash and the end of the put:
# the upload is held after 300 kB, the file touched, the upload let go
head -c 1000000 /dev/urandom >"$tmp/send/moving.bin"
proxy_start C "${addr[R]##*:}"
proxy_hold C 300000 up
"$chapar" put "$tmp/send/moving.bin" --relay "127.0.0.1:${proxy_port[C]}" --trust-new-relay \
        --connections 1 --chunk-size 65536 --json >"$tmp/moving.json" 2>"$tmp/moving.err" &
pp=$!
lib_track $pp
proxy_held C
touch -m -d '2001-01-01 00:00:00' "$tmp/send/moving.bin"
proxy_release C
wait $pp
rc=$?
check "put --json of a file touched during the put exits 4, no descriptor (exit $rc: $(head -c 200 "$tmp/moving.err"))" \
        "[ $rc -eq 4 ] && [ ! -s '$tmp/moving.json' ] && grep -q 'no descriptor' '$tmp/moving.err'"

# --- get DESCRIPTOR --------------------------------------------------------------------------
d=$(recv)
out=$("$chapar" get "$tmp/part.json" -o "$d/a" 2>"$tmp/err")
rc=$?
check "get FILE-WITH-DESCRIPTOR exits 0 (exit $rc: $(head -c 300 "$tmp/err"))" "[ $rc -eq 0 ]"
check "and writes the file byte for byte ($out)" "cmp -s '$tmp/send/report.bin' '$d/a'"
out=$("$chapar" get - -o "$d/b" <"$tmp/put.json" 2>"$tmp/err")
rc=$?
check "get - with the whole put --json output on stdin exits 0 (exit $rc: $(head -c 300 "$tmp/err"))" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/send/report.bin' '$d/b'"
out=$("$chapar" get "$(cat "$tmp/part.json")" -o "$d/c" 2>"$tmp/err")
rc=$?
check "get '{...}' (the JSON text itself) exits 0 (exit $rc: $(head -c 300 "$tmp/err"))" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/send/report.bin' '$d/c'"
out=$(cd "$d" && "$chapar" get "$tmp/part.json" 2>"$tmp/err")
rc=$?
check "get DESCRIPTOR without -o takes the sender's name, made safe ($out, exit $rc)" \
        "[ $rc -eq 0 ] && [ \"\${out#report }\" != \"\$out\" ] && cmp -s '$tmp/send/report.bin' \"$d/\$out\""
"$chapar" get "$tmp/part.json" -o - >"$tmp/stdout.bin" 2>"$tmp/err"
rc=$?
check "get DESCRIPTOR -o - writes the file to stdout (exit $rc: $(head -c 300 "$tmp/err"))" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/send/report.bin' '$tmp/stdout.bin'"
"$chapar" get "$tmp/part.json" -o - 2>"$tmp/err" | head -c 10 >/dev/null
rc=${PIPESTATUS[0]}
check "get DESCRIPTOR -o - into a pipe closed early fails with exit 4 (exit $rc)" "[ $rc -eq 4 ]"
"$chapar" stat "$tmp/part.json" --json >"$tmp/stat.json" 2>"$tmp/err"
rc=$?
check "stat DESCRIPTOR shows the file (exit $rc: $(head -c 200 "$tmp/stat.json"))" \
        "[ $rc -eq 0 ] && grep -q '\"size\":$size' '$tmp/stat.json' && grep -q 'text/plain' '$tmp/stat.json'"
out=$("$chapar" get "$ticket" -o "$d/t" 2>"$tmp/err")
check "get TICKET still works" "cmp -s '$tmp/send/report.bin' '$d/t'"

# --- descriptors that are wrong ---------------------------------------------------------------
# mutate NAME PYTHON-EXPR-ON-p: writes $tmp/NAME.json, part.json changed by the statement
mutate() {
        "$py" -c "import json,sys; p=json.load(open(sys.argv[1])); $2; json.dump(p, open(sys.argv[2], 'w'))" \
                "$tmp/part.json" "$tmp/$1.json"
}
# refused CASE EXIT WORD DESCRIPTOR-FILE [get args]: get exits EXIT, says WORD, writes nothing
refused() {
        local what=$1 want=$2 word=$3 desc=$4 r
        shift 4
        r=$(recv)
        (cd "$r" && "$chapar" get "$desc" "$@" >"$tmp/out" 2>"$tmp/err")
        local got=$?
        check "$what: exit $want (exit $got: $(head -c 240 "$tmp/err"))" \
                "[ $got -eq $want ] && grep -qi -- '$word' '$tmp/err'"
        check "$what: nothing written ($(files_in "$r" | tr '\n' ' '))" "[ -z \"\$(files_in '$r')\" ]"
}

printf '{"url": "%s", "size": ' "${ticket%%#*}" >"$tmp/notjson.json"
refused "not JSON (cut inside)" 1 'descriptor' "$tmp/notjson.json"
head -c $(($(stat -c %s "$tmp/part.json") - 2)) "$tmp/part.json" >"$tmp/trunc.json"
refused "the descriptor cut short by two bytes" 1 'descriptor' "$tmp/trunc.json"
printf '[1,2]' >"$tmp/array.json"
refused "a JSON array" 1 'object' "$tmp/array.json"
mutate nokey 'del p["key"]'
refused "no key member" 1 'key' "$tmp/nokey.json"
mutate nohash 'del p["contentHash"]'
refused "no contentHash member" 1 'contentHash' "$tmp/nohash.json"
mutate nourl 'del p["url"]'
refused "no url member" 1 'url' "$tmp/nourl.json"
mutate shortkey 'p["key"]=p["key"][:62]'
refused "a 31-byte key" 1 'key' "$tmp/shortkey.json"
mutate longkey 'p["key"]=p["key"]+"00"'
refused "a 33-byte key" 1 'key' "$tmp/longkey.json"
mutate aesgcm 'p["encAlg"]=1'
refused "encAlg 1 (AES-128-GCM)" 1 'encAlg' "$tmp/aesgcm.json"
mutate plain 'p["encAlg"]=0'
refused "encAlg 0 (not encrypted)" 1 'encAlg' "$tmp/plain.json"
mutate strenc 'p["encAlg"]="51714"'
refused "encAlg as a string" 1 'encAlg' "$tmp/strenc.json"
mutate sha512 'p["hashAlg"]=8'
refused "hashAlg 8 (sha-512)" 1 'hashAlg' "$tmp/sha512.json"
mutate nonce 'p["nonce"]="00"*12'
refused "a nonce" 1 'nonce' "$tmp/nonce.json"
mutate withkey 'p["url"]=p["url"]+"#"+p["key"]'
refused "a url with the key after #" 1 'url' "$tmp/withkey.json"
mutate badurl 'p["url"]="https://example.com/f/x"'
refused "an https url" 1 'url' "$tmp/badurl.json"
k=${ticket##*#}
sed "s/^{/{\"key\":\"$k\",/" "$tmp/part.json" >"$tmp/twice.json"
refused "key twice" 1 'twice' "$tmp/twice.json"
printf '%s x' "$(cat "$tmp/part.json")" >"$tmp/trail.json"
refused "bytes after the object" 1 'follows' "$tmp/trail.json"
refused "no such descriptor file" 1 'descriptor' "$tmp/absent.json"
mutate tampered 'h=p["contentHash"]; p["contentHash"]=("1" if h[0]!="1" else "2")+h[1:]'
refused "a contentHash that is not the file's" 3 'contentHash' "$tmp/tampered.json"
refused "a contentHash that is not the file's, -o PATH" 3 'contentHash' "$tmp/tampered.json" -o out.bin
mutate bigger 'p["size"]=p["size"]+1'
refused "a size that is not the file's" 3 'size' "$tmp/bigger.json"
"$chapar" get "$tmp/tampered.json" -o - >"$tmp/stdout2.bin" 2>"$tmp/err"
rc=$?
check "-o - with a contentHash that is not the file's exits 3 (exit $rc)" \
        "[ $rc -eq 3 ] && grep -q contentHash '$tmp/err'"
mutate wrongkey 'k=p["key"]; p["key"]=("1" if k[0]!="1" else "2")+k[1:]'
refused "another key" 3 'integrity\|verif' "$tmp/wrongkey.json"

finish
