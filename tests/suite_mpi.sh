#!/bin/sh
# Data-parallel training over Open MPI (runtime/dist.c, make trainer
# MPI=1), from the repository root, at tiny sizes on tests/data/tiny with
# dropout 0.3 (the masks keyed on the global column): two ranks at batch 4
# against one process at batch 8.  Each
# check prints PASS or FAIL with its figure; the suite ends with "N passed,
# N failed" (about 50 s on this 2-core machine under load).
#
#    1  make trainer MPI=1 builds the LSTM and Transformer trainers at batch 4 and 8
#  2-3  SGD, AdamW (clipped): 21 batches (20 logged), np=2 against np=1: every
#       batch's loss within 1e-5 relative, the parameters of the two
#       checkpoints within 1e-5, their valid loss in the single-process
#       trainer within 1e-5 relative (so the np=2 checkpoint loads there);
#       the header names the ranks, and the valid and test losses of the
#       two logs (evaluated over the ranks' columns) read the same
#    4  the np=2 checkpoints' metadata is what np=1 at batch 8 writes
#    5  eval under mpirun: np=2 equals np=1 at twice the eval batch (loss
#       within 1e-6, tokens, the printed line)
#    6  generate under mpirun: rank 0 alone writes, the single-process text
#    7  --resume of the AdamW checkpoints: rank 0 reads, broadcasts; the
#       second epoch's losses of np=2 and np=1 within 1e-5 relative
#    8  a rank that fails (rank 0's --save in a missing folder) ends the
#       job non-zero, its message naming the rank
#    9  rank 1 killed (SIGKILL) during a save: the job ends non-zero, the
#       previous checkpoint is there byte for byte, evaluates and resumes
#   10  ranks whose parameters drift apart (started with different --lr):
#       the check after every step (--check-every 1) names the step and
#       the ranks, and the job ends non-zero
#   11  the Transformer (its attention masks keyed by an offset), dropout
#       on: np=2 against np=1, losses and parameters within 1e-5
#   12  the gradient reduced in 1 KiB buckets (LMC_BUCKET_KB=1: about 100,
#       parameters split across them) gives 2's SGD parameters bit for bit;
#       the log lines end in "| comm N.N%" under mpirun and one process's
#       do not; a bad LMC_BUCKET_KB is refused
#   13  ranks given different --seed values start from rank 0's parameters
#       (broadcast at the start) and agree at every step's check
#
# Environment: B (build folder, default build), LMC (default $B/lmc).
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
LMC=${LMC:-$B/lmc}
LMC_LIBDIR=${LMC_LIBDIR:-$(pwd)/graphs/lib}
OPENBLAS_NUM_THREADS=1
OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LMC_LIBDIR OPENBLAS_NUM_THREADS OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. tests/result.sh   # passed, failed, result, show

data=tests/data/tiny
mpirun="mpirun --oversubscribe -np 2"
# Under make sanitize the trainers are built with the sanitizers, as
# suite_trainer.sh builds its own; LeakSanitizer is off for them, since
# Open MPI's libraries keep memory until exit that is not ours to free.
SAN=${SAN:-}
trainer_cflags="-O2"
if [ -n "$SAN" ]; then
  trainer_cflags="-O1 -g $SAN"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  export ASAN_OPTIONS
fi

# ------------------------------------------------------------ 1 the trainers
# A scratch build folder holding copies of the compiler and the runtime, as
# suite_trainer.sh does: make builds only dist_mpi.o and the trainers there.
tb=$tmp/b
mkdir -p "$tb/obj/runtime"
cp -p "$LMC" "$tb/lmc" && cp -p "$B/liblmcrt.a" "$tb/" && cp -p "$B/obj/runtime/main.o" "$tb/obj/runtime/"
rc=0
for model in lstm transformer; do
  for bs in 4 8; do
    make --no-print-directory -o "$tb/lmc" -o "$tb/liblmcrt.a" -o "$tb/obj/runtime/main.o" trainer MPI=1 B="$tb" \
      MODEL=$model DATA=$data TRAINER_CFLAGS="$trainer_cflags" \
      LMCFLAGS="-D emsize=16 -D nhid=16 -D nlayers=1 -D bptt=5 -D batch_size=$bs -D eval_batch_size=$((bs / 2))" \
      >>"$tmp/make.log" 2>&1 && cp "$tb/$model" "$tmp/$model$bs" || rc=1
  done
