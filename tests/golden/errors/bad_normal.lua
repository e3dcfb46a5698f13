-- { normal = std } needs a positive std, and holds no other key
local w = param("w", { 4, 4 }, { normal = 0 })
