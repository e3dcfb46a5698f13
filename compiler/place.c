/*
 * place.c: where every value of a program to be emitted as C lives.
 *
 * One emitted file holds three specialisations of a model (train, eval,
 * gen) that share one Layout: the parameter block (c->param), the
 * gradient block (c->grad) and the folded constant tables.  Each
 * specialisation gets its work arena from plan.c (plan_arena), and then
 * every live node its Loc: its own buffer in the arena or in c->grad, or
 * for a view (a viewing slice or reshape, step, stack, final, last_step)
 * where its source's value lives, and for inputs, parameters and literals
 * their blocks.  Views are resolved here once; the emitter only reads
 * g->plan->loc.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

Param *find_param(const Layout *l, const char *name)
{
  int i = strmap_get(&l->index, name);
  return i < 0 ? NULL : &l->param[i];
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
static void layout_params(Layout *l, Graph *g)
{
  l->param = arena_calloc((size_t)g->nnode + 1, sizeof *l->param);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->op != OP_PARAM)
      continue;
    Param *q = find_param(l, n->a.name);
    if (q) {
      if (!shape_eq(&q->shape, &n->shape))
        die("parameter %s used with shapes %s and %s", n->a.name, shape_str(&q->shape), shape_str(&n->shape));
      continue;
    }
    desc_rank(&n->shape, "parameter", n->a.name);
    strmap_put(&l->index, n->a.name, l->nparam);
    q = &l->param[l->nparam++];
    q->name = n->a.name;
    q->node = i;
    q->shape = n->shape;
    q->off = l->param_numel;
    q->numel = mval(mnumel(&n->shape), 1);
    l->param_numel += q->numel;
  }
  for (int o = 0; o < g->nout; o++)
    if (!strncmp(g->out[o].name, "alias:", 6))
      l->nalias++;
}

/* The gradient block: each parameter's gradient in the parameters' order,
 * dense at the same size, or, marked rows by row-grad, as max_rows rows of
 * row_len, then max_rows + 1 int32 (the rows' ids, ascending, then how
 * many), padded so that every region keeps its parameter's offset modulo
 * 8 (the optimizer's lanes).  Nothing moves when no gradient is rows. */
static void layout_grads(Layout *l, Graph *g)
{
  size_t rs = g->real == DT_F64 ? sizeof(double) : sizeof(float);
  for (int i = 0; i < l->nparam; i++) {
    Param *q = &l->param[i];
    int o = ir_find_output(g, arena_printf("grad:%s", q->name));
    Node *n = o >= 0 ? &g->node[o] : NULL;
    q->gnumel = q->numel;
    if (n && !n->dead && n->op == OP_EMBEDDING_GRAD && n->a.rows) {
      q->rows = true;
      q->max_rows = (size_t)shape_numel(&g->node[n->in[1]].shape, g->max_seq);
      q->row_len = (size_t)n->shape.dim[1];
      q->gnumel = q->max_rows * q->row_len + (4 * (q->max_rows + 1) + rs - 1) / rs;
      q->gnumel += (q->numel % 8 + 8 - q->gnumel % 8) % 8;
    }
    q->goff = l->grad_numel;
    l->grad_numel += q->gnumel;
  }
}

/* The folded table holding these values: an index into l->table, shared
 * by every program that folds the same values. */
static int find_table(Layout *l, const double *data, size_t n)
{
  for (int t = 0; t < l->ntable; t++)
    if (l->table_n[t] == n && !memcmp(l->table[t], data, n * sizeof(double)))
      return t;
  l->table = arena_realloc(l->table, sizeof(double *) * (size_t)(l->ntable + 1));
  l->table_n = arena_realloc(l->table_n, sizeof(size_t) * (size_t)(l->ntable + 1));
  l->table[l->ntable] = data;
  l->table_n[l->ntable] = n;
  return l->ntable++;
}

/* An input, a parameter or a folded table: its block. */
static Loc leaf_loc(Graph *g, Layout *l, int i, size_t *state_off)
{
  Node *n = &g->node[i];
  Loc loc = {.kind = L_NONE, .node = i};
  if (n->op == OP_INPUT && n->a.state) {
    loc.kind = L_STATE;
    loc.off = *state_off;
    *state_off += mval(mnumel(&n->shape), 1);
  } else if (n->op == OP_INPUT) {
    loc.kind = !strcmp(n->a.name, "tokens") ? L_TOKENS : !strcmp(n->a.name, "targets") ? L_TARGETS : L_NONE;
    if (loc.kind == L_NONE)
      die("n%d: input %s is none the emitted C takes", i, n->a.name);
  } else if (n->op == OP_PARAM) {
    Param *q = find_param(l, n->a.name);
    if (!q)
      die("parameter %s of a program is not in the training program", n->a.name);
    if (!shape_eq(&q->shape, &n->shape))
      die("parameter %s has shape %s, %s in train", n->a.name, shape_str(&n->shape), shape_str(&q->shape));
    loc.kind = L_PARAM;
    loc.off = q->off;
  } else {
    loc.kind = L_CONST;
    loc.table = find_table(l, n->a.data, mval(mnumel(&n->shape), 1));
  }
  return loc;
}

