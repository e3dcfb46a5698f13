#!/bin/sh
# Numerical parity of the five models with torch.nn, AdamW against
# torch.optim.AdamW, and checkpoints moving both ways through tools/
# (tests/parity/parity.py, run with Debian's /usr/bin/python3 and its
# python3-torch).  Needs build/lmc and the runtime (make all).  Ends with
# "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "suite_parity: $PY cannot import torch (install python3-torch: make test-deps)"
  echo "0 passed, 1 failed"
  exit 1
fi
exec $PY tests/parity/parity.py
