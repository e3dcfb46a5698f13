# result.sh: what the shell suites share, sourced after they cd to the
# repository: the counters, result N WHAT FIGURE STATUS (STATUS 0 passes;
# prints PASS or FAIL with the figure) and show FILE (a failed check's
# evidence, indented, its last 20 lines).
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
