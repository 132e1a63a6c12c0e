# lib.sh — what the shell tests share; source it: . "$(dirname "$0")/lib.sh".
# ok/bad/check NAME count results; finish prints the totals and is the script's status. lib_tmp
# PREFIX makes $tmp (the client's config and cache inside) and an EXIT trap that kills only the
# PIDs this script started (relay_start's, lib_track's), runs lib_at_exit and removes $tmp.
# relay_start NAME [args] runs $chapard (or $CHAPARD_BIN) with $tmp/NAME.{data,ready,log}, sets
# pid/addr/http/key[NAME], keeps the native port on a restart; relay_stop NAME [SIG] is its exit.
# wait_for/wait_file poll every 50 ms (never a busy loop). proxy_start/hold/held/release drive
# $cutproxy (see cutproxy.c): a connection's bytes held at a set count.

passed=0
failed=0
declare -A pid addr http key proxy_port
lib_pids=()
lib_at_exit=() # commands the EXIT trap runs after the kills, before removing $tmp

ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); return 1; }
# A condition is a test, not a job: under pipefail, `ldd X | grep -q Y` fails whenever grep has
# its answer before ldd has written its last line (SIGPIPE). Conditions run without pipefail.
# Its locals have names no caller uses: a condition like '[ $rc -eq 0 ]' reads the caller's rc.
cond() {
        local _cond_was _cond_rc
        _cond_was=$(shopt -po pipefail)
        set +o pipefail
        eval "$1"
        _cond_rc=$?
        eval "$_cond_was"
        return $_cond_rc
}
check() { if cond "$2"; then ok "$1"; else bad "$1"; fi; }
finish() {
        echo "$passed passed, $failed failed"
        [ "$failed" -eq 0 ]
}

lib_cleanup() { # keeps the script's exit status, also under set -e
        local rc=$? p
        for p in "${pid[@]}" "${lib_pids[@]}"; do kill "$p" 2>/dev/null || true; done
        for p in "${pid[@]}" "${lib_pids[@]}"; do wait "$p" 2>/dev/null || true; done
        for p in "${lib_at_exit[@]}"; do eval "$p" || true; done
        if [ -n "${KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
        exit $rc
}

lib_tmp() { # PREFIX
        tmp=$(mktemp -d "/tmp/chapar-$1-XXXXXX")
        export XDG_CONFIG_HOME=$tmp/config XDG_CACHE_HOME=$tmp/cache
        unset CHAPAR_RELAY
        trap lib_cleanup EXIT
}

lib_track() { lib_pids+=("$@"); } # PID...: killed on exit too

# Waits (at most $3 s, 20 by default) until FILE has a line matching PATTERN ("pubkey" by
# default: a ready file is complete once it has it).
wait_file() { # FILE [PATTERN] [SECONDS]
        wait_for "${3:-20}" "grep -qs -- '${2:-pubkey}' '$1'"
}

# Waits (at most SECONDS, sleeping 50 ms between tries) until the shell test is true.
wait_for() { # SECONDS 'shell test'
        local end=$((SECONDS + $1))
        until cond "$2"; do
                [ $SECONDS -ge $end ] && return 1
                sleep 0.05
        done
}

relay_start() { # NAME [chapard args]
        local r=$1 port=127.0.0.1:0
        shift
        [ -n "${addr[$r]:-}" ] && port=${addr[$r]}
        rm -f "$tmp/$r.ready"
        "${CHAPARD_BIN:-$chapard}" --data "$tmp/$r.data" --listen "$port" --http 127.0.0.1:0 \
                --ready-file "$tmp/$r.ready" "$@" 2>>"$tmp/$r.log" &
        pid[$r]=$!
        wait_file "$tmp/$r.ready"
        addr[$r]=$(sed -n 's/^native=//p' "$tmp/$r.ready")
        http[$r]=$(sed -n 's/^http=//p' "$tmp/$r.ready")
        key[$r]=$(sed -n 's/^pubkey=//p' "$tmp/$r.ready")
        [ -n "${addr[$r]}" ]
}

relay_stop() { # NAME [SIGNAL]: the relay's exit status
        kill -"${2:-TERM}" "${pid[$1]}"
        wait "${pid[$1]}" 2>/dev/null
        local rc=$?
        unset "pid[$1]"
        return $rc
}

proxy_start() { # NAME UPSTREAM-PORT
        mkdir -p "$tmp/$1.proxy"
        "$cutproxy" "$2" "$tmp/$1.proxy" &
        lib_track $!
        wait_for 10 "[ -s '$tmp/$1.proxy/port' ]"
        proxy_port[$1]=$(cat "$tmp/$1.proxy/port")
}
proxy_hold() { # NAME BYTES [up]: the next connection's bytes stop after BYTES more
        rm -f "$tmp/$1.proxy/cut"
        echo "$2 ${3:-}" >"$tmp/$1.proxy/arm.new" && mv "$tmp/$1.proxy/arm.new" "$tmp/$1.proxy/arm"
}
proxy_held() { wait_for 20 "[ -e '$tmp/$1.proxy/cut' ]"; } # NAME
proxy_release() { touch "$tmp/$1.proxy/go"; } # NAME
