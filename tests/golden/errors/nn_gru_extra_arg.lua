-- nn.gru copied from an nn.rnn call keeps its nonlinearity: refused at the
-- call, rather than "tanh" read as the dropout
local nn = require "nn"
local x = input("x", "f32", { seq(), batch(), 4 })
local h0 = nn.rnn_state("hidden", 1, 4)
local y, h = nn.gru("rnn", x, h0, 4, 4, 1, "tanh", 0.2)
