/*
 * attr.c: a node's attributes, by the attribute kind of its op (the A_
 * column of the op table): printed in the IR text format (print.c),
 * compared (cse, through same_attr), hashed (cse's table) and described
 * in the comment above a kernel of the emitted C (attr_comment).
 *
 * Attr is one struct for every op; the kind says which of its fields an
 * op reads, so the three agree on what matters: two nodes whose fields of
 * that kind are the same compute the same value from the same inputs.
 */
#include <stdint.h>
#include <string.h>
#include "lmc.h"

static const char *init_name(Init i)
{
  switch (i) {
  case INIT_ZERO: return "zeros";
  case INIT_ONE: return "ones";
  case INIT_UNIFORM: return "uniform";
  case INIT_XAVIER: return "xavier";
  case INIT_NORMAL: return "normal";
  }
  return "?";
}

static void print_literal(const Node *n, FILE *f)
{
  int64_t cnt = shape_numel(&n->shape, 1);
  fprintf(f, " [");
  for (int64_t i = 0; i < cnt && i < 4; i++)
    fprintf(f, "%s%a", i ? ", " : "", n->a.data[i]);
  fprintf(f, "%s] values=%lld", cnt > 4 ? ", ..." : "", (long long)cnt);
}

void attr_print(const Node *n, FILE *f)
{
  const Attr *a = &n->a;
  switch (op_info[n->op].attr) {
  case A_INPUT:
    fprintf(f, " \"%s\"%s", a->name, a->state ? " state" : "");
    break;
  case A_PARAM:
    fprintf(f, " \"%s\" %s", a->name, init_name(a->init));
    if (a->init == INIT_UNIFORM || a->init == INIT_NORMAL)
      fprintf(f, "(%.9g)", a->init_a);
    break;
  case A_CONST:
    fprintf(f, " %.17g", a->f);
    break;
  case A_ARANGE:
    fprintf(f, " n=%s start=%.17g step=%.17g", dim_str(&n->shape, 0), a->f, a->f2);
    break;
  case A_LITERAL:
    print_literal(n, f);
    break;
  case A_DROPOUT:
    fprintf(f, " p=%.9g stream=%d slot=%d", a->f, a->id, a->id2);
    break;
  case A_MATMUL:
    fprintf(f, "%s%s", a->ta ? " ta" : "", a->tb ? " tb" : "");
    break;
  case A_EPS:
    fprintf(f, " eps=%.9g", a->f);
    break;
  case A_SLICE:
    fprintf(f, " axis=%d start=%d len=", a->axis, a->start);
    if (a->len < 0)
      fprintf(f, "%s", dim_str(&(Shape){.rank = 1, .dim = {-a->len}, .seq = 1, .off = {a->len_off}}, 0));
    else
      fprintf(f, "%d", a->len);
    if (a->view)
      fprintf(f, " view");
    break;
  case A_PAD:
    fprintf(f, " axis=%d start=%d", a->axis, a->start);
    break;
  case A_AXIS:
    fprintf(f, " axis=%d", a->axis);
    break;
  case A_PERM:
    fprintf(f, " perm=");
    for (int i = 0; i < n->shape.rank; i++)
      fprintf(f, "%s%d", i ? "," : "", a->perm[i]);
    break;
  case A_ROWS:
    if (a->rows)
      fprintf(f, " rows");
    break;
  case A_NONE:
  case A_LAST_AXIS:
  case A_SHAPE:
    break;   /* nothing, or the node's own shape */
  }
}

/* The attributes as the comment above a kernel gives them (" a^T",
 * " stream 0, p = slot 1"), or "": malloc'ed. */
char *attr_comment(const Node *n)
{
  const Attr *a = &n->a;
  char d[C_DOUBLE_LEN];
  switch (op_info[n->op].attr) {
  case A_CONST:   return xasprintf(" value %s", c_double(a->f, d));
  case A_ARANGE:  return xasprintf(" start %g step %g", a->f, a->f2);
  case A_MATMUL:  return xasprintf("%s%s", a->ta ? " a^T" : "", a->tb ? " b^T" : "");
  case A_DROPOUT: return xasprintf(" stream %d, p = slot %d", a->id, a->id2);
  case A_EPS:     return xasprintf(" eps %g", a->f);
  case A_SLICE:   return xasprintf(" axis %d from %d", a->axis, a->start);
  case A_PAD:     return xasprintf(" axis %d at %d", a->axis, a->start);
  case A_AXIS:    return xasprintf(" axis %d", a->axis);
  case A_PERM: {
    char s[8 + MAXRANK * 12] = " perm";
    for (int i = 0; i < n->shape.rank; i++)
      snprintf(s + strlen(s), sizeof s - strlen(s), " %d", a->perm[i]);
    return xstrdup(s);
  }
  default:        return xstrdup("");
  }
}

static bool same_bits(double x, double y)
{
  return !memcmp(&x, &y, sizeof x);
}

/* The attributes each op reads; two nodes with the same op, inputs and
 * these compute the same value. */
bool same_attr(const Node *x, const Node *y)
{
  const Attr *a = &x->a, *b = &y->a;
  if (x->op != y->op || x->dtype != y->dtype || !shape_eq(&x->shape, &y->shape))
    return false;
  if (op_is(x->op, P_UNIQUE))
    return false;   /* each is its own value */
  switch (op_info[x->op].attr) {
  case A_CONST:
    return same_bits(a->f, b->f);
  case A_ARANGE:
    return same_bits(a->f, b->f) && same_bits(a->f2, b->f2);
  case A_LITERAL: {
    int64_t n = shape_numel(&x->shape, 1);
    return a->data == b->data || !memcmp(a->data, b->data, sizeof(double) * (size_t)n);
  }
  case A_DROPOUT:
    return a->id == b->id && a->id2 == b->id2 && a->f == b->f;
  case A_MATMUL:
    return a->ta == b->ta && a->tb == b->tb;
  case A_EPS:
    return a->f == b->f;
  case A_SLICE:
    return a->axis == b->axis && a->start == b->start && a->len == b->len && a->len_off == b->len_off &&
           a->view == b->view;
  case A_PAD:
    return a->axis == b->axis && a->start == b->start;
  case A_AXIS:
  case A_LAST_AXIS:
    return a->axis == b->axis;
  case A_PERM:
    return !memcmp(a->perm, b->perm, sizeof a->perm);
  case A_SHAPE:
  case A_ROWS:
    return shape_eq(&a->shape, &b->shape);
  case A_INPUT:
  case A_PARAM:
  case A_NONE:
    break;
  }
  return true;
}

/* A hash of the attributes same_attr compares exactly (bits and integers),
 * so that constants, or the slices of one state for every layer, do not
 * all share one key. */
uint64_t attr_hash(const Node *n)
{
  const Attr *a = &n->a;
  uint64_t h = 1469598103934665603ull, bits;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
  switch (op_info[n->op].attr) {
  case A_CONST:
  case A_ARANGE:
    memcpy(&bits, &a->f, sizeof bits);
    MIX(bits);
    memcpy(&bits, &a->f2, sizeof bits);
    MIX(op_info[n->op].attr == A_ARANGE ? bits : 0);
    break;
  case A_SLICE:
  case A_PAD:
    MIX(a->axis);
    MIX(a->start);
    break;
  case A_AXIS:
  case A_LAST_AXIS:
    MIX(a->axis);
    break;
  case A_DROPOUT:
    MIX(a->id);
    break;
  case A_MATMUL:
    MIX(a->ta * 2 + a->tb);
    break;
  default:
    break;
  }
#undef MIX
  return h;
}
