/*
 * fold.c: fold-constants, evaluating at compile time every subgraph whose
 * inputs are all constants.
 *
 * The Transformer's positional encoding is the case this is for: arange,
 * exp, mul, sin, cos, concat and reshape build a (5000, 1, d) table, of
 * which the model reads rows [0, T) through a slice of length T.  After
 * this pass the table is one `literal` node holding only the rows a slice
 * can reach (max_seq of them), the emitter writes it as a static array of
 * hexadecimal float literals, and the slice becomes a pointer into it.
 *
 * Values are computed with the arithmetic the emitted kernel would use at
 * run time: float32 operations and the float libm calls (expf, sinf) for
 * an f32 program, double and exp/sin for an f64 one, arange in double
 * rounded once, so a folded table equals bit for bit the one the unfolded
 * program computes.  Matrix products are not folded (the BLAS's summation
 * order is not ours to copy).  Folding refuses what would change meaning:
 * a division by zero, or any result that is not finite (NaN, infinity);
 * such a node and everything after it is left to run time.  A negative
 * zero is kept (the hexadecimal literal keeps its sign).
 *
 * Only the frontier of a constant subgraph is written out: constant nodes
 * with a run-time user, or that are outputs.  A constant leaf (const,
 * arange) on the frontier stays as it is, since it costs nothing to
 * compute; a frontier bigger than FOLD_MAX_TABLE elements is not folded
 * either, and its inputs become the frontier instead.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lmc.h"
#include "lmc_math.h"

enum { FOLD_MAX_EVAL = 1 << 23 };   /* elements of an intermediate value */

typedef struct {
  Graph *g;
  double **val;           /* per node: its values, row-major; NULL if not constant */
} Fold;

static int64_t numel(const Node *n)
{
  return shape_numel(&n->shape, 1);
}

/* Row-major strides of shape s. */
static void strides(const Shape *s, int64_t *st)
{
  int64_t m = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = m;
    m *= s->dim[i];
  }
}

/* The index into x (broadcast right-aligned to shape y) of y's element at
 * multi-index idx. */
static int64_t bcast_index(const Shape *y, const Shape *x, const int *idx)
{
  int64_t st[MAXRANK], off = 0;
  strides(x, st);
  for (int i = 0; i < x->rank; i++) {
    int yi = i + y->rank - x->rank;
    if (x->dim[i] != 1)
      off += st[i] * idx[yi];
  }
  return off;
}

static void unravel(const Shape *s, int64_t flat, int *idx)
{
  for (int i = s->rank - 1; i >= 0; i--) {
    idx[i] = (int)(flat % s->dim[i]);
    flat /= s->dim[i];
  }
}

/* One elementwise op in float, as the f32 kernel computes it. */
static bool elem32(Op op, float x, float y, float *r)
{
  switch (op) {
  case OP_NEG:     *r = -x; break;
  case OP_EXP:     *r = expf(x); break;
  case OP_LOG:     *r = logf(x); break;
  case OP_SQRT:    *r = sqrtf(x); break;
  case OP_SIN:     *r = sinf(x); break;
  case OP_COS:     *r = cosf(x); break;
  case OP_TANH:    *r = lmc_tanhf(x); break;
  case OP_SIGMOID: *r = 1 / (1 + lmc_expf(-x)); break;
  case OP_RELU:    *r = x > 0 ? x : 0; break;
  case OP_ADD:     *r = x + y; break;
  case OP_SUB:     *r = x - y; break;
  case OP_MUL:     *r = x * y; break;
  case OP_DIV:
    if (y == 0)
      return false;
    *r = x / y;
    break;
  default:
    return false;
  }
  return isfinite(*r);
}

