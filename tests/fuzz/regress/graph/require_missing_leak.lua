local nn = require "nh"
