#!/bin/sh
# What the programs write, and what they read besides graphs and checkpoints,
# run from the repository root (tests/run.sh runs it after the check
# binaries, which build the fake trainer):
#   output options (lmc compile -o, --emit=ir|dot -o, --stats -o; a
#   trainer's --log-csv, generate --outf) refuse a device node, a FIFO and
#   a symlink before any work, and leave them as they were; every device
#   here is one made with mknod in a temporary folder
#   lmc's -o refuses the input graph; -o - writes the C to stdout
#   a full standard output (/dev/full, opened by the shell) is an error for
#   lmc compile -o -, lmc vocab, lmc passes, a trainer's info, eval --json
#   and generate --outf -
#   a graph or corpus file that is a device or FIFO is refused at once
#   an empty output name is a usage error; an output that is the
#   checkpoint read or saved is refused
# Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}
FAKE=${B:-build}/tests/fake_trainer
DATA=tests/data/tiny_train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "PASS $passed $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; [ -f "$tmp/err" ] && sed 's/^/  | /' "$tmp/err"; }

# Fresh special files: $tmp/dev (a null device), $tmp/fifo, $tmp/link -> $tmp/target.
specials() {
  rm -rf "$tmp/dev" "$tmp/fifo" "$tmp/link" "$tmp/target"
  mknod "$tmp/dev" c 1 3 && mkfifo "$tmp/fifo" && ln -s "$tmp/target" "$tmp/link"
}
# Whether the special files are still what specials() made, nothing written through the link.
intact() {
  [ -c "$tmp/dev" ] && [ -p "$tmp/fifo" ] && [ -L "$tmp/link" ] && [ ! -e "$tmp/target" ] &&
    [ ! -e "$tmp/dev.tmp" ] && [ ! -e "$tmp/fifo.tmp" ] && [ ! -e "$tmp/link.tmp" ]
}
# rc WANT NAME CMD...: CMD (under a 20 s timeout, stdin closed) exits WANT
# and prints "refusing to write" on stderr, the specials intact.
refused() {
  want=$1 name=$2
  shift 2
  timeout 20 "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ $rc -ne "$want" ]; then
    fail "$name: exit $rc, expected $want"
  elif ! intact; then
    fail "$name: a special file was replaced or written through"; ls -l "$tmp" | sed 's/^/  | /'
  elif ! grep -q "refusing to write" "$tmp/err"; then
    fail "$name: no 'refusing to write' message"
  else
    return 0
  fi
  return 1
}

if [ ! -x "$FAKE" ]; then
  fail "$FAKE: not built (make build/tests/check_train)"
  echo "$passed passed, $failed failed"
  exit 1
fi

# 1. lmc compile: -o, --emit=ir -o, --emit=dot -o, --stats -o at each kind of special file
n=0
bad=
for flags in "" "--emit=ir" "--emit=dot" "--stats" "--emit=ir --dump-ir=after:front"; do
  for target in dev fifo link; do
    specials
    # shellcheck disable=SC2086
    refused 1 "lmc compile $flags -o $target" "$LMC" compile graphs/lstm.lua $flags -o "$tmp/$target" || bad=1
    # refused before the front end: nothing else on stderr, nothing on stdout
    if [ -z "$bad" ] && { [ "$(wc -l <"$tmp/err")" -ne 1 ] || [ -s "$tmp/out" ]; }; then
      fail "lmc compile $flags -o $target: more output than the refusal"; bad=1
    fi
    n=$((n + 1))
  done
done
[ -z "$bad" ] && pass "lmc compile -o a device node, FIFO or symlink: $n/$n refused with exit 1 before any work, left as they were: '$(cat "$tmp/err")'"

# 2. a symlink planted at OUT.tmp is neither followed nor replaced
specials
ln -s "$tmp/target" "$tmp/out.c.tmp"
if "$LMC" compile graphs/lstm.lua -o "$tmp/out.c" >"$tmp/out" 2>"$tmp/err"; then
  fail "lmc compile -o out.c with a symlink at out.c.tmp: exit 0"
