/*
 * kv_cache.c: generation with a key/value cache, for any graph whose
 * positions meet only in causal attention.
 *
 * The gen program of a model without state (the Transformer) sees the
 * whole window for every word: each new word recomputes every position of
 * every layer.  The step program computes only the new positions, T of
 * them from position c->pos.  It is the graph file loaded once more with
 * FrontOptions.kv_cache, under which the front end builds
 *   bmm(a, b), b's positions in its dim -2 (the keys of q k^T, the values
 *     of attn v), as bmm(a, kv_write(cache, b)): b's T rows written at
 *     row pos of a state (..., max_seq, ...) that the program carries from
 *     call to call, the product over all max_seq rows of it;
 *   triu_mask() (T, T) as causal_mask (T, max_seq): 0 where column
 *     j <= pos + row i, else -inf, so that the rows of a cache beyond the
 *     window (zeros, or a longer window's) get weight 0;
 *   slice(table, axis, 0, seq()) of a table without T (the positional
 *     encoding) as slice_pos: the rows pos .. pos + T - 1.
 * Every other op treats each position on its own, so row t of the step
 * program is row pos + t of the gen program on the same window.
 *
 * kv_cacheable() says whether that holds of a gen graph as the front end
 * built it (its live nodes, the loss dropped): no state and no loop; no
 * arange of length T (positions that slice_pos would not move); a slice of
 * length T of a table starts at 0; a tensor with two T dimensions is
 * attention's scores (..., T, T): a triu_mask, a bmm whose b has its
 * positions in dim -2, an elementwise op or a softmax of such, read only
 * by those or as the a of such a bmm, and that bmm's a comes from a
 * softmax; every such softmax reads an add of a triu_mask (a position sees
 * no later one, so the keys and values of earlier positions stay what
 * they were); nothing else runs along a T dimension (softmax,
 * log_softmax, normalize, sum, concat) or reads T in the b of a product.
 * Otherwise lmc compiles no step program, and generation runs the gen
 * program on the window.
 */
#include <stdlib.h>

#include "lmc.h"

static int nseq(const Shape *s)
{
  return __builtin_popcount(s->seq);
}

static bool seq_at(const Shape *s, int i)
{
  return i >= 0 && i < s->rank && (s->seq >> i & 1);
}

/* b of a bmm has its positions in dim -2, and T nowhere else. */
static bool positions_in_rows(const Shape *b)
{
  return b->rank >= 2 && b->seq == 1u << (b->rank - 2) && b->dim[b->rank - 2] == 1;
}

/* Whether the attention scores x (two T dims) come, through elementwise
 * ops, from an add of a triu_mask. */
static bool masked(const Graph *g, int x)
{
  for (;;) {
    const Node *n = &g->node[x];
    if (!op_is(n->op, P_ELEM) || n->nin == 0)
      return false;
    if (n->op == OP_ADD)
      for (int k = 0; k < 2; k++)
        if (g->node[n->in[k]].op == OP_TRIU_MASK)
          return true;
    int next = -1;
    for (int k = 0; k < n->nin; k++)
      if (nseq(&g->node[n->in[k]].shape) == 2)
        next = n->in[k];
    if (next < 0)
      return false;
    x = next;
  }
}

/* Whether x (two T dims), the a of attention's second product, comes
 * through elementwise ops from a softmax. */
static bool from_softmax(const Graph *g, int x)
{
  while (g->node[x].op != OP_SOFTMAX) {
    const Node *n = &g->node[x];
    if (!op_is(n->op, P_ELEM) || n->nin != 1)
      return false;
    x = n->in[0];
  }
  return true;
}

/* Node n of the scores' family: may it have two T dims, and read its
 * inputs that have? */
static bool scores_ok(const Graph *g, const Node *n)
{
  const Shape *a = n->nin > 0 ? &g->node[n->in[0]].shape : NULL;
  const Shape *b = n->nin > 1 ? &g->node[n->in[1]].shape : NULL;
  switch (n->op) {
  case OP_TRIU_MASK:
    return true;
  case OP_SOFTMAX:
    return masked(g, n->in[0]);
  case OP_BMM:
    if (n->a.ta || !positions_in_rows(b))
      return false;
    if (nseq(a) == 2)   /* attn v */
      return !n->a.tb && from_softmax(g, n->in[0]);
    return n->a.tb && nseq(a) == 1 && seq_at(a, a->rank - 2);   /* q k^T */
  default:
    return op_is(n->op, P_ELEM);
  }
}

