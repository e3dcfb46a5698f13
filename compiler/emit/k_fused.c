/*
 * k_fused.c: the kernel of a group of elementwise and slice ops fused by
 * fuse_elem.c, one loop nest over the group's shape with intermediate
 * values in registers.
 */
#include <stdlib.h>
#include <string.h>

#include "emit.h"

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
  Text *k;
  int group;
  Node *shape;            /* a stored member: the group's shape */
  Nest ns;
  /* Two walks over the members: the first finds the nest's operands and
   * the kernel's parameters, and its statements are dropped; the second,
   * with the loops open and idx[j] the index of operand j, writes them. */
  const Str *idx;         /* NULL in the first walk */
  int depth;              /* the loop body's, in the second */
  Buf pro, *body;         /* before the loops; the statements */
  Map *memo;              /* evaluated (node, map) pairs */
  char **val;
  int nmemo;
  Map opnd[MAXOPND];      /* nest operands 1..: loads and mask indices */
  bool opnd_load[MAXOPND];
  int ntemp;
  /* The nodes of the kernel's inputs x0, x1, ..., outputs y0, y1, ... and
   * dropout members (key_0, p_0, idx0_0, ...), numbered in the order they
   * become parameters, so that the text names no node and the same cell
   * in two layers reads the same. */
  int in[MAXARG], out[MAXARG], drop[MAXARG];
  int nin, nout, ndrop;
} Fused;

/* The number of node `node` in list[0..*n), added at the end if absent. */
static int param_number(int *list, int *n, int node)
{
  for (int i = 0; i < *n; i++)
    if (list[i] == node)
      return i;
  if (*n == MAXARG)
    die("too many kernel arguments");
  list[*n] = node;
  return (*n)++;
}

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
static Map map_input(Prog *p, Node *m, const Map *mm, int in)
{
  Node *x = N(p, in);
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
  Node *x = N(F->k->p, map->node);
  for (int j = 1; j < F->ns.nop; j++)
    if (F->opnd_load[j] == load && map_eq(&F->opnd[j], map, x->shape.rank))
      return j;
  if (F->idx)
    die("n%d: an operand the first walk did not find", map->node);
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
      base = madd(base, mmul(mono(map->off[d], 0), st[d]));
    }
  }
  int j = F->ns.nop;
  nest_strided(&F->ns, stride, base);
  F->opnd[j] = *map;
  F->opnd_load[j] = load;
  return j;
}

/* Operand j's index as C; nothing in the first walk, whose text is dropped. */
static const char *index_of(Fused *F, int j)
{
  return F->idx ? F->idx[j].s : "";
}

static const char *operand(Fused *F, const Map *map, bool load)
{
  return index_of(F, fused_operand(F, map, load));
}

static char *fused_value(Fused *F, const Map *map);

static char *fused_member(Fused *F, Node *m, const Map *map)
{
  Prog *p = F->k->p;
  int id = map->node;
  if (m->op == OP_SLICE || m->op == OP_BROADCAST) {
    Map r = map_input(p, m, map, m->in[0]);
    return xstrdup(fused_value(F, &r));
  }
  if (!op_is(m->op, P_ELEM))
    die("n%d: %s in a fused kernel", id, op_info[m->op].name);
  char *x[2] = {NULL, NULL};
  for (int k = 0; k < m->nin; k++) {
    Map r = map_input(p, m, map, m->in[k]);
    x[k] = fused_value(F, &r);
  }
  Str sfx = {""}, idx = {""};
  if (is_dropout_op(m->op)) {
    int shape = m->op == OP_ADD_DROPOUT ? m->in[1] : id;
    int ndrop = F->ndrop;
    sprint(&sfx, "_%d", param_number(F->drop, &F->ndrop, id));
    if (F->ndrop > ndrop)
      kdropout(F->k, &F->pro, m, shape, sfx.s);
    Map r = m->op == OP_ADD_DROPOUT ? map_input(p, m, map, m->in[1]) : *map;
    idx = kmask_index(F->k, m, shape, operand(F, &r, false), sfx.s);
  }
  int t = F->ntemp++;
  indent(F->body, F->depth);
  bprintf(F->body, "real v%d = ", t);
  elem_expr(p->g, F->body, m->op, x[0], x[1], idx.s, sfx.s);
  bprintf(F->body, ";   /* %s */\n", op_info[m->op].name);
  return xasprintf("v%d", t);
}

