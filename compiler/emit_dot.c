/*
 * emit_dot.c: `lmc compile --emit=dot`, the graph for Graphviz.
 *
 * One box per live node ("%17 tanh" and its shape), an edge per input, a
 * dashed edge from a carry's next value back to the carry, a cluster per
 * loop body and, inside, a filled cluster per fused kernel, so the picture
 * shows what runs as one loop.  Parameters and inputs are ellipses, folded
 * tables notes, outputs plain text.  `make graphs-png` renders every model
 * into docs/ with dot -Tpng.
 */
#include <stdlib.h>
#include "lmc.h"

static void dot_str(FILE *f, const char *s)
{
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    fputc(*s, f);
  }
}

static void dot_node(Graph *g, int i, FILE *f, const char *pad)
{
  Node *n = &g->node[i];
  const char *shape = "box";
  if (n->op == OP_PARAM || n->op == OP_INPUT)
    shape = "ellipse";
  else if (n->op == OP_LITERAL)
    shape = "note";
  else if (is_view(g, n))
    shape = "box, style=dashed";
  fprintf(f, "%sn%d [shape=%s, label=\"%%%d %s", pad, i, shape, i, op_info[n->op].name);
  if (n->op == OP_PARAM || n->op == OP_INPUT) {
    fprintf(f, "\\n");
    dot_str(f, n->a.name);
  }
  fprintf(f, "\\n%s\"];\n", shape_str(&n->shape));
}

void emit_dot(Graph *g, FILE *f)
{
  int *anchor = group_anchors(g);
  fprintf(f, "digraph \"%s\" {\n", g->kind && g->kind[0] ? g->kind : "graph");
  fprintf(f, "  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [arrowsize=0.6];\n");
  for (int k = 0; k < g->nloop; k++) {
    const char *pad = k ? "    " : "  ";
    if (k) {
      fprintf(f, "  subgraph cluster_loop%d {\n", k);
      fprintf(f, "    label=\"loop %d (%s, T steps)\"; style=dashed;\n", k, g->loop[k].reverse ? "reverse" : "forward");
    }
    /* the fused kernels of this loop, each a filled cluster */
    for (int gr = 1; gr <= g->ngroup; gr++) {
      int cnt = 0;
      for (int i = 0; i < g->nnode; i++)
        cnt += !g->node[i].dead && g->node[i].group == gr && g->node[i].loop == k;
      if (!cnt)
        continue;
      fprintf(f, "%ssubgraph cluster_fused%d {\n", pad, gr);
      fprintf(f, "%s  label=\"fused kernel k%d\"; style=filled; color=lightblue; fillcolor=\"#e8f1fb\";\n", pad,
              anchor[gr]);
      for (int i = 0; i < g->nnode; i++)
        if (!g->node[i].dead && g->node[i].group == gr && g->node[i].loop == k) {
          fprintf(f, "%s", pad);
          dot_node(g, i, f, "  ");
        }
      fprintf(f, "%s}\n", pad);
    }
    for (int i = 0; i < g->nnode; i++)
      if (!g->node[i].dead && !g->node[i].group && g->node[i].loop == k)
        dot_node(g, i, f, pad);
    if (k)
      fprintf(f, "  }\n");
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    for (int k = 0; k < n->nin; k++) {
      if (n->op == OP_CARRY && k == 1)
        fprintf(f, "  n%d -> n%d [style=dashed, constraint=false];\n", n->in[k], i);
      else
        fprintf(f, "  n%d -> n%d;\n", n->in[k], i);
    }
  }
  for (int o = 0; o < g->nout; o++) {
    fprintf(f, "  out%d [shape=plaintext, label=\"", o);
    dot_str(f, g->out[o].name);
    fprintf(f, "\"];\n");
    fprintf(f, "  n%d -> out%d;\n", g->out[o].node, o);
  }
  fprintf(f, "}\n");
  free(anchor);
}
