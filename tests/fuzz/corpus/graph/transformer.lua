-- graphs/transformer.lua: the word_language_model example's TransformerModel
-- (an nn.Transformer whose encoder is used alone, with a causal mask).
--   tokens, targets (T, B) -> logp (T, B, ntoken), loss; no hidden state:
--   every window attends over itself only, as in main.py.
--
-- Two dropout slots: `dropout` (the trainer's --dropout, the example's
-- --dropout) after the positional encoding, and `dropout_inner` inside the
-- encoder layers, 0.1 as nn.Transformer's default (the example does not pass
-- its dropout on to nn.Transformer).
local nn = require "nn"

kind "Transformer"
local p = params { ntoken = 33278, emsize = 200, nhid = 200, nlayers = 2, nhead = 2,
                   dropout = 0.2, dropout_inner = 0.1, tied = false }
if p.emsize % p.nhead ~= 0 then
  error(("emsize (%d) must be divisible by nhead (%d)"):format(p.emsize, p.nhead))
end

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })

local pe      = nn.positional_encoding(p.emsize, 5000)                   -- (5000, emsize)
local emb     = nn.embedding("input_emb", tokens, p.ntoken, p.emsize) * math.sqrt(p.emsize)
local x       = dropout(emb + reshape(slice(pe, 0, 0, seq()), { seq(), 1, p.emsize }), p.dropout)
local out     = nn.transformer_encoder("encoder", x, p.emsize, p.nhead, p.nhid, p.nlayers,
                                       triu_mask(), p.dropout_inner, "dropout_inner")
local logits  = nn.linear("decoder", out, p.emsize, p.ntoken,
                          { tie = p.tied and "input_emb.weight" })
local logp    = log_softmax(logits)

output("logp", logp)
output("loss", nll_loss(logp, targets))
