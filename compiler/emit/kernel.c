/*
 * kernel.c: a program's kernels.  Every live node that computes something
 * becomes one `static void` kernel named after what it computes and the
 * layer that built it (kernel_name.c: train_rnn_l0_cell), preceded by a
 * comment with its shapes and the Lua line that built it; kernel() picks
 * the k_* function that writes its body (k_*.c) while the helpers here
 * build its signature (Sig), the parameters run() passes.  Kernels whose
 * parameters and body read the same are defined once in the file, by the
 * first of them in program and node order (Model.kernel), whose comment
 * names the others; their calls go to it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"

const char *ctype(DType dt)
{
  return dt == DT_I32 ? "int32_t" : "real";
}

void karg(Text *k, ArgKind kind, int node, int shape, const char *fmt, ...)
{
  Sig *s = k->sig;
  if (s->narg == MAXARG)
    die("too many kernel arguments");
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(s->decl[s->narg], sizeof s->decl[0], fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof s->decl[0])
    die("a kernel parameter of more than %zu characters", sizeof s->decl[0] - 1);
  s->arg[s->narg++] = (Arg){kind, node, shape};
}

void kthreads(Text *k, int node)
{
  for (int a = 0; a < k->sig->narg; a++)
    if (k->sig->arg[a].kind == A_THREADS)
      return;
  karg(k, A_THREADS, node, -1, "int nt");
}

/* The output parameter: dx for the backward ops, y for the others. */
const char *out_name(Op op)
{
  return strstr(op_info[op].name, "_grad") ? "dx" : "y";
}

void kout(Text *k, Node *n)
{
  karg(k, A_PTR, id_of(k->p, n), -1, "%s *%s", ctype(n->dtype), out_name(n->op));
}

void kin(Text *k, Node *n, int i, const char *name)
{
  if (n->op == OP_CARRY)
    karg(k, A_CARRY, id_of(k->p, n), -1, "const %s *%s", ctype(IN(k->p, n, i)->dtype), name);
  else
    karg(k, A_PTR, n->in[i], -1, "const %s *%s", ctype(IN(k->p, n, i)->dtype), name);
}

/* The batch dimension of a mask over node `shape`: its first dimension
 * whose size is the program's batch, -1 when none (a mask that every
 * column shares). */
static int mask_batch_dim(Text *k, int shape)
{
  const Shape *s = &N(k->p, shape)->shape;
  for (int d = 0; d < s->rank; d++)
    if (meq(mdim(s, d), mono(k->p->g->batch, 0)))
      return d;
  return -1;
}

/* Whether dropout node n's mask over node `shape` has dimensions outside
 * its batch dimension: before it, or the loop's step. */
static bool mask_has_outer(Text *k, Node *n, int shape)
{
  return mask_batch_dim(k, shape) > 0 || n->loop;
}

static bool has_arg(Text *k, ArgKind kind)
{
  for (int a = 0; a < k->sig->narg; a++)
    if (k->sig->arg[a].kind == kind)
      return true;
  return false;
}

/* key, p and idx0 of dropout node n, its mask indices counted in the
 * elements of node `shape`; sfx tells several apart in a fused kernel.
 * A mask with a batch dimension also takes the kernel's col0 and, with
 * outer dimensions, col_rest (once, whatever its number of masks). */
void kdropout(Text *k, Buf *b, Node *n, int shape, const char *sfx)
{
  int id = id_of(k->p, n);
  karg(k, A_KEY, id, -1, "uint64_t key%s", sfx);
  karg(k, A_P, id, -1, "double p%s", sfx);
  karg(k, A_IDX0, id, shape, "long idx0%s", sfx);
  if (mask_batch_dim(k, shape) >= 0 && !has_arg(k, A_COL0))
    karg(k, A_COL0, id, -1, "long col0");
  if (mask_batch_dim(k, shape) >= 0 && mask_has_outer(k, n, shape) && !has_arg(k, A_COL_REST))
    karg(k, A_COL_REST, id, -1, "long col_rest");
  bprintf(b, "  real scale%s = p%s < 1 ? (real)(1 / (1 - p%s)) : 0;\n", sfx, sfx, sfx);
}

/* The mask index of element idx (C text over the loop variables) of
 * dropout node n's mask over node `shape`, keyed on the global column
 * (lmc_mask_index): a mask (outer, batch, inner), the loop's step the
 * outermost of the outer dimensions, numbers its elements as one process
 * at the global batch does, so that N ranks draw one process's masks. */
