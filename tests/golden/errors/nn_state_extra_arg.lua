-- an unnamed layer counts too, and the error points at the graph line
-- (here inside the user's own helper), not into graphs/lib/nn.lua
local nn = require "nn"
local function lstm_state(n)
  local s = nn.lstm_state("hidden", n, 8, batch())
  return s
end
local s = lstm_state(2)
