/*
 * passes.c: the table of optimization passes, in the order they run, and
 * the small helpers they share.
 *
 * `-O0` runs none (every op its own kernel, nothing folded, every buffer
 * its own region), `-O1` those of level 1, `-O2` (the default) all;
 * --disable-pass / --enable-pass switch single passes by name.  Every
 * pass runs over forward and backward together (autodiff runs first), and
 * the verifier runs after each.  The order matters: last-step rebuilds the
 * generation program's output on the last position first, folding and cse make
 * identical nodes identical, the fusions find their patterns in a cleaned
 * graph, dce drops what the fusions orphaned, row-grad marks the embedding
 * gradients that are left as rows, and plan-memory, which must be last,
 * places what is left.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

const Pass passes[] = {
  {"last-step", "the generation program's log-probabilities for the last position only", 1, last_step},
  {"fold-constants", "evaluate subgraphs of constants at compile time into static tables", 1, fold_constants},
  {"cse", "merge identical nodes (duplicate stacks, constants, sums)", 1, cse},
  {"fuse-add-dropout", "dropout(a + b) and a + dropout(b) as one kernel (forward and backward)", 1, fuse_add_dropout},
  {"fuse-nll", "nll_loss and its gradient in log_softmax's pass: one exp per logit, logp stored only if read", 2,
   fuse_nll},
  {"fuse-matmul-bias", "matmul + bias as one gemm that adds onto the broadcast bias (beta = 1)", 2, fuse_matmul_bias},
  {"fuse-elementwise", "chains of elementwise ops (gate arithmetic, bias + activation) as one loop", 2, fuse_elementwise},
  {"dce", "delete nodes that no output depends on", 1, dce},
  {"row-grad", "an embedding table's gradient as the rows the batch read (ids, count), not V x E", 1, row_grad},
  {"plan-memory", "one arena: buffers reuse regions whose lifetimes do not overlap", 1, plan_memory},
};

const int npasses = sizeof passes / sizeof passes[0];

const Pass *find_pass(const char *name)
{
  for (int i = 0; i < npasses; i++)
    if (!strcmp(passes[i].name, name))
      return &passes[i];
  return NULL;
}

/* ------------------------------------------------------------ helpers */

/* Users of every node, counting only nodes an output depends on: a pass
 * sees the graph as dce would leave it (autodiff stacks every body value,
 * and most of those stacks are never read). */
/* live[i]: some output depends on node i (the caller sets the outputs'
 * entries).  Carries point forward (in[1]), so the walk runs to a fixed
 * point. */
void mark_live(const Graph *g, bool *live)
{
  for (bool changed = true; changed;) {   /* carries point forward */
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
}

Users users_make(Graph *g)
{
  Users u;
  u.nnode = g->nnode;
  u.n = xcalloc((size_t)g->nnode + 1, sizeof(int));
  u.u = xcalloc((size_t)g->nnode + 1, sizeof(int *));
  u.out = xcalloc((size_t)g->nnode + 1, sizeof(bool));
  bool *live = xcalloc((size_t)g->nnode + 1, sizeof(bool));
  for (int o = 0; o < g->nout; o++)
    live[g->out[o].node] = u.out[g->out[o].node] = true;
  mark_live(g, live);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || !live[i])
      continue;
    for (int k = 0; k < n->nin; k++)
      u.n[n->in[k]]++;
  }
  for (int i = 0; i < g->nnode; i++)
    u.u[i] = xcalloc((size_t)u.n[i] + 1, sizeof(int));
  int *fill = xcalloc((size_t)g->nnode + 1, sizeof(int));
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || !live[i])
      continue;
    for (int k = 0; k < n->nin; k++)
      u.u[n->in[k]][fill[n->in[k]]++] = i;
  }
  free(fill);
  u.live = live;

  /* the readers no output depends on, for kill_node */
  u.idle_start = xcalloc((size_t)g->nnode + 2, sizeof(int));
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!n->dead && !live[i])
      for (int k = 0; k < n->nin; k++)
        u.idle_start[n->in[k] + 2]++;
  }
  for (int i = 0; i < g->nnode; i++)
    u.idle_start[i + 2] += u.idle_start[i + 1];
  u.idle = xcalloc((size_t)u.idle_start[g->nnode + 1] + 1, sizeof(int));
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!n->dead && !live[i])
      for (int k = 0; k < n->nin; k++)
        u.idle[u.idle_start[n->in[k] + 1]++] = i;
  }
  return u;
}

void kill_node(Graph *g, const Users *u, int i)
{
  if (i >= u->nnode)
    die("kill_node: node %d is newer than the users (%d nodes)", i, u->nnode);
  int cap = 16, nstack = 0;
  int *stack = xcalloc((size_t)cap, sizeof(int));
  g->node[i].dead = true;
  stack[nstack++] = i;
  while (nstack > 0) {
    int x = stack[--nstack];
    for (int k = u->idle_start[x]; k < u->idle_start[x + 1]; k++) {
      int j = u->idle[k];
      if (g->node[j].dead)
        continue;
      g->node[j].dead = true;
      if (nstack == cap)
        stack = xrealloc(stack, sizeof(int) * (size_t)(cap *= 2));
      stack[nstack++] = j;
    }
  }
  free(stack);
}

void users_free(Users *u)
{
  for (int i = 0; i < u->nnode; i++)
    free(u->u[i]);
  free(u->u);
  free(u->n);
  free(u->out);
  free(u->live);
  free(u->idle_start);
  free(u->idle);
  memset(u, 0, sizeof *u);
}

void replace_uses(Graph *g, int from, int to)
{
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == from)
        n->in[k] = to;
  }
  for (int o = 0; o < g->nout; o++)
    if (g->out[o].node == from)
      g->out[o].node = to;
}

/* Views share their source's bytes.  A reshape in a loop body of a
 * top-level value is a copy instead, so that every body value is stored
 * per step; a slice is a view only where a pass made it one (a contiguous
 * run of a top-level value). */
bool is_view(const Graph *g, const Node *n)
{
  if (n->op == OP_RESHAPE)
    return !n->loop || g->node[n->in[0]].loop;
  if (n->op == OP_SLICE)
    return n->a.view;
  return n->op == OP_STEP || n->op == OP_STACK || n->op == OP_FINAL || n->op == OP_LAST_STEP;
}
