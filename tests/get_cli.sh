#!/usr/bin/env bash
# chapar get is safe by default, against a real chapard on port 0: an existing file is never
# overwritten (the sender's name gets " (1)", " (2)" before its extension; an existing -o PATH
# is refused with exit 4 and the file left as it was); hostile names from the sender (a path, a
# dotfile, control characters, a Windows device name, invalid UTF-8, a name as long as a file
# name can be, only dots) are rewritten into one safe file in the current directory; a symlink
# planted at a partial file's name is not followed (its target stays as it was), nor is a FIFO
# there waited on; -o - writes the file, verified, to stdout and nothing else; -o DIR saves the
# sender's name inside DIR.
# Usage: get_cli.sh CHAPARD CHAPAR
set -uo pipefail
chapard=$1
chapar=$2
. "$(dirname "$0")/lib.sh"
lib_tmp get

relay_start R --log-level warn
raddr=${addr[R]}

# The one place a put's trust flags are chosen: a chapar that asks for an explicit trust decision
# for a new relay gets --trust-new-relay; one that pins on first use gets nothing.
trust=()
"$chapar" --help 2>&1 | grep -q -- --trust-new-relay && trust=(--trust-new-relay)
put() { # FILE [put args]: prints the ticket
        "$chapar" put "$@" --relay "$raddr" "${trust[@]}"
}

# a receiving directory per case: what get writes lands there and nowhere else
recv() { # NAME: makes $tmp/NAME and prints its path
        mkdir -p "$tmp/$1" && echo "$tmp/$1"
}
files_in() { (cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort); }

mkdir -p "$tmp/send"
printf 'the new photo\n' >"$tmp/send/photo.jpg"
t=$(put "$tmp/send/photo.jpg") || bad "put photo.jpg"

# --- never overwrite ---------------------------------------------------------------------------
d=$(recv exist)
printf 'the old photo\n' >"$d/photo.jpg"
out=$(cd "$d" && "$chapar" get "$t" 2>"$tmp/err")
rc=$?
check "get beside an existing photo.jpg exits 0 (exit $rc)" "[ $rc -eq 0 ]"
check "the existing photo.jpg is untouched" "[ \"\$(cat '$d/photo.jpg')\" = 'the old photo' ]"
check "the download is saved as 'photo (1).jpg' (stdout: $out)" \
        "[ '$out' = 'photo (1).jpg' ] && cmp -s '$tmp/send/photo.jpg' '$d/photo (1).jpg'"
out=$(cd "$d" && "$chapar" get "$t" 2>/dev/null)
check "a second get is saved as 'photo (2).jpg' (stdout: $out)" \
        "[ '$out' = 'photo (2).jpg' ] && cmp -s '$tmp/send/photo.jpg' '$d/photo (2).jpg'"
check "no partial files are left" "! ls '$d' | grep -q chapar-part"

printf 'keep me\n' >"$d/mine.txt"
(cd "$d" && "$chapar" get "$t" -o mine.txt >/dev/null 2>"$tmp/err")
rc=$?
check "-o an existing file exits 4 (exit $rc)" "[ $rc -eq 4 ]"
check "and says the file exists: $(head -c 200 "$tmp/err")" "grep -q 'mine.txt' '$tmp/err' && grep -qi 'exists' '$tmp/err'"
check "and leaves it as it was" "[ \"\$(cat '$d/mine.txt')\" = 'keep me' ]"
ln -s "$d/mine.txt" "$d/link.txt"
(cd "$d" && "$chapar" get "$t" -o link.txt >/dev/null 2>&1)
rc=$?
check "-o a symlink exits 4 and its target is untouched (exit $rc)" \
        "[ $rc -eq 4 ] && [ -L '$d/link.txt' ] && [ \"\$(cat '$d/mine.txt')\" = 'keep me' ]"

# --- -o DIR ------------------------------------------------------------------------------------
d=$(recv intodir)
out=$("$chapar" get "$t" -o "$d" 2>/dev/null)
check "-o DIR saves the sender's name inside it ($out)" "[ '$out' = '$d/photo.jpg' ] && cmp -s '$tmp/send/photo.jpg' '$d/photo.jpg'"

