/*
 * layout.c: what one emitted file shares across its programs (Model)
 * besides the Layout place.c made (the parameter and gradient blocks, the
 * folded tables): the dropout slots, and the folded tables' text.
 */
#include <math.h>
#include <string.h>

#include "emit.h"

bool is_dropout_op(Op op)
{
  return op == OP_DROPOUT || op == OP_DROPOUT_GRAD || op == OP_ADD_DROPOUT || op == OP_DROPOUT_ADD;
}

/* The run-time dropout probabilities: slot a.id2 of a dropout node is the
 * hyper-parameter a.name, compiled default a.f.  Dead nodes count, so a
 * pass that removes a dropout does not renumber the table. */
void find_slots(Model *m)
{
  Graph *g = m->p->train;
  for (int i = 0; i < g->nnode; i++)
    if (is_dropout_op(g->node[i].op) && g->node[i].a.id2 >= m->nslot)
      m->nslot = g->node[i].a.id2 + 1;
  m->slot_name = xcalloc((size_t)m->nslot + 1, sizeof *m->slot_name);
  m->slot_default = xcalloc((size_t)m->nslot + 1, sizeof *m->slot_default);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!is_dropout_op(n->op) || n->a.id2 < 0 || m->slot_name[n->a.id2])
      continue;
    m->slot_name[n->a.id2] = n->a.name ? n->a.name : "dropout";
    m->slot_default[n->a.id2] = n->a.f;
  }
  for (int s = 0; s < m->nslot; s++)
    if (!m->slot_name[s])
      die("dropout slot %d has no dropout node", s);
}

/* The folded tables: static arrays of exact hexadecimal literals. */
void emit_const_tables(Model *m, Buf *out)
{
  for (int t = 0; t < m->lay->ntable; t++) {
    bprintf(out, "/* a table folded at compile time (fold-constants) */\n");
    bprintf(out, "static const real lmc_const%d[%zu] = {", t, m->lay->table_n[t]);
    for (size_t i = 0; i < m->lay->table_n[t]; i++) {
      double v = m->lay->table[t][i];
      if (!isfinite(v))
        die("folded table %d holds %g", t, v);
      bprintf(out, "%s%a", i % 6 ? ", " : i ? ",\n  " : "\n  ", v);
    }
    bprintf(out, "\n};\n\n");
  }
}
