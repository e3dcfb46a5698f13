-- the same as a method, with an empty separator
local s = (""):rep(1e15, "")
