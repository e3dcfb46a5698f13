-- a parameter name with a line break
local w = param("w\n#include <stdio.h>", { 2 }, "zeros")
