#!/bin/sh
# The synthetic corpus of bench/gencorpus.c at a tiny size, and lmc's
# token cache on it: the same seed gives the same bytes, another seed
# other bytes; `lmc vocab` writes DIR/.lmc-tokens and gives the same
# answer from it; the repository's corpora leave git's tree clean.
#
# Environment: B (build folder, default build), holding lmc and
# bench/gencorpus.
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/suite_corpus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

check() {
  if [ "$2" -eq 0 ]; then
    echo "PASS $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1"
    failed=$((failed + 1))
  fi
}

$B/bench/gencorpus -s 7 -n 20000 -v 3000 "$tmp/a" && $B/bench/gencorpus -s 7 -n 20000 -v 3000 "$tmp/b" &&
  cmp -s "$tmp/a/train.txt" "$tmp/b/train.txt" && cmp -s "$tmp/a/test.txt" "$tmp/b/test.txt"
check "gencorpus: the same seed, the same bytes" $?

$B/bench/gencorpus -s 8 -n 20000 -v 3000 "$tmp/c" && ! cmp -s "$tmp/a/train.txt" "$tmp/c/train.txt"
check "gencorpus: another seed, other bytes" $?

first=$($B/lmc vocab "$tmp/a" 2>"$tmp/err1") && [ -f "$tmp/a/.lmc-tokens" ] && [ ! -s "$tmp/err1" ] &&
  [ "$(echo "$first" | cut -f1)" -gt 2000 ]
check "lmc vocab on it writes the cache, silently ($first)" $?

second=$($B/lmc vocab "$tmp/a" 2>"$tmp/err2") && [ "$first" = "$second" ] && [ ! -s "$tmp/err2" ]
check "lmc vocab from the cache: the same words and hash" $?

rm "$tmp/a/.lmc-tokens"
third=$($B/lmc vocab "$tmp/a") && [ "$first" = "$third" ]
check "lmc vocab after the cache is removed: the same" $?

$B/lmc vocab data/wikitext-2 >/dev/null && $B/lmc vocab tests/data/tiny >/dev/null &&
  [ -z "$(git status --porcelain --untracked-files=all data tests/data 2>/dev/null)" ]
check "the caches of data/wikitext-2 and tests/data/tiny are ignored by git" $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
