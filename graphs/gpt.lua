-- graphs/gpt.lua: a nanoGPT-style GPT (Karpathy's nanoGPT, model.py):
-- learned token and position embeddings, n_layer pre-LayerNorm blocks of
-- causal self-attention and a GELU MLP, a final LayerNorm and a head tied
-- to the token embedding.
--   tokens, targets (T, B) -> logp (T, B, ntoken), loss; no hidden state:
--   every window attends over itself only, and `generate` feeds the window
--   of the last bptt tokens, as nanoGPT crops its context to block_size.
--
-- Parameter names are nanoGPT's state_dict: transformer.wte.weight,
-- transformer.wpe.weight (block_size = bptt rows), transformer.h.{l}.ln_1,
-- .attn.c_attn, .attn.c_proj, .ln_2, .mlp.c_fc, .mlp.c_proj,
-- transformer.ln_f, lm_head.weight (an alias of transformer.wte.weight).
-- Initialisation as nanoGPT's _init_weights: every Linear and Embedding
-- weight N(0, 0.02), the residual projections (c_proj) N(0, 0.02 /
-- sqrt(2 n_layer)), biases zeros, LayerNorms ones and zeros.  The GELU is
-- the exact one (nn.GELU()).  One dropout slot, `dropout` (the trainer's
-- --dropout), in nanoGPT's five places: after the embeddings, on the
-- attention weights, after each c_proj.  bias = false drops the biases of
-- the Linears and LayerNorms, as nanoGPT's config.bias.
--
-- Layout is sequence-first, x (T, B, n_embd), as the runtime feeds tokens;
-- heads are (B, n_head, T, head_size), nanoGPT's.  The defaults are small
-- enough to train on a CPU: 4 layers of 128 wide, 4 heads, a 64-token
-- block.
local nn = require "nn"

kind "GPT"
local p = params { ntoken = 33278, n_layer = 4, n_head = 4, n_embd = 128, bptt = 64,
                   dropout = 0.2, bias = true }
local C, H = p.n_embd, p.n_head
if C % H ~= 0 then
  error(("n_embd (%d) must be divisible by n_head (%d)"):format(C, H))
end
local hs, B = C // H, batch()
local init, proj_init = { normal = 0.02 }, { normal = 0.02 / math.sqrt(2 * p.n_layer) }

local function linear(name, x, nin, nout, w_init)
  return nn.linear(name, x, nin, nout, { init = w_init or init, bias = p.bias })
end

-- nanoGPT's LayerNorm(ndim, bias): F.layer_norm, eps 1e-5
local function layer_norm(name, x)
  if p.bias then return nn.layer_norm(name, x, C) end
  return scope(name, function() return normalize(x, 1e-5) * param(name .. ".weight", { C }, "ones") end)
end

-- CausalSelfAttention: q, k, v from one c_attn (3C, C), rows q, k, v;
-- softmax(q k^T / sqrt(hs) masked causally), dropout, the heads joined
-- and projected by c_proj, dropout.
local function attention(name, x)
  local qkv = linear(name .. ".c_attn", x, C, 3 * C)                    -- (T, B, 3C)
  local function heads(k)                                                -- (B, H, T, hs)
    return transpose(reshape(slice(qkv, 2, k * C, C), { seq(), B, H, hs }), { 1, 2, 0, 3 })
  end
  local q, k, v = heads(0), heads(1), heads(2)
  local att = bmm(q, k, { tb = true }) * (1 / math.sqrt(hs)) + triu_mask() -- (B, H, T, T)
  att = dropout(softmax(att), p.dropout)
  local y = transpose(bmm(att, v), { 2, 0, 1, 3 })                       -- (T, B, H, hs)
  y = linear(name .. ".c_proj", reshape(y, { seq(), B, C }), C, C, proj_init)
  return dropout(y, p.dropout)
end

-- MLP: c_fc (4C, C), exact GELU, c_proj (C, 4C), dropout.
local function mlp(name, x)
  local h = gelu(linear(name .. ".c_fc", x, C, 4 * C))
  return dropout(linear(name .. ".c_proj", h, 4 * C, C, proj_init), p.dropout)
end

-- Block: pre-LayerNorm residual branches.
local function block(name, x)
  x = x + scope(name .. ".attn", attention, name .. ".attn", layer_norm(name .. ".ln_1", x))
  return x + scope(name .. ".mlp", mlp, name .. ".mlp", layer_norm(name .. ".ln_2", x))
end

local tokens  = input("tokens", "i32", { seq(), batch() })
local targets = input("targets", "i32", { seq(), batch() })

local wte = param("transformer.wte.weight", { p.ntoken, C }, init)
local wpe = param("transformer.wpe.weight", { p.bptt, C }, init)
local x = scope("transformer.wte", embedding, wte, tokens)                  -- (T, B, C)
x = dropout(x + reshape(slice(wpe, 0, 0, seq()), { seq(), 1, C }), p.dropout)
for l = 0, p.n_layer - 1 do
  x = scope(("transformer.h.%d"):format(l), block, ("transformer.h.%d"):format(l), x)
end
x = layer_norm("transformer.ln_f", x)
local logits = nn.linear("lm_head", x, C, p.ntoken, { tie = wte, bias = false })
local logp = log_softmax(logits)

output("logp", logp)
output("loss", nll_loss(logp, targets))
