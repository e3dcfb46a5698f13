/*
 * memory.c: a program's values as C pointers.  Where each value lives is
 * decided before emission (plan.c, place.c: g->plan->loc); ptr writes a
 * Loc as a C pointer expression and same_loc compares two.
 */
#include "emit.h"

bool same_loc(const Loc *a, const Loc *b)
{
  return a->kind == b->kind && a->off == b->off && a->last == b->last && !a->stacked && !b->stacked;
}

/* A pointer to node id's value as a C expression; tsel is the step
 * ("t", "(t - 1)") for stacked values read inside a loop, else NULL. */
Str ptr(Text *k, int id, const char *tsel)
{
  Loc *l = &k->p->loc[id];
  DType dt = N(k->p, id)->dtype;
  Str s = {""};
  switch (l->kind) {
  case L_WORK:
    k->uses_w = true;
    if (dt == DT_I32)
      sprint(&s, "(int32_t *)(w + %zu)", l->off);
    else if (l->off)
      sprint(&s, "w + %zu", l->off);
    else
      sprint(&s, "w");
    break;
  case L_PARAM:
    k->uses_c = true;
    sprint(&s, "c->param + %zu", l->off);
    break;
  case L_GRAD:
    k->uses_c = true;
    sprint(&s, "c->grad + %zu", l->off);
    break;
  case L_STATE:
    k->uses_c = true;
    sprint(&s, "c->state + %zu", l->off);
    break;
  case L_TOKENS:
    k->uses_tokens = true;
    sprint(&s, "tokens");
    break;
  case L_TARGETS:
    sprint(&s, "targets");
    break;
  case L_CONST:
    if (l->off)
      sprint(&s, "lmc_const%d + %zu", l->table, l->off);
    else
      sprint(&s, "lmc_const%d", l->table);
    break;
  default:
    die("n%d has no storage", id);
  }
  if (l->last) {
    k->uses_T = true;
    sprint(&s, " + (T - 1) * %s", mstr(k, l->step).s);
  }
  if (l->stacked && tsel)
    sprint(&s, " + %s * %s", tsel, mstr(k, l->step).s);
  return s;
}