/* The same in double, as the f64 kernel computes it. */
static bool elem64(Op op, double x, double y, double *r)
{
  switch (op) {
  case OP_NEG:     *r = -x; break;
  case OP_EXP:     *r = exp(x); break;
  case OP_LOG:     *r = log(x); break;
  case OP_SQRT:    *r = sqrt(x); break;
  case OP_SIN:     *r = sin(x); break;
  case OP_COS:     *r = cos(x); break;
  case OP_TANH:    *r = tanh(x); break;
  case OP_SIGMOID: *r = 1 / (1 + exp(-x)); break;
  case OP_RELU:    *r = x > 0 ? x : 0; break;
  case OP_ADD:     *r = x + y; break;
  case OP_SUB:     *r = x - y; break;
  case OP_MUL:     *r = x * y; break;
  case OP_DIV:
    if (y == 0)
      return false;
    *r = x / y;
    break;
  default:
    return false;
  }
  return isfinite(*r);
}

/* A value as the node's dtype stores it. */
static double store(const Node *n, double v)
{
  return n->dtype == DT_F32 ? (double)(float)v : v;
}

/* Evaluates node i from its constant inputs; NULL when it is not foldable
 * or folding it would change its meaning. */
static double *eval(Fold *F, int i)
{
  Graph *g = F->g;
  Node *n = &g->node[i];
  int64_t cnt = numel(n);
  if (n->dead || n->loop || n->shape.seq || !op_is(n->op, P_FOLD) || n->dtype == DT_I32 || cnt > FOLD_MAX_EVAL)
    return NULL;
  for (int k = 0; k < n->nin; k++)
    if (!F->val[n->in[k]])
      return NULL;
  double *y = xcalloc((size_t)cnt + 1, sizeof(double));
  const double *x0 = n->nin > 0 ? F->val[n->in[0]] : NULL;
  const double *x1 = n->nin > 1 ? F->val[n->in[1]] : NULL;
  int idx[MAXRANK];
  switch (n->op) {
  case OP_CONST:
    y[0] = store(n, n->a.f);
    break;
  case OP_ARANGE:
    for (int64_t j = 0; j < cnt; j++)
      y[j] = store(n, n->a.f + (double)j * n->a.f2);   /* (real)(start + i * step), as k_fill */
    break;
  case OP_LITERAL:
    memcpy(y, n->a.data, sizeof(double) * (size_t)cnt);
    break;
  case OP_RESHAPE:
    memcpy(y, x0, sizeof(double) * (size_t)cnt);
    break;
  case OP_TRANSPOSE: {
    Node *x = &g->node[n->in[0]];
    int64_t xs[MAXRANK];
    strides(&x->shape, xs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += xs[n->a.perm[d]] * idx[d];
      y[j] = x0[off];
    }
    break;
  }
  case OP_SLICE: {
    Node *x = &g->node[n->in[0]];
    int64_t xs[MAXRANK];
    strides(&x->shape, xs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      idx[n->a.axis] += n->a.start;
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += xs[d] * idx[d];
      y[j] = x0[off];
    }
    break;
  }
  case OP_CONCAT: {
    Node *a = &g->node[n->in[0]], *b = &g->node[n->in[1]];
    int ax = n->a.axis, na = a->shape.dim[ax];
    int64_t as[MAXRANK], bs[MAXRANK];
    strides(&a->shape, as);
    strides(&b->shape, bs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      bool first = idx[ax] < na;
      if (!first)
        idx[ax] -= na;
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += (first ? as[d] : bs[d]) * idx[d];
      y[j] = first ? x0[off] : x1[off];
    }
    break;
  }
  default: {
    if (!op_is(n->op, P_ELEM))
      goto refuse;
    Node *a = &g->node[n->in[0]], *b = n->nin > 1 ? &g->node[n->in[1]] : NULL;
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      double u = x0[bcast_index(&n->shape, &a->shape, idx)];
      double v = b ? x1[bcast_index(&n->shape, &b->shape, idx)] : 0;
      bool ok;
      if (n->dtype == DT_F32) {
        float r;
        ok = elem32(n->op, (float)u, (float)v, &r);
        y[j] = r;
      } else {
        ok = elem64(n->op, u, v, &y[j]);
      }
      if (!ok)
        goto refuse;
    }
    break;
  }
  }
  return y;
refuse:
  free(y);
  return NULL;
}

static bool is_leaf_const(const Node *n)
{
  return n->op == OP_CONST || n->op == OP_ARANGE || n->op == OP_LITERAL;
}

