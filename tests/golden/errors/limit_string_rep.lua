-- string.rep of an empty string maxinteger times loops in C, where the count
-- hook does not run; the wrapper refuses it at this line
local s = string.rep("", math.maxinteger)
