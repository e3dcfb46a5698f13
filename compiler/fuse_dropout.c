/*
 * fuse_dropout.c: fuse-add-dropout.
 *
 *   dropout(a + b)   ->  dropout_add(a, b)    (the positional encoding)
 *   a + dropout(b)   ->  add_dropout(a, b)    (every residual connection)
 *
 * Each becomes one kernel that reads a and b once, draws the mask from the
 * counter-based generator and writes y: no intermediate sum or dropped
 * tensor is stored.  The mask is drawn at the same element index as the
 * dropout node it replaces (y's index for dropout(a + b), b's index for
 * a + dropout(b)) with the same stream, so it is bit for bit the unfused
 * build's.  dropout_grad redraws the same mask and computes the same
 * expression, so the backward graph's patterns (a gradient accumulated
 * with a dropout_grad) fuse the same way; there the mask is never stored
 * either.  A dropout read through a STEP (a top-level dropout_grad feeding
 * an add in a loop body, as the LSTM's backward does) fuses too: the body
 * reads the undropped value at step t, and the mask index t * stepnumel + i
 * is the top-level node's.
 *
 * The add or dropout a rewrite leaves without users dies here; anything
 * else is left to dce.
 */
#include <stdlib.h>
#include "lmc.h"

static bool is_dropout(const Node *n)
{
  return n->op == OP_DROPOUT || n->op == OP_DROPOUT_GRAD;
}

typedef struct {
  Graph *g;
  Users *u;
  int *nuse;
  bool *out;
} Fuse;

static void unuse(Fuse *F, int i)
{
  if (--F->nuse[i] == 0 && !F->out[i]) {
    Node *n = &F->g->node[i];
    kill_node(F->g, F->u, i);
    for (int k = 0; k < n->nin; k++)
      F->nuse[n->in[k]]--;
  }
}

void fuse_add_dropout(Graph *g)
{
  Users u = users_make(g);
  Fuse F = {g, &u, u.n, u.out};
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    if (n->op == OP_ADD) {
      /* a + dropout(b), the dropout directly or through a single-use STEP */
      for (int k = 1; k >= 0; k--) {
        int x = n->in[k];
        Node *d = &g->node[x];
        int step = -1;
        if (d->op == OP_STEP && F.nuse[x] == 1 && !F.out[x] && is_dropout(&g->node[d->in[0]])) {
          step = x;
          x = d->in[0];
          d = &g->node[x];
        }
        if (!is_dropout(d) || (step < 0 && d->loop != n->loop))
          continue;
        Attr a = d->a;
        int other = n->in[1 - k];
        int b = d->in[0];
        F.nuse[b]++;   /* read by the step, or by n itself */
        if (step >= 0) {
          g->node[step].in[0] = b;   /* the step now reads the undropped value */
          b = step;
        }
        unuse(&F, x);
        n->op = OP_ADD_DROPOUT;
        n->in[0] = other;
        n->in[1] = b;
        n->a = a;
        break;
      }
    } else if (is_dropout(n)) {
      /* dropout(a + b) */
      int s = n->in[0];
      Node *add = &g->node[s];
      if (add->op != OP_ADD || add->loop != n->loop)
        continue;
      int a = add->in[0], b = add->in[1];
      F.nuse[a]++;
      F.nuse[b]++;
      unuse(&F, s);
      n->op = OP_DROPOUT_ADD;
      n->nin = 2;
      n->in[0] = a;
      n->in[1] = b;
    }
  }
  users_free(&u);
}
