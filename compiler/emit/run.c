/*
 * run.c: one program of the emitted file.  open_program finds where its
 * values live and adds its kernels to the model's (kernel.c), which are
 * named once every program's are in; emit_program then writes its state
 * table and its run(), which calls the kernels in node order, loops as C
 * loops, and then copies the outputs (gradients, detached state) where the
 * runtime reads them; and emit_prog_struct the program's entry in
 * lmc_model.
 *
 * run() tells the runtime when each parameter's gradient is final in
 * c->grad (c->grad_ready, lmc_rt.h, which data-parallel training uses to
 * start reducing it while the backward goes on): after the kernel that
 * computes it there (a gradient output owns its region: no other kernel
 * writes it, place.c), after the loop holding that kernel, or, for one
 * copied or zeroed with the outputs, after its copy.
 */
#include <stdlib.h>
#include <string.h>

#include "emit.h"

static void emit_call(Text *t, Buf *b, int id, int depth)
{
  Prog *p = t->p;
  Node *n = N(p, id);
  Sig *s = &p->sig[id];
  const char *step = n->loop ? "t" : NULL;
  bool reverse = n->loop && p->g->loop[n->loop].reverse;
  indent(b, depth);
  bprintf(b, "%s(", p->m->kernel[s->kernel].name);
  for (int a = 0; a < s->narg; a++) {
    Arg *w = &s->arg[a];
    Node *x = N(p, w->node);
    if (a)
      bprintf(b, ", ");
    switch (w->kind) {
    case A_PTR:
      bprintf(b, "%s", ptr(t, w->node, step).s);
      break;
    case A_CARRY:
      /* the initial value at the first step, else the next value of the
       * step before */
      bprintf(b, "%s ? %s : %s", reverse ? "t == T - 1" : "t == 0", ptr(t, x->in[0], NULL).s,
              ptr(t, x->in[1], reverse ? "(t + 1)" : "(t - 1)").s);
      break;
    case A_KEY:
      t->uses_c = t->uses_c || p->training;
      if (p->training)
        bprintf(b, "lmc_dropout_key(c->seed, c->step, %d)", x->a.id);
      else
        bprintf(b, "0");
      break;
    case A_P:
      if (p->training)
        bprintf(b, "c->dropout[%d]", x->a.id2);
      else
        bprintf(b, "0");
      break;
    case A_COL0:
    case A_COL_REST:
      t->uses_c = t->uses_c || p->training;
      bprintf(b, "%s", !p->training ? "0" : w->kind == A_COL0 ? "c->col0" : "c->col_rest");
      break;
    case A_THREADS:
      t->uses_c = true;
      bprintf(b, "c->threads");
      break;
    case A_SCRATCH:
      bprintf(b, "%s", scratch_ptr(t));
      break;
    case A_POS:
      t->uses_c = true;
      bprintf(b, "c->pos");
      break;
    case A_BF16:
      bprintf(b, "%s", bf16_ptr(t, w->node));
      break;
    case A_SCRATCH16:
      bprintf(b, "%s", scratch16_ptr(t));
      break;
    case A_IDX0:
      if (n->loop)
        bprintf(b, "t * %s", mstr(t, mnumel(&N(p, w->shape)->shape)).s);
      else
        bprintf(b, "0");
      break;
    }
  }
  if (s->T)
    bprintf(b, "%sT", s->narg ? ", " : "");
  bprintf(b, ");\n");
}

static int find_state(Graph *g, const char *name)
{
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!n->dead && n->op == OP_INPUT && n->a.state && !strcmp(n->a.name, name))
      return i;
  }
  return -1;
}

