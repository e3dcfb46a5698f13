-- sum, broadcast, reshape, transpose, slice, concat
local a = param("a", {2, 3, 4}, {uniform = 1})
local b = param("b", {2, 1, 4}, {uniform = 1})
local r = param("r", {4, 6, 2}, {uniform = 1})
local c = concat(a, b + sum(a, {2, 1, 4}), 1)         -- (2, 4, 4)
local t = transpose(reshape(c, {2, 4, 4}), {2, 1, 0}) -- (4, 4, 2)
local s = concat(slice(t, 1, 1, 3), slice(t, 1, 0, 3), 1)   -- (4, 6, 2)
output("loss", sum(s * r, {}) + sum(broadcast(b, {2, 3, 4}) * a, {}))
