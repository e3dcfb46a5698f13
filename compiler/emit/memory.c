/*
 * memory.c: where a program's values live.  plan_work gives every value
 * that needs a buffer its offset in c->work (plan-memory's plan, or a
 * bump allocation), and locate gives every live node its Loc (its own
 * buffer, a view's source, the parameter, gradient, state or folded
 * table), which pointers.c writes as C.
 */
#include <stdlib.h>
#include <string.h>

#include "emit.h"

/* Rows of a product of logits at T = max_seq: its numel over its last dim. */
size_t logit_rows(const Graph *g, const Node *prod)
{
  const Shape *s = &prod->shape;
  return mval(mdiv(mnumel(s), mdim(s, s->rank - 1)), g->max_seq);
}

static bool reads_targets(Graph *g)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == OP_INPUT && !strcmp(g->node[i].a.name, "targets"))
      return true;
  return false;
}

static size_t align16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

/* The memory plan: an offset in c->work for every node that needs its own
 * buffer, sized for T = max_seq (a body node holds max_seq steps, or one
 * where plan-memory found that enough), then the stand-in targets.  With
 * plan-memory (g->plan) buffers share bytes by lifetime; without it this is
 * a bump allocation that reuses nothing. */
void plan_work(Prog *p)
{
  Graph *g = p->g;
  bool *need = buffers_needed(g);
  size_t top = 0;
  for (int i = 0; i < g->nnode; i++) {
    p->off[i] = SIZE_MAX;
    if (!need[i])
      continue;
    if (g->plan && g->plan->grad_out[i] >= 0) {
      p->off[i] = 0;   /* stored, but in c->grad: see locate */
      continue;
    }
    if (g->plan) {
      if (g->plan->off[i] == SIZE_MAX)
        die("n%d needs a buffer the memory plan does not give it", i);
      p->off[i] = g->plan->off[i];
      continue;
    }
    p->off[i] = top;
    top = align16(top + buffer_numel(g, i));
    if ((int64_t)top > LMC_MAX_BYTES / (g->real == DT_F64 ? 8 : 4)) {   /* each buffer is below it */
      free(need);
      ir_error_node(g, i, "%s: %s needs more than %d GiB of work memory with every value before it (without plan-memory)",
                    op_info[g->node[i].op].name, shape_str(&g->node[i].shape), LMC_MAX_GIB);
    }
  }
  if (g->plan)
    top = g->plan->numel;
  free(need);
  p->targets_off = SIZE_MAX;
  if (reads_targets(g)) {
    p->targets_off = top;
    top = align16(top + (size_t)g->max_seq * (size_t)g->batch);
  }
  /* a loss kernel that computes its logits a block at a time (fuse_nll.c)
   * keeps the block at the end of the arena: the arena of the largest
   * program (training's) covers it, so it costs no memory of its own */
  p->scratch_off = SIZE_MAX;
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group && g->node[i].op == OP_MATMUL) {
      p->scratch_off = top;
      top = align16(top + logit_rows(g, &g->node[i]) * LOGIT_BLOCK);
      break;
    }
  p->work_numel = top;
}

/* Where input, parameter or literal node i lives: the state block (in
 * order, from *state_off on), run()'s arguments, the parameter block, a
 * folded table. */
static void locate_leaf(Prog *p, int i, size_t *state_off)
{
  Node *n = N(p, i);
  Loc *l = &p->loc[i];
  switch (n->op) {
  case OP_INPUT:
    if (n->a.state) {
      l->kind = L_STATE;
      l->off = *state_off;
      *state_off += mval(mnumel(&n->shape), 1);
    } else if (!strcmp(n->a.name, "tokens")) {
      l->kind = L_TOKENS;
    } else if (!strcmp(n->a.name, "targets")) {
      l->kind = L_TARGETS;
    } else {
      ir_error_node(p->g, i, "input '%s': the emitted C takes the inputs \"tokens\" and \"targets\" (i32) "
                    "and state; use --emit=ir or --emit=dot for other graphs", n->a.name);
    }
    if (!n->a.state && n->dtype != DT_I32)
      ir_error_node(p->g, i, "input '%s': token ids are i32, not %s", n->a.name,
                    n->dtype == DT_F64 ? "f64" : "f32");
    break;
  case OP_PARAM: {
    Param *q = find_param(p->m, n->a.name);
    if (!q)
      die("parameter %s of the %s program is not in the training program", n->a.name, p->name);
    if (!shape_eq(&q->shape, &n->shape))
      die("parameter %s has shape %s in %s, %s in train", n->a.name, shape_str(&n->shape), p->name,
          shape_str(&q->shape));
    l->kind = L_PARAM;
    l->off = q->off;
    break;
  }
  default:   /* OP_LITERAL */
    l->kind = L_CONST;
    l->table = find_table(p->m, n->a.data, mval(mnumel(&n->shape), 1));
    break;
  }
}