static void emit_state_table(Prog *p, Buf *out, ProgInfo *pi)
{
  Graph *g = p->g;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_INPUT || !n->a.state)
      continue;
    if (!pi->nstate)
      bprintf(out, "static const LmcTensorDesc %s_state[] = {\n", p->name);
    int rank = desc_rank(&n->shape, "state", n->a.name);
    size_t numel = mval(mnumel(&n->shape), 1);
    bprintf(out, "  { .name = ");
    bquote(out, n->a.name);
    bprintf(out, ", .rank = %d, .shape = {", rank);
    for (int d = 0; d < rank; d++)
      bprintf(out, "%s %d", d ? "," : "", n->shape.dim[d]);
    if (!rank)
      bprintf(out, " 0");
    bprintf(out, " }, .offset = %zu, .numel = %zu, .init = LMC_INIT_ZERO, .alias = -1 },\n", p->loc[i].off, numel);
    pi->nstate++;
    pi->state_numel += numel;
  }
  if (pi->nstate)
    bprintf(out, "};\n\n");
}

/* ready_head, ready_next: the gradients computed in place, by kernel. */
static void ready_lists(Text *t)
{
  Prog *p = t->p;
  Graph *g = p->g;
  const Layout *lay = p->m->lay;
  t->ready_head = xcalloc((size_t)g->nnode + 1, sizeof(int));
  t->ready_next = xcalloc((size_t)lay->nparam + 1, sizeof(int));
  t->announced = xcalloc((size_t)lay->nparam + 1, sizeof(bool));
  for (int i = 0; i < g->nnode; i++)
    t->ready_head[i] = -1;
  for (int q = lay->nparam - 1; q >= 0; q--) {   /* pushed last first: each list ascends */
    t->ready_next[q] = -1;
    Str name = {""};
    sprint(&name, "grad:%s", lay->param[q].name);
    int out = ir_find_output(g, name.s);   /* the node */
    Loc *l = out >= 0 ? &p->loc[out] : NULL;
    if (!l || l->kind != L_GRAD || l->off != lay->param[q].goff)
      continue;
    Node *k = N(p, l->node);
    int at = k->group ? p->anchor[k->group] : l->node;
    t->ready_next[q] = t->ready_head[at];
    t->ready_head[at] = q;
  }
}

static void emit_ready(Text *t, Buf *b, int q, int depth)
{
  t->uses_c = true;
  t->announced[q] = true;
  indent(b, depth);
  bprintf(b, "if (c->grad_ready) c->grad_ready(c, %d);   /* ", q);
  bcomment(b, t->p->m->lay->param[q].name);
  bprintf(b, " final */\n");
}

/* after node i's kernel, at depth */
static void emit_ready_after(Text *t, Buf *b, int i, int depth)
{
  for (int q = t->ready_head[i]; q >= 0; q = t->ready_next[q])
    emit_ready(t, b, q, depth);
}

/* The kernels' calls in node order, a loop as a C loop around its body's,
 * each gradient's grad_ready after the kernel, or the loop, that
 * finishes it. */
static void emit_calls(Text *t, Buf *b)
{
  Prog *p = t->p;
  Graph *g = p->g;
  /* Loop k is the run of nodes first[k]..last[k]; top-level leaves built
   * inside that run are computed before the loop. */
  int *first = xcalloc((size_t)g->nloop + 1, sizeof(int));
  int *last = xcalloc((size_t)g->nloop + 1, sizeof(int));
  for (int k = 0; k <= g->nloop; k++)
    first[k] = last[k] = -1;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || !n->loop)
      continue;
    if (first[n->loop] < 0)
      first[n->loop] = i;
    last[n->loop] = i;
  }
  int cur = 0;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    if (n->loop && !cur) {
      cur = n->loop;
      for (int j = i + 1; j < last[cur]; j++) {
        Node *m = &g->node[j];
        if (!m->dead && m->loop != cur && p->sig[j].has) {
          emit_call(t, b, j, 1);
          emit_ready_after(t, b, j, 1);
        }
      }
      if (g->loop[cur].reverse)
        bprintf(b, "  for (int t = T - 1; t >= 0; t--) {   /* loop %d, reverse */\n", cur);
      else
        bprintf(b, "  for (int t = 0; t < T; t++) {   /* loop %d */\n", cur);
      t->uses_T = true;
    }
    if (cur && !n->loop)
      continue;   /* a leaf, computed before the loop */
    if (p->sig[i].has)
      emit_call(t, b, i, cur ? 2 : 1);
    if (!cur)
      emit_ready_after(t, b, i, 1);
    if (cur && i == last[cur]) {
      bprintf(b, "  }\n");
      for (int j = first[cur]; j <= last[cur]; j++)
        if (g->node[j].loop == cur)
          emit_ready_after(t, b, j, 1);
      cur = 0;
    }
  }
  free(first);
  free(last);
}

