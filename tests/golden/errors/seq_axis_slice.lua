-- two rows of the sequence dimension: there is one when T = 1
local x = input("x", "f32", { seq(), batch(), 4 })
local y = slice(x, 0, 0, 2)
