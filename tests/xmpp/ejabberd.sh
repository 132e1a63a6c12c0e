#!/usr/bin/env bash
# The real thing with ejabberd: Debian's ejabberd (mod_http_upload with external_secret, put_url
# and get_url pointed at chapard's XMPP face, [tenant "a.test"] xmpp_secret), run by the test as
# a plain Erlang node of its own (no ejabberdctl, no system user, no epmd: not distributed) with
# its config, Mnesia spool and logs in the temp dir, c2s only on a free loopback port, no TLS.
# alice@a.test puts a random file of a few MiB and a small one with a non-ASCII name (slots with
# ejabberd's three-segment paths, ?v=) and sends the URLs to bob@a.test, who downloads both; the
# SHA-256 of each copy is the original's. Skipped (77) only if ejabberd cannot be installed.
# Usage: ejabberd.sh CHAPARD
set -uo pipefail
chapard=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
xmpp_need ejabberd python3-slixmpp python3-aiohttp
ebin=$(ls -d /usr/lib/*/ejabberd-[0-9]*/ebin 2>/dev/null | head -1)
[ -n "$ebin" ] || { echo "FAIL: the ejabberd package has no /usr/lib/*/ejabberd-*/ebin"; exit 1; }

lib_tmp ejabberd
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '[tenant "a.test"]\nxmpp_secret = %s\n' "$secret" >"$tmp/A.ini"
relay_start A --config "$tmp/A.ini" || { bad "relay A starts"; tail "$tmp/A.log"; exit 1; }

ejabberd_conf() { # PORT
        cat >"$tmp/ejabberd.yml" <<CONF
# written by tests/xmpp/ejabberd.sh
hosts: ["a.test"]
loglevel: info
log_rotate_count: 0
certfiles: []
listen:
  - port: $1
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
auth_method: internal
auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_disco: {}
  mod_roster: {}
  mod_http_upload:
    host: "upload.a.test"
    put_url: "http://${http[A]}/xmpp/a.test"
    get_url: "http://${http[A]}/xmpp/a.test"
    external_secret: "$secret"
    max_size: 67108864
CONF
}
# erl as ejabberdctl would run it, minus the system user and the node name (a named node would
# start epmd, a daemon that outlives the test). After the start the users are registered and the
# node says "ready PORT" once its c2s port takes a connection.
ejabberd_run() {
        mkdir -p "$tmp/ejabberd.spool"
        cd "$tmp" || exit 1
        ERL_LIBS=${ebin%/ejabberd-*/ebin} EJABBERD_CONFIG_PATH=$tmp/ejabberd.yml \
                EJABBERD_LOG_PATH=$tmp/ejabberd.log ERL_CRASH_DUMP=$tmp/erl_crash.dump HOME=$tmp \
                exec erl -noinput \
                -mnesia dir "\"$tmp/ejabberd.spool\"" -s ejabberd -eval "
                        [ok = ejabberd_auth:try_register(U, <<\"a.test\">>, <<\"pw-\", U/binary>>)
                         || U <- [<<\"alice\">>, <<\"bob\">>]],
                        {ok, S} = gen_tcp:connect({127, 0, 0, 1}, $port, []),
                        gen_tcp:close(S),
                        io:format(\"ready ~b~n\", [$port])."
}
t0=$SECONDS
xmpp_server_start ejabberd ejabberd_conf "$tmp/ejabberd.out" '^ready %s$' ejabberd_run
check "ejabberd takes c2s connections on 127.0.0.1:${port:-?} ($((SECONDS - t0)) s)" "[ -n '$port' ]" || exit 1

head -c $((3 * 1024 * 1024 + 4321)) /dev/urandom >"$tmp/big.bin"
small="$tmp/grüße + ünïcødé.txt"
echo "small file with a non-ASCII name $RANDOM" >"$small"
user bob bob@a.test recv:2
check "bob@a.test is online" "wait_for 30 \"[ -e '$tmp/bob/ready' ]\""
user alice alice@a.test --to bob@a.test "put:$tmp/big.bin" "put:$small:text/plain"
check "alice@a.test put two files" "user_done alice"
check "bob@a.test got two messages" "user_done bob"
url_big=$(sent "$tmp/big.bin" 1 "$tmp/alice/sent")
url_small=$(sent "$small" 1 "$tmp/alice/sent")
put_big=$(sent "$tmp/big.bin" 2 "$tmp/alice/sent")
rest=${url_big#"http://${http[A]}/xmpp/a.test/"}
check "ejabberd's slot is on A's XMPP face, three segments: $url_big" \
        "[[ '$rest' =~ ^[^/]+/[^/]+/big\\.bin\$ ]]"
check "and signed with ?v=: ${put_big#*\?}" "[[ '$put_big' == '$url_big?v='* ]]"
check "bob: the big file's SHA-256 is alice's" "[ \"\$(sha '$(got "$tmp/bob" "$url_big")')\" = '$(sha "$tmp/big.bin")' ]"
check "bob: the non-ASCII one's too (${url_small##*/})" "[ \"\$(sha '$(got "$tmp/bob" "$url_small")')\" = '$(sha "$small")' ]"
check "ejabberd is still up" "kill -0 $server_pid"
relays_stop A
finish
