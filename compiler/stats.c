/*
 * stats.c: `lmc compile --stats`, what a compiled model costs.
 *
 * Parameters (a tied weight counted once, as the emitted parameter block
 * holds it), the gradient block, AdamW's state (m and v, twice the
 * parameters), and for each program its work arena: every buffer its own
 * region ("unplanned", what -O0 allocates) and the peak of the memory plan
 * that plan-memory made (the arena the program allocates).  FLOPs are
 * counted per training step at T = max_seq: a matrix product 2*M*N*K, an
 * elementwise op one per element (a transcendental counts one too),
 * softmax and its kind a few per element, plus the optimizer.  Kernels
 * are the functions of the emitted file; calls count each body kernel
 * max_seq times.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

static double mb(double bytes)
{
  return bytes / (1 << 20);
}

/* The 2-D view of a matmul operand: leading dims flattened. */
static void rows_cols(const Graph *g, const Shape *s, double *rows, double *cols)
{
  *cols = (double)s->dim[s->rank - 1] * ((s->seq >> (s->rank - 1) & 1) ? g->max_seq : 1);
  *rows = (double)shape_numel(s, g->max_seq) / *cols;
}

static double node_flops(const Graph *g, const Node *n)
{
  double out = (double)shape_numel(&n->shape, g->max_seq);
  const Node *a = n->nin > 0 ? &g->node[n->in[0]] : NULL;
  const Node *b = n->nin > 1 ? &g->node[n->in[1]] : NULL;
  double ar, ac, br, bc;
  switch (n->op) {
  case OP_MATMUL:
  case OP_MATMUL_BIAS:
    rows_cols(g, &a->shape, &ar, &ac);
    rows_cols(g, &b->shape, &br, &bc);
    return 2 * out * (n->a.ta ? ar : ac) + (n->op == OP_MATMUL_BIAS ? out : 0);
  case OP_BMM: {
    int r = a->shape.rank;
    double k = n->a.ta ? a->shape.dim[r - 2] : a->shape.dim[r - 1];
    if ((a->shape.seq >> (n->a.ta ? r - 2 : r - 1)) & 1)
      k *= g->max_seq;
    return 2 * out * k;
  }
  case OP_SOFTMAX:
  case OP_LOG_SOFTMAX:
  case OP_NORMALIZE:
    return 4 * out;
  case OP_SOFTMAX_GRAD:
  case OP_LOG_SOFTMAX_GRAD:
  case OP_NORMALIZE_GRAD:
  case OP_NLL_LOG_SOFTMAX_GRAD:
    return 3 * out;
  case OP_SUM:
    return (double)shape_numel(&a->shape, g->max_seq);
  case OP_EMBEDDING_GRAD:
    return (double)shape_numel(&a->shape, g->max_seq);
  case OP_NLL_LOSS:
    return (double)shape_numel(&a->shape, g->max_seq) / a->shape.dim[a->shape.rank - 1];
  default:
    return op_is(n->op, P_ELEM) ? (n->op == OP_ADD_DROPOUT || n->op == OP_DROPOUT_ADD ? 2 : 1) * out : 0;
  }
}

typedef struct {
  double flops, matmul;
  size_t naive, peak;
  int kernels;
  double calls;
} Cost;

static Cost cost(Graph *g)
{
  Cost c = {0};
  bool *need = buffers_needed(g);
  int *anchor = group_anchors(g);
  bool shared = g->plan && g->plan->shared;   /* plan-memory ran */
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    double f = node_flops(g, n) * (n->loop ? g->max_seq : 1);
    c.flops += f;
    if (n->op == OP_MATMUL || n->op == OP_MATMUL_BIAS || n->op == OP_BMM)
      c.matmul += f;
    bool kernel = !is_view(g, n) && n->op != OP_INPUT && n->op != OP_PARAM && n->op != OP_LITERAL &&
                  (!n->group || anchor[n->group] == i);
    if (kernel) {
      c.kernels++;
      c.calls += n->loop ? g->max_seq : 1;
    }
    if (need[i] && !shared) {
      c.naive += (buffer_numel(g, i) + 15) & ~(size_t)15;
    }
  }
  if (shared) {
    c.naive = g->plan->naive;
    c.peak = g->plan->numel;
  } else {
    c.peak = c.naive;
  }
  free(need);
  free(anchor);
  return c;
}

