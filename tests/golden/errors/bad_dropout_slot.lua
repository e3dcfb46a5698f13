-- a dropout slot must be a declared numeric hyper-parameter
local p = params { dropout = 0.5 }
local x = input("x", "f32", { batch(), 4 })
local y = dropout(x, 0.1, "dropouti")
