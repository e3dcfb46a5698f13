/*
 * plan.c: plan-memory, the static memory plan of one program.
 *
 * Every value that needs a buffer of its own (buffers_needed) gets an
 * offset in one work arena, sized for T = max_seq.  Two buffers share
 * bytes when their lifetimes do not overlap.  Lifetimes come from the
 * schedule, forward and backward together, in node positions:
 *   - a value is born where its kernel runs (a fused kernel runs at its
 *     anchor, the last live member) and dies at its last use; a use by a
 *     view (reshape, step, stack, final, a viewing slice) is a use of the
 *     viewed buffer, so views alias their source for as long as they live;
 *   - a loop body value lives across the whole loop (step t + 1 may read
 *     step t through a carry), and after it for as long as a STACK of it
 *     is read; a top-level value read inside a loop lives to the loop's end;
 *   - outputs live to the end of run(): the runtime reads logp, the loss,
 *     the gradients and the next state after it returns.
 * The bounds are inclusive, so a kernel's output never shares bytes with
 * one of its inputs.
 *
 * A body value that no STACK reads is needed for one step only (a carry
 * reads the previous step's next value before this step overwrites it,
 * and FINAL reads the last step's), so it is stored once instead of
 * max_seq times: most of an evaluation program's loop values, and the
 * backward loops' temporaries.
 *
 * One kernel writes in place: log_softmax fused with its nll gradient
 * (fuse_nll.c) reads each logit before it writes its gradient, so when the
 * logits die there the gradient takes their buffer (93 MB less for the
 * default models).
 *
 * Placement is greedy by size (largest first, ties by node order), each
 * buffer at the lowest offset free over its whole lifetime: deterministic,
 * and within a few percent of the peak of simultaneously live bytes on
 * these graphs (stats print both).  The placed buffers are kept in order
 * of offset, so the lowest free offset is one sweep from offset 0 that
 * stops at the first gap big enough, and crosses a run of buffers that
 * leave no gap and are all live at the time in one step (see Run).
 *
 * Without this pass plan_arena lays every buffer out in its own region,
 * in node order (the bump layout), so the emitted C always finds its work
 * arena here: plan_arena also puts the stand-in targets and the scratch
 * block of a blockwise loss kernel after the buffers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

static size_t align16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

int *group_anchors(const Graph *g)
{
  int *a = xcalloc((size_t)g->ngroup + 1, sizeof(int));
  for (int k = 0; k <= g->ngroup; k++)
    a[k] = -1;
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group)
      a[g->node[i].group] = i;
  /* log_softmax fused with its nll gradient runs where log_softmax is */
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group && g->node[i].op == OP_LOG_SOFTMAX)
      a[g->node[i].group] = i;
  return a;
}

bool *buffers_needed(Graph *g)
{
  bool *need = xcalloc((size_t)g->nnode + 1, sizeof(bool));
  Users u = users_make(g);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || is_view(g, n) || n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL)
      continue;
    bool stored = !n->group || u.out[i];
    for (int k = 0; k < u.n[i] && !stored; k++)
      stored = g->node[u.u[i][k]].group != n->group;
    need[i] = stored;
  }
  users_free(&u);
  return need;
}

size_t buffer_numel(const Graph *g, int i)
{
  const Node *n = &g->node[i];
  size_t numel = (size_t)shape_numel(&n->shape, g->max_seq);
  if (n->loop && !(g->plan && g->plan->one_step[i]))
    numel *= (size_t)g->max_seq;
  return numel;
}

/* The node whose buffer node i's value lives in (itself, or what a view
 * reads), or -1 for none in the work arena. */
static int root_of(const Graph *g, const bool *need, int i)
{
  for (;;) {
    const Node *n = &g->node[i];
    if (need[i])
      return i;
    if (n->op == OP_FINAL)
      i = g->node[n->in[0]].in[1];
    else if (is_view(g, n))
      i = n->in[0];
    else
      return -1;
  }
}

