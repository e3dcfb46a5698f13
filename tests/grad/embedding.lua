-- embedding rows picked by tokens, some picked more than once
local p = params { ntoken = 7 }
local tokens = input("tokens", "i32", {seq(), batch()})
local w = param("w", {p.ntoken, 3}, {uniform = 1})
local r = param("r", {3}, {uniform = 1})
output("loss", sum(embedding(w, tokens) * r, {}))
