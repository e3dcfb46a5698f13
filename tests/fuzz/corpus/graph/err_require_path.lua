-- require with a path
local m = require "../../../etc/passwd"
