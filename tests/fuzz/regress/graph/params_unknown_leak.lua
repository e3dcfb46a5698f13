local p = params { ntoken = 10, emsize = 4 }
local x = p.nhid
