/*
 * nest.c: loop nests.  Elementwise ops, sums, broadcasts, transposes,
 * slices, concatenations and fused kernels are all one Nest: loop sizes
 * and, for each operand, its stride along each loop.  Loops of size 1 are
 * dropped and adjacent loops that walk every operand contiguously merged,
 * so an unbroadcast add is one flat loop.
 */
#include <string.h>

#include "emit.h"

void nest_init(Nest *ns, const Shape *s)
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

void nest_bcast(Nest *ns, const Shape *x)
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

void nest_strided(Nest *ns, const Mono *stride, Mono base)
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
int nest_open_block(Text *k, Buf *b, Nest *ns, int depth, Str *idx, bool block)
{
  nest_simplify(ns);
  for (int i = 0; i < ns->n; i++) {
    indent(b, depth + i);
    bprintf(b, "for (long i%d = 0; i%d < %s; i%d++)%s\n", i, i, mstr(k, ns->size[i]).s, i,
            block && i == ns->n - 1 ? " {" : "");
  }
  for (int j = 0; j < ns->nop; j++) {
    Str *s = &idx[j];
    *s = (Str){""};
    if (ns->base[j].c)
      sprint(s, "%s", mstr(k, ns->base[j]).s);
    for (int i = 0; i < ns->n; i++) {
      Mono st = ns->stride[j][i];
      if (!st.c)
        continue;
      sprint(s, "%si%d", s->s[0] ? " + " : "", i);
      if (!mone(st))
        sprint(s, " * %s", mstr(k, st).s);
    }
    if (!s->s[0])
      sprint(s, "0");
  }
  return depth + ns->n;
}

int nest_open(Text *k, Buf *b, Nest *ns, int depth, Str *idx)
{
  return nest_open_block(k, b, ns, depth, idx, false);
}
