-- add, sub, mul, div with broadcasting (bias over rows, a column over columns)
local a = param("a", {4, 3}, {uniform = 1})
local b = param("b", {3}, {uniform = 1})
local c = param("c", {4, 1}, {uniform = 1})
local r = param("r", {4, 3}, {uniform = 1})
local y = (a + b) * c - a / (c * c + 1) + b / 3
output("loss", sum(y * r, {}))
