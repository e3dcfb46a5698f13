-- an output name with a quote
local x = input("tokens", "i32", { seq(), batch() })
output("y\"", x)
