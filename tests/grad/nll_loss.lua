-- the language-model loss: mean NLL of log_softmax over (T, B)
local p = params { ntoken = 9, bptt = 4, batch_size = 3 }
local tokens = input("tokens", "i32", {seq(), batch()})
local targets = input("targets", "i32", {seq(), batch()})
local w = param("w", {p.ntoken, p.ntoken}, {uniform = 2})
output("loss", nll_loss(log_softmax(embedding(w, tokens)), targets))
