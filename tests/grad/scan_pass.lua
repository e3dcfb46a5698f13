-- a scan body that returns values it does not compute: the step input, a
-- later and an earlier carry, the carry itself, its initial state and a
-- parameter as next states, a parameter and the step input as per-step
-- outputs (lmc copies each into the body where the IR needs it)
local p = params { bptt = 5, batch_size = 2 }
local x = param("x", {p.bptt, 2, 3}, {uniform = 1})
local init = {}
for i, name in ipairs { "a0", "b0", "c0", "d0", "e0", "f0" } do
  init[i] = param(name, {2, 3}, {uniform = 1})
end
local w = param("w", {2, 3}, {uniform = 1})
local r = param("r", {5, 2, 3}, {uniform = 1})
local ys, finals = scan { xs = {slice(x, 0, 0, seq())}, init = init,
  body = function(xt, a, b, c, d, e, f)
    return {a * b + c * d * e * f, w, xt}, {xt, c, b, init[4], e, w}
  end }
local y = ys[1] * sin(ys[2]) + ys[3] * ys[3]
local fin = finals[1] * finals[2] + finals[3] * finals[4] + finals[5] * finals[6]
output("loss", sum(y * slice(r, 0, 0, seq()), {}) + sum(fin, {}))