/* The outputs: the loss as run()'s value (returned, NULL if none), the
 * objective (when the graph has one) into c->objective, logp's place, and
 * the gradients and detached state copied where the runtime
 * reads them (zeros for a parameter without a gradient output). */
static char *emit_outputs(Text *t, Buf *b, ProgInfo *pi)
{
  Prog *p = t->p;
  Graph *g = p->g;
  char *loss = NULL;
  for (int o = 0; o < g->nout; o++) {
    Output *op = &g->out[o];
    Node *n = N(p, op->node);
    Loc *l = &p->loc[op->node];
    if (n->dead)
      die("output %s is dead", op->name);
    if (!strcmp(op->name, "loss")) {
      Str at = ptr(t, op->node, NULL);
      loss = xasprintf(strchr(at.s, ' ') ? "(%s)[0]" : "%s[0]", at.s);
    } else if (!strcmp(op->name, "objective")) {
      Str at = ptr(t, op->node, NULL);
      bprintf(b, strchr(at.s, ' ') ? "  c->objective = (%s)[0];\n" : "  c->objective = %s[0];\n", at.s);
      t->uses_c = true;
      pi->has_objective = true;
    } else if (!strcmp(op->name, "logp")) {
      if (l->kind != L_WORK || l->stacked || l->last)
        die("logp is not a buffer in c->work");
      pi->has_logp = true;
      pi->logp_last = !(n->shape.seq & 1);   /* last-step: the last position's rows only */
      pi->logp_offset = l->off;
    } else if (!strncmp(op->name, "grad:", 5)) {
      Param *q = find_param(p->m->lay, op->name + 5);
      if (!q)
        die("output %s: no such parameter", op->name);
      if (mval(mnumel(&n->shape), g->max_seq) != q->numel || mnumel(&n->shape).k)
        die("output %s has shape %s, the parameter %s", op->name, shape_str(&n->shape), shape_str(&q->shape));
      if (!pi->has_backward)
        bprintf(b, "  /* gradients */\n");
      pi->has_backward = true;
      t->uses_c = true;
      if (l->kind == L_GRAD && l->off == q->goff)
        continue;   /* computed in place */
      /* a rows gradient (row-grad) computed in the arena, without
       * plan-memory: its rows, ids and count, gnumel reals from the start
       * of its buffer */
      bprintf(b, "  memcpy(%s, %s, %zu * sizeof(real));   /* ", grad_ptr(t, q), ptr(t, op->node, NULL).s, q->gnumel);
      bcomment(b, q->name);
      bprintf(b, " */\n");
      emit_ready(t, b, (int)(q - p->m->lay->param), 1);
    } else if (find_state(g, op->name) >= 0) {
      int s = find_state(g, op->name);
      Node *sn = N(p, s);
      if (mnumel(&n->shape).k || mval(mnumel(&n->shape), 1) != mval(mnumel(&sn->shape), 1))
        die("state output %s has shape %s, the input %s", op->name, shape_str(&n->shape), shape_str(&sn->shape));
      if (same_loc(l, &p->loc[s]))
        continue;
      bprintf(b, "  memcpy(%s, ", ptr(t, s, NULL).s);
      bprintf(b, "%s, %zu * sizeof(real));   /* state ", ptr(t, op->node, NULL).s, mval(mnumel(&sn->shape), 1));
      bcomment(b, op->name);
      bprintf(b, ", detached */\n");
    }
  }
  if (pi->has_backward) {
    /* parameters without a gradient output get zeros */
    for (int q = 0; q < p->m->lay->nparam; q++) {
      Str name = {""};
      sprint(&name, "grad:%s", p->m->lay->param[q].name);
      if (ir_find_output(g, name.s) >= 0)
        continue;
      bprintf(b, "  memset(%s, 0, %zu * sizeof(real));   /* ", grad_ptr(t, &p->m->lay->param[q]),
              p->m->lay->param[q].numel);
      bcomment(b, p->m->lay->param[q].name);
      bprintf(b, ": no gradient */\n");
      emit_ready(t, b, q, 1);
    }
    for (int q = 0; q < p->m->lay->nparam; q++)
      if (!t->announced[q])
        die("the gradient of %s is never announced ready", p->m->lay->param[q].name);
  }
  return loss;
}