done
[ $rc -eq 0 ] && command -v mpirun >/dev/null
result 1 "make trainer MPI=1, LSTM and Transformer, batch 4 and 8" "exit $rc; $(command -v mpirun || echo no mpirun)" $?
[ $rc -eq 0 ] || show "$tmp/make.log"

# params A B: the largest difference between the two checkpoints' tensors,
# relative to max(1, |value|); "missing" when their names differ
params() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
    return {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], np.float32) for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys(): print('missing'); sys.exit()
print('%.3g' % max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(1, np.abs(a[k])))) for k in a))
PY
}

# losses A B: the largest relative difference between two --log-csv files'
# losses (batches 1 to 20), "count" when not 20 each
losses() {
  paste -d, "$1" "$2" | awk -F, 'NR > 1 { n++; d = $4 - $11; if (d < 0) d = -d; r = d / $11; if (r > m) m = r }
    END { if (n != 20) print "count"; else printf "%.3g\n", m }'
}

# ----------------------------------------------------- 2-3 np=2 against np=1
n=2
for opt in sgd adamw; do
  flags="--data $data --epochs 1 --max-batches 21 --log-interval 1 --dropout 0.3 --seed 3 --threads 1"
  [ $opt = adamw ] && flags="$flags --optimizer adamw --clip 0.5"
  timeout 120 $mpirun "$tmp/lstm4" train $flags --save "$tmp/np2_$opt.st" --log-csv "$tmp/np2_$opt.csv" \
    >"$tmp/np2_$opt.log" 2>&1
  r2=$?
  "$tmp/lstm8" train $flags --save "$tmp/np1_$opt.st" --log-csv "$tmp/np1_$opt.csv" >"$tmp/np1_$opt.log" 2>&1
  r1=$?
  dl=$(losses "$tmp/np2_$opt.csv" "$tmp/np1_$opt.csv" 2>/dev/null)
  dp=$(params "$tmp/np2_$opt.st" "$tmp/np1_$opt.st" 2>/dev/null)
  v2=$("$tmp/lstm8" eval --checkpoint "$tmp/np2_$opt.st" --data $data --json 2>/dev/null | sed 's/.*"loss": *\([^,]*\),.*/\1/')
  v1=$("$tmp/lstm8" eval --checkpoint "$tmp/np1_$opt.st" --data $data --json 2>/dev/null | sed 's/.*"loss": *\([^,]*\),.*/\1/')
  dv=$(awk -v a="$v2" -v b="$v1" 'BEGIN { if (a == "" || b == "") print "none"; else { d = (a - b) / b; printf "%.3g\n", d < 0 ? -d : d } }')
  grep -q "| data parallel | 2 ranks | global batch 8 (4 per rank)" "$tmp/np2_$opt.log" &&
    [ "$(grep -o 'valid loss.*\|test loss.*' "$tmp/np2_$opt.log")" = "$(grep -o 'valid loss.*\|test loss.*' "$tmp/np1_$opt.log")" ]
  head=$?
  ok=$(awk -v l="$dl" -v p="$dp" -v v="$dv" 'BEGIN { print (l ~ /^[0-9.e+-]+$/ && p ~ /^[0-9.e+-]+$/ && v ~ /^[0-9.e+-]+$/ && l <= 1e-5 && p <= 1e-5 && v <= 1e-5) ? 0 : 1 }')
  [ $r2 -eq 0 ] && [ $r1 -eq 0 ] && [ $head -eq 0 ] && [ "$ok" -eq 0 ]
  result $n "$opt: np=2 at batch 4 against np=1 at batch 8, 20 batches" \
    "exit $r2/$r1; losses within $dl, parameters within $dp, valid loss $v2 against $v1 ($dv)" $?
  [ $r2 -eq 0 ] && [ "$ok" -eq 0 ] || { show "$tmp/np2_$opt.log"; show "$tmp/np1_$opt.log"; }
  n=$((n + 1))
done

# ---------------------------------------------------- 4 the np=2 metadata
# The np=2 checkpoint is the file one process at batch 8 writes: the same
# metadata (batch_size 8, eval_batch_size 4), less lmc_flags (how each
# trainer was built), AdamW's random optimizer_key and optimizer_state (the
# moments' file name, np2_adamw.st.optim against np1_...); valid_loss within
# 1e-6 relative.
meta() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    return json.loads(b[8:8 + struct.unpack('<Q', b[:8])[0]]).get('__metadata__', {})
a, b = load(sys.argv[1]), load(sys.argv[2])
for m in a, b:
    for k in 'lmc_flags', 'optimizer_key', 'optimizer_state': m.pop(k, None)
