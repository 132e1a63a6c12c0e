#!/usr/bin/env bash
# libchapar as installed. The shared library exports only the API chapar.h declares (nm -D), the
# build tree's chapar finds it by rpath, `cmake --install --prefix P` gives a chapar.pc naming P
# and binaries that run from P without LD_LIBRARY_PATH, and a program (pc_client.c) built with
# nothing but `pkg-config --cflags --libs chapar`, then with --static, puts a file through a real
# chapard and gets it back.
# Usage: install_prefix.sh BUILD-DIR SOURCE-DIR CHAPARD BUILD-TYPE
set -uo pipefail
build=$1
src=$2
chapard=$3
type=$4
. "$(dirname "$0")/lib.sh"
lib_tmp install
unset LD_LIBRARY_PATH
cc=${CC:-cc}
sanitize=()
[ "$type" = Sanitize ] && sanitize=(-fsanitize=address,undefined)

# the exported symbols: each a chapar_ function chapar.h declares, and each of those exported
exports() { nm -D --defined-only "$1" | awk '{print $3}' | sort -u; }
declared=$(grep -oE '^CHAPAR_API [^(]*\bchapar_[a-z_]+\(' "$src/client/chapar.h" |
        grep -oE 'chapar_[a-z_]+' | sort -u)
so=$build/lib/libchapar.so.0
# $1 a program: the libchapar.so.0 the loader picks for it, as a real path ("" if none)
libchapar_of() { ldd "$1" 2>/dev/null | awk '/libchapar\.so\.0 =>/ {print $3}' | xargs -r readlink -f; }
stray=$(comm -23 <(exports "$so") <(printf '%s\n' "$declared") | tr '\n' ' ')
unexported=$(comm -13 <(exports "$so") <(printf '%s\n' "$declared") | tr '\n' ' ')
check "libchapar.so exports nothing chapar.h does not declare (extra: ${stray:-none})" \
        "[ -z '$stray' ] && [ \$(printf '%s\n' \"\$declared\" | wc -l) -ge 15 ]"
check "libchapar.so exports every function chapar.h declares (missing: ${unexported:-none})" \
        "[ -z '$unexported' ]"

# the build tree: rpath
check "build/bin/chapar finds libchapar in the build tree without LD_LIBRARY_PATH" \
        "[ \"\$(libchapar_of '$build/bin/chapar')\" = \"\$(readlink -f '$so')\" ] &&
         '$build/bin/chapar' --version >/dev/null"

# an install into a temporary prefix
p=$tmp/prefix
cmake --install "$build" --prefix "$p" >"$tmp/install.log" 2>&1
check "cmake --install --prefix works" "[ $? -eq 0 ]"
for f in bin/chapar sbin/chapard include/chapar.h lib/libchapar.a lib/libchapar.so \
        lib/libchapar.so.0 lib/pkgconfig/chapar.pc share/man/man8/chapard.8 \
        share/man/man1/chapar.1 share/man/man5/chapard.conf.5 etc/chapar/chapard.conf; do
        check "installed $f" "[ -e '$p/$f' ]"
done
check "chapar.pc names the prefix installed into" "grep -qx 'prefix=$p' '$p/lib/pkgconfig/chapar.pc'"
check "the installed chapar runs without LD_LIBRARY_PATH, with the installed libchapar" \
        "[ \"\$(libchapar_of '$p/bin/chapar')\" = \"\$(readlink -f '$p/lib/libchapar.so.0')\" ] &&
         '$p/bin/chapar' --version >/dev/null"
check "the installed chapard runs" "'$p/sbin/chapard' --version | head -n1 | grep -q '^chapard '"
check "the installed libchapar.so exports only chapar.h's API" \
        "[ -z \"\$(comm -23 <(exports '$p/lib/libchapar.so.0') <(printf '%s\n' \"\$declared\"))\" ]"

export PKG_CONFIG_PATH=$p/lib/pkgconfig
# shellcheck disable=SC2046
"$cc" "${sanitize[@]}" -o "$tmp/pc_shared" "$src/tests/pc_client.c" \
        $(pkg-config --cflags --libs chapar) 2>"$tmp/cc_shared.log"
check "a program builds with \$(pkg-config --cflags --libs chapar) and runs with the prefix's libchapar" \
        "[ -x '$tmp/pc_shared' ] &&
         [ \"\$(libchapar_of '$tmp/pc_shared')\" = \"\$(readlink -f '$p/lib/libchapar.so.0')\" ]" ||
        cat "$tmp/cc_shared.log"
# --static: the archive must hold every object of ours it needs. A sanitized program cannot be
# -static; it names the archive instead of -lchapar (which would pick the .so)
if [ ${#sanitize[@]} -eq 0 ]; then
        "$cc" -static -o "$tmp/pc_static" "$src/tests/pc_client.c" \
                $(pkg-config --static --cflags --libs chapar) 2>"$tmp/cc_static.log"
else
        "$cc" "${sanitize[@]}" -o "$tmp/pc_static" "$src/tests/pc_client.c" \
                $(pkg-config --static --cflags --libs chapar | sed 's/-lchapar\b/-l:libchapar.a/') \
                2>"$tmp/cc_static.log"
fi
check "a program builds with \$(pkg-config --static --cflags --libs chapar), libchapar linked in" \
        "[ -x '$tmp/pc_static' ] && [ -z \"\$(libchapar_of '$tmp/pc_static')\" ]" ||
        cat "$tmp/cc_static.log"

relay_start R --log-level warn
head -c 300000 /dev/urandom >"$tmp/in"
for v in shared static; do
        "$tmp/pc_$v" "${addr[R]}" "${key[R]}" "$tmp/in" "$tmp/out_$v" >"$tmp/$v.out" 2>"$tmp/$v.err"
        rc=$?
        check "the $v program puts a file through chapard and gets it back (exit $rc: $(head -c 200 "$tmp/$v.err"))" \
                "[ $rc -eq 0 ] && cmp -s '$tmp/in' '$tmp/out_$v' && grep -q '^chapar://' '$tmp/$v.out'"
done
finish
