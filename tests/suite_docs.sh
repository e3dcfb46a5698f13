#!/bin/sh
# docs/architecture.md stays true to the tree: every source file of
# compiler/, compiler/emit/ and runtime/ is named in its tables, and every
# file its tables name exists (a renamed or deleted file fails here).
# Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
doc=docs/architecture.md
passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }

# the file's tables: "## The runtime" and the tables after "## The compiler"
table_files() {   # SECTION: names in backquotes in the first column of its table rows
  awk -v sec="$1" '/^## / { on = ($0 == sec) } on && /^\| `/' "$doc" | cut -d'|' -f2 | grep -o '`[^`]*`' | tr -d '`'
}
compiler=$(table_files "## The compiler")
runtime=$(table_files "## The runtime")

for f in compiler/*.c compiler/*.h compiler/emit/*.c compiler/emit/*.h; do
  name=${f#compiler/}; name=${name#emit/}
  if echo "$compiler" | grep -qx "$name"; then pass; else fail "$doc: $f is not in the compiler's tables"; fi
done
for f in runtime/*.c runtime/*.h; do
  name=${f#runtime/}
  if echo "$runtime" | grep -qx "$name"; then pass; else fail "$doc: $f is not in the runtime's table"; fi
done
for name in $compiler; do
  if [ -f "compiler/$name" ] || [ -f "compiler/emit/$name" ]; then pass; else fail "$doc names compiler file $name, which does not exist"; fi
done
for name in $runtime; do
  if [ -f "runtime/$name" ]; then pass; else fail "$doc names runtime file $name, which does not exist"; fi
done
for name in $(sed 's/\\n/ /g' docs/architecture.dot | grep -o '[a-z_][a-z_]*\.[ch]\b' | sort -u); do
  if [ -f "compiler/$name" ] || [ -f "compiler/emit/$name" ] || [ -f "runtime/$name" ]; then pass
  else fail "docs/architecture.dot names $name, which does not exist"; fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
