-- a C module (or anything not a Lua file in the two folders)
local socket = require "socket.core"
