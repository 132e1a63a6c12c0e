#!/usr/bin/env bash
# The relay's TCP congestion control ([server] congestion_control), read back from the kernel
# with ss on the relay's side of real connections. reno (which every process may pick): an
# accepted native connection and an HTTP one run reno, /metrics says so, a SIGHUP that changes
# it warns that it takes a restart, and a pull-through's outgoing socket runs it (the fetching
# relay names it in its "fetched a file" line, read from that socket). system: the kernel's
# default. Refusals never stop the relay: run without CAP_NET_ADMIN (setpriv, as nobody) with
# an algorithm the kernel has but does not allow, it warns naming the allowed list and both
# fixes and runs the default; an unknown name warns that the kernel has none. A malformed name
# fails check-config. Windows for long fat paths: a fetch keeps as many GET_CHUNKs in flight as
# the peer's HELLO_OK allows (its window in chunks, at most its max_inflight), not a fixed 16:
# with A's bytes to C held (cutproxy) inside the first chunk, A has received that many.
# Usage: congestion.sh CHAPARD CHAPAR CUTPROXY
set -uo pipefail
chapard=$1
chapar=$2
cutproxy=$3
. "$(dirname "$0")/lib.sh"
lib_tmp congestion
command -v ss >/dev/null || { echo "congestion.sh: ss (iproute2) is not installed" >&2; exit 1; }
command -v curl >/dev/null || { echo "congestion.sh: curl is not installed" >&2; exit 1; }
sysdefault=$(cat /proc/sys/net/ipv4/tcp_congestion_control)
allowed=$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control)
available=$(cat /proc/sys/net/ipv4/tcp_available_congestion_control)

# The algorithms the kernel runs on the relay's side (local port PORT) of established sockets,
# one per line: the first word of ss's info line that is neither an option nor NAME:VALUE.
cc_of() { # PORT
        ss -tinH state established "( sport = :$1 )" |
                awk '/^[ \t]/ { for (i = 1; i <= NF; i++)
                                  if ($i !~ /:/ && $i !~ /^(ts|sack|ecn|ecnseen|fastopen|cwr)$/) {
                                          print $i; break } }'
}
# Opens a connection to PORT on fd 3 (native) or 4 (HTTP) and waits until ss sees the relay's
# side of it; the relay holds it until its handshake or header timeout.
hold() { # FD PORT
        eval "exec $1<>/dev/tcp/127.0.0.1/$2"
        wait_for 10 "[ -n \"\$(cc_of $2)\" ]"
}
unhold() { exec 3<&- 4<&-; }
gauge() { # RELAY: the congestion control line of its /metrics
        curl -sS "http://${http[$1]}/metrics" | grep '^chapar_tcp_congestion_control'
}
start() { # NAME [chapard args]: relay_start, or the test ends here
        relay_start "$@" && return 0
        bad "relay $1 starts: $(tail -n 3 "$tmp/$1.log")"
        finish
        exit 1
}
conf() { # NAME VALUE
        printf '[server]\ncongestion_control = %s\n' "$2" >"$tmp/$1.ini"
}

