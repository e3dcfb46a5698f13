-- slicing the sequence dimension is not supported
local x = input("x", "f32", { seq(), batch(), 4 })
local y = slice(x, 0, 0, 2)
