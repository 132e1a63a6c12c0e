#!/usr/bin/env bash
# bench/xmpp.sh — the XMPP external-upload path (Prosody's mod_http_upload_external, ejabberd's
# external secret) beside the plain tus path, on one chapard (--sync full), with one client
# (curl), the same sizes, several rounds, medians and the ratio XMPP / tus: of the medians, and
# the median of each round's own ratio (its two figures taken one right after the other).
#
#   uploads    PUT /xmpp/NAME/UUID/FILE?v=HMAC (computed here with openssl, as the module does)
#              against tus: POST /files/ + one PATCH of the whole file
#   downloads  GET /xmpp/NAME/UUID/FILE against GET /f/<file id>, of the same stored file
#
# Every upload sends fresh bytes from /dev/urandom (nothing deduplicates); the two kinds take
# turns going first. Throughput is size over curl's %{time_total} (a tus upload: POST + PATCH),
# MB = 10^6 bytes.
#
# Usage: bench/xmpp.sh [--mib N] [--rounds R] [--quick]
#   --mib N      file size in MiB (default 256)
#   --rounds R   rounds per measurement (default 3); medians are reported
#   --quick      16 MiB, 1 round (a smoke test)
# Environment: CHAPAR_BIN  where chapard is (default build/bin, built with scripts/build Release
#              build when missing)
# Serves and connects on 127.0.0.1 only; its chapard and temporary directory go away on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mib=256
rounds=3
while [ $# -gt 0 ]; do
        case $1 in
        --mib) mib=${2:?--mib needs a number}; shift 2 ;;
        --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
        --quick) mib=16; rounds=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/xmpp.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
        esac
