-- a misspelled init option is named
local w = param("w", { 4, 4 }, { normal = 0.02, mean = 1 })
