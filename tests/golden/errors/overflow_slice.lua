-- a slice of 100000000 * T rows at bptt = 35: 3500000000 rows, past
-- INT_MAX (was computed in an int and wrapped), out of range for the table
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local table   = param("table", { 1000, 1, 8 }, "zeros")
local rows    = slice(table, 0, 0, seq() * 100000000)
local x       = nn.embedding("emb", tokens, 11, 8) + slice(rows, 0, 0, 1)
local logp    = log_softmax(nn.linear("decoder", x, 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
