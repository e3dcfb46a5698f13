-- a next state computed in an earlier scan's body
local x = param("x", {35, 2, 3}, {uniform = 1})
local h0 = param("h0", {2, 3}, {uniform = 1})
local xs = slice(x, 0, 0, seq())
local inner
scan { xs = xs, init = h0, body = function(xt, h) inner = xt * h; return {}, {inner} end }
scan { xs = xs, init = h0, body = function(xt, h) return {}, {inner} end }
