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
 * own (elementwise ops with a broadcast operand, softmax and log_softmax,
 * normalize, matmul and matmul_bias of rows by a weight) and stopping at
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

static bool row_wise_unary(Op op)
{
  switch (op) {
  case OP_NEG: case OP_EXP: case OP_LOG: case OP_SQRT: case OP_TANH: case OP_SIGMOID: case OP_RELU:
  case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_NORMALIZE:
    return true;
  default:
    return false;
  }
}

typedef struct {
  Graph *g;
  int *memo;      /* per node: its last-step node, or -1 */
  int restricted; /* ops rebuilt on the last step */
} Last;

static int last_of(Last *L, int x);

/* An operand of a rebuilt op: its last step, or itself when it does not
 * depend on the position (a weight, a bias). */
static int operand(Last *L, int x)
{
  return L->g->node[x].shape.seq ? last_of(L, x) : x;
}

static int last_of(Last *L, int x)
{
  Graph *g = L->g;
  if (L->memo[x] >= 0)
    return L->memo[x];
  Node n = g->node[x];   /* a copy: building nodes may move the array */
  g->cur_file = n.file;
  g->cur_line = n.line;
  int in[MAXIN], r = -1;
  bool seq_only_first = n.shape.seq == 1u;
  if (seq_only_first && row_wise_unary(n.op)) {
    in[0] = operand(L, n.in[0]);
    r = ir_op(g, n.op, 1, in, &n.a);
  } else if (seq_only_first && (n.op == OP_ADD || n.op == OP_SUB || n.op == OP_MUL || n.op == OP_DIV)) {
    const Shape *a = &g->node[n.in[0]].shape, *b = &g->node[n.in[1]].shape;
    if ((!a->seq || (seq_first(a) && a->rank == n.shape.rank)) && (!b->seq || (seq_first(b) && b->rank == n.shape.rank))) {
      in[0] = operand(L, n.in[0]);
      in[1] = operand(L, n.in[1]);
      r = ir_op(g, n.op, 2, in, &n.a);
    }
  } else if (seq_only_first && (n.op == OP_MATMUL || n.op == OP_MATMUL_BIAS) && !n.a.ta &&
             seq_first(&g->node[n.in[0]].shape) && g->node[n.in[0]].shape.seq == 1u &&
             !g->node[n.in[1]].shape.seq && (n.op == OP_MATMUL || !g->node[n.in[2]].shape.seq)) {
    for (int k = 0; k < n.nin; k++)
      in[k] = operand(L, n.in[k]);
    r = ir_op(g, n.op, n.nin, in, &n.a);
  }
  if (r >= 0)
    L->restricted++;
  else
    r = ir_op1(g, OP_LAST_STEP, x, NULL);
  L->memo[x] = r;
  return r;
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
