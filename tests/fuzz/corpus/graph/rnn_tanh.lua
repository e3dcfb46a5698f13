-- graphs/rnn_tanh.lua: the word_language_model example's RNNModel with
-- nn.RNN(nonlinearity='tanh').
--   tokens, targets (T, B) -> logp (T, B, ntoken), loss; hidden (nlayers, B, nhid)
local nn = require "nn"

kind "RNN_TANH"
local p = params { ntoken = 33278, emsize = 200, nhid = 200, nlayers = 2,
                   dropout = 0.2, tied = false }
if p.tied and p.nhid ~= p.emsize then
  error(("tied = true needs nhid == emsize (nhid = %d, emsize = %d)"):format(p.nhid, p.emsize))
end

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })
local hidden  = nn.rnn_state("hidden", p.nlayers, p.nhid)

local emb     = dropout(nn.embedding("encoder", tokens, p.ntoken, p.emsize), p.dropout)
local out, h  = nn.rnn("rnn", emb, hidden, p.emsize, p.nhid, p.nlayers, "tanh", p.dropout)
local logits  = nn.linear("decoder", dropout(out, p.dropout), p.nhid, p.ntoken,
                          { tie = p.tied and "encoder.weight" })
local logp    = log_softmax(logits)

output("logp", logp)
output("loss", nll_loss(logp, targets))
output("hidden", h)
