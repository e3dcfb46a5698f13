-- a memory bomb stops at the memory cap
local t = {}
local s = string.rep("x", 1 << 20)
for i = 1, 1 << 20 do t[i] = s .. i end
