/*
 * emit_c.c: the C emitter, the last stage of the pipeline.
 *
 * A Program holds the same network specialised three times (train: forward
 * and backward at the training batch; eval and gen: forward only).  emit_c
 * writes them as one standalone C file that includes lmc_rt.h and
 * <cblas.h> and defines `lmc_model`, the descriptor the runtime drives.
 * The file reads top to bottom: parameter, hyper-parameter and dropout
 * tables; for each program its kernels, its state table and its run(); the
 * optimizer; the model.  docs/emitted-code.md describes it for readers.
 *
 * Every live node that computes something becomes one `static void` kernel
 * named after it (train_k17_tanh), preceded by a comment with its shapes
 * and the Lua line that built it, and specialised to its shapes: static
 * sizes are literals, sizes that scale with the sequence length are written
 * in terms of the kernel's argument T.  Every size in a shape is a monomial
 * c * T^k, so the emitter computes with those (Mono), never with strings.
 * Elementwise ops, sums, broadcasts, transposes, slices and concatenations
 * are all one loop nest (Nest): a list of loop sizes and, for each operand,
 * its stride along each loop; adjacent loops that walk every operand
 * contiguously are merged, so an unbroadcast add is one flat loop.
 *
 * Views (reshape, step, stack, final) emit no kernel: they are pointers
 * into their source's buffer (Loc).  A loop becomes a C for loop around
 * the kernels of its body; a body node's buffer holds max_seq copies of its
 * per-step value, and its kernel is called with pointers offset to step t.
 *
 * Buffers: parameters live in c->param, hidden state in c->state, tokens
 * and targets are run()'s arguments, every other value in c->work at the
 * offset plan_work() gives it (a bump allocator; a liveness-based memory
 * plan replaces that one function).
 *
 * The output is deterministic: everything is emitted in node order and
 * nothing depends on addresses, hashing or time.
 */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmc.h"

/* ------------------------------------------------------------ text */

typedef struct {
  char *s;
  size_t len, cap;
} Buf;

static void bvprintf(Buf *b, const char *fmt, va_list ap)
{
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    die("vsnprintf failed");
  if (b->len + (size_t)n + 1 > b->cap) {
    b->cap = (b->len + (size_t)n + 1) * 2;
    b->s = xrealloc(b->s, b->cap);
  }
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

static void bprintf(Buf *b, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  bvprintf(b, fmt, ap);
  va_end(ap);
}

static void indent(Buf *b, int depth)
{
  for (int i = 0; i < depth; i++)
    bprintf(b, "  ");
}

static const char *bstr(Buf *b)
{
  return b->s ? b->s : "";
}

static void bfree(Buf *b)
{
  free(b->s);
  *b = (Buf){0};
}

/* The one way text that came from outside (names, file names, the command
 * line, string hyper-parameters) enters the emitted C: s written for the
 * inside of a string literal (literal) or of a block comment, so that no
 * input can end the literal or the comment early.  Bytes outside printable
 * ASCII and the backslash become three-digit octal escapes (\015), so no
 * line break or line splice (backslash-newline) is ever written; in a
 * literal '"' becomes \"; the second '?' of "??" becomes \? (no trigraph,
 * for compilers that have them on); in a comment "*" and "/" are never
 * written next to each other, nor as the text's last character (the
 * caller's next character could complete a "*" "/"; every caller writes a
 * space or a letter before the text).  Names the front end
 * accepts ([A-Za-z_][A-Za-z0-9_.]*) come out unchanged. */
static void bescape(Buf *b, const char *s, bool literal)
{
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    unsigned c = *p;
    if (c < 32 || c >= 127 || (c == '\\' && !literal))
      bprintf(b, "\\%03o", c);
    else if (literal && (c == '"' || c == '\\'))
      bprintf(b, "\\%c", c);
    else if (c == '?' && p > (const unsigned char *)s && p[-1] == '?')
      bprintf(b, "\\?");
    else if (!literal && (c == '*' || c == '/') && (!p[1] || p[1] == (c == '*' ? '/' : '*')))
      bprintf(b, "%c ", c);
    else
      bprintf(b, "%c", c);
  }
}

/* A C string literal. */
static void bquote(Buf *b, const char *s)
{
  bprintf(b, "\"");
  bescape(b, s, true);
  bprintf(b, "\"");
}

/* Text inside a block comment: never closes it. */
static void bcomment(Buf *b, const char *s)
{
  bescape(b, s, false);
}

char *emit_c_escape(const char *s, bool literal)
{
  Buf b = {0};
  bprintf(&b, "%s", "");
  bescape(&b, s, literal);
  return b.s;
}

/* A double as a C literal that keeps its value (and sign of zero). */
static void bdouble(Buf *b, double v)
{
  if (isnan(v)) {
    bprintf(b, "NAN");
    return;
  }
  if (isinf(v)) {
    bprintf(b, v < 0 ? "-INFINITY" : "INFINITY");
    return;
  }
  char s[64];
  snprintf(s, sizeof s, "%.17g", v);
  bprintf(b, "%s%s", s, strpbrk(s, ".e") ? "" : ".0");
}

/* ------------------------------------------------------------ sizes */

typedef struct {
  int64_t c;
  int k;
} Mono;   /* c * T^k: every size and stride of a shape is one */

static Mono mono(int64_t c, int k)
{
  return (Mono){c, c ? k : 0};
}

static Mono mmul(Mono a, Mono b)
{
  return mono(a.c * b.c, a.k + b.k);
}

static Mono mdiv(Mono a, Mono b)
{
  if (!b.c || a.c % b.c || a.k < b.k)
    die("size %" PRId64 "*T^%d is not a multiple of %" PRId64 "*T^%d", a.c, a.k, b.c, b.k);
  return mono(a.c / b.c, a.k - b.k);
}

static bool meq(Mono a, Mono b)
{
  return a.c == b.c && a.k == b.k;
}

static bool mone(Mono a)
{
  return a.c == 1 && a.k == 0;
}

static Mono mdim(const Shape *s, int i)
{
  return mono(s->dim[i], (int)((s->seq >> i) & 1));
}

static Mono mnumel(const Shape *s)
{
  Mono m = mono(1, 0);
  for (int i = 0; i < s->rank; i++)
    m = mmul(m, mdim(s, i));
  return m;
}

static size_t mval(Mono m, int T)
{
  size_t v = (size_t)m.c;
  for (int i = 0; i < m.k; i++)
    v *= (size_t)T;
  return v;
}

/* Row-major strides of a contiguous tensor of shape s. */
static void contig(const Shape *s, Mono *st)
{
  Mono m = mono(1, 0);
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = m;
    m = mmul(m, mdim(s, i));
  }
}

/* ------------------------------------------------------------ emitter state */

enum { L_NONE, L_WORK, L_PARAM, L_GRAD, L_STATE, L_TOKENS, L_TARGETS, L_CONST };

/* Where a node's value lives. */
typedef struct {
  int kind;
  size_t off;             /* element offset in c->work, c->param, c->state or the table */
  int table;              /* L_CONST: lmc_const<table> */
  bool stacked;           /* a body node: step t at + t * step */
  bool last;              /* plus (T - 1) * step: the last slot of a forward loop */
  Mono step;              /* per-step size of a stacked buffer */
} Loc;

/* What a kernel parameter receives at the call. */
typedef enum {
  A_PTR,                  /* node's value (at step t in a loop) */
  A_CARRY,                /* carry node's source: its initial value at the first step, else next at t - 1 */
  A_KEY,                  /* dropout node's mask key */
  A_P,                    /* dropout node's probability */
  A_IDX0,                 /* t * numel of node `shape`: where this step's mask indices start */
  A_THREADS,              /* c->threads, for a kernel's parallel loop */
  A_SCRATCH,              /* the program's kernel scratch in c->work (E.scratch_off) */
} ArgKind;

enum { LOGIT_BLOCK = 1024 };   /* columns of logits per block in k_logits_nll */

/* Rows of a product of logits at T = max_seq: its numel over its last dim. */
static size_t logit_rows(const Graph *g, const Node *prod)
{
  const Shape *s = &prod->shape;
  return mval(mdiv(mnumel(s), mdim(s, s->rank - 1)), g->max_seq);
}

typedef struct {
  ArgKind kind;
  int node;
  int shape;              /* A_IDX0: the node whose per-step size is the stride */
} Arg;

enum { MAXARG = 96 };

typedef struct {
  bool has;               /* the node has a kernel (a fused kernel: its anchor has) */
  int narg;
  Arg arg[MAXARG];
  char decl[MAXARG][48];
  bool T;                 /* takes int T */
  const char *name;       /* the op part of its name: "tanh", "fused" */
  Shape iter;             /* a fused kernel: the shape its loop nest covers */
} Sig;

typedef struct {
  const char *name;
  int node;               /* first PARAM node in p->train */
  Shape shape;
  size_t off, numel;
  /* its gradient in c->grad: at goff, gnumel reals (layout_grads); with
   * rows (row-grad) max_rows rows of row_len, then their ids and count */
  size_t goff, gnumel;
  bool rows;
  size_t max_rows, row_len;
} Param;

typedef struct {
  Program *p;
  Param *param;
  int nparam;
  StrMap param_index;     /* name -> index in param */
  int nalias;             /* tied names ("alias:<name>" outputs) after the parameters */
  size_t param_numel;
  size_t grad_numel;      /* the gradient block: param_numel unless a gradient is rows */
  /* dropout slots, recovered from the training graph's dropout nodes */
  int nslot;
  const char **slot_name;
  double *slot_default;
  /* the program being emitted */
  Graph *g;
  const char *prog;       /* "train", "eval", "gen" */
  bool training;          /* dropout applies */
  Loc *loc;
  Sig *sig;
  size_t *off;            /* plan_work: offset in c->work, or SIZE_MAX */
  Users users;
  bool *skip;             /* not emitted: see locate() */
  int *anchor;            /* per group: the member whose position runs the kernel, or -1 */
  int *member_start;      /* group k's live members, in node order: */
  int *member;            /* member[member_start[k] .. member_start[k + 1]) */
  int *in_arg, *drop_arg; /* per node: the fused kernel (group) that has its pointer / dropout parameters */
  /* folded tables (literal nodes) of every program, one array per distinct table */
  int ntable;
  const double **table;
  size_t *table_n;
  size_t work_numel;
  size_t targets_off;     /* stand-in targets when run() gets NULL */
  size_t scratch_off;     /* k_logits_nll's block of logits, SIZE_MAX if none */
  /* what the text being generated mentions */
  bool uses_T, uses_w, uses_c, uses_tokens;
  char ring[32][256];
  int nring;
} E;

/* A size as a C expression: 200, T, 20*T, 4*T*T. */
static const char *mstr(E *e, Mono m)
{
  char *s = e->ring[e->nring++ % 32];
  if (m.k > MAXRANK)
    die("size with T^%d", m.k);
  /* T and t are ints: a size past INT_MAX at T = max_seq (below the size
   * limit, so it fits a long) is a long from its first factor on */
  const char *l = e->g && mval(m, e->g->max_seq) > INT_MAX ? "L" : "";
  if (m.k == 0) {
    snprintf(s, 256, "%" PRId64 "%s", m.c, l);
    return s;
  }
  e->uses_T = true;
  int n = m.c == 1 && !*l ? snprintf(s, 256, "T") : snprintf(s, 256, "%" PRId64 "%s*T", m.c, l);
  for (int i = 1; i < m.k; i++)
    n += snprintf(s + n, (size_t)(256 - n), "*T");
  return s;
}

static const char *ctype(DType dt)
{
  return dt == DT_I32 ? "int32_t" : "real";
}

/* A libm function for the program's real type: expf or exp. */
static const char *fn(E *e, const char *name)
{
  char *s = e->ring[e->nring++ % 32];
  snprintf(s, 256, "%s%s", name, e->g->real == DT_F32 ? "f" : "");
  return s;
}

/* exp and tanh where speed matters: the vectorisable lmc_expf and
 * lmc_tanhf of lmc_math.h for float, libm's for double. */
static const char *fast_exp(E *e)
{
  return e->g->real == DT_F32 ? "lmc_expf" : "exp";
}

static const char *fast_tanh(E *e)
{
  return e->g->real == DT_F32 ? "lmc_tanhf" : "tanh";
}

static Node *N(E *e, int id)
{
  return &e->g->node[id];
}

static Node *IN(E *e, Node *n, int k)
{
  return &e->g->node[n->in[k]];
}

/* ------------------------------------------------------------ parameters */

static Param *find_param(E *e, const char *name)
{
  int i = strmap_get(&e->param_index, name);
  return i < 0 ? NULL : &e->param[i];
}

static int desc_rank(const Shape *s, const char *what, const char *name)
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
static void layout_params(E *e)
{
  Graph *g = e->p->train;
  e->param = xcalloc((size_t)g->nnode + 1, sizeof *e->param);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->op != OP_PARAM)
      continue;
    Param *q = find_param(e, n->a.name);
    if (q) {
      if (!shape_eq(&q->shape, &n->shape))
        die("parameter %s used with shapes %s and %s", n->a.name, shape_str(&q->shape), shape_str(&n->shape));
      continue;
    }
    desc_rank(&n->shape, "parameter", n->a.name);
    strmap_put(&e->param_index, n->a.name, e->nparam);
    q = &e->param[e->nparam++];
    q->name = n->a.name;
    q->node = i;
    q->shape = n->shape;
    q->off = e->param_numel;
    q->numel = mval(mnumel(&n->shape), 1);
    e->param_numel += q->numel;
  }
  for (int o = 0; o < g->nout; o++)
    if (!strncmp(g->out[o].name, "alias:", 6))
      e->nalias++;
}

