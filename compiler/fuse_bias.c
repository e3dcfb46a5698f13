/*
 * fuse_bias.c: fuse-matmul-bias, a linear layer's bias added by its GEMM.
 *
 *   add(matmul(a, w), b)  ->  matmul_bias(a, w, b)
 *
 * where b broadcasts to the product (a bias over its last dim, or any
 * smaller shape).  The kernel fills y with the broadcast bias and calls
 * ?gemm with beta = 1, so the product is added onto it: the separate add,
 * which reads and writes the whole product once more (the decoder's
 * 700 x 33278 logits, 93 MB), goes away.  GEMM kernels add their
 * accumulator to C once per K block; with K no larger than a block (the
 * models' hidden sizes up to a few hundred) that is the unfused build's
 * rounding, round(round(a w) + b), bit for bit; with several blocks the
 * bias is added before the last block's partial sum instead of after all
 * of them, a reordering of one addition.
 *
 * Only a matmul read by nothing else, without a transposed left operand
 * (those are weight gradients, which have no bias), in the same loop.
 */
#include "lmc.h"

void fuse_matmul_bias(Graph *g)
{
  Users u = users_make(g);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_ADD || n->group)   /* grouped: fuse-nll adds it */
      continue;
    for (int k = 0; k < 2; k++) {
      int m = n->in[k], b = n->in[1 - k];
      Node *mm = &g->node[m], *bias = &g->node[b];
      if (mm->op != OP_MATMUL || mm->a.ta || mm->loop != n->loop || u.n[m] != 1 || u.out[m])
        continue;
      if (!shape_eq(&mm->shape, &n->shape) || shape_numel(&bias->shape, 1) >= shape_numel(&n->shape, 1) ||
          bias->shape.seq)
        continue;
      n->op = OP_MATMUL_BIAS;
      n->nin = 3;
      n->in[0] = mm->in[0];
      n->in[1] = mm->in[1];
      n->in[2] = b;
      n->a.ta = 0;
      n->a.tb = mm->a.tb;
      kill_node(g, &u, m);
      break;
    }
  }
  users_free(&u);
}
