#!/bin/sh
# Runs each libFuzzer target named (graph, safetensors, corpus, ...) for
# FUZZ_SECONDS on a fresh copy of its seed corpus, one after another; make
# fuzz calls it after building build/fuzz/fuzz_NAME.  Prints each target's
# execution count; any crash, leak, timeout or out-of-memory fails the run
# and prints the reproducer, which build/fuzz/fuzz_NAME FILE replays.
# tests/fuzz/NAME.dict, when there, is the target's dictionary of tokens.
# tests/fuzz/corpus is never written.
secs=${FUZZ_SECONDS:-60}
dir=build/fuzz
mkdir -p $dir/artifacts
failed=0
# the targets' temporary files, left behind by a crash
TMPDIR=$(mktemp -d) || exit 1
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
for name in "$@"; do
  corpus=$dir/corpus-$name
  rm -rf "$corpus"
  mkdir -p "$corpus"
  [ -d tests/fuzz/corpus/$name ] && cp tests/fuzz/corpus/$name/* "$corpus"/ 2>/dev/null
  if [ "$name" = graph ]; then   # the five models and the golden bad graphs seed it
    cp graphs/*.lua "$corpus"/
    for f in tests/golden/errors/*.lua; do cp "$f" "$corpus/err_${f##*/}"; done
  fi
  log=$dir/fuzz_$name.log
  dict=""
  [ -f tests/fuzz/$name.dict ] && dict=-dict=tests/fuzz/$name.dict
  "$dir/fuzz_$name" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -close_fd_mask=3 -artifact_prefix="$dir/artifacts/$name-" "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ $rc -eq 0 ]; then
    echo "fuzz_$name: ${execs:-?} executions in ${secs} s, 0 crashes"
  else
    failed=$((failed + 1))
    grep -E '^(==[0-9]+==ERROR|SUMMARY)' "$log" | head -n 3
    art=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
    echo "fuzz_$name: FAILED after ${execs:-?} executions (exit $rc); reproducer: ${art:-none}, log: $log"
  fi
done
[ $failed -eq 0 ]
