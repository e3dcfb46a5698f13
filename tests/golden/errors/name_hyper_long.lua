-- a hyper-parameter name of 100 KB
local p = params { [string.rep("n", 100000)] = 1 }
