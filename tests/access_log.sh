#!/usr/bin/env bash
# The access log (--access-log, --log-format) of a real chapard with a tenant: the same traffic,
# 6 HTTP requests (a tus POST with a token, a file name with a newline, quotes, '=', a backslash
# and bytes outside ASCII in its Upload-Metadata and a User-Agent with quotes and a backslash;
# its PATCH; a HEAD; the download; a 404; a POST without a token) and 2 native connections
# (chapar put with a token: OPEN, COMMIT, STAT; chapar get: GET_MANIFEST; a SESSION line each,
# with the CHUNK and GET_CHUNK counts), gives exactly those 12 lines with the right fields, in
# logfmt and in JSON (each JSON line parsed by python3's json.loads, each logfmt line by a
# strict parser here); the hostile values come back byte for byte and never break a line.
# After logrotate's rename, SIGUSR1 and then SIGHUP make the relay write to a new file, and the
# lines before the signal stay in the old one. Without --access-log nothing is written.
# Under load (chapar-bench: 300 small uploads on each face, 8 connections, 2 loop threads) every
# line is whole and parses, one POST line per tus upload and one OPEN per native one.
# Usage: access_log.sh CHAPARD CHAPAR CHAPAR-BENCH      (needs curl and python3)
set -uo pipefail
chapard=$1
chapar=$2
bench=$3
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
for tool in curl python3; do
        command -v "$tool" >/dev/null || { echo "access_log.sh: $tool is not installed (scripts/deps --test)" >&2; exit 1; }
done
lib_tmp accesslog
unset CHAPAR_TOKEN

line=$("$chapard" tenant-key --out "$tmp/k" | tail -n 1)
cat >"$tmp/relay.ini" <<EOF
[tenant "acme"]
$line
EOF

# the hostile file name, as bytes (python reads it back from this file to compare)
printf 'a "b"\nc=d\\e\r\xff\x01 f' >"$tmp/name"
meta="filename $(base64 -w0 <"$tmp/name")"
agent='evil"agent\ x'
head -c 150000 /dev/urandom >"$tmp/f"

