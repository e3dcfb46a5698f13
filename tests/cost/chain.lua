-- tests/cost/chain.lua: a long chain of cheap nodes built in a Lua loop,
-- for the compile-cost tests of tests/suite_cost.sh: -D n=N makes about
-- 2N forward nodes (x + tanh(x), N times), and autodiff as many again.
local nn = require "nn"

kind "Transformer"
local p = params { ntoken = 11, emsize = 8, n = 1000 }

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local x       = nn.embedding("emb", tokens, p.ntoken, p.emsize)
for _ = 1, p.n do x = x + tanh(x) end
local logp    = log_softmax(nn.linear("decoder", x, p.emsize, p.ntoken))

output("logp", logp)
output("loss", nll_loss(logp, targets))
