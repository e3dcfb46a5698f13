#!/bin/sh
# The emitted trainer end to end, from the repository root: lmc compiles
# graphs/lstm.lua, clang links it with the runtime, and the trainer's four
# commands run on real and synthetic corpora.  check_train covers the
# runtime against a hand-written model; this covers what only a compiled
# graph can show.  Each check prints PASS or FAIL with the figure it
# measured; the suite ends with "N passed, N failed" (about a minute).
#
#    1  lmc vocab data/wikitext-2 is 33278 words
#    2  make trainer with DATA= and LMCFLAGS= builds a tiny LSTM
#       (into a scratch copy of the build folder: build/lstm is untouched)
#    3  the tiny LSTM overfits tests/data/overfit, a repeated sentence
#    4  a trainer compiled for another vocabulary says how to recompile
#    5  a truncated checkpoint is refused, and left as it was
#    6  same seed and --threads: the same log, number for number
#    7  train --dry-run of the default LSTM on data/wikitext-2, with its
#       checkpoint save and reload
#    8  eval --json on the dry-run checkpoint: one line, loss, ppl, tokens
#    9  generate: the words asked for, 20 a line, same seed same text
#   10  eval and generate --threads 2: one thread's loss and text;
#       --threads 0 and x refused
#   11  row-grad (the embedding's gradient as the batch's rows) trains
#       to the dense gradient's parameters, bit for bit, SGD and AdamW
#   12  a graph of its own (tests/grad/objective.lua: an L2 penalty in its
#       objective, a dropout slot named drop): the log shows the loss, not
#       the objective; --dropout drop=P set and recorded, a plain
#       --dropout refused; the recompile hint names the graph file
#
# Environment: B (build folder, default build), LMC (default $B/lmc), SAN
# (extra compiler flags for the trainers, e.g. the sanitizers of `make
# sanitize`; the runtime in $B must have been built with them).
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
LMC=${LMC:-$B/lmc}
SAN=${SAN:-}
TRAINER_CFLAGS="-O2"
[ -n "$SAN" ] && TRAINER_CFLAGS="-O1 -g $SAN"
LMC_LIBDIR=${LMC_LIBDIR:-$(pwd)/graphs/lib}
OPENBLAS_NUM_THREADS=1
export LMC_LIBDIR OPENBLAS_NUM_THREADS
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_trainer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. tests/result.sh   # passed, failed, result, show

# field NAME FILE: the number after NAME in the last line of FILE holding it
field() {
  awk -v k="$1" 'i = index($0, k) { s = substr($0, i + length(k)); sub(/^ +/, "", s)
    v = match(s, /^[0-9.e+-]+/) ? substr(s, 1, RLENGTH) : "" } END { print v }' "$2"
}

# lt A B: A < B as numbers (awk; an empty or non-numeric A is false)
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a ~ /^[0-9.e+-]+$/ && a + 0 < b + 0) }'; }

sum() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- 1 vocab
n=$($LMC vocab data/wikitext-2 2>"$tmp/err" | cut -f1)
[ "$n" = 33278 ]
result 1 "lmc vocab data/wikitext-2" "${n:-no output} words (want 33278)" $?
[ "$n" = 33278 ] || show "$tmp/err"

# ------------------------------------------------ 2 make trainer DATA= LMCFLAGS=
# A scratch build folder holding copies of the compiler and the runtime
# (timestamps kept, and -o: make rebuilds none of them), so make writes
# only $tb/gen/lstm.c and $tb/lstm.
tb=$tmp/b
mkdir -p "$tb/obj/runtime"
cp -p "$LMC" "$tb/lmc" && cp -p "$B/liblmcrt.a" "$tb/" && cp -p "$B/obj/runtime/main.o" "$tb/obj/runtime/"
tiny="-D emsize=32 -D nhid=32 -D nlayers=1 -D bptt=8 -D batch_size=4 -D eval_batch_size=2"
make --no-print-directory -o "$tb/lmc" -o "$tb/liblmcrt.a" -o "$tb/obj/runtime/main.o" \
  trainer B="$tb" MODEL=lstm DATA=tests/data/overfit LMCFLAGS="$tiny" TRAINER_CFLAGS="$TRAINER_CFLAGS" \
  >"$tmp/make.log" 2>&1
