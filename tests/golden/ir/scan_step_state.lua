-- issue 18: a scan body returning its step input unchanged as a next state
-- (and its carry unchanged); each next value is copied in the body
local p = params { bptt = 5, batch_size = 2 }
local x = param("x", {p.bptt, 2, 3}, {uniform = 1})
local h0 = param("h0", {2, 3}, {uniform = 1})
local ys, finals = scan { xs = {slice(x, 0, 0, seq())}, init = {h0, h0},
  body = function(xt, h, c) return {h * c}, {xt, c} end }
output("loss", sum(ys[1], {}) + sum(finals[1] * finals[2], {}))
