-- a loop stopped by the wall-clock limit (--time-limit=0.2 in time_limit.flags)
-- before the instruction limit
local n = 0
while true do n = n + 1 end
