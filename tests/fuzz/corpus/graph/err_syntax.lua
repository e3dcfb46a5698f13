-- a syntax error
local p = params { nhid = 200 }
local x = input("x", "f32", { batch(), p.nhid }
output("x", x)
