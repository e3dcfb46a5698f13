/*
 * print.c: the IR's text format (docs/ir.md), one node a line:
 *
 *   %5 = matmul %4, %3 tb : f32 (T, 20, 800)  ; graphs/lstm.lua:21
 *   L1 %9 = step %5 : f32 (20, 800)  ; graphs/lib/nn.lua:40
 *
 * "L1" marks the body of loop 1; attributes follow the inputs; shapes write
 * the run-time sequence length as T.  `lmc compile --emit=ir` prints the
 * training graph; `--dump-ir=after:PASS` prints it after a pass.
 */
#include <stdint.h>
#include <string.h>
#include "lmc.h"

static const char *dtype_name(DType t)
{
  return t == DT_F32 ? "f32" : t == DT_F64 ? "f64" : "i32";
}

static const char *init_name(Init i)
{
  switch (i) {
  case INIT_ZERO: return "zeros";
  case INIT_ONE: return "ones";
  case INIT_UNIFORM: return "uniform";
  case INIT_XAVIER: return "xavier";
  }
  return "?";
}

static void print_attrs(Graph *g, Node *n, FILE *f)
{
  Attr *a = &n->a;
  switch (n->op) {
  case OP_INPUT:
    fprintf(f, " \"%s\"%s", a->name, a->state ? " state" : "");
    break;
  case OP_PARAM:
    fprintf(f, " \"%s\" %s", a->name, init_name(a->init));
    if (a->init == INIT_UNIFORM)
      fprintf(f, "(%.9g)", a->init_a);
    break;
  case OP_CONST:
    fprintf(f, " %.17g", a->f);
    break;
  case OP_ARANGE:
    fprintf(f, " n=%s start=%.17g step=%.17g", dim_str(&n->shape, 0), a->f, a->f2);
    break;
  case OP_DROPOUT:
  case OP_DROPOUT_GRAD:
  case OP_ADD_DROPOUT:
  case OP_DROPOUT_ADD:
    fprintf(f, " p=%.9g stream=%d slot=%d", a->f, a->id, a->id2);
    break;
  case OP_MATMUL:
  case OP_MATMUL_BIAS:
  case OP_BMM:
    if (a->ta)
      fprintf(f, " ta");
    if (a->tb)
      fprintf(f, " tb");
    break;
  case OP_NORMALIZE:
  case OP_NORMALIZE_GRAD:
    fprintf(f, " eps=%.9g", a->f);
    break;
  case OP_SLICE:
    fprintf(f, " axis=%d start=%d len=", a->axis, a->start);
    if (a->len < 0)
      fprintf(f, a->len == -1 ? "T" : "%d*T", -a->len);
    else
      fprintf(f, "%d", a->len);
    if (a->view)
      fprintf(f, " view");
    break;
  case OP_LITERAL: {
    int64_t cnt = shape_numel(&n->shape, 1);
    fprintf(f, " [");
    for (int64_t i = 0; i < cnt && i < 4; i++)
      fprintf(f, "%s%a", i ? ", " : "", a->data[i]);
    fprintf(f, "%s] values=%lld", cnt > 4 ? ", ..." : "", (long long)cnt);
    break;
  }
  case OP_CONCAT:
    fprintf(f, " axis=%d", a->axis);
    break;
  case OP_TRANSPOSE:
    fprintf(f, " perm=");
    for (int i = 0; i < n->shape.rank; i++)
      fprintf(f, "%s%d", i ? "," : "", a->perm[i]);
    break;
  case OP_PAD:
    fprintf(f, " axis=%d start=%d", a->axis, a->start);
    break;
  case OP_EMBEDDING_GRAD:
    if (a->rows)
      fprintf(f, " rows");
    break;
  case OP_SUM:
  case OP_BROADCAST:
  case OP_RESHAPE:
    break;   /* the target shape is the node's own */
  default:
    break;
  }
  (void)g;
}

void print_ir(Graph *g, FILE *f)
{
  fprintf(f, "graph kind=%s max_seq=%d batch=%d real=%s\n", g->kind[0] ? g->kind : "-",
          g->max_seq, g->batch, dtype_name(g->real));
  for (int k = 1; k < g->nloop; k++)
    fprintf(f, "loop L%d %s\n", k, g->loop[k].reverse ? "reverse" : "forward");
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    if (n->loop)
      fprintf(f, "L%d ", n->loop);
    fprintf(f, "%%%d = %s", i, op_info[n->op].name);
    for (int k = 0; k < n->nin; k++)
      fprintf(f, "%s %%%d", k ? "," : "", n->in[k]);
    print_attrs(g, n, f);
    fprintf(f, " : %s %s", dtype_name(n->dtype), shape_str(&n->shape));
    if (n->group)
      fprintf(f, " fused=%d", n->group);
    if (g->plan && g->plan->off[i] != SIZE_MAX)
      fprintf(f, " @%zu%s", g->plan->off[i], g->plan->one_step[i] ? " one-step" : "");
    if (n->file)
      fprintf(f, "  ; %s:%d", n->file, n->line);
    fputc('\n', f);
  }
  for (int o = 0; o < g->nout; o++)
    fprintf(f, "output \"%s\" = %%%d\n", g->out[o].name, g->out[o].node);
}
