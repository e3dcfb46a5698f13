#!/usr/bin/python3
"""Converts a checkpoint of PyTorch's word_language_model example to an lmc
checkpoint (safetensors, float32, state_dict names).

  tools/torch_to_safetensors.py IN.pt OUT.safetensors [--data DIR] [--kind KIND]
                                [--trainer build/MODEL]

IN.pt is what the example's main.py writes with torch.save: the whole
pickled model (RNNModel or TransformerModel), or a state_dict.  Unpickling a
whole model normally needs the example's model.py on the import path; this
tool does not: a module that cannot be imported is stood in for by one whose
classes are plain nn.Modules that keep the pickled attributes, which is all
state_dict() needs.

The safetensors file holds every tensor of the state_dict as F32 (a tied
weight under both of its names, as state_dict has it; buffers such as the
Transformer's pos_encoder.pe too, which lmc ignores), and metadata:
format_version, kind (RNN_TANH, RNN_RELU, LSTM, GRU, Transformer: from the
pickled model, else guessed from the tensors; --kind overrides), the shapes
(ntoken, emsize, nhid, nlayers, nhead when known, tied) and, with --data,
the vocabulary of that corpus as data.py builds it (words in id order joined
by newlines, vocab_size, vocab_hash), which lmc's eval and generate use.

Any other model (a graph of your own: a GPT, an AWD-LSTM) is converted
against its compiled trainer, --trainer build/MODEL: `build/MODEL info`
gives the kind, the hyper-parameters and every tensor's name and shape.
Each of the model's tensors must be in the state_dict with its shape
(either name of a tied pair will do; a missing name is reported with the
state_dict's nearest names); the state_dict's other tensors (buffers such
as pos_encoder.pe, which lmc computes in the graph) are left out, and
named; the metadata gets the trainer's kind and hyper-parameters.

Needs only Python 3 and torch.  The functions load_file and save_file are
the safetensors reader and writer of tools/safetensors_to_torch.py and of
the parity tests.
"""
import argparse
import collections
import difflib
import json
import math
import os
import re
import struct
import subprocess
import sys
import types

import torch

KINDS = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU", "Transformer")
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}
NAMES = {v: k for k, v in DTYPES.items()}


# ---------------------------------------------------------------- safetensors

def save_file(path, tensors, metadata=None, dtype=torch.float32):
    """Writes {name: tensor} as safetensors: 8-byte little-endian header
    length, JSON header padded with spaces to a multiple of 8, then the data
    of every tensor (sorted by name) converted to dtype (None keeps each
    tensor's own).  Atomic: PATH.tmp, fsync, rename."""
    if sys.byteorder != "little":
        raise SystemExit("safetensors: a little-endian machine is needed")
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        if t.dtype not in NAMES:
            raise SystemExit(f"safetensors: {name}: unsupported dtype {t.dtype}")
        data = t.reshape(-1).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_file(path):
    """Reads a safetensors file: returns (OrderedDict name -> tensor in the
    file's dtype, metadata dict).  Checks the header and every tensor's
    offsets against the file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", None) or {}
    out = collections.OrderedDict()
    for name, e in header.items():
        dt = DTYPES.get(e["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {e['dtype']}")
        b, end = e["data_offsets"]
        shape = e["shape"]
        numel = math.prod(shape)
        size = torch.tensor([], dtype=dt).element_size()
        if not (0 <= b <= end <= len(raw) - base) or end - b != numel * size:
            raise ValueError(f"{path}: {name}: data_offsets {b}..{end} do not fit shape {shape} "
                             f"of {e['dtype']} in the file")
        buf = bytearray(raw[base + b:base + end])
        t = torch.frombuffer(buf, dtype=dt) if numel else torch.empty(0, dtype=dt)
        out[name] = t.reshape(shape).clone()
    return out, meta


# ------------------------------------------------------ the example's files

class _Stub(torch.nn.Module):
    """Stands in for a pickled class whose module cannot be imported."""


class _StubModule(types.ModuleType):
    """A module that cannot be imported: every class asked of it is a _Stub."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Stub,), {"__module__": self.__name__, "__qualname__": name})
        setattr(self, name, cls)
        return cls


def _torch_load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:            # a torch without weights_only
        return torch.load(path, map_location="cpu")