traffic() { # RELAY: the 6 HTTP requests and 2 native connections
        local base=http://${http[$1]} tok loc fid
        tok=$("$chapard" token --key "$tmp/k" --tenant acme --subject alice --audience "${key[$1]}")
        loc=$(curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 5' \
                -H "Authorization: Bearer $tok" -H "Upload-Metadata: $meta" -A "$agent" "$base/files/" |
                tr -d '\r' | sed -n 's/^Location: //Ip')
        upload[$1]=${loc##*/}
        fid=$(curl -sS -D - -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
                -H 'Content-Type: application/offset+octet-stream' --data-binary hello "$loc" |
                tr -d '\r' | sed -n 's/^Chapar-File-Id: //Ip')
        file[$1]=$fid
        curl -sS -o /dev/null -I -H 'Tus-Resumable: 1.0.0' "$loc"
        curl -sS -o /dev/null "$base/f/$fid"
        curl -sS -o /dev/null "$base/nope"
        curl -sS -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 5' "$base/files/"
        ticket[$1]=$("$chapar" put "$tmp/f" --relay "${addr[$1]}" --relay-key "${key[$1]}" \
                --token "$tok" 2>"$tmp/put.err" | tail -n 1)
        "$chapar" get "${ticket[$1]}" -o "$tmp/f.got.$1" >/dev/null 2>"$tmp/get.err"
}
declare -A upload file ticket

# ---- off by default --------------------------------------------------------------------------

relay_start off --config "$tmp/relay.ini" || { bad "chapard starts"; finish; exit 1; }
traffic off
check "off: the traffic went through (the download matches)" "cmp -s '$tmp/f' '$tmp/f.got.off'"
relay_stop off
check "off by default: no line on stderr" "! grep -q 'face=' '$tmp/off.log'"
check "off by default: no line in any file" "! grep -rlq 'face=native' '$tmp'"

# ---- the checker -----------------------------------------------------------------------------

cat >"$tmp/check.py" <<'EOF'
import json, re, sys
path, fmt, upload, fid, name_file, agent, tmp = sys.argv[1:8]
name = open(name_file, 'rb').read()

def logfmt(line):
    """A strict logfmt reader: key=bare or key="quoted" with \\" \\\\ \\n \\uXXXX escapes."""
    out, i = {}, 0
    while i < len(line):
        m = re.match(r'([a-z_]+)=', line[i:])
        if not m:
            raise ValueError('no key at %d' % i)
        k = m.group(1); i += m.end()
        if i < len(line) and line[i] == '"':
            i += 1; v = ''
            while line[i] != '"':
                if line[i] == '\\':
                    c = line[i + 1]
                    if c == 'u':
                        v += chr(int(line[i + 2:i + 6], 16)); i += 6; continue
                    v += {'n': '\n', '"': '"', '\\': '\\'}[c]; i += 2; continue
                if ord(line[i]) < 0x20 or ord(line[i]) >= 0x7f:
                    raise ValueError('raw control byte')
                v += line[i]; i += 1
            i += 1
        else:
            m = re.match(r'[^ ]*', line[i:]); v = m.group(0); i += m.end()
            if any(ch in v for ch in '"=\\') or any(ord(ch) < 0x21 or ord(ch) >= 0x7f for ch in v):
                raise ValueError('bare value needs quotes: %r' % v)
        if k in out:
            raise ValueError('key twice: ' + k)
        out[k] = v
        if i < len(line):
            if line[i] != ' ':
                raise ValueError('no space at %d' % i)
            i += 1
    return out

data = open(path, 'rb').read()
assert data.endswith(b'\n'), 'the last line is whole'
lines = data.decode('ascii').split('\n')[:-1]   # every byte escaped: the file is ASCII
recs = [json.loads(l) if fmt == 'json' else logfmt(l) for l in lines]
fails = []
def want(cond, what):
    if not cond:
        fails.append(what)
want(len(recs) == 12, '12 lines, not %d' % len(recs))
keys = ['time', 'face', 'addr', 'tenant', 'subject', 'method', 'path', 'id', 'bytes_in',
        'bytes_out', 'status', 'duration']
def num(r, k):
    v = r[k]
    if fmt == 'json':
        want(isinstance(v, int) or k == 'duration', '%s is a JSON number' % k)
    return float(v) if k == 'duration' else int(v)
for r in recs:
    want(all(k in r for k in keys), 'every field in %r' % r)
    want(re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', str(r['time'])), 'time')
    want(re.fullmatch(r'127\.0\.0\.1:\d+', r['addr']), 'addr %r' % r['addr'])
    want(0 <= num(r, 'duration') < 60, 'duration')
http = [r for r in recs if r['face'] == 'http']
nat = [r for r in recs if r['face'] == 'native']
want(len(http) == 6 and len(nat) == 6, '6 http + 6 native lines')
st = lambda r: int(r['status'])
if len(http) == 6:
    post, patch, head, get, nope, anon = http
    want(post['method'] == 'POST' and st(post) == 201 and post['path'] == '/files/', 'POST 201')
    want(post['tenant'] == 'acme' and post['subject'] == 'alice', 'POST tenant/subject')
    want(post['id'] == upload, 'POST id is the upload id')
    want(post.get('name', '').encode('latin-1') == name, 'the hostile name back byte for byte: %r' % post.get('name'))
    want(post.get('agent') == agent, 'the hostile agent back: %r' % post.get('agent'))
    want(patch['method'] == 'PATCH' and st(patch) == 204 and patch['id'] == upload, 'PATCH 204')
    want(num(patch, 'bytes_in') > 5 and num(patch, 'bytes_out') > 0, 'PATCH bytes')
    want(head['method'] == 'HEAD' and st(head) == 200 and head['id'] == upload, 'HEAD 200')
    want(get['method'] == 'GET' and st(get) == 200 and get['id'] == fid, 'GET /f 200')
    want(num(get, 'bytes_out') > 5, 'GET bytes_out counts the body')
    want(nope['method'] == 'GET' and st(nope) == 404 and nope['path'] == '/nope', '404')
    want(anon['method'] == 'POST' and st(anon) == 401 and anon['tenant'] == '', 'POST 401')
    want(all(r['status'] != 'ok' for r in http), 'HTTP statuses are numbers')
methods = sorted(r['method'] for r in nat)
want(methods == sorted(['OPEN', 'COMMIT', 'STAT', 'SESSION', 'GET_MANIFEST', 'SESSION']),
     'native lines: %r' % methods)
for r in nat:
    want(r['status'] == 'ok', 'native %s ok' % r['method'])
    if r['method'] in ('OPEN', 'COMMIT', 'STAT'):
        want(r['tenant'] == 'acme' and r['subject'] == 'alice', 'native tenant/subject')
    if r['method'] in ('OPEN', 'STAT', 'GET_MANIFEST'):
        want(len(r['id']) == 64, 'a file id on ' + r['method'])
    if r['method'] == 'COMMIT':
        want(len(r['id']) == 32, 'an upload id on COMMIT')
sess = [r for r in nat if r['method'] == 'SESSION']
if len(sess) == 2:
    put, get = sess
    want(int(put['chunks_in']) >= 1 and int(put['chunks_out']) == 0, 'put SESSION chunks')
    want(int(put['bytes_in']) > 150000, 'put SESSION bytes_in')
    want(int(get['chunks_out']) >= 1 and int(get['bytes_out']) > 150000, 'get SESSION chunks')
for f in fails:
    print('  ' + f)
sys.exit(1 if fails else 0)
EOF

run() { # FORMAT: a relay logging in FORMAT, the traffic, the checks
        local r=$1
        relay_start "$r" --config "$tmp/relay.ini" --access-log "$tmp/$r.access" --log-format "$r" ||
                { bad "$r: chapard starts"; return; }
        traffic "$r"
        relay_stop "$r" # every line is written by the time it exits
        check "$r: 12 lines with the right fields (cat $tmp/$r.access)" \
                "python3 '$tmp/check.py' '$tmp/$r.access' $r '${upload[$r]}' '${file[$r]}' '$tmp/name' '$agent' '$tmp'"
}
run logfmt
run json
check "json: the error log is JSON too" "python3 -c '
import json, sys
for l in open(sys.argv[1]): json.loads(l)' '$tmp/json.log'"

# ---- under load: two loop threads writing at once -------------------------------------------

relay_start load --threads 2 --sync none --access-log "$tmp/load.access" --log-format json ||
        { bad "load: chapard starts"; finish; exit 1; }
"$bench" --native "${addr[load]}" --http "${http[load]}" --scenario upload --files 300 --size 2048 \
        --conns 8 >"$tmp/bench.out" 2>&1 || bad "load: chapar-bench: $(tail -3 "$tmp/bench.out")"
relay_stop load
check "load: every line whole and JSON, 300 tus POSTs and 300 native OPENs" "python3 -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1], \"rb\").read().decode(\"ascii\").split(\"\\n\")[:-1]]
post = sum(r[\"method\"] == \"POST\" and r[\"status\"] == 201 for r in recs)
opens = sum(r[\"method\"] == \"OPEN\" and r[\"status\"] == \"ok\" for r in recs)
print(\"# %d lines, %d POST 201, %d OPEN ok\" % (len(recs), post, opens))
sys.exit(0 if post == 300 and opens == 300 else 1)' '$tmp/load.access'"

# ---- reopened for logrotate ------------------------------------------------------------------

relay_start rot --access-log "$tmp/rot.access" || { bad "rot: chapard starts"; finish; exit 1; }
curl -sS -o /dev/null "http://${http[rot]}/healthz?first"
wait_file "$tmp/rot.access" 'first' 10
for sig in USR1 HUP; do
        mv "$tmp/rot.access" "$tmp/rot.access.$sig"
        kill -"$sig" "${pid[rot]}"
        wait_for 10 "[ -e '$tmp/rot.access' ]"
        check "$sig: a new file is opened" "[ -e '$tmp/rot.access' ]"
        curl -sS -o /dev/null "http://${http[rot]}/healthz?after-$sig"
        check "$sig: the next line lands in the new file" "wait_file '$tmp/rot.access' 'after-$sig' 10"
        check "$sig: the old file keeps what came before, and only that" \
                "[ \$(grep -c . '$tmp/rot.access.$sig') -eq 1 ] && ! grep -q 'after-$sig' '$tmp/rot.access.$sig'"
done
relay_stop rot

# ---- stderr ----------------------------------------------------------------------------------

relay_start err --access-log - || { bad "err: chapard starts"; finish; exit 1; }
curl -sS -o /dev/null "http://${http[err]}/healthz"
relay_stop err
check "--access-log -: the line goes to stderr" "grep -q 'face=http .*path=/healthz' '$tmp/err.log'"

finish
