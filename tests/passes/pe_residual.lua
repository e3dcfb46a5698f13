-- tests/passes/pe_residual.lua: the Transformer's patterns in a few lines,
-- for the golden dumps of tests/check_passes.c: a sinusoidal positional
-- encoding added to the embedding (then dropout: dropout(a + b)) and a
-- residual connection around a linear layer (a + dropout(b)).
local nn = require "nn"

kind "Transformer"
local p = params { ntoken = 11, emsize = 8, dropout = 0.2 }

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local pe      = nn.positional_encoding(p.emsize, 5000)                          -- (5000, emsize)
local x       = dropout(nn.embedding("emb", tokens, p.ntoken, p.emsize)
                        + reshape(slice(pe, 0, 0, seq()), { seq(), 1, p.emsize }), p.dropout)
local h       = x + dropout(tanh(nn.linear("ff", x, p.emsize, p.emsize)), p.dropout)
local logp    = log_softmax(nn.linear("decoder", h, p.emsize, p.ntoken))

output("logp", logp)
output("loss", nll_loss(logp, targets))
