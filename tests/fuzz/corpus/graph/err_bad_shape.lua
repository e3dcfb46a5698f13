-- a shape entry that is not a positive integer
local x = input("x", "i32", { seq(), 0 })
