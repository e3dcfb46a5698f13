#!/bin/sh
# docs/writing-a-model.md cannot rot: what it shows is what lmc does.
#
#   - a ```lua block whose first line is "-- docs/examples/NAME.lua: ..."
#     is that file, whole; one whose first line is "-- docs/examples/NAME.lua
#     (excerpt)" holds lines of it, in the file's order
#   - every "$ command" line of a ```console block (a trailing "\"
#     continues it on the next line) runs, in order, from a scratch tree:
#     the repository's folders linked in, build/ a copy of $B's compiler and
#     runtime, so the commands write only there.  What it prints (stdout
#     and stderr) must be the lines shown under it, up to the next "$":
#     spaces squeezed, integers equal, decimals within 1%, timings
#     (ms/batch, tok/s, time:, rel. error, seconds) not compared.  It must exit
#     with status 0, or non-zero where the lines shown hold "error:".
#
# UPDATE=1 rewrites the shown outputs with what the commands printed.
# Environment: B (build folder, default build), SAN (the sanitizers of
# make sanitize, for the trainers make builds).  Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
doc=docs/writing-a-model.md
B=${B:-build}
root=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_tutorial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { passed=$((passed + 1)); printf "PASS %s\n" "$1"; }
fail() { failed=$((failed + 1)); printf "FAIL: %s\n" "$1"; }

# ------------------------------------------------------ the graph listings
# blocks.awk writes each listing to $tmp/lua/N with its doc line in N.at
mkdir -p "$tmp/lua" "$tmp/cmd"
awk -v dir="$tmp/lua" '
  /^```/ { if (inlua) { close(f); inlua = 0; next } if ($0 == "```lua") { inlua = 1; n++; f = dir "/" n; print NR > (f ".at"); close(f ".at"); next } }
  inlua { print > f }' "$doc"
for f in "$tmp"/lua/*; do
  case $f in *.at) continue ;; esac
  [ -f "$f" ] || continue
  at=$doc:$(cat "$f.at")
  head=$(head -n 1 "$f")
  file=$(echo "$head" | sed -nE 's/^-- (docs\/examples\/[A-Za-z0-9_]+\.lua)(:| \(excerpt\)).*/\1/p')
  [ -n "$file" ] || continue
  if [ ! -f "$file" ]; then
    fail "$at: the listing names $file, which does not exist"
  elif echo "$head" | grep -q '(excerpt)'; then
    # each line after the header, found in the file after the previous one
    if tail -n +2 "$f" | awk -v file="$file" '
         { want = $0; while ((getline line < file) > 0) if (line == want) next
           print "  not in " file " (in this order): " want; bad = 1; exit }
         END { exit bad }'; then
      pass "$at: the excerpt of $file is in it"
    else
      fail "$at: the excerpt of $file is not the file's text"
    fi
  elif diff -u "$file" "$f" >"$tmp/diff"; then
    pass "$at: the listing is $file"
  else
    fail "$at: the listing differs from $file"; sed 's/^/    /' "$tmp/diff" | head -n 20
  fi
done

# ---------------------------------------------------- the console commands
# each command to $tmp/cmd/N (its text), N.want (the lines shown), N.at
awk -v dir="$tmp/cmd" '
  function flush() { if (n) close(dir "/" n ".want") }
  /^```/ { if (incon) { incon = 0; flush(); next } if ($0 == "```console") { incon = 1; next } }
  !incon { next }
  cont { sub(/^ +/, " "); cmd = cmd $0; if (!sub(/\\$/, "", cmd)) { cont = 0; printf "%s\n", cmd > (dir "/" n); close(dir "/" n) } next }
  /^\$ / { flush(); n++; print NR > (dir "/" n ".at"); close(dir "/" n ".at"); printf "" > (dir "/" n ".want")
           cmd = substr($0, 3); if (sub(/\\$/, "", cmd)) { cont = 1; next }
           printf "%s\n", cmd > (dir "/" n); close(dir "/" n); next }
  n { print > (dir "/" n ".want") }' "$doc"

