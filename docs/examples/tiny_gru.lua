-- docs/examples/tiny_gru.lua: a one-layer GRU language model written from
-- scratch, the graph that docs/writing-a-model.md builds, step 1.
--   tokens, targets (T, B) -> logp (T, B, ntoken), loss; hidden (B, nhid)
local nn = require "nn"

kind "TinyGRU"
local p = params { ntoken = 33278, emsize = 32, nhid = 32, dropout = 0.2 }
local H = p.nhid

local tokens  = input("tokens", "i32", { seq(), batch() })       -- (T, B)
local targets = input("targets", "i32", { seq(), batch() })
local h0      = state("hidden", { batch(), H })                  -- (B, H), kept across batches

local emb = dropout(nn.embedding("encoder", tokens, p.ntoken, p.emsize), p.dropout)

-- torch.nn.GRU's parameters (gates r, z, n in that order), U(-1/sqrt(H), 1/sqrt(H))
local init = { uniform = 1 / math.sqrt(H) }
local w_ih = param("rnn.weight_ih_l0", { 3 * H, p.emsize }, init)
local w_hh = param("rnn.weight_hh_l0", { 3 * H, H }, init)
local b_ih = param("rnn.bias_ih_l0", { 3 * H }, init)
local b_hh = param("rnn.bias_hh_l0", { 3 * H }, init)

local xw = matmul(emb, w_ih, { tb = true }) + b_ih               -- (T, B, 3H), every step at once
local ys, finals = scan {
  xs = { xw }, init = { h0 },
  body = function(xw_t, h)                                        -- (B, 3H), (B, H)
    local hw = matmul(h, w_hh, { tb = true }) + b_hh
    local r = sigmoid(slice(xw_t, 1, 0, H) + slice(hw, 1, 0, H))
    local z = sigmoid(slice(xw_t, 1, H, H) + slice(hw, 1, H, H))
    local n = tanh(slice(xw_t, 1, 2 * H, H) + r * slice(hw, 1, 2 * H, H))
    local h_next = (1 - z) * n + z * h
    return { h_next }, { h_next }
  end,
}

local logits = nn.linear("decoder", dropout(ys[1], p.dropout), H, p.ntoken)
local logp   = log_softmax(logits)
output("logp", logp)
output("loss", nll_loss(logp, targets))
output("hidden", finals[1])
