/*
 * last_step.c: last-step, the generation program's log-probabilities at
 * the last position only.
 *
 * Generation samples each word from the log-probabilities of the last
 * position of the window it feeds (one position for the recurrent models,
 * which carry their state, but up to bptt for the Transformer, which sees
 * the whole window again for every word), yet the graph computes them for
 * every position: for the Transformer, 35 rows of the (ntoken, emsize)
 * decoder product and of log_softmax per word where one is read.  This
 * pass rebuilds the ops that feed the "logp" output row by row along the
 * sequence dimension on the last step alone:
 *
 *   log_softmax(matmul_bias(x, W, b))  ->  log_softmax(matmul_bias(last_step(x), W, b))
 *
 * walking up from the output through ops that treat each position on its
 * own (the P_ROWS ops of the op table: elementwise ops but dropout, with a
 * broadcast operand, softmax and log_softmax, normalize; and matmul and
 * matmul_bias of rows by a weight) and stopping at
 * the first op that mixes positions (attention, the recurrent loop's
 * stack), whose last step is a view: last_step(x) is x + (T - 1) rows, no
 * copy.  The output then has shape (1, B, ntoken) where it had (T, B,
 * ntoken), and the program says so (LmcProgram.logp_last).  The loss of
 * the generation program, which needs every position, is not kept:
 * lmc compile drops it (compiler/main.c), as the runtime never asks for it;
 * a program that has a loss (training, evaluation) is left alone.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

/* (T, ...): the sequence as the first dimension, once. */
static bool seq_first(const Shape *s)
{
  return s->rank >= 1 && (s->seq & 1) && s->dim[0] == 1;
}

typedef struct {
  Graph *g;
  int *memo;      /* per node: its last-step node, or -1 */
  int restricted; /* ops rebuilt on the last step */
} Last;

/* How node x is rebuilt on the last step: from the last steps of its
 * first nops operands (those that depend on the position), or, for -1, as
 * a last_step view of x. */
static int rebuilt_operands(const Graph *g, const Node *n)
{
  bool seq_only_first = n->shape.seq == 1u;
  if (seq_only_first && op_is(n->op, P_ROWS) && n->nin == 1)
    return 1;
  if (seq_only_first && op_is(n->op, P_ROWS) && op_is(n->op, P_ELEM) && n->nin == 2) {
    const Shape *a = &g->node[n->in[0]].shape, *b = &g->node[n->in[1]].shape;
    if ((!a->seq || (seq_first(a) && a->rank == n->shape.rank)) && (!b->seq || (seq_first(b) && b->rank == n->shape.rank)))
      return 2;
    return -1;
  }
  if (seq_only_first && (n->op == OP_MATMUL || n->op == OP_MATMUL_BIAS) && !n->a.ta &&
      seq_first(&g->node[n->in[0]].shape) && g->node[n->in[0]].shape.seq == 1u &&
      !g->node[n->in[1]].shape.seq && (n->op == OP_MATMUL || !g->node[n->in[2]].shape.seq))
    return n->nin;
  return -1;
}

typedef struct {
  int x;          /* the node being rebuilt */
  int k;          /* operands done */
  int nops;       /* rebuilt_operands */
  int in[MAXIN];
} Frame;

/* The last-step node of x, memoised.  Depth first over the operands that
 * depend on the position, with a stack of its own (a graph may be tens of
 * thousands of ops deep): each node is built after its operands, at the
 * location and in the scope of the node it restricts. */
static int last_of(Last *L, int x)
{
  Graph *g = L->g;
  if (L->memo[x] >= 0)
    return L->memo[x];
  int cap = 64, top = 0;
  Frame *st = xcalloc((size_t)cap, sizeof(Frame));
  st[top++] = (Frame){.x = x, .k = -1};
  while (top > 0) {
    Frame *f = &st[top - 1];
    Node n = g->node[f->x];   /* a copy: building nodes may move the array */
    if (f->k < 0) {           /* first visit */
      f->nops = rebuilt_operands(g, &n);
      f->k = 0;
    }
    /* an operand that does not depend on the position is itself */
    while (f->k < f->nops && (!g->node[n.in[f->k]].shape.seq || L->memo[n.in[f->k]] >= 0)) {
      int j = n.in[f->k];
      f->in[f->k++] = g->node[j].shape.seq ? L->memo[j] : j;
    }
    if (f->k < f->nops) {
      int child = n.in[f->k];
      if (top == cap)
        st = xrealloc(st, sizeof(Frame) * (size_t)(cap *= 2));
      st[top++] = (Frame){.x = child, .k = -1};
      continue;
    }
    int r;
    g->cur_file = n.file;
    g->cur_line = n.line;
    g->cur_scope = n.scope;
    if (f->nops >= 0) {
      r = ir_op(g, n.op, n.nin, f->in, &n.a);
      L->restricted++;
    } else {
      r = ir_op1(g, OP_LAST_STEP, f->x, NULL);
    }
    L->memo[f->x] = r;
    top--;
  }
  free(st);
  return L->memo[x];
}

void last_step(Graph *g)
{
  if (ir_find_output(g, "loss") >= 0)
    return;   /* a program with a loss needs every position: not generation */
  for (int o = 0; o < g->nout; o++) {
    Output *out = &g->out[o];
    Node *n = &g->node[out->node];
    if (strcmp(out->name, "logp") || n->loop || !seq_first(&n->shape) || n->shape.seq != 1u)
      continue;
    int nnode = g->nnode;
    Last L = {.g = g, .memo = xcalloc((size_t)nnode + 1, sizeof(int))};
    for (int i = 0; i < nnode; i++)
      L.memo[i] = -1;
    int r = last_of(&L, out->node);
    free(L.memo);
    if (L.restricted == 0) {   /* nothing to save: leave the graph as it was */
      for (int i = nnode; i < g->nnode; i++)
        g->node[i].dead = true;
      continue;
    }
    g->out[o].node = r;
  }
}