done
[[ $mib =~ ^[1-9][0-9]*$ ]] || { echo "bench/xmpp.sh: --mib wants a positive integer" >&2; exit 1; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench/xmpp.sh: --rounds wants a positive integer" >&2; exit 1; }
bytes=$((mib * 1048576))
export LC_ALL=C NO_PROXY='*' no_proxy='*'
die() { echo "bench/xmpp.sh: $*" >&2; exit 1; }
say() { echo "# $*" >&2; }

bin=${CHAPAR_BIN:-$repo/build/bin}
[ -x "$bin/chapard" ] || (cd "$repo" && scripts/build Release build >&2)
command -v curl >/dev/null && command -v openssl >/dev/null || die "needs curl and openssl"

tmp=$(mktemp -d /tmp/chapar-bench-xmpp-XXXXXX)
relay_pid=
cleanup() {
        [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
        rm -rf "$tmp" /var/tmp/chapar-bench-xmpp.pretouch
}
trap cleanup EXIT
trap 'exit 130' INT TERM

secret=$(openssl rand -hex 24)
tenant=bench.test
printf '[server]\nopen = true\n[tenant "%s"]\nxmpp_secret = %s\n' "$tenant" "$secret" >"$tmp/chapard.conf"
"$bin/chapard" --config "$tmp/chapard.conf" --data "$tmp/data" --listen 127.0.0.1:0 \
        --http 127.0.0.1:0 --ready-file "$tmp/ready" --sync full --log-level warn 2>"$tmp/log" &
relay_pid=$!
for _ in $(seq 300); do
        grep -qs '^http=' "$tmp/ready" && break
        kill -0 "$relay_pid" 2>/dev/null || { cat "$tmp/log" >&2; die "chapard exited"; }
        sleep 0.1
done
http=$(sed -n 's/^http=//p' "$tmp/ready")
[ -n "$http" ] || die "chapard wrote no http= to its ready file"
base=http://$http/xmpp/$tenant
say "$mib MiB files, $rounds round(s), chapard $http, temporary files in $tmp"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

curlx=(curl -sS --noproxy '*' --max-time 600 -H 'Expect:')
mbs() { awk -v b="$bytes" -v t="$1" 'BEGIN { printf "%.1f", b / t / 1e6 }'; } # SECONDS
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
hdr() { sed -n "s/^$1: *//Ip" "$2" | tr -d '\r' | tail -1; } # NAME FILE
declare -A res # measurement -> MB/s per round, space-separated
add() { res[$1]="${res[$1]:-}$2 "; }
# before each timed upload: sync, and write twice the file's size to /var/tmp and delete it, so
# the upload lands in memory the kernel has just freed (why: bench/compare, pretouch)
settle() {
        sync
        dd if=/dev/zero of=/var/tmp/chapar-bench-xmpp.pretouch bs=1M count=$((2 * mib + 16)) status=none
        rm -f /var/tmp/chapar-bench-xmpp.pretouch
}
fresh() { head -c "$bytes" /dev/urandom >"$tmp/up.bin"; sync; }

n=0
xmpp_put() { # adds MB/s to xmpp_put; sets path and fid (the stored file's)
        n=$((n + 1))
        path=$(openssl rand -hex 16)/round-$n.bin
        local v out code t
        # protocol v1, as mod_http_upload_external signs by default: "<path> <size>"
        v=$(printf '%s %d' "$path" "$bytes" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
        out=$("${curlx[@]}" -T "$tmp/up.bin" -H 'Content-Type: application/octet-stream' -D "$tmp/h.put" \
                -o "$tmp/b.put" -w '%{http_code} %{time_total}' "$base/$path?v=$v") || die "PUT $base/$path failed"
        read -r code t <<<"$out"
        [ "$code" = 201 ] || die "PUT $base/$path answered $code: $(head -c 300 "$tmp/b.put")"
        fid=$(hdr Chapar-File-Id "$tmp/h.put")
        [[ $fid =~ ^[0-9a-f]{64}$ ]] || die "the PUT's Chapar-File-Id is '$fid', want 64 lowercase hex"
        add xmpp_put "$(mbs "$t")"
}
tus_put() { # adds MB/s to tus_put
        local out code t1 t2 loc
        out=$("${curlx[@]}" -X POST -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $bytes" -D "$tmp/h.post" \
                -o /dev/null -w '%{http_code} %{time_total}' "http://$http/files/") || die "tus POST failed"
        read -r code t1 <<<"$out"
        loc=$(hdr Location "$tmp/h.post")
        [ "$code" = 201 ] && [ -n "$loc" ] || die "tus POST answered $code, Location '$loc'"
        case $loc in /*) loc=http://$http$loc ;; esac
        out=$("${curlx[@]}" -X PATCH -T "$tmp/up.bin" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
                -H 'Content-Type: application/offset+octet-stream' -D "$tmp/h.patch" -o "$tmp/b.patch" \
                -w '%{http_code} %{time_total}' "$loc") || die "tus PATCH $loc failed"
        read -r code t2 <<<"$out"
        [ "$code" = 204 ] && [ "$(hdr Upload-Offset "$tmp/h.patch")" = "$bytes" ] ||
                die "tus PATCH answered $code: $(head -c 300 "$tmp/b.patch")"
        add tus_put "$(mbs "$(awk -v a="$t1" -v b="$t2" 'BEGIN { print a + b }')")"
}
get_once() { # NAME URL
        local out code t size
        out=$("${curlx[@]}" -o /dev/null -w '%{http_code} %{time_total} %{size_download}' "$2") ||
                die "$1: GET $2 failed"
        read -r code t size <<<"$out"
        [ "$code" = 200 ] && [ "$size" = "$bytes" ] || die "$1: GET $2 answered $code with $size bytes"
        add "$1" "$(mbs "$t")"
}

say "uploads"
for r in $(seq "$rounds"); do
        if [ $((r % 2)) -eq 1 ]; then order=(xmpp_put tus_put); else order=(tus_put xmpp_put); fi
        for u in "${order[@]}"; do
                fresh
                settle
                "$u"
        done
done

say "downloads"
fresh
kept=${res[xmpp_put]}
xmpp_put # the file both downloads read; its upload is not a round
res[xmpp_put]=$kept
"${curlx[@]}" -o "$tmp/check" "$base/$path" && cmp -s "$tmp/check" "$tmp/up.bin" || die "GET $base/$path did not return the file"
"${curlx[@]}" -o "$tmp/check" "http://$http/f/$fid" && cmp -s "$tmp/check" "$tmp/up.bin" || die "GET /f/$fid did not return the file"
rm -f "$tmp/check"
for r in $(seq "$rounds"); do
        if [ $((r % 2)) -eq 1 ]; then
                get_once xmpp_get "$base/$path"
                get_once f_get "http://$http/f/$fid"
        else
                get_once f_get "http://$http/f/$fid"
                get_once xmpp_get "$base/$path"
        fi
done

med() { median <<<"${res[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
rounds_of() { echo "${res[$1]}" | xargs | sed 's/ /, /g'; }
# the machine's speed drifts between rounds (other work, the VM's memory): each round's two
# figures were taken one right after the other, so the median of the rounds' own ratios is the
# steadier comparison
paired() { # A B: median of A's round k / B's round k
        paste -d' ' <(echo "${res[$1]}" | xargs -n1) <(echo "${res[$2]}" | xargs -n1) |
                awk '{ print $1 / $2 }' | sort -g |
                awk '{ v[NR] = $1 } END { printf "%.2f×", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
xp=$(med xmpp_put) tp=$(med tus_put) xg=$(med xmpp_get) fg=$(med f_get)
echo "$mib MiB files (MB = 10^6 bytes), $rounds round(s), medians; chapard --sync full on $(nproc) cores;"
echo "load average before the run: $load_before"
echo
echo "| path | XMPP MB/s | plain MB/s | XMPP / plain (medians) | median of the rounds' ratios | XMPP rounds | plain rounds |"
echo "|---|---:|---:|---:|---:|---|---|"
echo "| upload: PUT /xmpp/…?v= vs tus POST + 1 PATCH | $xp | $tp | $(ratio "$xp" "$tp") | $(paired xmpp_put tus_put) | $(rounds_of xmpp_put) | $(rounds_of tus_put) |"
echo "| download: GET /xmpp/… vs GET /f/<id> | $xg | $fg | $(ratio "$xg" "$fg") | $(paired xmpp_get f_get) | $(rounds_of xmpp_get) | $(rounds_of f_get) |"
