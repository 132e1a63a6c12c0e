#!/usr/bin/env bash
# /metrics of a real chapard after known traffic: `promtool check metrics` (Prometheus's own
# linter) accepts the page; uploads created/finished/terminated count what the test did on each
# face (3 tus POSTs, one finished by its PATCH, one deleted; 2 chapar puts); HTTP responses by
# method and exact status; native requests by frame; the process metrics (CPU, resident memory,
# open and allowed descriptors, start time) agree with /proc; chapar_build_info names the
# version chapard --version prints.
# Usage: metrics_cli.sh CHAPARD CHAPAR     (needs curl and promtool: scripts/deps --test)
set -uo pipefail
chapard=$1
chapar=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
command -v curl >/dev/null || { echo "metrics_cli.sh: curl is not installed (scripts/deps --test)" >&2; exit 1; }
if ! command -v promtool >/dev/null; then
        echo "SKIP: promtool is not installed (Debian's prometheus package: scripts/deps --test)"
        exit 77
fi
lib_tmp metrics

t0=$(date +%s)
relay_start r || { bad "chapard starts"; finish; exit 1; }
base=http://${http[r]}

post() { # the upload URL of a new tus upload of 5 bytes
        curl -sS -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 5' \
                "$base/files/" | tr -d '\r' | sed -n 's/^Location: //Ip'
}
u1=$(post)
u2=$(post)
u3=$(post)
code() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
check "PATCH finishes the first upload" "[ $(code -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
        -H 'Content-Type: application/offset+octet-stream' --data-binary hello "$u1") = 204 ]"
check "DELETE terminates the second" "[ $(code -X DELETE -H 'Tus-Resumable: 1.0.0' "$u2") = 204 ]"
check "a 404" "[ $(code "$base/nope") = 404 ]"
check "a 405" "[ $(code -X PUT "$base/files/") = 405 ]"
head -c 70000 /dev/urandom >"$tmp/a"
head -c 90000 /dev/urandom >"$tmp/b"
for f in a b; do
        "$chapar" put "$tmp/$f" --relay "${addr[r]}" --relay-key "${key[r]}" >/dev/null 2>"$tmp/put.err" ||
                bad "chapar put $f: $(cat "$tmp/put.err")"
done

curl -sS "$base/metrics" >"$tmp/m"
check "promtool check metrics accepts /metrics" "promtool check metrics <'$tmp/m' >'$tmp/promtool' 2>&1"
[ -s "$tmp/promtool" ] && sed 's/^/# promtool: /' "$tmp/promtool"
metric() { awk -v k="$1" '$1 == k {print $2}' "$tmp/m"; }
is() { # METRIC-WITH-LABELS VALUE
        local v
        v=$(metric "$1")
        check "$1 = ${v:-absent} (want $2)" "[ '${v:-x}' = '$2' ]"
}
is 'chapar_uploads_created_total{face="http"}' 3
is 'chapar_uploads_finished_total{face="http"}' 1
is 'chapar_uploads_terminated_total{face="http"}' 1
is 'chapar_uploads_created_total{face="native"}' 2
is 'chapar_uploads_finished_total{face="native"}' 2
is 'chapar_uploads_terminated_total{face="native"}' 0
is 'chapar_http_request_status_total{method="POST",code="201"}' 3
is 'chapar_http_request_status_total{method="PATCH",code="204"}' 1
is 'chapar_http_request_status_total{method="DELETE",code="204"}' 1
is 'chapar_http_request_status_total{method="GET",code="404"}' 1
is 'chapar_http_request_status_total{method="PUT",code="405"}' 1
is 'chapar_native_requests_total{frame="OPEN"}' 2
is 'chapar_native_requests_total{frame="COMMIT"}' 2
is 'chapar_native_requests_total{frame="HELLO"}' 2

# the process, from /proc/self as the relay sees it
p=${pid[r]}
fds=$(metric process_open_fds)
real=$(ls /proc/"$p"/fd | wc -l)
check "process_open_fds ${fds:-absent} is the relay's ($real, give or take the scrape's own)" \
        "[ -n '$fds' ] && [ \$(( $real - ${fds:-0} )) -le 2 ] && [ \$(( ${fds:-0} - $real )) -le 2 ]"
max=$(metric process_max_fds)
lim=$(awk '/^Max open files/ {print $4}' /proc/"$p"/limits)
check "process_max_fds ${max:-absent} is its soft limit ($lim)" "[ '${max:-x}' = '$lim' ]"
rss=$(metric process_resident_memory_bytes)
check "process_resident_memory_bytes ${rss:-absent} is a few MiB" \
        "[ -n '$rss' ] && [ '${rss%.*}' -gt 1000000 ] && [ '${rss%.*}' -lt 2000000000 ]"
cpu=$(metric process_cpu_seconds_total)
check "process_cpu_seconds_total ${cpu:-absent} is there" "[ -n '$cpu' ]"
start=$(metric process_start_time_seconds)
# /proc/stat's boot time is whole seconds: a second or two of slack below
check "process_start_time_seconds ${start:-absent} is when the relay started (from $t0)" \
        "awk -v s='${start:-0}' -v a=$t0 -v b=$(date +%s) 'BEGIN { exit !(s >= a - 2 && s <= b + 1) }'"
version=$("$chapard" --version | awk 'NR == 1 {print $2}')
check "chapar_build_info names version $version" \
        "grep -qx 'chapar_build_info{version=\"$version\",protocol=\"1\"} 1' '$tmp/m'"

relay_stop r
finish
