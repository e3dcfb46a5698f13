-- an init table is one of { uniform = a } and { normal = std }
local w = param("w", { 4, 4 }, { normal = 0.02, uniform = 0.1 })
