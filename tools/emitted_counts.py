# tools/emitted_counts.py FILE...: per emitted C file (generated/*.c), its lines, kernels, kernels whose
# parameters and body are byte-identical to an earlier one, and bare offsets ("w + 700") in the calls of
# its run() functions (a named pointer's declaration at the top of run() is where an offset belongs).
import re, sys
for f in sys.argv[1:]:
    src = open(f).read()
    lines = src.count("\n")
    funcs = re.findall(r"^static \w+ (\w+)\(([^)]*)\)\n\{\n(.*?)^\}\n", src, re.S | re.M)
    kernels = [fn for fn in re.findall(r"^static void (\w+)\(([^)]*)\)\n\{\n(.*?)^\}\n", src, re.S | re.M) if not fn[0].startswith("lmc_")]
    seen, dup = set(), 0
    for name, args, body in kernels:
        key = (args, body)
        if key in seen: dup += 1
        seen.add(key)
    runs = [body for name, args, body in funcs if name.endswith("_run")]
    # a named pointer's own declaration ("real *x = w + 700;") is where an offset belongs
    calls = ["\n".join(l for l in b.split("\n") if not re.match(r"\s*(const )?(real|int32_t) \*\w+ = ", l)) for b in runs]
    bare = sum(len(re.findall(r"\b(?:w|c->param|c->grad|c->state) \+ \d", b)) for b in calls)
    print(f"{f}: {lines} lines, {len(kernels)} kernels, {dup} identical to another, {bare} bare offsets in run()")
