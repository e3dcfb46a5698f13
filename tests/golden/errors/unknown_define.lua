-- -D names a hyper-parameter the graph does not declare
local p = params { nhid = 200, emsize = 200 }
