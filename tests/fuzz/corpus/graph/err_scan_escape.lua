-- a value from inside a scan body used after the scan
local x  = input("x", "f32", { seq(), batch(), 4 })
local h0 = state("h", { batch(), 4 })
local inner
local ys, fin = scan {
  xs = { x }, init = { h0 },
  body = function(x_t, h)
    inner = tanh(x_t + h)
    return { inner }, { inner }
  end,
}
local y = inner * 2
