"""The elementwise ops no model uses against torch, for tests/parity/parity.py:
gelu (exact), gelu_tanh, silu, erf, pow, maximum (ties included), where
and mean.

tests/parity/activations.lua is compiled in f64 and f32 and run once
through tests/emit/driver.c, which prints the parameters it filled, the
state outputs (each op's values) and the gradients; torch recomputes both
from the printed parameters with torch.nn.GELU(), torch.nn.GELU(approximate='tanh'),
torch.nn.SiLU, torch.erf, torch.pow, torch.maximum, torch.where and
torch.mean, in the same precision.  Errors are norm-wise relative, per tensor, against TOL."""
import os
import subprocess

import torch

GRAPH = "tests/parity/activations.lua"
TOL = {"f64": 1e-13, "f32": 1e-6}
UNARY = {"gelu": torch.nn.GELU(), "gelu_tanh": torch.nn.GELU(approximate="tanh"), "silu": torch.nn.SiLU(),
         "erf": torch.erf}
BINARY = {  # as tests/parity/activations.lua builds them
    "pow": lambda x, y: torch.pow(x + 2, 3 * y),
    "maximum": lambda x, y: torch.maximum(6 * x, 6 * y),
    "maximum_tie": lambda x, y: torch.maximum(6 * x, 6 * x) + torch.maximum(y, torch.tensor(0.25, dtype=y.dtype)),
    "where": lambda x, y: torch.where(x > y, 6 * x, 6 * y),
    "mean": lambda x, y: (6 * x * y).reshape(8, 8).mean(1),
}


def run_driver(lmc, out, dtype, san):
    src, exe = f"{out}/activations_{dtype}.c", f"{out}/activations_{dtype}"
    subprocess.run([lmc, "compile", GRAPH, f"--dtype={dtype}", "-o", src], check=True)
    # f64: the optimizer alone, built for double; f32: the runtime (its bf16 products too), as check_emit links
    rt = ["-DLMC_REAL=double", "runtime/optimizer.c"] if dtype == "f64" else [os.path.join(os.path.dirname(out), "liblmcrt.a")]
    subprocess.run(["clang", "-std=c11", "-O2", *san, "-Wall", "-Wextra", "-Werror", "-Iruntime", "-o", exe, src,
                    "tests/emit/driver.c", *rt, "-lopenblas", "-lm"], check=True)
    text = subprocess.run([exe, "train", "1", "0"], check=True, stdout=subprocess.PIPE, text=True).stdout
    arrays = {}
    for line in text.splitlines():
        kind, name, _, *values = line.split()
        arrays[kind, name] = [float(v) for v in values]
    return arrays


def check(rep, lmc, out, san):
    for dtype, tdt in (("f64", torch.float64), ("f32", torch.float32)):
        try:
            got = run_driver(lmc, out, dtype, san)
        except (subprocess.CalledProcessError, OSError) as e:
            rep.check(f"activations {dtype}", False, str(e))
            continue
        r = torch.tensor(got["param", "r"], dtype=tdt)

        def printed(kind, name):
            return torch.tensor(got[kind, name], dtype=torch.float64)
        values, want_values, grads, want_grads = {}, {}, {}, {}
        for name, f in {**UNARY, **BINARY}.items():
            leaves = ["x", "y"] if name in BINARY else ["x"]
            xs = [torch.tensor(got["param", f"{v}_{name}"], dtype=tdt, requires_grad=True) for v in leaves]
            y = f(*xs) if name in BINARY else f(6 * xs[0])
            (y * r[:y.numel()]).sum().backward()
            values[name], want_values[name] = printed("newstate", name), y.detach()
            for v, x in zip(leaves, xs):
                grads[f"{v}_{name}"], want_grads[f"{v}_{name}"] = printed("grad", f"{v}_{name}"), x.grad
        rep.tensors(f"activations {dtype}: {', '.join(values)} against torch", values, want_values,
                    TOL[dtype])
        rep.tensors(f"activations {dtype}: their gradients against torch autograd", grads, want_grads,
                    TOL[dtype])


if __name__ == "__main__":
    raise SystemExit("run by tests/parity/parity.py")
