-- require escaping with ..
local m = require "lib..nn"