elif [ -e "$tmp/target" ] || [ ! -L "$tmp/out.c.tmp" ] || [ -e "$tmp/out.c" ]; then
  fail "lmc compile -o out.c with a symlink at out.c.tmp: written through or replaced"
else
  pass "lmc compile -o out.c with a symlink at out.c.tmp: refused, '$(cat "$tmp/err")'"
fi
rm -f "$tmp/out.c.tmp"

# 3. the output is the graph: refused, the graph unchanged
cp graphs/rnn_tanh.lua "$tmp/g.lua"
ln -s g.lua "$tmp/g2.lua"
"$LMC" compile "$tmp/g.lua" -o "$tmp/g.lua" >"$tmp/out" 2>"$tmp/err"
rc1=$?
"$LMC" compile "$tmp/g2.lua" -o "$tmp/./g.lua" >"$tmp/out" 2>>"$tmp/err"
rc2=$?
if [ $rc1 -ne 1 ] || [ $rc2 -ne 1 ]; then
  fail "lmc compile g.lua -o g.lua: exit $rc1 and $rc2, expected 1"
elif ! cmp -s graphs/rnn_tanh.lua "$tmp/g.lua" || ! grep -q "would replace the graph file" "$tmp/err"; then
  fail "lmc compile g.lua -o g.lua: the graph changed or no message"
else
  pass "lmc compile g.lua -o g.lua (and through a symlink): exit 1, graph unchanged, '$(head -n 1 "$tmp/err")'"
fi

# 4. -o - writes the C to stdout; the same C as -o FILE but for the flags line
"$LMC" compile graphs/rnn_tanh.lua -o - >"$tmp/stdout.c" 2>"$tmp/err"
rc1=$?
"$LMC" compile graphs/rnn_tanh.lua -o "$tmp/file.c" 2>>"$tmp/err"
rc2=$?
if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then
  fail "lmc compile -o -: exit $rc1, -o FILE: exit $rc2"
elif [ -e ./- ] || ! grep -q "lmc_model" "$tmp/stdout.c" ||
  [ "$(grep -v -e '-o -' -e "-o $tmp/file.c" "$tmp/stdout.c" | cksum)" != "$(grep -v -e '-o -' -e "-o $tmp/file.c" "$tmp/file.c" | cksum)" ]; then
  fail "lmc compile -o -: not the C of -o FILE on stdout"
else
  pass "lmc compile -o -: $(wc -c <"$tmp/stdout.c") bytes of C on stdout, those of -o FILE but for the flags, no file '-'"
fi

# 5. a full standard output is an error
for cmd in "compile graphs/rnn_tanh.lua -o -" "compile graphs/rnn_tanh.lua --emit=ir" "vocab $DATA" "passes" "--version"; do
  # shellcheck disable=SC2086
  "$LMC" $cmd >/dev/full 2>"$tmp/err"
  rc=$?
  if [ $rc -eq 0 ] || ! grep -q "lmc: error: cannot write standard output" "$tmp/err"; then
    fail "lmc $cmd >/dev/full: exit $rc"; bad5=1
  fi
done
[ -z "$bad5" ] && pass "lmc compile -o -, --emit=ir, vocab, passes, --version >/dev/full: exit 1, '$(cat "$tmp/err")'"

