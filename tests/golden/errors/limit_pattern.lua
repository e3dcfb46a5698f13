-- a backtracking pattern: each a* retries every split of the subject
local s = string.rep("a", 40)
local i = string.find(s, string.rep("a*", 30) .. "b")