rc=$?
T=$tb/lstm
"$T" info >"$tmp/info" 2>&1
grep -q "^vocabulary    9 words" "$tmp/info" && grep -q "^  emsize      32$" "$tmp/info" &&
  grep -q "^  nlayers     1$" "$tmp/info" && grep -q "ntoken=9 .*-D emsize=32" "$tmp/make.log"
ok=$?
[ $rc -eq 0 ] && [ $ok -eq 0 ]
result 2 "make trainer MODEL=lstm DATA=tests/data/overfit LMCFLAGS=..." \
  "exit $rc; info: $(grep '^vocabulary' "$tmp/info"), emsize $(field '  emsize' "$tmp/info")" $?
[ $rc -eq 0 ] && [ $ok -eq 0 ] || { show "$tmp/make.log"; show "$tmp/info"; }

# ------------------------------------------------------------ 3 overfitting
# "the quick brown fox jumps over the lazy dog" and <eos>, 160 times: 9
# words, 10 tokens a line.  An untrained model is at ln 9 = 2.20 nats; the
# best unigram model at 2.16; the best bigram model at 0.2 ln 2 = 0.139
# (after "the" comes "quick" or "lazy").  Below 0.10 the LSTM must have
# learnt the sentence, using its state.
bound=0.10
"$T" train --data tests/data/overfit --epochs 2 --dropout 0 --seed 1 --log-interval 10 \
  --save "$tmp/tiny.safetensors" >"$tmp/train.log" 2>&1
rc=$?
first=$(grep '| epoch ' "$tmp/train.log" | head -n 1 | sed -E 's/.*\| loss +([0-9.]+).*/\1/')
last=$(field '| loss' "$tmp/train.log")
"$T" eval --checkpoint "$tmp/tiny.safetensors" --data tests/data/overfit --json >"$tmp/eval" 2>&1
erc=$?
test_loss=$(sed -nE 's/^\{"loss": ([0-9.e+-]+),.*/\1/p' "$tmp/eval")
[ $rc -eq 0 ] && [ $erc -eq 0 ] && lt "$last" $bound && lt "$test_loss" $bound
result 3 "tiny LSTM overfits tests/data/overfit" \
  "train loss ${first:-?} -> ${last:-?}, test loss ${test_loss:-?} (bound $bound; untrained 2.20, bigram 0.139)" $?
[ $rc -eq 0 ] && [ $erc -eq 0 ] && lt "$last" $bound && lt "$test_loss" $bound || { show "$tmp/train.log"; show "$tmp/eval"; }

# ---------------------------------------------------- 4 another vocabulary
"$T" train --data tests/data/tiny --epochs 1 --save "$tmp/other.safetensors" >"$tmp/out" 2>"$tmp/err"
rc=$?
grep -q "has a vocabulary of 751 words, but this trainer was compiled for 9" "$tmp/err" &&
  grep -q "make trainer MODEL=lstm DATA=tests/data/tiny" "$tmp/err" && grep -q -- "-D ntoken=751" "$tmp/err"
ok=$?
[ $rc -ne 0 ] && [ $ok -eq 0 ] && [ ! -e "$tmp/other.safetensors" ]
result 4 "9-word trainer on tests/data/tiny (751 words)" "exit $rc, '$(grep -m1 -o 'make trainer[^)]*' "$tmp/err")'" $?
[ $rc -ne 0 ] && [ $ok -eq 0 ] || show "$tmp/err"