Str kmask_index(Text *k, Node *n, int shape, const char *idx, const char *sfx)
{
  Str s = {""};
  int d = mask_batch_dim(k, shape);
  const Shape *sh = &N(k->p, shape)->shape;
  Mono inner = mono(1, 0);
  for (int i = d + 1; d >= 0 && i < sh->rank; i++)
    inner = mmul(inner, mdim(sh, i));
  if (d < 0)
    sprint(&s, "(uint64_t)(idx0%s + %s)", sfx, idx);
  else if (mask_has_outer(k, n, shape))
    sprint(&s, "lmc_mask_index(idx0%s + %s, %s, %d, col0, col_rest)", sfx, idx, mstr(k, inner).s, k->p->g->batch);
  else   /* the batch outermost: an offset */
    sprint(&s, "(uint64_t)(idx0%s + %s + %s * col0)", sfx, idx, mstr(k, inner).s);
  return s;
}

/* The kernel family of each op that is not elementwise and has a kernel
 * of its own (views, leaves and fused groups have none). */
static void (*const kernel_of[NOPS])(Text *k, Buf *b, Node *n) = {
  [OP_CONST] = k_fill,             [OP_ARANGE] = k_fill,
  [OP_TRIU_MASK] = k_triu_mask,
  [OP_CAUSAL_MASK] = k_kv,         [OP_SLICE_POS] = k_kv,             [OP_KV_WRITE] = k_kv,
  [OP_CARRY] = k_copy,             [OP_RESHAPE] = k_copy,
  [OP_MATMUL] = k_matmul,          [OP_MATMUL_BIAS] = k_matmul,       [OP_BMM] = k_matmul,
  [OP_EMBEDDING] = k_embedding,    [OP_EMBEDDING_GRAD] = k_embedding,
  [OP_SOFTMAX] = k_softmax,        [OP_LOG_SOFTMAX] = k_softmax,
  [OP_SOFTMAX_GRAD] = k_softmax,   [OP_LOG_SOFTMAX_GRAD] = k_softmax,
  [OP_NORMALIZE] = k_normalize,    [OP_NORMALIZE_GRAD] = k_normalize,
  [OP_NLL_LOSS] = k_nll,           [OP_NLL_LOSS_GRAD] = k_nll,        [OP_NLL_LOG_SOFTMAX_GRAD] = k_nll,
  [OP_SUM] = k_sum_broadcast,      [OP_BROADCAST] = k_sum_broadcast,
  [OP_TRANSPOSE] = k_shuffle,      [OP_SLICE] = k_shuffle,            [OP_PAD] = k_shuffle,
  [OP_CONCAT] = k_shuffle,
};

/* Writes node id's kernel body into b and its signature into s; false for
 * nodes without a kernel (a fused group's kernel belongs to its anchor). */
static bool kernel(Prog *p, int id, Buf *b, Sig *s)
{
  Node *n = N(p, id);
  if (n->dead || p->skip[id] || n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL || is_view(p->g, n))
    return false;   /* *s stays as calloc left it: no kernel */
  memset(s, 0, sizeof *s);
  Text k = {.p = p, .sig = s};
  if (n->group) {
    if (p->anchor[n->group] != id)
      return false;
    bool stores = false;
    for (int m = p->member_start[n->group]; m < p->member_start[n->group + 1] && !stores; m++)
      stores = stored(p, p->member[m]);
    if (!stores)
      return false;   /* nothing reads what it would compute */
    if (n->op == OP_LOG_SOFTMAX)
      k_log_softmax_nll(&k, b, n->group);
    else
      k_fused(&k, b, n->group);
  } else if (op_is(n->op, P_ELEM)) {
    k_elementwise(&k, b, n);
  } else if (kernel_of[n->op]) {
    kernel_of[n->op](&k, b, n);
  } else {
    die("no kernel for %s", op_info[n->op].name);
  }
  s->has = true;
  s->T = k.uses_T;
  return true;
}

/* What node n computes, for a kernel comment: "n19 = tanh(n18)" and the
 * attributes that matter. */