/* The gradient block: each parameter's gradient in the parameters' order,
 * dense at the same size, or, marked rows by row-grad, as max_rows rows of
 * row_len, then max_rows + 1 int32 (the rows' ids, ascending, then how
 * many), padded so that every region keeps its parameter's offset modulo
 * 8 (the optimizer's lanes).  Nothing moves when no gradient is rows. */
static void layout_grads(E *e)
{
  Graph *g = e->p->train;
  size_t rs = g->real == DT_F64 ? sizeof(double) : sizeof(float);
  e->grad_numel = 0;
  for (int i = 0; i < e->nparam; i++) {
    Param *q = &e->param[i];
    char name[512];
    snprintf(name, sizeof name, "grad:%s", q->name);
    int o = ir_find_output(g, name);
    Node *n = o >= 0 ? &g->node[o] : NULL;
    q->gnumel = q->numel;
    if (n && !n->dead && n->op == OP_EMBEDDING_GRAD && n->a.rows) {
      q->rows = true;
      q->max_rows = (size_t)shape_numel(&g->node[n->in[1]].shape, g->max_seq);
      q->row_len = (size_t)n->shape.dim[1];
      q->gnumel = q->max_rows * q->row_len + (4 * (q->max_rows + 1) + rs - 1) / rs;
      q->gnumel += (q->numel % 8 + 8 - q->gnumel % 8) % 8;
    }
    q->goff = e->grad_numel;
    e->grad_numel += q->gnumel;
  }
}

static bool is_dropout_op(Op op)
{
  return op == OP_DROPOUT || op == OP_DROPOUT_GRAD || op == OP_ADD_DROPOUT || op == OP_DROPOUT_ADD;
}

/* The run-time dropout probabilities: slot a.id2 of a dropout node is the
 * hyper-parameter a.name, compiled default a.f.  Dead nodes count, so a
 * pass that removes a dropout does not renumber the table. */
static void find_slots(E *e)
{
  Graph *g = e->p->train;
  for (int i = 0; i < g->nnode; i++)
    if (is_dropout_op(g->node[i].op) && g->node[i].a.id2 >= e->nslot)
      e->nslot = g->node[i].a.id2 + 1;
  e->slot_name = xcalloc((size_t)e->nslot + 1, sizeof *e->slot_name);
  e->slot_default = xcalloc((size_t)e->nslot + 1, sizeof *e->slot_default);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!is_dropout_op(n->op) || n->a.id2 < 0 || e->slot_name[n->a.id2])
      continue;
    e->slot_name[n->a.id2] = n->a.name ? n->a.name : "dropout";
    e->slot_default[n->a.id2] = n->a.f;
  }
  for (int s = 0; s < e->nslot; s++)
    if (!e->slot_name[s])
      die("dropout slot %d has no dropout node", s);
}

/* ------------------------------------------------------------ memory */


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
static void plan_work(E *e)
{
  Graph *g = e->g;
  bool *need = buffers_needed(g);
  size_t top = 0;
  for (int i = 0; i < g->nnode; i++) {
    e->off[i] = SIZE_MAX;
    if (!need[i])
      continue;
    if (g->plan && g->plan->grad_out[i] >= 0) {
      e->off[i] = 0;   /* stored, but in c->grad: see locate */
      continue;
    }
    if (g->plan) {
      if (g->plan->off[i] == SIZE_MAX)
        die("n%d needs a buffer the memory plan does not give it", i);
      e->off[i] = g->plan->off[i];
      continue;
    }
    e->off[i] = top;
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
  e->targets_off = SIZE_MAX;
  if (reads_targets(g)) {
    e->targets_off = top;
    top = align16(top + (size_t)g->max_seq * (size_t)g->batch);
  }
  /* a loss kernel that computes its logits a block at a time (fuse_nll.c)
   * keeps the block at the end of the arena: the arena of the largest
   * program (training's) covers it, so it costs no memory of its own */
  e->scratch_off = SIZE_MAX;
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group && g->node[i].op == OP_MATMUL) {
      e->scratch_off = top;
      top = align16(top + logit_rows(g, &g->node[i]) * LOGIT_BLOCK);
      break;
    }
  e->work_numel = top;
}

/* The folded table holding these values: an index into e->table, shared by
 * every program that folds the same values. */
static int find_table(E *e, const double *data, size_t n)
{
  for (int t = 0; t < e->ntable; t++)
    if (e->table_n[t] == n && !memcmp(e->table[t], data, n * sizeof(double)))
      return t;
  e->table = xrealloc(e->table, sizeof(double *) * (size_t)(e->ntable + 1));
  e->table_n = xrealloc(e->table_n, sizeof(size_t) * (size_t)(e->ntable + 1));
  e->table[e->ntable] = data;
  e->table_n[e->ntable] = n;
  return e->ntable++;
}

/* Where every live node's value lives: its own work buffer, or for a view
 * its source's, and for inputs and parameters their blocks. */
static void locate(E *e)
{
  Graph *g = e->g;
  size_t state_off = 0;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    Loc *l = &e->loc[i];
    *l = (Loc){.kind = L_NONE};
    if (n->dead)
      continue;
    /* without dce, a node no output needs may read a value that only a
     * fused kernel sees: it is left out like a dead one */
    e->skip[i] = false;
    for (int k = 0; k < n->nin && !e->users.live[i]; k++)
      if (e->skip[n->in[k]] || (e->loc[n->in[k]].kind == L_NONE && !(n->op == OP_CARRY && k == 1)))
        e->skip[i] = true;
    if (e->skip[i])
      continue;
    switch (n->op) {
    case OP_INPUT:
      if (n->a.state) {
        l->kind = L_STATE;
        l->off = state_off;
        state_off += mval(mnumel(&n->shape), 1);
      } else if (!strcmp(n->a.name, "tokens")) {
        l->kind = L_TOKENS;
      } else if (!strcmp(n->a.name, "targets")) {
        l->kind = L_TARGETS;
      } else {
        ir_error_node(e->g, i, "input '%s': the emitted C takes the inputs \"tokens\" and \"targets\" (i32) "
                      "and state; use --emit=ir or --emit=dot for other graphs", n->a.name);
      }
      if (!n->a.state && n->dtype != DT_I32)
        ir_error_node(e->g, i, "input '%s': token ids are i32, not %s", n->a.name,
                      n->dtype == DT_F64 ? "f64" : "f32");
      break;
    case OP_PARAM: {
      Param *q = find_param(e, n->a.name);
      if (!q)
        die("parameter %s of the %s program is not in the training program", n->a.name, e->prog);
      if (!shape_eq(&q->shape, &n->shape))
        die("parameter %s has shape %s in %s, %s in train", n->a.name, shape_str(&n->shape), e->prog,
            shape_str(&q->shape));
      l->kind = L_PARAM;
      l->off = q->off;
      break;
    }
    case OP_LITERAL:
      l->kind = L_CONST;
      l->table = find_table(e, n->a.data, mval(mnumel(&n->shape), 1));
      break;
    case OP_SLICE:
      if (!is_view(g, n))
        goto own;
      /* a contiguous run of the source: all dims before the axis are 1 */
      *l = e->loc[n->in[0]];
      {
        Node *x = N(e, n->in[0]);
        Mono st[MAXRANK];
        contig(&x->shape, st);
        for (int d = 0; d < n->a.axis; d++)
          if (!mone(mdim(&x->shape, d)))
            die("n%d: a slice view along axis %d of %s", i, n->a.axis, shape_str(&x->shape));
        if (l->stacked || l->last || st[n->a.axis].k)
          die("n%d: a slice view of a value stored per step", i);
        l->off += (size_t)n->a.start * (size_t)st[n->a.axis].c;
      }
      break;
    case OP_RESHAPE:
      if (is_view(g, n))
        *l = e->loc[n->in[0]];
      else
        goto own;
      break;
    case OP_LAST_STEP:
      *l = e->loc[n->in[0]];
      if (l->stacked || l->last || N(e, n->in[0])->loop)
        die("n%d: last_step of a value stored per step", i);
      l->last = true;
      l->step = mnumel(&n->shape);
      break;
    case OP_STEP:
      *l = e->loc[n->in[0]];
      if (l->stacked || N(e, n->in[0])->loop)
        die("n%d: step of a loop-body value", i);
      l->stacked = true;
      l->step = mnumel(&n->shape);
      break;
    case OP_STACK:
      *l = e->loc[n->in[0]];
      if (!l->stacked)
        die("n%d: stack of n%d, which is not stored per step", i, n->in[0]);
      l->stacked = false;
      break;
    case OP_FINAL: {
      Node *carry = N(e, n->in[0]);
      if (carry->op != OP_CARRY)
        die("n%d: final of a %s", i, op_info[carry->op].name);
      *l = e->loc[carry->in[1]];
      if (l->stacked) {
        l->stacked = false;
        l->last = !g->loop[carry->loop].reverse;
      }
      break;
    }
    default:
    own:
      if (g->plan && g->plan->grad_out[i] >= 0) {
        const char *name = g->out[g->plan->grad_out[i]].name + 5;
        Param *q = find_param(e, name);
        if (!q || q->numel != mval(mnumel(&n->shape), g->max_seq) || mnumel(&n->shape).k)
          die("n%d is the gradient of %s but not of its size", i, name);
        l->kind = L_GRAD;
        l->off = q->goff;
        e->uses_c = true;
        break;
      }
      if (e->off[i] == SIZE_MAX) {
        if (n->group)
          continue;   /* computed inside its fused kernel only */
        die("n%d (%s) has no buffer", i, op_info[n->op].name);
      }
      l->kind = L_WORK;
      l->off = e->off[i];
      l->stacked = n->loop != 0 && !(g->plan && g->plan->one_step[i]);
      l->step = mnumel(&n->shape);
      break;
    }
    if (l->kind == L_NONE)
      die("n%d (%s) reads a dead or unplaced node", i, op_info[n->op].name);
  }
}

/* A pointer to node id's value as a C expression; tsel is the step
 * ("t", "(t - 1)") for stacked values read inside a loop, else NULL. */
static bool same_loc(const Loc *a, const Loc *b)
{
  return a->kind == b->kind && a->off == b->off && a->last == b->last && !a->stacked && !b->stacked;
}

static const char *ptr(E *e, int id, const char *tsel)
{
  Loc *l = &e->loc[id];
  DType dt = N(e, id)->dtype;
  char *s = e->ring[e->nring++ % 32];
  int n = 0;
  switch (l->kind) {
  case L_WORK:
    e->uses_w = true;
    if (dt == DT_I32)
      n = snprintf(s, 256, "(int32_t *)(w + %zu)", l->off);
    else if (l->off)
      n = snprintf(s, 256, "w + %zu", l->off);
    else
      n = snprintf(s, 256, "w");
    break;
  case L_PARAM:
    e->uses_c = true;
    n = snprintf(s, 256, "c->param + %zu", l->off);
    break;
  case L_GRAD:
    e->uses_c = true;
    n = snprintf(s, 256, "c->grad + %zu", l->off);
    break;
  case L_STATE:
    e->uses_c = true;
    n = snprintf(s, 256, "c->state + %zu", l->off);
    break;
  case L_TOKENS:
    e->uses_tokens = true;
    n = snprintf(s, 256, "tokens");
    break;
  case L_TARGETS:
    n = snprintf(s, 256, "targets");
    break;
  case L_CONST:
    n = l->off ? snprintf(s, 256, "lmc_const%d + %zu", l->table, l->off) : snprintf(s, 256, "lmc_const%d", l->table);
    break;
  default:
    die("n%d has no storage", id);
  }
  /* each part is under 80 characters, so the 256 bytes hold them all */
  if (l->last) {
    e->uses_T = true;
    n += snprintf(s + n, (size_t)(256 - n), " + (T - 1) * %s", mstr(e, l->step));
  }
  if (l->stacked && tsel)
    n += snprintf(s + n, (size_t)(256 - n), " + %s * %s", tsel, mstr(e, l->step));
  return s;
}

/* ------------------------------------------------------------ loop nests */

enum { MAXOPND = 64 };

/* Loops over sizes size[0..n) (outermost first); operand j is read or
 * written at base[j] + sum of i_d * stride[j][d]; a zero stride
 * broadcasts. */
typedef struct {
  int n;
  Mono size[MAXRANK];
  int nop;
  Mono stride[MAXOPND][MAXRANK];
  Mono base[MAXOPND];
} Nest;

static void nest_init(Nest *ns, const Shape *s)
{
  memset(ns, 0, sizeof *ns);
  ns->n = s->rank;
  for (int i = 0; i < s->rank; i++)
    ns->size[i] = mdim(s, i);
}

/* An operand of shape x broadcast against the loop sizes as numpy does:
 * right-aligned, dims of size 1 (and missing dims) repeat. */
static int nest_add(Nest *ns)
{
  if (ns->nop == MAXOPND)
    die("a loop nest of more than %d operands", MAXOPND);
  return ns->nop++;
}

