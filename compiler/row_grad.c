/*
 * row_grad.c: row-grad, an embedding table's gradient as the rows the
 * batch read, not as a table.
 *
 *   grad:W = embedding_grad(dy, ids)   (V, E), at most R = numel(ids) rows nonzero
 *
 * A dense gradient is V x E (86 MB for the 33278 x 650 table) to clear,
 * scatter into, clip, and read in the SGD step, for at most R (700) rows
 * that the batch touched.  Marked `rows`, the kernel writes R x E rows,
 * their ids in ascending order and their count into the gradient block
 * instead (docs/emitted-code.md, "The gradient block"), and the emitted
 * clip / SGD / AdamW read them there.  Every value is summed in the dense
 * kernel's order (row by row, ids in batch order), the clipping norm adds
 * the same nonzero squares in the same lanes, and SGD skips only rows it
 * would subtract zero from: training gives the dense build's bits.
 *
 * Only an embedding_grad that is a parameter's whole gradient (an output
 * "grad:<name>" read by nothing else: a tied table adds the decoder's dense
 * gradient and stays dense), outside loops, where 2 R <= V and E >= 4.
 */
#include <string.h>
#include "lmc.h"

void row_grad(Graph *g)
{
  Users u = users_make(g);
  for (int o = 0; o < g->nout; o++) {
    if (strncmp(g->out[o].name, "grad:", 5))
      continue;
    int i = g->out[o].node;
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_EMBEDDING_GRAD || n->group || n->loop || u.n[i] != 0 || n->shape.rank != 2 ||
        n->shape.seq)
      continue;
    int64_t rows = shape_numel(&g->node[n->in[1]].shape, g->max_seq);
    if (2 * rows <= n->shape.dim[0] && n->shape.dim[1] >= 4)   /* then the rows take less room */
      n->a.rows = true;
  }
  users_free(&u);
}
