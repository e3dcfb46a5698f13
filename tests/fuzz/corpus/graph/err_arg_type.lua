-- a number where a tensor is needed
local x = input("x", "f32", { batch(), 8 })
local y = matmul(x, 3)
