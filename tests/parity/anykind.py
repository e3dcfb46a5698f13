"""tools/torch_to_safetensors.py --trainer on a model of no kind the tool
knows, for tests/parity/parity.py.

tests/grad/objective.lua (kind L2_BIGRAM: logp = log_softmax(E[x] D^T),
an L2 penalty in its objective) is built as an f32 trainer for the tiny
corpus.  A torch state_dict of random weights with the model's names, plus
a buffer the model lacks, is converted against the trainer; the trainer's
`eval` must give torch's test loss of the same weights (main.py's
evaluate(): the mean NLL over the test split batchified by 10), the buffer
must be left out and the kind recorded.  A state_dict with a misspelled
name or a wrong shape must be refused, naming it."""
import contextlib
import io
import json
import subprocess

import torch
import torch.nn.functional as F

import torch_to_safetensors
from torch_to_safetensors import load_file

GRAPH = "tests/grad/objective.lua"
EMSIZE = 6


def build(lmc, b, out, san, ntoken):
    src, exe = f"{out}/l2_bigram.c", f"{out}/l2_bigram"
    subprocess.run([lmc, "compile", GRAPH, "-D", f"ntoken={ntoken}", "-D", f"emsize={EMSIZE}", "-o", src], check=True)
    subprocess.run(["clang", "-std=c11", "-O0", *san, "-Wall", "-Wextra", "-Werror", "-Iruntime", "-o", exe, src,
                    f"{b}/obj/runtime/main.o", f"{b}/liblmcrt.a", "-lopenblas", "-lm"], check=True)
    return exe


def torch_loss(sd, test):
    n = test.numel() // 10
    data = test[:n * 10].view(10, -1).t()            # batchify(test, 10)
    x, y = data[:-1].reshape(-1), data[1:].reshape(-1)
    e, d = sd["encoder.weight"].double(), sd["decoder.weight"].double()
    return F.nll_loss(F.log_softmax(e[x] @ d.t(), dim=-1), y).item()


def refusal(args):
    """The tool's refusal of args, as text ('' when it converted)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            torch_to_safetensors.main(args)
    except SystemExit as e:
        return str(e)
    return ""


def check(rep, lmc, b, out, san, data, streams, ntoken):
    try:
        exe = build(lmc, b, out, san, ntoken)
    except (subprocess.CalledProcessError, OSError) as e:
        rep.check("torch_to_safetensors.py --trainer (a graph of its own kind)", False, str(e))
        return
    g = torch.Generator().manual_seed(5)
    sd = {"encoder.weight": torch.rand(ntoken, EMSIZE, generator=g) - 0.5,
          "decoder.weight": torch.rand(ntoken, EMSIZE, generator=g) - 0.5,
          "pos.pe": torch.rand(4, EMSIZE, generator=g)}   # a buffer the model lacks
    pt, st = f"{out}/l2_bigram.pt", f"{out}/l2_bigram.safetensors"
    torch.save(sd, pt)
    note = io.StringIO()
    with contextlib.redirect_stderr(note):
        torch_to_safetensors.main([pt, st, "--trainer", exe, "--data", data])
    tensors, meta = load_file(st)
    got = json.loads(subprocess.run([exe, "eval", "--checkpoint", st, "--data", data, "--split", "test", "--json"],
                                    check=True, stdout=subprocess.PIPE, text=True).stdout)["loss"]
    want = torch_loss(sd, streams["test"])
    e = abs(got - want) / abs(want)
    rep.check("L2_BIGRAM f32 torch state_dict -> tools/torch_to_safetensors.py --trainer -> lmc eval",
              e <= 1e-6 and meta.get("kind") == "L2_BIGRAM" and sorted(tensors) == ["decoder.weight", "encoder.weight"]
              and "pos.pe" in note.getvalue(),
              f"test loss torch {want:.7f} lmc {got:.7f} rel. error {e:.2e} (tolerance 1e-06); kind "
              f"{meta.get('kind')}, tensors {sorted(tensors)}; {note.getvalue().strip()}")
    bad = dict(sd)
    bad["decoder.weigth"] = bad.pop("decoder.weight")
    torch.save(bad, pt)
    why = refusal([pt, st, "--trainer", exe])
    rep.check("torch_to_safetensors.py --trainer: a misspelled name is refused, with the near one",
              why.endswith("missing tensor decoder.weight; did you mean decoder.weigth?"), why)
    bad = dict(sd)
    bad["encoder.weight"] = bad["encoder.weight"][:, :2]
    torch.save(bad, pt)
    why = refusal([pt, st, "--trainer", exe])
    rep.check("torch_to_safetensors.py --trainer: a wrong shape is refused",
              why.endswith(f"encoder.weight: shape [{ntoken}, 2] in the state_dict, [{ntoken}, {EMSIZE}] compiled"),
              why)