# ---- reno: every socket of the relay runs it ------------------------------------------------
conf reno reno
start reno --config "$tmp/reno.ini" --log-level info
np=${addr[reno]##*:}
hp=${http[reno]##*:}
hold 3 "$np"
check "an accepted native connection runs reno (ss: $(cc_of "$np" | tr '\n' ' '))" \
        "[ \"\$(cc_of $np | sort -u)\" = reno ]"
hold 4 "$hp"
check "an accepted HTTP connection runs reno (ss: $(cc_of "$hp" | tr '\n' ' '))" \
        "[ \"\$(cc_of $hp | sort -u)\" = reno ]"
unhold
g=$(gauge reno)
check "/metrics: $g" "[ '$g' = 'chapar_tcp_congestion_control{algorithm=\"reno\",wanted=\"reno\"} 1' ]"
check "the start log names it" "grep -q 'TCP congestion control reno' '$tmp/reno.log'"
check "reno is no cause for a warning" "! grep -q 'congestion_control' '$tmp/reno.log'"
# it takes a restart: a SIGHUP that changes it says so, and new connections keep reno
conf reno system
kill -HUP "${pid[reno]}"
wait_for 10 "grep -q 'SIGHUP: configuration reloaded' '$tmp/reno.log'"
check "a reload names congestion_control as needing a restart" \
        "grep -q \"SIGHUP: 'congestion_control' differs\" '$tmp/reno.log'"
hold 3 "$np"
check "... and a connection accepted after it still runs reno (ss: $(cc_of "$np" | tr '\n' ' '))" \
        "[ \"\$(cc_of $np | sort -u)\" = reno ]"
unhold
relay_stop reno

# ---- system: the kernel's default ---------------------------------------------------------
conf system system
start sys --config "$tmp/system.ini"
np=${addr[sys]##*:}
hold 3 "$np"
check "system: the native connection runs the kernel's default $sysdefault (ss: $(cc_of "$np" | tr '\n' ' '))" \
        "[ \"\$(cc_of $np | sort -u)\" = '$sysdefault' ]"
unhold
g=$(gauge sys)
check "/metrics: $g" "[ '$g' = 'chapar_tcp_congestion_control{algorithm=\"$sysdefault\",wanted=\"system\"} 1' ]"
relay_stop sys

# ---- an unknown algorithm: a warning, and the default ---------------------------------------
conf unknown nosuchcc
start unk --config "$tmp/unknown.ini"
np=${addr[unk]##*:}
hold 3 "$np"
check "nosuchcc: the relay runs the default $sysdefault (ss: $(cc_of "$np" | tr '\n' ' '))" \
        "[ \"\$(cc_of $np | sort -u)\" = '$sysdefault' ]"
unhold
check "nosuchcc: one warning that the kernel has no such algorithm: $(grep -m1 nosuchcc "$tmp/unk.log" | cut -c1-300)" \
        "[ \$(grep -c 'nosuchcc' '$tmp/unk.log') -eq 1 ] &&
         grep 'nosuchcc' '$tmp/unk.log' | grep -q 'no TCP congestion control' &&
         grep 'nosuchcc' '$tmp/unk.log' | grep -q \"system's default, $sysdefault\""
g=$(gauge unk)
check "/metrics: $g" "[ '$g' = 'chapar_tcp_congestion_control{algorithm=\"$sysdefault\",wanted=\"nosuchcc\"} 1' ]"
relay_stop unk

# ---- a route's congctl: the relay's choice still wins -----------------------------------------
# Linux gives an accepted socket its route's congctl (ip route ... congctl NAME) over the one it
# inherited from its listener, so the relay sets its choice again on each accepted socket. In a
# network namespace of this test, loopback's route says cubic (bbr where the kernel has no
# cubic) and the relay wants reno.
routecc=cubic
case " $available " in *" cubic "*) ;; *) routecc=bbr ;; esac
ns=chpcc$$
if [ "$(id -u)" -eq 0 ] && ip netns add "$ns" 2>/dev/null; then
        lib_at_exit+=("ip netns del $ns 2>/dev/null")
        ip -n "$ns" link set lo up
        ip -n "$ns" route replace local 127.0.0.1 dev lo table local proto kernel scope host \
                src 127.0.0.1 congctl "$routecc"
        printf '#!/bin/sh\nexec ip netns exec %s "%s" "$@"\n' "$ns" "$chapard" >"$tmp/in-ns"
        chmod +x "$tmp/in-ns"
        conf route reno
        CHAPARD_BIN=$tmp/in-ns start route --config "$tmp/route.ini"
        np=${addr[route]##*:}
        ns_cc() { ip netns exec "$ns" bash -c "$(declare -f cc_of); cc_of $np"; }
        ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$np; sleep 20" &
        holder=$!
        lib_pids+=("$holder")
        # ss sees the socket in the accept queue (the route's cubic) before the relay takes it
        wait_for 10 "[ \"\$(ns_cc | sort -u)\" = reno ]"
        check "the route says $routecc, the relay wants reno: the accepted connection runs reno (ss: $(ns_cc | tr '\n' ' '))" \
                "[ \"\$(ns_cc | sort -u)\" = reno ]"
        kill "$holder" 2>/dev/null
        relay_stop route
        ip netns del "$ns"
else
        echo "SKIP: a route's congctl (needs root and ip netns)"
fi

# ---- not allowed, without CAP_NET_ADMIN -------------------------------------------------------
refused=
for a in $available; do
        case " $allowed " in *" $a "*) ;; *) refused=$a; break ;; esac
done
if [ -z "$refused" ]; then
        echo "SKIP refused algorithm: every available one ($available) is allowed"
elif [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null; then
        echo "SKIP refused algorithm: dropping CAP_NET_ADMIN needs root and setpriv"
else
        # nobody must reach the binary, the data directory and the ready file
        chmod 1777 "$tmp"
        conf refused "$refused"
        chmod 644 "$tmp/refused.ini"
        cat >"$tmp/nobody.sh" <<EOF
#!/bin/sh
exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
        "$chapard" "\$@"
EOF
        chmod 755 "$tmp/nobody.sh"
        CHAPARD_BIN=$tmp/nobody.sh start nob --config "$tmp/refused.ini"
        np=${addr[nob]##*:}
        hold 3 "$np"
        check "$refused (not allowed), no CAP_NET_ADMIN: it starts and runs $sysdefault (ss: $(cc_of "$np" | tr '\n' ' '))" \
                "[ \"\$(cc_of $np | sort -u)\" = '$sysdefault' ]"
        unhold
        w=$(grep -m1 "congestion_control" "$tmp/nob.log")
        check "one warning naming $refused, the allowed list, the sysctl, CAP_NET_ADMIN and the default: $w" \
                "[ \$(grep -c 'congestion_control' '$tmp/nob.log') -eq 1 ] &&
                 grep -qF -- '$refused' <<<\"\$w\" && grep -qF -- '($allowed)' <<<\"\$w\" &&
                 grep -qF 'net.ipv4.tcp_allowed_congestion_control' <<<\"\$w\" &&
                 grep -qF 'CAP_NET_ADMIN' <<<\"\$w\" &&
                 grep -qF \"system's default, $sysdefault\" <<<\"\$w\""
        g=$(gauge nob)
        check "/metrics: $g" "[ '$g' = 'chapar_tcp_congestion_control{algorithm=\"$sysdefault\",wanted=\"$refused\"} 1' ]"
        relay_stop nob
fi

# ---- check-config ---------------------------------------------------------------------------
for v in BBR 'bb r' 'bbr;' abcdefghijklmnop; do
        conf bad "$v"
        "$chapard" check-config "$tmp/bad.ini" >/dev/null 2>"$tmp/err"
        rc=$?
        check "check-config refuses congestion_control = '$v' (exit $rc: $(head -c 160 "$tmp/err"))" \
                "[ $rc -eq 1 ] && grep -q 'congestion_control' '$tmp/err'"
done
conf good bbr_2-x
"$chapard" check-config "$tmp/good.ini" >/dev/null 2>"$tmp/err"
check "check-config takes a well-formed name it cannot check against the kernel (bbr_2-x)" \
        "[ $? -eq 0 ]"

# ---- federation: B's outgoing socket to A runs reno --------------------------------------------
for r in A B; do key[$r]=$("$chapard" keygen --out "$tmp/$r.key"); done
conf A system
printf '[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n' "${key[B]}" >>"$tmp/A.ini"
start A --config "$tmp/A.ini" --key "$tmp/A.key"
conf B reno
printf '[peer "A"]\naddress = %s\npubkey = %s\n' "${addr[A]}" "${key[A]}" >>"$tmp/B.ini"
start B --config "$tmp/B.ini" --key "$tmp/B.key" --log-level info
head -c 3000000 /dev/urandom >"$tmp/f"
t=$("$chapar" put "$tmp/f" --relay "${addr[A]}" --relay-key "${key[A]}")
"$chapar" get "$t" --via "${addr[B]}" --trust-new-relay -o "$tmp/f.b" >/dev/null 2>"$tmp/err"
check "a pull-through via B is identical" "cmp -s '$tmp/f' '$tmp/f.b'"
line=$(grep -m1 'fetched a file' "$tmp/B.log")
check "B's socket to A ran reno: $line" "grep -q 'TCP congestion control reno' <<<'$line'"

# ---- the fetch window: B asks A for up to A's max_inflight chunks at once -----------------------
# C reaches A through the proxy; 64 KiB chunks, A's window (32 MiB) holds 512 of them and its
# max_inflight is 100: the fetch keeps 100 in flight. A's bytes are held 40000 bytes in (past
# the handshake and the 10 KiB manifest, inside the first 64 KiB chunk), so C has all its
# requests out and no reply: A's GET_CHUNK count is the fetch's window.
key[C]=$("$chapard" keygen --out "$tmp/C.key")
relay_stop A
printf '[server]\nmax_inflight = 100\n[peer "B"]\naddress = 127.0.0.1:1\npubkey = %s\n[peer "C"]\naddress = 127.0.0.1:1\npubkey = %s\n' \
        "${key[B]}" "${key[C]}" >"$tmp/A.ini"
start A --config "$tmp/A.ini" --key "$tmp/A.key"
proxy_start A "${addr[A]##*:}"
printf '[peer "A"]\naddress = 127.0.0.1:%s\npubkey = %s\n' "${proxy_port[A]}" "${key[A]}" >"$tmp/C.ini"
start C --config "$tmp/C.ini" --key "$tmp/C.key"
head -c $((20 << 20)) /dev/urandom >"$tmp/g"
t=$("$chapar" put "$tmp/g" --relay "${addr[A]}" --relay-key "${key[A]}" --chunk-size 65536)
get_chunks() {
        curl -sS "http://${http[A]}/metrics" |
                sed -n 's/^chapar_native_requests_total{frame="GET_CHUNK"} //p'
}
proxy_hold A 40000
"$chapar" get "$t" --via "${addr[C]}" --trust-new-relay -o "$tmp/g.c" >/dev/null 2>"$tmp/err.g" &
gpid=$!
lib_track $gpid
proxy_held A
wait_for 10 "[ \"\$(get_chunks)\" -ge 100 ] 2>/dev/null"
check "a fetch of 64 KiB chunks keeps A's max_inflight (100) GET_CHUNKs in flight (A got $(get_chunks))" \
        "[ '$(get_chunks)' -ge 100 ]"
proxy_release A
wait $gpid
check "the fetch then completes: identical" "cmp -s '$tmp/g' '$tmp/g.c'"
finish
