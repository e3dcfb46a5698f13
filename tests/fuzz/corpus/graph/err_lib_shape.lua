-- a shape mismatch inside the layer library is reported at the call
local nn = require "nn"
local x = input("x", "f32", { seq(), batch(), 16 })
local y = nn.linear("proj", x, 32, 8)
