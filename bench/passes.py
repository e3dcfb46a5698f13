#!/usr/bin/python3
"""passes.py: what each optimization pass buys (make bench-passes).

For every model (graphs/*.lua at its default sizes, compiled for the
corpus's vocabulary) and every pass configuration worth comparing,

    -O0, -O2,
    -O2 --disable-pass=P   for each pass P  (what P buys on top of the rest)
    -O0 --enable-pass=P    for each pass P  (what P buys alone)

build/lmc compiles the trainer (clang TRAINER_CFLAGS, -O3, as `make trainer`)
into build/bench-passes/ and runs

    MODEL train --data D --epochs 1 --lr 1 --max-batches B+2 --log-interval 1 --threads 1

under /usr/bin/time (lr 1: the example's 20 makes RNN_RELU diverge within a
few batches, and infinities and denormals would time something else), where
D is the corpus with its valid and test splits cut
to a few windows (bench/mkdata.sh), so the end-of-epoch evaluation is short.
Every trainer is built before any runs; then PASSES_REPS rounds (2) run each
distinct trainer once.  Batches 0 and 1 are the warm-up (the first log line
covers both); ms per batch is the fastest of the next B over all rounds (the
machine is shared: interference only ever adds time), the median is kept too.
Peak memory is the process's peak RSS (parameters, gradients, the work arenas
of the train and eval programs, the corpus), and `arena` the training
program's work arena from `lmc compile --stats` (the memory plan's peak, or
every buffer its own region without plan-memory).  Configurations whose C
files are identical share one run.  A final check trains the Transformer for
20 batches with and without fold-constants and compares the losses.

Writes bench/passes.md (the tables and the command) and
build/bench-passes/results.json; `bench/passes.py --report` writes the first
again from the second.  Environment: PASSES_MODELS (comma-separated
names, default all), PASSES_BATCHES (B, 5), PASSES_REPS (2), DATA (data/wikitext-2), CC,
TRAINER_CFLAGS, BLAS_CFLAGS, BLAS_LIBS, PASSES_OUT (bench/passes.md).
"""
import glob
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = "build/bench-passes"
LMC = "build/lmc"


