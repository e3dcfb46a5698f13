/*
 * print.c: the IR's text format (docs/ir.md), one node a line:
 *
 *   %5 = matmul %4, %3 tb : f32 (T, 20, 800)  ; graphs/lstm.lua:21
 *   L1 %9 = step %5 : f32 (20, 800)  ; graphs/lib/nn.lua:40
 *
 * "L1" marks the body of loop 1; attributes follow the inputs (attr.c
 * prints them, by the op's attribute kind); shapes write the run-time
 * sequence length as T.  `lmc compile --emit=ir` prints the training
 * graph; `--dump-ir=after:PASS` prints it after a pass.
 */
#include <stdint.h>
#include "lmc.h"

static const char *dtype_name(DType t)
{
  return t == DT_F32 ? "f32" : t == DT_F64 ? "f64" : "i32";
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
    attr_print(n, f);
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
