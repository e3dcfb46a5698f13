/*
 * elem.c: elementwise ops as C expressions, the same text for a node's
 * own kernel (k_elementwise.c) and inside a fused one (k_fused.c), and
 * the math functions they call for the program's real type.
 */
#include "emit.h"

/* A libm function for the program's real type: expf or exp. */
Str fn(const Graph *g, const char *name)
{
  Str s = {""};
  sprint(&s, "%s%s", name, g->real == DT_F32 ? "f" : "");
  return s;
}

/* exp and tanh where speed matters: the vectorisable lmc_expf and
 * lmc_tanhf of lmc_math.h for float, libm's for double. */
const char *fast_exp(const Graph *g)
{
  return g->real == DT_F32 ? "lmc_expf" : "exp";
}

const char *fast_tanh(const Graph *g)
{
  return g->real == DT_F32 ? "lmc_tanhf" : "tanh";
}

/* The expression elementwise op `op` computes from operands x and y; a
 * dropout draws element `idx` of its mask with key<sfx>, p<sfx>,
 * scale<sfx> and idx0<sfx>.  The same text is used for a node's own kernel
 * and inside a fused one, so both compute the same bits. */
void elem_expr(const Graph *g, Buf *b, Op op, const char *x, const char *y, const char *idx, const char *sfx)
{
  switch (op) {
  case OP_NEG:     bprintf(b, "-%s", x); break;
  case OP_EXP:     bprintf(b, "%s(%s)", fn(g, "exp").s, x); break;
  case OP_LOG:     bprintf(b, "%s(%s)", fn(g, "log").s, x); break;
  case OP_SQRT:    bprintf(b, "%s(%s)", fn(g, "sqrt").s, x); break;
  case OP_SIN:     bprintf(b, "%s(%s)", fn(g, "sin").s, x); break;
  case OP_COS:     bprintf(b, "%s(%s)", fn(g, "cos").s, x); break;
  case OP_TANH:    bprintf(b, "%s(%s)", fast_tanh(g), x); break;
  case OP_SIGMOID: bprintf(b, "1 / (1 + %s(-%s))", fast_exp(g), x); break;
  case OP_RELU:    bprintf(b, "%s > 0 ? %s : 0", x, x); break;
  case OP_ADD:     bprintf(b, "%s + %s", x, y); break;
  case OP_SUB:     bprintf(b, "%s - %s", x, y); break;
  case OP_MUL:     bprintf(b, "%s * %s", x, y); break;
  case OP_DIV:     bprintf(b, "%s / %s", x, y); break;
  case OP_TANH_GRAD:    bprintf(b, "%s * (1 - %s * %s)", x, y, y); break;
  case OP_SIGMOID_GRAD: bprintf(b, "%s * %s * (1 - %s)", x, y, y); break;
  case OP_RELU_GRAD:    bprintf(b, "%s > 0 ? %s : 0", y, x); break;
  case OP_DROPOUT:
  case OP_DROPOUT_GRAD:
    bprintf(b, "lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? %s * scale%s : 0", sfx, sfx, idx, sfx, x, sfx);
    break;
  case OP_ADD_DROPOUT:   /* a + dropout(b) */
    bprintf(b, "%s + (lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? %s * scale%s : 0)", x, sfx, sfx, idx, sfx, y,
            sfx);
    break;
  case OP_DROPOUT_ADD:   /* dropout(a + b) */
    bprintf(b, "lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? (%s + %s) * scale%s : 0", sfx, sfx, idx, sfx, x, y,
            sfx);
    break;
  default:
    die("%s is not elementwise", op_info[op].name);
  }
}

/* The parameter name of an elementwise op's input k. */
const char *elem_name(Op op, int k)
{
  switch (op) {
  case OP_TANH_GRAD:
  case OP_SIGMOID_GRAD:
  case OP_RELU_GRAD:
    return k ? "y" : "dy";
  case OP_DROPOUT_GRAD:
    return "dy";
  default:
    return op_info[op].nin == 1 ? "x" : k ? "b" : "a";
  }
}
