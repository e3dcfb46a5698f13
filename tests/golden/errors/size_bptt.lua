-- -D bptt=4294967297 was truncated to an int (1) and compiled; now refused
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local logp    = log_softmax(nn.linear("decoder", nn.embedding("emb", tokens, 11, 8), 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