/* Rows [lo, hi) of a frontier table that its users can read: when every
 * run-time user slices along axis 0, only the union of their ranges. */
static void used_rows(Fold *F, Users *u, int i, int *lo, int *hi)
{
  Graph *g = F->g;
  Node *n = &g->node[i];
  *lo = 0;
  *hi = n->shape.rank ? n->shape.dim[0] : 1;
  if (!n->shape.rank || u->out[i])
    return;
  int l = *hi, h = 0;
  for (int k = 0; k < u->n[i]; k++) {
    Node *s = &g->node[u->u[i][k]];
    if (F->val[u->u[i][k]])
      continue;   /* folded too */
    if (s->op != OP_SLICE || s->a.axis != 0)
      return;
    int len = s->a.len < 0 ? -s->a.len * g->max_seq : s->a.len;
    l = s->a.start < l ? s->a.start : l;
    h = s->a.start + len > h ? s->a.start + len : h;
  }
  if (h > l) {
    *lo = l;
    *hi = h;
  }
}

void fold_constants(Graph *g)
{
  Fold F = {g, xcalloc((size_t)g->nnode + 1, sizeof(double *))};
  for (int i = 0; i < g->nnode; i++)
    F.val[i] = eval(&F, i);
  Users u = users_make(g);
  bool *frontier = xcalloc((size_t)g->nnode + 1, sizeof(bool));

  /* The frontier: constants read at run time.  One too big to write out
   * is not folded, which makes its inputs the frontier; repeat until
   * every frontier table fits. */
  for (bool again = true; again;) {
    again = false;
    for (int i = 0; i < g->nnode; i++) {
      frontier[i] = false;
      if (!F.val[i])
        continue;
      bool runtime_user = u.out[i];
      for (int k = 0; k < u.n[i] && !runtime_user; k++)
        runtime_user = !F.val[u.u[i][k]];
      frontier[i] = runtime_user;
    }
    for (int i = 0; i < g->nnode; i++) {
      if (!frontier[i] || is_leaf_const(&g->node[i]))
        continue;
      int lo, hi;
      used_rows(&F, &u, i, &lo, &hi);
      int64_t row = g->node[i].shape.rank ? numel(&g->node[i]) / g->node[i].shape.dim[0] : 1;
      if ((int64_t)(hi - lo) * row > FOLD_MAX_TABLE) {
        free(F.val[i]);
        F.val[i] = NULL;
        again = true;
      }
    }
  }

  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!F.val[i] || is_leaf_const(n))
      continue;
    if (!frontier[i]) {
      kill_node(g, &u, i);   /* read only by other constants */
      continue;
    }
    int lo, hi;
    used_rows(&F, &u, i, &lo, &hi);
    int64_t row = n->shape.rank ? numel(n) / n->shape.dim[0] : 1;
    double *data = arena_calloc((size_t)((hi - lo) * row) + 1, sizeof(double));
    memcpy(data, F.val[i] + lo * row, sizeof(double) * (size_t)((hi - lo) * row));
    n->op = OP_LITERAL;
    n->nin = 0;
    for (int k = 0; k < MAXIN; k++)
      n->in[k] = -1;
    Shape s = n->shape;
    if (s.rank)
      s.dim[0] = hi - lo;
    n->a = (Attr){.shape = s, .data = data};
    n->shape = s;
    /* its slices now start at lo; at top level they read the table in place */
    for (int k = 0; k < u.n[i]; k++) {
      Node *sl = &g->node[u.u[i][k]];
      if (F.val[u.u[i][k]] || sl->op != OP_SLICE || !n->shape.rank)
        continue;
      if (sl->a.axis == 0)
        sl->a.start -= lo;
      if (sl->a.axis == 0 && !sl->loop)
        sl->a.view = true;
    }
  }
  /* constant leaves that only constants read are gone with them */
  for (int i = 0; i < g->nnode; i++)
    if (F.val[i] && is_leaf_const(&g->node[i]) && !frontier[i] && !g->node[i].dead)
      kill_node(g, &u, i);
  for (int i = 0; i < g->nnode; i++)
    free(F.val[i]);
  free(F.val);
  free(frontier);
  users_free(&u);
}
