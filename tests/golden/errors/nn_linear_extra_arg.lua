-- nn.linear takes one options table; a bias init given after it is refused
local nn = require "nn"
local x = input("x", "f32", { seq(), batch(), 4 })
local y = nn.linear("proj", x, 4, 8, { init = "xavier" }, "zeros")