va, vb = float(a.pop('valid_loss')), float(b.pop('valid_loss'))
diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
if abs(va - vb) > 1e-6 * abs(vb): diff.append('valid_loss')
print(' '.join(diff) if diff else 'same (batch_size %s, eval_batch_size %s)' % (a['batch_size'], a['eval_batch_size']))
PY
}
m1=$(meta "$tmp/np2_sgd.st" "$tmp/np1_sgd.st" 2>&1)
m2=$(meta "$tmp/np2_adamw.st" "$tmp/np1_adamw.st" 2>&1)
case "$m1/$m2" in same*/same*) r=0 ;; *) r=1 ;; esac
result 4 "the np=2 checkpoints' metadata is the np=1 one's" "sgd: $m1; adamw: $m2" $r

# ------------------------------------------------------------- 5 eval
# eval under mpirun splits the columns of batchify at 2 x eval batch:
# lstm4's np=2 eval is lstm8's single-process eval (loss within 1e-6
# relative, the same tokens, the same line).
ev() { sed -n 's/.*"loss": *\([^,]*\),.*"tokens": *\([0-9]*\),.*/\1 \2/p'; }
e2=$(timeout 120 $mpirun "$tmp/lstm4" eval --checkpoint "$tmp/np2_sgd.st" --data $data --split valid --json 2>"$tmp/ev2.err" | ev)
e1=$("$tmp/lstm8" eval --checkpoint "$tmp/np2_sgd.st" --data $data --split valid --json 2>"$tmp/ev1.err" | ev)
l2=$(timeout 120 $mpirun "$tmp/lstm4" eval --checkpoint "$tmp/np2_sgd.st" --data $data 2>>"$tmp/ev2.err")
l1=$("$tmp/lstm8" eval --checkpoint "$tmp/np2_sgd.st" --data $data 2>>"$tmp/ev1.err")
de=$(echo "$e2 $e1" | awk 'NF == 4 && $2 == $4 { d = ($1 - $3) / $3; printf "%.3g\n", d < 0 ? -d : d }')
[ -n "$de" ] && awk -v d="$de" 'BEGIN { exit !(d <= 1e-6) }' && [ -n "$l1" ] && [ "$l2" = "$l1" ]
result 5 "eval, np=2 at eval batch 2 against np=1 at 4" "loss and tokens $e2 against $e1 ($de); '$l2'" $?

# --------------------------------------------------------- 6 generate
# generate under mpirun: rank 0 alone writes (to standard output, where a
# second rank's text would show), the text one process writes.
g="--checkpoint $tmp/np2_sgd.st --words 30 --seed 5 --outf -"
timeout 120 $mpirun "$tmp/lstm4" generate $g >"$tmp/gen2.txt" 2>"$tmp/gen2.err"
r2=$?
"$tmp/lstm4" generate $g >"$tmp/gen1.txt" 2>"$tmp/gen1.err"
[ $r2 -eq 0 ] && [ -s "$tmp/gen1.txt" ] && cmp -s "$tmp/gen2.txt" "$tmp/gen1.txt"
result 6 "generate under mpirun: rank 0's text alone" "exit $r2; $(wc -l <"$tmp/gen2.txt") lines against $(wc -l <"$tmp/gen1.txt")" $?

# --------------------------------------------------------------- 7 --resume
# Rank 0 reads the AdamW checkpoints of 3 and broadcasts them: a second
# epoch from each, np=2 against np=1.
f="--data $data --epochs 2 --max-batches 21 --log-interval 1 --dropout 0.3 --seed 3 --threads 1 --optimizer adamw --clip 0.5"
timeout 120 $mpirun "$tmp/lstm4" train $f --resume "$tmp/np2_adamw.st" --save "$tmp/np2_adamw.st" \
  --log-csv "$tmp/re2.csv" >"$tmp/re2.log" 2>&1
r2=$?
"$tmp/lstm8" train $f --resume "$tmp/np1_adamw.st" --save "$tmp/np1_adamw.st" --log-csv "$tmp/re1.csv" >"$tmp/re1.log" 2>&1
r1=$?
dl=$(losses "$tmp/re2.csv" "$tmp/re1.csv" 2>/dev/null)
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] && grep -q "resuming from .* 1 epochs done, 21 steps" "$tmp/re2.log" &&
  awk -v l="$dl" 'BEGIN { exit !(l ~ /^[0-9.e+-]+$/ && l <= 1e-5) }'
