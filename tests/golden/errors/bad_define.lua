-- -D value of the wrong type
local p = params { nhid = 200 }
