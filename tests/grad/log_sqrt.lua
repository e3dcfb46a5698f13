-- log and sqrt of a positive argument
local x = param("x", {4, 3}, {uniform = 1})
local r = param("r", {4, 3}, {uniform = 1})
local pos = x * x + 0.5
output("loss", sum((log(pos) + sqrt(pos)) * r, {}))
