#!/usr/bin/python3
"""Converts an lmc checkpoint (safetensors with state_dict names) to a file
PyTorch's word_language_model example can load.

  tools/safetensors_to_torch.py IN.safetensors OUT.pt [--example DIR] [--dtype f32|f64]

Without --example, OUT.pt is a torch.save'd state_dict (an OrderedDict of
tensors) that loads into the example's model with load_state_dict(...,
strict=True): a tied weight is one tensor under both names, and for a
Transformer the positional-encoding buffer pos_encoder.pe, which lmc computes
in the graph and does not store, is added as the example's
PositionalEncoding computes it.

With --example DIR (the folder holding the example's model.py), OUT.pt is the
whole model as main.py saves it (torch.save(model)), built with
model.RNNModel or model.TransformerModel from the shapes in the
checkpoint's metadata, so generate.py and main.py's --resume-style loading
take it as it is.

Needs only Python 3 and torch.
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_to_safetensors import load_file  # noqa: E402


def positional_encoding(d_model, max_len=5000, dtype=torch.float32):
    """The example's PositionalEncoding buffer pe: (max_len, 1, d_model)."""
    pe = torch.zeros(max_len, d_model, dtype=dtype)
    position = torch.arange(0, max_len, dtype=dtype).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).to(dtype) * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.unsqueeze(0).transpose(0, 1)


def kind_of(sd, meta):
    k = meta.get("kind")
    if k:
        return k
    if "input_emb.weight" in sd:
        return "Transformer"
    return None


def state_dict(path, dtype):
    """The checkpoint as a state_dict: (OrderedDict, metadata, kind)."""
    tensors, meta = load_file(path)
    sd = collections.OrderedDict()
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            continue
        sd[k] = v.to(dtype)
    kind = kind_of(sd, meta)
    for a, b in (("encoder.weight", "decoder.weight"), ("input_emb.weight", "decoder.weight")):
        if a in sd and b in sd and sd[a].shape == sd[b].shape and torch.equal(sd[a], sd[b]):
            sd[b] = sd[a]          # one tensor, as the tied model's state_dict has it
    if kind == "Transformer" and "pos_encoder.pe" not in sd:
        sd["pos_encoder.pe"] = positional_encoding(sd["input_emb.weight"].shape[1], dtype=dtype)
    return sd, meta, kind


def whole_model(sd, meta, kind, example):
    """The example's model built from the metadata, with sd loaded strictly."""
    sys.path.insert(0, os.path.abspath(example))
    import model as example_model   # the example's model.py

    def need(k):
        if k not in meta:
            raise SystemExit(f"the checkpoint's metadata has no '{k}'; cannot build the whole model")
        return int(meta[k])

    tied = meta.get("tied") == "true"
    dropout = float(meta.get("dropout", "0.2"))
    if kind == "Transformer":
        m = example_model.TransformerModel(need("ntoken"), need("emsize"), need("nhead"), need("nhid"),
                                           need("nlayers"), dropout)
        if tied:
            m.decoder.weight = m.input_emb.weight
    elif kind in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
        m = example_model.RNNModel(kind, need("ntoken"), need("emsize"), need("nhid"), need("nlayers"),
                                   dropout, tied)
    else:
        raise SystemExit(f"unknown model kind {kind!r}")
    m = m.to(next(iter(sd.values())).dtype)
    m.load_state_dict(sd, strict=True)
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description="lmc safetensors checkpoint -> PyTorch torch.save file")
    ap.add_argument("input", help="an lmc checkpoint (.safetensors)")
    ap.add_argument("output", help="the torch.save file to write")
    ap.add_argument("--example", metavar="DIR",
                    help="folder of the example's model.py: save the whole model as main.py does")
    ap.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    a = ap.parse_args(argv)

    dtype = torch.float64 if a.dtype == "f64" else torch.float32
    sd, meta, kind = state_dict(a.input, dtype)
    obj = whole_model(sd, meta, kind, a.example) if a.example else sd
    tmp = a.output + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
    os.replace(tmp, a.output)


if __name__ == "__main__":
    main()
