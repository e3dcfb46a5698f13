-- tying the decoder to an encoder of another width (nn.linear's check,
-- reported at this file's line)
local nn = require "nn"
local tokens = input("tokens", "i32", { seq(), batch() })
local emb = nn.embedding("encoder", tokens, 100, 16)
local h = emb * 2
local logits = nn.linear("decoder", h, 32, 100, { tie = "encoder.weight" })
