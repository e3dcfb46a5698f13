-- Token ids are i32: a float "tokens" input is reported at its line.
kind "LSTM"
local tokens = input("tokens", "f32", { seq(), batch() })
output("loss", sum(tokens, {}))
