"""AWD-LSTM (Merity, Keskar and Socher 2017) built from torch.nn modules:
the reference graphs/awd_lstm.lua is compared with.

Written for these tests after the paper and salesforce/awd-lstm-lm's
RNNModel (--model LSTM), with its state_dict names:

  encoder.weight                       (ntoken, emsize)
  rnns.{l}.module.weight_ih_l0, .bias_ih_l0, .bias_hh_l0, .weight_hh_l0_raw
                                       one nn.LSTM per layer in a WeightDrop
  decoder.weight (tied: encoder.weight), decoder.bias

  AWDLSTM(ntoken, emsize, nhid, nlayers, tied, dropout, dropouth, dropouti,
          dropoute, wdrop, alpha, beta)
      forward(input (T, B), hidden) -> (log-probabilities (T*B, ntoken),
      hidden); hidden is a list of (h, c), each (1, B, H_l).  In training
      it leaves the regularisers in self.reg: alpha * mean(dropped
      output^2) + beta * mean((h[1:] - h[:-1])^2) of the last layer's raw
      output h; the objective is the NLL plus self.reg.

The masks are those the graph draws, in kind: embedding dropout drops
whole rows of encoder.weight, locked dropout one (1, B, H) mask for every
step, weight drop an element mask on weight_hh_l0_raw; each scaled by
1 / (1 - p).  (The parity tests run with every dropout off, so that they
compare deterministic quantities.)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def locked_dropout(x, p, training):
    """x (T, B, H) times one (1, B, H) mask shared by every step."""
    if not training or p == 0:
        return x
    mask = x.new_empty((1, x.size(1), x.size(2))).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedded_dropout(w, p, training):
    """encoder.weight with whole rows dropped."""
    if not training or p == 0:
        return w
    return w * (w.new_empty((w.size(0), 1)).bernoulli_(1 - p) / (1 - p))


class WeightDrop(nn.Module):
    """An nn.LSTM whose hidden-to-hidden weight is DropConnect'ed: the trained
    tensor is weight_hh_l0_raw, and each forward gives the LSTM
    weight_hh_l0 = dropout(weight_hh_l0_raw)."""

    def __init__(self, module, p):
        super().__init__()
        self.module, self.p = module, p
        w = module.weight_hh_l0
        del module._parameters["weight_hh_l0"]
        module.register_parameter("weight_hh_l0_raw", nn.Parameter(w.detach().clone()))

    def forward(self, x, hidden):
        raw = self.module.weight_hh_l0_raw
        # a plain tensor, never the Parameter itself (that would register it
        # again); nn.LSTM's __setattr__ keeps its flat weights in step
        w = F.dropout(raw, self.p, True) if self.training and self.p else raw.clone()
        setattr(self.module, "weight_hh_l0", w)
        return self.module(x, hidden)


class AWDLSTM(nn.Module):
    def __init__(self, ntoken, emsize, nhid, nlayers, tied=True, dropout=0.4, dropouth=0.3,
                 dropouti=0.65, dropoute=0.1, wdrop=0.5, alpha=2.0, beta=1.0):
        super().__init__()
        self.ntoken = ntoken
        self.sizes = [emsize if tied and l == nlayers - 1 else nhid for l in range(nlayers)]
        self.encoder = nn.Embedding(ntoken, emsize)
        self.rnns = nn.ModuleList(
            WeightDrop(nn.LSTM(emsize if l == 0 else nhid, h, 1), wdrop) for l, h in enumerate(self.sizes))
        self.decoder = nn.Linear(self.sizes[-1], ntoken)
        if tied:
            self.decoder.weight = self.encoder.weight
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.alpha, self.beta = alpha, beta
        self.reg = 0.0
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, hidden):
        w = embedded_dropout(self.encoder.weight, self.dropoute, self.training)
        y = locked_dropout(F.embedding(x, w), self.dropouti, self.training)
        new_hidden = []
        for l, rnn in enumerate(self.rnns):
            raw, h = rnn(y, hidden[l])
            new_hidden.append(h)
            y = locked_dropout(raw, self.dropouth, self.training) if l < len(self.rnns) - 1 else raw
        out = locked_dropout(raw, self.dropout, self.training)
        logp = F.log_softmax(self.decoder(out), dim=-1)
        self.reg = 0.0
        if self.training:
            self.reg = self.alpha * out.pow(2).mean() + self.beta * (raw[1:] - raw[:-1]).pow(2).mean()
        return logp.view(-1, self.ntoken), new_hidden

    def init_hidden(self, bsz):
        w = self.encoder.weight
        return [(w.new_zeros(1, bsz, h), w.new_zeros(1, bsz, h)) for h in self.sizes]
