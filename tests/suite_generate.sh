#!/bin/sh
# generate as people use it, end to end on two tiny compiled models, from
# the repository root: an LSTM that learnt tests/data/overfit (one sentence,
# "the quick brown fox jumps over the lazy dog", repeated) and a Transformer
# trained for an epoch on tests/data/tiny.
#
#    1  make trainer builds both (into a scratch copy of the build folder)
#    2  a fixed seed gives fixed words, with every option; another seed others
#    3  --top-k 1 is greedy: the sentence the LSTM learnt, at any
#       temperature and seed, and what --temperature 1e-3 draws
#    4  a tiny --top-p is --top-k 1
#    5  --samples N: the samples differ, each is reproducible, sample i is
#       the same in a run of 3 and of 10 (two rounds of the batch-8 sample
#       program); whether sample 0 is the one-sample run's text (batch 8
#       against batch 1: equal up to rounding) is said, not checked
#    6  --prompt-file: the words of --prompt; unknown words as <unk>
#    7  bad values refused: --top-k 0, --top-p 0 and 1.5, --samples 0 and
#       100001, both prompts, a missing, empty, binary prompt file, a folder
#    8  the Transformer's step program (key/value caches, compiler/kv_cache.c)
#       and the window recomputed for every word (--no-kv-cache) draw the
#       same words over 40 words, a window of 6 sliding 34 times, for four
#       seeds, a prompt of one word and one of 9, and --samples 10 and 3 (the
#       steps program against the sample program, batch 8: two rounds, and
#       one round partly filled), their log-probabilities within 1e-5
#       (LMC_TEST_LOGP); the LSTM has no step program, nor a Transformer
#       whose attention is not causal (triu_mask() replaced by const(0))
#
# Environment: B (build folder, default build), LMC (default $B/lmc), SAN
# (extra compiler flags for the trainers, as suite_trainer.sh).
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
LMC=${LMC:-$B/lmc}
SAN=${SAN:-}
TRAINER_CFLAGS="-O2"
[ -n "$SAN" ] && TRAINER_CFLAGS="-O1 -g $SAN"
LMC_LIBDIR=${LMC_LIBDIR:-$(pwd)/graphs/lib}
OPENBLAS_NUM_THREADS=1
export LMC_LIBDIR OPENBLAS_NUM_THREADS
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_generate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. tests/result.sh   # passed, failed, result, show

# ---------------------------------------------------------------- 1 build
tb=$tmp/b
mkdir -p "$tb/obj/runtime"
cp -p "$LMC" "$tb/lmc" && cp -p "$B/liblmcrt.a" "$tb/" && cp -p "$B/obj/runtime/main.o" "$tb/obj/runtime/"
trainer() {   # trainer MODEL DATA FLAGS
  make --no-print-directory -o "$tb/lmc" -o "$tb/liblmcrt.a" -o "$tb/obj/runtime/main.o" \
    trainer B="$tb" MODEL="$1" DATA="$2" LMCFLAGS="$3" TRAINER_CFLAGS="$TRAINER_CFLAGS" >>"$tmp/make.log" 2>&1
}
small="-D emsize=16 -D nhid=16 -D bptt=6 -D batch_size=4 -D eval_batch_size=8"
trainer lstm tests/data/overfit "$small -D nlayers=1" && trainer transformer tests/data/tiny "$small -D nlayers=2 -D nhead=2"
rc=$?
L=$tb/lstm
X=$tb/transformer
"$L" train --data tests/data/overfit --epochs 3 --dropout 0 --seed 1 --save "$tmp/l.st" >"$tmp/train.log" 2>&1 &&
  "$X" train --data tests/data/tiny --epochs 1 --seed 1 --save "$tmp/x.st" >>"$tmp/train.log" 2>&1
trc=$?
[ $rc -eq 0 ] && [ $trc -eq 0 ]
result 1 "tiny LSTM and Transformer built and trained" "make exit $rc, train exit $trc" $?
[ $rc -eq 0 ] || show "$tmp/make.log"
[ $trc -eq 0 ] || show "$tmp/train.log"

# gen MODEL CKPT OUT ARGS...: generate into OUT, stderr to $tmp/err
gen() {
  m=$1 ck=$2 out=$3
  shift 3
  "$m" generate --checkpoint "$ck" --outf "$out" "$@" 2>>"$tmp/err"
}

# ------------------------------------------------------ 2 fixed seed
opts="--words 30 --temperature 0.8 --top-k 50 --top-p 0.95 --samples 2"
gen "$X" "$tmp/x.st" "$tmp/f1" $opts --seed 5 && gen "$X" "$tmp/x.st" "$tmp/f2" $opts --seed 5 &&
  gen "$X" "$tmp/x.st" "$tmp/f3" $opts --seed 6
