#!/usr/bin/python3
"""bench_mpi.py: data-parallel training speed over Open MPI (make bench-mpi).

For each model (BENCH_MODELS, default the LSTM and the Transformer at their
default shapes, WikiText-2's vocabulary) three ways of using two cores:
  np=1     mpirun -np 1 of the MPI trainer, --threads 1
  np=2     mpirun -np 2 of it, --threads 1 each (global batch 2 x 20)
  1p x 2t  the default trainer, one process, --threads 2
each `train --epochs 1 --max-batches 2K+1 --log-interval K` on WikiText-2's
train split (valid and test cut short with bench/mkdata.sh), timed by the
trainer's own log line for batches K+1..2K (tokens/s counts every rank's
tokens; comm is the share of that time spent in MPI calls).  The runs
alternate (model by model, way by way, BENCH_REPEATS rounds), so that a
change in the machine's load touches every way alike; the table gives the
median and the range.

Then the cost of MPI_Allreduce itself at np=2 (bench/allreduce.c) over
sizes up to the LSTM's gradient, fitted as t = a + b * bytes, and from it
a projection of the step time at 8, 16 and 64 ranks (assumptions in the
text it writes).  Writes the section between the bench-mpi markers of
bench/README.md and prints it.

Environment: DATA (corpus, default data/wikitext-2), BENCH_MODELS,
BENCH_REPEATS (3), BENCH_K (20), BENCH_BIND (mpirun --bind-to, default
core), BENCH_QUICK=1 (2 rounds, K = 5: checks the script, figures rough).
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

DATA = os.environ.get("DATA") or "data/wikitext-2"
MODELS = (os.environ.get("BENCH_MODELS") or "lstm transformer").split()
QUICK = os.environ.get("BENCH_QUICK") == "1"
REPEATS = int(os.environ.get("BENCH_REPEATS") or (2 if QUICK else 3))
K = int(os.environ.get("BENCH_K") or (5 if QUICK else 20))
BIND = os.environ.get("BENCH_BIND") or "core"
B = "build/bench-mpi"
WAYS = ["np=1", "np=2", "1p x 2t"]
SIZES = [4096, 65536, 1 << 20, 4 << 20, 16 << 20, 56 << 20]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")


def sh(cmd, **kw):
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=ENV, check=True, text=True, **kw)


def build():
    os.makedirs(B, exist_ok=True)
    for m in MODELS:
        for mpi, exe in (("1", f"{B}/{m}-mpi"), ("", f"{B}/{m}")):
            sh(["make", "--no-print-directory", "trainer", f"MODEL={m}", f"DATA={DATA}", f"MPI={mpi}"],
               stdout=subprocess.DEVNULL)
            os.replace(f"build/{m}", exe)
    sh(["sh", "bench/mkdata.sh", DATA, f"{B}/data", "1500", "1500"])
    flags = subprocess.run(["mpicc", "--showme:compile"], text=True, capture_output=True, check=True).stdout.split()
    libs = subprocess.run(["mpicc", "--showme:link"], text=True, capture_output=True, check=True).stdout.split()
    sh([os.environ.get("CC") or "clang", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags,
        "-o", f"{B}/allreduce", "bench/allreduce.c", *libs])


LINE = re.compile(r"\|\s+(\d+)/\s*\d+ batches .*\| ms/batch\s+([\d.]+) .*\| tok/s (\d+)(?: \| comm ([\d.]+)%)?")


def train(m, way, tmp):
    args = ["train", "--data", f"{B}/data", "--epochs", "1", "--max-batches", str(2 * K + 1), "--log-interval",
            str(K), "--save", f"{tmp}/{m}.safetensors"]
    if way == "1p x 2t":
        cmd = [f"{B}/{m}", *args, "--threads", "2"]
    else:
        cmd = ["mpirun", "-np", way[3:], "--bind-to", BIND, f"{B}/{m}-mpi", *args, "--threads", "1"]
    out = sh(cmd, capture_output=True).stdout
    for line in out.splitlines():
        g = LINE.search(line)
        if g and int(g.group(1)) == 2 * K:
            return float(g.group(2)), float(g.group(3)), float(g.group(4)) if g.group(4) else None
    sys.exit(f"bench_mpi.py: no log line for batch {2 * K} in:\n{out}")


def allreduce():
    out = sh(["mpirun", "-np", "2", "--bind-to", BIND, f"{B}/allreduce", *map(str, SIZES)],
             capture_output=True).stdout
    pts = [tuple(float(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
    return pts, max(my - b * mx, 0.0), b


def size(n):
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 1024:g} KiB"


def spread(v):
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"


def param_numel(m):
    info = subprocess.run([f"{B}/{m}", "info"], text=True, capture_output=True, check=True).stdout
    return int(re.search(r"^parameters\s+(\d+)", info, re.M).group(1))


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def report(res, pts, a, b):
    w = []
    w.append(f"Measured {'(BENCH_QUICK: preliminary) ' if QUICK else ''}on {cpu()}, {os.cpu_count()} cores "
             f"as the OS shows them, load average {LOAD[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at "
             f"the end, with `make bench-mpi` (bench/bench_mpi.py: {REPEATS} alternating rounds, "
             f"tokens/s over batches {K + 1}-{2 * K} of `train --max-batches {2 * K + 1} --log-interval {K}`, "
             f"median (range)); np=2 trains a global batch of 40, 20 per rank.\n")
    w.append("| model | np=1 tok/s | np=2 tok/s | 1 process, 2 threads tok/s | np=2 / np=1 | np=2 / 2 threads "
             "| comm at np=2 |")
    w.append("| --- | --- | --- | --- | --- | --- | --- |")
    for m in MODELS:
        t = {way: [r[1] for r in res[m][way]] for way in WAYS}
        comm = [r[2] for r in res[m]["np=2"]]
        s1 = statistics.median(t["np=2"]) / statistics.median(t["np=1"])
        s2 = statistics.median(t["np=2"]) / statistics.median(t["1p x 2t"])
        w.append(f"| {m} | {spread(t['np=1'])} | {spread(t['np=2'])} | {spread(t['1p x 2t'])} | {s1:.2f}x "
                 f"| {s2:.2f}x | {statistics.median(comm):.1f}% ({min(comm):.1f}-{max(comm):.1f}%) |")
    w.append("")
    w.append(f"MPI_Allreduce of a float block at np=2 (bench/allreduce.c, median of 20): "
             + ", ".join(f"{size(p[0])} {p[1] * 1e3:.3g} ms" for p in pts)
             + f"; fitted t = a + bytes x b, a = {a * 1e6:.0f} us{' (the fit is below zero)' if a == 0 else ''}, "
             f"1 / b = {1 / b / 1e9:.2f} GB/s.\n")
    w.append("Projection (not measured): a ring allreduce moves 2(N-1)/N bytes per gradient byte in 2(N-1) "
             "steps, so at N ranks it takes 2(N-1) x a/2 + 2(N-1)/N x S x b, with a and b fitted above at np=2 "
             "on this machine (shared memory; across machines the network's bandwidth takes b's place). "
             "Compute per rank stays the np=1 step time (the per-rank batch is fixed), and the reduction is "
             "counted in full, as if nothing of it overlapped the backward: an upper bound on the step.\n")
    w.append("| model | gradient | np=1 step | allreduce at 8 / 16 / 64 | tokens/s at 8 / 16 / 64 | efficiency at 64 |")
    w.append("| --- | --- | --- | --- | --- | --- |")
    for m in MODELS:
        S = 4 * param_numel(m)
        step = statistics.median(r[0] for r in res[m]["np=1"]) / 1e3
        toks = statistics.median(r[1] for r in res[m]["np=1"]) * step   # per step, one rank
        ar = {n: (n - 1) * a + 2 * (n - 1) / n * S * b for n in (8, 16, 64)}
        tps = {n: n * toks / (step + ar[n]) for n in ar}
        w.append(f"| {m} | {S / 2**20:.1f} MiB | {step * 1e3:.0f} ms | "
                 + " / ".join(f"{ar[n] * 1e3:.0f}" for n in ar) + " ms | "
                 + " / ".join(f"{tps[n]:.0f}" for n in tps) + f" | {step / (step + ar[64]) * 100:.0f}% |")
    return "\n".join(w) + "\n"


def main():
    global LOAD
    LOAD = os.getloadavg()
    build()
    res = {m: {way: [] for way in WAYS} for m in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(REPEATS):
            for m in MODELS:
                for way in WAYS:
                    res[m][way].append(train(m, way, tmp))
                    print(f"round {r + 1} {m} {way}: {res[m][way][-1]}", flush=True)
    pts, a, b = allreduce()
    text = report(res, pts, a, b)
    print(text)
    path = "bench/README.md"
    readme = open(path).read()
    begin, end = "<!-- bench-mpi begin -->\n", "<!-- bench-mpi end -->"
    if begin in readme and end in readme:
        i, j = readme.index(begin) + len(begin), readme.index(end)
        open(path, "w").write(readme[:i] + text + readme[j:])
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
