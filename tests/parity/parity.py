#!/usr/bin/python3
"""Numerical parity of lmc's five models with torch.nn, and checkpoints
moving both ways.  Run by tests/suite_parity.sh from the repository root;
ends with "N passed, N failed".

For each model, at small shapes chosen to catch layout mistakes (emsize !=
nhid where allowed, 3 layers, 4 heads, a vocabulary of 251, odd batches and
sequence lengths, a shorter last window):

  f64  the graph compiled with --dtype=f64 and linked with driver.c, against
       the reference models of model.py in float64, from the same random
       weights (written as a safetensors state_dict, read by the runtime's
       ckpt_load):
         eval       main.py's evaluate() loss on a token stream (rel. 1e-5)
         gen        the next-token log-probabilities of generate, fed as the
                    runtime feeds them; the Transformer's window slides past
                    bptt (norm-wise 1e-5)
         grad       one training step, dropout off: every parameter's
                    gradient and its update by clipping and SGD (norm-wise
                    ||a - b|| / ||b||, 1e-4 per tensor)
         sgd        20 steps of clipped SGD over the windows, the hidden state
                    carried and reset each epoch: every step's loss (rel. 1e-4)
                    and the parameter updates (norm-wise 1e-4)
         adamw      5 steps (gpt: 20) of clipped AdamW against torch.optim.AdamW
                    (betas 0.9/0.999, eps 1e-8, weight decay 0.01): every
                    step's loss and the parameter updates (1e-4)
  f32  the real trainer (emitted f32 C + the runtime) on tests/data/tiny:
         init       its initial parameters follow the example's init
                    (bounds of each tensor; the reference's are checked
                    against the same table)
         lmc->torch its checkpoint loads into the torch model (and through
                    tools/safetensors_to_torch.py, strict); torch's test loss
                    equals `eval --json`'s (rel. 1e-6: float32)
         torch->lmc a torch state_dict and a pickled whole model, converted by
                    tools/torch_to_safetensors.py, evaluate in the trainer to
                    torch's loss (rel. 1e-6)
         generate   `generate` writes the asked number of words

AWD-LSTM (graphs/awd_lstm.lua against awd_model.py, tied, 3 layers) runs
the f64 checks with every dropout slot off.  Its graph declares "loss", the
raw NLL, and "objective", the NLL plus AR and TAR (alpha 2, beta 1, their
defaults): the eval loss and the 20 SGD steps' losses are the raw NLL's,
the step-1 gradients and the parameter updates are the objective's
(torch autograd of NLL + AR + TAR), and the 20 steps' objectives are
checked too (rel. 1e-4).  And on their own: the same graph compiled with
alpha = beta = 0 runs the same first step; it logs the same loss
(exactly), and the objective less the loss and the difference of the two
builds' gradients are AR + TAR and its gradients, against torch autograd
of AR + TAR alone (rel. 1e-9 and norm-wise 1e-8: differences of f64
values).
Tied, it has no f32 checks, as the other tied cases.

and the elementwise ops torch has but no model uses (gelu, gelu_tanh, silu, erf, pow,
maximum, where, mean:
activations.py), values and gradients; and tools/torch_to_safetensors.py
--trainer on a model of a kind of its own (anykind.py).

Every comparison prints its largest error next to its tolerance, and the
error of every tensor.  PARITY_ONLY=lstm,gru_tied runs only those cases.
"""
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.dont_write_bytecode = True        # no __pycache__ in tools/ or tests/parity/
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import activations  # noqa: E402
import anykind  # noqa: E402
import awd_model  # noqa: E402
import gpt  # noqa: E402
import model as ref  # noqa: E402
import safetensors_to_torch  # noqa: E402
import torch_to_safetensors  # noqa: E402
from torch_to_safetensors import load_file, save_file  # noqa: E402

os.chdir(ROOT)
LMC = os.environ.get("LMC", "build/lmc")
B = os.environ.get("B", "build")
SAN = os.environ.get("SAN", "").split()   # extra clang flags: the sanitizers of `make sanitize`
OUT = os.path.join(B, "parity")
DATA = "tests/data/tiny"
PY = sys.executable

torch.set_num_threads(1)

TOL_EVAL, TOL_GEN, TOL_TENSOR, TOL_LOSS = 1e-5, 1e-5, 1e-4, 1e-4
TOL_F32 = 1e-6     # float32 trainer vs float64 torch: the errors seen are below 1e-7


