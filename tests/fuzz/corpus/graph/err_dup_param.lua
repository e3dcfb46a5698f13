-- two parameters with one name
local a = param("w", { 4 }, "zeros")
local b = param("w", { 4 }, "zeros")
