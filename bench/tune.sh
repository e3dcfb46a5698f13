#!/bin/sh
# tune.sh: which optimization passes make MODEL's trainer fastest on this
# machine (make tune MODEL=lstm [LMCFLAGS="-D nhid=650 -D emsize=650"]).
#
# The configurations come from `lmc passes` at run time, so a new pass is
# tried without touching this file:
#   -O0, -O1, -O2 (the default);
#   -O2 --disable-pass=P   for every pass P that -O2 runs;
#   -O1 --enable-pass=P    for every pass P that -O1 does not run;
#   -O2 with every fuse-* pass disabled together, when there are several.
# Each is compiled with lmc (timed) for the corpus vocabulary; a
# configuration whose emitted C is that of an earlier one (the command line
# it quotes aside) shares its trainer and timing.  Every distinct trainer
# is built with clang (timed), all before any is run so that builds do not
# disturb timings, and then runs
#   train --epochs 1 --max-batches 2K+1 --log-interval K --threads N
# on build/tune/data (the corpus with valid and test cut short, see
# bench/mkdata.sh); the first log line (K+1 batches) is the warm-up, the
# second gives ms/batch.  With TUNE_REPS > 1 the configurations run in turn
# REPS times and each keeps its best.
#
# The table goes to stdout and build/tune/MODEL.txt; the fastest
# configuration's flags go to build/tune/MODEL.flags, which `make trainer`
# passes to lmc compile (before LMCFLAGS).  The rounds' fastest other than
# -O2 is then run TUNE_DUEL more times against -O2, in turn, and chosen only
# when the median of those pairs' ratios is more than TUNE_MARGIN percent
# below 1 (timings on a shared machine are noisy: the same binary's
# ms/batch moves by 10-30% within minutes, and the best of the fastest of
# some twenty configurations is a lucky run more often than a faster one).
#
# Environment: MODEL (lstm), DATA (data/wikitext-2), LMCFLAGS, CC (clang),
# TRAINER_CFLAGS (-O3), BLAS_CFLAGS, BLAS_LIBS, TUNE_BATCHES (K, 5),
# TUNE_THREADS (1), TUNE_REPS (3), TUNE_MARGIN (3), TUNE_DUEL (3), TUNE_DIR (build/tune: where
# MODEL.flags, MODEL.txt and the work folder MODEL/ go).
model=${MODEL:-lstm}
data=${DATA:-data/wikitext-2}
lmcflags=${LMCFLAGS:-}
cc=${CC:-clang}
cflags=${TRAINER_CFLAGS:--O3}
blas_cflags=${BLAS_CFLAGS-$(pkg-config --cflags openblas 2>/dev/null)}
blas_libs=${BLAS_LIBS:-$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)}
k=${TUNE_BATCHES:-5}
threads=${TUNE_THREADS:-1}
reps=${TUNE_REPS:-3}
margin=${TUNE_MARGIN:-3}
duel=${TUNE_DUEL:-3}
top=${TUNE_DIR:-build/tune}
lmc=build/lmc
graph=graphs/$model.lua
dir=$top/$model

die() { echo "tune: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

[ -f "$graph" ] || die "$graph does not exist (MODEL=$model)"
for f in "$lmc" build/liblmcrt.a build/obj/runtime/main.o; do
  [ -f "$f" ] || die "$f is missing: run make first"
done
rm -rf "$dir"
mkdir -p "$dir"
LMC=$lmc sh bench/mkdata.sh "$data" "$top/data" 360 360 || exit 1
ntok=$("$lmc" vocab "$data" | cut -f1) || exit 1
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

# ---- the configurations, one line of flags each
"$lmc" passes >"$dir/passes" || die "lmc passes failed"
{
  echo "-O0"
  echo "-O1"
  echo "-O2"
  awk '$1 != "pass" && NF >= 2 { print $1, $2 }' "$dir/passes" | while read -r name levels; do
    case ",$levels," in *,-O2,*) echo "-O2 --disable-pass=$name" ;; esac
    case ",$levels," in *,-O1,*) ;; *) echo "-O1 --enable-pass=$name" ;; esac
  done
  fuse=$(awk '$1 != "pass" && $1 ~ /^fuse-/ && $2 ~ /-O2/ { printf "%s%s", n++ ? "," : "", $1 } END { if (n < 2) printf "" }' \
    "$dir/passes")
  case $fuse in *,*) echo "-O2 --disable-pass=$fuse" ;; esac
} | awk '!seen[$0]++' >"$dir/configs"
n=$(wc -l <"$dir/configs")
echo "tune: $model, $n configurations, $((2 * k + 1)) batches each (K=$k), $threads thread(s)${lmcflags:+, $lmcflags}"

