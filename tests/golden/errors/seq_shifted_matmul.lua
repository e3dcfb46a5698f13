-- a (T-1, 2, 3) tensor reaches an op written for sizes c * T^k
local h = input("h", "f32", { seq(), 2, 3 })
local w = param("w", { 4, 3 }, "xavier")
local d = slice(h, 0, 1, seq() - 1) - slice(h, 0, 0, seq() - 1)
local y = matmul(d, w, { tb = true })
