-- graphs/awd_lstm.lua: AWD-LSTM (Merity, Keskar and Socher 2017, "Regularizing
-- and Optimizing LSTM Language Models"; salesforce/awd-lstm-lm's RNNModel
-- with --model LSTM), names as its state_dict:
--   encoder.weight (ntoken, emsize)                       U(-0.1, 0.1)
--   rnns.{l}.module.weight_ih_l0, weight_hh_l0_raw, bias_ih_l0, bias_hh_l0
--                                                         torch.nn.LSTM's init
--   decoder.weight (tied: encoder.weight), decoder.bias   U(-0.1, 0.1), zeros
-- nlayers one-layer LSTMs; the last has emsize units when tied (as the
-- paper), nhid otherwise.  Regularisation, each dropout its own slot:
--   dropoute  embedding dropout: whole rows of encoder.weight, scaled
--   dropouti  locked (variational) dropout on the embedding output
--   dropouth  locked dropout between the layers
--   dropout   locked dropout on the last layer's output
--   wdrop     weight drop (DropConnect) on each weight_hh_l0_raw
--   alpha     AR:  alpha * mean(dropped output^2)
--   beta      TAR: beta * mean((h[1:] - h[:-1])^2), h the last layer's raw output
-- A locked mask is one (1, B, H) draw for every step of the window.  Each
-- dropout is a slot the trainer sets with --dropout NAME=P.  "loss" is the
-- raw cross-entropy, which training logs and evaluation reports; training
-- minimises "objective", the loss plus AR and TAR.  TAR needs T >= 2
-- (T - 1 steps; at T = 1 it is 0/0).  Defaults are sized for a small CPU:
-- emsize 200, nhid 600; the paper's are -D emsize=400 -D nhid=1150
-- -D batch_size=80 -D bptt=70.
--   tokens, targets (T, B) -> logp (T, B, ntoken), loss, objective
--   state hidden.{l}.h, hidden.{l}.c (B, H_l)
local nn = require "nn"

kind "AWD_LSTM"
local p = params { ntoken = 33278, emsize = 200, nhid = 600, nlayers = 3, tied = true,
                   dropout = 0.4, dropouth = 0.3, dropouti = 0.65, dropoute = 0.1, wdrop = 0.5,
                   alpha = 2.0, beta = 1.0 }
if p.nlayers < 1 then
  error(("nlayers must be at least 1, got %d"):format(p.nlayers))
end

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })

-- x (T, B, H) times one (1, B, H) dropout mask shared by every step
local function locked_dropout(x, h, prob, slot)
  if not training() then return x end
  return x * dropout(broadcast(const(1), { 1, batch(), h }), prob, slot)
end

-- mean of x * x over all its elements, n of them (a run-time count)
local function mean_square(x, n)
  return sum(x * x, {}) / n
end

-- encoder.weight with whole rows dropped (embedded_dropout)
local function embedded_dropout(w)
  if not training() then return w end
  return w * dropout(broadcast(const(1), { p.ntoken, 1 }), p.dropoute, "dropoute")
end

local w_emb = param("encoder.weight", { p.ntoken, p.emsize }, { uniform = 0.1 })
local x = scope("encoder", function() return embedding(embedded_dropout(w_emb), tokens) end)
x = locked_dropout(x, p.emsize, p.dropouti, "dropouti")

local raw
for l = 0, p.nlayers - 1 do
  local nin = l == 0 and p.emsize or p.nhid
  local h = (l == p.nlayers - 1 and p.tied) and p.emsize or p.nhid
  local name = ("rnns.%d"):format(l)
  raw = scope(name, function()
    local init = { uniform = 1 / math.sqrt(h) }
    local function w(what, shape) return param(name .. ".module." .. what, shape, init) end
    local w_ih, w_hh = w("weight_ih_l0", { 4 * h, nin }), w("weight_hh_l0_raw", { 4 * h, h })
    local b_ih, b_hh = w("bias_ih_l0", { 4 * h }), w("bias_hh_l0", { 4 * h })
    local h0 = state(("hidden.%d.h"):format(l), { batch(), h })
    local c0 = state(("hidden.%d.c"):format(l), { batch(), h })
    local y, hn, cn = nn.lstm_layer(x, h0, c0, w_ih, dropout(w_hh, p.wdrop, "wdrop"), b_ih, b_hh, h)
    output(("hidden.%d.h"):format(l), hn)
    output(("hidden.%d.c"):format(l), cn)
    return y
  end)
  x = l < p.nlayers - 1 and locked_dropout(raw, h, p.dropouth, "dropouth") or raw
end
local hlast = p.tied and p.emsize or p.nhid
local out = locked_dropout(raw, hlast, p.dropout, "dropout")

local logits = nn.linear("decoder", out, hlast, p.ntoken, { tie = p.tied and w_emb })
local logp = log_softmax(logits)
local loss = nll_loss(logp, targets)
local ones = function(n) return sum(broadcast(const(1), { n }), {}) end
local B = batch()
local ar = mean_square(out, ones(seq()) * (B * hlast))
local tar = mean_square(slice(raw, 0, 1, seq() - 1) - slice(raw, 0, 0, seq() - 1),
                        ones(seq() - 1) * (B * hlast))

output("logp", logp)
output("loss", loss)
output("objective", loss + p.alpha * ar + p.beta * tar)
