local p = params { a = 1, b = "x", c = 2.5 }
local q = params { b = "y" }