# --- hostile names -----------------------------------------------------------------------------
# Each sender's name (given with --name; the content is the same) and the name get must pick.
long=$(printf 'n%.0s' $(seq 1 251)).txt # 255 bytes: as long as a file name may be
hostile_get() { # LABEL SENDER-NAME EXPECTED
        local d t out rc want=$3
        hn=$((hn + 1))
        d=$(recv "h$hn")
        if ! t=$(put "$tmp/send/photo.jpg" --name "$2" 2>"$tmp/err"); then
                bad "put --name for $1: $(head -c 200 "$tmp/err")"
                return
        fi
        out=$(cd "$d" && "$chapar" get "$t" 2>"$tmp/err")
        rc=$?
        check "$1 becomes '$(printf %q "$3")' (exit $rc, got $(printf %q "$out"))" \
                "[ $rc -eq 0 ] && [ \"\$out\" = \"\$want\" ] && [ \"\$(files_in '$d')\" = \"\$want\" ] && cmp -s '$tmp/send/photo.jpg' \"$d/\$want\""
}
hn=0
# the same through a file of that name (put sends its base name), so no flag is involved
hostile_file() { # LABEL FILE-NAME EXPECTED
        local d t out rc want=$3
        hn=$((hn + 1))
        d=$(recv "h$hn")
        mkdir -p "$tmp/send/f$hn" && cp "$tmp/send/photo.jpg" "$tmp/send/f$hn/$2"
        t=$(put "$tmp/send/f$hn/$2" 2>/dev/null) || { bad "put of a file named $1"; return; }
        out=$(cd "$d" && "$chapar" get "$t" 2>"$tmp/err")
        rc=$?
        check "a file named $1 becomes '$(printf %q "$3")' (exit $rc, got $(printf %q "$out"))" \
                "[ $rc -eq 0 ] && [ \"\$out\" = \"\$want\" ] && [ \"\$(files_in '$d')\" = \"\$want\" ]"
}
hostile_file ".bashrc" ".bashrc" "_bashrc"
hostile_file "with a newline" $'a\nb' "a_b"
hostile_file "CON.txt" "CON.txt" "_CON.txt"
hostile_file "in Latin-1" $'caf\xe9.txt' "caf_.txt"
hostile_get "a path ../x" "../x" "x"
hostile_get "a path a/../../b" "a/../../b" "b"
hostile_get "a backslash path" 'C:\Users\me\x.txt' "x.txt"
hostile_get "a dotfile .bashrc" ".bashrc" "_bashrc"
hostile_get "only dots" "..." "chapar-download"
hostile_get "a newline" $'a\nb' "a_b"
hostile_get "an escape sequence" $'x\e[31m.txt' "x_[31m.txt"
hostile_get "DEL" $'a\x7fb' "a_b"
hostile_get "a Windows device name CON.txt" "CON.txt" "_CON.txt"
hostile_get "a device name in lower case lpt1" "lpt1" "_lpt1"
hostile_get "trailing dots and spaces" "report.pdf. . " "report.pdf"
hostile_get "invalid UTF-8" $'caf\xe9.txt' "caf_.txt"
hostile_get "an overlong UTF-8 slash" $'a\xc0\xafb' "a__b"
hostile_get "valid UTF-8 is kept" "résumé.pdf" "résumé.pdf"
hostile_get "a 255-byte name" "$long" "$long"
hostile_get "nothing at all" "" "chapar-download"

# the same 255-byte name again: its " (1)" fits by shortening the name, the extension kept
d=$(recv long2)
t2=$(put "$tmp/send/photo.jpg" --name "$long" 2>/dev/null)
(cd "$d" && "$chapar" get "$t2" >/dev/null 2>&1)
out=$(cd "$d" && "$chapar" get "$t2" 2>/dev/null)
check "a second 255-byte name keeps .txt and fits 255 bytes (${#out} bytes)" \
        "[ \${#out} -le 255 ] && [[ \"\$out\" == *' (1).txt' ]] && cmp -s '$tmp/send/photo.jpg' \"$d/\$out\""

