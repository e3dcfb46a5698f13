-- an elementwise op given more arguments than it has inputs
local x = input("x", "f32", { batch(), 8 })
local y = tanh(x, 1)