static void node_comment(Prog *p, Buf *b, int id)
{
  Node *n = N(p, id);
  bprintf(b, "n%d = %s(", id, op_info[n->op].name);
  for (int i = 0; i < n->nin; i++)
    bprintf(b, "%sn%d", i ? ", " : "", n->in[i]);
  bprintf(b, ")");
  char *attr = attr_comment(n);
  bprintf(b, "%s", attr);
  free(attr);
}

enum { COMMENT_WIDTH = 80 };

/* Writes item into a comma-separated list on a comment line, *col the
 * column; the list wraps before COMMENT_WIDTH onto lines that start at
 * column `start`. */
static void list_item(Buf *b, size_t *col, size_t start, bool first, const char *item)
{
  size_t n = strlen(item) + 2;
  if (!first)
    bprintf(b, ",");
  if (*col > start && *col + n > COMMENT_WIDTH) {
    bprintf(b, "\n *%*s", (int)(start - 2), "");
    *col = start;
  }
  bprintf(b, " %s", item);
  *col += n;
}

/* The name a parameter's declaration ends with, before a comment if it
 * has one: y0 for "real *restrict y0", block for the loss kernel's
 * "real *block" and its comment. */
static const char *arg_name(const char *decl)
{
  const char *c = strstr(decl, " /*");
  const char *end = c ? c : decl + strlen(decl), *s = end;
  while (s > decl && (isalnum((unsigned char)s[-1]) || s[-1] == '_'))
    s--;
  return arena_printf("%.*s", (int)(end - s), s);
}

/* The parameters of fused kernel id that member i has, after its line:
 * " in y0" for its output, ", with key_0, p_0, idx0_0" for a dropout. */
static void member_params(Prog *p, Buf *b, int id, int i)
{
  const Sig *s = &p->sig[id];
  bool drop = false;
  for (int a = 0; a < s->narg; a++) {
    if (s->arg[a].node != i)
      continue;
    if (s->arg[a].kind == A_PTR)
      bprintf(b, " in %s", arg_name(s->decl[a]));
    else
      bprintf(b, "%s%s", drop ? ", " : ", with ", arg_name(s->decl[a]));
    drop |= s->arg[a].kind != A_PTR;
  }
}

/* The line of fused kernel id's comment that names the node each input
 * parameter loads: "reads x0 = n17, x1 = n20, ...". */
static void inputs_line(Prog *p, Buf *b, int id)
{
  const Sig *s = &p->sig[id];
  int group = N(p, id)->group;
  size_t col = 10;
  bool first = true;
  bprintf(b, " *   reads");
  for (int a = 0; a < s->narg; a++) {
    if (s->arg[a].kind != A_PTR || N(p, s->arg[a].node)->group == group)
      continue;
    char item[64];
    snprintf(item, sizeof item, "%s = n%d", arg_name(s->decl[a]), s->arg[a].node);
    list_item(b, &col, 10, first, item);
    first = false;
  }
  bprintf(b, "\n");
}

/* The comment above a kernel, left open: what it computes, its shapes (per
 * step in a loop body) and the Lua line that built it.  A fused kernel
 * lists its members, the shape of each, which it stores and in which
 * parameter, and the node each input parameter loads. */
static void kernel_comment(Prog *p, Buf *b, int id)
{
  Node *n = N(p, id);
  if (n->group) {
    Graph *g = p->g;
    int cnt = p->member_start[n->group + 1] - p->member_start[n->group];
    bprintf(b, "/* fused: %d nodes in one loop over %s%s\n", cnt, shape_str(&p->sig[id].iter),
            n->loop ? " per step" : "");
    for (int m = p->member_start[n->group]; m < p->member_start[n->group + 1]; m++) {
      int i = p->member[m];
      bprintf(b, " *   ");
      node_comment(p, b, i);
      bprintf(b, " %s%s", shape_str(&g->node[i].shape), stored(p, i) ? ", stored" : "");
      member_params(p, b, id, i);
      bprintf(b, "\n");
    }
    inputs_line(p, b, id);
  } else {
    bprintf(b, "/* ");
    node_comment(p, b, id);
    bprintf(b, "\n *   %s%s", n->loop ? "per step: " : "", shape_str(&n->shape));
    for (int i = 0; i < n->nin; i++)
      bprintf(b, "%s%s", i ? ", " : " <- ", shape_str(&IN(p, n, i)->shape));
    bprintf(b, "\n");
  }
  bprintf(b, " *   ");
  bcomment(b, n->file ? n->file : "?");
  bprintf(b, ":%d", n->line);
}

