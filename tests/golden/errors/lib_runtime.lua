-- a Lua error inside the layer library: its own location, then a note at the call
local nn = require "nn"
local x = input("x", "f32", { seq(), batch(), 4 })
local y = nn.lstm("rnn", x, nil, 4, 4, 1, 0)
