-- a shape error inside a scan body points at the body's line
local x  = input("x", "f32", { seq(), batch(), 8 })
local h0 = state("h", { batch(), 4 })
local ys, fin = scan {
  xs = { x }, init = { h0 },
  body = function(x_t, h)
    local h2 = tanh(x_t + h)
    return { h2 }, { h2 }
  end,
}
