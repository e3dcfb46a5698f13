/*
 * k_elementwise.c: the kernels of elementwise and shape ops, each one loop
 * nest (nest.c): elementwise ops, const and arange fills, the causal
 * mask, copies, sums and broadcasts, and the strided copies of transpose,
 * slice, pad and concat.
 */
#include "emit.h"

void k_elementwise(Text *k, Buf *b, Node *n)
{
  Nest ns;
  Str idx[MAXOPND], v[MAXIN + 1] = {{""}};
  kout(k, n);
  nest_init(&ns, &n->shape);
  nest_bcast(&ns, &n->shape);
  for (int i = 0; i < n->nin; i++) {
    kin(k, n, i, elem_name(n->op, i));
    nest_bcast(&ns, &IN(k->p, n, i)->shape);
  }
  /* the mask is over y's elements, or b's for a + dropout(b) */
  int mask = n->op == OP_ADD_DROPOUT ? 2 : 0, shape = n->op == OP_ADD_DROPOUT ? n->in[1] : id_of(k->p, n);
  bool drop = is_dropout_op(n->op);
  if (drop)
    kdropout(k, b, n, shape, "");
  int d = nest_open(k, b, &ns, 1, idx);
  sprint(&v[0], "%s[%s]", out_name(n->op), idx[0].s);
  for (int i = 0; i < n->nin; i++)
    sprint(&v[i + 1], "%s[%s]", elem_name(n->op, i), idx[i + 1].s);
  indent(b, d);
  bprintf(b, "%s = ", v[0].s);
  Str m = drop ? kmask_index(k, n, shape, idx[mask].s, "") : (Str){""};
  elem_expr(k->p->g, b, n->op, v[1].s, n->nin > 1 ? v[2].s : NULL, m.s, "");
  bprintf(b, ";\n");
}

/* const: every element a.f; arange: a.f + i * a.f2 along dim 0. */
void k_fill(Text *k, Buf *b, Node *n)
{
  Nest ns;
  Str idx[MAXOPND];
  kout(k, n);
  if (n->op == OP_CONST) {
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    int d = nest_open(k, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = ", idx[0].s);
    bdouble(b, n->a.f);
    bprintf(b, ";\n");
    return;
  }
  if (n->shape.rank < 1)
    die("n%d: arange of rank 0", id_of(k->p, n));
  Mono rows = mdim(&n->shape, 0);
  Mono inner = mdiv(mnumel(&n->shape), rows);
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, rows).s);
  if (mone(inner)) {
    bprintf(b, "    y[i] = (%s)(", ctype(n->dtype));
  } else {
    bprintf(b, "    for (long j = 0; j < %s; j++)\n", mstr(k, inner).s);
    bprintf(b, "      y[i * %s + j] = (%s)(", mstr(k, inner).s, ctype(n->dtype));
  }
  bdouble(b, n->a.f);
  bprintf(b, " + i * ");
  bdouble(b, n->a.f2);
  bprintf(b, ");\n");
}

void k_triu_mask(Text *k, Buf *b, Node *n)
{
  kout(k, n);
  if (n->shape.rank != 2)
    die("triu_mask of rank %d", n->shape.rank);
  Str cols = mstr(k, mdim(&n->shape, 1));
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, mdim(&n->shape, 0)).s);
  bprintf(b, "    for (long j = 0; j < %s; j++)\n", cols.s);
  bprintf(b, "      y[i * %s + j] = j > i ? -INFINITY : 0;\n", cols.s);
}

void k_copy(Text *k, Buf *b, Node *n)
{
  kout(k, n);
  kin(k, n, 0, "x");
  bprintf(b, "  memcpy(y, x, %s * sizeof *y);\n", mstr(k, mnumel(&n->shape)).s);
}

/* sum: y (a.shape, broadcastable to x) = x summed over the broadcast dims;
 * broadcast: the other way round. */
void k_sum_broadcast(Text *k, Buf *b, Node *n)
{
  Nest ns;
  Str idx[MAXOPND];
  Node *x = IN(k->p, n, 0);
  kout(k, n);
  kin(k, n, 0, "x");
  if (n->op == OP_SUM) {
    bprintf(b, "  memset(y, 0, %s * sizeof *y);\n", mstr(k, mnumel(&n->shape)).s);
    nest_init(&ns, &x->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &x->shape);
    int d = nest_open(k, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] += x[%s];\n", idx[0].s, idx[1].s);
  } else {
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &x->shape);
    int d = nest_open(k, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = x[%s];\n", idx[0].s, idx[1].s);
  }
}

static int norm_axis(int axis, int rank)
{
  return axis < 0 ? axis + rank : axis;
}

/* transpose, slice, pad, concat: strided copies. */
void k_shuffle(Text *k, Buf *b, Node *n)
{
  Nest ns;
  Str idx[MAXOPND];
  Mono yst[MAXRANK], xst[MAXRANK], st[MAXRANK];
  Node *x = IN(k->p, n, 0);
  int axis = norm_axis(n->a.axis, n->shape.rank);
  kout(k, n);
  contig(&n->shape, yst);
  contig(&x->shape, xst);
  switch (n->op) {
  case OP_TRANSPOSE:
    kin(k, n, 0, "x");
    for (int i = 0; i < n->shape.rank; i++)
      st[i] = xst[n->a.perm[i]];
    nest_init(&ns, &n->shape);
    nest_strided(&ns, yst, mono(0, 0));
    nest_strided(&ns, st, mono(0, 0));
    break;
  case OP_SLICE:
    kin(k, n, 0, "x");
    nest_init(&ns, &n->shape);
    nest_strided(&ns, yst, mono(0, 0));
    nest_strided(&ns, xst, mmul(mono(n->a.start, 0), xst[axis]));
    break;
  case OP_PAD:
    kin(k, n, 0, "x");
    bprintf(b, "  memset(y, 0, %s * sizeof *y);\n", mstr(k, mnumel(&n->shape)).s);
    nest_init(&ns, &x->shape);
    nest_strided(&ns, yst, mmul(mono(n->a.start, 0), yst[axis]));
    nest_strided(&ns, xst, mono(0, 0));
    break;
  case OP_CONCAT: {
    kin(k, n, 0, "a");
    kin(k, n, 1, "b");
    Mono at = mmul(mdim(&x->shape, axis), yst[axis]);
    for (int j = 0; j < 2; j++) {
      Node *xj = IN(k->p, n, j);
      contig(&xj->shape, xst);
      nest_init(&ns, &xj->shape);
      nest_strided(&ns, yst, j ? at : mono(0, 0));
      nest_strided(&ns, xst, mono(0, 0));
      int d = nest_open(k, b, &ns, 1, idx);
      indent(b, d);
      bprintf(b, "y[%s] = %s[%s];\n", idx[0].s, j ? "b" : "a", idx[1].s);
    }
    return;
  }
  default:
    die("not a copy: %s", op_info[n->op].name);
  }
  int d = nest_open(k, b, &ns, 1, idx);
  indent(b, d);
  bprintf(b, "y[%s] = x[%s];\n", idx[0].s, idx[1].s);
}