# ---- compile and build every configuration
i=0
while read -r flags; do
  i=$((i + 1))
  echo "$flags" >"$dir/c$i.flags"
  t0=$(now)
  # shellcheck disable=SC2086
  if ! "$lmc" compile "$graph" -o "$dir/c$i.c" -D ntoken="$ntok" $flags $lmcflags 2>"$dir/c$i.err" </dev/null; then
    echo "compile failed" >"$dir/c$i.status"
    echo "tune: [$i/$n] $flags: lmc compile failed: $(head -n 1 "$dir/c$i.err")"
    continue
  fi
  since "$t0" >"$dir/c$i.lmc_s"
  # the code, without the two places that quote the command line (the
  # header and .flags): a pass that changes nothing in this model shares
  # -O2's trainer and timing, and noise cannot elect it
  sed -e 3d -e '/^  \.flags = /d' "$dir/c$i.c" >"$dir/c$i.code"
  j=1
  while [ "$j" -lt "$i" ]; do
    if [ -f "$dir/c$j.code" ] && cmp -s "$dir/c$j.code" "$dir/c$i.code"; then
      echo "$j" >"$dir/c$i.same"
      break
    fi
    j=$((j + 1))
  done
  if [ -f "$dir/c$i.same" ]; then
    echo "tune: [$i/$n] $flags: same C as [$j] ($(cat "$dir/c$j.flags"))"
    continue
  fi
  t0=$(now)
  # shellcheck disable=SC2086
  if ! $cc $cflags -std=c11 -Wall -Wextra -Werror $blas_cflags -Iruntime -o "$dir/t$i" "$dir/c$i.c" \
      build/obj/runtime/main.o build/liblmcrt.a $blas_libs -lm 2>"$dir/c$i.err" </dev/null; then
    echo "build failed" >"$dir/c$i.status"
    echo "tune: [$i/$n] $flags: clang failed: $(head -n 1 "$dir/c$i.err")"
    continue
  fi
  since "$t0" >"$dir/c$i.clang_s"
  echo "tune: [$i/$n] $flags: lmc $(cat "$dir/c$i.lmc_s") s, clang $(cat "$dir/c$i.clang_s") s"
done <"$dir/configs"

# ---- time every distinct trainer, REPS rounds, each keeping its best

