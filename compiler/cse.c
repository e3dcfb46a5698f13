/*
 * cse.c: common-subexpression elimination.
 *
 * Two live nodes with the same op, the same inputs, the same attributes
 * (same_attr) and in the same loop compute the same value; the later one
 * is replaced by the earlier one everywhere, outputs included.  Autodiff
 * makes such pairs on purpose, to stay simple: a STACK of the same body
 * value for every use after the reverse loop, a `const 0` for every zero
 * gradient, the bias gradients of an LSTM layer (b_ih and b_hh get the
 * same sum over the same stack).  Dropout nodes merge only with the same
 * stream, so equal masks; inputs, parameters and carries never merge, and
 * neither do pads: fuse-elementwise stores a sum of pads window by window
 * into the sum, which a pad shared by two sums (the GRU's gradients of
 * x W_ih^T and h W_hh^T) would prevent, and a fused pad costs nothing.
 *
 * One pass in schedule order suffices: inputs are made canonical before a
 * node is looked up, so a merge makes its users identical in turn.  A
 * carry's next value (a forward reference) is made canonical at the end.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

static uint64_t key(const Node *n)
{
  uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
  MIX(n->op);
  MIX(n->loop);
  MIX(n->shape.rank);
  for (int i = 0; i < n->shape.rank; i++)
    MIX(n->shape.dim[i]);
  for (int k = 0; k < n->nin; k++)
    MIX(n->in[k]);
  MIX(attr_hash(n));
#undef MIX
  return h;
}

void cse(Graph *g)
{
  int *rep = xcalloc((size_t)g->nnode + 1, sizeof(int));
  size_t cap = 16;
  while (cap < 2 * (size_t)g->nnode)
    cap *= 2;
  int *table = xcalloc(cap, sizeof(int));   /* node + 1, or 0 for empty */
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    rep[i] = i;
    if (n->dead)
      continue;
    for (int k = 0; k < n->nin; k++)
      if (!(n->op == OP_CARRY && k == 1))
        n->in[k] = rep[n->in[k]];
    if (op_is(n->op, P_UNIQUE) || n->op == OP_PAD)
      continue;
    size_t h = (size_t)key(n) & (cap - 1);
    for (;; h = (h + 1) & (cap - 1)) {
      if (!table[h]) {
        table[h] = i + 1;
        break;
      }
      Node *m = &g->node[table[h] - 1];
      if (m->loop == n->loop && m->nin == n->nin && !memcmp(m->in, n->in, sizeof(int) * (size_t)n->nin) &&
          same_attr(m, n)) {
        rep[i] = table[h] - 1;
        n->dead = true;
        break;
      }
    }
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!n->dead && n->op == OP_CARRY)
      n->in[1] = rep[n->in[1]];
  }
  for (int o = 0; o < g->nout; o++)
    g->out[o].node = rep[g->out[o].node];
  free(rep);
  free(table);
}
