-- a Lua runtime error
local layers = {}
local x = layers[1].weight
