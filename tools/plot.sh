#!/bin/sh
# plot.sh: a PNG of a training run's loss, with gnuplot.
#   tools/plot.sh LOG [OUT.png]       (make plot LOG=FILE)
# LOG is either what a trainer printed (main.py's "| epoch ... | loss ..." and
# "| end of epoch ... | valid loss ..." lines) or its --log-csv file
# (epoch,batch,lr,loss,ppl,ms_per_batch,tokens_per_s).  The x axis is in
# epochs; the training loss of each log line is drawn, and the validation
# loss of each epoch when the log has it.  OUT defaults to LOG with its
# extension replaced by .png.
set -e
log=$1
[ -n "$log" ] || { echo "usage: tools/plot.sh LOG [OUT.png]" >&2; exit 2; }
[ -r "$log" ] || { echo "plot.sh: error: cannot read $log" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot.sh: error: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out=${2:-${log%.*}.png}
[ "$out" = "$log" ] && out=$log.png
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if head -n 1 "$log" | grep -q '^epoch,batch,'; then
  # CSV: no batch count per epoch, so an epoch ends at its last logged batch
  awk -F, 'NR == FNR { if (FNR > 1 && $2 > max[$1]) max[$1] = $2; next }
           FNR > 1 { printf "%.6f %s\n", $1 - 1 + $2 / max[$1], $4 }' "$log" "$log" >"$tmp/train"
  : >"$tmp/valid"
else
  awk '/^\| epoch / {
         split($0, f, "|"); split(f[3], b, "/"); sub(/batches/, "", b[2])
         e = f[2]; sub(/epoch/, "", e); l = f[6]; sub(/loss/, "", l)
         printf "%.6f %s\n", e - 1 + b[1] / b[2], l + 0 }' "$log" >"$tmp/train"
  awk '/^\| end of epoch / {
         split($0, f, "|"); e = f[2]; sub(/end of epoch/, "", e); l = f[4]; sub(/valid loss/, "", l)
         printf "%d %s\n", e, l + 0 }' "$log" >"$tmp/valid"
fi
[ -s "$tmp/train" ] || [ -s "$tmp/valid" ] || { echo "plot.sh: error: no log lines in $log" >&2; exit 1; }

plots=""
[ -s "$tmp/train" ] && plots="'$tmp/train' using 1:2 with lines lw 1.5 title 'train loss'"
[ -s "$tmp/valid" ] && plots="${plots:+$plots, }'$tmp/valid' using 1:2 with linespoints lw 2 pt 7 title 'valid loss'"
gnuplot <<GP
set terminal pngcairo size 900,540 enhanced font 'sans,10'
set output '$out'
set title "$(basename "$log")"
set xlabel 'epoch'
set ylabel 'loss (nats per token)'
set grid
set key top right
plot $plots
GP
echo "plot.sh: wrote $out"