class Case:
    tools = True          # tools/torch_to_safetensors.py and safetensors_to_torch.py know the kind
    objective = False     # the graph declares an "objective" other than its "loss"
    adamw_steps = 5

    def __init__(self, name, graph, kind, emsize, nhid, nlayers=3, nhead=None, tied=False):
        self.name, self.graph, self.kind = name, graph, kind
        self.emsize, self.nhid, self.nlayers, self.nhead, self.tied = emsize, nhid, nlayers, nhead, tied
        self.bptt, self.batch, self.eval_batch = 7, 5, 3

    def defines(self, ntoken, eval_batch):
        d = dict(ntoken=ntoken, emsize=self.emsize, nhid=self.nhid, nlayers=self.nlayers,
                 bptt=self.bptt, batch_size=self.batch, eval_batch_size=eval_batch,
                 tied="true" if self.tied else "false")
        if self.nhead:
            d["nhead"] = self.nhead
        return [a for k, v in d.items() for a in ("-D", f"{k}={v}")]

    def torch_model(self, ntoken, dropout=0.0, inner=0.0):
        if self.kind == "Transformer":
            return ref.TransformerModel(ntoken, self.emsize, self.nhead, self.nhid, self.nlayers, dropout,
                                        inner_dropout=inner, tie_weights=self.tied)
        return ref.RNNModel(self.kind, ntoken, self.emsize, self.nhid, self.nlayers, dropout, self.tied)


class GPTCase(Case):
    """graphs/gpt.lua against tests/parity/gpt.py: nanoGPT's names and
    hyper-parameters (n_layer, n_head, n_embd; block_size is bptt); 20
    AdamW steps, the optimizer GPTs train with.  The tools do not know the
    kind, so its checkpoints move through safetensors directly."""
    tools = False
    adamw_steps = 20

    def __init__(self, name, n_layer, n_head, n_embd, bias=True):
        super().__init__(name, "graphs/gpt.lua", "GPT", n_embd, 4 * n_embd, n_layer, n_head, tied=True)
        self.bias = bias

    def defines(self, ntoken, eval_batch):
        d = dict(ntoken=ntoken, n_layer=self.nlayers, n_head=self.nhead, n_embd=self.emsize, bptt=self.bptt,
                 batch_size=self.batch, eval_batch_size=eval_batch, bias="true" if self.bias else "false")
        return [a for k, v in d.items() for a in ("-D", f"{k}={v}")]

    def torch_model(self, ntoken, dropout=0.0, inner=0.0):
        return gpt.GPT(ntoken, self.bptt, self.nlayers, self.nhead, self.emsize, dropout, self.bias)


class AWDCase(Case):
    """graphs/awd_lstm.lua against tests/parity/awd_model.py, tied; alpha and
    beta as given (their defaults 2 and 1; awd_regularisers builds it with
    0 and 0 too).  Tied, so it has no f32 checks."""
    tools = False
    objective = True

    def __init__(self, name, emsize, nhid, nlayers=3, alpha=2.0, beta=1.0):
        super().__init__(name, "graphs/awd_lstm.lua", "AWD_LSTM", emsize, nhid, nlayers, tied=True)
        self.alpha, self.beta = alpha, beta

    def defines(self, ntoken, eval_batch):
        return super().defines(ntoken, eval_batch) + ["-D", f"alpha={self.alpha!r}", "-D", f"beta={self.beta!r}"]

    def torch_model(self, ntoken, dropout=0.0, inner=0.0):
        return awd_model.AWDLSTM(ntoken, self.emsize, self.nhid, self.nlayers, self.tied, dropout,
                                 dropout, dropout, dropout, dropout, self.alpha, self.beta)


CASES = [
    Case("rnn_tanh", "graphs/rnn_tanh.lua", "RNN_TANH", 12, 10),
    Case("rnn_relu", "graphs/rnn_relu.lua", "RNN_RELU", 12, 10),
    Case("lstm", "graphs/lstm.lua", "LSTM", 12, 10),
    Case("gru", "graphs/gru.lua", "GRU", 12, 10),
    Case("transformer", "graphs/transformer.lua", "Transformer", 16, 24, nhead=4),
    Case("gru_tied", "graphs/gru.lua", "GRU", 10, 10, nlayers=2, tied=True),
    Case("transformer_tied", "graphs/transformer.lua", "Transformer", 12, 20, nlayers=2, nhead=2, tied=True),
    GPTCase("gpt", n_layer=2, n_head=4, n_embd=16),
    GPTCase("gpt_nobias", n_layer=3, n_head=2, n_embd=12, bias=False),
    AWDCase("awd_lstm", 12, 10),
]
NTOKEN = 251
if os.environ.get("PARITY_ONLY"):      # e.g. PARITY_ONLY=lstm,gru_tied: only those cases
    CASES = [c for c in CASES if c.name in os.environ["PARITY_ONLY"].split(",")]


