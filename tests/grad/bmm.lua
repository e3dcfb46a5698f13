-- batched matmul in the three transposition forms attention uses
local q = param("q", {2, 3, 4, 5}, {uniform = 1})
local k = param("k", {2, 3, 4, 5}, {uniform = 1})
local v = param("v", {2, 3, 4, 6}, {uniform = 1})
local r = param("r", {2, 3, 5, 6}, {uniform = 1})
local s = bmm(q, k, {tb = true})          -- (2, 3, 4, 4)
local o = bmm(s, v)                       -- (2, 3, 4, 6)
local u = bmm(q, o, {ta = true})          -- (2, 3, 5, 6)
output("loss", sum(u * r, {}))