rc=$?
[ $rc -eq 0 ] && cmp -s "$tmp/f1" "$tmp/f2" && ! cmp -s "$tmp/f1" "$tmp/f3" && [ "$(wc -w <"$tmp/f1")" -eq 60 ]
result 2 "a fixed seed gives fixed words" \
  "exit $rc; seed 5 twice: $(cmp -s "$tmp/f1" "$tmp/f2" && echo same || echo other) text, seed 6: $(cmp -s "$tmp/f1" "$tmp/f3" && echo same || echo other), $(wc -w <"$tmp/f1") words" $?

# ------------------------------------------------------ 3 top-k 1 is greedy
want="brown fox jumps over the lazy dog <eos> the quick brown fox"
ok=0
for args in "--temperature 1 --seed 1" "--temperature 0.3 --seed 2" "--temperature 7 --seed 3"; do
  gen "$L" "$tmp/l.st" "$tmp/g" --words 12 --prompt "the quick" --top-k 1 $args || ok=1
  [ "$(cat "$tmp/g")" = "$want " ] || ok=1
done
gen "$L" "$tmp/l.st" "$tmp/g1" --words 12 --prompt "the quick" --temperature 1e-3 --seed 4 || ok=1
gen "$X" "$tmp/x.st" "$tmp/k1" --words 40 --top-k 1 --temperature 0.5 --seed 1 &&
  gen "$X" "$tmp/x.st" "$tmp/k2" --words 40 --top-k 1 --temperature 9 --seed 1 &&
  gen "$X" "$tmp/x.st" "$tmp/k3" --words 40 --temperature 1e-3 --seed 1 || ok=1
[ $ok -eq 0 ] && [ "$(cat "$tmp/g1")" = "$want " ] && cmp -s "$tmp/k1" "$tmp/k2" && cmp -s "$tmp/k1" "$tmp/k3"
result 3 "--top-k 1 is greedy" \
  "LSTM after 'the quick': '$(cat "$tmp/g")' (want '$want'); Transformer at 0.5, 9 and 1e-3: $(cmp -s "$tmp/k1" "$tmp/k2" && cmp -s "$tmp/k1" "$tmp/k3" && echo same || echo other) text" $?

# ------------------------------------------------------ 4 tiny top-p
gen "$X" "$tmp/x.st" "$tmp/p1" --words 40 --top-p 1e-9 --temperature 2 --seed 8
rc=$?
[ $rc -eq 0 ] && cmp -s "$tmp/k1" "$tmp/p1"
result 4 "--top-p 1e-9 is --top-k 1" "exit $rc, $(cmp -s "$tmp/k1" "$tmp/p1" && echo same || echo other) text" $?

# ------------------------------------------------------ 5 --samples
# sample FILE I: the I-th sample (0-based) of a file, samples apart by an empty line
sample() { awk -v want="$2" 'BEGIN { RS = "" } NR == want + 1 { print }' "$1"; }
gen "$X" "$tmp/x.st" "$tmp/s1" --words 25 --seed 3 && gen "$X" "$tmp/x.st" "$tmp/s3" --words 25 --seed 3 --samples 3 &&
  gen "$X" "$tmp/x.st" "$tmp/s10" --words 25 --seed 3 --samples 10 &&
  gen "$X" "$tmp/x.st" "$tmp/s10b" --words 25 --seed 3 --samples 10
rc=$?
n10=$(awk 'BEGIN { RS = "" } END { print NR }' "$tmp/s10")
distinct=$(for i in 0 1 2 3 4 5 6 7 8 9; do sample "$tmp/s10" $i | tr '\n' ' '; echo; done | sort -u | wc -l)
same=0
for i in 0 1 2; do [ "$(sample "$tmp/s3" $i)" = "$(sample "$tmp/s10" $i)" ] || same=1; done
[ $rc -eq 0 ] && [ "$n10" -eq 10 ] && [ "$distinct" -eq 10 ] && [ $same -eq 0 ] && cmp -s "$tmp/s10" "$tmp/s10b" &&
  [ "$(sample "$tmp/s10" 9 | wc -w)" -eq 25 ]
result 5 "--samples 3 and 10" \
  "exit $rc, $n10 samples, $distinct distinct; samples 0-2 of 3 and 10: $([ $same -eq 0 ] && echo same || echo other); sample 0 $([ "$(sample "$tmp/s1" 0)" = "$(sample "$tmp/s10" 0)" ] && echo is || echo is not) the one-sample text" $?
[ $rc -eq 0 ] || show "$tmp/err"

