-- a module next to require_local.lua (not itself a golden test)
return { double = function(x) return x * 2 end }