/* Where view node i lives: in its source's bytes.  False if i is not a
 * view (a slice or reshape that copies is not). */
static bool locate_view(Prog *p, int i)
{
  Graph *g = p->g;
  Node *n = N(p, i);
  Loc *l = &p->loc[i];
  switch (n->op) {
  case OP_SLICE: {
    if (!is_view(g, n))
      return false;
    /* a contiguous run of the source: all dims before the axis are 1 */
    *l = p->loc[n->in[0]];
    Node *x = N(p, n->in[0]);
    Mono st[MAXRANK];
    contig(&x->shape, st);
    for (int d = 0; d < n->a.axis; d++)
      if (!mone(mdim(&x->shape, d)))
        die("n%d: a slice view along axis %d of %s", i, n->a.axis, shape_str(&x->shape));
    if (l->stacked || l->last || st[n->a.axis].k)
      die("n%d: a slice view of a value stored per step", i);
    l->off += (size_t)n->a.start * (size_t)st[n->a.axis].c;
    if (n->a.start)
      l->node = i;   /* a pointer of its own */
    return true;
  }
  case OP_RESHAPE:
    if (!is_view(g, n))
      return false;
    *l = p->loc[n->in[0]];
    return true;
  case OP_LAST_STEP:
    *l = p->loc[n->in[0]];
    if (l->stacked || l->last || N(p, n->in[0])->loop)
      die("n%d: last_step of a value stored per step", i);
    l->last = true;
    l->step = mnumel(&n->shape);
    return true;
  case OP_STEP:
    *l = p->loc[n->in[0]];
    if (l->stacked || N(p, n->in[0])->loop)
      die("n%d: step of a loop-body value", i);
    l->stacked = true;
    l->step = mnumel(&n->shape);
    return true;
  case OP_STACK:
    *l = p->loc[n->in[0]];
    if (!l->stacked)
      die("n%d: stack of n%d, which is not stored per step", i, n->in[0]);
    l->stacked = false;
    return true;
  case OP_FINAL: {
    Node *carry = N(p, n->in[0]);
    if (carry->op != OP_CARRY)
      die("n%d: final of a %s", i, op_info[carry->op].name);
    *l = p->loc[carry->in[1]];
    if (l->stacked) {
      l->stacked = false;
      l->last = !g->loop[carry->loop].reverse;
    }
    return true;
  }
  default:
    return false;
  }
}

/* Where node i, which computes its value, stores it: its work buffer, or
 * the gradient block for a parameter's gradient that plan-memory puts
 * there.  False if it is computed inside its fused kernel only. */
static bool locate_own(Prog *p, int i)
{
  Graph *g = p->g;
  Node *n = N(p, i);
  Loc *l = &p->loc[i];
  if (g->plan && g->plan->grad_out[i] >= 0) {
    const char *name = g->out[g->plan->grad_out[i]].name + 5;
    Param *q = find_param(p->m, name);
    if (!q || q->numel != mval(mnumel(&n->shape), g->max_seq) || mnumel(&n->shape).k)
      die("n%d is the gradient of %s but not of its size", i, name);
    l->kind = L_GRAD;
    l->off = q->goff;
    return true;
  }
  if (p->off[i] == SIZE_MAX) {
    if (n->group)
      return false;
    die("n%d (%s) has no buffer", i, op_info[n->op].name);
  }
  l->kind = L_WORK;
  l->off = p->off[i];
  l->stacked = n->loop != 0 && !(g->plan && g->plan->one_step[i]);
  l->step = mnumel(&n->shape);
  return true;
}

/* Where every live node's value lives: its own work buffer, or for a view
 * its source's, and for inputs and parameters their blocks. */
void locate(Prog *p)
{
  Graph *g = p->g;
  size_t state_off = 0;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    Loc *l = &p->loc[i];
    *l = (Loc){.kind = L_NONE, .node = i};
    if (n->dead)
      continue;
    /* without dce, a node no output needs may read a value that only a
     * fused kernel sees: it is left out like a dead one */
    p->skip[i] = false;
    for (int k = 0; k < n->nin && !p->users.live[i]; k++)
      if (p->skip[n->in[k]] || (p->loc[n->in[k]].kind == L_NONE && !(n->op == OP_CARRY && k == 1)))
        p->skip[i] = true;
    if (p->skip[i])
      continue;
    if (n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL)
      locate_leaf(p, i, &state_off);
    else if (!locate_view(p, i) && !locate_own(p, i))
      continue;   /* computed inside its fused kernel only */
    if (l->kind == L_NONE)
      die("n%d (%s) reads a dead or unplaced node", i, op_info[n->op].name);
  }
}

bool same_loc(const Loc *a, const Loc *b)
{
  return a->kind == b->kind && a->off == b->off && a->last == b->last && !a->stacked && !b->stacked;
}
