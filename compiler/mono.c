/*
 * mono.c: the size algebra.  Every size and stride of a shape is a
 * monomial c * T^k in the run-time sequence length T (Mono), so the
 * memory plan and the emitter compute with those, never with strings.
 */
#include <inttypes.h>
#include "lmc.h"

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