# ------------------------------------------------------------ reporting

class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, what, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def tensors(self, what, got, want, tol):
        """Norm-wise relative errors of every tensor in want; one check."""
        worst, bad, lines = 0.0, [], []
        for name, b in want.items():
            a = got.get(name)
            if a is None or tuple(a.shape) != tuple(b.shape):
                bad.append(f"{name}: missing or shape {None if a is None else tuple(a.shape)} "
                           f"!= {tuple(b.shape)}")
                continue
            err = rel(a, b)
            worst = max(worst, err)
            lines.append(f"       {name:48s} {err:9.2e}  (tolerance {tol:.0e})")
            if not err <= tol:
                bad.append(f"{name}: {err:.3g}")
        ok = not bad
        self.check(what, ok, f"max norm-wise rel. error {worst:.2e} (tolerance {tol:.0e})"
                   + ("; " + ", ".join(bad) if bad else ""))
        if len(lines) > 1:
            print("\n".join(lines))
        return ok


def rel(a, b):
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def rel_scalar(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


# --------------------------------------------------------------- builds

def build_f64(c):
    src, exe = f"{OUT}/{c.name}_f64.c", f"{OUT}/{c.name}_f64"
    run([LMC, "compile", c.graph, "--dtype=f64", *c.defines(NTOKEN, c.eval_batch), "-o", src])
    run(["clang", "-std=c11", "-O0", *SAN, "-Wall", "-Wextra", "-Werror", "-D_POSIX_C_SOURCE=200809L",
         "-DLMC_REAL=double", "-Iruntime", "-o", exe, src, "tests/parity/driver.c",
         "runtime/checkpoint.c", "runtime/safetensors.c", "runtime/json.c", "runtime/util.c",
         "runtime/outfile.c", "runtime/corpus.c", "runtime/corpus_cache.c", "runtime/optimizer.c", "-lopenblas", "-lm"])
    return exe


def build_f32(c, ntoken):
    src, exe = f"{OUT}/{c.name}.c", f"{OUT}/{c.name}"
    run([LMC, "compile", c.graph, *c.defines(ntoken, 10), "-o", src])
    run(["clang", "-std=c11", "-O0", *SAN, "-Wall", "-Wextra", "-Werror", "-Iruntime", "-o", exe, src,
         f"{B}/obj/runtime/main.o", f"{B}/liblmcrt.a", "-lopenblas", "-lm"])
    return exe


# ----------------------------------------------------- main.py, in torch

def batchify(data, bsz):
    n = data.size(0) // bsz
    return data[:n * bsz].view(bsz, -1).t().contiguous()


def get_batch(src, i, bptt):
    n = min(bptt, len(src) - 1 - i)
    return src[i:i + n], src[i + 1:i + 1 + n].reshape(-1)


def detach(h):
    return h.detach() if torch.is_tensor(h) else type(h)(detach(v) for v in h)


def stateless(model):
    """The Transformers: no hidden state, each window attends over itself."""
    return isinstance(model, (ref.TransformerModel, gpt.GPT))


def forward(model, x, hidden):
    if stateless(model):
        out = model(x)
        return out.reshape(-1, out.size(-1)), None
    return model(x, hidden)


def evaluate(model, stream, bsz, bptt):
    model.eval()
    src = batchify(stream, bsz)
    hidden = None if stateless(model) else model.init_hidden(bsz)
    total = 0.0
    with torch.no_grad():
        for i in range(0, src.size(0) - 1, bptt):
            x, y = get_batch(src, i, bptt)
            out, hidden = forward(model, x, hidden)
            total += len(x) * F.nll_loss(out, y).item()
    return total / (len(src) - 1)


def generate_logp(model, hist, bptt):
    """Next-token log-probabilities after each prefix, as lmc's generate
    feeds the model: RNNs one token at a time, the Transformer the window of
    the last bptt tokens."""
    model.eval()
    rows = []
    with torch.no_grad():
        hidden = None if stateless(model) else model.init_hidden(1)
        for i in range(len(hist)):
            if hidden is None:
                x = hist[max(0, i + 1 - bptt):i + 1].view(-1, 1)
                rows.append(model(x)[-1, 0])
            else:
                out, hidden = model(hist[i:i + 1].view(1, 1), hidden)
                rows.append(out[-1])
    return torch.stack(rows)


def named(model):
    """Every state_dict name of a parameter (a tied weight under both)."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.nn.Parameter)}


def train_steps(model, stream, bsz, bptt, steps, optimizer, lr, clip, wd):
    model.train()
    src = batchify(stream, bsz)
    starts = list(range(0, src.size(0) - 1, bptt))
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd) \
        if optimizer == "adamw" else None
    losses, objectives, norms, grads, step1 = [], [], [], None, None
    hidden = None
    for s in range(steps):
        w = s % len(starts)
        if w == 0 and not stateless(model):
            hidden = model.init_hidden(bsz)
        x, y = get_batch(src, starts[w], bptt)
        model.zero_grad()
        if hidden is not None:
            hidden = detach(hidden)
        out, hidden = forward(model, x, hidden)
        loss = F.nll_loss(out, y)
        objective = loss + getattr(model, "reg", 0.0)   # AWD-LSTM: plus AR and TAR
        objective.backward()
        if s == 0:
            grads = {k: p.grad.detach().clone() for k, p in named(model).items()}
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        if opt:
            opt.step()
        else:
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=-lr)
        if s == 0:
            step1 = {k: p.detach().clone() for k, p in named(model).items()}
        losses.append(loss.item())
        objectives.append(objective.item())
    final = {k: p.detach().clone() for k, p in named(model).items()}
    return losses, objectives, norms, grads, step1, final


def randomize(model, gen, scale=0.3):
    """Random weights everywhere (biases and norms included), so that no
    layout mistake hides behind a zero or a one."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1
            norm = ".norm" in name or ".ln_" in name
            p.copy_(1 + scale * r if norm and name.endswith("weight") else scale * r)


# ---------------------------------------------------------------- f64

def awd_regularisers(rep, c, exe):
    """AR + TAR of graphs/awd_lstm.lua at the weights f64_case wrote, on its
    first training window, against torch's regularisers alone: the value is
    lmc's objective less its loss; the gradients are the objective's less
    those of the graph built with alpha = beta = 0 (the NLL's), whose
    logged loss must be the same raw NLL."""
    torch.set_default_dtype(torch.float64)
    bare = AWDCase(c.name + "_noreg", c.emsize, c.nhid, c.nlayers, alpha=0.0, beta=0.0)
    weights, job = f"{OUT}/{c.name}_weights.safetensors", f"{OUT}/{c.name}_sgd.job"
    got = {}
    for name, e in ((c.name, exe), (bare.name, build_f64(bare))):
        out = f"{OUT}/{name}_reg_out.safetensors"
        res = json.loads(run([e, weights, job, out]))
        got[name] = (res["losses"][0], res["objectives"][0], load_file(out)[0])
    model = c.torch_model(NTOKEN)
    model.load_state_dict(load_file(weights)[0])
    with open(job) as f:
        tr = torch.tensor([int(v) for line in f if line.startswith("train ") for v in line.split()[2:]])
    x, _ = get_batch(batchify(tr, c.batch), 0, c.bptt)
    model.train()
    model.zero_grad()
    model(x, model.init_hidden(c.batch))
    model.reg.backward()
    # decoder.bias: AR and TAR do not depend on it (no gradient in torch)
    want = {k: p.grad.detach().clone() for k, p in named(model).items() if p.grad is not None}
    (loss, objective, grads), (loss0, _, grads0) = got[c.name], got[bare.name]
    e = rel_scalar(objective - loss, float(model.reg))
    rep.check(f"{c.name} f64 AR + TAR value (objective less loss, first window)", e <= 1e-9,
              f"lmc {objective - loss:.15f} torch {float(model.reg):.15f} rel. error {e:.2e} (tolerance 1e-09)")
    rep.check(f"{c.name} f64 logged loss without the regularisers (alpha, beta 2, 1 and 0, 0)", loss == loss0,
              f"{loss:.17g} and {loss0:.17g}")
    rep.tensors(f"{c.name} f64 AR + TAR gradients (objective's less NLL's)",
                {k[5:]: v - grads0[k] for k, v in grads.items() if k.startswith("grad.")}, want, 1e-8)
    rest = [k for k in named(model) if k not in want]
    worst = max((float((grads["grad." + k] - grads0["grad." + k]).abs().max()) for k in rest), default=0.0)
    rep.check(f"{c.name} f64 AR + TAR gradients of {', '.join(rest)}", worst <= 1e-12,
              f"max |difference| {worst:.2e} (tolerance 1e-12; torch: none)")
    torch.set_default_dtype(torch.float32)


def f64_case(rep, c, exe):
    torch.set_default_dtype(torch.float64)
    gen = torch.Generator().manual_seed(1234 + sum(map(ord, c.name)))
    model = c.torch_model(NTOKEN)
    randomize(model, gen)
    weights = f"{OUT}/{c.name}_weights.safetensors"
    save_file(weights, model.state_dict(), {"kind": c.kind}, dtype=torch.float64)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def tokens(n):
        return torch.randint(0, NTOKEN, (n,), generator=gen)

    # eval: 3 columns of 26 rows: windows 7, 7, 7, 4; train: 5 columns of 19
    # rows: windows 7, 7, 4, so 20 steps cover 6 epochs and a bit
    ev, tr, hist = tokens(c.eval_batch * 26 + 2), tokens(c.batch * 19 + 3), tokens(2 * c.bptt + 3)

    def job(path, optimizer, steps, lr, clip, with_eval):
        with open(path, "w") as f:
            if with_eval:
                f.write(f"eval {len(ev)} {' '.join(map(str, ev.tolist()))}\n")
                f.write(f"gen {len(hist)} {' '.join(map(str, hist.tolist()))}\n")
            f.write(f"train {len(tr)} {' '.join(map(str, tr.tolist()))}\n")
            f.write(f"steps {steps}\noptimizer {optimizer}\nlr {lr!r}\nclip {clip!r}\nwd 0.01\n")

    def lmc_run(optimizer, steps, lr, clip, with_eval):
        jp, op = f"{OUT}/{c.name}_{optimizer}.job", f"{OUT}/{c.name}_{optimizer}_out.safetensors"
        job(jp, optimizer, steps, lr, clip, with_eval)
        res = json.loads(run([exe, weights, jp, op]))
        return res, load_file(op)[0]

    def prefixed(tensors, prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    # evaluation, generation, one SGD step, 20 SGD steps
    res, out = lmc_run("sgd", 20, 0.5, 0.25, True)
    want = evaluate(model, ev, c.eval_batch, c.bptt)
    e = rel_scalar(res["eval_loss"], want)
    rep.check(f"{c.name} f64 eval loss", e <= TOL_EVAL,
              f"lmc {res['eval_loss']:.12f} torch {want:.12f} rel. error {e:.2e} (tolerance {TOL_EVAL:.0e})")
    rep.tensors(f"{c.name} f64 generate log-probabilities ({len(hist)} tokens, bptt {c.bptt})",
                {"logp": out["gen_logp"]}, {"logp": generate_logp(model, hist, c.bptt)}, TOL_GEN)

    losses, objectives, norms, grads, step1, final = train_steps(model, tr, c.batch, c.bptt, 20, "sgd",
                                                                 0.5, 0.25, 0.01)
    rep.tensors(f"{c.name} f64 step-1 gradients" + (" (of the objective)" if c.objective else ""),
                prefixed(out, "grad."), grads, TOL_TENSOR)
    rep.tensors(f"{c.name} f64 step-1 parameter updates (clip + SGD; the parameters minus the initial ones)",
                {k: v - init[k] for k, v in prefixed(out, "step1.").items() if k in init},
                {k: v - init[k] for k, v in step1.items()}, TOL_TENSOR)
    errs = [rel_scalar(a, b) for a, b in zip(res["losses"], losses)]
    clipped = sum(n > 0.25 for n in norms)
    rep.check(f"{c.name} f64 20 SGD steps ({res['windows']} windows an epoch, {clipped} steps clipped)",
              len(errs) == 20 and max(errs) <= TOL_LOSS,
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, max rel. error {max(errs):.2e} "
              f"(tolerance {TOL_LOSS:.0e}); grad norms {min(norms):.3g} to {max(norms):.3g}")
    if c.objective:
        errs = [rel_scalar(a, b) for a, b in zip(res["objectives"], objectives)]
        rep.check(f"{c.name} f64 20 SGD steps: objectives (the loss plus its regularisers)",
                  len(errs) == 20 and max(errs) <= TOL_LOSS and min(o - l for o, l in zip(objectives, losses)) > 0,
                  f"objective {objectives[0]:.4f} -> {objectives[-1]:.4f} (loss {losses[0]:.4f} -> "
                  f"{losses[-1]:.4f}), max rel. error {max(errs):.2e} (tolerance {TOL_LOSS:.0e})")
    rep.tensors(f"{c.name} f64 20 SGD steps: parameter updates",
                {k: v - init[k] for k, v in prefixed(out, "final.").items() if k in init},
                {k: v - init[k] for k, v in final.items()}, TOL_TENSOR)

    # AdamW steps from the same weights
    model.load_state_dict(init)
    na = c.adamw_steps
    res, out = lmc_run("adamw", na, 0.01, 0.2, False)
    losses, _, norms, _, _, final = train_steps(model, tr, c.batch, c.bptt, na, "adamw", 0.01, 0.2, 0.01)
    errs = [rel_scalar(a, b) for a, b in zip(res["losses"], losses)]
    rep.check(f"{c.name} f64 {na} AdamW steps ({sum(n > 0.2 for n in norms)} clipped): losses",
              len(errs) == na and max(errs) <= TOL_LOSS,
              f"max rel. error {max(errs):.2e} (tolerance {TOL_LOSS:.0e}); grad norms "
              + " ".join(f"{n:.3g}" for n in res["norms"]))
    got = prefixed(out, "final.")
    rep.tensors(f"{c.name} f64 {na} AdamW steps: parameter updates",
                {k: v - init[k] for k, v in got.items() if k in init},
                {k: v - init[k] for k, v in final.items()}, TOL_TENSOR)
    torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------- f32

def xavier(fan_out, fan_in):
    return math.sqrt(6 / (fan_in + fan_out))


def expected_init(c, name):
    """(kind, bound) of a parameter's initialisation in the example
    (nanoGPT's for gpt: ("normal", std))."""
    d, h = c.emsize, c.nhid
    if c.kind == "GPT":
        if ".ln_" in name:
            return "const", 1.0 if name.endswith("weight") else 0.0
        if name.endswith("bias"):
            return "const", 0.0
        return "normal", 0.02 / math.sqrt(2 * c.nlayers) if name.endswith("c_proj.weight") else 0.02
    if name in ("encoder.weight", "input_emb.weight", "decoder.weight"):
        return "uniform", 0.1
    if name == "decoder.bias":
        return "const", 0.0
    if name.startswith("rnn."):
        return "uniform", 1 / math.sqrt(h)
    last = name.split(".")[-2:]
    table = {
        ("self_attn", "in_proj_weight"): ("uniform", xavier(3 * d, d)),
        ("self_attn", "in_proj_bias"): ("const", 0.0),
        ("out_proj", "weight"): ("uniform", xavier(d, d)),
        ("out_proj", "bias"): ("const", 0.0),
        ("linear1", "weight"): ("uniform", xavier(h, d)),
        ("linear1", "bias"): ("uniform", 1 / math.sqrt(d)),
        ("linear2", "weight"): ("uniform", xavier(d, h)),
        ("linear2", "bias"): ("uniform", 1 / math.sqrt(h)),
    }
    if tuple(last) in table:
        return table[tuple(last)]
    if last[0].startswith("norm"):
        return "const", 1.0 if last[1] == "weight" else 0.0
    raise KeyError(name)


def init_errors(c, tensors):
    """What in tensors does not follow the example's initialisation."""
    bad = []
    for name, t in tensors.items():
        kind, a = expected_init(c, name)
        t = t.to(torch.float64)
        if kind == "const":
            if float((t - a).abs().max()) > 1e-6:
                bad.append(f"{name}: expected all {a}")
        elif kind == "normal":   # N(0, a^2): mean within 5 standard errors, spread within 20 %
            mean, std = float(t.mean()), float(t.std())
            if abs(mean) > 5 * a / math.sqrt(t.numel()) or (t.numel() >= 200 and not 0.8 < std / a < 1.2) \
                    or float(t.abs().max()) > 7 * a:
                bad.append(f"{name}: mean {mean:.3g}, std {std:.4g}, expected N(0, {a:.4g}^2)")
        else:
            mx = float(t.abs().max())
            if mx > a * (1 + 1e-6) + 1e-7 or (t.numel() >= 16 and mx < 0.5 * a):
                bad.append(f"{name}: max |x| {mx:.4g}, expected U(-{a:.4g}, {a:.4g})")
            elif t.numel() >= 200 and not 0.8 < float(t.std()) / (a / math.sqrt(3)) < 1.2:
                bad.append(f"{name}: std {float(t.std()):.4g}, expected {a / math.sqrt(3):.4g}")
    return bad


def corpus(data):
    d, streams = {}, {}
    for split in ("train", "valid", "test"):
        ids = []
        with open(os.path.join(data, split + ".txt"), encoding="utf8") as f:
            for line in f:
                for w in line.split() + ["<eos>"]:
                    ids.append(d.setdefault(w, len(d)))
        streams[split] = torch.tensor(ids, dtype=torch.int64)
    return d, streams


def lmc_eval(exe, ckpt):
    return json.loads(run([exe, "eval", "--checkpoint", ckpt, "--data", DATA, "--split", "test", "--json"]))["loss"]


def f32_case(rep, c, exe, vocab, streams, pickled):
    words, ntoken = list(vocab), len(vocab)
    c.ntoken_f32 = ntoken
    tmp = f"{OUT}/{c.name}"
    # init: one dry-run step with a negligible learning rate
    run([exe, "train", "--data", DATA, "--dry-run", "--lr", "1e-12", "--seed", "3", "--save", tmp + "_init.safetensors"])
    tensors, _ = load_file(tmp + "_init.safetensors")
    bad = init_errors(c, tensors)
    fresh = c.torch_model(ntoken, 0.2, 0.1)
    bad_ref = init_errors(c, {k: v.detach() for k, v in named(fresh).items()})
    rep.check(f"{c.name} f32 initialisation as the example ({len(tensors)} tensors)", not bad and not bad_ref,
              "; ".join(bad + ["torch " + b for b in bad_ref]) or "bounds and spread of every tensor")

    # lmc -> torch
    run([exe, "train", "--data", DATA, "--epochs", "1", "--max-batches", "3", "--lr", "5", "--seed", "5",
         "--save", tmp + "_a.safetensors"])
    want = lmc_eval(exe, tmp + "_a.safetensors")
    tensors, meta = load_file(tmp + "_a.safetensors")
    torch.set_default_dtype(torch.float64)
    m64 = c.torch_model(ntoken)
    missing, unexpected = m64.load_state_dict({k: v.double() for k, v in tensors.items()}, strict=False)
    torch.set_default_dtype(torch.float32)
    got = evaluate(m64, streams["test"], 10, c.bptt)
    e = rel_scalar(got, want)
    rep.check(f"{c.name} f32 lmc checkpoint -> torch", e <= TOL_F32 and set(missing) <= {"pos_encoder.pe"}
              and not unexpected and meta.get("kind") == c.kind,
              f"test loss lmc {want:.7f} torch {got:.7f} rel. error {e:.2e} (tolerance {TOL_F32:.0e}); "
              f"missing {missing} unexpected {unexpected}")
    if c.tools:
        tools_round_trip(rep, c, exe, tmp, streams, pickled, want)
    else:
        torch_to_lmc_direct(rep, c, exe, tmp, streams)

    # generate
    prompt = " ".join(words[i] for i in streams["test"][:2 * c.bptt + 1].tolist())
    text = run([exe, "generate", "--checkpoint", tmp + "_a.safetensors", "--words", "25", "--seed", "4",
                "--prompt", prompt, "--outf", "-"])
    out = text.split()
    rep.check(f"{c.name} f32 generate (a {2 * c.bptt + 1}-word prompt)",
              len(out) == 25 and all(w in vocab for w in out), f"{len(out)} words: {' '.join(out[:8])} ...")


def tools_round_trip(rep, c, exe, tmp, streams, pickled, want):
    """lmc -> torch through tools/safetensors_to_torch.py, torch -> lmc
    through tools/torch_to_safetensors.py; the pickled whole model is
    queued for main."""
    ntoken = c.ntoken_f32
    pt = tmp + "_a.pt"
    safetensors_to_torch.main([tmp + "_a.safetensors", pt])
    m32 = c.torch_model(ntoken)
    m32.load_state_dict(torch.load(pt), strict=True)
    got = evaluate(m32, streams["test"], 10, c.bptt)
    e = rel_scalar(got, want)
    rep.check(f"{c.name} f32 tools/safetensors_to_torch.py (strict load)", e <= TOL_F32,
              f"test loss torch {got:.7f} rel. error {e:.2e} (tolerance {TOL_F32:.0e})")

    # torch -> lmc: a state_dict and the whole pickled model
    m32, want = random_torch(c, ntoken, streams)
    torch.save(m32.state_dict(), tmp + "_b.pt")
    args = [tmp + "_b.pt", tmp + "_b.safetensors", "--data", DATA]
    if c.kind.startswith("RNN_"):
        args += ["--kind", c.kind]       # a state_dict cannot tell tanh from relu
    torch_to_safetensors.main(args)
    got = lmc_eval(exe, tmp + "_b.safetensors")
    e = rel_scalar(got, want)
    rep.check(f"{c.name} f32 torch state_dict -> tools/torch_to_safetensors.py -> lmc eval", e <= TOL_F32,
              f"test loss torch {want:.7f} lmc {got:.7f} rel. error {e:.2e} (tolerance {TOL_F32:.0e})")
    torch.save(m32, tmp + "_c.pt")       # as main.py saves: the whole model, class model.RNNModel/...
    pickled.append((c, exe, tmp + "_c.pt", tmp + "_c.safetensors", want))


def random_torch(c, ntoken, streams):
    """A float32 torch model of random weights (seed 99) and the float64
    test loss of the same weights."""
    gen = torch.Generator().manual_seed(99)
    m32 = c.torch_model(ntoken, 0.2, 0.1)
    randomize(m32, gen, 0.2)
    torch.set_default_dtype(torch.float64)
    m64 = c.torch_model(ntoken)
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    want = evaluate(m64, streams["test"], 10, c.bptt)
    torch.set_default_dtype(torch.float32)
    return m32, want


def torch_to_lmc_direct(rep, c, exe, tmp, streams):
    """torch -> lmc for a kind the tools do not know: the torch model's
    state_dict written as safetensors with its kind, evaluated by the
    trainer."""
    m32, want = random_torch(c, c.ntoken_f32, streams)
    save_file(tmp + "_b.safetensors", m32.state_dict(), {"kind": c.kind}, dtype=torch.float32)
    got = lmc_eval(exe, tmp + "_b.safetensors")
    e = rel_scalar(got, want)
    rep.check(f"{c.name} f32 torch state_dict -> safetensors -> lmc eval", e <= TOL_F32,
              f"test loss torch {want:.7f} lmc {got:.7f} rel. error {e:.2e} (tolerance {TOL_F32:.0e})")


def main():
    t0 = time.time()
    rep = Report()
    os.makedirs(OUT, exist_ok=True)
    d, streams = corpus(DATA)
    ntoken = len(d)
    f32_cases = [c for c in CASES if not c.tied or c.kind == "GPT"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        f64 = {c.name: pool.submit(build_f64, c) for c in CASES}
        f32 = {c.name: pool.submit(build_f32, c, ntoken) for c in f32_cases}
        for c in CASES:
            try:
                f64_case(rep, c, f64[c.name].result())
                if c.kind == "AWD_LSTM":
                    awd_regularisers(rep, c, f64[c.name].result())
            except Exception as e:   # a build or run failure is one failed check, not the end
                torch.set_default_dtype(torch.float32)
                rep.check(f"{c.name} f64", False, str(e))
        pickled = []
        for c in f32_cases:
            try:
                f32_case(rep, c, f32[c.name].result(), d, streams, pickled)
            except Exception as e:
                torch.set_default_dtype(torch.float32)
                rep.check(f"{c.name} f32", False, str(e))

    activations.check(rep, LMC, OUT, SAN)   # the ops no model uses, against torch
    anykind.check(rep, LMC, B, OUT, SAN, DATA, streams, ntoken)   # the tool on a kind of a graph's own

    # The whole pickled models, converted by the tool in a fresh process in
    # which the reference's module `model` is not importable (as for a user
    # without the example's model.py).
    conv = "; ".join(f"t.main([{p!r}, {s!r}, '--data', {DATA!r}])" for _, _, p, s, _ in pickled)
    try:
        if any(c.tools for c in f32_cases) and not pickled:
            raise RuntimeError("no model got this far")
        if pickled:
            run([PY, "-c", f"import sys; sys.path.insert(0, 'tools'); import torch_to_safetensors as t; {conv}"],
                cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                                  "PYTHONDONTWRITEBYTECODE": "1"})
        for c, exe, _, st, want in pickled:
            meta = load_file(st)[1]
            got = lmc_eval(exe, st)
            e = rel_scalar(got, want)
            words = run([exe, "generate", "--checkpoint", st, "--words", "5", "--outf", "-"]).split()
            rep.check(f"{c.name} f32 pickled whole model -> tools/torch_to_safetensors.py -> lmc eval, generate",
                      e <= TOL_F32 and meta.get("kind") == c.kind and len(words) == 5,
                      f"kind {meta.get('kind')}, test loss lmc {got:.7f} rel. error {e:.2e} "
                      f"(tolerance {TOL_F32:.0e}); generated '{' '.join(words)}' with the recorded vocabulary")
    except Exception as e:
        rep.check("pickled whole models", False, str(e))

    # safetensors_to_torch.py --example: the whole model, as main.py saves it,
    # loaded the way generate.py loads it
    for c in [c for c in f32_cases if c.kind == "Transformer" and c.tools]:
        example_whole(rep, c, streams)

    print(f"parity: {time.time() - t0:.0f} s")
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


def example_whole(rep, c, streams):
    src, dst = f"{OUT}/{c.name}_a.safetensors", f"{OUT}/{c.name}_whole.pt"
    try:
        run([PY, "-B", "tools/safetensors_to_torch.py", src, dst, "--example", HERE])
        whole = torch.load(dst)
        want = lmc_eval(f"{OUT}/{c.name}", src)
        got = evaluate(whole, streams["test"], 10, c.bptt)
        e = rel_scalar(got, want)
        rep.check(f"{c.name} f32 tools/safetensors_to_torch.py --example (whole {type(whole).__name__})",
                  e <= TOL_F32, f"test loss torch {got:.7f} lmc {want:.7f} rel. error {e:.2e} "
                  f"(tolerance {TOL_F32:.0e})")
    except Exception as e:
        rep.check("safetensors_to_torch.py --example", False, str(e))


if __name__ == "__main__":
    sys.exit(main())