# --- a symlink planted at a partial file's name ------------------------------------------------
d=$(recv plant)
printf 'victim\n' >"$tmp/victim"
ln -s "$tmp/victim" "$d/photo.jpg.chapar-part"
ln -s "$tmp/victim" "$d/photo.jpg.chapar-part.state.tmp"
out=$(cd "$d" && "$chapar" get "$t" 2>"$tmp/err")
check "symlinks at the partial names: the target is untouched" "[ \"\$(cat '$tmp/victim')\" = victim ]"
check "and the file still arrives whole ($out)" "[ -f '$d/photo.jpg' ] && [ ! -L '$d/photo.jpg' ] && cmp -s '$tmp/send/photo.jpg' '$d/photo.jpg'"
d=$(recv plant-o)
ln -s "$tmp/victim" "$d/out.bin.chapar-part"
"$chapar" get "$t" -o "$d/out.bin" >/dev/null 2>&1
check "the same with -o: the target is untouched" "[ \"\$(cat '$tmp/victim')\" = victim ] && cmp -s '$tmp/send/photo.jpg' '$d/out.bin'"
d=$(recv plant-fifo)
mkfifo "$d/photo.jpg.chapar-part.state"
(cd "$d" && timeout 20 "$chapar" get "$t" >/dev/null 2>"$tmp/err")
rc=$?
check "a FIFO at the state file's name is not waited on (exit $rc)" \
        "[ $rc -eq 0 ] && cmp -s '$tmp/send/photo.jpg' '$d/photo.jpg'"

# --- a sender's names that are a partial download's ----------------------------------------------
# Files a sender named like the partial files of photo.jpg, downloaded first into the same
# directory, must not make a later get of photo.jpg "resume" from them: the state file says every
# chunk of that file id is written, the partial file holds the sender's bytes.
d=$(recv collide)
fid=$(echo "$t" | sed -n 's,^chapar://[^/]*/[0-9a-f]*/\([0-9a-f]*\)#.*,\1,p')
{ echo "$fid" | xxd -r -p; printf '\001\000\000\000\001'; } >"$tmp/send/state"
printf 'not the photo\n' >"$tmp/send/evil"
te=$(put "$tmp/send/evil" --name photo.jpg.chapar-part) || bad "put evil"
ts=$(put "$tmp/send/state" --name photo.jpg.chapar-part.state) || bad "put state"
(cd "$d" && "$chapar" get "$te" >/dev/null 2>&1 && "$chapar" get "$ts" >/dev/null 2>&1)
out=$(cd "$d" && "$chapar" get "$t" 2>"$tmp/err")
check "names of partial files from a sender do not stand in for a download ($out)" \
        "[ -n '$fid' ] && [ -n '$out' ] && cmp -s '$tmp/send/photo.jpg' \"$d/\$out\""
check "and they are saved under other names ($(files_in "$d" | tr '\n' ' '))" \
        "! files_in '$d' | grep -Eq '[.]chapar-part([.]state)?\$'"

# --- -o - --------------------------------------------------------------------------------------
head -c $((3 * 1024 * 1024 + 77)) /dev/urandom >"$tmp/send/big"
tb=$(put "$tmp/send/big" --chunk-size 65536) || bad "put big"
d=$(recv stdout)
(cd "$d" && "$chapar" get "$tb" -o - >"$tmp/big.out" 2>"$tmp/err")
rc=$?
check "-o - exits 0 (exit $rc)" "[ $rc -eq 0 ]"
check "-o - writes the file to stdout, in order (49 chunks)" "cmp -s '$tmp/send/big' '$tmp/big.out'"
check "-o - creates no file" "[ -z \"\$(files_in '$d')\" ]"
(cd "$d" && "$chapar" get "${tb%?}$([ "${tb: -1}" = 0 ] && echo 1 || echo 0)" -o - >"$tmp/bad.out" 2>/dev/null)
rc=$?
check "-o - with a wrong key exits 3 and writes nothing (exit $rc)" "[ $rc -eq 3 ] && [ ! -s '$tmp/bad.out' ]"
(cd "$tmp" && "$chapar" get "$t" -o - --json >/dev/null 2>&1)
check "-o - with --json is a usage error" "[ $? -eq 1 ]"

relay_stop R
finish
