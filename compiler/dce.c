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
  mark_live(g, live);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!live[i] && n->op != OP_PARAM && n->op != OP_INPUT)
      n->dead = true;
  }
  free(live);
}
