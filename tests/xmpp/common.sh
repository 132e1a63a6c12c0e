# tests/xmpp/common.sh — what prosody.sh and ejabberd.sh share; source it after ../lib.sh, with
# $here set to tests/xmpp. xmpp_need installs the Debian packages a test needs (scripts/deps
# --xmpp) or skips it (exit 77) when they cannot be installed; xmpp_server_start runs an XMPP
# server in the foreground on a free loopback port ($port, $server_pid); user runs client.py as
# one XMPP user in the background, user_done is its exit status; sent/got read what it wrote.

py=/usr/bin/python3 # Debian's, which sees python3-slixmpp (another python3 may come first on PATH)

xmpp_need() { # PKG...: scripts/deps --test installs them (scripts/test runs it); else here
        local p sudo=
        for p in "$@"; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && continue
                [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
                $sudo "$here/../../scripts/deps" --xmpp || { echo "SKIP: scripts/deps --xmpp cannot install $*"; exit 77; }
                return
        done
}

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# NAME CONF-FUNCTION LOG READY-PATTERN COMMAND...: CONF-FUNCTION PORT writes the server's config,
# COMMAND runs it in the foreground, it is ready when LOG has READY-PATTERN (a grep -E pattern,
# PORT in it as %s). A free port is taken between free_port and the server's bind only by a
# race: three tries.
xmpp_server_start() {
        local name=$1 conf=$2 log=$3 ready=$4
        shift 4
        for _ in 1 2 3; do
                port=$(free_port)
                "$conf" "$port"
                : >"$log"
                "$@" >>"$tmp/$name.out" 2>&1 &
                server_pid=$!
                lib_track $server_pid
                # shellcheck disable=SC2059 # the pattern is the format
                wait_for 60 "grep -qsE '$(printf "$ready" "$port")' '$log' || ! kill -0 $server_pid 2>/dev/null" &&
                        kill -0 $server_pid 2>/dev/null && return 0
                kill $server_pid 2>/dev/null
                wait $server_pid 2>/dev/null
        done
        port=
        echo "--- $name:"
        tail -20 "$tmp/$name.out" "$log"
        return 1
}

declare -A upid
user() { # NAME JID [client.py args]: runs in the background, files in $tmp/NAME
        local n=$1 jid=$2
        shift 2
        mkdir -p "$tmp/$n"
        "$py" "$here/client.py" --jid "$jid" --password "pw-${jid%@*}" --port "$port" --dir "$tmp/$n" \
                "$@" >"$tmp/$n.out" 2>&1 &
        upid[$n]=$!
        lib_track "${upid[$n]}"
}
user_done() { # NAME: the client's exit status; says why it failed
        wait "${upid[$1]}"
        local rc=$?
        [ $rc -eq 0 ] || { echo "--- $1 (exit $rc):"; tail -20 "$tmp/$1.out"; }
        return $rc
}
sha() { sha256sum <"$1" | cut -d' ' -f1; }
sent() { sed -n "s|^$1 \\([^ ]*\\) \\([^ ]*\\)\$|\\$2|p" "$3"; } # FILE 1|2 (GET|PUT URL) SENT-FILE
got() { # DIR URL: the file DIR's client saved for that URL
        local k
        k=$(awk -v u="$2" '$3 == u { print $1 }' "$1/received")
        echo "$1/got.${k:-none}"
}
relays_stop() { # RELAY...: each stops on SIGTERM with exit 0 (a sanitizer's report would not)
        local r rc
        for r in "$@"; do
                relay_stop "$r"
                rc=$?
                check "relay $r stops cleanly (exit $rc)" "[ $rc -eq 0 ]" || tail -20 "$tmp/$r.log"
        done
}
