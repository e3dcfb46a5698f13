#!/bin/sh
# Compile-cost tests, run from the repository root: graphs far larger than
# the defaults compile (each was quadratic or worse somewhere in the
# pipeline, or overflowed the C stack), and the emitted file is complete.
# What they assert is the behaviour, never a time; the times are in
# bench/compile_cost.sh.  Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

# compiles NAME GRAPH FLAGS...: exit 0, one complete C file (its last
# definition, the model table, is there) and no temporary left behind
compiles() {
  name=$1
  shift
  rm -rf "$tmp/out"
  mkdir "$tmp/out"
  "$LMC" compile "$@" -o "$tmp/out/x.c" 2>"$tmp/err"
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL: $name: lmc exited with $rc"; head -5 "$tmp/err"; failed=$((failed + 1))
  elif [ "$(ls "$tmp/out")" != x.c ] || ! grep -q '^const LmcModel lmc_model = {' "$tmp/out/x.c"; then
    echo "FAIL: $name: the output is not one complete C file"; ls "$tmp/out"; failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
}

# a chain of 60000 ops built in a Lua loop (last-step recursed once per op)
compiles "chain of 60000 ops" tests/cost/chain.lua -D n=30000
# more layers than one concat took (64), each a loop of its own
compiles "LSTM, 300 layers" graphs/lstm.lua -D nlayers=300
compiles "GRU, 100 layers" graphs/gru.lua -D nlayers=100
compiles "Transformer, 100 layers" graphs/transformer.lua -D nlayers=100

# (T, 1, 70000000) is 2450000000 elements at T = 35, past INT_MAX: its size
# in the emitted C is a long, 70000000L*T, never 70000000*T (an int product
# that wraps, T being an int)
compiles "a size past INT_MAX" tests/cost/chain.lua -D n=1 -D emsize=70000000 -D batch_size=1 -D eval_batch_size=1
if [ -f "$tmp/out/x.c" ] && grep -q '70000000L\*T' "$tmp/out/x.c" && ! grep -q '70000000\*T' "$tmp/out/x.c"; then
  passed=$((passed + 1))
else
  echo "FAIL: a size past INT_MAX is not a long in the emitted C"; grep -m3 '70000000' "$tmp/out/x.c"
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