# the scratch tree
tree=$tmp/tree
mkdir -p "$tree/build"
for f in *; do [ "$f" = build ] || ln -s "$root/$f" "$tree/$f"; done
cp -p "$B/lmc" "$B/liblmc.a" "$B/liblmcrt.a" "$tree/build/" && cp -Rp "$B/obj" "$tree/build/" ||
  { fail "copying $B into the scratch tree (run make first)"; echo "$passed passed, $failed failed"; exit 1; }
unset MAKEFLAGS MFLAGS MAKELEVEL LMC_LIBDIR
[ -n "$SAN" ] && TRAINER_CFLAGS="-O1 -g $SAN" && export TRAINER_CFLAGS
OPENBLAS_NUM_THREADS=1
export OPENBLAS_NUM_THREADS

# what may differ between runs and machines
mask() {
  sed -E 's/ +/ /g; s/ $//; s|ms/batch [0-9.]+|ms/batch ~|g; s/time: [0-9.]+s/time: ~s/g;
          s/rel\. error [0-9.e+-]+/rel. error ~/g; s/"seconds": [0-9.e+-]+/"seconds": ~/g; s|tok/s [0-9]+|tok/s ~|g' "$1"
}

# same WANT GOT: line for line, integers equal, decimals within 1%
same() {
  mask "$1" >"$tmp/w"; mask "$2" >"$tmp/g"
  awk '
    function shape(s, nums,   k) { k = 0
      while (match(s, /[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?/)) {
        nums[++k] = substr(s, RSTART, RLENGTH); s = substr(s, 1, RSTART - 1) "#" substr(s, RSTART + RLENGTH) }
      nums[0] = k; return s }
    function close_enough(a, b,   d, m) {
      if (a !~ /[.eE]/ && b !~ /[.eE]/) return a == b
      d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; if (b > m) m = b
      return d <= 0.01 * m }
    FILENAME == ARGV[1] { want[++nw] = $0; next }
    { got[++ng] = $0 }
    END {
      for (i = 1; i <= (nw > ng ? nw : ng); i++) {
        sw = shape(want[i], wn); sg = shape(got[i], gn); ok = (i <= nw && i <= ng && sw == sg)
        for (k = 1; ok && k <= wn[0]; k++) ok = close_enough(wn[k], gn[k])
        if (!ok) { printf "    line %d shown: %s\n    line %d got:   %s\n", i, want[i], i, got[i]; exit 1 }
      }
    }' "$tmp/w" "$tmp/g"
}

n=1
while [ -f "$tmp/cmd/$n" ]; do
  at=$doc:$(cat "$tmp/cmd/$n.at")
  cmd=$(cat "$tmp/cmd/$n")
  (cd "$tree" && sh -c "$cmd") >"$tmp/cmd/$n.got" 2>&1
  rc=$?
  if grep -q 'error:' "$tmp/cmd/$n.want"; then want_fail=1; else want_fail=0; fi
  if [ $want_fail -eq 1 ] && [ $rc -eq 0 ]; then
    fail "$at: \$ $cmd: exit status 0, but the tutorial shows an error"
  elif [ $want_fail -eq 0 ] && [ $rc -ne 0 ]; then
    fail "$at: \$ $cmd: exit status $rc"; sed 's/^/    /' "$tmp/cmd/$n.got" | tail -n 20
  elif same "$tmp/cmd/$n.want" "$tmp/cmd/$n.got" >"$tmp/diff"; then
    pass "$at: \$ $cmd"
  else
    fail "$at: \$ $cmd prints other lines than the tutorial shows"; cat "$tmp/diff"
  fi
  n=$((n + 1))
done

# UPDATE=1: each command's shown lines become what it printed
if [ -n "$UPDATE" ]; then
  awk -v dir="$tmp/cmd" '
    /^```/ { if (incon) { incon = 0; skip = 0 } else if ($0 == "```console") incon = 1; print; next }
    !incon { print; next }
    cont { print; if ($0 !~ /\\$/) { cont = 0; dump() } next }
    /^\$ / { n++; print; skip = 1; if ($0 ~ /\\$/) cont = 1; else dump(); next }
    skip { next }
    { print }
    function dump(  line) { while ((getline line < (dir "/" n ".got")) > 0) print line; close(dir "/" n ".got") }' \
    "$doc" >"$tmp/doc" && cp "$tmp/doc" "$doc"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
