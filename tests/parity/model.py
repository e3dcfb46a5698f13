"""The word_language_model example's models, built from torch.nn modules:
the reference the parity tests compare lmc with.

Written for these tests (not copied from the example), with the example's
module name, class names, constructor arguments, attribute names and
state_dict, so that a model pickled from here unpickles as the example's and
tools/safetensors_to_torch.py --example can build from it:

  RNNModel(rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False)
      rnn_type RNN_TANH, RNN_RELU, LSTM or GRU; forward(input (T, B), hidden)
      -> (log-probabilities (T*B, ntoken), hidden)
  TransformerModel(ntoken, ninp, nhead, nhid, nlayers, dropout=0.5)
      an nn.Transformer (so its layers keep nn.Transformer's dropout 0.1 and
      its encoder has a final LayerNorm) used as an encoder with a causal
      mask; forward(input (T, B)) -> log-probabilities (T, B, ntoken)

Extra keyword arguments, for the tests only: inner_dropout (the Transformer
layers' dropout, 0.1 by default) and tie_weights for the Transformer.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ("LSTM", "GRU"):
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        elif rnn_type in ("RNN_TANH", "RNN_RELU"):
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=rnn_type[4:].lower(), dropout=dropout)
        else:
            raise ValueError(f"unknown rnn_type {rnn_type!r}")
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("when using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        w = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (w.new_zeros(self.nlayers, bsz, self.nhid), w.new_zeros(self.nlayers, bsz, self.nhid))
        return w.new_zeros(self.nlayers, bsz, self.nhid)


class PositionalEncoding(nn.Module):
    """pe[:, 0::2] = sin(position * div_term), pe[:, 1::2] = cos(...), added
    to (T, B, d) inputs, then dropout."""

    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=pe.dtype).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).to(pe.dtype) * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))

    def forward(self, x):
        return self.dropout(x + self.pe[:x.size(0), :])


class TransformerModel(nn.Transformer):
    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5, inner_dropout=0.1,
                 tie_weights=False):
        super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers,
                         dropout=inner_dropout)
        self.model_type = "Transformer"
        self.src_mask = None
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.ninp = ninp
        self.decoder = nn.Linear(ninp, ntoken)     # replaces nn.Transformer's decoder
        nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        if tie_weights:
            self.decoder.weight = self.input_emb.weight

    def forward(self, src, has_mask=True):
        mask = None
        if has_mask:
            n = len(src)
            mask = torch.log(torch.tril(torch.ones(n, n, dtype=self.input_emb.weight.dtype)))
        src = self.pos_encoder(self.input_emb(src) * math.sqrt(self.ninp))
        return F.log_softmax(self.decoder(self.encoder(src, mask=mask)), dim=-1)
