#!/bin/sh
# docs/architecture.md stays true to the tree: every source file of
# compiler/, compiler/emit/ and runtime/ is named in its tables, and every
# file its tables name exists (a renamed or deleted file fails here).
# Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
doc=docs/architecture.md
passed=0
failed=0
bad=0
miss() { bad=$((bad + 1)); echo "  $1"; }
check() {   # NAME: one check, passed when miss was not called since the last
  if [ "$bad" -eq 0 ]; then passed=$((passed + 1)); echo "PASS $passed $1"
  else failed=$((failed + 1)); echo "FAIL: $1"; fi
  bad=0
}

# the file's tables: "## The runtime" and the tables after "## The compiler"
table_files() {   # SECTION: names in backquotes in the first column of its table rows
  awk -v sec="$1" '/^## / { on = ($0 == sec) } on && /^\| `/' "$doc" | cut -d'|' -f2 | grep -o '`[^`]*`' | tr -d '`'
}
compiler=$(table_files "## The compiler")
runtime=$(table_files "## The runtime")

for f in compiler/*.c compiler/*.h compiler/emit/*.c compiler/emit/*.h; do
  name=${f#compiler/}; name=${name#emit/}
  if echo "$compiler" | grep -qx "$name"; then :; else miss "$doc: $f is not in the compiler's tables"; fi
done
check "every compiler source file is in $doc"
for f in runtime/*.c runtime/*.h; do
  name=${f#runtime/}
  if echo "$runtime" | grep -qx "$name"; then :; else miss "$doc: $f is not in the runtime's table"; fi
done
check "every runtime source file is in $doc"
for name in $compiler; do
  if [ -f "compiler/$name" ] || [ -f "compiler/emit/$name" ]; then :; else miss "$doc names compiler file $name, which does not exist"; fi
done
for name in $runtime; do
  if [ -f "runtime/$name" ]; then :; else miss "$doc names runtime file $name, which does not exist"; fi
done
check "every file $doc names exists"
for name in $(sed 's/\\n/ /g' docs/architecture.dot | grep -o '[a-z_][a-z_]*\.[ch]\b' | sort -u); do
  if [ -f "compiler/$name" ] || [ -f "compiler/emit/$name" ] || [ -f "runtime/$name" ]; then :
  else miss "docs/architecture.dot names $name, which does not exist"; fi
done
check "every file docs/architecture.dot names exists"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
