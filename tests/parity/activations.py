"""gelu (tanh form), silu and erf against torch, for tests/parity/parity.py.

tests/parity/activations.lua is compiled in f64 and f32 and run once
through tests/emit/driver.c, which prints the parameters it filled, the
state outputs (each op's values over [-3, 3]) and the gradients; torch
recomputes both from the printed parameters with
torch.nn.GELU(approximate='tanh'), torch.nn.SiLU and torch.erf, in the same
precision.  Errors are norm-wise relative, per tensor, against TOL."""
import os
import subprocess

import torch

GRAPH = "tests/parity/activations.lua"
TOL = {"f64": 1e-13, "f32": 1e-6}
TORCH = {"gelu": torch.nn.GELU(approximate="tanh"), "silu": torch.nn.SiLU(), "erf": torch.erf}


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
        for name, f in TORCH.items():
            x = torch.tensor(got["param", f"x_{name}"], dtype=tdt, requires_grad=True)
            y = f(6 * x)
            (y * r).sum().backward()
            values[name], want_values[name] = printed("newstate", name), y.detach()
            grads[name], want_grads[name] = printed("grad", f"x_{name}"), x.grad
        rep.tensors(f"activations {dtype}: gelu, silu, erf over [-3, 3] against torch", values, want_values,
                    TOL[dtype])
        rep.tensors(f"activations {dtype}: their gradients against torch autograd", grads, want_grads,
                    TOL[dtype])


if __name__ == "__main__":
    raise SystemExit("run by tests/parity/parity.py")
