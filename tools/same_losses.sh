#!/bin/sh
# tools/same_losses.sh OUTDIR: in the current checkout, builds the five
# trainers and trains each 20 batches with SGD and with AdamW
# (--log-interval 1), writing OUTDIR/MODEL-OPT.csv (the loss of every
# batch, 9 digits), .valid (the validation line) and .sha (a hash of the
# saved checkpoint: its tensors and metadata, less AdamW's optimizer_key,
# which is random per run).  Two checkouts' OUTDIRs compare with diff -r:
# how a change that is not meant to change numerics shows it does not.
set -e
out=$1
[ -n "$out" ] || { echo "usage: tools/same_losses.sh OUTDIR" >&2; exit 2; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in rnn_tanh rnn_relu lstm gru transformer; do
  make --no-print-directory trainer MODEL=$m >/dev/null
  for opt in sgd adamw; do
    build/$m train --max-batches 20 --log-interval 1 --epochs 1 --optimizer $opt \
      --save "$tmp/$m.safetensors" --log-csv "$tmp/$m.csv" > "$tmp/$m.log" 2>&1
    cut -d, -f2,4 "$tmp/$m.csv" > "$out/$m-$opt.csv"
    grep -i "valid" "$tmp/$m.log" | sed 's/time: *[0-9.]*s//' > "$out/$m-$opt.valid" || true
    /usr/bin/python3 - "$tmp/$m.safetensors" > "$out/$m-$opt.sha" <<'PY'
import hashlib, json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
head = json.loads(data[8:8 + n])
head.get("__metadata__", {}).pop("optimizer_key", None)
print(hashlib.sha256(json.dumps(head, sort_keys=True).encode() + data[8 + n:]).hexdigest())
PY
    rm -f "$tmp/$m".*
  done
done