static void nest_bcast(Nest *ns, const Shape *x)
{
  int j = nest_add(ns);
  Mono st = mono(1, 0);
  ns->base[j] = mono(0, 0);
  for (int i = ns->n - 1, xi = x->rank - 1; i >= 0; i--, xi--) {
    if (xi < 0) {
      ns->stride[j][i] = mono(0, 0);
      continue;
    }
    Mono d = mdim(x, xi);
    ns->stride[j][i] = mone(d) && !mone(ns->size[i]) ? mono(0, 0) : st;
    st = mmul(st, d);
  }
}

static void nest_strided(Nest *ns, const Mono *stride, Mono base)
{
  int j = nest_add(ns);
  for (int i = 0; i < ns->n; i++)
    ns->stride[j][i] = stride[i];
  ns->base[j] = base;
}

/* Drops loops of size 1 and merges an outer loop into the next inner one
 * where every operand walks both as one run. */
static void nest_simplify(Nest *ns)
{
  int m = 0;
  for (int i = 0; i < ns->n; i++) {
    if (mone(ns->size[i]))
      continue;
    bool merge = m > 0;
    for (int j = 0; j < ns->nop && merge; j++)
      merge = meq(ns->stride[j][m - 1], mmul(ns->stride[j][i], ns->size[i]));
    if (merge) {
      ns->size[m - 1] = mmul(ns->size[m - 1], ns->size[i]);
      for (int j = 0; j < ns->nop; j++)
        ns->stride[j][m - 1] = ns->stride[j][i];
      continue;
    }
    ns->size[m] = ns->size[i];
    for (int j = 0; j < ns->nop; j++)
      ns->stride[j][m] = ns->stride[j][i];
    m++;
  }
  ns->n = m;
}

/* Writes the loops at depth `depth` and the index of every operand into
 * idx; returns the depth of the loop body.  With block, the innermost loop
 * opens a { } block (the caller closes it) for a body of several lines. */
static int nest_open_block(E *e, Buf *b, Nest *ns, int depth, char idx[][512], bool block)
{
  nest_simplify(ns);
  for (int i = 0; i < ns->n; i++) {
    indent(b, depth + i);
    bprintf(b, "for (long i%d = 0; i%d < %s; i%d++)%s\n", i, i, mstr(e, ns->size[i]), i,
            block && i == ns->n - 1 ? " {" : "");
  }
  for (int j = 0; j < ns->nop; j++) {
    char *s = idx[j];
    int n = 0;
    s[0] = 0;
    /* at most MAXRANK + 1 terms of under 60 characters each */
    if (ns->base[j].c)
      n += snprintf(s + n, (size_t)(512 - n), "%s", mstr(e, ns->base[j]));
    for (int i = 0; i < ns->n; i++) {
      Mono st = ns->stride[j][i];
      if (!st.c)
        continue;
      n += snprintf(s + n, (size_t)(512 - n), "%si%d", n ? " + " : "", i);
      if (!mone(st))
        n += snprintf(s + n, (size_t)(512 - n), " * %s", mstr(e, st));
    }
    if (!n)
      snprintf(s, 512, "0");
  }
  return depth + ns->n;
}

static int nest_open(E *e, Buf *b, Nest *ns, int depth, char idx[][512])
{
  return nest_open_block(e, b, ns, depth, idx, false);
}

/* ------------------------------------------------------------ kernels */

static void karg(Sig *k, ArgKind kind, int node, int shape, const char *fmt, ...)
{
  if (k->narg == MAXARG)
    die("too many kernel arguments");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->decl[k->narg], sizeof k->decl[0], fmt, ap);
  va_end(ap);
  k->arg[k->narg++] = (Arg){kind, node, shape};
}

/* The output parameter: dx for the backward ops, y for the others. */
static const char *out_name(Op op)
{
  return strstr(op_info[op].name, "_grad") ? "dx" : "y";
}

static int id_of(E *e, Node *n)
{
  return (int)(n - e->g->node);
}

static void kout(E *e, Sig *k, Node *n)
{
  karg(k, A_PTR, id_of(e, n), -1, "%s *%s", ctype(n->dtype), out_name(n->op));
}

static void kin(E *e, Sig *k, Node *n, int i, const char *name)
{
  if (n->op == OP_CARRY)
    karg(k, A_CARRY, id_of(e, n), -1, "const %s *%s", ctype(IN(e, n, i)->dtype), name);
  else
    karg(k, A_PTR, n->in[i], -1, "const %s *%s", ctype(IN(e, n, i)->dtype), name);
}

/* key, p and idx0 of dropout node n, its mask indices counted in the
 * elements of node `shape`; sfx tells several apart in a fused kernel. */
static void kdropout(E *e, Buf *b, Sig *k, Node *n, int shape, const char *sfx)
{
  int id = id_of(e, n);
  karg(k, A_KEY, id, -1, "uint64_t key%s", sfx);
  karg(k, A_P, id, -1, "double p%s", sfx);
  karg(k, A_IDX0, id, shape, "long idx0%s", sfx);
  bprintf(b, "  real scale%s = p%s < 1 ? (real)(1 / (1 - p%s)) : 0;\n", sfx, sfx, sfx);
}

/* The expression elementwise op `op` computes from operands x and y; a
 * dropout draws element `idx` of its mask with key<sfx>, p<sfx>,
 * scale<sfx> and idx0<sfx>.  The same text is used for a node's own kernel
 * and inside a fused one, so both compute the same bits. */
static void elem_expr(E *e, Buf *b, Op op, const char *x, const char *y, const char *idx, const char *sfx)
{
  switch (op) {
  case OP_NEG:     bprintf(b, "-%s", x); break;
  case OP_EXP:     bprintf(b, "%s(%s)", fn(e, "exp"), x); break;
  case OP_LOG:     bprintf(b, "%s(%s)", fn(e, "log"), x); break;
  case OP_SQRT:    bprintf(b, "%s(%s)", fn(e, "sqrt"), x); break;
  case OP_SIN:     bprintf(b, "%s(%s)", fn(e, "sin"), x); break;
  case OP_COS:     bprintf(b, "%s(%s)", fn(e, "cos"), x); break;
  case OP_TANH:    bprintf(b, "%s(%s)", fast_tanh(e), x); break;
  case OP_SIGMOID: bprintf(b, "1 / (1 + %s(-%s))", fast_exp(e), x); break;
  case OP_RELU:    bprintf(b, "%s > 0 ? %s : 0", x, x); break;
  case OP_ADD:     bprintf(b, "%s + %s", x, y); break;
  case OP_SUB:     bprintf(b, "%s - %s", x, y); break;
  case OP_MUL:     bprintf(b, "%s * %s", x, y); break;
  case OP_DIV:     bprintf(b, "%s / %s", x, y); break;
  case OP_TANH_GRAD:    bprintf(b, "%s * (1 - %s * %s)", x, y, y); break;
  case OP_SIGMOID_GRAD: bprintf(b, "%s * %s * (1 - %s)", x, y, y); break;
  case OP_RELU_GRAD:    bprintf(b, "%s > 0 ? %s : 0", y, x); break;
  case OP_DROPOUT:
  case OP_DROPOUT_GRAD:
    bprintf(b, "lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? %s * scale%s : 0", sfx, sfx, idx, sfx, x, sfx);
    break;
  case OP_ADD_DROPOUT:   /* a + dropout(b) */
    bprintf(b, "%s + (lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? %s * scale%s : 0)", x, sfx, sfx, idx, sfx, y,
            sfx);
    break;
  case OP_DROPOUT_ADD:   /* dropout(a + b) */
    bprintf(b, "lmc_keep(key%s, (uint64_t)(idx0%s + %s), p%s) ? (%s + %s) * scale%s : 0", sfx, sfx, idx, sfx, x, y,
            sfx);
    break;
  default:
    die("%s is not elementwise", op_info[op].name);
  }
}

/* The parameter name of an elementwise op's input k. */
static const char *elem_name(Op op, int k)
{
  switch (op) {
  case OP_TANH_GRAD:
  case OP_SIGMOID_GRAD:
  case OP_RELU_GRAD:
    return k ? "y" : "dy";
  case OP_DROPOUT_GRAD:
    return "dy";
  default:
    return op_info[op].nin == 1 ? "x" : k ? "b" : "a";
  }
}

static void k_elementwise(E *e, Buf *b, Sig *k, Node *n)
{
  Nest ns;
  char idx[MAXOPND][512], v[MAXOPND][640];
  kout(e, k, n);
  nest_init(&ns, &n->shape);
  nest_bcast(&ns, &n->shape);
  for (int i = 0; i < n->nin; i++) {
    kin(e, k, n, i, elem_name(n->op, i));
    nest_bcast(&ns, &IN(e, n, i)->shape);
  }
  /* the mask is over y's elements, or b's for a + dropout(b) */
  int mask = n->op == OP_ADD_DROPOUT ? 2 : 0;
  if (is_dropout_op(n->op))
    kdropout(e, b, k, n, n->op == OP_ADD_DROPOUT ? n->in[1] : id_of(e, n), "");
  int d = nest_open(e, b, &ns, 1, idx);
  snprintf(v[0], sizeof v[0], "%s[%s]", out_name(n->op), idx[0]);
  for (int i = 0; i < n->nin; i++)
    snprintf(v[i + 1], sizeof v[0], "%s[%s]", elem_name(n->op, i), idx[i + 1]);
  indent(b, d);
  bprintf(b, "%s = ", v[0]);
  elem_expr(e, b, n->op, v[1], n->nin > 1 ? v[2] : NULL, idx[mask], "");
  bprintf(b, ";\n");
}

/* const: every element a.f; arange: a.f + i * a.f2 along dim 0. */
static void k_fill(E *e, Buf *b, Sig *k, Node *n)
{
  Nest ns;
  char idx[MAXOPND][512];
  kout(e, k, n);
  if (n->op == OP_CONST) {
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    int d = nest_open(e, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = ", idx[0]);
    bdouble(b, n->a.f);
    bprintf(b, ";\n");
    return;
  }
  if (n->shape.rank < 1)
    die("n%d: arange of rank 0", (int)(n - e->g->node));
  Mono rows = mdim(&n->shape, 0);
  Mono inner = mdiv(mnumel(&n->shape), rows);
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(e, rows));
  if (mone(inner)) {
    bprintf(b, "    y[i] = (%s)(", ctype(n->dtype));
  } else {
    bprintf(b, "    for (long j = 0; j < %s; j++)\n", mstr(e, inner));
    bprintf(b, "      y[i * %s + j] = (%s)(", mstr(e, inner), ctype(n->dtype));
  }
  bdouble(b, n->a.f);
  bprintf(b, " + i * ");
  bdouble(b, n->a.f2);
  bprintf(b, ");\n");
}

static void k_triu_mask(E *e, Buf *b, Sig *k, Node *n)
{
  kout(e, k, n);
  if (n->shape.rank != 2)
    die("triu_mask of rank %d", n->shape.rank);
  const char *cols = mstr(e, mdim(&n->shape, 1));
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(e, mdim(&n->shape, 0)));
  bprintf(b, "    for (long j = 0; j < %s; j++)\n", cols);
  bprintf(b, "      y[i * %s + j] = j > i ? -INFINITY : 0;\n", cols);
}

static void k_copy(E *e, Buf *b, Sig *k, Node *n)
{
  kout(e, k, n);
  kin(e, k, n, 0, "x");
  bprintf(b, "  memcpy(y, x, %s * sizeof *y);\n", mstr(e, mnumel(&n->shape)));
}

/* sum: y (a.shape, broadcastable to x) = x summed over the broadcast dims;
 * broadcast: the other way round. */
static void k_sum_broadcast(E *e, Buf *b, Sig *k, Node *n)
{
  Nest ns;
  char idx[MAXOPND][512];
  Node *x = IN(e, n, 0);
  kout(e, k, n);
  kin(e, k, n, 0, "x");
  if (n->op == OP_SUM) {
    bprintf(b, "  memset(y, 0, %s * sizeof *y);\n", mstr(e, mnumel(&n->shape)));
    nest_init(&ns, &x->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &x->shape);
    int d = nest_open(e, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] += x[%s];\n", idx[0], idx[1]);
  } else {
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &x->shape);
    int d = nest_open(e, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = x[%s];\n", idx[0], idx[1]);
  }
}

static int norm_axis(int axis, int rank)
{
  return axis < 0 ? axis + rank : axis;
}

