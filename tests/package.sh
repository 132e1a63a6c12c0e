#!/usr/bin/env bash
# The Debian package (scripts/package, debian/): built, its last line the .deb's path; the files
# it holds (dpkg-deb -c); lintian with no error; unpacked into a scratch root (dpkg -x), where the
# binaries run, the shipped config passes check-config, a relay started from it takes a put and a
# get from the packaged chapar, systemd-analyze verify --root accepts the unit (and refuses it
# when the binary is missing), and each man page renders without a groff warning. The unit is
# checked for its hardening, its user and a LimitNOFILE that fits max_connections. TCP BBR is
# loaded at boot (modules-load.d) and allowed to the unprivileged relay (sysctl.d, postinst).
# Usage: package.sh SOURCE-DIR OUT-DIR
set -uo pipefail
src=$1
out=$2
. "$(dirname "$0")/lib.sh"
lib_tmp package
for t in dpkg-buildpackage dh lintian systemd-analyze man groff; do
        if ! command -v $t >/dev/null; then
                echo "SKIP: $t is missing (scripts/deps --package installs it)"
                exit 77
        fi
done

rm -rf "$out"
"$src/scripts/package" "$out" >"$tmp/package.out" 2>&1
rc=$?
deb=$(tail -n1 "$tmp/package.out")
check "scripts/package exits 0 and prints the .deb last ($deb)" \
        "[ $rc -eq 0 ] && [[ '$deb' == /*/chapar_*.deb ]] && [ -f '$deb' ]" || {
        tail -n 30 "$tmp/package.out"
        finish
        exit
}
version=$(dpkg-deb -f "$deb" Version)
multiarch=$(dpkg-architecture -q DEB_HOST_MULTIARCH)

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$tmp/files"
for f in /usr/sbin/chapard /usr/bin/chapar /usr/include/chapar.h \
        /usr/lib/$multiarch/libchapar.so.0 /usr/lib/$multiarch/libchapar.so.$version \
        /usr/lib/$multiarch/libchapar.so /usr/lib/$multiarch/libchapar.a \
        /usr/lib/$multiarch/pkgconfig/chapar.pc /etc/chapar/chapard.conf \
        /lib/systemd/system/chapard.service /usr/lib/sysusers.d/chapar.conf \
        /usr/lib/modules-load.d/chapar.conf /usr/lib/sysctl.d/60-chapar.conf \
        /usr/share/man/man8/chapard.8.gz /usr/share/man/man1/chapar.1.gz \
        /usr/share/man/man5/chapard.conf.5.gz /usr/share/doc/chapar/copyright; do
        check "the package holds $f" "grep -qx -- '$f' '$tmp/files'"
done
check "/etc/chapar/chapard.conf is a conffile" \
        "dpkg-deb -I '$deb' conffiles | grep -qx /etc/chapar/chapard.conf"

lintian --fail-on error --no-tag-display-limit "$deb" >"$tmp/lintian" 2>&1
rc=$?
check "lintian: no error (exit $rc; $(grep -c '^E:' "$tmp/lintian") E: lines)" \
        "[ $rc -eq 0 ] && ! grep -q '^E:' '$tmp/lintian'" || cat "$tmp/lintian"

root=$tmp/root
dpkg -x "$deb" "$root"
lib=$root/usr/lib/$multiarch
check "the unpacked chapar.pc names /usr" "grep -qx 'prefix=/usr' '$lib/pkgconfig/chapar.pc'"
# in a real install the library is on the loader's path; in the scratch root we point at it
export LD_LIBRARY_PATH=$lib
check "the packaged chapar --version is 'chapar $version'" \
        "[ \"\$('$root/usr/bin/chapar' --version | head -n1)\" = 'chapar $version' ]"
check "the packaged chapar uses the packaged libchapar" \
        "ldd '$root/usr/bin/chapar' | grep -q 'libchapar.so.0 => $lib/'"
check "the packaged chapard --version is 'chapard $version'" \
        "[ \"\$('$root/usr/sbin/chapard' --version | head -n1)\" = 'chapard $version' ]"
check "the shipped config passes chapard check-config" \
        "'$root/usr/sbin/chapard' check-config '$root/etc/chapar/chapard.conf' >/dev/null"
CHAPARD_BIN=$root/usr/sbin/chapard relay_start R --config "$root/etc/chapar/chapard.conf"
check "the packaged chapard starts from the shipped config" "[ -n '${addr[R]:-}' ]"
head -c 200000 /dev/urandom >"$tmp/in"
t=$("$root/usr/bin/chapar" put "$tmp/in" --relay "${addr[R]}" --relay-key "${key[R]}" 2>"$tmp/put.err")
"$root/usr/bin/chapar" get "$t" -o "$tmp/got" >/dev/null 2>"$tmp/get.err"
check "the packaged chapar puts and gets a file through it" "cmp -s '$tmp/in' '$tmp/got'"
relay_stop R
unset LD_LIBRARY_PATH