/* Node n, neither scores nor reading them: does it treat each position
 * on its own? */
static bool rowwise(const Graph *g, const Node *n)
{
  const Shape *x = n->nin > 0 ? &g->node[n->in[0]].shape : NULL;
  const Shape *y = n->nin > 1 ? &g->node[n->in[1]].shape : NULL;
  switch (n->op) {
  case OP_INPUT:
    return !n->a.state;
  case OP_ARANGE:
    return !n->shape.seq;
  case OP_SLICE:   /* of length T: a table's first T rows (slice_pos) */
    return !(n->shape.seq >> n->a.axis & 1) || (n->a.start == 0 && !x->seq);
  case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_NORMALIZE:
    return !seq_at(x, x->rank - 1);
  case OP_SUM:
    return n->a.shape.seq == x->seq;
  case OP_CONCAT:
    return !seq_at(x, n->a.axis);
  case OP_MATMUL: case OP_MATMUL_BIAS:
    return !y->seq && !(n->a.ta && x->seq);
  case OP_BMM:
    return positions_in_rows(y) && !(n->a.ta && x->seq);
  default:
    return !op_is(n->op, P_LOOP) && n->op != OP_NLL_LOSS && n->op != OP_LAST_STEP;
  }
}

bool kv_cacheable(const Graph *g)
{
  bool *live = xcalloc((size_t)g->nnode + 1, 1);
  for (int i = 0; i < g->nout; i++)
    live[g->out[i].node] = true;
  bool ok = g->nloop <= 1, cached = false;
  for (int i = g->nnode - 1; i >= 0 && ok; i--) {
    const Node *n = &g->node[i];
    if (!live[i] || n->dead)
      continue;
    for (int k = 0; k < n->nin; k++)
      live[n->in[k]] = true;
    bool reads_scores = false;
    for (int k = 0; k < n->nin; k++)
      reads_scores |= nseq(&g->node[n->in[k]].shape) == 2;
    if (nseq(&n->shape) > 2)
      ok = false;
    else if (nseq(&n->shape) == 2 || reads_scores)
      ok = scores_ok(g, n);
    else
      ok = rowwise(g, n);
    cached |= n->op == OP_BMM && ok;
  }
  for (int i = 0; i < g->nout && ok; i++)
    ok = nseq(&g->node[g->out[i].node].shape) < 2;
  free(live);
  return ok && cached;
}

/* The front end's bmm under FrontOptions.kv_cache: b (..., T, n), its
 * positions in rows, becomes the cache number k, its T rows written at
 * pos; the graph gets the cache as a state and its new value as the
 * output of that name. */
int kv_cache_rows(Graph *g, int b, int k)
{
  Shape s = g->node[b].shape;
  if (!positions_in_rows(&s))
    return b;
  s.seq = 0;
  s.dim[s.rank - 2] = g->max_seq;
  const char *name = arena_printf("kv_cache.%d", k);
  int cache = ir_input(g, name, g->node[b].dtype, s, true);
  int w = ir_op2(g, OP_KV_WRITE, cache, b, &(Attr){.axis = s.rank - 2});
  ir_output(g, name, w);
  return w;
}

/* Shapes of the step program's own ops (ir.c's infer). */
bool kv_infer(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  switch (n->op) {
  case OP_CAUSAL_MASK:
    n->shape = shape_make(2, (int[]){1, g->max_seq}, 1);
    return true;
  case OP_SLICE_POS:
    if (x->seq || x->dim[n->a.axis] < g->max_seq)
      die("slice_pos of %s along %d", shape_str(x), n->a.axis);
    n->dtype = g->node[n->in[0]].dtype;
    n->shape = *x;
    n->shape.dim[n->a.axis] = 1;
    n->shape.seq = 1u << n->a.axis;
    return true;
  case OP_KV_WRITE:
    if (x->seq || x->dim[n->a.axis] != g->max_seq || y->seq != 1u << n->a.axis)
      die("kv_write of %s into %s", shape_str(y), shape_str(x));
    n->dtype = g->node[n->in[0]].dtype;
    n->shape = *x;
    return true;
  default:
    return false;
  }
}