# run configuration i's trainer once; its best ms/batch so far in c$i.ms
time_config() {
  "$dir/t$1" train --data "$top/data" --epochs 1 --max-batches $((2 * k + 1)) --log-interval "$k" \
    --threads "$threads" --save "$dir/ck.safetensors" >"$dir/c$1.log" 2>&1 </dev/null
  ms=$(awk '/^\| epoch .*ms\/batch/ { n++; if (n > 1) { s = $0; sub(/.*ms\/batch */, "", s); sub(/ .*/, "", s); t += s; m++ } }
            END { if (m) printf "%.2f", t / m }' "$dir/c$1.log")
  if [ -z "$ms" ]; then
    echo "run failed" >"$dir/c$1.status"
    echo "tune: [$1/$n] $(cat "$dir/c$1.flags"): the run failed: $(tail -n 1 "$dir/c$1.log")"
    return
  fi
  best=$(cat "$dir/c$1.ms" 2>/dev/null)
  if [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; then echo "$ms" >"$dir/c$1.ms"; fi
  echo "tune: [$1/$n] $(cat "$dir/c$1.flags"): $ms ms/batch"
}

r=1
while [ "$r" -le "$reps" ]; do
  i=1
  while [ "$i" -le "$n" ]; do
    [ -x "$dir/t$i" ] && [ ! -f "$dir/c$i.status" ] && time_config "$i"
    i=$((i + 1))
  done
  r=$((r + 1))
done

# ---- the fastest against -O2 once more: DUEL more runs of each, in turn,
# before a configuration other than -O2 is believed (on this machine a
# round's winner by 4% was -O2's own code with one pass that changed
# nothing it times)
# fastest: the fastest configuration (fast, fastms) and -O2's (base_i, base)
fastest() {
  fast=""
  fastms=""
  base_i=""
  base=""
  i=1
  while [ "$i" -le "$n" ]; do
    src=$i
    [ -f "$dir/c$i.same" ] && src=$(cat "$dir/c$i.same")
    ms=$(cat "$dir/c$src.ms" 2>/dev/null)
    [ "$(cat "$dir/c$i.flags")" = "-O2" ] && base_i=$src && base=$ms
    if [ -n "$ms" ] && { [ -z "$fastms" ] || awk -v a="$ms" -v b="$fastms" 'BEGIN { exit !(a < b) }'; }; then
      fast=$src
      fastms=$ms
    fi
    i=$((i + 1))
  done
}
fastest
challenger=""
: >"$dir/duel"
d=1
if [ -n "$fast" ] && [ -n "$base_i" ] && [ "$fast" != "$base_i" ]; then
  challenger=$fast
  while [ "$d" -le "$duel" ]; do   # in turn, the first alternating: the
    if [ $((d % 2)) -eq 1 ]; then    # second of a pair ran faster more often
      time_config "$base_i"; base_ms=$ms
      time_config "$challenger"; fast_ms=$ms
    else
      time_config "$challenger"; fast_ms=$ms
      time_config "$base_i"; base_ms=$ms
    fi
    if [ -n "$base_ms" ] && [ -n "$fast_ms" ]; then
      awk -v a="$fast_ms" -v b="$base_ms" 'BEGIN { printf "%.3f\n", a / b }' >>"$dir/duel"
    fi
    d=$((d + 1))
  done
fi
# the duel's median ratio (challenger / -O2): its runs are fresh, whereas
# the rounds' best of the fastest of many configurations is biased low
duel_median=$(sort -n "$dir/duel" | awk '{ r[NR] = $1 } END { if (NR) print r[int((NR + 1) / 2)] }')

# ---- the table and the choice
fastest
{
  echo "make tune MODEL=$model${lmcflags:+ LMCFLAGS=\"$lmcflags\"}: $((2 * k + 1)) training batches (the last $k timed), $threads thread(s), $(date '+%Y-%m-%d %H:%M')"
  printf '%-3s %-58s %8s %8s %10s %8s\n' "#" "flags" "lmc s" "clang s" "ms/batch" "vs -O2"
  i=1
  while [ "$i" -le "$n" ]; do
    src=$i
    [ -f "$dir/c$i.same" ] && src=$(cat "$dir/c$i.same")
    flags=$(cat "$dir/c$i.flags")
    lmc_s=$(cat "$dir/c$i.lmc_s" 2>/dev/null || echo -)
    clang_s=$(cat "$dir/c$src.clang_s" 2>/dev/null || echo -)
    [ "$src" != "$i" ] && clang_s="=[$src]"
    ms=$(cat "$dir/c$src.ms" 2>/dev/null)
    if [ -n "$ms" ]; then
      rel=$(awk -v a="$ms" -v b="$base" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }')
      printf '%-3s %-58s %8s %8s %10s %8s\n' "$i" "$flags" "$lmc_s" "$clang_s" "$ms" "$rel"
    else
      printf '%-3s %-58s %8s %8s %10s %8s\n' "$i" "$flags" "$lmc_s" "$clang_s" \
        "$(cat "$dir/c$src.status" 2>/dev/null || echo failed)" "-"
    fi
    i=$((i + 1))
  done
} >"$dir/table"

[ -n "$fast" ] || { cat "$dir/table"; die "no configuration ran"; }
if [ -z "$base_i" ]; then
  flags=$(cat "$dir/c$fast.flags")
  why="fastest: [$fast] $flags (-O2 did not run)"
elif [ -z "$challenger" ]; then
  flags="-O2"
  why="fastest: -O2"
else
  flags=$(cat "$dir/c$challenger.flags")
  ratios=$(tr '\n' ' ' <"$dir/duel")
  if [ -n "$duel_median" ] && awk -v r="$duel_median" -v m="$margin" 'BEGIN { exit !(r < 1 - m / 100) }'; then
    why="fastest: [$challenger] $flags (against -O2, run in turn: ${ratios}median $duel_median)"
  else
    why="[$challenger] $flags against -O2, run in turn: ${ratios:-no pair ran }(median ${duel_median:--}): not $margin% faster; keeping -O2"
    flags="-O2"
  fi
fi
echo "$why" >>"$dir/table"
tee "$top/$model.txt" <"$dir/table"
echo "$flags" >"$top/$model.flags"
echo "tune: wrote $top/$model.flags ($flags)"
[ "$top" = build/tune ] && echo "tune: make trainer MODEL=$model now compiles with it"
exit 0
