-- the body returns one next state for two initial states
local x  = input("x", "f32", { seq(), batch(), 4 })
local h0 = state("h", { batch(), 4 })
local c0 = state("c", { batch(), 4 })
local ys, fin = scan {
  xs = { x }, init = { h0, c0 },
  body = function(x_t, h, c)
    local h2 = tanh(x_t + h)
    return { h2 }, { h2 }
  end,
}
