-- matmul of (T, B, 200) by a (300, 10) weight: inner dimensions differ
local x = input("x", "f32", { seq(), batch(), 200 })
local w = param("w", { 300, 10 }, "xavier")
local y = matmul(x, w)
