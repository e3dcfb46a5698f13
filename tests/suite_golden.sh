#!/bin/sh
# Golden tests of the front end, run from the repository root:
#   tests/golden/ir/NAME.ir       expected IR as the front end builds it
#                                  (lmc compile --dump-ir=after:front) for
#                                  NAME.lua, or for the graph whose path is
#                                  in NAME.graph; extra lmc flags in NAME.flags
#   tests/golden/errors/NAME.lua  a bad graph (or NAME.graph: the path of
#                                  one): lmc must exit with status 1, print
#                                  exactly NAME.err on stderr and write no
#                                  output file; extra flags in NAME.flags
#   generated/NAME.c              what lmc compile graphs/NAME.lua emits
#                                  (make generate), its output path aside
#   graphs/NAME.lua               compiles with any one pass switched off
# A mismatch prints a diff -u.  Ends with "N passed, N failed".
# UPDATE=1 rewrites the expected files from what lmc prints.
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }

flags_of() { [ -f "$1.flags" ] && cat "$1.flags"; }

for want in tests/golden/ir/*.ir; do
  [ -f "$want" ] || continue
  base=${want%.ir}
  if [ -f "$base.lua" ]; then graph=$base.lua; else graph=$(cat "$base.graph"); fi
  # shellcheck disable=SC2046
  $LMC compile "$graph" --emit=ir --dump-ir=after:front -o "$tmp/out.ir" $(flags_of "$base") \
    >"$tmp/got" 2>"$tmp/err"
  rc=$?
  [ -n "$UPDATE" ] && [ $rc -eq 0 ] && cp "$tmp/got" "$want"
  if [ $rc -ne 0 ]; then
    fail "$want: lmc exited with $rc"; cat "$tmp/err"
  elif ! diff -u "$want" "$tmp/got"; then
    fail "$want"
  else
    pass
  fi
done

for src in tests/golden/errors/*.lua tests/golden/errors/*.graph; do
  [ -f "$src" ] || continue
  base=${src%.*}
  [ "${src##*.}" = graph ] && src=$(cat "$src")
  rm -f "$tmp"/out.c*
  # shellcheck disable=SC2046
  $LMC compile "$src" -o "$tmp/out.c" $(flags_of "$base") >"$tmp/got.out" 2>"$tmp/got"
  rc=$?
  [ -n "$UPDATE" ] && cp "$tmp/got" "$base.err"
  if [ $rc -ne 1 ]; then
    fail "$src: exit status $rc, expected 1"; cat "$tmp/got"
  elif ls "$tmp"/out.c* >/dev/null 2>&1; then
    fail "$src: an output file was written"
  elif [ ! -f "$base.err" ]; then
    fail "$src: no $base.err"
  elif ! diff -u "$base.err" "$tmp/got"; then
    fail "$src"
  else
    pass
  fi
done

# generated/NAME.c is what `make generate` writes for graphs/NAME.lua: the
# emitted C of the current compiler, the output path it names aside
for want in generated/*.c; do
  [ -f "$want" ] || continue
  name=$(basename "$want" .c)
  if ! $LMC compile "graphs/$name.lua" -o "$tmp/gen.c" 2>"$tmp/err"; then
    fail "$want: lmc compile graphs/$name.lua failed"; cat "$tmp/err"
    continue
  fi
  sed 's| -o [^ "]*||' "$want" >"$tmp/gen.want"   # the output path, in the header and .flags
  sed 's| -o [^ "]*||' "$tmp/gen.c" >"$tmp/gen.got"
  if ! diff -u "$tmp/gen.want" "$tmp/gen.got" >"$tmp/gen.diff"; then
    fail "$want is stale: run make generate"; head -n 40 "$tmp/gen.diff"
  else
    pass
  fi
done

# every graph compiles with each pass switched off on its own (the
# configurations make tune tries): a pass may not assume another ran
for graph in graphs/*.lua; do
  bad=""
  for pass in $($LMC passes | awk 'NR > 1 { print $1 }'); do
    $LMC compile "$graph" --disable-pass="$pass" -o "$tmp/off.c" 2>"$tmp/err" || bad="$bad $pass"
  done
  if [ -n "$bad" ]; then
    fail "$graph: lmc compile failed with one of these passes off:$bad"; cat "$tmp/err"
  else
    pass
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