/* run(): the kernels in node order, loops as C loops, then the outputs. */
static void emit_run(Prog *p, Buf *out, ProgInfo *pi)
{
  Graph *g = p->g;
  Buf b = {0};
  Text t = {.p = p};
  pointers_init(&t);
  ready_lists(&t);
  bool has_targets = g->plan->targets_off != SIZE_MAX;
  bool has_loss = ir_find_output(g, "loss") >= 0;
  if (has_targets) {
    if (has_loss)
      bprintf(&b, "  const int have_targets = targets != NULL;\n");
    bprintf(&b, "  if (!targets)   /* no loss wanted: read zeros */\n");
    bprintf(&b, "    targets = memset(%s, 0, %d * sizeof *targets);\n", targets_ptr(&t), g->max_seq * g->batch);
  }
  emit_calls(&t, &b);
  char *loss = emit_outputs(&t, &b, pi);
  if (loss && has_targets)
    bprintf(&b, "  return have_targets ? %s : 0;\n", loss);
  else if (loss)
    bprintf(&b, "  return %s;\n", loss);
  else
    bprintf(&b, "  return 0;\n");
  free(loss);

  const char *body = bstr(&b);
  bprintf(out, "static double %s_run(LmcCtx *c, const int32_t *tokens, const int32_t *targets, int T)\n{\n", p->name);
  if (t.uses_w)
    bprintf(out, "  real *w = c->work;\n");
  pointers_write(&t, out);
  if (!t.uses_w && !t.uses_c)
    bprintf(out, "  (void)c;\n");
  if (!t.uses_tokens)
    bprintf(out, "  (void)tokens;\n");
  if (!has_targets)
    bprintf(out, "  (void)targets;\n");
  if (!t.uses_T)
    bprintf(out, "  (void)T;\n");
  bprintf(out, "%s}\n\n", body);
  bfree(&b);
  pointers_free(&t);
  free(t.ready_head);
  free(t.ready_next);
  free(t.announced);
}

/* p->member: the live members of each fused kernel, so that emitting one
 * walks its members, not the graph. */
static void group_members(Prog *p)
{
  Graph *g = p->g;
  p->member_start = xcalloc((size_t)g->ngroup + 3, sizeof(int));
  p->member = xcalloc((size_t)g->nnode + 1, sizeof(int));
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group)
      p->member_start[g->node[i].group + 2]++;
  for (int k = 0; k <= g->ngroup; k++)
    p->member_start[k + 2] += p->member_start[k + 1];
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group)
      p->member[p->member_start[g->node[i].group + 1]++] = i;
}

/* The node a chain of reshape views of id reads. */
static int through_reshapes(Graph *g, int id)
{
  while (g->node[id].op == OP_RESHAPE && is_view(g, &g->node[id]))
    id = g->node[id].in[0];
  return id;
}

size_t shadow16_of(Prog *p, int id)
{
  return p->shadow16[through_reshapes(p->g, id)];
}

/* The bf16 paths of a single-precision program: a shadow for the
 * gradient that a log_softmax group computes when a product reads it
 * (the logits' gradient, the largest operand of all), so that no pass of
 * its own rounds it; the scratch after the shadows. */
