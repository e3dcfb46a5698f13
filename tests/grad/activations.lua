-- gelu (exact), gelu_tanh, silu and erf, each of its own parameter over
-- [-3, 3) (the driver fills parameters with U(-1, 1)), weighted by r and summed
local shape = {3, 5}
local r = param("r", shape, {uniform = 1})
local g = param("g", shape, {uniform = 1})
local t = param("t", shape, {uniform = 1})
local s = param("s", shape, {uniform = 1})
local e = param("e", shape, {uniform = 1})
local y = gelu(3 * g) + gelu_tanh(3 * t) + silu(3 * s) + erf(3 * e)
output("loss", sum(y * r, {}))
