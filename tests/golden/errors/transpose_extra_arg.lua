-- transpose(x, { perm }) takes nothing after the permutation
local x = input("x", "f32", { batch(), 8 })
local y = transpose(x, { 1, 0 }, 1)
