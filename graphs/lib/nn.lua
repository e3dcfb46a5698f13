-- graphs/lib/nn.lua: torch.nn layers built from lmc ops.
--
-- Parameter names, shapes and initialisers follow PyTorch: the state_dict of
-- the matching torch.nn module (rnn.weight_ih_l0, ...), gate order included
-- (LSTM i,f,g,o; GRU r,z,n), and the word_language_model example's
-- init_weights for its encoder and decoder.  Shapes in comments: T is the
-- run-time sequence length, B the batch.
--
-- Recurrent layers compute the input projection x W_ih^T + b_ih of every
-- step outside the scan as one matmul over (T, B, nin); only h W_hh^T + b_hh
-- is left in the loop body.  Their state is (nlayers, B, nhid); layer l's
-- slice is the scan's initial state and the final states are concatenated
-- back into (nlayers, B, nhid).
--
-- Mistakes are reported with error(msg, 0): lmc then points at the graph
-- file line that called the layer.
local nn = {}

local function fmt_shape(t)
  local dims = {}
  for i, d in ipairs(t.shape) do dims[i] = tostring(d) end
  return "(" .. table.concat(dims, ", ") .. ")"
end

-- embedding(name, idx (...), ntoken, emsize) -> (..., emsize)
-- <name>.weight (ntoken, emsize) ~ U(-0.1, 0.1), as RNNModel.init_weights.
function nn.embedding(name, idx, ntoken, emsize)
  local w = param(name .. ".weight", { ntoken, emsize }, { uniform = 0.1 })
  return embedding(w, idx)
end

-- linear(name, x (..., nin), nin, nout [, opts]) -> (..., nout)
-- <name>.weight (nout, nin), <name>.bias (nout).  opts:
--   tie = "encoder.weight" (or a tensor): use that weight; <name>.weight
--         becomes an alias of it (both names in checkpoints, one storage)
--   init = weight init (default { uniform = 0.1 }, RNNModel's decoder)
--   bias_init = bias init (default "zeros"); bias = false: no bias
function nn.linear(name, x, nin, nout, opts)
  opts = opts or {}
  local w
  if opts.tie then
    w = opts.tie
    if type(w) == "string" then
      w = find_param(opts.tie)
      if not w then
        error(("%s: cannot tie to '%s': no such parameter"):format(name, opts.tie), 0)
      end
    end
    local s = w.shape
    if s[1] ~= nout or s[2] ~= nin then
      error(("%s: the tied weight is %s but the layer needs (%d, %d)"):format(
        name, fmt_shape(w), nout, nin), 0)
    end
    alias(name .. ".weight", w)
  else
    w = param(name .. ".weight", { nout, nin }, opts.init or { uniform = 0.1 })
  end
  local y = matmul(x, w, { tb = true })
  if opts.bias ~= false then
    y = y + param(name .. ".bias", { nout }, opts.bias_init or "zeros")
  end
  return y
end

-- dropout(x, p [, slot]): the identity unless training; slot names the
-- hyper-parameter holding the run-time probability (default "dropout").
function nn.dropout(x, p, slot)
  return dropout(x, p, slot)
end

-- layer_norm(name, x (..., d), d [, eps]) as torch.nn.LayerNorm:
-- <name>.weight ones, <name>.bias zeros.
function nn.layer_norm(name, x, d, eps)
  local w = param(name .. ".weight", { d }, "ones")
  local b = param(name .. ".bias", { d }, "zeros")
  return normalize(x, eps or 1e-5) * w + b
end

-- The state of a recurrent layer: (nlayers, B, nhid), carried across batches.
function nn.rnn_state(name, nlayers, nhid)
  return state(name, { nlayers, batch(), nhid })
end

-- LSTM state: { h = <name>.h, c = <name>.c }, each (nlayers, B, nhid).
function nn.lstm_state(name, nlayers, nhid)
  return { h = state(name .. ".h", { nlayers, batch(), nhid }),
           c = state(name .. ".c", { nlayers, batch(), nhid }) }
end

-- Layer l of a (nlayers, B, nhid) state, as (B, nhid).
local function layer(s, l)
  local sh = s.shape
  return reshape(slice(s, 0, l, 1), { sh[2], sh[3] })
end

-- (B, nhid) states of every layer back into (nlayers, B, nhid).
local function stack_layers(list)
  for i, s in ipairs(list) do
    local sh = s.shape
    list[i] = reshape(s, { 1, sh[1], sh[2] })
  end
  return concat(list, 0)
end

-- Parameters of layer l of a torch.nn.RNN/LSTM/GRU with ngates gates, in
-- state_dict order, each ~ U(-1/sqrt(nhid), 1/sqrt(nhid)).
local function rnn_params(name, l, nin, nhid, ngates)
  local init = { uniform = 1 / math.sqrt(nhid) }
  local function p(what, shape)
    return param(("%s.%s_l%d"):format(name, what, l), shape, init)
  end
  return p("weight_ih", { ngates * nhid, nin }), p("weight_hh", { ngates * nhid, nhid }),
         p("bias_ih", { ngates * nhid }), p("bias_hh", { ngates * nhid })
end

-- Runs `cell` over the nlayers layers of `name`, layer l in scope <name>.l<l>:
-- cell(l, x, nin, states of layer l) returns its output (T, B, nhid) and final
-- states.  Dropout between layers, not after the last, as torch.nn.RNN does.
local function stacked(name, x, states, nin, nhid, nlayers, p, cell)
  local finals = {}
  for k = 1, #states do finals[k] = {} end
  for l = 0, nlayers - 1 do
    local s0 = {}
    for k, s in ipairs(states) do s0[k] = layer(s, l) end
    local y, fin = scope(("%s.l%d"):format(name, l), cell, l, x, l == 0 and nin or nhid, s0)
    for k = 1, #states do finals[k][l + 1] = fin[k] end
    x = y
    if l < nlayers - 1 then x = dropout(x, p) end
  end
  for k = 1, #states do finals[k] = stack_layers(finals[k]) end
  return x, finals
end

local function check_nonlinearity(nl)
  if nl ~= "tanh" and nl ~= "relu" then
    error(("rnn: nonlinearity must be \"tanh\" or \"relu\", got %s"):format(tostring(nl)), 0)
  end
end

-- rnn(name, x (T, B, nin), h0 (nlayers, B, nhid), nin, nhid, nlayers,
--     nonlinearity, dropout) -> (T, B, nhid), h (nlayers, B, nhid)
-- torch.nn.RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).
function nn.rnn(name, x, h0, nin, nhid, nlayers, nonlinearity, p)
  check_nonlinearity(nonlinearity)
  local act = nonlinearity == "relu" and relu or tanh
  local y, finals = stacked(name, x, { h0 }, nin, nhid, nlayers, p, function(l, x, nin, s0)
    local w_ih, w_hh, b_ih, b_hh = rnn_params(name, l, nin, nhid, 1)
    local xw = matmul(x, w_ih, { tb = true }) + b_ih          -- (T, B, nhid), all steps
    local ys, fin = scan {
      xs = { xw }, init = s0,
      body = function(xw_t, h)
        local h_next = act(xw_t + matmul(h, w_hh, { tb = true }) + b_hh)
        return { h_next }, { h_next }
      end,
    }
    return ys[1], fin
  end)
  return y, finals[1]
