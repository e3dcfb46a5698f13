-- concat of two rows of 1200000000 each: a dimension over INT_MAX
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local a       = param("a", { 1, 1200000000 }, "zeros")
local both    = concat(a, a, 1)
local x       = nn.embedding("emb", tokens, 11, 8) + slice(both, 1, 0, 8)
local logp    = log_softmax(nn.linear("decoder", x, 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
