/*
 * ops.c: the op table of lmc.h as data, and the C text of elementwise ops.
 *
 * Every op is one row of the OPS X-macro: its name, inputs, properties,
 * attribute kind and, for an elementwise op, the C expression of its value
 * and the gradients of its inputs as templates (the syntax is described at
 * the table).  The emitter writes an elementwise kernel's expression with
 * op_c_expr(); fold-constants evaluates the same text; autodiff builds the
 * gradient templates as nodes; the Lua front end makes a function of every
 * P_LUA op.  Adding an elementwise op is adding a row
 * (docs/adding-an-op.md).
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

#define UNPAREN(...) __VA_ARGS__

const OpInfo op_info[NOPS] = {
#define X(id, text, nin, props, attr, args, value, grad) \
  [OP_##id] = {text, nin, props, attr, {UNPAREN args}, value, {UNPAREN grad}},
  OPS(X)
#undef X
};

bool op_is(Op op, int prop)
{
  return (op_info[op].props & prop) != 0;
}

const char *libm_suffix(DType real)
{
  return real == DT_F32 ? "f" : "";
}

const char *fast_prefix(DType real)
{
  return real == DT_F32 ? "lmc_" : "";
}

char *op_c_expr(Op op, DType real, const char *const *x, const char *idx, const char *sfx)
{
  const char *t = op_info[op].value;
  if (!t)
    die("%s is not elementwise", op_info[op].name);
  size_t len = 0, cap = 256;
  char *s = xcalloc(cap, 1);
  for (; *t; t++) {
    const char *put = NULL;
    char c[2] = {*t, 0};
    if (*t != '$')
      put = c;
    else if (t[1] >= '0' && t[1] < '0' + op_info[op].nin)
      put = x[t[1] - '0'];
    else if (t[1] == 'f')
      put = libm_suffix(real);
    else if (t[1] == 'v')
      put = fast_prefix(real);
    else if (t[1] == 'i' && idx)
      put = idx;
    else if (t[1] == 's' && sfx)
      put = sfx;
    else
      die("%s: bad template \"%s\"", op_info[op].name, op_info[op].value);
    t += *t == '$';
    size_t n = strlen(put);
    while (len + n + 1 > cap)
      s = xrealloc(s, cap *= 2);
    memcpy(s + len, put, n + 1);
    len += n;
  }
  return s;
}