# ---------------------------------------------------- 5 truncated checkpoint
# Cut inside the length, the JSON header and the last tensor; eval,
# generate and train --resume (saving over it) each refuse it with a
# message naming the file, exit 1, and leave it as it was.
size=$(stat -c %s "$tmp/tiny.safetensors")
bad=0
msgs=0
for cut in 4 100 $((size - 1)); do
  ck=$tmp/cut$cut.safetensors
  head -c "$cut" "$tmp/tiny.safetensors" >"$ck"
  before=$(sum "$ck")
  for cmd in "eval --checkpoint $ck --data tests/data/overfit" "generate --checkpoint $ck --words 5 --outf $tmp/gen" \
             "train --data tests/data/overfit --epochs 1 --resume $ck --save $ck"; do
    # shellcheck disable=SC2086
    "$T" $cmd >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 1 ] && grep -q "^$ck: error: .*\(truncated\|too short\|beyond the file size\)" "$tmp/err" &&
       [ "$(sum "$ck")" = "$before" ]; then
      msgs=$((msgs + 1))
    else
      bad=1
      echo "  $cmd: exit $rc"; show "$tmp/err"
    fi
  done
done
[ $bad -eq 0 ]
result 5 "truncated checkpoints refused, unmodified" \
  "$msgs/9 refusals, e.g. '$(sed "s|$tmp/||" "$tmp/err" | head -n 1)'" $?

# ------------------------------------------------------------ 6 determinism
# Log lines without their timings (ms/batch, tok/s, time:), and the CSV's
# losses, of two runs with one seed; a third seed must differ somewhere.
run() {
  "$T" train --data tests/data/overfit --epochs 2 --max-batches 12 --log-interval 1 --threads 2 --seed "$1" \
    --save "$tmp/det.safetensors" --log-csv "$tmp/det$2.csv" >"$tmp/det$2.raw" 2>&1 || echo "exit $?" >>"$tmp/det.rc"
  sed -E 's/ms\/batch +[0-9.]+ \|//; s/ \| tok\/s +[0-9.]+//; s/time: +[0-9.]+s//' "$tmp/det$2.raw" >"$tmp/det$2.log"
  cut -d, -f1-5 "$tmp/det$2.csv" >>"$tmp/det$2.log"
}
run 7 a
run 7 b
run 8 c
lines=$(grep -c '| epoch ' "$tmp/deta.log")
cmp -s "$tmp/deta.log" "$tmp/detb.log" && ! cmp -s "$tmp/deta.log" "$tmp/detc.log" && [ "$lines" -ge 20 ] &&
  [ ! -e "$tmp/det.rc" ]
result 6 "same seed and --threads 2, same log" \
  "$lines log lines and $(($(wc -l <"$tmp/deta.csv") - 1)) CSV rows identical; another seed differs" $?
[ -e "$tmp/det.rc" ] && { cat "$tmp/det.rc"; show "$tmp/deta.raw"; }
cmp -s "$tmp/deta.log" "$tmp/detb.log" || diff -u "$tmp/deta.log" "$tmp/detb.log" | head -n 20

# ---------------------------------------------- 7 dry run of the default LSTM
D=$tmp/default
"$LMC" compile graphs/lstm.lua -D ntoken=33278 -o "$D.c" >"$tmp/out" 2>&1 &&
  # shellcheck disable=SC2086
  clang $TRAINER_CFLAGS -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags openblas 2>/dev/null) -Iruntime -o "$D" "$D.c" \
    "$B/obj/runtime/main.o" "$B/liblmcrt.a" $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm \
    >>"$tmp/out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  start=$(date +%s)
  "$D" train --data data/wikitext-2 --dry-run --save "$tmp/dry.safetensors" >"$tmp/dry.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
fi
grep -q "saved and reloaded" "$tmp/dry.log" 2>/dev/null && grep -q "| End of training | test loss" "$tmp/dry.log" &&
  [ -s "$tmp/dry.safetensors" ]
ok=$?
[ $rc -eq 0 ] && [ $ok -eq 0 ]
result 7 "train --dry-run, default LSTM on data/wikitext-2" \
  "exit $rc in ${secs:-?}s, test loss $(field '| test loss' "$tmp/dry.log" 2>/dev/null), $(grep -o '([0-9]* parameters)' "$tmp/dry.log" 2>/dev/null)" $?
[ $rc -eq 0 ] && [ $ok -eq 0 ] || { show "$tmp/out"; show "$tmp/dry.log"; }

