-- table.move over maxinteger - 1 slots loops in C
local t = table.move({}, 1, math.maxinteger - 1, 1, {})