/* transpose, slice, pad, concat: strided copies. */
static void k_shuffle(E *e, Buf *b, Sig *k, Node *n)
{
  Nest ns;
  char idx[MAXOPND][512];
  Mono yst[MAXRANK], xst[MAXRANK], st[MAXRANK];
  Node *x = IN(e, n, 0);
  int axis = norm_axis(n->a.axis, n->shape.rank);
  kout(e, k, n);
  contig(&n->shape, yst);
  contig(&x->shape, xst);
  switch (n->op) {
  case OP_TRANSPOSE:
    kin(e, k, n, 0, "x");
    for (int i = 0; i < n->shape.rank; i++)
      st[i] = xst[n->a.perm[i]];
    nest_init(&ns, &n->shape);
    nest_strided(&ns, yst, mono(0, 0));
    nest_strided(&ns, st, mono(0, 0));
    break;
  case OP_SLICE:
    kin(e, k, n, 0, "x");
    nest_init(&ns, &n->shape);
    nest_strided(&ns, yst, mono(0, 0));
    nest_strided(&ns, xst, mmul(mono(n->a.start, 0), xst[axis]));
    break;
  case OP_PAD:
    kin(e, k, n, 0, "x");
    bprintf(b, "  memset(y, 0, %s * sizeof *y);\n", mstr(e, mnumel(&n->shape)));
    nest_init(&ns, &x->shape);
    nest_strided(&ns, yst, mmul(mono(n->a.start, 0), yst[axis]));
    nest_strided(&ns, xst, mono(0, 0));
    break;
  case OP_CONCAT: {
    kin(e, k, n, 0, "a");
    kin(e, k, n, 1, "b");
    Mono at = mmul(mdim(&x->shape, axis), yst[axis]);
    for (int j = 0; j < 2; j++) {
      Node *xj = IN(e, n, j);
      contig(&xj->shape, xst);
      nest_init(&ns, &xj->shape);
      nest_strided(&ns, yst, j ? at : mono(0, 0));
      nest_strided(&ns, xst, mono(0, 0));
      int d = nest_open(e, b, &ns, 1, idx);
      indent(b, d);
      bprintf(b, "y[%s] = %s[%s];\n", idx[0], j ? "b" : "a", idx[1]);
    }
    return;
  }
  default:
    die("not a copy: %s", op_info[n->op].name);
  }
  int d = nest_open(e, b, &ns, 1, idx);
  indent(b, d);
  bprintf(b, "y[%s] = x[%s];\n", idx[0], idx[1]);
}

/* The 2-D view of a matmul operand: leading dims flattened. */
static void as_matrix(const Shape *s, Mono *rows, Mono *cols)
{
  if (s->rank < 1)
    die("matmul of a scalar");
  *cols = mdim(s, s->rank - 1);
  *rows = mdiv(mnumel(s), *cols);
}

/* a @ b^T of at most SMALL_GEMM_ROWS fixed rows goes to lmc_sgemm_abt_mt;
 * a^T b with more than WEIGHT_GRAD_SPLIT rows is computed in blocks of
 * WEIGHT_GRAD_ROWS. */
enum { SMALL_GEMM_ROWS = 64, WEIGHT_GRAD_SPLIT = 1024, WEIGHT_GRAD_ROWS = 1024 };

static const char *gemm(E *e)
{
  return e->g->real == DT_F64 ? "cblas_dgemm" : "cblas_sgemm";
}

static const char *gemv(E *e)
{
  return e->g->real == DT_F64 ? "cblas_dgemv" : "cblas_sgemv";
}

/* y = op(a) @ op(b); op transposes where a.ta / a.tb is set.  MATMUL: a and
 * b are matrices with leading dims flattened; BMM: batches of matrices
 * over the leading dims (an operand whose leading dims are all 1 is the
 * same matrix for every batch). */
static void k_matmul(E *e, Buf *b, Sig *k, Node *n)
{
  Node *a = IN(e, n, 0), *bb = IN(e, n, 1);
  Mono ar, ac, br, bc, batch = mono(1, 0), sa = mono(0, 0), sb = mono(0, 0);
  kout(e, k, n);
  kin(e, k, n, 0, "a");
  kin(e, k, n, 1, "b");
  if (n->op != OP_BMM) {
    as_matrix(&a->shape, &ar, &ac);
    as_matrix(&bb->shape, &br, &bc);
  } else {
    if (a->shape.rank < 2 || bb->shape.rank < 2 || n->shape.rank < 2)
      die("bmm operands of rank < 2");
    ar = mdim(&a->shape, a->shape.rank - 2);
    ac = mdim(&a->shape, a->shape.rank - 1);
    br = mdim(&bb->shape, bb->shape.rank - 2);
    bc = mdim(&bb->shape, bb->shape.rank - 1);
    batch = mdiv(mnumel(&n->shape), mmul(mdim(&n->shape, n->shape.rank - 2), mdim(&n->shape, n->shape.rank - 1)));
    if (!mone(mdiv(mnumel(&a->shape), mmul(ar, ac))))
      sa = mmul(ar, ac);
    if (!mone(mdiv(mnumel(&bb->shape), mmul(br, bc))))
      sb = mmul(br, bc);
  }
  /* matmul_bias: y starts as the broadcast bias and the product is added */
  const char *beta = "0";
  if (n->op == OP_MATMUL_BIAS) {
    Nest ns;
    char idx[MAXOPND][512];
    kin(e, k, n, 2, "c");
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &IN(e, n, 2)->shape);
    int d = nest_open(e, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = c[%s];\n", idx[0], idx[1]);
    beta = "1";
  }
  Mono m = n->a.ta ? ac : ar, kk = n->a.ta ? ar : ac;
  Mono kb = n->a.tb ? bc : br, nn = n->a.tb ? br : bc;
  if (!meq(kk, kb))
    die("n%d: matmul inner sizes differ", (int)(n - e->g->node));
  if (!meq(mmul(batch, mmul(m, nn)), mnumel(&n->shape)))
    die("n%d: matmul output %s does not hold the product", (int)(n - e->g->node), shape_str(&n->shape));
  const char *ta = n->a.ta ? "CblasTrans" : "CblasNoTrans";
  const char *tb = n->a.tb ? "CblasTrans" : "CblasNoTrans";
  /* a @ b^T with few rows in single precision (a recurrent layer's
   * per-step products, generation's rows: at most bptt): lmc_sgemm_abt_mt,
   * which reads b in place where OpenBLAS packs all of it on every call */
  bool few = m.c >= 1 && ((m.k == 0 && m.c <= SMALL_GEMM_ROWS) ||
                           (m.k == 1 && m.c * e->g->max_seq <= SMALL_GEMM_ROWS));
  bool one_maybe = m.c == 1 && m.k == 1;
  if (mone(batch) && e->g->real == DT_F32 && !n->a.ta && n->a.tb && (few || one_maybe)) {
    karg(k, A_THREADS, id_of(e, n), -1, "int nt");
    const char *ind = "  ";
    if (!few) {
      bprintf(b, "  if (%s == 1)\n", mstr(e, m));
      ind = "    ";
    }
    bprintf(b, "%slmc_sgemm_abt_mt(nt, %s, %s, %s, a, %s, b, %s, %s, y, %s);\n", ind, few ? mstr(e, m) : "1",
            mstr(e, nn), mstr(e, kk), mstr(e, ac), mstr(e, bc), beta, mstr(e, nn));
    if (few)
      return;
    bprintf(b, "  else\n");
    bprintf(b, "    %s(CblasRowMajor, %s, %s, %s, %s, %s,\n", gemm(e), ta, tb, mstr(e, m), mstr(e, nn), mstr(e, kk));
    bprintf(b, "                1, a, %s, b, %s, %s, y, %s);\n", mstr(e, ac), mstr(e, bc), beta, mstr(e, nn));
    return;
  }
  if (mone(batch) && n->a.ta && !n->a.tb && m.k == 0 && m.c > WEIGHT_GRAD_SPLIT) {
    /* a weight gradient a^T b with many rows (the decoder's, 33278; an
     * LSTM's 4 nhid): in blocks of rows, or OpenBLAS packs all of a's
     * columns at once, 41 MiB more of peak memory for the decoder at
     * nhid 650, 1.3 MiB in blocks, about 2% slower (each output is summed
     * as before) */
    bprintf(b, "  for (long r = 0; r < %s; r += %d)\n", mstr(e, m), WEIGHT_GRAD_ROWS);
    bprintf(b, "    %s(CblasRowMajor, %s, %s, r + %d <= %s ? %d : %s - r, %s, %s,\n", gemm(e), ta, tb,
            WEIGHT_GRAD_ROWS, mstr(e, m), WEIGHT_GRAD_ROWS, mstr(e, m), mstr(e, nn), mstr(e, kk));
    bprintf(b, "                1, a + r, %s, b, %s, %s, y + r * %s, %s);\n", mstr(e, ac), mstr(e, bc), beta,
            mstr(e, nn), mstr(e, nn));
    return;
  }
  if (mone(batch)) {
    /* one row (generation's single step): a matrix-vector product, which
     * reads b in place where GEMM would first pack all of it */
    bool one = mone(m), maybe_one = m.c == 1 && m.k == 1;
    const char *ind = "  ";
    if (one || maybe_one) {
      if (maybe_one)
        bprintf(b, "  if (%s == 1)\n  ", mstr(e, m));
      bprintf(b, "  %s(CblasRowMajor, %s, %s, %s, 1, b, %s, a, %s, %s, y, 1);\n", gemv(e),
              n->a.tb ? "CblasNoTrans" : "CblasTrans", mstr(e, br), mstr(e, bc), mstr(e, bc),
              n->a.ta ? mstr(e, ac) : "1", beta);
      if (one)
        return;
      bprintf(b, "  else\n");
      ind = "    ";
    }
    bprintf(b, "%s%s(CblasRowMajor, %s, %s, %s, %s, %s,\n", ind, gemm(e), ta, tb, mstr(e, m), mstr(e, nn),
            mstr(e, kk));
    bprintf(b, "%s            1, a, %s, b, %s, %s, y, %s);\n", ind, mstr(e, ac), mstr(e, bc), beta, mstr(e, nn));
    return;
  }
  const char *ia = sa.c ? mstr(e, sa) : NULL, *ib = sb.c ? mstr(e, sb) : NULL;
  char pa[128], pb[128];
  snprintf(pa, sizeof pa, ia ? "a + i * %s" : "a", ia);
  snprintf(pb, sizeof pb, ib ? "b + i * %s" : "b", ib);
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(e, batch));
  bprintf(b, "    %s(CblasRowMajor, %s, %s, %s, %s, %s,\n", gemm(e), ta, tb, mstr(e, m), mstr(e, nn), mstr(e, kk));
  bprintf(b, "                1, %s, %s, %s, %s, 0, y + i * %s, %s);\n", pa, mstr(e, ac), pb, mstr(e, bc),
          mstr(e, mmul(m, nn)), mstr(e, nn));
}

static void k_embedding(E *e, Buf *b, Sig *k, Node *n)
{
  Node *ids = IN(e, n, 1);
  Mono rows = mnumel(&ids->shape);
  kout(e, k, n);
  if (n->op == OP_EMBEDDING) {
    Mono dim = mdiv(mnumel(&n->shape), rows);
    kin(e, k, n, 0, "w");
    kin(e, k, n, 1, "ids");
    const char *d = mstr(e, dim);
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(e, rows));
    bprintf(b, "    memcpy(y + i * %s, w + (long)ids[i] * %s, %s * sizeof *y);\n", d, d, d);
  } else {
    Mono dim = mdim(&n->shape, n->shape.rank - 1);
    kin(e, k, n, 0, "dy");
    kin(e, k, n, 1, "ids");
    const char *d = mstr(e, dim);
    if (n->a.rows) {
      /* row-grad: the rows ids reads, in ascending order of id, each summed
       * over i as the dense scatter below sums it; then ids and count */
      size_t max_rows = (size_t)mval(rows, e->g->max_seq);
      bprintf(b, "  int32_t *row = (int32_t *)(dx + %zu);   /* the rows' ids, ascending; row[%zu]: how many */\n",
              max_rows * (size_t)mval(dim, 1), max_rows);
      bprintf(b, "  const long nrow = row[%zu] = (int32_t)lmc_unique_ids(ids, %s, row);\n", max_rows, mstr(e, rows));
      bprintf(b, "  memset(dx, 0, nrow * %s * sizeof *dx);\n", d);
      bprintf(b, "  for (long i = 0; i < %s; i++) {\n", mstr(e, rows));
      bprintf(b, "    real *d = dx + lmc_find_id(row, nrow, ids[i]) * %s;\n", d);
      bprintf(b, "    for (long j = 0; j < %s; j++)\n", d);
      bprintf(b, "      d[j] += dy[i * %s + j];\n", d);
      bprintf(b, "  }\n");
      return;
    }
    bprintf(b, "  memset(dx, 0, %s * sizeof *dx);\n", mstr(e, mnumel(&n->shape)));
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(e, rows));
    bprintf(b, "    for (long j = 0; j < %s; j++)\n", d);
    bprintf(b, "      dx[(long)ids[i] * %s + j] += dy[i * %s + j];\n", d, d);
  }
}

/* Row ops along the last dim: rows of n elements. */
static void rows_open(E *e, Buf *b, const Shape *s)
{
  Mono n = mdim(s, s->rank - 1);
  bprintf(b, "  const long n = %s;\n", mstr(e, n));
  bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(e, mdiv(mnumel(s), n)));
}

