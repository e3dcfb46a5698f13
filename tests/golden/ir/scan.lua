-- A reverse scan with two sequence inputs, two carries and two outputs.
local x  = input("x", "f32", { seq(), batch(), 4 })
local m  = input("m", "f32", { seq(), batch(), 1 })
local h0 = state("h", { batch(), 4 })
local c0 = state("c", { batch(), 4 })
local w  = param("w", { 4, 4 }, { uniform = 0.5 })
local ys, fin = scan {
  xs = { x, m }, init = { h0, c0 }, reverse = true,
  body = function(x_t, m_t, h, c)
    local c2 = c + x_t * m_t
    local h2 = tanh(matmul(h, w) + c2)
    return { h2, c2 }, { h2, c2 }
  end,
}
output("y", ys[1] + ys[2])
output("h", fin[1])
output("c", fin[2])
