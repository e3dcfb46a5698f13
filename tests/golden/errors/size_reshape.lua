-- reshape of (65536, 65536) into one row: a dimension of 4294967296
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local a       = param("a", { 65536, 65536 }, "zeros")
local row     = reshape(a, { -1 })
local x       = nn.embedding("emb", tokens, 11, 8) + slice(row, 0, 0, 8)
local logp    = log_softmax(nn.linear("decoder", x, 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
