-- a + b broadcast to (2147483647, 2147483647, 1): more bytes than 64 bits
-- count, an error at the line of the addition
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local a       = param("a", { 2147483647, 1, 1 }, "zeros")
local b       = param("b", { 1, 2147483647, 1 }, "zeros")
local big     = a + b
local x       = nn.embedding("emb", tokens, 11, 8) + slice(slice(big, 0, 0, 1), 1, 0, 1)
local logp    = log_softmax(nn.linear("decoder", x, 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
