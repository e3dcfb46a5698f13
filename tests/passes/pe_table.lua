-- tests/passes/pe_table.lua: the positional encoding table alone, rows
-- [0, T) broadcast over the batch as "logp" (which lmc compile keeps in the
-- generation program), so that a driver prints what
-- an -O0 build computes at run time and tests/check_passes.c can compare
-- it with the table an -O2 build folds.
local nn = require "nn"

kind "Transformer"
local p = params { emsize = 200 }

local pe = reshape(slice(nn.positional_encoding(p.emsize, 5000), 0, 0, seq()), { seq(), 1, p.emsize })
output("logp", broadcast(pe, { seq(), batch(), p.emsize }))
