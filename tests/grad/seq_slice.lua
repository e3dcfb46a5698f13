-- slices of the sequence dimension of a scan's output: h[1:] - h[:-1]
-- (T - 1 rows) and h[:1]; a mean over T - 1 rows by their run-time count;
-- a static dimension sliced to T - 1 rows
local p = params { bptt = 5, batch_size = 2 }
local x = param("x", {p.bptt, 2, 3}, {uniform = 1})
local h0 = param("h0", {2, 3}, {uniform = 1})
local w = param("w", {3, 3}, {uniform = 1})
local r = param("r", {3}, {uniform = 1})
local ys = scan { xs = slice(x, 0, 0, seq()), init = h0,
  body = function(xt, h)
    local hn = tanh(xt + matmul(h, w, {tb = true}))
    return {hn}, {hn}
  end }
local h = ys[1]                                              -- (T, 2, 3)
local d = slice(h, 0, 1, seq() - 1) - slice(h, 0, 0, seq() - 1)   -- (T-1, 2, 3)
local n = sum(broadcast(const(1), {seq() - 1}), {})         -- T - 1
local tar = sum(d * d * r, {}) / (n * 6)
local first = slice(h, 0, 0, 1) * slice(x, 0, 1, 1)          -- (1, 2, 3)
local xd = sum(slice(x, 0, 1, seq() - 1) * d, {2, 3})      -- (2, 3): a static dim sliced to T - 1
output("loss", tar + sum(first, {}) + sum(xd * xd, {}))
