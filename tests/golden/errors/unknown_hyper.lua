-- reading a hyper-parameter that was not declared
local p = params { nhid = 200 }
local x = input("x", "f32", { batch(), p.nhdi })
