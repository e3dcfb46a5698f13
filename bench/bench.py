#!/usr/bin/python3
"""bench.py: lmc's emitted trainers against the PyTorch reference
(bench/torch_lm.py), in the same run, on the same WikiText-2 batches.

  make bench                    the full table (under 30 minutes on 2 cores)
  BENCH_QUICK=1 make bench      LSTM only, fewer batches (under 5 minutes)

For every model (graphs/rnn_tanh, rnn_relu, lstm, gru, transformer at their
default sizes, and lstm at emsize = nhid = 650; a graph that does not exist
yet is skipped with a note) and every thread count (1 and 2):

  1. build/lmc compile the graph (timed, best of 3) and clang the trainer
     (timed) into build/bench/, as `make trainer` does, with
     build/tune/MODEL.flags when `make tune` wrote one;
  2. run, alternating lmc and PyTorch, each in fp32 and in bf16 (lmc's
     --precision bf16, where the trainer has it; PyTorch's forward passes
     under torch.autocast("cpu", dtype=torch.bfloat16), torch_lm.py
     --autocast), each in its own process under
     /usr/bin/time -v with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set (and
     --threads N for both):
       train      --epochs 1 --max-batches 2K+1 --log-interval K: the first
                  log line (K+1 batches) is the warm-up, the second times K
                  batches; then the epoch's evaluation of the valid split,
                  which build/bench/data cuts to E windows (bench/mkdata.sh)
       generate   G words; timed from the "Generated 100" line to the last
                  one, as the lines arrive
  3. SGEMM at the decoder's shapes and the same thread count (bench/sgemm.c),
     before the first model that needs it and again at the end; the faster
     of the two is kept, so that a busy moment does not lower the yardstick.
  4. the fp32 and bf16 peaks of one core and the products at the trainers'
     shapes (bench/peak.c, one thread, timed on its CPU time), at the start;
     each program's GFLOP/s is also given as a share of the peak of its
     precision times the threads ("% peak").

Figures: ms per training batch, training tokens/s (bptt * batch / time),
evaluation tokens/s (lmc: the end-of-epoch time minus the logged training
time; PyTorch: its own "| eval |" line), ms per generated word, peak RSS of
the training process (training and evaluation) and of the generating one,
GFLOP/s of training (FLOPs per step from `lmc compile --stats` when it gives
them, else flops_per_step() below) and that as a percentage of the decoder
SGEMM rate, and lmc / PyTorch for each.  Results: bench/README.md (table),
bench/chart.png (gnuplot), bench/results.json (every number).

Settings come from the environment (defaults full / quick):
  BENCH_MODELS   comma-separated names from CONFIGS   (all / lstm)
  BENCH_THREADS  comma-separated thread counts        (1,2 / 1,2)
  BENCH_BATCHES  K, batches per timed interval         (8 / 3)
  BENCH_EVAL     E, evaluation windows                 (15 / 5)
  BENCH_WORDS    G, generated words                    (301 / 301)
  BENCH_REPS     runs of each pair, alternating order  (2 / 1);
                 each figure is the best of them (merge()); the
                 target rows (one thread; lstm, lstm-650, transformer)
                 get one run more in the full run: this machine's speed
                 swings by 10-50% from minute to minute
  BENCH_OUT      where README.md, chart.png and results.json go (bench)
and the Makefile passes CC, TRAINER_CFLAGS, BLAS_CFLAGS, BLAS_LIBS, DATA.
"""
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = "build/bench"
LMC = "build/lmc"
PY = "/usr/bin/python3"

# name, graph, torch --model, extra lmc -D flags
CONFIGS = [
    ("rnn_tanh", "rnn_tanh", "RNN_TANH", []),
    ("rnn_relu", "rnn_relu", "RNN_RELU", []),
    ("lstm", "lstm", "LSTM", []),
    ("gru", "gru", "GRU", []),
    ("transformer", "transformer", "Transformer", []),
    ("lstm-650", "lstm", "LSTM", ["-D", "emsize=650", "-D", "nhid=650"]),
]

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")

# The programs of a row: key, name in the tables, precision.
PROGRAMS = [("lmc", "lmc", "fp32"), ("torch", "PyTorch", "fp32"), ("lmc_bf16", "lmc bf16", "bf16"),
            ("torch_bf16", "PyTorch autocast", "bf16")]
# lmc / PyTorch ratios: each lmc program against PyTorch in the same precision.
PAIRS = [("lmc", "torch"), ("lmc_bf16", "torch_bf16")]


def env_list(name, default):
    v = os.environ.get(name, "")
    return [s.strip() for s in v.split(",") if s.strip()] if v else default


def env_int(name, full, quick):
    v = os.environ.get(name, "")
    return int(v) if v else (quick if QUICK else full)


MODELS = env_list("BENCH_MODELS", ["lstm"] if QUICK else [c[0] for c in CONFIGS])
THREADS = [int(t) for t in env_list("BENCH_THREADS", ["1", "2"])]
K = env_int("BENCH_BATCHES", 8, 3)
EVAL_WINDOWS = env_int("BENCH_EVAL", 15, 5)
WORDS = env_int("BENCH_WORDS", 301, 301)
REPS = env_int("BENCH_REPS", 2, 1)
OUT = os.environ.get("BENCH_OUT", "bench")
DATA = os.environ.get("DATA", "data/wikitext-2")
CC = os.environ.get("CC", "clang")
TRAINER_CFLAGS = os.environ.get("TRAINER_CFLAGS", "-O3")


