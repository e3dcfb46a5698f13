-- -D boolean must be true or false
local p = params { tied = false }
