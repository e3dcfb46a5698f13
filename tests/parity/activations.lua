-- gelu (tanh form), silu and erf, for tests/parity/activations.py: each of
-- its own parameter over [-3, 3] (tests/emit/driver.c fills parameters
-- with 0.5 sin(...)), its value a state output, its sum weighted by r in
-- the loss
local n = 64
local r = param("r", {n}, {uniform = 1})
local ops = { gelu = gelu, silu = silu, erf = erf }
local loss = nil
for _, name in ipairs { "gelu", "silu", "erf" } do
  local y = ops[name](6 * param("x_" .. name, {n}, {uniform = 1}))
  state(name, {n})
  output(name, y)
  local l = sum(y * r, {})
  loss = loss and loss + l or l
end
output("loss", loss)