# systemd-analyze verify in the scratch root: it needs the targets the unit names and /bin/kill
unit=$root/lib/systemd/system/chapard.service
mkdir -p "$root/bin"
cp /bin/kill "$root/bin/"
cp -n /lib/systemd/system/*.target "$root/lib/systemd/system/"
systemd-analyze verify --man=no --root="$root" chapard.service >"$tmp/verify" 2>&1
rc=$?
check "systemd-analyze verify accepts the unit (exit $rc)" "[ $rc -eq 0 ] && [ ! -s '$tmp/verify' ]" ||
        cat "$tmp/verify"
mv "$root/usr/sbin/chapard" "$tmp/chapard.away"
systemd-analyze verify --man=no --root="$root" chapard.service >"$tmp/verify" 2>&1
rc=$?
check "... and refuses it when /usr/sbin/chapard is missing (exit $rc)" \
        "[ $rc -ne 0 ] && grep -q '/usr/sbin/chapard' '$tmp/verify'"
mv "$tmp/chapard.away" "$root/usr/sbin/chapard"

directive() { grep -E "^$1=" "$unit" | tail -n1 | cut -d= -f2-; }
check "Type=notify" "[ '$(directive Type)' = notify ]"
check "ExecReload sends SIGHUP to the main process" "[ '$(directive ExecReload)' = '/bin/kill -HUP \$MAINPID' ]"
check "ProtectSystem=strict" "[ '$(directive ProtectSystem)' = strict ]"
check "NoNewPrivileges=yes" "[ '$(directive NoNewPrivileges)' = yes ]"
check "an empty capability bounding set" "grep -qx 'CapabilityBoundingSet=' '$unit'"
check "state in /var/lib/chapar" "[ '$(directive StateDirectory)' = chapar ] && grep -qx 'data = /var/lib/chapar' '$root/etc/chapar/chapard.conf'"
# TCP BBR without CAP_NET_ADMIN: the module loaded at boot, then allowed (the unit keeps its
# empty capability set)
check "modules-load.d loads tcp_bbr" "grep -qx tcp_bbr '$root/usr/lib/modules-load.d/chapar.conf'"
check "sysctl.d allows bbr next to reno and cubic" \
        "grep -qx -- '-net.ipv4.tcp_allowed_congestion_control = reno cubic bbr' '$root/usr/lib/sysctl.d/60-chapar.conf'"
check "the postinst loads and allows it before the service starts" \
        "dpkg-deb -e '$deb' '$tmp/control' && grep -q 'modprobe tcp_bbr' '$tmp/control/postinst' &&
         [ \$(grep -n 'systemd-sysctl 60-chapar.conf' '$tmp/control/postinst' | cut -d: -f1) -lt \$(grep -n 'chapard.service' '$tmp/control/postinst' | head -n1 | cut -d: -f1) ]"
check "its own user, made by sysusers" \
        "[ '$(directive User)' = chapar ] && grep -qE '^u chapar ' '$root/usr/lib/sysusers.d/chapar.conf'"
# three descriptors per connection (socket, a download's splice pipe) plus chapard's 64 spare
maxconn=$(sed -n 's/^#\?max_connections = //p' "$root/etc/chapar/chapard.conf")
nofile=$(directive LimitNOFILE)
check "LimitNOFILE ($nofile) fits max_connections ($maxconn): at least 3 x + 64" \
        "[ -n '$maxconn' ] && [ -n '$nofile' ] && [ $nofile -ge \$((3 * $maxconn + 64)) ]"

for page in man1/chapar.1 man5/chapard.conf.5 man8/chapard.8; do
        gz=$root/usr/share/man/$page.gz
        MANWIDTH=80 man -l "$gz" >"$tmp/page" 2>"$tmp/page.err"
        rc=$?
        zcat "$gz" | groff -man -Tutf8 -ww -z 2>"$tmp/groff.err"
        name=$(basename "$page")
        check "man -l $name renders (exit $rc, $(wc -l <"$tmp/page") lines) with no groff warning" \
                "[ $rc -eq 0 ] && grep -q '^NAME' '$tmp/page' && [ \$(wc -l <'$tmp/page') -ge 20 ] &&
                 [ ! -s '$tmp/page.err' ] && [ ! -s '$tmp/groff.err' ]" || cat "$tmp/page.err" "$tmp/groff.err"
done
finish
