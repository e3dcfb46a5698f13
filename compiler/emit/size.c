/*
 * size.c: a size of the size algebra (Mono, mono.c) written as C, only
 * where the text needs it (mstr).
 */
#include <inttypes.h>
#include <limits.h>

#include "emit.h"

/* A size as a C expression: 200, T, 20*T, 4*T*T, (20*T - 20). */
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
  if (m.d)
    sprint(&s, "(");
  if (m.c == 1 && !*l)
    sprint(&s, "T");
  else
    sprint(&s, "%" PRId64 "%s*T", m.c, l);
  for (int i = 1; i < m.k; i++)
    sprint(&s, "*T");
  if (m.d)
    sprint(&s, " %c %" PRId64 ")", m.d < 0 ? '-' : '+', m.d < 0 ? -m.d : m.d);
  return s;
}
