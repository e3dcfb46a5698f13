#!/bin/sh
# before_after.sh: the fp32 trainers of two trees, alternating, on the same
# batches: ms per training batch, the median and the range over the rounds.
#
#   sh bench/before_after.sh BEFORE_BUILD AFTER_BUILD [ROUNDS] [MODELS]
#
# BEFORE_BUILD and AFTER_BUILD are build folders that each hold the
# trainers named in MODELS (default "lstm transformer lstm650"; lstm650 is
# graphs/lstm.lua at -D emsize=650 -D nhid=650).  Each run trains 17
# batches of build/bench/data at one thread (make bench's corpus); the log
# line at batch 16 times batches 9..16, the first 9 are the warm-up.  A
# round runs every model once in each tree, the two trees' order swapped
# from round to round.  The runs' losses must agree: a change that is not
# meant to change numerics leaves them bit-identical (tools/same_losses.sh
# checks that at length).
set -eu
[ $# -ge 2 ] || { echo "usage: sh bench/before_after.sh BEFORE_BUILD AFTER_BUILD [ROUNDS] [MODELS]" >&2; exit 2; }
before=$1 after=$2 rounds=${3:-3} models=${4:-lstm transformer lstm650}
data=build/bench/data
[ -d "$data" ] || { echo "before_after.sh: $data: missing (make bench makes it; or sh bench/mkdata.sh)" >&2; exit 1; }
for m in $models; do
  for b in "$before" "$after"; do
    [ -x "$b/$m" ] || { echo "before_after.sh: $b/$m: no such trainer" >&2; exit 1; }
  done
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/before_after.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# run TREE_LABEL BUILD MODEL ROUND: one run; its log in $tmp
run() {
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$2/$3" train --data "$data" --epochs 1 --max-batches 17 \
    --log-interval 8 --threads 1 --seed 1111 --save "$tmp/$1.$3.$4.safetensors" --log-csv "$tmp/$1.$3.$4.csv" > "$tmp/$1.$3.$4.log"
  rm -f "$tmp/$1.$3.$4.safetensors"*
  [ -s "$tmp/$1.$3.$4.csv" ] || { echo "before_after.sh: $2/$3 logged no losses" >&2; exit 1; }
}

echo "# sh bench/before_after.sh $*"
echo "# $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ "$r" -le "$rounds" ]; do
  for m in $models; do
    if [ $((r % 2)) -eq 1 ]; then run before "$before" "$m" "$r"; run after "$after" "$m" "$r"
    else run after "$after" "$m" "$r"; run before "$before" "$m" "$r"; fi
  done
  r=$((r + 1))
done

# ms/batch of batches 9..16 (the log line at 16); the losses, to 9 digits
ms() { sed -n 's/.*   16\/.*ms\/batch *\([0-9.]*\) .*/\1/p' "$1.log"; }
losses() { cut -d, -f2,4 "$1.csv"; }
echo "| model | before ms/batch | after ms/batch | after / before | losses |"
echo "| --- | ---: | ---: | ---: | --- |"
for m in $models; do
  same=identical
  for r in $(seq 1 "$rounds"); do
    [ "$(losses "$tmp/before.$m.$r")" = "$(losses "$tmp/after.$m.$r")" ] || same=DIFFER
  done
  b=$(for r in $(seq 1 "$rounds"); do ms "$tmp/before.$m.$r"; done | sort -n | tr "\n" " ")
  a=$(for r in $(seq 1 "$rounds"); do ms "$tmp/after.$m.$r"; done | sort -n | tr "\n" " ")
  echo "$b | $a" | awk -v m="$m" -v same="$same" -v n="$rounds" '{
    for (i = 1; i <= n; i++) bb[i] = $i; for (i = 1; i <= n; i++) aa[i] = $(n + 1 + i);
    mb = n % 2 ? bb[(n + 1) / 2] : (bb[n / 2] + bb[n / 2 + 1]) / 2;
    ma = n % 2 ? aa[(n + 1) / 2] : (aa[n / 2] + aa[n / 2 + 1]) / 2;
    printf "| %s | %.1f (%.1f-%.1f) | %.1f (%.1f-%.1f) | %.3f | %s |\n", m, mb, bb[1], bb[n], ma, aa[1], aa[n], ma / mb, same }'
  [ "$same" = identical ] || { echo "before_after.sh: $m: the losses differ between the trees" >&2; exit 1; }
done
