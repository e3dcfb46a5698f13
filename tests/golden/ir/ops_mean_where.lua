-- x ^ 2 is pow; mean over a dim is a sum and a division (keepdim false: a
-- reshape after it); where(c, a, b) is keep_if(c, a) + keep_unless(c, b);
-- gelu is the exact form, gelu_tanh the tanh one
local x = param("x", { 4, 6 }, { normal = 0.02 })
local y = where(gt(x, 0), x ^ 2, -1) + gelu(x) + gelu_tanh(x)
output("loss", mean(mean(y, 1)))
