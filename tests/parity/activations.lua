-- The elementwise ops no model of graphs/ uses, for
-- tests/parity/activations.py: gelu (exact), gelu_tanh, silu, erf of their
-- own parameter x_NAME over [-3, 3], and pow, maximum (with ties),
-- where and mean of two, x_NAME and y_NAME (tests/emit/driver.c fills
-- parameters with 0.5 sin(...)); each value a state output, its sum
-- weighted by r in the loss
local n = 64
local r = param("r", {n}, {uniform = 1})
local unary = { gelu = gelu, gelu_tanh = gelu_tanh, silu = silu, erf = erf }
local binary = {
  pow = function(x, y) return pow(x + 2, 3 * y) end,
  maximum = function(x, y) return maximum(6 * x, 6 * y) end,
  maximum_tie = function(x, y) return maximum(6 * x, 6 * x) + maximum(y, 0.25) end,
  where = function(x, y) return where(gt(x, y), 6 * x, 6 * y) end,
  mean = function(x, y) return mean(reshape(6 * x * y, {8, 8}), 1) end,
}
local loss = nil
local function out(name, y)
  state(name, y.shape)
  output(name, y)
  local l = sum(y * slice(r, 0, 0, y.shape[1]), {})
  loss = loss and loss + l or l
end
for _, name in ipairs { "gelu", "gelu_tanh", "silu", "erf" } do
  out(name, unary[name](6 * param("x_" .. name, {n}, {uniform = 1})))
end
for _, name in ipairs { "pow", "maximum", "maximum_tie", "where", "mean" } do
  out(name, binary[name](param("x_" .. name, {n}, {uniform = 1}), param("y_" .. name, {n}, {uniform = 1})))
end
output("loss", loss)
