-- a tensor method counts its tensor: x:normalize(1e-5, 3) is three arguments
local x = input("x", "f32", { batch(), 8 })
local y = x:normalize(1e-5, 3)
