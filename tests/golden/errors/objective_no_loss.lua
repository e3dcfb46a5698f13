-- an objective needs a loss, the number to log and evaluate
local w = param("w", { 3 }, "ones")
output("objective", sum(w * w, {}))