# 6. a graph that is a device or a FIFO is refused at once
specials
start=$(date +%s)
timeout 20 "$LMC" compile /dev/zero -o "$tmp/z.c" </dev/null >"$tmp/out" 2>"$tmp/err"
rc1=$?
timeout 20 "$LMC" compile "$tmp/fifo" -o "$tmp/z.c" </dev/null >"$tmp/out" 2>>"$tmp/err"
rc2=$?
timeout 20 "$LMC" compile "$tmp" -o "$tmp/z.c" </dev/null >"$tmp/out" 2>>"$tmp/err"
rc3=$?
secs=$(($(date +%s) - start))
if [ $rc1 -ne 1 ] || [ $rc2 -ne 1 ] || [ $rc3 -ne 1 ] || [ "$(grep -c 'must be a regular file' "$tmp/err")" -ne 3 ]; then
  fail "lmc compile /dev/zero, a FIFO, a folder: exit $rc1, $rc2, $rc3 in ${secs}s"
elif [ -e "$tmp/z.c" ] || ! intact; then
  fail "lmc compile /dev/zero: an output was written or the FIFO changed"
else
  pass "lmc compile /dev/zero, a FIFO, a folder: exit 1 at once (${secs}s), '$(head -n 1 "$tmp/err")'"
fi

# 7. an empty output name is a usage error
"$LMC" compile graphs/rnn_tanh.lua -o "" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -ne 2 ] || ! grep -q "^lmc: error: -o needs a file name" "$tmp/err"; then
  fail "lmc compile -o '': exit $rc"
else
  pass "lmc compile -o '': exit 2, '$(head -n 1 "$tmp/err")'"
fi

# 8. the trainer: --log-csv and generate --outf at special files, refused before any work
"$FAKE" train --data $DATA --epochs 1 --save "$tmp/ck.safetensors" >"$tmp/out" 2>"$tmp/err" ||
  fail "fake trainer: train for a checkpoint failed"
bad=
for target in dev fifo link; do
  specials
  refused 1 "train --log-csv $target" "$FAKE" train --data $DATA --epochs 1 --save "$tmp/new.safetensors" \
    --log-csv "$tmp/$target" || bad=1
  if [ -z "$bad" ] && { [ -e "$tmp/new.safetensors" ] || grep -q "end of epoch" "$tmp/out"; }; then
    fail "train --log-csv $target: trained before refusing"; bad=1
  fi
  specials
  refused 1 "generate --outf $target" "$FAKE" generate --checkpoint "$tmp/ck.safetensors" --words 5 \
    --outf "$tmp/$target" || bad=1
done
[ -z "$bad" ] && pass "train --log-csv, generate --outf at a device node, FIFO, symlink: 6/6 refused with exit 1 before any work, left as they were"

# 9. --log-csv is written as training goes (a stale regular log is started anew,
# no PATH.tmp); a resumed run keeps the old rows
printf 'stale\n' >"$tmp/log.csv"
"$FAKE" train --data $DATA --epochs 1 --save "$tmp/r.safetensors" --log-interval 1 --log-csv "$tmp/log.csv" \
  >"$tmp/out" 2>"$tmp/err"
rc1=$?
rows1=$(wc -l <"$tmp/log.csv" 2>/dev/null || echo 0)
"$FAKE" train --data $DATA --epochs 2 --save "$tmp/r.safetensors" --log-interval 1 --resume "$tmp/r.safetensors" \
  --log-csv "$tmp/log.csv" >"$tmp/out" 2>>"$tmp/err"
rc2=$?
rows2=$(wc -l <"$tmp/log.csv" 2>/dev/null || echo 0)
if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then
  fail "train --log-csv, then --resume: exit $rc1, $rc2"
elif [ "$rows1" -lt 2 ] || [ "$rows2" -le "$rows1" ] || [ "$(grep -c '^epoch,' "$tmp/log.csv")" -ne 1 ] || grep -q stale "$tmp/log.csv" ||
  [ -e "$tmp/log.csv.tmp" ] || [ "$(grep -c '^2,' "$tmp/log.csv")" -lt 1 ]; then
  fail "train --log-csv, then --resume: $rows1 rows, then $rows2 (one header, epoch 2 appended, no log.csv.tmp)"
else
  pass "train --log-csv: $rows1 lines, $rows2 after --resume (one header, epoch 2 appended), no log.csv.tmp left"