bool same_loc(const Loc *a, const Loc *b)
{
  return a->kind == b->kind && a->off == b->off && a->last == b->last && !a->stacked && !b->stacked;
}

/* A view: where its source's value lives, moved to the part it views. */
static Loc view_loc(Graph *g, const Loc *at, int i)
{
  Node *n = &g->node[i], *x = &g->node[n->in[0]];
  Loc loc = at[n->in[0]];
  switch (n->op) {
  case OP_SLICE: {   /* a contiguous run of the source: all dims before the axis are 1 */
    Mono st[MAXRANK];
    contig(&x->shape, st);
    for (int d = 0; d < n->a.axis; d++)
      if (!mone(mdim(&x->shape, d)))
        die("n%d: a slice view along axis %d of %s", i, n->a.axis, shape_str(&x->shape));
    if (loc.stacked || loc.last || st[n->a.axis].k)
      die("n%d: a slice view of a value stored per step", i);
    loc.off += (size_t)n->a.start * (size_t)st[n->a.axis].c;
    if (n->a.start)
      loc.node = i;   /* a pointer of its own */
    break;
  }
  case OP_RESHAPE:
    break;
  case OP_LAST_STEP:
    if (loc.stacked || loc.last || x->loop)
      die("n%d: last_step of a value stored per step", i);
    loc.last = true;
    loc.step = mnumel(&n->shape);
    break;
  case OP_STEP:
    if (loc.stacked || x->loop)
      die("n%d: step of a loop-body value", i);
    loc.stacked = true;
    loc.step = mnumel(&n->shape);
    break;
  case OP_STACK:
    if (!loc.stacked)
      die("n%d: stack of n%d, which is not stored per step", i, n->in[0]);
    loc.stacked = false;
    break;
  case OP_FINAL:
    if (x->op != OP_CARRY)
      die("n%d: final of a %s", i, op_info[x->op].name);
    loc = at[x->in[1]];
    if (loc.stacked) {
      loc.stacked = false;
      loc.last = !g->loop[x->loop].reverse;
    }
    break;
  default:
    die("n%d: %s is not a view", i, op_info[n->op].name);
  }
  return loc;
}

/* A value computed by a kernel: its own buffer, in the arena or, for a
 * gradient output computed in place, in c->grad; none for a value only
 * its fused kernel sees. */
static Loc own_loc(Graph *g, Layout *l, int i)
{
  Node *n = &g->node[i];
  Plan *p = g->plan;
  Loc loc = {.kind = L_NONE, .node = i};
  if (p->grad_out[i] >= 0) {
    const char *name = g->out[p->grad_out[i]].name + 5;
    Param *q = find_param(l, name);
    if (!q || q->numel != mval(mnumel(&n->shape), g->max_seq) || mnumel(&n->shape).k)
      die("n%d is the gradient of %s but not of its size", i, name);
    loc.kind = L_GRAD;
    loc.off = q->goff;
  } else if (p->off[i] != SIZE_MAX) {
    loc.kind = L_WORK;
    loc.off = p->off[i];
    loc.stacked = n->loop != 0 && !p->one_step[i];
    loc.step = mnumel(&n->shape);
  } else if (!n->group) {
    die("n%d (%s) has no buffer", i, op_info[n->op].name);
  }
  return loc;
}

/* g->plan->loc and skip.  Without dce, a node no output needs may read a
 * value that only a fused kernel sees: it is skipped like a dead one. */
static void locate(Graph *g, Layout *l)
{
  Plan *p = g->plan;
  Users u = users_make(g);
  p->loc = arena_calloc((size_t)g->nnode + 1, sizeof *p->loc);
  p->skip = arena_calloc((size_t)g->nnode + 1, sizeof *p->skip);
  size_t state_off = 0;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    p->loc[i] = (Loc){.kind = L_NONE, .node = i};
    if (n->dead)
      continue;
    for (int k = 0; k < n->nin && !u.live[i]; k++)
      if (p->skip[n->in[k]] || (p->loc[n->in[k]].kind == L_NONE && !(n->op == OP_CARRY && k == 1)))
        p->skip[i] = true;
    if (p->skip[i])
      continue;
    if (n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL) {
      p->loc[i] = leaf_loc(g, l, i, &state_off);
    } else if (is_view(g, n)) {
      p->loc[i] = view_loc(g, p->loc, i);
      if (p->loc[i].kind == L_NONE)
        die("n%d (%s) reads a dead or unplaced node", i, op_info[n->op].name);
    } else {
      p->loc[i] = own_loc(g, l, i);
    }
  }
  users_free(&u);
}

void place(Program *p)
{
  Layout *l = arena_calloc(1, sizeof *l);
  layout_params(l, p->train);
  layout_grads(l, p->train);
  p->layout = l;
  Graph *gs[NPROGRAM];
  program_graphs(p, gs);
  for (int k = 0; k < NPROGRAM; k++) {
    if (!gs[k])
      continue;
    plan_arena(gs[k]);
    verify_c_inputs(gs[k]);
    locate(gs[k], l);
  }
}
