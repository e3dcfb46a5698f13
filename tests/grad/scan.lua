-- a tanh RNN over time: carry, per-step inputs, captured weights, final state
local p = params { bptt = 5, batch_size = 2 }
local x = param("x", {p.bptt, 2, 3}, {uniform = 1})
local h0 = param("h0", {2, 3}, {uniform = 1})
local w = param("w", {3, 3}, {uniform = 1})
local b = param("b", {3}, {uniform = 1})
local r = param("r", {3}, {uniform = 1})
local xs = slice(x, 0, 0, seq())
local ys, finals = scan { xs = {xs}, init = {h0},
  body = function(xt, h)
    local hn = tanh(xt + matmul(h, w, {tb = true}) + b)
    return {hn * hn}, {hn}
  end }
output("loss", sum(ys[1] * r, {}) + sum(finals[1], {}))