def pkg(flag, fallback):
    r = subprocess.run(["pkg-config", flag, "openblas"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else fallback


BLAS_CFLAGS = os.environ.get("BLAS_CFLAGS") or pkg("--cflags", "")
BLAS_LIBS = os.environ.get("BLAS_LIBS") or pkg("--libs", "-lopenblas")


def note(msg):
    print("bench: " + msg, flush=True)


def die(msg):
    print("bench: error: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------ FLOPs

def flops_per_step(kind, h):
    """GEMM FLOPs of one training step on a full window (2 per multiply-add).

    N = bptt * batch rows.  Forward: a recurrent layer with g gate blocks
    (g = 1 for RNN_TANH/RNN_RELU, 4 for LSTM, 3 for GRU) costs
    2 N in g nhid + 2 N nhid g nhid, with in = emsize for layer 0 and nhid
    above; a Transformer layer (d = emsize, f = nhid) costs 2 N d 3d (q, k,
    v) + 2 * 2 batch bptt^2 d (scores and weighted sum over all heads) +
    2 N d d (out projection) + 2 * 2 N d f (feed-forward); the decoder
    2 N nhid ntoken (d ntoken).  Backward computes two products of the same
    size per forward product (input and weight gradients), so a step is
    3 x forward.  Elementwise ops, softmax, embedding and the optimizer are
    memory-bound and not counted."""
    T, Bt, V = h["bptt"], h["batch"], h["ntoken"]
    N = T * Bt
    E, H, L = h["emsize"], h["nhid"], h["nlayers"]
    if kind == "Transformer":
        d, f = E, H
        layer = 2 * N * d * 3 * d + 2 * 2 * Bt * T * T * d + 2 * N * d * d + 2 * 2 * N * d * f
        fwd = L * layer + 2 * N * d * V
    else:
        g = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}[kind]
        fwd = sum(2 * N * (E if l == 0 else H) * g * H + 2 * N * H * g * H for l in range(L))
        fwd += 2 * N * H * V
    return 3 * fwd


def stats_flops(cmd):
    """GEMM FLOPs per training step from `lmc compile --stats`, or None.  Its
    line reads "FLOPs per step: TOTAL (matmul M, other O), ..."; M is taken,
    the figure comparable with flops_per_step() and the SGEMM rate."""
    os.makedirs(f"{B}/run", exist_ok=True)
    r = sh(cmd + ["--stats", "-o", f"{B}/run/stats.c"])   # never a device: lmc replaces its -o
    if r.returncode != 0:
        return None
    num = r"([0-9][0-9.]*(?:[eE][+-]?[0-9]+)?)"
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r"^FLOPs per step:\s*" + num + r"(?:\s*\(matmul\s*" + num + ")?", line.strip())
        if m:
            return float(m.group(2) or m.group(1))
    return None


# ------------------------------------------------------------------ build

def hyper_of(exe):
    """Compiled shapes, from `MODEL info`."""
    r = sh([exe, "info"])
    if r.returncode != 0:
        die(f"{exe} info failed: {r.stderr.strip()}")
    h = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^kind\s+(\S+)", line)
        if m:
            h["kind"] = m.group(1)
        m = re.match(r"^vocabulary\s+(\d+)", line)
        if m:
            h["ntoken"] = int(m.group(1))
        m = re.match(r"^bptt\s+(\d+)", line)
        if m:
            h["bptt"] = int(m.group(1))
        m = re.match(r"^batch\s+train (\d+), eval (\d+)", line)
        if m:
            h["batch"], h["eval_batch"] = int(m.group(1)), int(m.group(2))
        m = re.match(r"^  ([a-z_]+)\s+([^\s(]+)$", line)
        if m and m.group(1) not in h:
            v = m.group(2)
            h[m.group(1)] = int(v) if v.isdigit() else v
    for k in ("kind", "ntoken", "bptt", "batch", "emsize", "nhid", "nlayers"):
        if k not in h:
            die(f"{exe} info: no {k}")
    return h


def build(cfg, ntok, do_clang):
    """lmc compile (best of 3) and clang; returns a dict of what it did."""
    name, graph, _, defines = cfg
    flags = []
    ff = f"build/tune/{graph}.flags"
    if os.path.exists(ff):
        flags = shlex.split(open(ff).read())
    src = f"{B}/gen/{name}.c"
    cmd = [LMC, "compile", f"graphs/{graph}.lua", "-D", f"ntoken={ntok}"] + flags + defines
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = sh(cmd + ["-o", src])
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            return {"error": "lmc compile failed: " + r.stderr.strip()[-400:], "lmc_flags": flags}
    res = {"lmc_flags": flags, "lmc_compile_s": min(times), "c_lines": sum(1 for _ in open(src))}
    fl = stats_flops(cmd)
    res["stats_flops"] = fl
    if fl:
        res["flops"], res["flops_source"] = fl, "lmc --stats"
    if not do_clang:
        return res
    exe = f"{B}/{name}"
    cc = ([CC] + shlex.split(TRAINER_CFLAGS) + ["-std=c11", "-Wall", "-Wextra", "-Werror"] + shlex.split(BLAS_CFLAGS)
          + ["-Iruntime", "-o", exe, src, "build/obj/runtime/main.o", "build/liblmcrt.a"] + shlex.split(BLAS_LIBS)
          + ["-lm"])
    t0 = time.perf_counter()
    r = sh(cc)
    res["clang_s"] = time.perf_counter() - t0
    if r.returncode != 0:
        res["error"] = "clang failed: " + r.stderr.strip()[-400:]
        return res
    res["exe"] = exe
    return res


def build_peak():
    exe = f"{B}/peak"
    cmd = ([CC, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_POSIX_C_SOURCE=200809L"] + shlex.split(BLAS_CFLAGS)
           + ["-Iruntime", "-o", exe, "bench/peak.c", "build/liblmcrt.a"] + shlex.split(BLAS_LIBS) + ["-lm"])
    r = sh(cmd)
    if r.returncode != 0:
        die("building bench/peak.c failed:\n" + r.stderr)
    return exe


def peaks(exe):
    """bench/peak.c at one thread: {"fp32", "bf16": GFLOP/s, "cpu", "flags",
    "products": [shape line fields]}."""
    r = subprocess.run([exe, "1", "0.25" if QUICK else "0.5"], capture_output=True, text=True, env=thread_env(1))
    if r.returncode != 0:
        die("peak failed: " + r.stderr)
    out = {"products": []}
    for line in r.stdout.splitlines():
        f = line.split()
        if f[0] == "peak":
            out[f[1]] = float(f[2])
        elif f[0] in ("cpu", "flags"):
            out[f[0]] = line.partition(" ")[2]
        elif len(f) == 9 and f[1].isdigit():
            out["products"].append(f)
    return out


def lmc_has_bf16(exe):
    """Whether the trainer takes --precision (its --help names it)."""
    r = sh([exe, "--help"])
    return "--precision" in r.stdout + r.stderr


def build_sgemm():
    exe = f"{B}/sgemm"
    cmd = ([CC, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_POSIX_C_SOURCE=200809L"] + shlex.split(BLAS_CFLAGS)
           + ["-o", exe, "bench/sgemm.c"] + shlex.split(BLAS_LIBS))
    r = sh(cmd)
    if r.returncode != 0:
        die("building bench/sgemm.c failed:\n" + r.stderr)
    return exe


# ------------------------------------------------------------------- runs

def thread_env(n):
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
    return e


def timed(cmd, threads, tag, watch=None):
    """Runs cmd under /usr/bin/time -v; returns (rc, output lines, peak RSS MiB,
    {watch match: arrival time})."""
    tf = f"{B}/run/{tag}.time"
    full = ["/usr/bin/time", "-v", "-o", tf] + cmd
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=thread_env(threads),
                         bufsize=1)
    lines, seen = [], {}
    for line in p.stdout:
        t = time.perf_counter()
        lines.append(line.rstrip("\n"))
        if watch:
            m = watch.search(line)
            if m:
                seen[int(m.group(1))] = t
    rc = p.wait()
    rss = None
    try:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(tf).read())
        rss = int(m.group(1)) / 1024 if m else None
    except OSError:
        pass
    with open(f"{B}/run/{tag}.log", "w") as f:
        f.write(" ".join(shlex.quote(c) for c in cmd) + "\n" + "\n".join(lines) + "\n")
    return rc, lines, rss, seen


LOG = re.compile(r"^\| epoch\s+\d+ \|\s*(\d+)/\s*\d+ batches .*\| ms/batch\s+([0-9.]+)")
EPOCH = re.compile(r"^\| end of epoch\s+\d+ \| time:\s*([0-9.]+)s")
EVAL = re.compile(r"^\| eval \| windows (\d+) \| tokens (\d+) \| time ([0-9.]+) s")
GEN = re.compile(r"\| Generated (\d+)/\d+ words")


def parse_train(lines, eval_tokens, who):
    ms = [float(m.group(2)) for m in map(LOG.match, lines) if m]
    if len(ms) < 2:
        return {"error": "no timed interval in the log:\n" + "\n".join(lines[-8:])}
    r = {"ms_batch": statistics.mean(ms[1:])}
    if who == "torch":   # lmc's comes from its own eval run (run_lmc)
        for m in map(EVAL.match, lines):
            if m:
                r["eval_tok_s"] = int(m.group(2)) / float(m.group(3))
    return r


def parse_gen(seen):
    first = [i for i in seen if i >= 100]
    if len(first) < 2:
        return {"error": "fewer than two 'Generated' lines after word 100"}
    a, b = min(first), max(first)
    return {"gen_ms_word": (seen[b] - seen[a]) * 1000 / (b - a)}


# RNN_RELU diverges at main.py's lr 20 within the first batches, in both
# programs (PyTorch logs nan and goes on; lmc stops at a NaN validation loss
# and saves nothing to generate from): it runs at lr 2 in both.  The time
# of a step does not depend on the learning rate.
LR = {"rnn_relu": 2}


def reps_for(name, threads):
    """Runs of each program for a row: one more for the targets' rows."""
    return REPS + (1 if threads == 1 and name in TARGET_MODELS and not QUICK else 0)


def train_lr(name):
    return ["--lr", str(LR[name])] if name in LR else []


def run_lmc(exe, name, threads, rep, eval_tokens, bf16):
    tag = f"{name}-t{threads}-r{rep}-lmc" + ("-bf16" if bf16 else "")
    ck = f"{B}/run/{name}.safetensors"
    prec = ["--precision", "bf16"] if bf16 else []
    cmd = [exe, "train", "--data", f"{B}/data", "--epochs", "1", "--max-batches", str(2 * K + 1), "--log-interval",
           str(K), "--threads", str(threads), "--save", ck] + train_lr(name) + prec
    rc, lines, rss, _ = timed(cmd, threads, tag + "-train")
    if rc != 0:
        return {"error": f"train exited {rc}: " + " | ".join(lines[-4:])}
    r = parse_train(lines, eval_tokens, "lmc")
    r["rss_train_mib"] = rss
    # evaluation on its own: the same valid windows, timed by the trainer
    # around its evaluation loop ("seconds" of eval --json)
    cmd = [exe, "eval", "--checkpoint", ck, "--data", f"{B}/data", "--split", "valid", "--threads", str(threads),
           "--json"] + prec
    rc, lines, _, _ = timed(cmd, threads, tag + "-eval")
    m = re.search(r'"tokens": (\d+), "seconds": ([0-9.eE+-]+)', "\n".join(lines))
    if rc == 0 and m and float(m.group(2)) > 0:
        r["eval_tok_s"] = int(m.group(1)) / float(m.group(2))
    cmd = [exe, "generate", "--checkpoint", ck, "--words", str(WORDS), "--outf", f"{B}/run/{tag}.gen.txt", "--threads",
           str(threads)] + prec
    rc, lines, rss, seen = timed(cmd, threads, tag + "-gen", GEN)
    if rc != 0:
        r["gen_error"] = f"generate exited {rc}: " + " | ".join(lines[-4:])
    else:
        r.update(parse_gen(seen))
        r["rss_gen_mib"] = rss
    return r


def run_torch(h, name, threads, rep, autocast):
    tag = f"{name}-t{threads}-r{rep}-torch" + ("-bf16" if autocast else "")
    base = [PY, "bench/torch_lm.py", "--data", f"{B}/data", "--model", h["kind"], "--emsize", str(h["emsize"]),
            "--nhid", str(h["nhid"]), "--nlayers", str(h["nlayers"]), "--bptt", str(h["bptt"]),
            "--batch_size", str(h["batch"]), "--threads", str(threads)]
    if "nhead" in h:
        base += ["--nhead", str(h["nhead"])]
    if "dropout" in h:
        base += ["--dropout", str(h["dropout"])]
    if "dropout_inner" in h:
        base += ["--inner-dropout", str(h["dropout_inner"])]
    if str(h.get("tied", "false")) == "true":
        base += ["--tied"]
    if autocast:
        base += ["--autocast"]
    cmd = base + ["--epochs", "1", "--max-batches", str(2 * K + 1), "--log-interval", str(K)] + train_lr(name)
    rc, lines, rss, _ = timed(cmd, threads, tag + "-train")
    if rc != 0:
        return {"error": f"train exited {rc}: " + " | ".join(lines[-4:])}
    r = parse_train(lines, None, "torch")
    r["rss_train_mib"] = rss
    cmd = base + ["--gen-words", str(WORDS), "--outf", os.devnull]
    rc, lines, rss, seen = timed(cmd, threads, tag + "-gen", GEN)
    if rc != 0:
        r["gen_error"] = f"generate exited {rc}: " + " | ".join(lines[-4:])
    else:
        r.update(parse_gen(seen))
        r["rss_gen_mib"] = rss
    return r


def sgemm(exe, m, k, n, threads):
    r = subprocess.run([exe, str(m), str(k), str(n), str(threads), "0.5" if QUICK else "1"], capture_output=True,
                       text=True, env=thread_env(threads))
    if r.returncode != 0:
        die("sgemm failed: " + r.stderr)
    out = {}
    for line in r.stdout.splitlines():
        f = line.split()
        out[f[0]] = float(f[4])
        out[f[0] + "_mean"] = float(f[5])
    return out


def merge(runs):
    """Best of each figure over repetitions, the same rule for lmc and
    PyTorch: the highest rate (tok/s), the lowest time and memory.  On a
    shared machine a slow run measures the neighbours, not the program."""
    runs = [r for r in runs if "error" not in r]
    if not runs:
        return None
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
    best = {}
    for k in keys:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        best[k] = max(vals) if k.endswith("tok_s") else min(vals)
    return best


# ----------------------------------------------------------------- report

def machine():
    model, cores = "?", os.cpu_count()
    r = sh(["lscpu"])
    socks = cps = None
    for line in r.stdout.splitlines():
        k, _, v = line.partition(":")
        v = v.strip()
        if k == "Model name":
            model = v
        elif k == "Core(s) per socket":
            cps = int(v)
        elif k == "Socket(s)":
            socks = int(v)
    if cps and socks:
        cores = cps * socks
    return model, cores


def versions():
    def first(cmd):
        r = sh(cmd)
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 and (r.stdout or r.stderr) else "?"
    v = {"cc": first([CC, "--version"]), "lmc": first([LMC, "--version"]).removeprefix("lmc ")}
    r = sh(["dpkg-query", "-W", "-f=${Version}", "python3-torch"])
    v["torch"] = r.stdout.strip() or "?"
    r = sh(["dpkg-query", "-W", "-f=${Version}", "libopenblas0-pthread"])
    v["openblas"] = r.stdout.strip() or "?"
    r = sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    v["commit"] = r.stdout.strip() or "?"
    r = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT)
    if r.stdout.strip():
        v["commit"] += " (with uncommitted changes)"
    return v


