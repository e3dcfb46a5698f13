-- dropout: the backward redraws the forward's mask
local x = param("x", {5, 7}, {uniform = 1})
local r = param("r", {5, 7}, {uniform = 1})
output("loss", sum(dropout(tanh(x), 0.3) * r, {}))
