-- a misspelt op
local x = input("x", "f32", { batch(), 8 })
local y = sigmod(x)