result 7 "--resume AdamW, np=2 against np=1: epoch 2" "exit $r2/$r1; losses within $dl" $?
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] || { show "$tmp/re2.log"; show "$tmp/re1.log"; }

# ------------------------------------------------------------- 8 a rank fails
timeout 120 $mpirun "$tmp/lstm4" train --data $data --epochs 1 --max-batches 2 --dropout 0 --threads 1 \
  --save "$tmp/none/x.st" >"$tmp/fail.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "lstm4 (rank 0 of 2): error: ending the job" "$tmp/fail.log"
result 8 "a failing rank ends the job" "exit $rc; $(grep -m1 'ending the job' "$tmp/fail.log")" $?

# ------------------------------------------------------- 9 a rank killed
# The first checkpoint A of an np=2 AdamW run is copied; a second run
# resumes from it with each stage of its saves paused 1.5 s
# (LMC_TEST_SAVE_PAUSE_MS, runtime/checkpoint.c), and rank 1 gets SIGKILL
# once its next save has begun (A's moments moved to PATH.optim.prev, the
# save's first stage): the job ends non-zero, A's model file is there byte
# for byte with its moments, and it evaluates as A and resumes.
# rank_pid R EXE: the pid of rank R of our job, from /proc
rank_pid() {
  for d in /proc/[0-9]*; do
    [ "$(tr '\0' '\n' 2>/dev/null <"$d/cmdline" | head -n 1)" = "$2" ] || continue
    tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { basename "$d"; return; }
  done
}
k=$tmp/kill
mkdir "$k"
f="--data $data --max-batches 21 --dropout 0.3 --seed 3 --threads 1 --optimizer adamw"
timeout 120 $mpirun "$tmp/lstm4" train $f --epochs 1 --save "$k/m.st" >"$k/first.log" 2>&1
cp "$k/m.st" "$k/A.st" && cp "$k/m.st.optim" "$k/A.optim"
LMC_TEST_SAVE_PAUSE_MS=1500 timeout 120 $mpirun -x LMC_TEST_SAVE_PAUSE_MS "$tmp/lstm4" train $f --epochs 6 \
  --resume "$k/m.st" --save "$k/m.st" >"$k/run.log" 2>&1 &
job=$!
i=0
while [ ! -e "$k/m.st.optim.prev" ] && [ $i -lt 1200 ] && kill -0 $job 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
done
pid=$(rank_pid 1 "$tmp/lstm4")
[ -n "$pid" ] && kill -9 "$pid"
wait $job
rc=$?
a=$("$tmp/lstm8" eval --checkpoint "$k/A.st" --data $data --json 2>&1 | ev)
b=$("$tmp/lstm8" eval --checkpoint "$k/m.st" --data $data --json 2>&1 | ev)
"$tmp/lstm8" train $f --epochs 2 --max-batches 2 --resume "$k/m.st" --save "$k/r.st" >"$k/resume.log" 2>&1 &&
  grep -q "^resuming from" "$k/resume.log" && ! grep -q warning "$k/resume.log"
