#!/bin/sh
# mkdata.sh: a corpus folder for timing runs, with the vocabulary of the full
# one but short valid and test splits.
#   bench/mkdata.sh DATA OUT VALID_TOKENS TEST_TOKENS
#
# A trainer run with --max-batches N still evaluates the whole valid split
# after the epoch and the whole test split at the end (a minute or two for
# WikiText-2); the benchmark only needs a few evaluation windows.  OUT gets
# train.txt (a link to DATA's), and the first lines of DATA's valid.txt and
# test.txt holding at least VALID_TOKENS and TEST_TOKENS tokens (words plus
# one <eos> per line).  The dictionary is built in first-seen order over
# train, valid, test; WikiText-2's train split already holds every word, so
# the cut splits give the same dictionary.  That is checked with `lmc vocab`
# (size and hash), and OUT is refused if they differ.
set -e
[ $# -eq 4 ] || { echo "usage: bench/mkdata.sh DATA OUT VALID_TOKENS TEST_TOKENS" >&2; exit 2; }
data=$1 out=$2 vt=$3 tt=$4
lmc=${LMC:-build/lmc}
mkdir -p "$out"
rm -f "$out/train.txt"
ln -s "$(cd "$data" && pwd)/train.txt" "$out/train.txt"
awk -v n="$vt" '{ print; t += NF + 1 } t >= n { exit }' "$data/valid.txt" >"$out/valid.txt"
awk -v n="$tt" '{ print; t += NF + 1 } t >= n { exit }' "$data/test.txt" >"$out/test.txt"
full=$("$lmc" vocab "$data")
cut=$("$lmc" vocab "$out")
if [ "$full" != "$cut" ]; then
  echo "mkdata.sh: error: cutting valid/test changes the vocabulary ($full vs $cut);" >&2
  echo "  $data's train.txt does not hold every word of its valid and test splits" >&2
  exit 1
fi