def sh(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def env(name, default):
    v = os.environ.get(name)
    return v if v else default


def pass_names():
    r = sh([LMC, "passes"])
    names = []
    for line in r.stdout.splitlines()[1:]:
        if line.strip():
            names.append(line.split()[0])
    return names


def configs():
    cfg = [["-O0"], ["-O2"]]
    for p in pass_names():
        cfg.append(["-O2", "--disable-pass=" + p])
    for p in pass_names():
        cfg.append(["-O0", "--enable-pass=" + p])
    return cfg


def normalized_c(path):
    """The emitted C without the lines that quote the lmc command line."""
    keep = []
    with open(os.path.join(ROOT, path)) as f:
        for i, line in enumerate(f):
            if (i < 6 and line.startswith(" *   ")) or line.startswith("  .flags = "):
                continue
            keep.append(line)
    return hashlib.sha1("".join(keep).encode()).hexdigest()


def stats(model, ntoken, flags):
    r = sh([LMC, "compile", "graphs/%s.lua" % model, "-D", "ntoken=%d" % ntoken] + flags +
           ["--stats", "-o", os.path.join(OUT, "stats.c")])   # never a device: lmc replaces its -o
    s = {}
    for line in r.stdout.splitlines():
        m = re.match(r"train activations:\s*([0-9.]+) MB arena", line)
        if m:
            s["arena_mb"] = float(m.group(1))
        m = re.match(r"train kernels:\s*(\d+) \((\d+) calls", line)
        if m:
            s["kernels"], s["calls"] = int(m.group(1)), int(m.group(2))
    return s


def build(model, ntoken, flags, name):
    c = "%s/%s.c" % (OUT, name)
    exe = "%s/%s" % (OUT, name)
    r = sh([LMC, "compile", "graphs/%s.lua" % model, "-D", "ntoken=%d" % ntoken] + flags + ["-o", c])
    if r.returncode != 0:
        sys.exit("lmc failed: %s %s\n%s" % (model, " ".join(flags), r.stderr))
    digest = normalized_c(c)
    cc = env("CC", "clang")
    cflags = shlex.split(env("TRAINER_CFLAGS", "-O3"))
    blas_c = shlex.split(os.environ.get("BLAS_CFLAGS", ""))
    blas_l = shlex.split(env("BLAS_LIBS", "-lopenblas"))
    return c, exe, digest, [cc] + cflags + ["-std=c11", "-Wall", "-Wextra", "-Werror"] + blas_c + [
        "-Iruntime", "-o", exe, c, "build/obj/runtime/main.o", "build/liblmcrt.a"] + blas_l + ["-lm"]


def run(exe, data, batches):
    cmd = ["/usr/bin/time", "-f", "maxrss %M", exe, "train", "--data", data, "--epochs", "1", "--lr", "1",
           "--max-batches", str(batches + 2), "--log-interval", "1", "--threads", "1"]
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = sh(cmd, env=e)
    if r.returncode != 0:
        sys.exit("run failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    # the first line logs batches 0 and 1 (the warm-up) together
    ms = [float(m.group(1)) for m in re.finditer(r"ms/batch\s+([0-9.]+)", r.stdout)][1:]
    losses = [float(m.group(1)) for m in re.finditer(r"\| loss\s+([0-9.]+)", r.stdout)]
    rss = int(re.search(r"maxrss (\d+)", r.stderr).group(1))
    return {"ms": min(ms), "ms_median": statistics.median(ms), "ms_all": ms, "rss_mb": rss / 1024,
            "loss": losses}


def fold_check(data, ntoken):
    """The Transformer over 20 batches with and without fold-constants."""
    res = {}
    for name, flags in (("fold", []), ("nofold", ["--disable-pass=fold-constants"])):
        c, exe, _, cc = build("transformer", ntoken, flags, "transformer-check-" + name)
        r = sh(cc)
        if r.returncode != 0:
            sys.exit("clang failed:\n" + r.stderr)
        with open(os.path.join(ROOT, c)) as f:
            src = f.read()
        csv = "%s/transformer-check-%s.csv" % (OUT, name)
        cmd = [exe, "train", "--data", data, "--epochs", "1", "--max-batches", "21", "--log-interval", "1",
               "--threads", "1", "--seed", "1", "--log-csv", csv]
        r = sh(cmd, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        if r.returncode != 0:
            sys.exit("run failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
        with open(os.path.join(ROOT, csv)) as f:
            loss = [float(line.split(",")[3]) for line in f.readlines()[1:]]
        res[name] = {
            "loss": loss,
            "table": "static const real lmc_const0[" in src,
            "sincos": bool(re.search(r"\b(sinf?|cosf?)\(", src)),
        }
    a, b = res["fold"]["loss"], res["nofold"]["loss"]
    res["max_rel_diff"] = max(abs(x - y) / max(abs(x), abs(y)) for x, y in zip(a, b)) if a and b else None
    return res


def main():
    os.makedirs(os.path.join(ROOT, OUT), exist_ok=True)
    data_full = env("DATA", "data/wikitext-2")
    data = OUT + "/data"
    r = sh(["sh", "bench/mkdata.sh", data_full, data, "2000", "2000"])
    if r.returncode != 0:
        sys.exit(r.stderr)
    ntoken = int(sh([LMC, "vocab", data_full]).stdout.split()[0])
    batches = int(env("PASSES_BATCHES", "5"))
    reps = int(env("PASSES_REPS", "2"))
    models = [os.path.basename(p)[:-4] for p in sorted(glob.glob(os.path.join(ROOT, "graphs/*.lua")))]
    if os.environ.get("PASSES_MODELS"):
        models = [m for m in models if m in os.environ["PASSES_MODELS"].split(",")]
    cfgs = configs()
    started = time.time()
    # every trainer is built before any runs, so that builds do not disturb timings
    results, runs = {}, []
    for model in models:
        rows, seen = [], {}
        for flags in cfgs:
            name = "%s%s" % (model, "".join(re.sub(r"[^a-z0-9]", "_", f) for f in flags))
            c, exe, digest, cc = build(model, ntoken, flags, name)
            row = {"flags": " ".join(flags), "same_as": None, "ms_all": []}
            row.update(stats(model, ntoken, flags))
            if digest in seen:
                row["same_as"] = seen[digest]["flags"]
                row["run"] = seen[digest]
            else:
                # a trainer built from the same C by an earlier run is kept
                stamp = os.path.join(ROOT, exe + ".sha1")
                if not (os.path.exists(os.path.join(ROOT, exe)) and os.path.exists(stamp)
                        and open(stamp).read() == digest):
                    r = sh(cc)
                    if r.returncode != 0:
                        sys.exit("clang failed: %s\n%s" % (name, r.stderr[-2000:]))
                    with open(stamp, "w") as f:
                        f.write(digest)
                seen[digest] = row
                runs.append((model, exe, row))
            rows.append(row)
        results[model] = rows
    print("built %d trainers in %.0f s" % (len(runs), time.time() - started), flush=True)
    # rounds over every distinct trainer, so slow spells of the machine hit all alike
    for rep in range(reps):
        for model, exe, row in runs:
            r = run(exe, data, batches)
            row["ms_all"] += r["ms_all"]
            row["rss_mb"] = max(row.get("rss_mb", 0), r["rss_mb"])
            row["loss"] = r["loss"]
            print("round %d  %-12s %-40s %8.1f ms/batch (best so far %.1f)  %5.0f MB rss" % (
                rep + 1, model, row["flags"], min(r["ms_all"]), min(row["ms_all"]), r["rss_mb"]), flush=True)
    for rows in results.values():
        for row in rows:
            src = row.pop("run", row)
            for k in ("ms_all", "rss_mb", "loss"):
                row[k] = src[k]
            row["ms"] = min(row["ms_all"])
            row["ms_median"] = statistics.median(row["ms_all"])
    check = fold_check(data, ntoken) if "transformer" in models else None
    elapsed = time.time() - started
    with open(os.path.join(ROOT, OUT, "results.json"), "w") as f:
        json.dump({"results": results, "fold_check": check, "batches": batches, "reps": reps, "elapsed": elapsed,
                   "ntoken": ntoken, "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name()}, f, indent=1)
    write_md(results, check, batches, reps, elapsed, ntoken)


def geomean(xs):
    xs = [x for x in xs if x > 0]
    return (statistics.geometric_mean(xs) if xs else float("nan"))


def write_md(results, check, batches, reps, elapsed, ntoken, date=None, cpu=None):
    path = os.path.join(ROOT, env("PASSES_OUT", "bench/passes.md"))
    lines = []
    w = lines.append
    w("# What each optimization pass buys")
    w("")
    w("Written by `make bench-passes` (`bench/passes.py`) on %s in %.0f minutes, on this machine: %s." % (
        date or time.strftime("%Y-%m-%d"), elapsed / 60, cpu or cpu_name()))
    w("")
    w("Every model at its default sizes (ntoken %d, batch 20, bptt 35), compiled with `build/lmc compile "
      "graphs/MODEL.lua -D ntoken=%d FLAGS` and clang `%s`, trained with" % (ntoken, ntoken,
                                                                               env("TRAINER_CFLAGS", "-O3")))
    w("")
    w("```")
    w("MODEL train --data build/bench-passes/data --epochs 1 --lr 1 --max-batches %d --log-interval 1 --threads 1" %
      (batches + 2))
    w("```")
    w("")
    w(("(one BLAS thread), every distinct trainer once per round, %d rounds. **ms/batch** is the fastest of "
       "batches 2..%d over the rounds (0 and 1 are the warm-up; medians are in build/bench-passes/results.json); "
       "**peak RSS** the process's, by `/usr/bin/time` (parameters and gradients are 107 MB of it for the "
       "13.8M-parameter models); **arena** the training program's work arena from `lmc compile --stats`. "
       "**vs -O2**: ms/batch over the -O2 build's (above 1: slower). `-O2 --disable-pass=P` shows what P buys on "
       "top of the others, `-O0 --enable-pass=P` what it buys alone. A row marked `=` emitted the same C as the "
       "one it names and shares its run. The machine was shared with other work: differences under about 5%% are "
       "noise.") % (reps, batches + 1))
    w("")
    w("## Summary")
    w("")
    w("| model | -O0 ms/batch | -O2 ms/batch | speedup | -O0 peak RSS MB | -O2 peak RSS MB | -O0 arena MB | "
      "-O2 arena MB | kernel calls per batch -O0 / -O2 |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, rows in results.items():
        o0 = next(r for r in rows if r["flags"] == "-O0")
        o2 = next(r for r in rows if r["flags"] == "-O2")
        w("| %s | %.0f | %.0f | %.2fx | %.0f | %.0f | %.0f | %.0f | %d / %d |" % (
            model, o0["ms"], o2["ms"], o0["ms"] / o2["ms"], o0["rss_mb"], o2["rss_mb"], o0.get("arena_mb", 0),
            o2.get("arena_mb", 0), o0.get("calls", 0), o2.get("calls", 0)))
    w("")
    w("## Each pass, over the five models")
    w("")
    w("Geometric means over the models of the ratios in the tables below: **without it** is "
      "`-O2 --disable-pass=P` over `-O2` (above 1: the pass makes -O2 faster or smaller), **alone** is `-O0` "
      "over `-O0 --enable-pass=P` (above 1: the pass alone makes -O0 faster or smaller).")
    w("")
    w("| pass | ms/batch without it | ms/batch alone | peak RSS without it | peak RSS alone | arena without it | "
      "arena alone | kernel calls without it |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    names = [r["flags"].split("=", 1)[1] for r in next(iter(results.values())) if "--disable-pass=" in r["flags"]]
    for p in names:
        cols = {k: [] for k in ("ms_w", "ms_a", "rss_w", "rss_a", "ar_w", "ar_a", "calls_w")}
        for rows in results.values():
            by = {r["flags"]: r for r in rows}
            o0, o2 = by["-O0"], by["-O2"]
            d, e = by["-O2 --disable-pass=" + p], by["-O0 --enable-pass=" + p]
            cols["ms_w"].append(d["ms"] / o2["ms"])
            cols["ms_a"].append(o0["ms"] / e["ms"])
            cols["rss_w"].append(d["rss_mb"] / o2["rss_mb"])
            cols["rss_a"].append(o0["rss_mb"] / e["rss_mb"])
            cols["ar_w"].append(d.get("arena_mb", 1) / max(o2.get("arena_mb", 1), 1e-9))
            cols["ar_a"].append(o0.get("arena_mb", 1) / max(e.get("arena_mb", 1), 1e-9))
            cols["calls_w"].append(d.get("calls", 1) / max(o2.get("calls", 1), 1))
        w("| `%s` | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
            p, geomean(cols["ms_w"]), geomean(cols["ms_a"]), geomean(cols["rss_w"]), geomean(cols["rss_a"]),
            geomean(cols["ar_w"]), geomean(cols["ar_a"]), geomean(cols["calls_w"])))
    w("")
    w("Reading it: at these sizes a training step is three (700 x 200) x (200 x 33278) GEMMs for the decoder "
      "and a few passes over the 93 MB logits; everything else is small. `fuse-nll` removes one of the two "
      "`expf` passes over the logits (23 million calls) and the memset and extra reads of the separate "
      "gradient ops, and `plan-memory` lets the logits' gradient take the logits' bytes: together most of what "
      "-O2 buys in time and memory. `fuse-matmul-bias` saves a read and a write of the logits. "
      "`fuse-elementwise` halves the kernel calls (an LSTM step is one kernel forward and one backward), but "
      "a recurrent cell is a loop over 4000 elements next to them, so its time is within the noise here; it "
      "matters more for small vocabularies. `fold-constants` has work only in the Transformer (its positional "
      "encoding), `cse` and `dce` remove duplicates and dead stacks, and `fuse-add-dropout` saves one pass "
      "over a (T, B, emsize) tensor per dropout: all within the noise of this machine, as expected.")
    for model, rows in results.items():
        o2 = next(r for r in rows if r["flags"] == "-O2")
        w("")
        w("## %s" % model)
        w("")
        w("| flags | ms/batch | vs -O2 | peak RSS MB | arena MB | kernels | calls per batch |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            same = " (= %s)" % r["same_as"] if r["same_as"] else ""
            w("| `%s`%s | %.0f | %.2f | %.0f | %.1f | %d | %d |" % (
                r["flags"], same, r["ms"], r["ms"] / o2["ms"], r["rss_mb"], r.get("arena_mb", 0),
                r.get("kernels", 0), r.get("calls", 0)))
    if check:
        w("")
        w("## fold-constants on the Transformer")
        w("")
        a, b = check["fold"], check["nofold"]
        w("`graphs/transformer.lua` at -O2 emits the positional encoding as a folded table: %s, calls sin or "
          "cos: %s. With `--disable-pass=fold-constants`: table %s, sin/cos %s. Training losses of batches "
          "1..20 (`--max-batches 21 --log-interval 1 --seed 1 --log-csv`, 9 digits): largest relative "
          "difference %s (required: below 1e-5)." % (
              "yes" if a["table"] else "no", "yes" if a["sincos"] else "no", "yes" if b["table"] else "no",
              "yes" if b["sincos"] else "no",
              "%.3g" % check["max_rel_diff"] if check["max_rel_diff"] is not None else "n/a"))
        w("")
        w("| batch | loss, folded | loss, computed at run time |")
        w("| ---: | ---: | ---: |")
        for i, (x, y) in enumerate(zip(a["loss"], b["loss"])):
            w("| %d | %.9g | %.9g |" % (i + 1, x, y))
    w("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("wrote", os.path.relpath(path, ROOT))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "%s, %d cores" % (line.split(":", 1)[1].strip(), os.cpu_count())
    except OSError:
        pass
    return "unknown CPU"


def report():
    """Writes bench/passes.md again from build/bench-passes/results.json."""
    with open(os.path.join(ROOT, OUT, "results.json")) as f:
        j = json.load(f)
    write_md(j["results"], j["fold_check"], j["batches"], j["reps"], j.get("elapsed", 0), j.get("ntoken", 0),
             j.get("date"), j.get("cpu"))


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report()
    else:
        main()