resumed=$?
[ -n "$pid" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && cmp -s "$k/A.st" "$k/m.st" &&
  { cmp -s "$k/A.optim" "$k/m.st.optim.prev" || cmp -s "$k/A.optim" "$k/m.st.optim"; } &&
  [ -n "$a" ] && [ "$a" = "$b" ] && [ $resumed -eq 0 ]
result 9 "rank 1 killed during a save: the job fails, the previous checkpoint is intact" \
  "rank 1 pid ${pid:-none}, exit $rc; model file $(cmp -s "$k/A.st" "$k/m.st" && echo same || echo changed); eval $b against $a; resume $resumed" $?
[ -n "$pid" ] && [ $rc -ne 0 ] || show "$k/run.log"

# --------------------------------------------------------------- 10 drift
# Ranks started with different learning rates (mpirun's MPMD form) step
# apart: the parameter check after each step (--check-every 1) says at
# which step and which ranks, and the job ends non-zero.
f="--data $data --epochs 1 --max-batches 4 --dropout 0.3 --seed 3 --threads 1 --check-every 1 --save $tmp/drift.st"
timeout 120 mpirun --oversubscribe -np 1 "$tmp/lstm4" train $f --lr 20 : -np 1 "$tmp/lstm4" train $f --lr 10 \
  >"$tmp/drift.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] &&
  grep -q "rank 0 of 2): error: the ranks' parameters differ after step 1: rank 1's hash" "$tmp/drift.log"
result 10 "ranks that drift apart are caught" "exit $rc; $(grep -m1 -o "the ranks' parameters differ.*" "$tmp/drift.log")" $?

# ------------------------------------------------ 11 the Transformer's masks
# Its attention weights' masks, (B, nhead, T, T), are keyed on the column
# by an offset, its (T, B, d) ones with the outer step: np=2 against np=1
# with dropout on, 20 batches of SGD at lr 2 (at lr 20 the tiny
# Transformer's losses jump about, and the ranks' different rounding of the
# gradient's sums, 1e-7, grows to 1e-2 even at --dropout 0).
f="--data $data --epochs 1 --max-batches 21 --log-interval 1 --dropout 0.3 --seed 3 --threads 1 --lr 2"
timeout 120 $mpirun "$tmp/transformer4" train $f --save "$tmp/t2.st" --log-csv "$tmp/t2.csv" >"$tmp/t2.log" 2>&1
r2=$?
"$tmp/transformer8" train $f --save "$tmp/t1.st" --log-csv "$tmp/t1.csv" >"$tmp/t1.log" 2>&1
r1=$?
dl=$(losses "$tmp/t2.csv" "$tmp/t1.csv" 2>/dev/null)
dp=$(params "$tmp/t2.st" "$tmp/t1.st" 2>/dev/null)
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] &&
  awk -v l="$dl" -v p="$dp" 'BEGIN { exit !(l ~ /^[0-9.e+-]+$/ && p ~ /^[0-9.e+-]+$/ && l <= 1e-5 && p <= 1e-5) }'
result 11 "Transformer, dropout on: np=2 at batch 4 against np=1 at batch 8" \
  "exit $r2/$r1; losses within $dl, parameters within $dp" $?
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] || { show "$tmp/t2.log"; show "$tmp/t1.log"; }

# ----------------------------------------------------- 12 gradient buckets
# Two ranks' sums are exact in any grouping, so the buckets change no bit.
flags="--data $data --epochs 1 --max-batches 21 --log-interval 1 --dropout 0.3 --seed 3 --threads 1"
LMC_BUCKET_KB=1 timeout 120 $mpirun "$tmp/lstm4" train $flags --save "$tmp/kb1.st" >"$tmp/kb1.log" 2>&1
rc=$?
dp=$(params "$tmp/kb1.st" "$tmp/np2_sgd.st" 2>/dev/null)
LMC_BUCKET_KB=0 timeout 120 $mpirun "$tmp/lstm4" train $flags --save "$tmp/kb0.st" >"$tmp/kb0.log" 2>&1
rc0=$?
nc=$(grep -c "batches .* | tok/s [0-9]* | comm [0-9.]*%$" "$tmp/kb1.log")
[ $rc -eq 0 ] && [ "$dp" = 0 ] && [ "$nc" -eq 20 ] && ! grep -q comm "$tmp/np1_sgd.log" && [ $rc0 -ne 0 ] &&
  grep -q "LMC_BUCKET_KB is '0': give the KiB of a gradient bucket" "$tmp/kb0.log"
result 12 "1 KiB gradient buckets against one" "exit $rc; parameters differ by $dp; $nc lines with comm; LMC_BUCKET_KB=0: exit $rc0" $?
[ $rc -eq 0 ] || show "$tmp/kb1.log"

# ------------------------------------------------- 13 rank 0's start
# Every rank starts from rank 0's initial parameters (broadcast, as DDP
# does): ranks given different --seed values, dropout off, stay the same
# at every step's check.
f="--data $data --epochs 1 --max-batches 4 --dropout 0 --threads 1 --check-every 1 --save $tmp/seeds.st"
timeout 120 mpirun --oversubscribe -np 1 "$tmp/lstm4" train $f --seed 3 : -np 1 "$tmp/lstm4" train $f --seed 4 \
  >"$tmp/seeds.log" 2>&1
rc=$?
[ $rc -eq 0 ] && ! grep -q "differ" "$tmp/seeds.log"
result 13 "ranks with different seeds start from rank 0's parameters" "exit $rc" $?
[ $rc -eq 0 ] || show "$tmp/seeds.log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
