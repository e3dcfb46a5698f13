-- pow (a tensor exponent, a number one and the ^ metamethod), maximum
-- (two tensors, broadcast, and a number), where over a comparison, the
-- comparisons as 0/1 factors (no gradient through them) and mean over a
-- dim, with keepdim, and over all; weighted by r and summed.  The driver's
-- U(-1, 1) values make ties and comparisons flipped by the step unlikely.
local a = param("a", {4, 3}, {uniform = 1})
local b = param("b", {4, 3}, {uniform = 1})
local c = param("c", {3}, {uniform = 1})
local r = param("r", {4, 3}, {uniform = 1})
local y = pow(a + 2, b) + a ^ 3 + 2 ^ b
        + maximum(a, b) + maximum(b, c) + maximum(a, 0.2)
        + where(gt(a, b), a * b, c) + where(le(b, 0), 1.5, a)
        + a * lt(b, c) + b * ge(a, 0) + c * eq(a, a) + a * ne(a, b)
        + mean(a * b, 0) + mean(a, 1, true)
output("loss", sum(y * r, {}) + mean(a * c) * 3)