# ------------------------------------------------------ 6 --prompt-file
printf 'the\n  quick\n' >"$tmp/prompt"
printf 'the quack quick\n' >"$tmp/prompt2"
: >"$tmp/err"
gen "$L" "$tmp/l.st" "$tmp/pf" --words 12 --prompt-file "$tmp/prompt" --seed 9 &&
  gen "$L" "$tmp/l.st" "$tmp/pp" --words 12 --prompt "the quick" --seed 9 &&
  gen "$L" "$tmp/l.st" "$tmp/pu" --words 12 --prompt-file "$tmp/prompt2" --seed 9 2>/dev/null
rc=$?
# the overfit corpus has no <unk>: an unknown word is refused
[ $rc -ne 0 ] && cmp -s "$tmp/pf" "$tmp/pp" && grep -q "'quack' is not in the vocabulary, which has no <unk>" "$tmp/err"
result 6 "--prompt-file is --prompt" \
  "$(cmp -s "$tmp/pf" "$tmp/pp" && echo same || echo other) text; unknown word: $(grep -o "'quack'.*" "$tmp/err")" $?

# ------------------------------------------------------ 7 bad values
printf 'a\000b' >"$tmp/binary"
: >"$tmp/empty"
bad=0
n=0
for a in "--top-k 0|--top-k: expected a positive integer" "--top-p 0|--top-p: expected a probability in (0, 1]" \
  "--top-p 1.5|--top-p: expected a probability in (0, 1]" "--samples 0|--samples: expected an integer in [1, 100000]" \
  "--samples 100001|--samples: expected an integer in [1, 100000]" \
  "--prompt x --prompt-file $tmp/prompt|--prompt and --prompt-file exclude each other" \
  "--prompt-file $tmp/none|cannot open: No such file" "--prompt-file $tmp/empty|holds no words" \
  "--prompt-file $tmp/binary|a binary file" "--prompt-file $tmp|not a regular file"; do
  args=${a%%|*} msg=${a#*|}
  n=$((n + 1))
  "$L" generate --checkpoint "$tmp/l.st" --words 3 --outf "$tmp/bad" $args >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ $rc -eq 0 ] || ! grep -qF -- "$msg" "$tmp/err" || [ -e "$tmp/bad" ]; then
    bad=$((bad + 1))
    echo "    $args: exit $rc, $(cat "$tmp/err")"
  fi
done
[ $bad -eq 0 ]
result 7 "bad generate values refused" "$((n - bad))/$n refused with their message, no output written" $?

# ------------------------------------------------------ 8 key/value cache
ok=0
echo "the game is a new game of the year" >"$tmp/long"   # 9 words: the window slides at once
for args in "--seed 1" "--seed 2 --temperature 2" "--seed 3 --top-p 0.9 --prompt the" "--seed 4 --prompt-file $tmp/long" \
  "--seed 5 --samples 10" "--seed 6 --samples 3 --prompt-file $tmp/long"; do
  gen "$X" "$tmp/x.st" "$tmp/c" --words 40 $args && gen "$X" "$tmp/x.st" "$tmp/u" --words 40 --no-kv-cache $args &&
    cmp -s "$tmp/c" "$tmp/u" || ok=1
done
LMC_TEST_LOGP=$tmp/lc gen "$X" "$tmp/x.st" "$tmp/c" --words 40 --seed 4 &&
  LMC_TEST_LOGP=$tmp/lu gen "$X" "$tmp/x.st" "$tmp/u" --words 40 --seed 4 --no-kv-cache || ok=1
diff=$(paste -d' ' "$tmp/lc" "$tmp/lu" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) { d = $i - $(i + n)
  if (d < 0) d = -d; if (d > m) m = d } } END { printf "%.3g", m }')
rows=$(awk 'END { print NR }' "$tmp/lc")
sed 's/triu_mask()/const(0)/' graphs/transformer.lua >"$tmp/bidir.lua"
"$LMC" compile "$tmp/bidir.lua" -D ntoken=20 -D emsize=8 -D nhid=8 -D bptt=4 -o "$tmp/bidir.c" 2>>"$tmp/err" || ok=1
grep -q "step_run" "$tb/gen/transformer.c" && grep -q "steps_run" "$tb/gen/transformer.c" &&
  ! grep -q "step_run" "$tb/gen/lstm.c" && ! grep -q "step_run" "$tmp/bidir.c" || ok=1
[ $ok -eq 0 ] && [ "$rows" -eq 40 ] && awk -v d="$diff" 'BEGIN { exit !(d + 0 <= 1e-5) }'
result 8 "cached and uncached Transformer generation" \
  "$([ $ok -eq 0 ] && echo same || echo other) words (7 runs of 40, window 6, two of them 10 and 3 samples at batch 8); log-probabilities of $rows words: max |diff| $diff (tolerance 1e-5); step program only where causal" $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
