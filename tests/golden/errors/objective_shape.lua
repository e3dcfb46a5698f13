-- the objective is a scalar
local w = param("w", { 3 }, "ones")
output("loss", sum(w, {}))
output("objective", w * w)