def load_torch(path):
    """torch.load of the example's checkpoint: returns (state_dict, model or
    None).  The example's main.py saves the whole model; a module of its
    classes that cannot be imported (the example's model.py) is stood in
    for by a _StubModule for the time of the load."""
    added = []
    try:
        for _ in range(64):
            try:
                obj = _torch_load(path)
                break
            except ModuleNotFoundError as e:
                if not e.name or e.name in sys.modules:
                    raise
                parts = e.name.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name not in sys.modules:
                        sys.modules[name] = _StubModule(name)
                        added.append(name)
        else:
            raise SystemExit(f"{path}: too many modules to stand in for")
    finally:
        for name in added:
            del sys.modules[name]
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        sd = collections.OrderedDict((k, v) for k, v in obj.items() if torch.is_tensor(v))
        if not sd:
            raise SystemExit(f"{path}: holds no tensors")
        return sd, None
    raise SystemExit(f"{path}: expected a model or a state_dict, got {type(obj).__name__}")


def guess_kind(sd, model):
    """The lmc model kind of a state_dict (and of the model, when pickled)."""
    if model is not None:
        t = getattr(model, "rnn_type", None) or getattr(model, "model_type", None)
        if t in KINDS:
            return t
        rnn = getattr(model, "rnn", None)
        if isinstance(rnn, torch.nn.LSTM):
            return "LSTM"
        if isinstance(rnn, torch.nn.GRU):
            return "GRU"
        if isinstance(rnn, torch.nn.RNN):
            return "RNN_RELU" if rnn.nonlinearity == "relu" else "RNN_TANH"
    if "input_emb.weight" in sd:
        return "Transformer"
    if "rnn.weight_ih_l0" in sd and "rnn.weight_hh_l0" in sd:
        gates = sd["rnn.weight_ih_l0"].shape[0] // sd["rnn.weight_hh_l0"].shape[1]
        return {4: "LSTM", 3: "GRU"}.get(gates)   # 1: RNN_TANH or RNN_RELU, not knowable
    return None


def shapes(sd, kind, model):
    """The compiled shapes lmc records in its metadata, as far as the tensors
    (and the pickled model) tell."""
    meta = {}
    if kind == "Transformer":
        emb = sd["input_emb.weight"]
        meta["ntoken"], meta["emsize"] = emb.shape
        meta["nhid"] = sd["encoder.layers.0.linear1.weight"].shape[0]
        meta["nlayers"] = len({k.split(".")[2] for k in sd if k.startswith("encoder.layers.")})
        nhead = None
        if model is not None:
            try:
                nhead = model.encoder.layers[0].self_attn.num_heads
            except AttributeError:
                nhead = None
        if nhead:
            meta["nhead"] = nhead
    elif "encoder.weight" in sd:
        emb = sd["encoder.weight"]
        meta["ntoken"], meta["emsize"] = emb.shape
        meta["nhid"] = sd["rnn.weight_hh_l0"].shape[1]
        meta["nlayers"] = len([k for k in sd if k.startswith("rnn.weight_hh_l")])
    enc = sd.get("input_emb.weight", sd.get("encoder.weight"))
    dec = sd.get("decoder.weight")
    if enc is not None and dec is not None:
        tied = enc.data_ptr() == dec.data_ptr() or (model is not None and enc is dec)
        meta["tied"] = "true" if tied else "false"
    return {k: str(int(v)) if not isinstance(v, str) else v for k, v in meta.items()}


# ------------------------------------------------------ a compiled model

