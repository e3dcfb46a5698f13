-- six parameters of 12 GiB each: more than the 64 GiB all parameters may
-- have, an error at the line of the sixth
local nn = require "nn"
kind "Transformer"
local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local x       = nn.embedding("emb", tokens, 11, 8)
for i = 1, 6 do
  x = x + slice(param("p" .. i, { 402653184, 8 }, "zeros"), 0, 0, 1)
end
local logp    = log_softmax(nn.linear("decoder", x, 8, 11))
output("logp", logp)
output("loss", nll_loss(logp, targets))