def fmt(v, nd=1):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"


FIGS = [("ms_batch", "ms/batch", 1), ("train_tok_s", "train tok/s", 0), ("eval_tok_s", "eval tok/s", 0),
        ("gen_ms_word", "gen ms/word", 2), ("rss_train_mib", "RSS train MiB", 0), ("rss_gen_mib", "RSS gen MiB", 0),
        ("gflops", "GFLOP/s", 1), ("pct_sgemm", "% SGEMM", 0), ("pct_peak", "% peak", 0)]


# The performance issue's targets at one thread: (figure, what, lmc / PyTorch
# at most, the figure is a rate), for the models it names.
TARGETS = [("ms_batch", "ms per training batch", 0.65, False),
           ("eval_tok_s", "evaluation time per token", 0.65, True),
           ("gen_ms_word", "ms per generated word", 1 / 3, False),
           ("rss_train_mib", "peak RSS of training", 0.5, False)]
TARGET_MODELS = ("lstm", "lstm-650", "transformer")
# Mixed precision's targets (issue 17): lmc bf16 against PyTorch autocast.
TARGETS_BF16 = [("ms_batch", "ms per training batch, bf16", 0.8, False),
                ("eval_tok_s", "evaluation time per token, bf16", 0.8, True)]


def targets(res, w):
    """The targets against this run's ratios, and two threads against one."""
    rows = {(r["name"], r["threads"]): r for r in res["rows"]}
    w("## Targets\n")
    w("At one thread: lmc's figure over PyTorch's (for evaluation, time per token: PyTorch's tok/s over lmc's), "
      "against the target; in bf16, lmc's --precision bf16 over PyTorch under autocast.\n")
    w("| model | figure | lmc / PyTorch | target | |")
    w("| --- | --- | ---: | ---: | --- |")
    for name, (x, y, tlist) in [(n, t) for t in (("lmc", "torch", TARGETS), ("lmc_bf16", "torch_bf16", TARGETS_BF16))
                                for n in TARGET_MODELS]:
        r = rows.get((name, 1))
        for key, what, limit, rate in tlist:
            a = r and r.get(x) and r[x].get(key)
            b = r and r.get(y) and r[y].get(key)
            if not a or not b:
                w(f"| {name} | {what} | - | {limit:.2f} | not measured |")
                continue
            q = b / a if rate else a / b
            w(f"| {name} | {what} | {q:.2f} | {limit:.2f} | {'met' if q <= limit else 'not met'} |")
    w("")
    w("lmc at two threads against one (lower ms, higher tok/s is faster):\n")
    w("| model | ms/batch 1 / 2 | eval tok/s 1 / 2 | gen ms/word 1 / 2 | two threads |")
    w("| --- | ---: | ---: | ---: | --- |")
    for name in dict.fromkeys(r["name"] for r in res["rows"]):
        a, b = rows.get((name, 1), {}).get("lmc"), rows.get((name, 2), {}).get("lmc")
        if not a or not b:
            w(f"| {name} | - | - | - | not measured |")
            continue
        slower = [f for f, worse in (("training", b["ms_batch"] > a["ms_batch"]),
                                     ("evaluation", b.get("eval_tok_s", 0) < a.get("eval_tok_s", 0)),
                                     ("generation", b.get("gen_ms_word", 0) > a.get("gen_ms_word", 0))) if worse]
        w(f"| {name} | {a['ms_batch']:.0f} / {b['ms_batch']:.0f} | {fmt(a.get('eval_tok_s'), 0)} / "
          f"{fmt(b.get('eval_tok_s'), 0)} | {fmt(a.get('gen_ms_word'), 2)} / {fmt(b.get('gen_ms_word'), 2)} | "
          f"{'slower: ' + ', '.join(slower) if slower else 'never slower'} |")
    w("")