end

-- lstm_layer(x (T, B, nin), h0, c0 (B, nhid), w_ih (4*nhid, nin),
--            w_hh (4*nhid, nhid), b_ih, b_hh (4*nhid), nhid)
--   -> (T, B, nhid), h, c (B, nhid)
-- One layer of torch.nn.LSTM from its weights (tensors: a graph may pass
-- a dropped w_hh, as AWD-LSTM's weight drop does), gates i, f, g, o.
function nn.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, nhid)
  local xw = matmul(x, w_ih, { tb = true }) + b_ih            -- (T, B, 4*nhid)
  local ys, fin = scan {
    xs = { xw }, init = { h0, c0 },
    body = function(xw_t, h, c)
      local gates = xw_t + matmul(h, w_hh, { tb = true }) + b_hh
      local i = sigmoid(slice(gates, 1, 0, nhid))
      local f = sigmoid(slice(gates, 1, nhid, nhid))
      local g = tanh(slice(gates, 1, 2 * nhid, nhid))
      local o = sigmoid(slice(gates, 1, 3 * nhid, nhid))
      local c_next = f * c + i * g
      local h_next = o * tanh(c_next)
      return { h_next }, { h_next, c_next }
    end,
  }
  return ys[1], fin[1], fin[2]
end

-- lstm(name, x (T, B, nin), { h = h0, c = c0 } (nlayers, B, nhid) each, nin,
--      nhid, nlayers, dropout) -> (T, B, nhid), { h = ..., c = ... }
-- torch.nn.LSTM, gates i, f, g, o in rows of W (4*nhid, .).
function nn.lstm(name, x, s, nin, nhid, nlayers, p)
  local y, finals = stacked(name, x, { s.h, s.c }, nin, nhid, nlayers, p, function(l, x, nin, s0)
    local w_ih, w_hh, b_ih, b_hh = rnn_params(name, l, nin, nhid, 4)
    local y, h, c = nn.lstm_layer(x, s0[1], s0[2], w_ih, w_hh, b_ih, b_hh, nhid)
    return y, { h, c }
  end)
  return y, { h = finals[1], c = finals[2] }
end

