#!/usr/bin/python3
"""PyTorch reference for lmc's trainers: the word_language_model example's
models built from torch.nn modules, its main.py training loop and its
generate.py sampling loop, written independently for benchmarks and
training comparisons.

  /usr/bin/python3 bench/torch_lm.py --model LSTM --epochs 1 [--max-batches N] [--threads N]
  /usr/bin/python3 bench/torch_lm.py --model GRU --max-batches 21 --log-interval 10 --eval-batches 20
  /usr/bin/python3 bench/torch_lm.py --model Transformer --gen-words 1000 --outf /dev/null

Models (--model): RNN_TANH, RNN_RELU, LSTM, GRU (RNNModel: Embedding,
dropout, nn.RNN/LSTM/GRU, dropout, Linear) and Transformer (the example's
TransformerModel: input_emb * sqrt(emsize), sinusoidal positional encoding
and dropout, nn.TransformerEncoder of nn.TransformerEncoderLayer(emsize,
nhead, nhid, inner dropout) with a final LayerNorm as nn.Transformer's
encoder has, a causal mask, Linear decoder).  The example builds its model
on nn.Transformer without passing its --dropout on, so the layers' dropout is
nn.Transformer's 0.1: --inner-dropout, 0.1 by default, as graphs/transformer.lua.

Training prints main.py's log lines, with tok/s appended as lmc's trainers
do; the first interval's ms/batch covers log_interval + 1 batches divided by
log_interval, main.py's quirk, kept so that both trainers are timed alike.
--max-batches N stops each epoch after N batches.  After each epoch the
valid split is evaluated (its first --eval-batches windows when given, else
all of it) and one more line gives the time it took:

  | eval | windows W | tokens N | time S s | tok/s X

--gen-words N runs generate.py's loop instead of training (model.eval(), a
random first word, one step at a time, torch.multinomial over
exp(logp / temperature)), from the freshly initialised model (the cost of a
step does not depend on the weights), printing "| Generated i/N words" on
stderr every 100 words.  The Transformer is fed the last bptt words (lmc's
generator does the same; the example's window grows without bound).

--autocast runs every forward pass (training, evaluation, generation) and
the loss under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's mixed
precision: bf16 matrix products, fp32 weights, gradients and optimizer.

Uses Debian's python3-torch (CPU); --threads goes to torch.set_num_threads.
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def tokenize(path, dictionary):
    ids = []
    with open(path, encoding="utf8") as f:
        for line in f:
            for w in line.split() + ["<eos>"]:
                if w not in dictionary:
                    dictionary[w] = len(dictionary)
                ids.append(dictionary[w])
    return torch.tensor(ids, dtype=torch.int64)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()


class RNNModel(nn.Module):
    def __init__(self, kind, ntoken, ninp, nhid, nlayers, dropout, tied):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if kind in ("LSTM", "GRU"):
            self.rnn = getattr(nn, kind)(ninp, nhid, nlayers, dropout=dropout)
        else:
            nl = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[kind]
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nl, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tied:
            self.decoder.weight = self.encoder.weight
        self.kind, self.nhid, self.nlayers = kind, nhid, nlayers
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))
        out, hidden = self.rnn(emb, hidden)
        out = self.drop(out)
        return F.log_softmax(self.decoder(out), dim=-1), hidden

    def init_hidden(self, bsz):
        z = torch.zeros(self.nlayers, bsz, self.nhid)
        return (z, z.clone()) if self.kind == "LSTM" else z


class PositionalEncoding(nn.Module):
    """x + pe[:T] with pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(...), then dropout."""

    def __init__(self, d, dropout, max_len=5000):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        t = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(max_len, d)
        pe[:, 0::2] = torch.sin(t * freq)
        pe[:, 1::2] = torch.cos(t * freq)
        self.register_buffer("pe", pe.unsqueeze(1))   # (max_len, 1, d)

    def forward(self, x):
        return self.drop(x + self.pe[: x.size(0)])


class TransformerModel(nn.Module):
    """state_dict names as the example's: input_emb, encoder.layers.N..., encoder.norm, decoder."""

    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout, inner_dropout, tied):
        super().__init__()
        self.ninp = ninp
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        layer = nn.TransformerEncoderLayer(ninp, nhead, nhid, inner_dropout)
        self.encoder = nn.TransformerEncoder(layer, nlayers, norm=nn.LayerNorm(ninp))
        for p in self.encoder.parameters():    # nn.Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.decoder = nn.Linear(ninp, ntoken)
        nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        if tied:
            self.decoder.weight = self.input_emb.weight
        self.masks = {}

    def forward(self, src, has_mask=True):
        mask = None
        if has_mask:
            n = src.size(0)
            if n not in self.masks:
                self.masks[n] = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
            mask = self.masks[n]
        x = self.pos_encoder(self.input_emb(src) * math.sqrt(self.ninp))
        return F.log_softmax(self.decoder(self.encoder(x, mask=mask)), dim=-1)


def ppl(loss):
    return math.exp(loss) if loss < 709 else float("inf")


def detach(h):
    return h.detach() if isinstance(h, torch.Tensor) else tuple(detach(v) for v in h)