typedef struct {
  int node;
  size_t size;
  int start, end;
} Buffer;

static int by_size(const void *a, const void *b)
{
  const Buffer *x = a, *y = b;
  if (x->size != y->size)
    return x->size < y->size ? 1 : -1;
  return x->node - y->node;
}

typedef struct {
  size_t lo, hi;          /* bytes [lo, hi) of the arena */
  int start, end;         /* lifetime */
} Placed;

/* The placed buffers in order of offset, cut into runs of at most
 * 2 * RUN.  A run records its extent and the lifetimes of its members:
 * when its members leave no gap between them and all are live at the
 * same time as the buffer being placed, the sweep crosses the run in one
 * step (each member starts below the end of those before it, so each
 * pushes `at` to its end): deep models, whose forward values all live
 * until the backward pass, stack thousands of such buffers.  A run none
 * of whose members is live then is skipped in one step too. */
enum { RUN = 64 };

typedef struct {
  Placed m[2 * RUN];      /* in order of offset */
  int n;
  size_t lo, hi;          /* the lowest start, the highest end */
  int min_start, max_start, min_end, max_end;   /* births and deaths */
  bool gapless;           /* [lo, hi) is covered by the members */
} Run;

static void summarize(Run *r)
{
  r->lo = r->m[0].lo;
  r->hi = r->m[0].hi;
  r->min_start = r->max_start = r->m[0].start;
  r->min_end = r->max_end = r->m[0].end;
  r->gapless = true;
  for (int i = 1; i < r->n; i++) {
    const Placed *q = &r->m[i];
    r->gapless &= q->lo <= r->hi;
    r->hi = q->hi > r->hi ? q->hi : r->hi;
    r->min_start = q->start < r->min_start ? q->start : r->min_start;
    r->max_start = q->start > r->max_start ? q->start : r->max_start;
    r->min_end = q->end < r->min_end ? q->end : r->min_end;
    r->max_end = q->end > r->max_end ? q->end : r->max_end;
  }
}

/* The lowest offset from which buffer x overlaps no placed buffer live at
 * the same time: a sweep up the placed buffers that moves `at` past each
 * one live with x that it would overlap, and stops at the first that
 * starts at or above at + size. */
static size_t first_fit(Run **run, int nrun, const Buffer *x)
{
  size_t at = 0;
  for (int k = 0; k < nrun; k++) {
    const Run *r = run[k];
    if (r->min_start > x->end || r->max_end < x->start)
      continue;   /* none is live at the same time */
    if (r->gapless && x->size > 0 && r->max_start <= x->end && r->min_end >= x->start) {
      if (r->lo >= at + x->size)
        return at;
      at = r->hi > at ? r->hi : at;
      continue;
    }
    for (int i = 0; i < r->n; i++) {
      const Placed *q = &r->m[i];
      if (q->start > x->end || x->start > q->end)
        continue;   /* not live at the same time */
      if (q->lo >= at + x->size)
        return at;
      if (q->hi > at)
        at = q->hi;
    }
  }
  return at;
}

/* Inserts q after every placed buffer that starts at or below q->lo;
 * *run may grow (a full run splits in two). */
static void insert_placed(Run ***run, int *nrun, int *caprun, Placed q)
{
  int k = *nrun - 1;
  while (k > 0 && (*run)[k]->lo > q.lo)
    k--;
  if (k < 0) {
    *run = xcalloc(*caprun = 16, sizeof **run);
    (*run)[0] = xcalloc(1, sizeof(Run));
    *nrun = k = 0;
    (*nrun)++;
  }
  Run *r = (*run)[k];
  if (r->n == 2 * RUN) {   /* split: the upper half moves to a new run after it */
    if (*nrun == *caprun)
      *run = xrealloc(*run, sizeof **run * (size_t)(*caprun *= 2));
    memmove(&(*run)[k + 2], &(*run)[k + 1], sizeof **run * (size_t)(*nrun - k - 1));
    Run *upper = xcalloc(1, sizeof(Run));
    memcpy(upper->m, r->m + RUN, sizeof(Placed) * RUN);
    upper->n = RUN;
    r->n = RUN;
    summarize(r);
    summarize(upper);
    (*run)[k + 1] = upper;
    (*nrun)++;
    if (upper->lo <= q.lo)
      r = upper;
  }
  int i = r->n;
  while (i > 0 && r->m[i - 1].lo > q.lo)
    i--;
  memmove(&r->m[i + 1], &r->m[i], sizeof(Placed) * (size_t)(r->n - i));
  r->m[i] = q;
  r->n++;
  summarize(r);
}

