#!/usr/bin/python3
"""PyTorch reference for lmc's trainers: the word_language_model example's
models built from torch.nn modules and its main.py training loop, written
independently for benchmarks and training comparisons.

  /usr/bin/python3 bench/torch_lm.py --model LSTM --epochs 1 [--max-batches N] [--threads N]

Prints main.py's log lines.  Uses Debian's python3-torch (CPU).
"""
import argparse
import math
import os
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


def detach(h):
    return h.detach() if isinstance(h, torch.Tensor) else tuple(detach(v) for v in h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/wikitext-2")
    ap.add_argument("--model", default="LSTM")
    ap.add_argument("--emsize", type=int, default=200)
    ap.add_argument("--nhid", type=int, default=200)
    ap.add_argument("--nlayers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=20)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch_size", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--log-interval", type=int, default=200)
    ap.add_argument("--max-batches", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    d = {}
    train = tokenize(os.path.join(a.data, "train.txt"), d)
    valid = tokenize(os.path.join(a.data, "valid.txt"), d)
    test = tokenize(os.path.join(a.data, "test.txt"), d)
    train, valid, test = batchify(train, a.batch_size), batchify(valid, 10), batchify(test, 10)
    model = RNNModel(a.model, len(d), a.emsize, a.nhid, a.nlayers, a.dropout, a.tied)

    def get_batch(src, i):
        n = min(a.bptt, len(src) - 1 - i)
        return src[i : i + n], src[i + 1 : i + 1 + n].reshape(-1)

    def evaluate(src):
        model.eval()
        total, hidden = 0.0, model.init_hidden(10)
        with torch.no_grad():
            for i in range(0, src.size(0) - 1, a.bptt):
                x, y = get_batch(src, i)
                out, hidden = model(x, hidden)
                total += len(x) * F.nll_loss(out.view(-1, len(d)), y).item()
        return total / (len(src) - 1)

    lr, best = a.lr, None
    for epoch in range(1, a.epochs + 1):
        model.train()
        t0 = time.time()
        total, start = 0.0, time.time()
        hidden = model.init_hidden(a.batch_size)
        for batch, i in enumerate(range(0, train.size(0) - 1, a.bptt)):
            if a.max_batches and batch >= a.max_batches:
                break
            x, y = get_batch(train, i)
            hidden = detach(hidden)
            model.zero_grad()
            out, hidden = model(x, hidden)
            loss = F.nll_loss(out.view(-1, len(d)), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            total += loss.item()
            if batch % a.log_interval == 0 and batch > 0:
                cur = total / a.log_interval
                ms = (time.time() - start) * 1000 / a.log_interval
                print("| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | "
                      "loss {:5.2f} | ppl {:8.2f}".format(epoch, batch, len(train) // a.bptt, lr, ms,
                                                         cur, math.exp(cur)), flush=True)
                total, start = 0.0, time.time()
        vl = evaluate(valid)
        print("| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | valid ppl {:8.2f}".format(
            epoch, time.time() - t0, vl, math.exp(vl)), flush=True)
        if best is None or vl < best:
            best = vl
        else:
            lr /= 4.0


if __name__ == "__main__":
    main()
