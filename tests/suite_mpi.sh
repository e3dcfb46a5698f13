#!/bin/sh
# Data-parallel training over Open MPI (runtime/dist.c, make trainer
# MPI=1), from the repository root, at tiny sizes on tests/data/tiny with
# dropout 0: two ranks at batch 4 against one process at batch 8.  Each
# check prints PASS or FAIL with its figure; the suite ends with "N passed,
# N failed" (about 10 s).
#
#    1  make trainer MPI=1 builds both trainers (batch 4 and batch 8)
#  2-3  SGD, AdamW (clipped): 21 batches (20 logged), np=2 against np=1: every
#       batch's loss within 1e-5 relative, the parameters of the two
#       checkpoints within 1e-5, their valid loss in the single-process
#       trainer within 1e-5 relative (so the np=2 checkpoint loads there);
#       the header names the ranks, and the valid and test losses of the
#       two logs (evaluated over the ranks' columns) read the same
#    4  --resume of the AdamW checkpoints: rank 0 reads, broadcasts; the
#       second epoch's losses of np=2 and np=1 within 1e-5 relative
#    5  a rank that fails (rank 0's --save in a missing folder) ends the
#       job non-zero, its message naming the rank
#    6  the gradient reduced in 1 KiB buckets (LMC_BUCKET_KB=1: about 100,
#       parameters split across them) gives 2's SGD parameters bit for bit;
#       the log lines end in "| comm N.N%" under mpirun and one process's
#       do not; a bad LMC_BUCKET_KB is refused
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
passed=0
failed=0

result() {
  if [ "$4" -eq 0 ]; then
    echo "PASS $1 $2: $3"
    passed=$((passed + 1))
  else
    echo "FAIL $1 $2: $3"
    failed=$((failed + 1))
  fi
}

show() { sed 's/^/    /' "$1" | tail -n 20; }

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
for bs in 4 8; do
  make --no-print-directory -o "$tb/lmc" -o "$tb/liblmcrt.a" -o "$tb/obj/runtime/main.o" trainer MPI=1 B="$tb" \
    MODEL=lstm DATA=$data TRAINER_CFLAGS="$trainer_cflags" \
    LMCFLAGS="-D emsize=16 -D nhid=16 -D nlayers=1 -D bptt=5 -D batch_size=$bs -D eval_batch_size=$((bs / 2))" \
    >>"$tmp/make.log" 2>&1 && cp "$tb/lstm" "$tmp/lstm$bs" || rc=1
done
[ $rc -eq 0 ] && command -v mpirun >/dev/null
result 1 "make trainer MPI=1, batch 4 and 8" "exit $rc; $(command -v mpirun || echo no mpirun)" $?
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
  flags="--data $data --epochs 1 --max-batches 21 --log-interval 1 --dropout 0 --seed 3 --threads 1"
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

# --------------------------------------------------------------- 4 --resume
# Rank 0 reads the AdamW checkpoints of 3 and broadcasts them: a second
# epoch from each, np=2 against np=1.
f="--data $data --epochs 2 --max-batches 21 --log-interval 1 --dropout 0 --seed 3 --threads 1 --optimizer adamw --clip 0.5"
timeout 120 $mpirun "$tmp/lstm4" train $f --resume "$tmp/np2_adamw.st" --save "$tmp/np2_adamw.st" \
  --log-csv "$tmp/re2.csv" >"$tmp/re2.log" 2>&1
r2=$?
"$tmp/lstm8" train $f --resume "$tmp/np1_adamw.st" --save "$tmp/np1_adamw.st" --log-csv "$tmp/re1.csv" >"$tmp/re1.log" 2>&1
r1=$?
dl=$(losses "$tmp/re2.csv" "$tmp/re1.csv" 2>/dev/null)
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] && grep -q "resuming from .* 1 epochs done, 21 steps" "$tmp/re2.log" &&
  awk -v l="$dl" 'BEGIN { exit !(l ~ /^[0-9.e+-]+$/ && l <= 1e-5) }'
result 4 "--resume AdamW, np=2 against np=1: epoch 2" "exit $r2/$r1; losses within $dl" $?
[ $r2 -eq 0 ] && [ $r1 -eq 0 ] || { show "$tmp/re2.log"; show "$tmp/re1.log"; }

# ------------------------------------------------------------- 5 a rank fails
timeout 120 $mpirun "$tmp/lstm4" train --data $data --epochs 1 --max-batches 2 --dropout 0 --threads 1 \
  --save "$tmp/none/x.st" >"$tmp/fail.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "lstm4 (rank 0 of 2): error: ending the job" "$tmp/fail.log"
result 5 "a failing rank ends the job" "exit $rc; $(grep -m1 'ending the job' "$tmp/fail.log")" $?

# ------------------------------------------------------ 6 gradient buckets
# Two ranks' sums are exact in any grouping, so the buckets change no bit.
flags="--data $data --epochs 1 --max-batches 21 --log-interval 1 --dropout 0 --seed 3 --threads 1"
LMC_BUCKET_KB=1 timeout 120 $mpirun "$tmp/lstm4" train $flags --save "$tmp/kb1.st" >"$tmp/kb1.log" 2>&1
rc=$?
dp=$(params "$tmp/kb1.st" "$tmp/np2_sgd.st" 2>/dev/null)
LMC_BUCKET_KB=0 timeout 120 $mpirun "$tmp/lstm4" train $flags --save "$tmp/kb0.st" >"$tmp/kb0.log" 2>&1
rc0=$?
nc=$(grep -c "batches .* | tok/s [0-9]* | comm [0-9.]*%$" "$tmp/kb1.log")
[ $rc -eq 0 ] && [ "$dp" = 0 ] && [ "$nc" -eq 20 ] && ! grep -q comm "$tmp/np1_sgd.log" && [ $rc0 -ne 0 ] &&
  grep -q "LMC_BUCKET_KB is '0': give the KiB of a gradient bucket" "$tmp/kb0.log"
result 6 "1 KiB gradient buckets against one" "exit $rc; parameters differ by $dp; $nc lines with comm; LMC_BUCKET_KB=0: exit $rc0" $?
[ $rc -eq 0 ] || show "$tmp/kb1.log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