/* First fit by address: each buffer, in the order of buf, at the lowest
 * offset where it overlaps no placed buffer that it overlaps in time.
 * Returns -1, or the first buffer that would end past LMC_MAX_BYTES (its
 * end, in elements, in *over). */
static int place_buffers(const Graph *g, Plan *p, const Buffer *buf, int nbuf, size_t *over)
{
  int64_t real = g->real == DT_F64 ? 8 : 4;
  Run **run = NULL;
  int nrun = 0, caprun = 0, too_big = -1;
  for (int b = 0; b < nbuf && too_big < 0; b++) {
    const Buffer *x = &buf[b];
    size_t at = first_fit(run, nrun, x);
    if ((int64_t)(at + x->size) > LMC_MAX_BYTES / real) {   /* at and size are below it */
      *over = at + x->size;
      too_big = x->node;
      break;
    }
    insert_placed(&run, &nrun, &caprun, (Placed){at, at + x->size, x->start, x->end});
    p->off[x->node] = at;
    if (at + x->size > p->numel)
      p->numel = at + x->size;
  }
  for (int k = 0; k < nrun; k++)
    free(run[k]);
  free(run);
  return too_big;
}

/* What plan-memory knows of each node while it plans (nn + 1 entries
 * each; first and last nloop + 1). */
typedef struct {
  int nn;
  bool *need;             /* buffers_needed */
  int *anchor;            /* group_anchors */
  int *first, *last;      /* loop k is the run of nodes first[k]..last[k] */
  int *pos;               /* where node i runs */
  int *root;              /* whose buffer node i's value lives in, or -1 */
  int *start, *end;       /* a buffer's lifetime, in positions */
  bool *stacked;          /* a STACK reads the buffer */
  int *same;              /* the buffer node i writes over (in place), or -1 */
} Life;

/* Where each node runs: a fused kernel at its anchor; a top-level leaf
 * built inside a loop's run before the loop. */
static void positions(const Graph *g, Life *f)
{
  for (int k = 0; k < g->nloop; k++)
    f->first[k] = f->last[k] = -1;
  for (int i = 0; i < f->nn; i++) {
    const Node *n = &g->node[i];
    if (n->dead || !n->loop)
      continue;
    if (f->first[n->loop] < 0)
      f->first[n->loop] = i;
    f->last[n->loop] = i;
  }
  int *inloop = xcalloc((size_t)f->nn + 1, sizeof(int));   /* loop whose run holds position i */
  for (int k = 1; k < g->nloop; k++)
    for (int i = f->first[k]; i >= 0 && i <= f->last[k]; i++)
      inloop[i] = k;
  for (int i = 0; i < f->nn; i++) {
    const Node *n = &g->node[i];
    f->pos[i] = n->group && f->anchor[n->group] >= 0 ? f->anchor[n->group] : i;
    if (!n->loop && inloop[i])
      f->pos[i] = f->first[inloop[i]];
  }
  free(inloop);
}

/* Each buffer's lifetime: from where it is computed (a body value: its
 * loop's start) to its last read, through views, to the loop's end for a
 * capture, to the end of run() for an output. */
