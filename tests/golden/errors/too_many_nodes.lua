-- a loop that never stops building nodes stops at the node limit
local x = input("x", "f32", { seq(), batch(), 4 })
while true do
  x = tanh(x)
end