# The line after which bench/README.md holds sections written by hand (runs
# outside make bench, each with its command); report() keeps them.
HAND_MARK = "<!-- Written by hand from here on; bench/bench.py keeps what follows. -->"


def kept_sections(readme):
    try:
        with open(readme) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    at = text.find(HAND_MARK)
    return text[at:] if at >= 0 else ""


def report(res, meta):
    os.makedirs(OUT, exist_ok=True)
    L = []
    w = L.append
    w("# Benchmark: lmc against PyTorch\n")
    w("Written by `bench/bench.py` (`make bench`) down to the sections written by hand, which it keeps; "
      "do not edit the part above them.\n")
    w(f"- **run**: {meta['date']}, `{meta['command']}`{' (quick variant)' if QUICK else ''}, "
      f"{meta['wall_min']:.1f} min in all")
    w(f"- **machine**: {meta['cpu']}, {meta['cores']} cores; load average at the start {meta['load']}")
    v = meta["versions"]
    w(f"- **software**: lmc {v['lmc']} at {v['commit']}; {v['cc']}, trainers built with `{TRAINER_CFLAGS}`; "
      f"PyTorch {v['torch']} (Debian, CPU); OpenBLAS {v['openblas']} (pthreads)")
    w(f"- **settings**: {2 * K + 1} training batches per run, the first {K + 1} a warm-up, the last {K} timed; "
      f"evaluation on {meta['eval_tokens']} tokens of valid ({EVAL_WINDOWS} window(s) of batch 10); "
      f"{WORDS} generated words, the first 100 a warm-up; threads {', '.join(map(str, THREADS))}; "
      f"{REPS} run(s) of each ({reps_for('lstm', 1)} for the target models at one thread), lmc and PyTorch "
      f"alternating, the best of them kept for each figure "
      f"(the lowest time and memory, the highest rate; the same rule for both)")
    if meta["notes"]:
        for n in meta["notes"]:
            w(f"- **note**: {n}")
    w("")
    w("## Training, evaluation, generation\n")
    w("Per model and thread count: lmc, PyTorch, lmc --precision bf16, PyTorch under autocast bf16, and lmc / "
      "PyTorch in each precision for each figure (for ms and MiB lower is better, so a ratio below 1 favours lmc; "
      "for tok/s, GFLOP/s and % SGEMM a ratio above 1 does). % peak: GFLOP/s over the core's peak in the "
      "program's precision times the threads.\n")
    w("| model | threads | | " + " | ".join(f[1] for f in FIGS) + " |")
    w("| --- | ---: | --- |" + " ---: |" * len(FIGS))
    for row in res["rows"]:
        head = f"| {row['name']} | {row['threads']} |"
        for who, label, _ in PROGRAMS:
            d = row.get(who)
            if d is None:
                err = row.get(who + "_error", "not run")
                w(f"{head} {label} | {err[:120].replace('|', '/')} |" + " |" * (len(FIGS) - 1))
            else:
                w(f"{head} {label} | " + " | ".join(fmt(d.get(k), nd) for k, _, nd in FIGS) + " |")
            head = "| | |"
        for x, y in PAIRS:
            a, b = row.get(x), row.get(y)
            if a or b:
                w(f"| | | {dict((p[0], p[1]) for p in PROGRAMS)[x]} / {dict((p[0], p[1]) for p in PROGRAMS)[y]} | "
                  + " | ".join(ratio(a.get(k) if a else None, b.get(k) if b else None) for k, _, _ in FIGS) + " |")
    w("")
    w("![training, evaluation and generation throughput](chart.png)\n")
    targets(res, w)
    pk = res.get("peak")
    if pk:
        w("## Peaks and products on one core\n")
        w(f"`build/bench/peak 1` (bench/peak.c) on {pk.get('cpu', '?')} (flags:{pk.get('flags', '')}), timed on "
          f"the thread's CPU time: fp32 peak (vfmadd231ps) **{pk.get('fp32', 0):.0f} GFLOP/s**, bf16 peak "
          f"(vdpbf16ps) **{pk.get('bf16', 0):.0f} GFLOP/s**. GFLOP/s at the trainers' shapes, y (M, N) = "
          "op(a) (M, K) op(b) (K, N), t = the transposes of a and b; sgemm is OpenBLAS in fp32, bf16 is "
          "lmc_gemm_bf16 (the path the trainers run), dnnl oneDNN's matmul called directly; share = mean over "
          "the peak of the precision.\n")
        w("| shape | M | N | K | t | program | best | mean | share |")
        w("| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
        for f in pk["products"]:
            w("| " + " | ".join(f) + " |")
        w("")
    w("## SGEMM at the decoder's shapes\n")
    w("`build/bench/sgemm M K N THREADS` (bench/sgemm.c): cblas_sgemm on the decoder's three products of a "
      "training step, best of repeated calls, GFLOP/s, measured before the models and again after them (the "
      "faster kept). `total` is their FLOPs over the sum of their times, the rate `% SGEMM` above divides by. "
      "`sustained` is the same total over all the repeated calls, not the best of them: what a trainer that "
      "makes each call once a step can expect from the library.\n")
    w("| M x K x N | threads | fwd X W^T | dX = dY W | dW = dY^T X | total | sustained |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, s in sorted(res["sgemm"].items()):
        m, k, n, t = key.split(",")
        sus = f"{s['total_mean']:.1f}" if "total_mean" in s else "-"
        w(f"| {m} x {k} x {n} | {t} | {s['fwd']:.1f} | {s['dx']:.1f} | {s['dw']:.1f} | {s['total']:.1f} | {sus} |")
    w("")
    w("## Compile speed\n")
    w("`lmc compile` (best of 3; target under 0.5 s) and the clang build of the emitted trainer "
      "(target under 30 s), for the trainer the table above ran.\n")
    w("| model | lmc compile s | clang s | emitted C lines | GFLOP per step | FLOPs from | formula GFLOP | pass flags |")
    w("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    for name, b in res["builds"].items():
        if "lmc_compile_s" not in b:
            w(f"| {name} | failed | | | | | | {b.get('error', '')[:100].replace('|', '/')} |")
            continue
        cl = f"{b['clang_s']:.1f}" if "clang_s" in b else "not built"
        gf = f"{b['flops'] / 1e9:.2f}" if b.get("flops") else "-"
        ff = f"{b['formula_flops'] / 1e9:.2f}" if b.get("formula_flops") else "-"
        ok = "" if b["lmc_compile_s"] < 0.5 else " (over target)"
        okc = "" if b.get("clang_s", 0) < 30 else " (over target)"
        w(f"| {name} | {b['lmc_compile_s']:.3f}{ok} | {cl}{okc} | {b['c_lines']} | {gf} | "
          f"{b.get('flops_source', '-')} | {ff} | `{' '.join(b['lmc_flags']) or '(default)'}` |")
    w("")
    w("## How the figures are measured\n")
    w("- Both programs read the same corpus folder, `build/bench/data`: WikiText-2's train split, and valid "
      "and test cut to their first lines (`bench/mkdata.sh`; the dictionary, checked with `lmc vocab`, stays "
      "the full one), so the training batches are the same `get_batch` windows of the same `batchify` "
      "columns, from the first, and each run's end-of-epoch evaluation is short.")
    w(f"- **ms/batch**: `train --epochs 1 --max-batches {2 * K + 1} --log-interval {K}`; main.py's log line "
      f"at batch {K} (covering {K + 1} batches) is the warm-up, the line at batch {2 * K} times batches "
      f"{K + 1}..{2 * K}. **train tok/s** = bptt * batch / (ms/batch).")
    w("- **eval tok/s**: evaluation of the cut valid split, batch 10, no dropout, timed around the evaluation "
      "loop by the program itself: PyTorch's after the training epoch (its `| eval |` line), lmc's by "
      "`eval --split valid --threads N --json` on the checkpoint the training run saved (its `seconds`).")
    w("- **gen ms/word**: `generate --words G --threads N` (lmc, from the checkpoint the training run saved) and "
      "`torch_lm.py --gen-words G` (generate.py's loop); the time between the `Generated 100` line and the "
      "last one as they arrive on the pipe, over the words between. The Transformer sees the last bptt words.")
    w("- **RSS**: `Maximum resident set size` of `/usr/bin/time -v`, per process: the training one (which "
      "also evaluates) and the generating one.")
    w("- **GFLOP/s**: FLOPs of a training step on a full window over ms/batch. FLOPs come from "
      "`lmc compile --stats` when it prints them, else from the formula in `flops_per_step()` "
      "(bench/bench.py): GEMM FLOPs only, 2 per multiply-add, backward = 2 x forward; a recurrent layer "
      "with g gate blocks (1 RNN, 4 LSTM, 3 GRU) 2N(in + nhid) g nhid, a Transformer layer "
      "2N d 3d + 4 batch bptt^2 d + 2N d^2 + 4N d nhid, the decoder 2N nhid ntoken, N = bptt * batch. "
      "**% SGEMM**: that over the `total` SGEMM rate at the decoder's shape and the same threads.")
    w("- Each process gets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS = N, and "
      "`--threads N` (lmc) / `torch.set_num_threads(N)` (PyTorch). Every run's log is in build/bench/run/.")
    w("")
    w("## Reproducing\n")
    w("```\nmake bench                  # the full table, under 30 minutes\nmake bench NATIVE=1         # trainers built with -march=native (opt-in, not portable)\nBENCH_QUICK=1 make bench    "
      "# LSTM only, fewer batches, under 5 minutes\nBENCH_MODELS=lstm,gru BENCH_THREADS=1 make bench\n"
      "make tune MODEL=lstm        # pass configurations; the fastest goes to build/tune/lstm.flags\n```")
    readme = os.path.join(OUT, "README.md")
    kept = kept_sections(readme)
    with open(readme + ".tmp", "w") as f:
        f.write("\n".join(L) + "\n")
        if kept:
            f.write("\n" + kept)
    os.replace(readme + ".tmp", readme)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": res}, f, indent=1, sort_keys=True)
        f.write("\n")
    chart(res)


def chart(res):
    if not shutil.which("gnuplot"):
        note("gnuplot not found (apt-get install gnuplot-nox): no chart")
        return
    dat = f"{B}/chart.dat"
    with open(dat, "w") as f:
        f.write("# config, then train tok/s, eval tok/s, gen words/s of each of " + " ".join(p[0] for p in PROGRAMS)
                + "\n")
        for row in res["rows"]:
            def g(d, k):
                v = d.get(k)
                return f"{v:.3f}" if v else "NaN"

            def wps(d):
                v = d.get("gen_ms_word")
                return f"{1000 / v:.3f}" if v else "NaN"
            cols = [g(row.get(p[0]) or {}, "train_tok_s") for p in PROGRAMS]
            cols += [g(row.get(p[0]) or {}, "eval_tok_s") for p in PROGRAMS]
            cols += [wps(row.get(p[0]) or {}) for p in PROGRAMS]
            f.write(f"\"{row['name']} {row['threads']}t\" " + " ".join(cols) + "\n")
    out = os.path.join(OUT, "chart.png")
    n = len(res["rows"])
    colours = ["#1f77b4", "#ff7f0e", "#aec7e8", "#ffbb78"]
    plots = []
    for i, what in enumerate(("training tokens/s", "evaluation tokens/s", "generated words/s")):
        col = 2 + i * len(PROGRAMS)
        series = [f"'{dat if j == 0 else ''}' using {col + j}{':xtic(1)' if j == 0 else ''} title '{p[1]}' "
                  f"lc rgb '{colours[j]}'" for j, p in enumerate(PROGRAMS)]
        plots.append(f"set ylabel '{what}'\nplot " + ", ".join(series))
    plots = "\n".join(plots)
    gp = f"""
set terminal pngcairo size {max(900, 110 * n + 200)},900 noenhanced font 'sans,10'
set output '{out}'
set xrange [-0.6:{n} - 0.4]
set offsets 0, 0, graph 0.18, 0
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right horizontal
set xtics rotate by -25 nomirror
set yrange [0:*]
set multiplot layout 3,1 title "lmc vs PyTorch ({res['cpu']}, higher is better)"
{plots}
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=gp, capture_output=True, text=True)
    if r.returncode != 0:
        note("gnuplot failed: " + r.stderr.strip())
    else:
        note(f"wrote {out}")


# ------------------------------------------------------------------- main

def main():
    os.chdir(ROOT)
    t_start = time.perf_counter()
    for p in (LMC, "build/liblmcrt.a", "build/obj/runtime/main.o"):
        if not os.path.exists(p):
            die(f"{p} is missing: run make first")
    if not os.path.exists("/usr/bin/time"):
        die("/usr/bin/time is missing (apt-get install time)")
    if sh([PY, "-c", "import torch"]).returncode != 0:
        die(f"{PY} cannot import torch (make test-deps installs python3-torch)")
    unknown = [m for m in MODELS if m not in [c[0] for c in CONFIGS]]
    if unknown:
        die(f"BENCH_MODELS: unknown {', '.join(unknown)} (known: {', '.join(c[0] for c in CONFIGS)})")
    for d in ("gen", "run"):
        os.makedirs(f"{B}/{d}", exist_ok=True)
    notes = [f"{m} trains at lr {lr} in both programs: at main.py's lr 20 it diverges within the first batches "
             f"in both (PyTorch logs nan; lmc stops at the NaN validation loss)" for m, lr in LR.items() if m in MODELS]
    load = open("/proc/loadavg").read().split()[0]
    if float(load) > 0.5:
        note(f"load average is {load}: other work is running, figures will be noisy")

    r = sh(["sh", "bench/mkdata.sh", DATA, f"{B}/data", str((EVAL_WINDOWS * 35 + 1) * 10), "700"])
    if r.returncode != 0:
        die(r.stderr.strip())
    ntok_line = sh([LMC, "vocab", DATA]).stdout.split()
    ntok = int(ntok_line[0])
    vtoks = sum(len(line.split()) + 1 for line in open(f"{B}/data/valid.txt", encoding="utf8"))

    # builds: lmc compile for every model, clang for those we run
    builds, hypers = {}, {}
    for cfg in CONFIGS:
        name, graph = cfg[0], cfg[1]
        if not os.path.exists(f"graphs/{graph}.lua"):
            if name in MODELS:
                notes.append(f"{name}: graphs/{graph}.lua does not exist yet; skipped")
                note(notes[-1])
            continue
        run_it = name in MODELS
        note(f"building {name}" + ("" if run_it else " (lmc compile only)"))
        b = build(cfg, ntok, run_it)
        builds[name] = b
        if "error" in b:
            note(f"{name}: {b['error']}")
            if run_it:
                notes.append(f"{name}: build failed; skipped ({b['error'][:200]})")
            continue
        if run_it:
            h = hyper_of(b["exe"])
            hypers[name] = h
            b["formula_flops"] = flops_per_step(h["kind"], h)
            if not b["stats_flops"]:
                b["flops"], b["flops_source"] = b["formula_flops"], "formula"
            note(f"  lmc compile {b['lmc_compile_s']:.3f} s, clang {b['clang_s']:.1f} s, "
                 f"{b['flops'] / 1e9:.2f} GFLOP per step ({b['flops_source']})")

    sg_exe = build_sgemm()
    note("peaks and products on one core (bench/peak.c)")
    res = {"rows": [], "sgemm": {}, "builds": builds, "peak": peaks(build_peak())}
    bf16 = {name: lmc_has_bf16(builds[name]["exe"]) for name in hypers}
    for name in [m for m in MODELS if m in hypers and not bf16[m]]:
        notes.append(f"{name}: the trainer has no --precision; lmc bf16 not run")
        note(notes[-1])
    for threads in THREADS:
        for name in [m for m in MODELS if m in hypers]:
            h = hypers[name]
            eval_tokens = (vtoks // h["eval_batch"] - 1) * h["eval_batch"]
            dec_k = h["emsize"] if h["kind"] == "Transformer" else h["nhid"]
            shape = (h["bptt"] * h["batch"], dec_k, h["ntoken"])
            key = ",".join(map(str, shape + (threads,)))
            if key not in res["sgemm"]:
                note(f"sgemm {shape[0]}x{shape[1]}x{shape[2]} at {threads} thread(s)")
                res["sgemm"][key] = sgemm(sg_exe, *shape, threads)
            runs = {p[0]: [] for p in PROGRAMS}
            whos = [p[0] for p in PROGRAMS if p[0] != "lmc_bf16" or bf16[name]]
            reps = reps_for(name, threads)
            for rep in range(reps):
                order = whos if (rep + len(res["rows"])) % 2 == 0 else whos[::-1]
                for who in order:
                    note(f"{name} threads {threads} run {rep + 1}/{reps}: {who}")
                    if who.startswith("lmc"):
                        x = run_lmc(builds[name]["exe"], name, threads, rep, eval_tokens, who == "lmc_bf16")
                    else:
                        x = run_torch(h, name, threads, rep, who == "torch_bf16")
                    runs[who].append(x)
                    if "error" in x or "gen_error" in x:
                        note(f"  {who}: {x.get('error') or x.get('gen_error')}")
                    else:
                        note(f"  {who}: {x['ms_batch']:.1f} ms/batch, eval {fmt(x.get('eval_tok_s'), 0)} tok/s, "
                             f"gen {fmt(x.get('gen_ms_word'), 2)} ms/word, RSS {fmt(x.get('rss_train_mib'), 0)} MiB")
            row = {"name": name, "threads": threads}
            tokens = h["bptt"] * h["batch"]
            for who, _, prec in PROGRAMS:
                row[who + "_runs"] = runs[who]
                m = merge(runs[who])
                if m is None:
                    row[who + "_error"] = ("failed: " + runs[who][0].get("error", "?")) if runs[who] else "not run"
                    row[who] = None
                    continue
                m["train_tok_s"] = tokens / (m["ms_batch"] / 1000)
                m["gflops"] = builds[name]["flops"] / (m["ms_batch"] / 1000) / 1e9
                if res["peak"].get(prec):
                    m["pct_peak"] = 100 * m["gflops"] / (res["peak"][prec] * threads)
                row[who] = m
            res["rows"].append(row)
    for key in res["sgemm"]:
        m, k, n, t = map(int, key.split(","))
        note(f"sgemm {m}x{k}x{n} at {t} thread(s), again")
        again = sgemm(sg_exe, m, k, n, t)
        res["sgemm"][key] = {p: max(v, again[p]) for p, v in res["sgemm"][key].items()}
    for row in res["rows"]:
        h = hypers[row["name"]]
        dec_k = h["emsize"] if h["kind"] == "Transformer" else h["nhid"]
        key = ",".join(map(str, (h["bptt"] * h["batch"], dec_k, h["ntoken"], row["threads"])))
        for who, _, _ in PROGRAMS:
            if row.get(who):
                row[who]["pct_sgemm"] = 100 * row[who]["gflops"] / res["sgemm"][key]["total"]
    cpu, cores = machine()
    res["cpu"] = cpu
    cmd = "make bench" + (" NATIVE=1" if os.environ.get("NATIVE") == "1" else "")
    env_set = [f"{k}={os.environ[k]}" for k in ("BENCH_QUICK", "BENCH_MODELS", "BENCH_THREADS", "BENCH_BATCHES",
                                                 "BENCH_EVAL", "BENCH_WORDS", "BENCH_REPS") if os.environ.get(k)]
    if env_set:
        cmd = " ".join(env_set) + " " + cmd
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "command": cmd, "cpu": cpu, "cores": cores,
            "load": load, "versions": versions(), "notes": notes, "eval_tokens": (vtoks // 10 - 1) * 10,
            "wall_min": (time.perf_counter() - t_start) / 60}
    report(res, meta)
    note(f"wrote {os.path.join(OUT, 'README.md')} in {meta['wall_min']:.1f} min")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:   # README.md and chart.png again from results.json
        saved = json.load(open(os.path.join(OUT, "results.json")))
        report(saved["results"], saved["meta"])
    else:
        main()