static void lifetimes(const Graph *g, Life *f)
{
  for (int i = 0; i < f->nn; i++) {
    f->root[i] = g->node[i].dead ? -1 : root_of(g, f->need, i);
    f->start[i] = f->end[i] = -1;
    if (!f->need[i])
      continue;
    const Node *n = &g->node[i];
    f->start[i] = n->loop ? f->first[n->loop] : f->pos[i];
    f->end[i] = n->loop ? f->last[n->loop] : f->pos[i];
  }
  for (int i = 0; i < f->nn; i++) {
    const Node *n = &g->node[i];
    if (n->dead)
      continue;
    if (n->op == OP_STACK && f->root[i] >= 0)
      f->stacked[f->root[i]] = true;
    for (int k = 0; k < n->nin; k++) {
      int r = f->root[n->in[k]];
      if (r < 0)
        continue;
      int at = f->pos[i];
      if (n->loop && !g->node[r].loop)
        at = f->last[n->loop];   /* a capture: read at every step */
      if (at > f->end[r])
        f->end[r] = at;
    }
  }
  for (int o = 0; o < g->nout; o++) {
    int r = f->root[g->out[o].node];
    if (r >= 0)
      f->end[r] = f->nn;
  }
}

/* log_softmax fused with its nll gradient writes the gradient over the
 * logits when nothing reads them later (k_log_softmax_nll): the two are
 * one buffer. */
static void in_place(const Graph *g, Life *f)
{
  for (int i = 0; i < f->nn; i++) {
    f->same[i] = -1;
    const Node *n = &g->node[i];
    if (n->dead || n->op != OP_NLL_LOG_SOFTMAX_GRAD || !n->group || !f->need[i])
      continue;
    int a = f->anchor[n->group], in = g->node[a].in[0];
    if (g->node[in].op == OP_ADD && g->node[in].group == n->group)
      in = g->node[in].in[0];   /* a bias fused in: the product's buffer */
    int x = f->root[in];
    if (x < 0 || g->node[x].loop || f->end[x] != f->pos[a] || buffer_numel(g, x) != buffer_numel(g, i))
      continue;
    f->same[i] = x;
    f->end[x] = f->end[i] > f->end[x] ? f->end[i] : f->end[x];
  }
}

/* A gradient output is computed where the runtime wants it, in c->grad,
 * not in the arena and copied there: a whole-tensor value of its own (not
 * a view, not per step, not sharing bytes), the first output of it. */
static void gradient_outputs(const Graph *g, const Life *f, Plan *p)
{
  p->grad_out = arena_calloc((size_t)f->nn + 1, sizeof(int));
  for (int i = 0; i < f->nn; i++)
    p->grad_out[i] = -1;
  bool *shares = xcalloc((size_t)f->nn + 1, sizeof(bool));   /* another node writes over it */
  for (int i = 0; i < f->nn; i++)
    if (f->same[i] >= 0)
      shares[f->same[i]] = true;
  for (int o = 0; o < g->nout; o++) {
    int r = g->out[o].node;
    if (strncmp(g->out[o].name, "grad:", 5) || !f->need[r] || g->node[r].loop || p->grad_out[r] >= 0)
      continue;
    if (f->same[r] < 0 && !shares[r])
      p->grad_out[r] = o;
  }
  free(shares);
}

/* The buffers to place, largest first: each that needs one and neither
 * writes over another's nor lives in c->grad.  Sets one_step and naive. */
static Buffer *buffers(const Graph *g, const Life *f, Plan *p, int *nbuf)
{
  p->one_step = arena_calloc((size_t)f->nn + 1, sizeof(bool));
  Buffer *buf = xcalloc((size_t)f->nn + 1, sizeof(Buffer));
  *nbuf = 0;
  for (int i = 0; i < f->nn; i++) {
    if (!f->need[i])
      continue;
    p->naive = align16(p->naive + buffer_numel(g, i));
    p->one_step[i] = g->node[i].loop && !f->stacked[i];
    if (f->same[i] < 0 && p->grad_out[i] < 0)
      buf[(*nbuf)++] = (Buffer){i, align16(buffer_numel(g, i)), f->start[i], f->end[i]};
  }
  qsort(buf, (size_t)*nbuf, sizeof *buf, by_size);
  return buf;
}