/* Adds node id's kernel, of the given body, to the model's kernels, unless
 * one of the same text is there: then that one stands for it too. */
static void add_kernel(Prog *p, int id, const char *own, Buf *body)
{
  Model *m = p->m;
  Sig *s = &p->sig[id];
  Buf text = {0};
  bprintf(&text, "(");
  for (int a = 0; a < s->narg; a++)
    bprintf(&text, "%s%s", a ? ", " : "", s->decl[a]);
  bprintf(&text, "%s)\n{\n%s}\n", s->T ? ", int T" : "", bstr(body));
  s->kernel = strmap_get(&m->kernel_index, bstr(&text));
  if (s->kernel < 0) {
    if ((m->nkernel & (m->nkernel - 1)) == 0)   /* 0, 1, 2, 4, ...: full */
      m->kernel = arena_realloc(m->kernel, (size_t)(m->nkernel ? 2 * m->nkernel : 1) * sizeof *m->kernel);
    Buf comment = {0};
    kernel_comment(p, &comment, id);
    s->kernel = m->nkernel++;
    m->kernel[s->kernel] = (Kernel){.prog = p->name, .comment = arena_strdup(bstr(&comment)),
                                    .text = arena_strdup(bstr(&text))};
    strmap_put(&m->kernel_index, m->kernel[s->kernel].text, s->kernel);
    bfree(&comment);
  }
  bfree(&text);
  Kernel *k = &m->kernel[s->kernel];
  if ((k->nuse & (k->nuse - 1)) == 0)
    k->use = arena_realloc(k->use, (size_t)(k->nuse ? 2 * k->nuse : 1) * sizeof *k->use);
  k->use[k->nuse++] = (KernelUse){own, kernel_scope(p->g, id), kernel_what(p->g, id)};
}

/* The kernels of program p, into the model's kernels; their own names are
 * given in node order, one name space per program. */
void emit_kernels(Prog *p)
{
  Graph *g = p->g;
  StrMap used = {0};
  for (int i = 0; i < g->nnode; i++) {
    Buf body = {0};
    if (kernel(p, i, &body, &p->sig[i]))
      add_kernel(p, i, kernel_name(g, i, p->name, &used), &body);
    bfree(&body);
  }
}

/* The names of the file's kernels, in the order they are defined: a
 * kernel standing for several is named by what their names share
 * (kernel_shared_name), and a name given before gets _2, _3, ... */
void name_kernels(Model *m)
{
  StrMap used = {0};
  for (int i = 0; i < m->nkernel; i++) {
    Kernel *k = &m->kernel[i];
    const char **scope = arena_calloc((size_t)k->nuse, sizeof *scope);
    const char **what = arena_calloc((size_t)k->nuse, sizeof *what);
    for (int u = 0; u < k->nuse; u++) {
      scope[u] = k->use[u].scope;
      what[u] = k->use[u].what;
    }
    k->name = kernel_numbered(&used, kernel_shared_name(k->prog, k->nuse, scope, what));
  }
}

enum { MAX_USES_SHOWN = 16 };

/* The lines of a shared kernel's comment that name the kernels it stands
 * for (the first MAX_USES_SHOWN, and how many more), wrapped before
 * COMMENT_WIDTH, and say whose nodes the comment names: the first's. */
static void uses_line(Buf *out, const Kernel *k)
{
  bprintf(out, "\n *   shared by");
  size_t col = 14;
  int shown = k->nuse > MAX_USES_SHOWN ? MAX_USES_SHOWN : k->nuse;
  for (int u = 0; u < shown; u++)
    list_item(out, &col, 14, u == 0, k->use[u].own);
  if (shown < k->nuse)
    bprintf(out, ",%s and %d more", col + 16 > COMMENT_WIDTH ? "\n *            " : "", k->nuse - shown);
  bprintf(out, "\n *   (the nodes above are %s's)", k->use[0].own);
}

/* The definitions of the kernels the section of program prog holds, in
 * node order. */
void emit_kernel_defs(Model *m, const char *prog, Buf *out)
{
  for (int i = 0; i < m->nkernel; i++) {
    Kernel *k = &m->kernel[i];
    if (strcmp(k->prog, prog))
      continue;
    bprintf(out, "%s", k->comment);
    if (k->nuse > 1)
      uses_line(out, k);
    bprintf(out, " */\nstatic void %s%s\n", k->name, k->text);
  }
}
