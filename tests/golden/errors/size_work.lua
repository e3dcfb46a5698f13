-- each value (T, 20, 15339168) is 40 GiB, under the limit for one tensor,
-- but the embedding and its tanh are live together for the backward pass:
-- the work memory would exceed 64 GiB, an error at a line that made them
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local x       = nn.embedding("emb", tokens, 2, 15339168)
local h       = tanh(x) * x
local logp    = log_softmax(nn.linear("decoder", h, 15339168, 2))
output("logp", logp)
output("loss", nll_loss(logp, targets))
