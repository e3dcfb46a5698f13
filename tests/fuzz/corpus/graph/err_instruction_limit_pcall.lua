-- pcall cannot swallow the instruction limit
local ok = pcall(function() while true do end end)
print("escaped", ok)
