-- softmax and log_softmax along the last dimension
local x = param("x", {3, 6}, {uniform = 2})
local r = param("r", {3, 6}, {uniform = 1})
output("loss", sum((softmax(x) + log_softmax(x)) * r, {}))