static void k_softmax(E *e, Buf *b, Sig *k, Node *n)
{
  const char *ex = fast_exp(e);
  kout(e, k, n);
  switch (n->op) {
  case OP_SOFTMAX:
  case OP_LOG_SOFTMAX:
    kin(e, k, n, 0, "x");
    rows_open(e, b, &n->shape);
    bprintf(b, "    const real *xr = x + r * n;\n");
    bprintf(b, "    real *yr = y + r * n;\n");
    bprintf(b, "    real max = lmc_row_max(xr, n);\n");
    if (n->op == OP_SOFTMAX) {
      bprintf(b, "    double sum = lmc_exp_sum_to(yr, xr, n, max);   /* y and x are apart */\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      yr[i] = (real)(yr[i] / sum);\n");
    } else {
      bprintf(b, "    double sum = lmc_exp_sum(xr, n, max);\n");
      bprintf(b, "    real lse = max + (real)log(sum);\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      yr[i] = xr[i] - lse;\n");
    }
    break;
  case OP_SOFTMAX_GRAD:
  case OP_LOG_SOFTMAX_GRAD:
    /* softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy) */
    kin(e, k, n, 0, "dy");
    kin(e, k, n, 1, "y");
    rows_open(e, b, &n->shape);
    bprintf(b, "    const real *dyr = dy + r * n, *yr = y + r * n;\n");
    bprintf(b, "    real *dxr = dx + r * n;\n");
    bprintf(b, "    double sum = 0;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    if (n->op == OP_SOFTMAX_GRAD) {
      bprintf(b, "      sum += dyr[i] * yr[i];\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      dxr[i] = yr[i] * (dyr[i] - (real)sum);\n");
    } else {
      bprintf(b, "      sum += dyr[i];\n");
      bprintf(b, "    for (long i = 0; i < n; i++) {\n");
      bprintf(b, "      real e = %s(yr[i]) * (real)sum;\n", ex);
      bprintf(b, "      dxr[i] = dyr[i] - e;\n");
      bprintf(b, "    }\n");
    }
    break;
  default:
    die("not a softmax: %s", op_info[n->op].name);
  }
  bprintf(b, "  }\n");
}

/* (x - mean) / sqrt(var + eps) over the last dim, var biased, as
 * torch.nn.functional.layer_norm without its affine part. */
static void k_normalize(E *e, Buf *b, Sig *k, Node *n)
{
  kout(e, k, n);
  if (n->op == OP_NORMALIZE)
    kin(e, k, n, 0, "x");
  else {
    kin(e, k, n, 0, "dy");
    kin(e, k, n, 1, "x");
  }
  rows_open(e, b, &n->shape);
  bprintf(b, "    const real *xr = x + r * n;\n");
  bprintf(b, "    double mean = 0, var = 0;\n");
  bprintf(b, "    for (long i = 0; i < n; i++)\n");
  bprintf(b, "      mean += xr[i];\n");
  bprintf(b, "    mean /= n;\n");
  bprintf(b, "    for (long i = 0; i < n; i++)\n");
  bprintf(b, "      var += (xr[i] - mean) * (xr[i] - mean);\n");
  bprintf(b, "    double rstd = 1 / sqrt(var / n + ");
  bdouble(b, n->a.f);
  bprintf(b, ");\n");
  if (n->op == OP_NORMALIZE) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      y[r * n + i] = (real)((xr[i] - mean) * rstd);\n");
  } else {
    /* dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) */
    bprintf(b, "    const real *dyr = dy + r * n;\n");
    bprintf(b, "    double mdy = 0, mdyx = 0;\n");
    bprintf(b, "    for (long i = 0; i < n; i++) {\n");
    bprintf(b, "      mdy += dyr[i];\n");
    bprintf(b, "      mdyx += dyr[i] * (xr[i] - mean) * rstd;\n");
    bprintf(b, "    }\n");
    bprintf(b, "    mdy /= n;\n");
    bprintf(b, "    mdyx /= n;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dx[r * n + i] = (real)(rstd * (dyr[i] - mdy - (xr[i] - mean) * rstd * mdyx));\n");
  }
  bprintf(b, "  }\n");
}

/* nll_loss: y = -mean over rows of logp[row, target[row]];
 * nll_loss_grad: dlogp = -dloss / rows at each target, 0 elsewhere. */
static void k_nll(E *e, Buf *b, Sig *k, Node *n)
{
  kout(e, k, n);
  if (n->op == OP_NLL_LOSS) {
    Node *lp = IN(e, n, 0);
    Mono c = mdim(&lp->shape, lp->shape.rank - 1);
    Mono rows = mdiv(mnumel(&lp->shape), c);
    kin(e, k, n, 0, "logp");
    kin(e, k, n, 1, "target");
    const char *cs = mstr(e, c), *rs = mstr(e, rows);
    bprintf(b, "  double sum = 0;\n");
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", rs);
    bprintf(b, "    sum -= logp[i * %s + target[i]];\n", cs);
    bprintf(b, "  y[0] = (real)(sum / (%s));\n", rs);
  } else if (n->op == OP_NLL_LOSS_GRAD) {
    Mono c = mdim(&n->shape, n->shape.rank - 1);
    Mono rows = mdiv(mnumel(&n->shape), c);
    kin(e, k, n, 0, "dloss");
    kin(e, k, n, 2, "target");
    const char *cs = mstr(e, c), *rs = mstr(e, rows);
    bprintf(b, "  memset(dx, 0, %s * sizeof *dx);\n", mstr(e, mnumel(&n->shape)));
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", rs);
    bprintf(b, "    dx[i * %s + target[i]] = -dloss[0] / (%s);\n", cs, rs);
  } else {
    /* nll_loss_grad and log_softmax_grad in one pass: with s = dloss / rows,
     * sum(dy) over a row is exactly -s, so dx = exp(logp) * s at every
     * column and that minus s at the target, the bits the pair computes */
    Mono c = mdim(&n->shape, n->shape.rank - 1);
    Mono rows = mdiv(mnumel(&n->shape), c);
    kin(e, k, n, 0, "dloss");
    kin(e, k, n, 1, "logp");
    kin(e, k, n, 2, "target");
    bprintf(b, "  const real s = -(-dloss[0] / (%s));\n", mstr(e, rows));
    bprintf(b, "  const long n = %s;\n", mstr(e, c));
    bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(e, rows));
    bprintf(b, "    const real *lr = logp + r * n;\n");
    bprintf(b, "    real *dxr = dx + r * n;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dxr[i] = %s(lr[i]) * s;\n", fast_exp(e));
    bprintf(b, "    dxr[target[r]] -= s;\n");
    bprintf(b, "  }\n");
  }
}

/* ------------------------------------------------------------ fused kernels */

/* A fused kernel (fuse_elem.c) computes the live members of one group in
 * one loop nest over the group's shape, the shape of every member it
 * stores.  Each member is evaluated at an index map: for each of its dims,
 * the loop (a dim of the group shape) it follows, or none, plus a constant
 * offset.  A stored member is evaluated at the identity; its inputs at
 * the maps its op implies (an elementwise op broadcasts right-aligned, a
 * slice shifts its axis by its start), so a member read through slices,
 * like the (B, 4*nhid) gate pre-activations of an LSTM step, is computed
 * in pieces and never stored.  Values outside the group are loaded through
 * nest operands; a scalar const is a literal.  Every member is its own
 * statement, so the arithmetic (and its rounding) is what its own kernel
 * would do. */

typedef struct {
  int node;
  int var[MAXRANK];       /* the group loop this dim follows, or -1 */
  int off[MAXRANK];
} Map;

typedef struct {
  E *e;
  int group;
  Node *shape;            /* a stored member: the group's shape */
  Sig *k;
  Nest ns;
  Buf pro, body;          /* before the loops; inside them, with operand markers */
  Map *memo;              /* evaluated (node, map) pairs */
  char **val;
  int nmemo;
  Map opnd[MAXOPND];      /* nest operands 1..: loads and mask indices */
  bool opnd_load[MAXOPND];
  int ntemp;
} Fused;

static bool map_eq(const Map *a, const Map *b, int rank)
{
  if (a->node != b->node)
    return false;
  for (int d = 0; d < rank; d++)
    if (a->var[d] != b->var[d] || a->off[d] != b->off[d])
      return false;
  return true;
}

/* The map of input `in` of member m evaluated at map mm. */
static Map map_input(E *e, Node *m, const Map *mm, int in)
{
  Node *x = N(e, in);
  Map r = {.node = in};
  if (m->op == OP_SLICE) {
    r = *mm;
    r.node = in;
    r.off[m->a.axis] += m->a.start;
    return r;
  }
  for (int d = 0; d < x->shape.rank; d++) {
    int md = d + m->shape.rank - x->shape.rank;
    if (mone(mdim(&x->shape, d))) {
      r.var[d] = -1;
      r.off[d] = 0;
    } else {
      r.var[d] = mm->var[md];
      r.off[d] = mm->off[md];
    }
  }
  return r;
}

/* The nest operand walking node map->node's contiguous layout at *map. */
static int fused_operand(Fused *F, const Map *map, bool load)
{
  Node *x = N(F->e, map->node);
  for (int j = 1; j < F->ns.nop; j++)
    if (F->opnd_load[j] == load && map_eq(&F->opnd[j], map, x->shape.rank))
      return j;
  Mono st[MAXRANK], stride[MAXRANK], base = mono(0, 0);
  contig(&x->shape, st);
  for (int v = 0; v < F->ns.n; v++)
    stride[v] = mono(0, 0);
  for (int d = 0; d < x->shape.rank; d++) {
    if (map->var[d] >= 0) {
      if (stride[map->var[d]].c)
        die("n%d: two dims follow one loop", map->node);
      stride[map->var[d]] = st[d];
    }
    if (map->off[d]) {
      Mono o = mmul(mono(map->off[d], 0), st[d]);
      if (base.c && base.k != o.k)
        die("n%d: offset %s", map->node, "mixes sizes with and without T");
      base = mono(base.c + o.c, o.k);
    }
  }
  int j = F->ns.nop;
  nest_strided(&F->ns, stride, base);
  F->opnd[j] = *map;
  F->opnd_load[j] = load;
  return j;
}

static char *fused_value(Fused *F, const Map *map);

static char *fused_member(Fused *F, Node *m, const Map *map)
{
  E *e = F->e;
  int id = map->node;
  if (m->op == OP_SLICE || m->op == OP_BROADCAST) {
    Map r = map_input(e, m, map, m->in[0]);
    return xstrdup(fused_value(F, &r));
  }
  if (!op_is(m->op, P_ELEM))
    die("n%d: %s in a fused kernel", id, op_info[m->op].name);
  char *x[2] = {NULL, NULL};
  for (int k = 0; k < m->nin; k++) {
    Map r = map_input(e, m, map, m->in[k]);
    x[k] = fused_value(F, &r);
  }
  char sfx[16], idx[24] = "";
  snprintf(sfx, sizeof sfx, "_%d", id);
  if (is_dropout_op(m->op)) {
    int shape = m->op == OP_ADD_DROPOUT ? m->in[1] : id;
    if (e->drop_arg[id] != F->group) {
      e->drop_arg[id] = F->group;
      kdropout(e, &F->pro, F->k, m, shape, sfx);
    }
    Map r = m->op == OP_ADD_DROPOUT ? map_input(e, m, map, m->in[1]) : *map;
    snprintf(idx, sizeof idx, "\x01%d\x02", fused_operand(F, &r, false));
  }
  int t = F->ntemp++;
  bprintf(&F->body, "real v%d = ", t);
  elem_expr(e, &F->body, m->op, x[0], x[1], idx, sfx);
  bprintf(&F->body, ";   /* n%d %s */\n", id, op_info[m->op].name);
  return xasprintf("v%d", t);
}

/* The value of node map->node at *map, as a C expression. */
static char *fused_value(Fused *F, const Map *map)
{
  E *e = F->e;
  Node *x = N(e, map->node);
  for (int i = 0; i < F->nmemo; i++)
    if (map_eq(&F->memo[i], map, x->shape.rank))
      return F->val[i];
  char *v;
  if (x->group != F->group) {
    if (x->op == OP_CONST) {
      Buf lit = {0};
      bprintf(&lit, "(real)");
      bdouble(&lit, x->a.f);
      v = xasprintf("%s", bstr(&lit));
      bfree(&lit);
    } else {
      if (e->in_arg[map->node] != F->group) {
        e->in_arg[map->node] = F->group;
        karg(F->k, A_PTR, map->node, -1, "const real *x%d", map->node);
      }
      v = xasprintf("x%d[\x01%d\x02]", map->node, fused_operand(F, map, true));
    }
  } else {
    v = fused_member(F, x, map);
  }
  F->memo = xrealloc(F->memo, sizeof(Map) * (size_t)(F->nmemo + 1));
  F->val = xrealloc(F->val, sizeof(char *) * (size_t)(F->nmemo + 1));
  F->memo[F->nmemo] = *map;
  F->val[F->nmemo++] = v;
  return v;
}

/* Copies text with each operand marker \1j\2 replaced by idx[j]. */
static void put_indexed(Buf *b, const char *s, char idx[][512], int depth)
{
  bool bol = true;
  for (; *s; s++) {
    if (bol) {
      indent(b, depth);
      bol = false;
    }
    if (*s == '\x01') {
      int j = (int)strtol(s + 1, (char **)&s, 10);
      bprintf(b, "%s", idx[j]);
      continue;   /* s is at the \2 */
    }
    bprintf(b, "%c", *s);
    bol = *s == '\n';
  }
}

/* Is member x of the group a sum of pads of values the group computes (a
 * gradient assembled from the gradients of slices), stored window by
 * window? */
