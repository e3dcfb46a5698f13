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
  sprint(&sfx, "_%d", id);
  if (is_dropout_op(m->op)) {
    int shape = m->op == OP_ADD_DROPOUT ? m->in[1] : id;
    if (p->drop_arg[id] != F->group) {
      p->drop_arg[id] = F->group;
      kdropout(F->k, &F->pro, m, shape, sfx.s);
    }
    Map r = m->op == OP_ADD_DROPOUT ? map_input(p, m, map, m->in[1]) : *map;
    sprint(&idx, "\x01%d\x02", fused_operand(F, &r, false));
  }
  int t = F->ntemp++;
  bprintf(&F->body, "real v%d = ", t);
  elem_expr(p->g, &F->body, m->op, x[0], x[1], idx.s, sfx.s);
  bprintf(&F->body, ";   /* n%d %s */\n", id, op_info[m->op].name);
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
      if (p->in_arg[map->node] != F->group) {
        p->in_arg[map->node] = F->group;
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
static void put_indexed(Buf *b, const char *s, const Str *idx, int depth)
{
  bool bol = true;
  for (; *s; s++) {
    if (bol) {
      indent(b, depth);
      bol = false;
    }
    if (*s == '\x01') {
      int j = (int)strtol(s + 1, (char **)&s, 10);
      bprintf(b, "%s", idx[j].s);
      continue;   /* s is at the \2 */
    }
    bprintf(b, "%c", *s);
    bol = *s == '\n';
  }
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

/* Stores the pads under assembled node x into y<root>, each pad's value at
 * its window. */
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
  bprintf(&F->body, "y%d[\x01%d\x02] = %s;   /* n%d pad at %d */\n", root, fused_operand(F, &at, true), val, x,
          n->a.start);
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
    else if (k->p->off[i] != SIZE_MAX && !assembled(k->p, group, i))
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
  for (int m = k->p->member_start[group]; m < k->p->member_start[group + 1]; m++) {
    int i = k->p->member[m];
    Node *n = &g->node[i];
    if (k->p->off[i] == SIZE_MAX)
      continue;
    /* restrict: a kernel's outputs share no bytes with its inputs or
     * with each other (plan.c), and saying so lets the compiler vectorise
     * loops with more operands than its run-time overlap checks cover
     * (an LSTM cell: four gate inputs, the carry, two outputs) */
    karg(k, A_PTR, i, -1, "real *restrict y%d", i);
    if (assembled(k->p, group, i)) {
      store_assembled(&F, i, i);
      continue;
    }
    Map id = {.node = i};
    for (int d = 0; d < n->shape.rank; d++)
      id.var[d] = d;
    char *v = fused_value(&F, &id);
    bprintf(&F.body, "y%d[\x01%d\x02] = %s;\n", i, 0, v);
  }
  Str *idx = xcalloc(MAXOPND, sizeof *idx);
  bprintf(b, "%s", bstr(&F.pro));
  int d = nest_open_block(k, b, &F.ns, 1, idx, F.ns.n > 0);
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