static void plan_bf16(Prog *p)
{
  Graph *g = p->g;
  p->bf16 = g->real == DT_F32;
  p->shadow16 = xcalloc((size_t)g->nnode + 1, sizeof *p->shadow16);
  for (int i = 0; i < g->nnode; i++)
    p->shadow16[i] = SIZE_MAX;
  size_t at = 0;
  for (int i = 0; i < g->nnode && p->bf16; i++) {
    Node *n = &g->node[i];
    if (n->dead || p->skip[i] || (n->op != OP_MATMUL && n->op != OP_MATMUL_BIAS && n->op != OP_BMM))
      continue;
    for (int j = 0; j < 2; j++) {
      int x = through_reshapes(g, n->in[j]);
      Node *d = &g->node[x];
      if (d->op != OP_NLL_LOG_SOFTMAX_GRAD || !d->group || p->anchor[d->group] < 0 ||
          g->node[p->anchor[d->group]].op != OP_LOG_SOFTMAX || !stored(p, x) || p->shadow16[x] != SIZE_MAX)
        continue;
      p->shadow16[x] = at;
      at += (mval(mnumel(&d->shape), g->max_seq) + 31) / 32 * 32;
    }
  }
  p->scratch16_off = at;
}

Prog *open_program(Model *m, Graph *g, const char *prog, bool training)
{
  Prog *p = xcalloc(1, sizeof *p);
  *p = (Prog){.m = m, .g = g, .name = prog, .training = training};
  if (!g->plan || !g->plan->loc)
    die("the %s program is not placed", prog);
  p->loc = g->plan->loc;
  p->skip = g->plan->skip;
  p->sig = xcalloc((size_t)g->nnode + 1, sizeof *p->sig);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!n->dead && is_dropout_op(n->op) && p->training && (n->a.id2 < 0 || n->a.id2 >= m->nslot))
      die("n%d reads dropout slot %d of %d", i, n->a.id2, m->nslot);
  }
  p->anchor = group_anchors(g);
  group_members(p);
  plan_bf16(p);
  emit_kernels(p);
  return p;
}

void emit_program(Prog *p, Buf *out, ProgInfo *pi)
{
  memset(pi, 0, sizeof *pi);
  pi->work_numel = p->g->plan->work_numel;
  pi->work16_numel = p->scratch16_off + p->scratch16_numel;
  emit_state_table(p, out, pi);
  emit_run(p, out, pi);
  free(p->sig);
  free(p->shadow16);
  free(p->anchor);
  free(p->member_start);
  free(p->member);
  free(p);
}

void emit_prog_struct(Buf *out, const char *field, Graph *g, const char *prog, ProgInfo *pi)
{
  if (!g) {
    bprintf(out, "  .%s = { .run = NULL },\n", field);
    return;
  }
  bprintf(out, "  .%s = {\n", field);
  bprintf(out, "    .batch = %d,\n", g->batch);
  bprintf(out, "    .max_seq = %d,\n", g->max_seq);
  bprintf(out, "    .work_numel = %zu,\n", pi->work_numel);
  bprintf(out, "    .state_numel = %zu,\n", pi->state_numel);
  bprintf(out, "    .nstate = %d,\n", pi->nstate);
  if (pi->nstate)
    bprintf(out, "    .state = %s_state,\n", prog);
  else
    bprintf(out, "    .state = NULL,\n");
  bprintf(out, "    .has_backward = %d,\n", pi->has_backward);
  bprintf(out, "    .run = %s_run,\n", prog);
  bprintf(out, "    .has_logp = %d,\n", pi->has_logp);
  bprintf(out, "    .logp_last = %d,\n", pi->logp_last);
  bprintf(out, "    .logp_offset = %zu,\n", pi->logp_offset);
  bprintf(out, "    .work16_numel = %zu,\n", pi->work16_numel);
  bprintf(out, "  },\n");
}
