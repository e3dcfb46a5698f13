-- debug is not available
local info = debug.getinfo(1)