static bool assembled(E *e, int group, int x)
{
  Node *n = N(e, x);
  if (n->group != group)
    return false;
  if (n->op == OP_PAD)
    return true;
  return n->op == OP_ADD && assembled(e, group, n->in[0]) && assembled(e, group, n->in[1]);
}

/* Stores the pads under assembled node x into y<root>, each pad's value at
 * its window. */
static void store_assembled(Fused *F, int root, int x)
{
  E *e = F->e;
  Node *n = N(e, x);
  if (n->op == OP_ADD) {
    store_assembled(F, root, n->in[0]);
    store_assembled(F, root, n->in[1]);
    return;
  }
  Map v = {.node = n->in[0]};
  for (int d = 0; d < n->shape.rank; d++)
    v.var[d] = d;
  char *val = fused_value(F, &v);
  Map at = v;
  at.node = root;
  at.off[n->a.axis] = n->a.start;
  bprintf(&F->body, "y%d[\x01%d\x02] = %s;   /* n%d pad at %d */\n", root, fused_operand(F, &at, true), val, x,
          n->a.start);
}

/* The kernel of group `group`, whose members are the nodes with that group. */
static void k_fused(E *e, Buf *b, Sig *k, int group)
{
  Graph *g = e->g;
  Fused F = {.e = e, .group = group, .k = k};
  /* the group's shape: of every member it stores, or what its pads pad */
  for (int m = e->member_start[group]; m < e->member_start[group + 1]; m++) {
    int i = e->member[m];
    Node *n = &g->node[i];
    Node *s = NULL;
    if (n->op == OP_PAD)
      s = IN(e, n, 0);
    else if (e->off[i] != SIZE_MAX && !assembled(e, group, i))
      s = n;
    if (!s)
      continue;
    if (!F.shape)
      F.shape = s;
    else if (!shape_eq(&F.shape->shape, &s->shape))
      die("group %d computes n%d %s and n%d %s", group, id_of(e, F.shape), shape_str(&F.shape->shape),
          id_of(e, s), shape_str(&s->shape));
  }
  if (!F.shape)
    die("group %d stores nothing", group);
  k->iter = F.shape->shape;
  nest_init(&F.ns, &F.shape->shape);
  nest_bcast(&F.ns, &F.shape->shape);   /* operand 0: the group's shape */
  for (int m = e->member_start[group]; m < e->member_start[group + 1]; m++) {
    int i = e->member[m];
    Node *n = &g->node[i];
    if (e->off[i] == SIZE_MAX)
      continue;
    /* restrict: a kernel's outputs share no bytes with its inputs or
     * with each other (plan.c), and saying so lets the compiler vectorise
     * loops with more operands than its run-time overlap checks cover
     * (an LSTM cell: four gate inputs, the carry, two outputs) */
    karg(k, A_PTR, i, -1, "real *restrict y%d", i);
    if (assembled(e, group, i)) {
      store_assembled(&F, i, i);
      continue;
    }
    Map id = {.node = i};
    for (int d = 0; d < n->shape.rank; d++)
      id.var[d] = d;
    char *v = fused_value(&F, &id);
    bprintf(&F.body, "y%d[\x01%d\x02] = %s;\n", i, 0, v);
  }
  char (*idx)[512] = xcalloc(MAXOPND, 512);
  bprintf(b, "%s", bstr(&F.pro));
  int d = nest_open_block(e, b, &F.ns, 1, idx, F.ns.n > 0);
  put_indexed(b, bstr(&F.body), idx, d);
  if (F.ns.n > 0) {
    indent(b, d - 1);
    bprintf(b, "}\n");
  }
  free(idx);
  for (int i = 0; i < F.nmemo; i++)
    free(F.val[i]);
  free(F.val);
  free(F.memo);
  bfree(&F.pro);
  bfree(&F.body);
}

/* The loss of log_softmax(h W^T + bias) without storing the logits
 * (fuse_nll.c): blocks of LOGIT_BLOCK columns computed into a buffer that
 * stays in cache (E.scratch_off), a running maximum and sum of
 * exponentials per row. */
static void k_logits_nll(E *e, Buf *b, Sig *k, Node *lsm, Node *prod, Node *bias, Node *nll)
{
  Graph *g = e->g;
  Node *w = IN(e, prod, 1);
  Mono c = mdim(&lsm->shape, lsm->shape.rank - 1), kk = mdim(&w->shape, 1);
  Mono rows = mdiv(mnumel(&lsm->shape), c);
  size_t maxrows = logit_rows(g, prod);
  karg(k, A_PTR, id_of(e, nll), -1, "real *loss");
  karg(k, A_PTR, prod->in[0], -1, "const real *h");
  karg(k, A_PTR, prod->in[1], -1, "const real *w");
  if (bias)
    karg(k, A_PTR, bias->in[1], -1, "const real *bias");
  karg(k, A_PTR, nll->in[1], -1, "const int32_t *target");
  karg(k, A_THREADS, id_of(e, lsm), -1, "int nt");
  karg(k, A_SCRATCH, id_of(e, prod), -1, "real *block /* rows x 1024 logits, in cache */");
  bprintf(b, "  real max[%zu];\n  double sum[%zu], nll_row[%zu];\n", maxrows, maxrows, maxrows);
  bprintf(b, "  const long n = %s, rows = %s;\n", mstr(e, c), mstr(e, rows));
  bprintf(b, "  for (long j0 = 0; j0 < n; j0 += %d) {\n", LOGIT_BLOCK);
  bprintf(b, "    const long nb = n - j0 < %d ? n - j0 : %d;\n", LOGIT_BLOCK, LOGIT_BLOCK);
  bprintf(b, "    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nb, %s,\n", mstr(e, kk));
  bprintf(b, "                1, h, %s, w + j0 * %s, %s, 0, block, nb);\n", mstr(e, kk), mstr(e, kk), mstr(e, kk));
  bprintf(b, "    LMC_PARALLEL_FOR(nt)\n");
  bprintf(b, "    for (long r = 0; r < rows; r++) {\n");
  bprintf(b, "      real *xr = block + r * nb;\n");
  if (bias)
    bprintf(b, "      real m = lmc_add_row_max(xr, bias + j0, nb);\n");
  else
    bprintf(b, "      real m = lmc_row_max(xr, nb);\n");
  bprintf(b, "      if (j0 == 0 || m > max[r]) {   /* a new maximum: the sum so far rescaled */\n");
  bprintf(b, "        sum[r] = j0 == 0 ? 0 : sum[r] * exp((double)max[r] - m);\n");
  bprintf(b, "        max[r] = m;\n");
  bprintf(b, "      }\n");
  bprintf(b, "      sum[r] += lmc_exp_sum(xr, nb, max[r]);\n");
  bprintf(b, "      if (target[r] >= j0 && target[r] < j0 + nb)\n");
  bprintf(b, "        nll_row[r] = xr[target[r] - j0];\n");
  bprintf(b, "    }\n");
  bprintf(b, "  }\n");
  bprintf(b, "  double nll = 0;\n");
  bprintf(b, "  for (long r = 0; r < rows; r++)\n");
  bprintf(b, "    nll -= (real)(nll_row[r] - (max[r] + (real)log(sum[r])));\n");
  bprintf(b, "  loss[0] = (real)(nll / rows);\n");
  k->iter = lsm->shape;
}

/* log_softmax with nll_loss and the loss's gradient through it
 * (fuse_nll.c), whichever of the two the group has, in one pass over the
 * rows.  Per row: the max, the exponentials and their sum (as log_softmax
 * alone computes them), lse = max + log(sum); then
 *   logp = x - lse                         where something else reads it,
 *   dx = e * (s / sum) - (i == target ? s : 0),   s = dloss / rows,
 *   loss -= x[target] - lse                (nll_loss's sum, in row order).
 * The exponentials go into logp when it is stored, else into dx; x[target]
 * is read before either is written.  dx may take x's bytes (plan.c gives
 * it them when x dies here: the logits and their gradient are the biggest
 * tensors), so every x is read before the dx at its index is written. */
static void k_log_softmax_nll(E *e, Buf *b, Sig *k, int group)
{
  Graph *g = e->g;
  Node *lsm = NULL, *grad = NULL, *nll = NULL, *bias = NULL, *prod = NULL;
  for (int m = e->member_start[group]; m < e->member_start[group + 1]; m++) {
    Node *n = &g->node[e->member[m]];
    if (n->op == OP_LOG_SOFTMAX)
      lsm = n;
    else if (n->op == OP_NLL_LOG_SOFTMAX_GRAD)
      grad = n;
    else if (n->op == OP_NLL_LOSS)
      nll = n;
    else if (n->op == OP_ADD)
      bias = n;
    else if (n->op == OP_MATMUL)
      prod = n;
  }
  if (grad && e->off[id_of(e, grad)] == SIZE_MAX)
    grad = NULL;
  if (nll && e->off[id_of(e, nll)] == SIZE_MAX)
    nll = NULL;
  if (!lsm || (grad && (IN(e, grad, 1) != lsm || IN(e, grad, 0)->op != OP_CONST)) || (nll && IN(e, nll, 0) != lsm) ||
      (bias && IN(e, lsm, 0) != bias))
    die("group %d is not log_softmax with nll_loss or its gradient", group);
  bool logp = e->off[id_of(e, lsm)] != SIZE_MAX;
  if (prod) {
    if (!nll || grad || logp)
      die("group %d: a product fused with log_softmax computes the loss only", group);
    k_logits_nll(e, b, k, lsm, prod, bias, nll);
    return;
  }
  /* x: the logits, or with a bias fused in (fuse_nll.c) the product it is
   * added to, in place: nothing else reads it */
  int xin = bias ? bias->in[0] : lsm->in[0];
  /* dx in x's bytes: one pointer, so the loops are plainly in place */
  bool inplace = grad && same_loc(&e->loc[id_of(e, grad)], &e->loc[xin]);
  if (logp)
    karg(k, A_PTR, id_of(e, lsm), -1, "real *logp");
  if (grad)
    karg(k, A_PTR, id_of(e, grad), -1, inplace ? "real *dx /* over x */" : "real *dx");
  if (nll)
    karg(k, A_PTR, id_of(e, nll), -1, "real *loss");
  if (!inplace)
    karg(k, A_PTR, xin, -1, bias ? "real *x" : "const real *x");
  if (bias)
    karg(k, A_PTR, bias->in[1], -1, "const real *bias");
  int target = grad ? grad->in[2] : nll ? nll->in[1] : -1;
  if (target >= 0)
    karg(k, A_PTR, target, -1, "const int32_t *target");
  karg(k, A_THREADS, id_of(e, lsm), -1, "int nt");
  Mono c = mdim(&lsm->shape, lsm->shape.rank - 1);
  Mono rows = mdiv(mnumel(&lsm->shape), c);
  if (grad) {
    bprintf(b, "  const real s = -(-(real)");
    bdouble(b, IN(e, grad, 0)->a.f);
    bprintf(b, " / (%s));   /* dloss / rows */\n", mstr(e, rows));
  }
  if (nll)
    bprintf(b, "  double nll_row[%zu];   /* summed in row order after the loop */\n", mval(rows, g->max_seq));
  bprintf(b, "  const long n = %s;\n", mstr(e, c));
  bprintf(b, "  LMC_PARALLEL_FOR(nt)\n");
  bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(e, rows));
  if (grad)
    bprintf(b, "    real *dxr = dx + r * n;\n");
  if (bias)
    bprintf(b, inplace ? "    real *xr = dxr;\n" : "    real *xr = x + r * n;\n");
  else
    bprintf(b, inplace ? "    const real *xr = dxr;\n" : "    const real *xr = x + r * n;\n");
  if (logp)
    bprintf(b, "    real *yr = logp + r * n;\n");
  if (bias)   /* the bias added as the row comes into cache */
    bprintf(b, "    real max = lmc_add_row_max(xr, bias, n);\n");
  else
    bprintf(b, "    real max = lmc_row_max(xr, n);\n");
  if (nll)
    bprintf(b, "    const real xt = xr[target[r]];\n");
  if (logp)
    bprintf(b, "    double sum = lmc_exp_sum_to(yr, xr, n, max);\n");
  else if (inplace)
    bprintf(b, "    double sum = lmc_exp_sum_inplace(dxr, n, max);\n");
  else if (grad)
    bprintf(b, "    double sum = lmc_exp_sum_to(dxr, xr, n, max);\n");
  else
    bprintf(b, "    double sum = lmc_exp_sum(xr, n, max);\n");
  bprintf(b, "    real lse = max + (real)log(sum);\n");
  if (grad)
    bprintf(b, "    double q = s / sum;\n");
  if (logp && grad) {
    bprintf(b, "    for (long i = 0; i < n; i++) {   /* x is read before dx is written: dx may be x */\n");
    bprintf(b, "      real xi = xr[i];\n");
    bprintf(b, "      dxr[i] = (real)(yr[i] * q);\n");
    bprintf(b, "      yr[i] = xi - lse;\n");
    bprintf(b, "    }\n");
  } else if (logp) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      yr[i] = xr[i] - lse;\n");
  } else if (grad) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dxr[i] = (real)(dxr[i] * q);\n");
  }
  if (grad)
    bprintf(b, "    dxr[target[r]] -= s;\n");
  if (nll)
    bprintf(b, "    nll_row[r] = (real)(xt - lse);\n");
  bprintf(b, "  }\n");
  if (nll) {
    bprintf(b, "  double nll = 0;\n");
    bprintf(b, "  for (long r = 0; r < %s; r++)\n", mstr(e, rows));
    bprintf(b, "    nll -= nll_row[r];\n");
    bprintf(b, "  loss[0] = (real)(nll / (%s));\n", mstr(e, rows));
  }
  k->iter = lsm->shape;
}

