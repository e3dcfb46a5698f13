/*
 * size.c: the size algebra.  Every size and stride of a shape is a
 * monomial c * T^k in the run-time sequence length T (Mono), so the
 * emitter computes with those, never with strings, and writes one as C
 * only where the text needs it (mstr).
 */
#include <inttypes.h>
#include <limits.h>

#include "emit.h"

Mono mono(int64_t c, int k)
{
  return (Mono){c, c ? k : 0};
}

Mono mmul(Mono a, Mono b)
{
  return mono(a.c * b.c, a.k + b.k);
}

Mono mdiv(Mono a, Mono b)
{
  if (!b.c || a.c % b.c || a.k < b.k)
    die("size %" PRId64 "*T^%d is not a multiple of %" PRId64 "*T^%d", a.c, a.k, b.c, b.k);
  return mono(a.c / b.c, a.k - b.k);
}

bool meq(Mono a, Mono b)
{
  return a.c == b.c && a.k == b.k;
}

bool mone(Mono a)
{
  return a.c == 1 && a.k == 0;
}

Mono mdim(const Shape *s, int i)
{
  return mono(s->dim[i], (int)((s->seq >> i) & 1));
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
  return v;
}

void contig(const Shape *s, Mono *st)
{
  Mono m = mono(1, 0);
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = m;
    m = mmul(m, mdim(s, i));
  }
}

/* A size as a C expression: 200, T, 20*T, 4*T*T. */
Str mstr(Text *k, Mono m)
{
  Str s = {""};
  if (m.k > MAXRANK)
    die("size with T^%d", m.k);
  /* T and t are ints: a size past INT_MAX at T = max_seq (below the size
   * limit, so it fits a long) is a long from its first factor on */
  const char *l = mval(m, k->p->g->max_seq) > INT_MAX ? "L" : "";
  if (m.k == 0) {
    sprint(&s, "%" PRId64 "%s", m.c, l);
    return s;
  }
  k->uses_T = true;
  if (m.c == 1 && !*l)
    sprint(&s, "T");
  else
    sprint(&s, "%" PRId64 "%s*T", m.c, l);
  for (int i = 1; i < m.k; i++)
    sprint(&s, "*T");
  return s;
}
