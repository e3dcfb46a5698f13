#!/bin/sh
# Runs every test suite and ends with one line "N passed, N failed".
#   check binaries (build/tests/check_*): their "Checks: N, Failures: F, Errors: E" line
#   shell suites (tests/suite_*.sh): their own "N passed, N failed" line
# Usage: tests/run.sh CHECK_BINARY...
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for bin in "$@"; do
  echo "== $bin"
  CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-600} "$bin" >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "$bin: error: no check summary (exit $rc)"
    failed=$((failed + 1))
    continue
  fi
  n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
  f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
  e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
  passed=$((passed + n - f - e))
  failed=$((failed + f + e))
done
for suite in tests/suite_*.sh; do
  [ -f "$suite" ] || continue
  echo "== $suite"
  sh "$suite" >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "$suite: error: no summary line (exit $rc)"
    failed=$((failed + 1))
    continue
  fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
  failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
  [ $rc -ne 0 ] && [ "$(echo "$line" | cut -d' ' -f3)" = 0 ] && { echo "$suite: exit $rc"; failed=$((failed + 1)); }
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