-- gru(name, x (T, B, nin), h0 (nlayers, B, nhid), nin, nhid, nlayers,
--     dropout) -> (T, B, nhid), h (nlayers, B, nhid)
-- torch.nn.GRU, gates r, z, n: n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)),
-- h' = (1 - z) * n + z * h.
function nn.gru(name, x, h0, nin, nhid, nlayers, p)
  local y, finals = stacked(name, x, { h0 }, nin, nhid, nlayers, p, function(l, x, nin, s0)
    local w_ih, w_hh, b_ih, b_hh = rnn_params(name, l, nin, nhid, 3)
    local xw = matmul(x, w_ih, { tb = true }) + b_ih          -- (T, B, 3*nhid)
    local ys, fin = scan {
      xs = { xw }, init = s0,
      body = function(xw_t, h)
        local hw = matmul(h, w_hh, { tb = true }) + b_hh
        local r = sigmoid(slice(xw_t, 1, 0, nhid) + slice(hw, 1, 0, nhid))
        local z = sigmoid(slice(xw_t, 1, nhid, nhid) + slice(hw, 1, nhid, nhid))
        local n = tanh(slice(xw_t, 1, 2 * nhid, nhid) + r * slice(hw, 1, 2 * nhid, nhid))
        local h_next = (1 - z) * n + z * h
        return { h_next }, { h_next }
      end,
    }
    return ys[1], fin
  end)
  return y, finals[1]
end

-- ------------------------------------------------------------ Transformer
--
-- The example's TransformerModel is an nn.Transformer (so its encoder ends
-- with the LayerNorm encoder.norm, and its layers use nn.Transformer's
-- defaults: dropout 0.1, ReLU, eps 1e-5, post-norm) with an embedding
-- input_emb, a PositionalEncoding and a Linear decoder.  Sequence-first
-- layout as torch.nn's batch_first = False: x is (T, B, d).

-- positional_encoding(d, max_len) -> (max_len, d), PositionalEncoding's
-- table pe: pe[:, 0::2] = sin(position * div_term), pe[:, 1::2] = cos(...),
-- div_term = exp(arange(0, d, 2) * (-log(10000) / d)).  The columns are
-- interleaved by stacking sin and cos along a new last dim:
-- (max_len, d/2, 2) -> (max_len, d).
function nn.positional_encoding(d, max_len)
  if d % 2 ~= 0 then
    error(("positional_encoding: d_model must be even, got %d"):format(d), 0)
  end
  local half = d // 2
  local position = reshape(arange(max_len), { max_len, 1 })              -- (max_len, 1)
  local div_term = exp(arange(half, 0, 2) * (-math.log(10000.0) / d))    -- (d/2)
  local angle = position * div_term                                       -- (max_len, d/2)
  local pe = concat(reshape(sin(angle), { max_len, half, 1 }),
                    reshape(cos(angle), { max_len, half, 1 }), 2)         -- (max_len, d/2, 2)
  return reshape(pe, { max_len, d })
end

-- self_attention(name, x (T, B, d), d, nhead, mask (T, T), p [, slot]) ->
-- (T, B, d): torch.nn.MultiheadAttention(d, nhead, dropout = p) called as
-- self_attn(x, x, x, attn_mask = mask).  <name>.in_proj_weight (3d, d)
-- holds the q, k, v projections in that order, xavier; <name>.in_proj_bias
-- (3d) zeros; <name>.out_proj.weight (d, d) xavier, .bias zeros.  Heads
-- are (B, nhead, T, d/nhead), torch's (B*nhead, T, d/nhead); the scores
-- q k^T / sqrt(d/nhead) + mask, softmax, dropout p on the weights.
function nn.self_attention(name, x, d, nhead, mask, p, slot)
  if d % nhead ~= 0 then
    error(("%s: embed_dim %d is not divisible by num_heads %d"):format(name, d, nhead), 0)
  end
  local hd, B = d // nhead, x.shape[2]
  local w = param(name .. ".in_proj_weight", { 3 * d, d }, "xavier")
  local b = param(name .. ".in_proj_bias", { 3 * d }, "zeros")
  local qkv = matmul(x, w, { tb = true }) + b                             -- (T, B, 3d)
  local function heads(k)                                                  -- (B, nhead, T, hd)
    local y = reshape(slice(qkv, 2, k * d, d), { seq(), B, nhead, hd })
    return transpose(y, { 1, 2, 0, 3 })
  end
  local q, k, v = heads(0) / math.sqrt(hd), heads(1), heads(2)
  local scores = bmm(q, k, { tb = true }) + mask                          -- (B, nhead, T, T)
  local attn = dropout(softmax(scores), p, slot)
  local o = transpose(bmm(attn, v), { 2, 0, 1, 3 })                       -- (T, B, nhead, hd)
  return nn.linear(name .. ".out_proj", reshape(o, { seq(), B, d }), d, d,
                   { init = "xavier", bias_init = "zeros" })
