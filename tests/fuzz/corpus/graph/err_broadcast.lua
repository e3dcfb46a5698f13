-- (B, 200) + (B, 100) do not broadcast
local a = input("a", "f32", { batch(), 200 })
local b = input("b", "f32", { batch(), 100 })
local c = a + b
