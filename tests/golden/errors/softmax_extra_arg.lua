-- softmax works along the last dimension and takes no dim: an extra
-- argument is refused, not ignored
local x = input("x", "f32", { batch(), 8 })
local y = softmax(x, 0)
