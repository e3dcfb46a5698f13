-- Every op of the tensor API once, at small shapes.
kind "ops"
local p = params { d = 4, eps = 0.001, dropout = 0.25 }

local x  = input("x", "f32", { seq(), batch(), p.d })            -- (T, B, d)
local t  = input("t", "i32", { seq(), batch() })                  -- (T, B)
local w  = param("w", { p.d, p.d }, "xavier")
local b  = param("b", { p.d }, "zeros")
local g  = param("g", { p.d }, "ones")
local e  = param("e", { 10, p.d }, { uniform = 0.5 })

local y  = matmul(x, w, { tb = true }) + b                        -- (T, B, d)
local z  = (y * 2 - 1) / x + neg(y)                               -- numbers become consts
z = relu(sigmoid(tanh(z))) + exp(log(sqrt(x * x + 1)))
z = sin(z) + cos(z) + -z
z = z:tanh():mul(g)                                               -- ops as methods
z = normalize(z, p.eps) + softmax(z) + dropout(z, p.dropout)
local emb = embedding(e, t)                                       -- (T, B, d)
local flat = reshape(emb, { -1, p.d })                            -- (T*B, d)
local back = reshape(flat, { seq(), batch(), p.d })
local tr = transpose(back, 0, 1)                                  -- (B, T, d)
local pm = transpose(back, { 1, 2, 0 })                           -- (B, d, T)
local sc = bmm(tr, pm)                                            -- (B, T, T)
local masked = sc + triu_mask()
local pos = arange(seq(), 0, 1)                                   -- (T)
local pe = slice(reshape(arange(8, 0.5, 2), { 8, 1 }), 0, 0, 4)   -- (4, 1)
local cat = concat(pe, pe, 1)                                     -- (4, 2)
local cat3 = concat({ w, w, w }, -1)                              -- (d, 3*d)
local s  = sum(z, { p.d })                                        -- (d)
local bc = broadcast(s, { 3, p.d })                               -- (3, d)
local c  = const(3) * bc
assert(tostring(seq() * 20) == "20*T")
assert(emb.shape[1] == "T" and emb.shape[2] == batch() and emb.rank == 3)
assert(flat.shape[1] == batch() .. "*T" and emb.dtype == "f32" and t.dtype == "i32")

output("z", z)
output("masked", masked)
output("pos", pos)
output("cat", cat)
output("cat3", cat3)
output("c", c)
output("nll", nll_loss(log_softmax(z), t))   -- not "loss": no autodiff here