def trainer_info(trainer):
    """`TRAINER info` read back: (kind, {hyper-parameter: value}, [(name,
    shape, tied-to name or None)])."""
    try:
        p = subprocess.run([trainer, "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise SystemExit(f"{trainer}: {e.strerror}")
    if p.returncode != 0:
        raise SystemExit(f"{trainer} info: exit {p.returncode}\n{p.stderr}")
    kind, hyper, params, section = None, {}, [], "head"
    for line in p.stdout.splitlines():
        if line.startswith("kind "):
            kind = line[len("kind "):].strip() or None
        elif line.startswith("parameters "):
            section = "params"
        elif line.startswith("  ") and section == "params":
            m = re.fullmatch(r"  (\S+)\s+\(([0-9, ]*)\)(?: tied to (\S+))?", line)
            if not m:
                raise SystemExit(f"{trainer} info: cannot read the line {line!r}")
            shape = tuple(int(x) for x in m.group(2).split(",") if x.strip())
            params.append((m.group(1), shape, m.group(3)))
        elif line.startswith("  ") and section == "head":
            name, _, value = line.strip().partition(" ")
            hyper[name] = value.strip()
        elif not line.startswith(" ") and section == "params":
            section = "tail"
    if not params:
        raise SystemExit(f"{trainer} info: no parameters listed")
    return kind, hyper, params


def match_model(sd, params, source):
    """The tensors of sd that the compiled model has (params, as
    trainer_info lists them), checked; the others are named on stderr and
    left out."""
    names = {n for n, _, _ in params}
    out = collections.OrderedDict()
    for name, shape, tied in params:
        have = [n for n in (name, tied) if n and n in sd]
        if not have and not any(t == name and n in sd for n, _, t in params):
            spare = [k for k in sd if k not in names]
            near = difflib.get_close_matches(name, spare, n=1, cutoff=0.75)
            hint = f"; did you mean {near[0]}?" if near else (f"; its tensors the model lacks: {', '.join(spare[:8])}"
                                                               f"{', ...' if len(spare) > 8 else ''}" if spare else "")
            raise SystemExit(f"{source}: missing tensor {name}{hint}")
        if name in sd:
            if tuple(sd[name].shape) != shape:
                raise SystemExit(f"{source}: {name}: shape {list(sd[name].shape)} in the state_dict, "
                                 f"{list(shape)} compiled")
            out[name] = sd[name]
    extra = [k for k in sd if k not in names]
    if extra:
        print(f"{source}: note: left out {len(extra)} tensor{'s' if len(extra) != 1 else ''} that the compiled "
              f"model does not have: {', '.join(extra)}", file=sys.stderr)
    return out


# ----------------------------------------------------------------- corpus

def corpus_vocab(data_dir):
    """data.py's dictionary: words in first-seen order over train, valid,
    test, each line split as str.split() plus <eos>."""
    words, seen = [], set()
    for split in ("train", "valid", "test"):
        with open(os.path.join(data_dir, split + ".txt"), encoding="utf8") as f:
            for line in f:
                for w in line.split() + ["<eos>"]:
                    if w not in seen:
                        seen.add(w)
                        words.append(w)
    return words


def vocab_hash(words):
    """FNV-1a over the words in id order, each with its terminating NUL, as
    lmc's dict_hash."""
    h = 0xcbf29ce484222325
    for w in words:
        for c in w.encode("utf8") + b"\0":
            h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch word_language_model checkpoint -> lmc safetensors")
    ap.add_argument("input", help="a torch.save file: the whole model or a state_dict")
    ap.add_argument("output", help="the safetensors file to write")
    ap.add_argument("--data", help="corpus folder whose vocabulary to record (data.py's dictionary)")
    ap.add_argument("--kind", help="model kind, when the file does not tell (RNN_TANH, ..., or a graph's own)")
    ap.add_argument("--trainer", help="the compiled trainer (build/MODEL) whose tensors to take, for any model")
    a = ap.parse_args(argv)
    if a.kind is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,127}", a.kind):
        raise SystemExit(f"--kind: expected a name (letters, digits, _ and .), got {a.kind!r}")

    sd, model = load_torch(a.input)
    meta = {"format_version": "1"}
    if a.trainer:
        tkind, hyper, params = trainer_info(a.trainer)
        sd = match_model(sd, params, a.input)
        kind = a.kind or tkind
        meta.update(hyper)
    else:
        kind = a.kind or guess_kind(sd, model)
        if kind in KINDS or (kind is None and "rnn.weight_hh_l0" in sd):   # the example's models
            meta.update(shapes(sd, kind, model))
    if kind:
        meta["kind"] = kind
    elif not a.trainer:
        print(f"{a.input}: warning: no kind recorded: not one of the example's models, or an RNN whose "
              "nonlinearity a state_dict does not tell (give --kind, or --trainer for any model)", file=sys.stderr)
    if a.data:
        words = corpus_vocab(a.data)
        if "ntoken" in meta and int(meta["ntoken"]) != len(words):
            raise SystemExit(f"{a.data} has {len(words)} words but the model has "
                             f"{meta['ntoken']} embeddings")
        meta["vocab"] = "\n".join(words)
        meta["vocab_size"] = str(len(words))
        meta["vocab_hash"] = vocab_hash(words)
    for k, v in sd.items():
        if not v.is_floating_point():
            raise SystemExit(f"{a.input}: {k} is {v.dtype}, expected floating point")
    save_file(a.output, sd, meta)


if __name__ == "__main__":
    main()