void print_stats(Program *p, FILE *f)
{
  Graph *g = p->train;
  double real = g->real == DT_F64 ? 8 : 4;
  double nparam = 0;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->op != OP_PARAM)
      continue;
    bool seen = false;
    for (int j = 0; j < i && !seen; j++)
      seen = g->node[j].op == OP_PARAM && !strcmp(g->node[j].a.name, n->a.name);
    if (!seen)
      nparam += (double)shape_numel(&n->shape, 1);
  }
  fprintf(f, "model:              %s, %s, %s, bptt %d, batch %d\n", p->source ? p->source : "?",
          g->kind && g->kind[0] ? g->kind : "-", g->real == DT_F64 ? "f64" : "f32", g->max_seq, g->batch);
  fprintf(f, "parameters:         %.0f (%.2f MB)\n", nparam, mb(nparam * real));
  /* a rows gradient (row-grad) holds its batch's rows, their ids and count */
  double ngrad = nparam, rows_saved = 0;
  for (int o = 0; o < g->nout; o++) {
    Node *n = &g->node[g->out[o].node];
    if (strncmp(g->out[o].name, "grad:", 5) || n->dead || n->op != OP_EMBEDDING_GRAD || !n->a.rows)
      continue;
    double r = (double)shape_numel(&g->node[n->in[1]].shape, g->max_seq), e = n->shape.dim[1];
    rows_saved += (double)shape_numel(&n->shape, 1) - (r * e + (4 * (r + 1) + real - 1) / real);
  }
  ngrad -= rows_saved;
  if (rows_saved > 0)
    fprintf(f, "gradients:          %.2f MB (embedding tables as the batch's rows: %.2f MB less)\n", mb(ngrad * real),
            mb(rows_saved * real));
  else
    fprintf(f, "gradients:          %.2f MB\n", mb(ngrad * real));
  fprintf(f, "optimizer state:    %.2f MB with AdamW (m and v), 0 with SGD\n", mb(2 * nparam * real));
  Graph *gs[NPROGRAM];
  program_graphs(p, gs);
  const char *const *names = program_name;
  for (int k = 0; k < NPROGRAM; k++) {
    if (!gs[k])
      continue;
    Cost c = cost(gs[k]);
    fprintf(f, "%s activations:%*s", names[k], (int)(7 - strlen(names[k])), "");
    if (gs[k]->plan && gs[k]->plan->shared)
      fprintf(f, "%.2f MB arena, the memory plan's peak (%.2f MB with every buffer its own region)\n",
              mb((double)c.peak * real), mb((double)c.naive * real));
    else
      fprintf(f, "%.2f MB arena, every buffer its own region (no plan-memory)\n", mb((double)c.peak * real));
    if (k == 0) {
      fprintf(f, "FLOPs per step:     %.4g (matmul %.4g, other %.4g), optimizer SGD %.4g, AdamW %.4g\n",
              c.flops, c.matmul, c.flops - c.matmul, 2 * nparam, 12 * nparam);
    }
    fprintf(f, "%s kernels:%*s%d (%.0f calls per batch at T = %d)\n", names[k], (int)(11 - strlen(names[k])), "",
            c.kernels, c.calls, gs[k]->max_seq);
  }
  fprintf(f, "train peak:         %.2f MB: parameters, gradients and arena (SGD)\n",
          mb((nparam + ngrad) * real + (double)cost(g).peak * real));
}
