-- neg, exp, sin, cos, tanh, sigmoid, relu: each weighted by r and summed
local x = param("x", {3, 5}, {uniform = 1})
local r = param("r", {3, 5}, {uniform = 1})
local y = neg(x) + exp(x) + sin(x) + cos(x) + tanh(x) + sigmoid(x) + relu(x)
output("loss", sum(y * r, {}))
