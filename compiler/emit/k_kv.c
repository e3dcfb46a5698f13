/*
 * k_kv.c: the kernels of the step program's own ops (kv_cache.c), each
 * reading the position of its first new row, c->pos, as `pos`:
 *   causal_mask (T, max_seq)  0 where column j <= pos + row i, -inf else
 *   slice_pos                 rows pos .. pos + T - 1 of a table along an axis
 *   kv_write                  the cache with the T new rows written at pos
 */
#include "emit.h"

/* The elements of s before and after dim axis, all static. */
static void around(const Shape *s, int axis, int64_t *outer, int64_t *inner)
{
  *outer = *inner = 1;
  for (int i = 0; i < s->rank; i++) {
    if (i < axis)
      *outer *= s->dim[i];
    if (i > axis)
      *inner *= s->dim[i];
  }
}

void k_kv(Text *k, Buf *b, Node *n)
{
  kout(k, n);
  int64_t outer, inner;
  around(&n->shape, n->a.axis, &outer, &inner);
  switch (n->op) {
  case OP_CAUSAL_MASK: {
    karg(k, A_POS, id_of(k->p, n), -1, "int pos");
    Str cols = mstr(k, mdim(&n->shape, 1));
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, mdim(&n->shape, 0)).s);
    bprintf(b, "    for (long j = 0; j < %s; j++)\n", cols.s);
    bprintf(b, "      y[i * %s + j] = j > pos + i ? -INFINITY : 0;\n", cols.s);
    break;
  }
  case OP_SLICE_POS: {
    kin(k, n, 0, "x");
    karg(k, A_POS, id_of(k->p, n), -1, "int pos");
    Str T = mstr(k, mdim(&n->shape, n->a.axis));
    bprintf(b, "  for (long o = 0; o < %lld; o++)\n", (long long)outer);
    bprintf(b, "    memcpy(y + o * %s * %lld, x + (o * %d + pos) * %lld, %s * %lld * sizeof *y);\n", T.s,
            (long long)inner, IN(k->p, n, 0)->shape.dim[n->a.axis], (long long)inner, T.s, (long long)inner);
    break;
  }
  case OP_KV_WRITE: {
    kin(k, n, 0, "x");
    kin(k, n, 1, "r");
    karg(k, A_POS, id_of(k->p, n), -1, "int pos");
    Str T = mstr(k, mdim(&IN(k->p, n, 1)->shape, n->a.axis));
    bprintf(b, "  memcpy(y, x, %s * sizeof *y);\n", mstr(k, mnumel(&n->shape)).s);
    bprintf(b, "  for (long o = 0; o < %lld; o++)\n", (long long)outer);
    bprintf(b, "    memcpy(y + (o * %d + pos) * %lld, r + o * %s * %lld, %s * %lld * sizeof *y);\n",
            n->shape.dim[n->a.axis], (long long)inner, T.s, (long long)inner, T.s, (long long)inner);
    break;
  }
  default:
    die("k_kv: %s", op_info[n->op].name);
  }
}