fi

# 10. a full standard output is an error for info, eval --json, generate --outf -
bad=
for cmd in "info" "eval --checkpoint $tmp/ck.safetensors --data $DATA --json" \
  "generate --checkpoint $tmp/ck.safetensors --words 50 --outf -"; do
  # shellcheck disable=SC2086
  "$FAKE" $cmd >/dev/full 2>"$tmp/err"
  rc=$?
  if [ $rc -eq 0 ] || ! grep -q "error: cannot write standard output" "$tmp/err"; then
    fail "fake_trainer $cmd >/dev/full: exit $rc"; bad=1
  fi
done
[ -z "$bad" ] && pass "trainer info, eval --json, generate --outf - >/dev/full: exit 1, '$(grep error "$tmp/err")'"

# 11. empty file names are usage errors, before any work
bad=
for opt in "--save=" "--log-csv=" "--data=" "--resume="; do
  "$FAKE" train --data $DATA --epochs 1 "$opt" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ $rc -ne 2 ] || ! grep -q "^fake_trainer: error: ${opt%=}: expected a file name, got ''" "$tmp/err" ||
    [ -s "$tmp/out" ]; then
    fail "train $opt: exit $rc"; bad=1
  fi
done
"$FAKE" generate --checkpoint "$tmp/ck.safetensors" --outf "" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -ne 2 ] && { fail "generate --outf '': exit $rc"; bad=1; }
[ -z "$bad" ] && pass "train --save= --log-csv= --data= --resume=, generate --outf '': exit 2, '$(cat "$tmp/err")'"

# 12. a corpus file that is a FIFO is refused at once
mkdir "$tmp/corpus"
cp $DATA/valid.txt $DATA/test.txt "$tmp/corpus/"
mkfifo "$tmp/corpus/train.txt"
timeout 20 "$FAKE" train --data "$tmp/corpus" --epochs 1 --save "$tmp/c.safetensors" </dev/null >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -ne 1 ] || ! grep -q "train.txt: error: not a regular file (it is a FIFO)" "$tmp/err"; then
  fail "train --data with a FIFO at train.txt: exit $rc"
else
  pass "train --data with a FIFO at train.txt: exit 1 at once, '$(cat "$tmp/err")'"
fi

# 13. an output that is the checkpoint is refused, the checkpoint unchanged
cp "$tmp/ck.safetensors" "$tmp/keep.safetensors"
"$FAKE" generate --checkpoint "$tmp/ck.safetensors" --words 5 --outf "$tmp/ck.safetensors" >"$tmp/out" 2>"$tmp/err"
rc1=$?
"$FAKE" train --data $DATA --epochs 1 --save "$tmp/ck.safetensors" --log-csv "$tmp/ck.safetensors" >"$tmp/out" 2>>"$tmp/err"
rc2=$?
"$FAKE" train --data $DATA --epochs 2 --resume "$tmp/ck.safetensors" --save "$tmp/other.safetensors" \
  --log-csv "$tmp/./ck.safetensors" >"$tmp/out" 2>>"$tmp/err"
rc3=$?
if [ $rc1 -ne 1 ] || [ $rc2 -ne 1 ] || [ $rc3 -ne 1 ]; then
  fail "generate --outf CK, train --log-csv SAVE, --log-csv RESUME: exit $rc1, $rc2, $rc3, expected 1"
elif ! cmp -s "$tmp/ck.safetensors" "$tmp/keep.safetensors" || [ -e "$tmp/other.safetensors" ] ||
  [ "$(grep -c "needs a file of its own" "$tmp/err")" -ne 3 ]; then
  fail "generate --outf CK, train --log-csv SAVE: the checkpoint changed or no message"
else
  pass "generate --outf CK, train --log-csv SAVE or RESUME: exit 1, the checkpoint unchanged, '$(head -n 1 "$tmp/err")'"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