# ------------------------------------------------------------ 8 eval --json
# The full test split takes minutes; a corpus with the same dictionary
# (train.txt holds all three files, so first-seen order is unchanged) and
# a 60-line test split takes seconds.
mkdir "$tmp/wt"
cat data/wikitext-2/train.txt data/wikitext-2/valid.txt data/wikitext-2/test.txt >"$tmp/wt/train.txt"
head -n 60 data/wikitext-2/test.txt >"$tmp/wt/test.txt"
head -n 60 data/wikitext-2/valid.txt >"$tmp/wt/valid.txt"
ntok=$(awk '{ n += NF + 1 } END { print n }' "$tmp/wt/test.txt")
want=$(((ntok / 10 - 1) * 10))   # batchify into 10 columns; the last row has no target
"$D" eval --checkpoint "$tmp/dry.safetensors" --data "$tmp/wt" --json >"$tmp/json" 2>"$tmp/err"
rc=$?
line=$(cat "$tmp/json")
echo "$line" | grep -Eq '^\{"loss": [0-9.e+-]+, "ppl": [0-9.e+-]+, "tokens": [0-9]+, "seconds": [0-9.]+\}$' &&
  [ "$(wc -l <"$tmp/json")" -eq 1 ] &&
  echo "$line" | awk -v want="$want" -F'[:,}]' '{ l = $2; p = $4; t = $6
    exit !(l > 9 && l < 11 && (p - exp(l)) ^ 2 < (1e-9 * p) ^ 2 && t == want) }'
result 8 "eval --json on the dry-run checkpoint" "exit $rc, $line (want $want tokens, loss near ln 33278 = 10.41)" $?
[ $rc -eq 0 ] || show "$tmp/err"

# --------------------------------------------------------------- 9 generate
gen() { "$D" generate --checkpoint "$tmp/dry.safetensors" --words "$1" --seed "$2" --outf "$3" 2>"$tmp/err"; }
gen 45 11 "$tmp/g1" >/dev/null && gen 45 11 "$tmp/g2" >/dev/null && gen 45 12 "$tmp/g3" >/dev/null &&
  gen 40 11 - >"$tmp/g4"
rc=$?
shape=$(awk '{ printf "%s%d", (NR > 1 ? "," : ""), NF }' "$tmp/g1" 2>/dev/null)
words=$(wc -w <"$tmp/g1" 2>/dev/null)
[ $rc -eq 0 ] && [ "$shape" = "20,20,5" ] && cmp -s "$tmp/g1" "$tmp/g2" && ! cmp -s "$tmp/g1" "$tmp/g3" &&
  [ "$(wc -w <"$tmp/g4")" -eq 40 ] && [ "$(awk 'END { print NR }' "$tmp/g4")" -eq 2 ]
result 9 "generate --words 45, seeds 11, 11, 12" \
  "exit $rc, $words words in lines of $shape; same seed same text, another seed other text; --outf -: $(wc -w <"$tmp/g4") words" $?
[ $rc -eq 0 ] || show "$tmp/err"

# ------------------------------------------------------- 10 --threads 2
# The BLAS calls and kernels split rows, not sums, among threads: the
# loss within 1e-6 of check 8's, and check 9's text for seed 11.
"$D" eval --checkpoint "$tmp/dry.safetensors" --data "$tmp/wt" --json --threads 2 >"$tmp/json2" 2>"$tmp/err"
rc=$?
line2=$(cat "$tmp/json2")
"$D" generate --checkpoint "$tmp/dry.safetensors" --words 45 --seed 11 --outf "$tmp/g5" --threads 2 2>>"$tmp/err"
grc=$?
refused=0
for bad in 0 x; do
  "$D" eval --checkpoint "$tmp/dry.safetensors" --data "$tmp/wt" --threads "$bad" >"$tmp/out" 2>>"$tmp/err"
  [ $? -eq 2 ] && refused=$((refused + 1))
  "$D" generate --checkpoint "$tmp/dry.safetensors" --words 5 --outf "$tmp/g6" --threads "$bad" >"$tmp/out" 2>>"$tmp/err"
  [ $? -eq 2 ] && refused=$((refused + 1))
