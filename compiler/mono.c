/*
 * mono.c: the size algebra.  Every size and stride of a shape is
 * c * T^k + d in the run-time sequence length T (Mono): a monomial,
 * shifted by a constant d only where a sequence dimension is shortened or
 * lengthened (T - 1 rows of h[1:], a (T - 1, B, H) tensor's 20*T - 20
 * rows).  A shape holds at most one such dimension and then no other
 * sequence dimension (mono_check_inputs and mono_check_node refuse the
 * rest at the graph line as ir.c builds each node), so every product the
 * compiler forms stays in the algebra; one that would not is a compiler
 * bug.  The memory plan and the emitter compute with these,
 * never with strings.
 */
#include <inttypes.h>
#include "lmc.h"

/* c * T^k + d, with a constant kept in c alone (d = 0 when k = 0) */
static Mono norm(int64_t c, int k, int64_t d)
{
  if (k == 0 || c == 0)
    return (Mono){c + d, 0, 0};
  return (Mono){c, k, d};
}

Mono mono(int64_t c, int k)
{
  return norm(c, k, 0);
}

Mono mmul(Mono a, Mono b)
{
  if (a.d && b.d)
    die("size (%" PRId64 "*T^%d%+" PRId64 ") * (%" PRId64 "*T^%d%+" PRId64 ") is not in the algebra",
        a.c, a.k, a.d, b.c, b.k, b.d);
  if (a.d && b.k)
    die("size (%" PRId64 "*T^%d%+" PRId64 ") * T^%d is not in the algebra", a.c, a.k, a.d, b.k);
  if (b.d && a.k)
    die("size T^%d * (%" PRId64 "*T^%d%+" PRId64 ") is not in the algebra", a.k, b.c, b.k, b.d);
  /* at most one factor is shifted, and then the other is a constant */
  return norm(a.c * b.c, a.k + b.k, a.d * b.c + b.d * a.c);
}

Mono madd(Mono a, Mono b)
{
  if (a.c && b.c && a.k && b.k && a.k != b.k)
    die("size %" PRId64 "*T^%d + %" PRId64 "*T^%d is not in the algebra", a.c, a.k, b.c, b.k);
  if (!a.k)
    return norm(b.c, b.k, b.d + a.c);
  if (!b.k)
    return norm(a.c, a.k, a.d + b.c);
  return norm(a.c + b.c, a.k, a.d + b.d);
}

Mono mdiv(Mono a, Mono b)
{
  int64_t q = b.c ? a.c / b.c : 0;
  bool ok = b.c && a.c % b.c == 0 && a.k >= b.k &&
            (b.d ? a.k == b.k && a.d == q * b.d : b.k == 0 ? a.d % b.c == 0 : a.d == 0);
  if (!ok)
    die("size %" PRId64 "*T^%d%+" PRId64 " is not a multiple of %" PRId64 "*T^%d%+" PRId64,
        a.c, a.k, a.d, b.c, b.k, b.d);
  if (b.d)
    return mono(q, 0);
  return norm(q, a.k - b.k, a.d / b.c);
}

bool meq(Mono a, Mono b)
{
  return a.c == b.c && a.k == b.k && a.d == b.d;
}

bool mone(Mono a)
{
  return a.c == 1 && a.k == 0;
}

Mono mdim(const Shape *s, int i)
{
  return (s->seq >> i & 1) ? norm(s->dim[i], 1, s->off[i]) : mono(s->dim[i], 0);
}

Mono mnumel(const Shape *s)
{
  Mono m = mono(1, 0);
  for (int i = 0; i < s->rank; i++)
    m = mmul(m, mdim(s, i));
  return m;
}

size_t mval(Mono m, int T)
{
  size_t v = (size_t)m.c;
  for (int i = 0; i < m.k; i++)
    v *= (size_t)T;
  return v + (size_t)m.d;
}

void contig(const Shape *s, Mono *st)
{
  Mono m = mono(1, 0);
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = m;
    m = mmul(m, mdim(s, i));
  }
}

/* Has s a shifted size in T (T - 1) as a dimension? */
static bool shifted(const Shape *s)
{
  for (int i = 0; i < s->rank; i++)
    if (s->off[i])
      return true;
  return false;
}

/* A shifted sequence dimension (T - 1 rows of h[1:]) stays in the size
 * algebra: it is its shape's one sequence dimension, at top
 * level, and only ops that walk elements read it (elementwise ops, slice,
 * pad, sum, broadcast); the others, written for sizes c * T^k, refuse it
 * at the graph line, before their shape is inferred. */
static bool walks(Op op)
{
  return op_is(op, P_ELEM) || op == OP_SLICE || op == OP_PAD || op == OP_SUM || op == OP_BROADCAST;
}

static _Noreturn void refuse(Graph *g, Op op, const Shape *s)
{
  ir_error(g, "%s: takes no tensor with a shifted sequence dimension, as %s; elementwise ops, slice, "
           "sum and broadcast do", op_info[op].name, shape_str(s));
}

void mono_check_inputs(Graph *g, Op op, int nin, const int *in)
{
  for (int k = 0; k < nin; k++)
    if (shifted(&g->node[in[k]].shape) && !walks(op))
      refuse(g, op, &g->node[in[k]].shape);
}

/* A leaf (an input) may have a shifted shape; any other op only if it
 * walks elements (a reshape to { seq() - 1, 6 } does not). */
void mono_check_node(Graph *g, Node *n)
{
  const Shape *s = &n->shape;
  if (!shifted(s))
    return;
  if (!walks(n->op) && !op_is(n->op, P_LEAF))
    refuse(g, n->op, s);
  if (n->loop)
    ir_error(g, "%s: a tensor with a shifted sequence dimension, as %s, cannot be made in a scan body",
             op_info[n->op].name, shape_str(s));
  if (__builtin_popcount(s->seq) > 1)
    ir_error(g, "%s: %s has a shifted sequence dimension and another one; a shape holding T - k holds "
             "no other T", op_info[n->op].name, shape_str(s));
}
