-- The emitted C feeds a program tokens, targets and state: any other input
-- is reported at its line, not as an internal error of the emitter.
kind "LSTM"
local x = input("features", "i32", { seq(), batch() })
local w = param("w", { 4, 3 }, { uniform = 1 })
output("loss", sum(w, {}))
