-- a finalizer that never returns: Lua runs __gc with hooks off
setmetatable({}, { __gc = function() while true do end end })
kind "LSTM"