static void *ints(int n)
{
  return xcalloc((size_t)n + 1, sizeof(int));
}

void plan_memory(Graph *g)
{
  int nn = g->nnode;
  Life f = {.nn = nn, .need = buffers_needed(g), .anchor = group_anchors(g), .first = ints(g->nloop),
            .last = ints(g->nloop), .pos = ints(nn), .root = ints(nn), .start = ints(nn), .end = ints(nn),
            .stacked = xcalloc((size_t)nn + 1, sizeof(bool)), .same = ints(nn)};
  positions(g, &f);
  lifetimes(g, &f);
  in_place(g, &f);
  g->plan = arena_calloc(1, sizeof *g->plan);
  Plan *p = g->plan;
  p->shared = true;
  gradient_outputs(g, &f, p);
  int nbuf;
  Buffer *buf = buffers(g, &f, p, &nbuf);
  p->off = arena_calloc((size_t)nn + 1, sizeof(size_t));
  for (int i = 0; i < nn; i++)
    p->off[i] = SIZE_MAX;
  size_t over = 0;
  int too_big = place_buffers(g, p, buf, nbuf, &over);
  for (int i = 0; i < nn; i++)
    if (f.same[i] >= 0)
      p->off[i] = p->off[f.same[i]];
  free(buf);
  void *arrays[] = {f.need, f.anchor, f.first, f.last, f.pos, f.root, f.start, f.end, f.stacked, f.same};
  for (size_t k = 0; k < sizeof arrays / sizeof *arrays; k++)
    free(arrays[k]);
  if (too_big >= 0)
    ir_error_node(g, too_big, "%s: %s needs %.1f GiB of work memory with the values live at the same time; at most %d GiB",
                  op_info[g->node[too_big].op].name, shape_str(&g->node[too_big].shape),
                  (double)over * (g->real == DT_F64 ? 8 : 4) / (1 << 30), LMC_MAX_GIB);
}

/* ---------------------------------------------------------------- the arena */

size_t logit_rows(const Graph *g, const Node *prod)
{
  const Shape *s = &prod->shape;
  return mval(mdiv(mnumel(s), mdim(s, s->rank - 1)), g->max_seq);
}

/* Without plan-memory, every buffer its own region, in node order. */
static Plan *bump_layout(Graph *g)
{
  int nn = g->nnode;
  Plan *p = arena_calloc(1, sizeof *p);
  p->off = arena_calloc((size_t)nn + 1, sizeof(size_t));
  p->grad_out = arena_calloc((size_t)nn + 1, sizeof(int));
  p->one_step = arena_calloc((size_t)nn + 1, sizeof(bool));
  g->plan = p;   /* buffer_numel reads one_step: none */
  bool *need = buffers_needed(g);
  for (int i = 0; i < nn; i++) {
    p->off[i] = SIZE_MAX;
    p->grad_out[i] = -1;
    if (!need[i])
      continue;
    p->off[i] = p->numel;
    p->numel = align16(p->numel + buffer_numel(g, i));
    if ((int64_t)p->numel > LMC_MAX_BYTES / (g->real == DT_F64 ? 8 : 4)) {   /* each buffer is below it */
      free(need);
      ir_error_node(g, i, "%s: %s needs more than %d GiB of work memory with every value before it (without plan-memory)",
                    op_info[g->node[i].op].name, shape_str(&g->node[i].shape), LMC_MAX_GIB);
    }
  }
  free(need);
  p->naive = p->numel;
  return p;
}

static bool reads_targets(const Graph *g)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == OP_INPUT && !strcmp(g->node[i].a.name, "targets"))
      return true;
  return false;
}

void plan_arena(Graph *g)
{
  if (!g->plan || !g->plan->shared)
    bump_layout(g);
  Plan *p = g->plan;
  size_t top = p->numel;
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
