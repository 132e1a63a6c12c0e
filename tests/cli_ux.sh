#!/usr/bin/env bash
# The chapar and chapard commands as people expect them: --help, -h and help print the usage to
# stdout and exit 0, a usage error prints it to stderr and exits 1; --version on both prints NAME
# VERSION, then the protocol; the usage explains every command and lists the exit codes; stat
# shows dates (ISO 8601, UTC); a directory to put, an -o into a missing directory and a relay
# without a port are refused with the path (or address) and the reason.
# Usage: cli_ux.sh CHAPARD CHAPAR VERSION
set -uo pipefail
chapard=$1
chapar=$2
version=$3
. "$(dirname "$0")/lib.sh"
lib_tmp ux

for h in --help -h help; do
        "$chapar" $h >"$tmp/out" 2>"$tmp/err"
        rc=$?
        check "chapar $h exits 0 with the usage on stdout only (exit $rc)" \
                "[ $rc -eq 0 ] && grep -q '^usage: chapar' '$tmp/out' && [ ! -s '$tmp/err' ]"
done
"$chapar" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "chapar with no command exits 1 with the usage on stderr (exit $rc)" \
        "[ $rc -eq 1 ] && [ ! -s '$tmp/out' ] && grep -q 'usage: chapar' '$tmp/err'"
"$chapar" frobnicate >"$tmp/out" 2>"$tmp/err"
rc=$?
check "an unknown command exits 1 and names it (exit $rc)" \
        "[ $rc -eq 1 ] && [ ! -s '$tmp/out' ] && grep -q 'frobnicate' '$tmp/err'"
"$chapar" put --bogus-flag x >"$tmp/out" 2>"$tmp/err"
rc=$?
check "an unknown flag exits 1 and names it (exit $rc)" "[ $rc -eq 1 ] && grep -q -- '--bogus-flag' '$tmp/err'"
"$chapar" put --help >"$tmp/out" 2>"$tmp/err"
check "chapar put --help exits 0 with the usage on stdout" "[ $? -eq 0 ] && grep -q 'usage: chapar' '$tmp/out'"

"$chapar" --help >"$tmp/usage"
for cmd in put get stat offer; do
        check "the usage explains $cmd" "grep -Eq '^  $cmd .+' '$tmp/usage' && grep -A2 -E '^  $cmd ' '$tmp/usage' | tail -n +2 | grep -q '[a-z]'"
done
check "the usage says what offer is for" "grep -A3 -E '^  offer ' '$tmp/usage' | grep -qi 'peer relay'"
for code in "0 " "1 .*usage" "2 .*relay" "3 .*(integrity|verif)" "4 .*local"; do
        check "the usage lists exit code '${code%% *}'" "sed -n '/^exit codes/,\$p' '$tmp/usage' | grep -Eqi '^ +$code'"
done
check "the usage explains -o -" "grep -q -- '-o -' '$tmp/usage'"
check "the usage says a file that changed under put exits 4" \
        "sed -n '/^exit codes/,\$p' '$tmp/usage' | sed -n '/^  4 /,\$p' | grep -qi 'changed'"

for bin in chapar chapard; do
        b=$chapar
        [ $bin = chapard ] && b=$chapard
        out=$("$b" --version 2>"$tmp/err")
        rc=$?
        # the contract: the first line is exactly NAME VERSION; the protocol on a line of its own
        check "$bin --version: '$out' (exit $rc)" \
                "[ $rc -eq 0 ] && [ \"\$(printf '%s\n' \"\$out\" | head -n1)\" = '$bin $version' ] && printf '%s\n' \"\$out\" | grep -qx 'protocol 1' && [ ! -s '$tmp/err' ]"
done
"$chapard" --help >"$tmp/out" 2>&1
check "chapard --help lists --version" "grep -q -- '--version' '$tmp/out'"

relay_start R --log-level warn
raddr=${addr[R]}
trust=()
"$chapar" --help 2>&1 | grep -q -- --trust-new-relay && trust=(--trust-new-relay)
put() { "$chapar" put "$@" --relay "$raddr" "${trust[@]}"; }

echo hello >"$tmp/f"
t=$(put "$tmp/f") || bad "put"
"$chapar" stat "$t" >"$tmp/out" 2>"$tmp/err"
check "stat shows the expiry as an ISO 8601 UTC date: $(grep expires "$tmp/out")" \
        "grep -Eq '^expires +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z' '$tmp/out'"
check "stat shows when it was created, as a date" \
        "grep -Eq '^created +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z' '$tmp/out'"
"$chapar" stat "$t" --json >"$tmp/out"
check "stat --json keeps unix seconds" "grep -Eq '\"expires\":[0-9]+[,}]' '$tmp/out'"

mkdir "$tmp/adir"
put "$tmp/adir" >/dev/null 2>"$tmp/err"
rc=$?
check "put DIR exits 4 naming the path and the reason: $(head -c 200 "$tmp/err")" \
        "[ $rc -eq 4 ] && grep -q '$tmp/adir' '$tmp/err' && grep -qi 'directory' '$tmp/err'"
put "$tmp/nope" >/dev/null 2>"$tmp/err"
rc=$?
check "put of a missing file exits 4 naming it and the reason" \
        "[ $rc -eq 4 ] && grep -q '$tmp/nope' '$tmp/err' && grep -qi 'no such file' '$tmp/err'"
"$chapar" get "$t" -o "$tmp/missing/dir/out" >/dev/null 2>"$tmp/err"
rc=$?
check "-o into a missing directory exits 4 naming the path and the reason: $(head -c 200 "$tmp/err")" \
        "[ $rc -eq 4 ] && grep -q '$tmp/missing/dir' '$tmp/err' && grep -qi 'no such file or directory' '$tmp/err'"
"$chapar" put "$tmp/f" --relay 127.0.0.1 "${trust[@]}" >/dev/null 2>"$tmp/err"
rc=$?
check "--relay without a port exits 1 and says so: $(head -c 200 "$tmp/err")" \
        "[ $rc -eq 1 ] && grep -q '127.0.0.1' '$tmp/err' && grep -qi 'no port' '$tmp/err'"
"$chapar" stat "$t" --via localhost >/dev/null 2>"$tmp/err"
rc=$?
check "--via without a port exits 1 and says so" "[ $rc -eq 1 ] && grep -qi 'no port' '$tmp/err'"
CHAPAR_RELAY=[::1] "$chapar" put "$tmp/f" "${trust[@]}" >/dev/null 2>"$tmp/err"
rc=$?
check "\$CHAPAR_RELAY without a port exits 1 and says so" "[ $rc -eq 1 ] && grep -qi 'no port' '$tmp/err'"

relay_stop R
finish
