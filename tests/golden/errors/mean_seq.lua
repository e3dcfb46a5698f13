-- the sequence dimension's length is known only at run time: mean over it is refused
local x = input("x", "f32", { seq(), batch(), 8 })
local y = mean(x, 0)