/* ------------------------------------------------------------ kernels, calls */

/* Writes node id's kernel body into b and its signature into k; false for
 * nodes without a kernel (a fused group's kernel belongs to its anchor). */
static bool kernel(E *e, int id, Buf *b, Sig *k)
{
  Node *n = N(e, id);
  if (n->dead || e->skip[id] || n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL || is_view(e->g, n))
    return false;   /* *k stays as calloc left it: no kernel */
  memset(k, 0, sizeof *k);
  e->uses_T = false;
  k->name = op_info[n->op].name;
  if (n->group) {
    if (e->anchor[n->group] != id)
      return false;
    bool stores = false;
    for (int m = e->member_start[n->group]; m < e->member_start[n->group + 1] && !stores; m++)
      stores = e->off[e->member[m]] != SIZE_MAX;
    if (!stores)
      return false;   /* nothing reads what it would compute */
    k->name = "fused";
    if (n->op == OP_LOG_SOFTMAX)
      k_log_softmax_nll(e, b, k, n->group);
    else
      k_fused(e, b, k, n->group);
  } else if (op_is(n->op, P_ELEM))
    k_elementwise(e, b, k, n);
  else
    switch (n->op) {
    case OP_CONST:
    case OP_ARANGE:         k_fill(e, b, k, n); break;
    case OP_TRIU_MASK:      k_triu_mask(e, b, k, n); break;
    case OP_CARRY:
    case OP_RESHAPE:        k_copy(e, b, k, n); break;
    case OP_MATMUL:
    case OP_MATMUL_BIAS:
    case OP_BMM:            k_matmul(e, b, k, n); break;
    case OP_EMBEDDING:
    case OP_EMBEDDING_GRAD: k_embedding(e, b, k, n); break;
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX:
    case OP_SOFTMAX_GRAD:
    case OP_LOG_SOFTMAX_GRAD: k_softmax(e, b, k, n); break;
    case OP_NORMALIZE:
    case OP_NORMALIZE_GRAD: k_normalize(e, b, k, n); break;
    case OP_NLL_LOSS:
    case OP_NLL_LOSS_GRAD:
    case OP_NLL_LOG_SOFTMAX_GRAD: k_nll(e, b, k, n); break;
    case OP_SUM:
    case OP_BROADCAST:      k_sum_broadcast(e, b, k, n); break;
    case OP_TRANSPOSE:
    case OP_SLICE:
    case OP_PAD:
    case OP_CONCAT:         k_shuffle(e, b, k, n); break;
    default:
      die("no kernel for %s", op_info[n->op].name);
    }
  k->has = true;
  k->T = e->uses_T;
  return true;
}

/* What node n computes, for a kernel comment: "n19 = tanh(n18)" and the
 * attributes that matter. */
static void node_comment(E *e, Buf *b, int id)
{
  Node *n = N(e, id);
  bprintf(b, "n%d = %s(", id, op_info[n->op].name);
  for (int i = 0; i < n->nin; i++)
    bprintf(b, "%sn%d", i ? ", " : "", n->in[i]);
  bprintf(b, ")");
  switch (n->op) {
  case OP_CONST:     bprintf(b, " value "); bdouble(b, n->a.f); break;
  case OP_ARANGE:    bprintf(b, " start %g step %g", n->a.f, n->a.f2); break;
  case OP_MATMUL:
  case OP_MATMUL_BIAS:
  case OP_BMM:       bprintf(b, "%s%s", n->a.ta ? " a^T" : "", n->a.tb ? " b^T" : ""); break;
  case OP_DROPOUT:
  case OP_DROPOUT_GRAD:
  case OP_ADD_DROPOUT:
  case OP_DROPOUT_ADD: bprintf(b, " stream %d, p = slot %d", n->a.id, n->a.id2); break;
  case OP_NORMALIZE:
  case OP_NORMALIZE_GRAD: bprintf(b, " eps %g", n->a.f); break;
  case OP_SLICE:     bprintf(b, " axis %d from %d", n->a.axis, n->a.start); break;
  case OP_PAD:       bprintf(b, " axis %d at %d", n->a.axis, n->a.start); break;
  case OP_CONCAT:    bprintf(b, " axis %d", n->a.axis); break;
  case OP_TRANSPOSE:
    bprintf(b, " perm");
    for (int i = 0; i < n->shape.rank; i++)
      bprintf(b, " %d", n->a.perm[i]);
    break;
  default:
    break;
  }
}

/* The comment above a kernel: what it computes, its shapes (per step in a
 * loop body) and the Lua line that built it.  A fused kernel lists its
 * members, the shape of each and which it stores. */
static void kernel_comment(E *e, Buf *b, int id)
{
  Node *n = N(e, id);
  if (n->group) {
    Graph *g = e->g;
    int cnt = e->member_start[n->group + 1] - e->member_start[n->group];
    bprintf(b, "/* fused: %d nodes in one loop over %s%s\n", cnt, shape_str(&e->sig[id].iter),
            n->loop ? " per step" : "");
    for (int m = e->member_start[n->group]; m < e->member_start[n->group + 1]; m++) {
      int i = e->member[m];
      bprintf(b, " *   ");
      node_comment(e, b, i);
      bprintf(b, " %s%s\n", shape_str(&g->node[i].shape), e->off[i] != SIZE_MAX ? ", stored" : "");
    }
  } else {
    bprintf(b, "/* ");
    node_comment(e, b, id);
    bprintf(b, "\n *   %s%s", n->loop ? "per step: " : "", shape_str(&n->shape));
    for (int i = 0; i < n->nin; i++)
      bprintf(b, "%s%s", i ? ", " : " <- ", shape_str(&IN(e, n, i)->shape));
    bprintf(b, "\n");
  }
  bprintf(b, " *   ");
  bcomment(b, n->file ? n->file : "?");
  bprintf(b, ":%d */\n", n->line);
}

static void emit_kernels(E *e, Buf *out)
{
  Graph *g = e->g;
  for (int i = 0; i < g->nnode; i++) {
    Buf body = {0};
    Sig *k = &e->sig[i];
    if (!kernel(e, i, &body, k)) {
      bfree(&body);
      continue;
    }
    kernel_comment(e, out, i);
    bprintf(out, "static void %s_k%d_%s(", e->prog, i, k->name);
    for (int a = 0; a < k->narg; a++)
      bprintf(out, "%s%s", a ? ", " : "", k->decl[a]);
    bprintf(out, "%s)\n{\n%s}\n\n", k->T ? ", int T" : "", bstr(&body));
    bfree(&body);
  }
}

/* ------------------------------------------------------------ run() */

static void emit_call(E *e, Buf *b, int id, int depth)
{
  Node *n = N(e, id);
  Sig *k = &e->sig[id];
  const char *t = n->loop ? "t" : NULL;
  bool reverse = n->loop && e->g->loop[n->loop].reverse;
  indent(b, depth);
  bprintf(b, "%s_k%d_%s(", e->prog, id, k->name);
  for (int a = 0; a < k->narg; a++) {
    Arg *w = &k->arg[a];
    Node *x = N(e, w->node);
    if (a)
      bprintf(b, ", ");
    switch (w->kind) {
    case A_PTR:
      bprintf(b, "%s", ptr(e, w->node, t));
      break;
    case A_CARRY:
      /* the initial value at the first step, else the next value of the
       * step before */
      bprintf(b, "%s ? %s : %s", reverse ? "t == T - 1" : "t == 0", ptr(e, x->in[0], NULL),
              ptr(e, x->in[1], reverse ? "(t + 1)" : "(t - 1)"));
      break;
    case A_KEY:
      e->uses_c = e->uses_c || e->training;
      if (e->training)
        bprintf(b, "lmc_dropout_key(c->seed, c->step, %d)", x->a.id);
      else
        bprintf(b, "0");
      break;
    case A_P:
      if (e->training)
        bprintf(b, "c->dropout[%d]", x->a.id2);
      else
        bprintf(b, "0");
      break;
    case A_THREADS:
      e->uses_c = true;
      bprintf(b, "c->threads");
      break;
    case A_SCRATCH:
      bprintf(b, "w + %zu", e->scratch_off);
      break;
    case A_IDX0:
      if (n->loop)
        bprintf(b, "t * %s", mstr(e, mnumel(&N(e, w->shape)->shape)));
      else
        bprintf(b, "0");
      break;
    }
  }
  if (k->T)
    bprintf(b, "%sT", k->narg ? ", " : "");
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

typedef struct {
  size_t state_numel;
  int nstate;
  bool has_backward;
  bool has_logp, logp_last;
  size_t logp_offset;
} ProgInfo;

static void emit_state_table(E *e, Buf *out, ProgInfo *pi)
{
  Graph *g = e->g;
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_INPUT || !n->a.state)
      continue;
    if (!pi->nstate)
      bprintf(out, "static const LmcTensorDesc %s_state[] = {\n", e->prog);
    int rank = desc_rank(&n->shape, "state", n->a.name);
    size_t numel = mval(mnumel(&n->shape), 1);
    bprintf(out, "  { .name = ");
    bquote(out, n->a.name);
    bprintf(out, ", .rank = %d, .shape = {", rank);
    for (int d = 0; d < rank; d++)
      bprintf(out, "%s %d", d ? "," : "", n->shape.dim[d]);
    if (!rank)
      bprintf(out, " 0");
    bprintf(out, " }, .offset = %zu, .numel = %zu, .init = LMC_INIT_ZERO, .alias = -1 },\n", e->loc[i].off, numel);
    pi->nstate++;
    pi->state_numel += numel;
  }
  if (pi->nstate)
    bprintf(out, "};\n\n");
}

/* run(): the kernels in node order, loops as C loops, then the outputs. */
static void emit_run(E *e, Buf *out, ProgInfo *pi)
{
  Graph *g = e->g;
  Buf b = {0};
  e->uses_T = e->uses_w = e->uses_c = e->uses_tokens = false;
  bool has_targets = e->targets_off != SIZE_MAX;
  bool has_loss = ir_find_output(g, "loss") >= 0;
  if (has_targets) {
    if (has_loss)
      bprintf(&b, "  const int have_targets = targets != NULL;\n");
    bprintf(&b, "  if (!targets)   /* no loss wanted: read zeros */\n");
    bprintf(&b, "    targets = memset(w + %zu, 0, %d * sizeof *targets);\n", e->targets_off,
            g->max_seq * g->batch);
    e->uses_w = true;
  }
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
    if (n->loop < 0 || n->loop >= g->nloop)
      die("n%d: no loop %d", i, n->loop);
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
        if (m->dead || m->loop == cur)
          continue;
        if (m->loop || !op_is(m->op, P_LEAF))
          die("loop %d (n%d..n%d) is not one run of nodes: n%d", cur, i, last[cur], j);
        if (e->sig[j].has)
          emit_call(e, &b, j, 1);
      }
      if (g->loop[cur].reverse)
        bprintf(&b, "  for (int t = T - 1; t >= 0; t--) {   /* loop %d, reverse */\n", cur);
      else
        bprintf(&b, "  for (int t = 0; t < T; t++) {   /* loop %d */\n", cur);
      e->uses_T = true;
    }
    if (cur && !n->loop)
      continue;   /* a leaf, computed before the loop */
    if (e->sig[i].has)
      emit_call(e, &b, i, cur ? 2 : 1);
    if (cur && i == last[cur]) {
      bprintf(&b, "  }\n");
      cur = 0;
    }
  }
  free(first);
  free(last);

  /* outputs */
  const char *loss = NULL;
  for (int o = 0; o < g->nout; o++) {
    Output *op = &g->out[o];
    Node *n = N(e, op->node);
    Loc *l = &e->loc[op->node];
    if (n->dead)
      die("output %s is dead", op->name);
    if (!strcmp(op->name, "loss")) {
      if (l->kind == L_WORK && !l->last)
        loss = xasprintf("w[%zu]", l->off);
      else
        loss = xasprintf("(%s)[0]", ptr(e, op->node, NULL));
    } else if (!strcmp(op->name, "logp")) {
      if (l->kind != L_WORK || l->stacked || l->last)
        die("logp is not a buffer in c->work");
      pi->has_logp = true;
      pi->logp_last = !(n->shape.seq & 1);   /* last-step: the last position's rows only */
      pi->logp_offset = l->off;
    } else if (!strncmp(op->name, "grad:", 5)) {
      Param *q = find_param(e, op->name + 5);
      if (!q)
        die("output %s: no such parameter", op->name);
      if (mval(mnumel(&n->shape), g->max_seq) != q->numel || mnumel(&n->shape).k)
        die("output %s has shape %s, the parameter %s", op->name, shape_str(&n->shape), shape_str(&q->shape));
      if (!pi->has_backward)
        bprintf(&b, "  /* gradients */\n");
      pi->has_backward = true;
      e->uses_c = true;
      if (l->kind == L_GRAD && l->off == q->goff)
        continue;   /* computed in place */
      /* a rows gradient (row-grad) computed in the arena, without
       * plan-memory: its rows, ids and count, gnumel reals from the start
       * of its buffer */
      bprintf(&b, "  memcpy(c->grad + %zu, %s, %zu * sizeof(real));   /* ", q->goff, ptr(e, op->node, NULL),
              q->gnumel);
      bcomment(&b, q->name);
      bprintf(&b, " */\n");
    } else if (find_state(g, op->name) >= 0) {
      int s = find_state(g, op->name);
      Node *sn = N(e, s);
      if (mnumel(&n->shape).k || mval(mnumel(&n->shape), 1) != mval(mnumel(&sn->shape), 1))
        die("state output %s has shape %s, the input %s", op->name, shape_str(&n->shape), shape_str(&sn->shape));
      if (same_loc(l, &e->loc[s]))
        continue;
      bprintf(&b, "  memcpy(%s, ", ptr(e, s, NULL));
      bprintf(&b, "%s, %zu * sizeof(real));   /* state ", ptr(e, op->node, NULL), mval(mnumel(&sn->shape), 1));
      bcomment(&b, op->name);
      bprintf(&b, ", detached */\n");
    }
  }
  if (pi->has_backward) {
    /* parameters without a gradient output get zeros */
    for (int q = 0; q < e->nparam; q++) {
      char name[512];
      snprintf(name, sizeof name, "grad:%s", e->param[q].name);
      if (ir_find_output(g, name) >= 0)
        continue;
      e->uses_c = true;
      bprintf(&b, "  memset(c->grad + %zu, 0, %zu * sizeof(real));   /* ", e->param[q].goff, e->param[q].numel);
      bcomment(&b, e->param[q].name);
      bprintf(&b, ": no gradient */\n");
    }
  }
  if (loss && has_targets)
    bprintf(&b, "  return have_targets ? %s : 0;\n", loss);
  else if (loss)
    bprintf(&b, "  return %s;\n", loss);
  else
    bprintf(&b, "  return 0;\n");
  free((char *)loss);

  const char *body = bstr(&b);
  bprintf(out, "static double %s_run(LmcCtx *c, const int32_t *tokens, const int32_t *targets, int T)\n{\n", e->prog);
  if (e->uses_w)
    bprintf(out, "  real *w = c->work;\n");
  else if (!e->uses_c)
    bprintf(out, "  (void)c;\n");
  if (!e->uses_tokens)
    bprintf(out, "  (void)tokens;\n");
  if (!has_targets)
    bprintf(out, "  (void)targets;\n");
  if (!e->uses_T)
    bprintf(out, "  (void)T;\n");
  bprintf(out, "%s}\n\n", body);
  bfree(&b);
}