end

-- transformer_encoder_layer(name, x (T, B, d), d, nhead, nhid, mask, p
-- [, slot]) -> (T, B, d): torch.nn.TransformerEncoderLayer(d, nhead, nhid,
-- dropout = p), post-norm:
--   x = norm1(x + dropout(self_attn(x)))
--   x = norm2(x + dropout(linear2(dropout(relu(linear1(x))))))
-- Weights xavier (nn.Transformer's _reset_parameters); linear biases keep
-- nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
function nn.transformer_encoder_layer(name, x, d, nhead, nhid, mask, p, slot)
  local sa = nn.self_attention(name .. ".self_attn", x, d, nhead, mask, p, slot)
  x = nn.layer_norm(name .. ".norm1", x + dropout(sa, p, slot), d)
  local h = nn.linear(name .. ".linear1", x, d, nhid,
                      { init = "xavier", bias_init = { uniform = 1 / math.sqrt(d) } })
  h = nn.linear(name .. ".linear2", dropout(relu(h), p, slot), nhid, d,
                { init = "xavier", bias_init = { uniform = 1 / math.sqrt(nhid) } })
  return nn.layer_norm(name .. ".norm2", x + dropout(h, p, slot), d)
end

-- transformer_encoder(name, x (T, B, d), d, nhead, nhid, nlayers, mask, p
-- [, slot]) -> (T, B, d): torch.nn.TransformerEncoder with the final
-- LayerNorm that nn.Transformer gives it: <name>.layers.{l}.*, <name>.norm.*.
function nn.transformer_encoder(name, x, d, nhead, nhid, nlayers, mask, p, slot)
  for l = 0, nlayers - 1 do
    x = nn.transformer_encoder_layer(("%s.layers.%d"):format(name, l), x, d, nhead, nhid, mask, p, slot)
  end
  return nn.layer_norm(name .. ".norm", x, d)
end

-- ------------------------------------------- argument counts and scopes
--
-- Every layer refuses arguments it does not take, as the C bindings do and
-- in their words ("nn.gru: takes at most 7 arguments, got 8 (usage)"), at
-- the graph line that called it: nn.gru(..., "tanh", p) copied from an
-- nn.rnn call would otherwise read "tanh" as the dropout.  A trailing nil
-- counts, as it does for the bindings.  Each layer has its row here.
local usage = {
  embedding = { 4, "nn.embedding(name, idx, ntoken, emsize)" },
  linear = { 5, "nn.linear(name, x, nin, nout [, opts])" },
  dropout = { 3, "nn.dropout(x, p [, slot])" },
  layer_norm = { 4, "nn.layer_norm(name, x, d [, eps])" },
  rnn_state = { 3, "nn.rnn_state(name, nlayers, nhid)" },
  lstm_state = { 3, "nn.lstm_state(name, nlayers, nhid)" },
  rnn = { 8, "nn.rnn(name, x, h0, nin, nhid, nlayers, nonlinearity, dropout)" },
  lstm = { 7, "nn.lstm(name, x, { h = h0, c = c0 }, nin, nhid, nlayers, dropout)" },
  lstm_layer = { 8, "nn.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, nhid)" },
  gru = { 7, "nn.gru(name, x, h0, nin, nhid, nlayers, dropout)" },
  positional_encoding = { 2, "nn.positional_encoding(d, max_len)" },
  self_attention = { 7, "nn.self_attention(name, x, d, nhead, mask, p [, slot])" },
  transformer_encoder_layer = { 8, "nn.transformer_encoder_layer(name, x, d, nhead, nhid, mask, p [, slot])" },
  transformer_encoder = { 9, "nn.transformer_encoder(name, x, d, nhead, nhid, nlayers, mask, p [, slot])" },
}

-- Every layer that takes a name builds its nodes in scope(name, ...), so
-- that each node knows the layer that made it ("decoder", "rnn.l0",
-- "encoder.layers.0.self_attn"): kernels are named after it.  Layers that
-- call layers (self_attention calls nn.linear) nest their scopes.
local named = { embedding = true, linear = true, layer_norm = true, rnn = true, lstm = true, gru = true,
                self_attention = true, transformer_encoder_layer = true, transformer_encoder = true }

for layer, build in pairs(nn) do
  local u = usage[layer] or error(("nn.%s has no row in nn.lua's usage table"):format(layer))
  local max, use = u[1], u[2]
  if named[layer] then
    local plain = build
    build = function(name, ...) return scope(name, plain, name, ...) end
  end
  nn[layer] = function(...)
    local n = select("#", ...)
    if n > max then
      error(("nn.%s: takes at most %d argument%s, got %d (%s)"):format(layer, max, max == 1 and "" or "s", n, use), 0)
    end
    return build(...)
  end
end

return nn
