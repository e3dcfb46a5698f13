-- a decoder whose output (T, B, 2147483647) needs terabytes: an error at
-- the matmul's line, not a wrapped size in the emitted C
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local x       = nn.embedding("emb", tokens, 11, 4)
local logits  = matmul(x, param("w", { 4, 2147483647 }, "zeros"))
local logp    = log_softmax(logits)
output("logp", logp)
output("loss", nll_loss(logp, targets))