/* e->member: the live members of each fused kernel, so that emitting one
 * walks its members, not the graph. */
static void group_members(E *e)
{
  Graph *g = e->g;
  e->member_start = xcalloc((size_t)g->ngroup + 3, sizeof(int));
  e->member = xcalloc((size_t)g->nnode + 1, sizeof(int));
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group)
      e->member_start[g->node[i].group + 2]++;
  for (int k = 0; k <= g->ngroup; k++)
    e->member_start[k + 2] += e->member_start[k + 1];
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].group)
      e->member[e->member_start[g->node[i].group + 1]++] = i;
}

static void emit_program(E *e, Buf *out, Graph *g, const char *prog, bool training, ProgInfo *pi)
{
  memset(pi, 0, sizeof *pi);
  e->g = g;
  e->prog = prog;
  e->training = training;
  e->loc = xcalloc((size_t)g->nnode + 1, sizeof *e->loc);
  e->sig = xcalloc((size_t)g->nnode + 1, sizeof *e->sig);
  e->off = xcalloc((size_t)g->nnode + 1, sizeof *e->off);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] < 0 || n->in[k] >= g->nnode || g->node[n->in[k]].dead)
        die("n%d reads a dead or missing node n%d", i, n->in[k]);
    if (is_dropout_op(n->op) && e->training && (n->a.id2 < 0 || n->a.id2 >= e->nslot))
      die("n%d reads dropout slot %d of %d", i, n->a.id2, e->nslot);
  }
  e->anchor = group_anchors(g);
  group_members(e);
  e->in_arg = xcalloc((size_t)g->nnode + 1, sizeof(int));
  e->drop_arg = xcalloc((size_t)g->nnode + 1, sizeof(int));
  e->users = users_make(g);
  e->skip = xcalloc((size_t)g->nnode + 1, sizeof(bool));
  plan_work(e);
  locate(e);

  bprintf(out, "/* ---------------------------------------------------------------- %s: batch %d */\n\n", prog, g->batch);
  emit_kernels(e, out);
  emit_state_table(e, out, pi);
  emit_run(e, out, pi);
  free(e->loc);
  free(e->sig);
  free(e->off);
  free(e->anchor);
  free(e->member_start);
  free(e->member);
  free(e->in_arg);
  free(e->drop_arg);
  free(e->skip);
  users_free(&e->users);
}

/* The folded tables: static arrays of exact hexadecimal literals. */
static void emit_const_tables(E *e, Buf *out)
{
  for (int t = 0; t < e->ntable; t++) {
    bprintf(out, "/* a table folded at compile time (fold-constants) */\n");
    bprintf(out, "static const real lmc_const%d[%zu] = {", t, e->table_n[t]);
    for (size_t i = 0; i < e->table_n[t]; i++) {
      double v = e->table[t][i];
      if (!isfinite(v))
        die("folded table %d holds %g", t, v);
      bprintf(out, "%s%a", i % 6 ? ", " : i ? ",\n  " : "\n  ", v);
    }
    bprintf(out, "\n};\n\n");
  }
}

/* ------------------------------------------------------------ the model */

static void emit_tables(E *e, Buf *out)
{
  Program *p = e->p;
  Graph *g = p->train;
  static const char *const init[] = {
    [INIT_ZERO] = "LMC_INIT_ZERO", [INIT_ONE] = "LMC_INIT_ONE",
    [INIT_UNIFORM] = "LMC_INIT_UNIFORM", [INIT_XAVIER] = "LMC_INIT_XAVIER",
  };
  if (e->nparam) {
    bprintf(out, "static const LmcTensorDesc lmc_param[] = {\n");
    for (int i = 0; i < e->nparam; i++) {
      Param *q = &e->param[i];
      Node *n = &g->node[q->node];
      bprintf(out, "  { .name = ");
      bquote(out, q->name);
      bprintf(out, ", .rank = %d, .shape = {", q->shape.rank);
      for (int d = 0; d < q->shape.rank; d++)
        bprintf(out, "%s %d", d ? "," : "", q->shape.dim[d]);
      if (!q->shape.rank)
        bprintf(out, " 0");
      if ((unsigned)n->a.init > INIT_XAVIER)
        die("parameter %s: unknown initialiser %d", q->name, (int)n->a.init);
      if (q->rows && q->row_len * (size_t)q->shape.dim[0] != q->numel)
        die("parameter %s: rows of %zu reals do not tile it", q->name, q->row_len);
      bprintf(out, " }, .offset = %zu, .numel = %zu,\n    .init = %s, .init_a = ", q->off, q->numel, init[n->a.init]);
      bdouble(out, n->a.init_a);
      bprintf(out, ", .alias = -1,\n    .grad_offset = %zu, .grad_rows = %zu },\n", q->goff, q->rows ? q->max_rows : 0);
    }
    /* A tied weight: a second name for a parameter's storage, written
     * under both names in checkpoints as PyTorch's state_dict does. */
    for (int o = 0; o < g->nout; o++) {
      if (strncmp(g->out[o].name, "alias:", 6))
        continue;
      Param *q = find_param(e, g->node[g->out[o].node].a.name);
      if (!q)
        die("alias %s of a parameter the training program does not have", g->out[o].name);
      bprintf(out, "  { .name = ");
      bquote(out, g->out[o].name + 6);
      bprintf(out, ", .rank = %d, .shape = {", q->shape.rank);
      for (int d = 0; d < q->shape.rank; d++)
        bprintf(out, "%s %d", d ? "," : "", q->shape.dim[d]);
      bprintf(out, " }, .offset = %zu, .numel = %zu,\n    .init = LMC_INIT_ZERO, .init_a = 0.0, .alias = %d },\n",
              q->off, q->numel, (int)(q - e->param));
    }
    bprintf(out, "};\n\n");
  }
  if (p->nhyper) {
    bprintf(out, "static const char *const lmc_hyper[][2] = {\n");
    for (int i = 0; i < p->nhyper; i++) {
      bprintf(out, "  { ");
      bquote(out, p->hyper[i].name);
      bprintf(out, ", ");
      bquote(out, p->hyper[i].value);
      bprintf(out, " },\n");
    }
    bprintf(out, "};\n\n");
  }
  if (e->nslot) {
    bprintf(out, "static const LmcDropoutSlot lmc_dropout[] = {\n");
    for (int i = 0; i < e->nslot; i++) {
      bprintf(out, "  { ");
      bquote(out, e->slot_name[i]);
      bprintf(out, ", ");
      bdouble(out, e->slot_default[i]);
      bprintf(out, " },\n");
    }
    bprintf(out, "};\n\n");
  }
}

static void emit_prog_struct(Buf *out, const char *field, Graph *g, const char *prog, ProgInfo *pi, size_t work)
{
  if (!g) {
    bprintf(out, "  .%s = { .run = NULL },\n", field);
    return;
  }
  bprintf(out, "  .%s = {\n", field);
  bprintf(out, "    .batch = %d,\n", g->batch);
  bprintf(out, "    .max_seq = %d,\n", g->max_seq);
  bprintf(out, "    .work_numel = %zu,\n", work);
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
  bprintf(out, "  },\n");
}

void emit_c(Program *p, FILE *f)
{
  E e = {.p = p};
  Graph *g = p->train;
  Buf out = {0};
  if (!g)
    die("emit_c without a training program");
  e.g = g;
  layout_params(&e);
  layout_grads(&e);
  find_slots(&e);

  bprintf(&out, "/*\n * Generated by lmc %s from ", LMC_VERSION);
  bcomment(&out, p->source ? p->source : "?");
  bprintf(&out, "; do not edit.\n *   ");
  bcomment(&out, p->flags ? p->flags : "");
  bprintf(&out, "\n * The layout of this file: docs/emitted-code.md in the lmc sources.\n */\n");
  if (g->real == DT_F64)
    bprintf(&out, "#define LMC_REAL double\n");
  bprintf(&out, "#include <math.h>\n#include <stdint.h>\n#include <string.h>\n\n#include <cblas.h>\n\n#include \"lmc_rt.h\"\n\n");
  emit_tables(&e, &out);

  Graph *gs[3] = {p->train, p->eval, p->gen};
  static const char *const names[3] = {"train", "eval", "gen"};
  ProgInfo pi[3] = {{0}};
  size_t work[3] = {0};
  Buf progs = {0};
  for (int i = 0; i < 3; i++) {
    if (!gs[i])
      continue;
    if (gs[i]->real != g->real)
      die("the %s program is not in the training program's precision", names[i]);
    emit_program(&e, &progs, gs[i], names[i], i == 0, &pi[i]);
    work[i] = e.work_numel;
  }
  emit_const_tables(&e, &out);
  bprintf(&out, "%s", bstr(&progs));
  bfree(&progs);
  free(e.table);
  free(e.table_n);

  const char *ntoken = "0";
  for (int i = 0; i < p->nhyper; i++)
    if (!strcmp(p->hyper[i].name, "ntoken"))
      ntoken = p->hyper[i].value;
  bprintf(&out, "/* ---------------------------------------------------------------- the model */\n\n");
  bprintf(&out, "const LmcModel lmc_model = {\n");
  bprintf(&out, "  .kind = ");
  bquote(&out, g->kind ? g->kind : "");
  bprintf(&out, ",\n  .version = ");
  bquote(&out, LMC_VERSION);
  bprintf(&out, ",\n  .flags = ");
  bquote(&out, p->flags ? p->flags : "");
  bprintf(&out, ",\n  .nhyper = %d,\n", p->nhyper);
  bprintf(&out, "  .hyper = %s,\n", p->nhyper ? "lmc_hyper" : "NULL");
  bprintf(&out, "  .ntoken = %ld,\n", strtol(ntoken, NULL, 10));
  bprintf(&out, "  .bptt = %d,\n", g->max_seq);
  bprintf(&out, "  .nparam = %d,\n", e.nparam + e.nalias);
  bprintf(&out, "  .param = %s,\n", e.nparam ? "lmc_param" : "NULL");
  bprintf(&out, "  .param_numel = %zu,\n", e.param_numel);
  bprintf(&out, "  .grad_numel = %zu,\n", e.grad_numel);
  bprintf(&out, "  .ndropout = %d,\n", e.nslot);
  bprintf(&out, "  .dropout = %s,\n", e.nslot ? "lmc_dropout" : "NULL");
  for (int i = 0; i < 3; i++)
    emit_prog_struct(&out, names[i], gs[i], names[i], &pi[i], work[i]);
  bprintf(&out, "  .fma = LMC_FMA,\n");
  bprintf(&out, "};\n");

  fwrite(out.s, 1, out.len, f);
  bfree(&out);
  free(e.param);
  free(e.slot_name);
  free(e.slot_default);
}
