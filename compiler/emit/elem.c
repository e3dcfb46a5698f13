/*
 * elem.c: elementwise ops as C expressions (their op table rows, ops.c),
 * the same text for a node's own kernel (k_elementwise.c) and inside a
 * fused one (k_fused.c), and the math functions kernels call for the
 * program's real type.
 */
#include <stdlib.h>

#include "emit.h"

/* A libm function for the program's real type: expf or exp. */
Str fn(const Graph *g, const char *name)
{
  Str s = {""};
  sprint(&s, "%s%s", name, libm_suffix(g->real));
  return s;
}

/* exp where speed matters: the vectorisable lmc_expf of lmc_math.h for
 * float, libm's for double. */
const char *fast_exp(const Graph *g)
{
  return g->real == DT_F32 ? "lmc_expf" : "exp";
}

/* The expression elementwise op `op` computes from operands x and y: its
 * row of the op table, operands substituted (ops.c); a dropout draws
 * element `idx` of its mask with key<sfx>, p<sfx>, scale<sfx> and
 * idx0<sfx>.  The same text is used for a node's own kernel and inside a
 * fused one, so both compute the same bits. */
void elem_expr(const Graph *g, Buf *b, Op op, const char *x, const char *y, const char *idx, const char *sfx)
{
  char *s = op_c_expr(op, g->real, (const char *const[]){x, y}, idx, sfx);
  bprintf(b, "%s", s);
  free(s);
}

/* The parameter name of an elementwise op's input k. */
const char *elem_name(Op op, int k)
{
  return op_info[op].arg[k];
}
