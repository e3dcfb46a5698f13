-- the next state does not have the initial state's shape
local x  = input("x", "f32", { seq(), batch(), 8 })
local h0 = state("h", { batch(), 4 })
local w  = param("w", { 8, 8 }, "xavier")
local ys, fin = scan {
  xs = { x }, init = { h0 },
  body = function(x_t, h)
    local h2 = tanh(matmul(x_t, w))
    return { h2 }, { h2 }
  end,
}