MODELS = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU", "Transformer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/wikitext-2")
    ap.add_argument("--model", default="LSTM", choices=MODELS)
    ap.add_argument("--emsize", type=int, default=200)
    ap.add_argument("--nhid", type=int, default=200)
    ap.add_argument("--nlayers", type=int, default=2)
    ap.add_argument("--nhead", type=int, default=2)
    ap.add_argument("--lr", type=float, default=20)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch_size", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--inner-dropout", type=float, default=0.1, help="Transformer layers' dropout")
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--log-interval", type=int, default=200)
    ap.add_argument("--max-batches", type=int, default=0, help="at most N training batches per epoch")
    ap.add_argument("--eval-batches", type=int, default=0, help="evaluate on the first N windows only")
    ap.add_argument("--gen-words", type=int, default=0, help="generate N words instead of training")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--outf", default="generated.txt", help="where --gen-words writes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--autocast", action="store_true", help="forward passes under autocast bf16")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    d = {}
    train = tokenize(os.path.join(a.data, "train.txt"), d)
    valid = tokenize(os.path.join(a.data, "valid.txt"), d)
    tokenize(os.path.join(a.data, "test.txt"), d)
    ntok = len(d)
    train, valid = batchify(train, a.batch_size), batchify(valid, 10)
    transformer = a.model == "Transformer"
    if transformer:
        model = TransformerModel(ntok, a.emsize, a.nhead, a.nhid, a.nlayers, a.dropout, a.inner_dropout, a.tied)
    else:
        model = RNNModel(a.model, ntok, a.emsize, a.nhid, a.nlayers, a.dropout, a.tied)

    def run(x, hidden):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            if transformer:
                return model(x), None
            return model(x, hidden)

    def init_hidden(bsz):
        return None if transformer else model.init_hidden(bsz)

    if a.gen_words > 0:
        generate(a, model, d, transformer)
        return

    def get_batch(src, i):
        n = min(a.bptt, len(src) - 1 - i)
        return src[i : i + n], src[i + 1 : i + 1 + n].reshape(-1)

    def evaluate(src):
        """main.py's evaluate(); with --eval-batches, over the windows covered."""
        model.eval()
        total, rows, windows, hidden = 0.0, 0, 0, init_hidden(10)
        with torch.no_grad():
            for i in range(0, src.size(0) - 1, a.bptt):
                if a.eval_batches and windows >= a.eval_batches:
                    break
                x, y = get_batch(src, i)
                out, hidden = run(x, hidden)
                total += len(x) * F.nll_loss(out.float().view(-1, ntok), y).item()
                rows += len(x)
                windows += 1
        return total / rows, windows, rows * src.size(1)

    lr, best = a.lr, None
    for epoch in range(1, a.epochs + 1):
        model.train()
        t0 = time.time()
        total, start, tokens = 0.0, time.time(), 0
        hidden = init_hidden(a.batch_size)
        for batch, i in enumerate(range(0, train.size(0) - 1, a.bptt)):
            if a.max_batches and batch >= a.max_batches:
                break
            x, y = get_batch(train, i)
            if hidden is not None:
                hidden = detach(hidden)
            model.zero_grad()
            out, hidden = run(x, hidden)
            loss = F.nll_loss(out.float().view(-1, ntok), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            total += loss.item()
            tokens += x.numel()
            if batch % a.log_interval == 0 and batch > 0:
                cur = total / a.log_interval
                el = time.time() - start
                print("| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | "
                      "loss {:5.2f} | ppl {:8.2f} | tok/s {:.0f}".format(
                          epoch, batch, len(train) // a.bptt, lr, el * 1000 / a.log_interval,
                          cur, ppl(cur), tokens / el), flush=True)
                total, start, tokens = 0.0, time.time(), 0
        te = time.time()
        vl, windows, vtok = evaluate(valid)
        el = time.time() - te
        print("| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | valid ppl {:8.2f}".format(
            epoch, time.time() - t0, vl, ppl(vl)), flush=True)
        print("| eval | windows {} | tokens {} | time {:.3f} s | tok/s {:.0f}".format(
            windows, vtok, el, vtok / el), flush=True)
        if best is None or vl < best:
            best = vl
        else:
            lr /= 4.0


def generate(a, model, d, transformer):
    """generate.py's loop; the Transformer sees the last bptt words."""
    words = list(d)
    ntok = len(words)
    model.eval()
    x = torch.randint(ntok, (1, 1), dtype=torch.long)
    hidden = None if transformer else model.init_hidden(1)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast)
    with open(a.outf, "w", encoding="utf8") as f, torch.no_grad(), amp:
        for i in range(a.gen_words):
            if transformer:
                out = model(x[-a.bptt :], False)
                w = out[-1].squeeze().float().div(a.temperature).exp()
                idx = torch.multinomial(w, 1)[0]
                x = torch.cat([x, idx.view(1, 1)], 0)
            else:
                out, hidden = model(x, hidden)
                w = out.squeeze().float().div(a.temperature).exp()
                idx = torch.multinomial(w, 1)[0]
                x.fill_(idx)
            f.write(words[idx] + ("\n" if i % 20 == 19 else " "))
            if i % 100 == 0:
                print("| Generated {}/{} words".format(i, a.gen_words), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
