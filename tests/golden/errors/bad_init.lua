-- an unknown initialiser
local w = param("w", { 10, 10 }, "gaussian")
