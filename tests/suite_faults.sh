#!/bin/sh
# Faults a trainer's checkpoints must survive, with the fake trainer of
# tests/fake_model.c (a bigram model, an epoch in milliseconds) on
# tests/data/tiny_train.  Each check prints PASS or FAIL with what it
# counted; the suite ends with "N passed, N failed" (about 30 s).
#
#    1  kill -9 at random moments of SGD saves: every kill leaves a
#       checkpoint that eval and --resume accept
#    2  the same with AdamW: every kill leaves a model and moments pair
#       that --resume accepts (PATH.optim or PATH.optim.prev)
#    3  a full file system (a 64 KiB tmpfs): the save fails with a clear
#       error, and the previous files are there, byte for byte, and resume;
#       full from the start, and with room for the moments but not the model
#    4  a device node, FIFO or symlink at --save, PATH.tmp or PATH.optim is
#       refused before the first batch, and stays what it was
#
# LMC_TEST_SAVE_PAUSE_MS (a test hook of runtime/checkpoint.c) makes each
# stage of a save sleep 5 ms, so that kill times drawn at random in
# [0.02, 0.42] s land in every stage of the saves of a run that saves
# every epoch (at most 200 epochs, a few seconds).  FAULT_SEED=N repeats a
# run's kill times; KILLS=N sets the kills per optimizer (default 30).
#
# Environment: B (build folder, default build), holding tests/fake_trainer.
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
T=$B/tests/fake_trainer
DATA=tests/data/tiny_train
KILLS=${KILLS:-30}
SEED=${FAULT_SEED:-$(date +%s)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_faults.XXXXXX")
fs=$tmp/fs
mounted=0
trap '[ $mounted -eq 1 ] && umount "$fs"; rm -rf "$tmp"' EXIT
. tests/result.sh   # passed, failed, result, show

if [ ! -x "$T" ]; then
  echo "$T: error: not built (make $B/tests/check_train builds it)"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "seed $SEED (FAULT_SEED=$SEED repeats these kill times)"

# resumes DIR/m.safetensors with OPT (sgd|adamw) for one more epoch's worth
# of checks: nothing to train, the pair loaded, the test evaluated; and
# evaluates it.  0 when both accept it.
accepted() {
  "$T" train --data $DATA --optimizer "$2" --resume "$1/m.safetensors" --epochs 1 \
    --save "$1/check.safetensors" >"$1/resume.log" 2>&1 &&
    grep -q "^resuming from" "$1/resume.log" && ! grep -q "warning" "$1/resume.log" &&
    "$T" eval --checkpoint "$1/m.safetensors" --data $DATA --json >"$1/eval.log" 2>&1
}

# ------------------------------------------------------- 1, 2: kill -9
n=1
for opt in sgd adamw; do
  base=$tmp/$opt-base
  mkdir -p "$base"
  "$T" train --data $DATA --optimizer $opt --epochs 1 --save "$base/m.safetensors" >"$base/log" 2>&1
  survived=0 early=0 prev=0 partial=0 bad=0 i=0
  while [ $i -lt "$KILLS" ]; do
    i=$((i + 1))
    d=$tmp/$opt-$i
    mkdir "$d"
    cp "$base"/m.safetensors* "$d/"
    delay=$(awk -v s="$SEED" -v i=$i -v n=$n 'BEGIN { srand(s + 1000 * n + i); printf "%.3f", 0.02 + 0.4 * rand() }')
    LMC_TEST_SAVE_PAUSE_MS=5 "$T" train --data $DATA --optimizer $opt --epochs 200 \
      --resume "$d/m.safetensors" --save "$d/m.safetensors" >"$d/train.log" 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    { wait $pid; } 2>/dev/null
    if [ $? -ne 137 ]; then
      early=$((early + 1))      # ended before the kill: not counted
      continue
    fi
    [ -e "$d/m.safetensors.optim.prev" ] && prev=$((prev + 1))
    ls "$d" | grep -q '\.tmp$' && partial=$((partial + 1))
    if accepted "$d" $opt; then
      survived=$((survived + 1))
      rm -rf "$d"
    else
      bad=$((bad + 1))
      echo "    kill $i at ${delay}s left a pair that is refused ($d):"
      ls "$d" | sed 's/^/      /'
      show "$d/resume.log"
    fi
  done
  [ $bad -eq 0 ] && [ $survived -ge $((KILLS * 9 / 10)) ]
  result $n "kill -9 during $opt saves" \
    "$survived of $((survived + bad)) kills survived ($prev left PATH.optim.prev, $partial a .tmp), $early runs ended before their kill" $?
  n=$((n + 1))
done

# ----------------------------------------------------- 3: a full disk
mkdir "$fs"
if ! mount -t tmpfs -o size=64k none "$fs" 2>"$tmp/mount.err"; then
  echo "SKIP 3 a full file system: cannot mount a tmpfs ($(cat "$tmp/mount.err"))"
else
  mounted=1
  ok=0 cases=""
  for case in sgd-full adamw-full adamw-model; do
    opt=${case%-*}
    rm -rf "$fs"/* "$tmp/before" "$tmp/out"
    mkdir "$tmp/before" "$tmp/out"
    "$T" train --data $DATA --optimizer $opt --epochs 1 --save "$fs/m.safetensors" >"$tmp/out/first.log" 2>&1
    cp "$fs"/m.safetensors* "$tmp/before/"
    k=0
    while [ $k -lt 64 ] && dd if=/dev/zero of="$fs/fill$k" bs=4096 count=1 2>/dev/null; do k=$((k + 1)); done
    want="m.safetensors.optim.tmp"
    [ $opt = sgd ] && want="m.safetensors.tmp"
    if [ $case = adamw-model ]; then   # room for the moments, not for the model
      pages=$(( ($(wc -c <"$fs/m.safetensors.optim") + 4095) / 4096 ))
      while [ $pages -gt 0 ]; do k=$((k - 1)); rm -f "$fs/fill$k"; pages=$((pages - 1)); done
      want="m.safetensors.tmp"
    fi
    "$T" train --data $DATA --optimizer $opt --epochs 3 --resume "$fs/m.safetensors" --save "$fs/m.safetensors" \
      >"$tmp/out/train.log" 2>"$tmp/out/err.log"
    rc=$?
    same=0
    for f in "$tmp"/before/*; do cmp -s "$f" "$fs/$(basename "$f")" || same=1; done
    left=$(ls "$fs" | grep -v '^fill' | grep -v -c '^m\.safetensors\(\.optim\)\?$')
    rm -f "$fs"/fill*
    cp "$fs"/m.safetensors* "$tmp/out/"
    if [ $rc -eq 1 ] && grep -q "$want: No space left on device" "$tmp/out/err.log" && [ $same -eq 0 ] &&
       [ "$left" -eq 0 ] && accepted "$tmp/out" $opt; then
      ok=$((ok + 1))
    else
      echo "    $case: exit $rc, previous files $([ $same -eq 0 ] && echo same || echo changed), $left other files"
      show "$tmp/out/err.log"
    fi
    cases="$cases${cases:+; }$case: $(head -n 1 "$tmp/out/err.log" | sed "s|$fs/||g")"
  done
  [ $ok -eq 3 ]
  result 3 "a full file system" "$ok of 3 cases refused with the files as they were and resumable ($cases)" $?
fi

# --------------------------------------- 4: devices, FIFOs, links
d=$tmp/nodes
mkdir "$d"
ok=0 total=0 skipped=""
# refused WHAT OPT SAVE TEST: the trainer refuses SAVE at start; TEST (a
# test(1) flag) still holds for the node named WHAT
refused() {
  total=$((total + 1))
  "$T" train --data $DATA --optimizer "$2" --epochs 1 --save "$3" >"$d/out.log" 2>"$d/err.log"
  rc=$?
  if [ $rc -eq 1 ] && grep -q "error: refusing to write .*: it exists and is" "$d/err.log" &&
     ! grep -q "| epoch" "$d/out.log" && test "$4" "$1"; then
    ok=$((ok + 1))
  else
    echo "    $1 (--save $3, $2): exit $rc"
    show "$d/err.log"
  fi
}
if mknod "$d/char" c 1 3 2>/dev/null && mknod "$d/m1.safetensors.tmp" c 1 3 &&
   mknod "$d/m2.safetensors.optim" c 1 3; then
  refused "$d/char" sgd "$d/char" -c
  refused "$d/m1.safetensors.tmp" sgd "$d/m1.safetensors" -c
  refused "$d/m2.safetensors.optim" adamw "$d/m2.safetensors" -c
else
  skipped=" (mknod not permitted: device nodes skipped)"
fi
mkfifo "$d/fifo"
refused "$d/fifo" sgd "$d/fifo" -p
echo keep >"$d/target"
ln -s "$d/target" "$d/link"
refused "$d/link" sgd "$d/link" -L
[ "$(cat "$d/target")" = keep ] || { ok=$((ok - 1)); echo "    the link's target changed"; }
[ $ok -eq $total ]
result 4 "device nodes, a FIFO and a symlink at --save" "$ok of $total refused at start and left as they were$skipped" $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