done
[ $rc -eq 0 ] && [ $grc -eq 0 ] && [ $refused -eq 4 ] && cmp -s "$tmp/g1" "$tmp/g5" &&
  printf '%s\n%s\n' "$line" "$line2" | awk -F'[:,}]' 'NR == 1 { l = $2; t = $6 }
    NR == 2 { exit !(l > 0 && ($2 - l) ^ 2 < (1e-6 * l) ^ 2 && $6 == t) }'
result 10 "eval and generate --threads 2" \
  "exit $rc and $grc, $line2 (1 thread: loss $(echo "$line" | cut -d, -f1 | cut -d' ' -f2)), $(cmp -s "$tmp/g1" "$tmp/g5" && echo same || echo other) text; $refused/4 bad --threads refused" $?
[ $rc -eq 0 ] && [ $grc -eq 0 ] || show "$tmp/err"

# --------------------------------------------------------- 11 row-grad
# The embedding table's gradient as the batch's rows gives the dense
# gradient's training bit for bit: a 2-layer LSTM on tests/data/tiny (751
# words, 20 rows a batch), compiled with and without the pass (and with it
# but without plan-memory: rows computed in the arena, copied), 6 batches
# with clipping on (clip 0.05: every step clips), with SGD and with AdamW;
# the checkpoints' tensor bytes must match.  The rows build must be the
# one whose gradient block is smaller (lmc --stats).
rg="-D ntoken=751 -D emsize=16 -D nhid=12 -D nlayers=2 -D bptt=5 -D batch_size=4 -D eval_batch_size=2"
# data BYTES FILE: a safetensors file's tensor bytes (after its header)
data() { n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
bad=0
for v in rows dense noplan; do
  flags=""
  [ $v = dense ] && flags="--disable-pass=row-grad"
  [ $v = noplan ] && flags="--disable-pass=plan-memory"   # rows computed in the arena, copied to c->grad
  # shellcheck disable=SC2086
  "$LMC" compile graphs/lstm.lua $rg $flags -o "$tmp/rg_$v.c" >"$tmp/out" 2>&1 &&
    "$LMC" compile graphs/lstm.lua $rg $flags --stats -o "$tmp/rg_$v.c" >"$tmp/stats_$v" 2>&1 &&
    clang $TRAINER_CFLAGS -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags openblas 2>/dev/null) -Iruntime \
      -o "$tmp/rg_$v" "$tmp/rg_$v.c" "$B/obj/runtime/main.o" "$B/liblmcrt.a" \
      $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm >>"$tmp/out" 2>&1 || { bad=1; show "$tmp/out"; }
  for opt in sgd adamw; do
    "$tmp/rg_$v" train --data tests/data/tiny --epochs 1 --max-batches 6 --clip 0.05 --optimizer $opt --seed 3 \
      --save "$tmp/rg_${v}_$opt.safetensors" >"$tmp/rg_$v.log" 2>&1 || { bad=1; show "$tmp/rg_$v.log"; }
    data "$tmp/rg_${v}_$opt.safetensors" >"$tmp/rg_${v}_$opt.bin"
  done
done
grep -q "lmc_unique_ids" "$tmp/rg_rows.c" && grep -q "lmc_unique_ids" "$tmp/rg_noplan.c" &&
  ! grep -q "lmc_unique_ids" "$tmp/rg_dense.c" &&
  grep -q "as the batch's rows" "$tmp/stats_rows" && ! grep -q "as the batch's rows" "$tmp/stats_dense"
used=$?
same=0
for opt in sgd adamw; do
  [ -s "$tmp/rg_rows_$opt.bin" ] && cmp -s "$tmp/rg_rows_$opt.bin" "$tmp/rg_dense_$opt.bin" && same=$((same + 1))
  [ -s "$tmp/rg_noplan_$opt.bin" ] && cmp -s "$tmp/rg_noplan_$opt.bin" "$tmp/rg_dense_$opt.bin" && same=$((same + 1))
