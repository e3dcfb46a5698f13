/*
 * layout.c: what one emitted file shares across its programs (Model): the
 * parameter block and the gradient block laid out, the dropout slots, and
 * the folded constant tables with their text.
 */
#include <math.h>
#include <string.h>

#include "emit.h"

Param *find_param(Model *m, const char *name)
{
  int i = strmap_get(&m->param_index, name);
  return i < 0 ? NULL : &m->param[i];
}

int desc_rank(const Shape *s, const char *what, const char *name)
{
  if (s->seq)
    die("%s %s has a sequence-length dimension %s", what, name, shape_str(s));
  if (s->rank > 4)
    die("%s %s has rank %d, the runtime allows 4", what, name, s->rank);
  return s->rank;
}

/* Parameters in order of first appearance in the training program; the
 * same name is the same storage in every program (a tied weight is one
 * name, so it is counted once).  Dead PARAM nodes count too: a pass may
 * find a parameter unused, but it is still part of the state_dict. */
void layout_params(Model *m)
{
  Graph *g = m->p->train;
  m->param = xcalloc((size_t)g->nnode + 1, sizeof *m->param);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->op != OP_PARAM)
      continue;
    Param *q = find_param(m, n->a.name);
    if (q) {
      if (!shape_eq(&q->shape, &n->shape))
        die("parameter %s used with shapes %s and %s", n->a.name, shape_str(&q->shape), shape_str(&n->shape));
      continue;
    }
    desc_rank(&n->shape, "parameter", n->a.name);
    strmap_put(&m->param_index, n->a.name, m->nparam);
    q = &m->param[m->nparam++];
    q->name = n->a.name;
    q->node = i;
    q->shape = n->shape;
    q->off = m->param_numel;
    q->numel = mval(mnumel(&n->shape), 1);
    m->param_numel += q->numel;
  }
  for (int o = 0; o < g->nout; o++)
    if (!strncmp(g->out[o].name, "alias:", 6))
      m->nalias++;
}

/* The gradient block: each parameter's gradient in the parameters' order,
 * dense at the same size, or, marked rows by row-grad, as max_rows rows of
 * row_len, then max_rows + 1 int32 (the rows' ids, ascending, then how
 * many), padded so that every region keeps its parameter's offset modulo
 * 8 (lmc_clip's lanes).  Nothing moves when no gradient is rows. */
void layout_grads(Model *m)
{
  Graph *g = m->p->train;
  size_t rs = g->real == DT_F64 ? sizeof(double) : sizeof(float);
  m->grad_numel = 0;
  for (int i = 0; i < m->nparam; i++) {
    Param *q = &m->param[i];
    Str name = {""};
    sprint(&name, "grad:%s", q->name);
    int o = ir_find_output(g, name.s);
    Node *n = o >= 0 ? &g->node[o] : NULL;
    q->gnumel = q->numel;
    if (n && !n->dead && n->op == OP_EMBEDDING_GRAD && n->a.rows) {
      q->rows = true;
      q->max_rows = (size_t)shape_numel(&g->node[n->in[1]].shape, g->max_seq);
      q->row_len = (size_t)n->shape.dim[1];
      q->gnumel = q->max_rows * q->row_len + (4 * (q->max_rows + 1) + rs - 1) / rs;
      q->gnumel += (q->numel % 8 + 8 - q->gnumel % 8) % 8;
    }
    q->goff = m->grad_numel;
    m->grad_numel += q->gnumel;
  }
}

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

/* The folded table holding these values: an index into m->table, shared by
 * every program that folds the same values. */
int find_table(Model *m, const double *data, size_t n)
{
  for (int t = 0; t < m->ntable; t++)
    if (m->table_n[t] == n && !memcmp(m->table[t], data, n * sizeof(double)))
      return t;
  m->table = xrealloc(m->table, sizeof(double *) * (size_t)(m->ntable + 1));
  m->table_n = xrealloc(m->table_n, sizeof(size_t) * (size_t)(m->ntable + 1));
  m->table[m->ntable] = data;
  m->table_n[m->ntable] = n;
  return m->ntable++;
}

/* The folded tables: static arrays of exact hexadecimal literals. */
void emit_const_tables(Model *m, Buf *out)
{
  for (int t = 0; t < m->ntable; t++) {
    bprintf(out, "/* a table folded at compile time (fold-constants) */\n");
    bprintf(out, "static const real lmc_const%d[%zu] = {", t, m->table_n[t]);
    for (size_t i = 0; i < m->table_n[t]; i++) {
      double v = m->table[t][i];
      if (!isfinite(v))
        die("folded table %d holds %g", t, v);
      bprintf(out, "%s%a", i % 6 ? ", " : i ? ",\n  " : "\n  ", v);
    }
    bprintf(out, "\n};\n\n");
  }
}
