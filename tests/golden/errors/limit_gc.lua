-- Lua runs finalizers with hooks off (and at lua_close): __gc is refused
local t = setmetatable({}, { __gc = function() while true do end end })
