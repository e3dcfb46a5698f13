-- error() with a message and no location is reported at the line that raised it
local function check(c, msg) if not c then error(msg, 0) end end
check(false, "nhid must be even")
