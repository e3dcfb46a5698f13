-- a graph's print and error text reach the terminal with control bytes as ?
print("a\27[31mb")
error("bad\27[2J\nthing")
