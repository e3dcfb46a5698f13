#!/bin/sh
# Compile times of large graphs (tests/suite_cost.sh checks that they
# compile; this prints how long each takes, wall and user seconds, and the
# peak memory).  Usage: sh bench/compile_cost.sh [LMC]
cd "$(dirname "$0")/.." || exit 1
LMC=${1:-build/lmc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
while read -r graph flags; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e s wall, %U s user, %M KB: $graph $flags" \
    "$LMC" compile "$graph" $flags -o "$tmp/x.c" 2>&1 >/dev/null | tail -1
done <<'LIST'
graphs/lstm.lua -D nlayers=500
graphs/lstm.lua -D nlayers=1000
graphs/lstm.lua -D nlayers=2000
graphs/transformer.lua -D nlayers=100
graphs/transformer.lua -D nlayers=400
tests/cost/chain.lua -D n=5000
tests/cost/chain.lua -D n=15000
tests/cost/chain.lua -D n=30000
LIST
