-- ^ is not defined on tensors
local x = input("x", "f32", { batch(), 4 })
local y = x ^ 2