/* The value of node map->node at *map, as a C expression. */
static char *fused_value(Fused *F, const Map *map)
{
  Prog *p = F->k->p;
  Node *x = N(p, map->node);
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
      int nin = F->nin, j = param_number(F->in, &F->nin, map->node);
      if (F->nin > nin)
        karg(F->k, A_PTR, map->node, -1, "const real *x%d", j);
      v = xasprintf("x%d[%s]", j, operand(F, map, true));
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

/* Is member x of the group a sum of pads of values the group computes (a
 * gradient assembled from the gradients of slices), stored window by
 * window? */
static bool assembled(Prog *p, int group, int x)
{
  Node *n = N(p, x);
  if (n->group != group)
    return false;
  if (n->op == OP_PAD)
    return true;
  return n->op == OP_ADD && assembled(p, group, n->in[0]) && assembled(p, group, n->in[1]);
}

/* Stores the pads under assembled node x into root's output, each pad's
 * value at its window. */
static void store_assembled(Fused *F, int root, int x)
{
  Prog *p = F->k->p;
  Node *n = N(p, x);
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
  indent(F->body, F->depth);
  bprintf(F->body, "y%d[%s] = %s;   /* pad at %d */\n", param_number(F->out, &F->nout, root), operand(F, &at, true), val,
          n->a.start);
}

/* One walk over the members the group stores, in node order; forgets
 * the values it computed, so that the next walk computes them again. */
static void fused_walk(Fused *F)
{
  Prog *p = F->k->p;
  for (int m = p->member_start[F->group]; m < p->member_start[F->group + 1]; m++) {
    int i = p->member[m];
    Node *n = N(p, i);
    if (!stored(p, i))
      continue;
    /* restrict: a kernel's outputs share no bytes with its inputs or
     * with each other (plan.c), and saying so lets the compiler vectorise
     * loops with more operands than its run-time overlap checks cover
     * (an LSTM cell: four gate inputs, the carry, two outputs) */
    int nout = F->nout, y = param_number(F->out, &F->nout, i);
    if (F->nout > nout)
      karg(F->k, A_PTR, i, -1, "real *restrict y%d", y);
    if (assembled(p, F->group, i)) {
      store_assembled(F, i, i);
      continue;
    }
    Map id = {.node = i};
    for (int d = 0; d < n->shape.rank; d++)
      id.var[d] = d;
    char *v = fused_value(F, &id);
    indent(F->body, F->depth);
    bprintf(F->body, "y%d[%s] = %s;\n", y, index_of(F, 0), v);
  }
  for (int i = 0; i < F->nmemo; i++)
    free(F->val[i]);
  F->nmemo = F->ntemp = 0;
}

/* The kernel of group `group`, whose members are the nodes with that group. */
void k_fused(Text *k, Buf *b, int group)
{
  Graph *g = k->p->g;
  Fused F = {.k = k, .group = group};
  /* the group's shape: of every member it stores, or what its pads pad */
  for (int m = k->p->member_start[group]; m < k->p->member_start[group + 1]; m++) {
    int i = k->p->member[m];
    Node *n = &g->node[i];
    Node *s = NULL;
    if (n->op == OP_PAD)
      s = IN(k->p, n, 0);
    else if (stored(k->p, i) && !assembled(k->p, group, i))
      s = n;
    if (!s)
      continue;
    if (!F.shape)
      F.shape = s;
    else if (!shape_eq(&F.shape->shape, &s->shape))
      die("group %d computes n%d %s and n%d %s", group, id_of(k->p, F.shape), shape_str(&F.shape->shape),
          id_of(k->p, s), shape_str(&s->shape));
  }
  if (!F.shape)
    die("group %d stores nothing", group);
  k->sig->iter = F.shape->shape;
  nest_init(&F.ns, &F.shape->shape);
  nest_bcast(&F.ns, &F.shape->shape);   /* operand 0: the group's shape */
  Buf dropped = {0};
  F.body = &dropped;
  fused_walk(&F);
  bfree(&dropped);
  Str *idx = xcalloc(MAXOPND, sizeof *idx);
  bprintf(b, "%s", bstr(&F.pro));
  F.depth = nest_open_block(k, b, &F.ns, 1, idx, F.ns.n > 0);
  F.idx = idx;
  F.body = b;
  fused_walk(&F);
  if (F.ns.n > 0) {
    indent(b, F.depth - 1);
    bprintf(b, "}\n");
  }
  free(idx);
  free(F.val);
  free(F.memo);
  bfree(&F.pro);
}
