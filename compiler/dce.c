/*
 * dce.c: dead-code elimination.
 *
 * A node is live when an output depends on it; parameters and inputs stay
 * (the parameter layout and the run-time interface do not change with the
 * pass pipeline).  A carry keeps its next value alive, and a live loop body
 * value keeps the carries of its loop alive only through real uses.
 */
#include <stdlib.h>
#include "lmc.h"

void dce(Graph *g)
{
  bool *live = xcalloc((size_t)g->nnode, sizeof(bool));
  for (int o = 0; o < g->nout; o++)
    live[g->out[o].node] = true;
  /* Carries point forward (in[1]), so iterate to a fixed point. */
  for (bool changed = true; changed;) {
    changed = false;
    for (int i = g->nnode - 1; i >= 0; i--) {
      Node *n = &g->node[i];
      if (n->dead || !live[i])
        continue;
      for (int k = 0; k < n->nin; k++)
        if (!live[n->in[k]]) {
          live[n->in[k]] = true;
          changed |= n->in[k] > i;
        }
    }
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!live[i] && n->op != OP_PARAM && n->op != OP_INPUT)
      n->dead = true;
  }
  free(live);
}
