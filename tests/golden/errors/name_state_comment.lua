-- a state name holding a backslash and a carriage return once closed a
-- comment in the emitted C and put statements into the trainer
local h = state("a\\\r*/ int x; /*", { 2 })