done
[ $bad -eq 0 ] && [ $used -eq 0 ] && [ $same -eq 4 ]
result 11 "row-grad: the same parameters as the dense gradient, with and without plan-memory" \
  "$same/4 (optimizer, build) pairs bit-identical after 6 clipped steps ($(wc -c <"$tmp/rg_rows_sgd.bin") bytes); $(grep "^gradients" "$tmp/stats_rows" | sed 's/ \{2,\}/ /g') against $(grep "^gradients" "$tmp/stats_dense" | sed 's/.*: *//')" $?

# ---------------------------------------------- 12 objective, slots, hint
# Two builds, the L2 penalty 0 and 5; at a learning rate too small to move
# a weight, both log the same losses (the penalty is in what they
# minimise, not in what they report) and the same valid loss.
ok=0
for l2 in 0 5; do
  "$LMC" compile tests/grad/objective.lua -D ntoken=9 -D l2=$l2 -o "$tmp/l2_$l2.c" >"$tmp/out" 2>&1 &&
    # shellcheck disable=SC2086
    clang $TRAINER_CFLAGS -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags openblas 2>/dev/null) -Iruntime \
      -o "$tmp/l2_$l2" "$tmp/l2_$l2.c" "$B/obj/runtime/main.o" "$B/liblmcrt.a" \
      $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm >>"$tmp/out" 2>&1 &&
    "$tmp/l2_$l2" train --data tests/data/overfit --epochs 1 --lr 1e-30 --log-interval 1 \
      --dropout drop=0 --save "$tmp/l2_$l2.safetensors" --log-csv "$tmp/l2_$l2.csv" >"$tmp/l2_$l2.log" 2>&1 ||
    { ok=1; show "$tmp/out"; show "$tmp/l2_$l2.log"; }
done
tail -n +2 "$tmp/l2_0.csv" 2>/dev/null | cut -d, -f4 >"$tmp/l2_0.loss"
tail -n +2 "$tmp/l2_5.csv" 2>/dev/null | cut -d, -f4 >"$tmp/l2_5.loss"
[ $ok -eq 0 ] && [ "$(wc -l <"$tmp/l2_0.loss")" -eq 2 ] && cmp -s "$tmp/l2_0.loss" "$tmp/l2_5.loss" &&
  [ "$(grep 'valid loss' "$tmp/l2_0.log" | sed 's/time: *[0-9.]*s//')" = \
    "$(grep 'valid loss' "$tmp/l2_5.log" | sed 's/time: *[0-9.]*s//')" ]
same=$?
# the slot's probability in the checkpoint's metadata (compiled 0.1)
grep -aq '"drop":"0"' "$tmp/l2_5.safetensors"
rec=$?
"$tmp/l2_5" train --data tests/data/overfit --dropout 0.2 >"$tmp/out" 2>"$tmp/plain"
rc_plain=$?
grep -q "no slot named 'dropout'; its slot: drop (set one: --dropout NAME=P)" "$tmp/plain"
plain=$?
"$tmp/l2_5" train --data tests/data/tiny --epochs 1 --save "$tmp/l2_other.safetensors" >"$tmp/out" 2>"$tmp/hint"
grep -q "recompile for it: make trainer GRAPH=tests/grad/objective.lua DATA=tests/data/tiny (or: lmc compile tests/grad/objective.lua -D ntoken=751" "$tmp/hint"
hint=$?
[ $same -eq 0 ] && [ $rec -eq 0 ] && [ $rc_plain -eq 2 ] && [ $plain -eq 0 ] && [ $hint -eq 0 ]
result 12 "a graph's own objective, dropout slot and file" \
  "logged losses with L2 0 and 5: $(tr '\n' ' ' <"$tmp/l2_0.loss")/ $(tr '\n' ' ' <"$tmp/l2_5.loss")(same: $same); drop recorded: $rec; plain --dropout: exit $rc_plain; hint: $(grep -o 'make trainer GRAPH=[^ ]*' "$tmp/hint")" $?
[ $same -eq 0 ] && [ $rec -eq 0 ] && [ $plain -eq 0 ] && [ $hint -eq 0 ] ||
  { show "$tmp/plain"; show "$tmp/hint"; }

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
