-- h[2:] has T - 2 rows: negative when T = 1
local h = input("h", "f32", { seq(), 2, 3 })
local d = slice(h, 0, 2, seq() - 1)
