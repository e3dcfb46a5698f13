/*
 * fold.c: fold-constants, evaluating at compile time every subgraph whose
 * inputs are all constants.
 *
 * The Transformer's positional encoding is the case this is for: arange,
 * exp, mul, sin, cos, concat and reshape build a (5000, 1, d) table, of
 * which the model reads rows [0, T) through a slice of length T.  After
 * this pass the table is one `literal` node holding only the rows a slice
 * can reach (max_seq of them), the emitter writes it as a static array of
 * hexadecimal float literals, and the slice becomes a pointer into it.
 *
 * Values are computed with the arithmetic the emitted kernel would use at
 * run time: float32 operations and the float libm calls (expf, sinf) for
 * an f32 program, double and exp/sin for an f64 one, arange in double
 * rounded once, so a folded table equals bit for bit the one the unfolded
 * program computes.  Matrix products are not folded (the BLAS's summation
 * order is not ours to copy).  Folding refuses what would change meaning:
 * a division by zero, or any result that is not finite (NaN, infinity);
 * such a node and everything after it is left to run time.  A negative
 * zero is kept (the hexadecimal literal keeps its sign).
 *
 * Only the frontier of a constant subgraph is written out: constant nodes
 * with a run-time user, or that are outputs.  A constant leaf (const,
 * arange) on the frontier stays as it is, since it costs nothing to
 * compute; a frontier bigger than FOLD_MAX_TABLE elements is not folded
 * either, and its inputs become the frontier instead.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lmc.h"
#include "lmc_math.h"

enum { FOLD_MAX_EVAL = 1 << 23 };   /* elements of an intermediate value */

typedef struct {
  Graph *g;
  double **val;           /* per node: its values, row-major; NULL if not constant */
} Fold;

static int64_t numel(const Node *n)
{
  return shape_numel(&n->shape, 1);
}

/* Row-major strides of shape s. */
static void strides(const Shape *s, int64_t *st)
{
  int64_t m = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = m;
    m *= s->dim[i];
  }
}

/* The index into x (broadcast right-aligned to shape y) of y's element at
 * multi-index idx. */
static int64_t bcast_index(const Shape *y, const Shape *x, const int *idx)
{
  int64_t st[MAXRANK], off = 0;
  strides(x, st);
  for (int i = 0; i < x->rank; i++) {
    int yi = i + y->rank - x->rank;
    if (x->dim[i] != 1)
      off += st[i] * idx[yi];
  }
  return off;
}

static void unravel(const Shape *s, int64_t flat, int *idx)
{
  for (int i = s->rank - 1; i >= 0; i--) {
    idx[i] = (int)(flat % s->dim[i]);
    flat /= s->dim[i];
  }
}

/* ------------------------------------------------ elementwise expressions */

/* An elementwise op is folded by running the C text the emitter writes for
 * it (op_c_expr, from its row of the op table) with C's own rules: int,
 * float and double values, the usual arithmetic conversions, a literal
 * with an f suffix a float, the libm and lmc_math.h functions the text
 * calls.  So expf against exp, lmc_tanhf against tanh and the order of
 * every operation are those of the emitted kernel, and the folded value
 * is the one the kernel computes.  The text is compiled once per node into
 * postfix code over the operands x0 and x1.  The C it understands: numbers,
 * x0, x1, calls of the functions below (one argument, or two for pow), unary -, * /, + -, < > <= >= ==
 * !=, ?: and parentheses; an op whose text is more is a compiler bug. */

typedef enum { T_INT, T_FLOAT, T_DOUBLE } CType;

typedef struct {
  double v;               /* an int or a float held exactly */
  CType t;
} Val;

typedef struct {
  const char *name;
  float (*f)(float);      /* one of the four */
  double (*d)(double);
  float (*f2)(float, float);
  double (*d2)(double, double);
} MathFn;

static const MathFn math_fns[] = {
  {"expf", .f = expf},   {"exp", .d = exp},     {"logf", .f = logf},   {"log", .d = log},
  {"sqrtf", .f = sqrtf}, {"sqrt", .d = sqrt},   {"sinf", .f = sinf},   {"sin", .d = sin},
  {"cosf", .f = cosf},   {"cos", .d = cos},     {"tanhf", .f = tanhf}, {"tanh", .d = tanh},
  {"erff", .f = erff},   {"erf", .d = erf},     {"lmc_expf", .f = lmc_expf},
  {"lmc_tanhf", .f = lmc_tanhf}, {"powf", .f2 = powf}, {"pow", .d2 = pow},
};

enum { C_ARG, C_NUM, C_CALL, C_NEG, C_SEL, C_MUL, C_DIV, C_ADD, C_SUB, C_LT, C_GT, C_LE, C_GE, C_EQ, C_NE };

typedef struct {
  int op;
  Val num;                /* C_NUM */
  int arg;                /* C_ARG: operand */
  const MathFn *fn;       /* C_CALL */
} Ins;

enum { EXPR_MAX = 256, EXPR_DEPTH = 32 };

typedef struct {
  char *text;             /* the whole text (malloc'ed) */
  const char *p;          /* where parsing is */
  Op op;
  Ins code[EXPR_MAX];
  int n;
  int depth;              /* of the value stack, at this point of the code */
  int max_depth;
} Expr;

static _Noreturn void expr_fail(Expr *x)
{
  die("fold-constants: %s: cannot evaluate \"%s\" at \"%s\"", op_info[x->op].name, x->text, x->p);
}

static void emit(Expr *x, Ins in, int push)
{
  if (x->n == EXPR_MAX)
    expr_fail(x);
  x->code[x->n++] = in;
  x->depth += push;
  x->max_depth = x->depth > x->max_depth ? x->depth : x->max_depth;
  if (x->max_depth > EXPR_DEPTH)
    expr_fail(x);
}

static bool eat(Expr *x, const char *tok)
{
  while (*x->p == ' ')
    x->p++;
  size_t n = strlen(tok);
  if (strncmp(x->p, tok, n))
    return false;
  x->p += n;
  return true;
}

static void parse_cond(Expr *x);

static void parse_primary(Expr *x)
{
  while (*x->p == ' ')
    x->p++;
  const char *s = x->p;
  if (eat(x, "(")) {
    parse_cond(x);
    if (!eat(x, ")"))
      expr_fail(x);
  } else if ((*s >= '0' && *s <= '9') || *s == '.') {
    char *end;
    Val v = {strtod(s, &end), T_INT};
    for (const char *c = s; c < end; c++)
      v.t = *c == '.' || *c == 'e' || *c == 'E' ? T_DOUBLE : v.t;
    if (*end == 'f') {
      v = (Val){strtof(s, &end), T_FLOAT};
      end++;
    }
    x->p = end;
    emit(x, (Ins){.op = C_NUM, .num = v}, 1);
  } else {
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz_0123456789");
    x->p += n;
    if (n == 2 && s[0] == 'x' && (s[1] == '0' || s[1] == '1')) {
      emit(x, (Ins){.op = C_ARG, .arg = s[1] - '0'}, 1);
      return;
    }
    const MathFn *fn = NULL;
    for (size_t i = 0; i < sizeof math_fns / sizeof *math_fns; i++)
      if (strlen(math_fns[i].name) == n && !strncmp(math_fns[i].name, s, n))
        fn = &math_fns[i];
    if (!fn || !eat(x, "("))
      expr_fail(x);
    parse_cond(x);
    bool two = fn->f2 || fn->d2;
    if (two && !eat(x, ","))
      expr_fail(x);
    if (two)
      parse_cond(x);
    if (!eat(x, ")"))
      expr_fail(x);
    emit(x, (Ins){.op = C_CALL, .fn = fn}, two ? -1 : 0);
  }
}

static void parse_unary(Expr *x)
{
  if (eat(x, "-")) {
    parse_unary(x);
    emit(x, (Ins){.op = C_NEG}, 0);
  } else {
    parse_primary(x);
  }
}

/* Binary operators by precedence, each level a list of (token, op); a
 * two-character token before its one-character prefix. */
static const struct { const char *tok; int op; } levels[][4] = {
  {{"*", C_MUL}, {"/", C_DIV}},
  {{"+", C_ADD}, {"-", C_SUB}},
  {{"<=", C_LE}, {">=", C_GE}, {"<", C_LT}, {">", C_GT}},
  {{"==", C_EQ}, {"!=", C_NE}},
};

static void parse_binary(Expr *x, int level)
{
  if (level < 0) {
    parse_unary(x);
    return;
  }
  parse_binary(x, level - 1);
  for (;;) {
    int op = -1;
    for (int i = 0; i < 4 && levels[level][i].tok && op < 0; i++)
      if (eat(x, levels[level][i].tok))
        op = levels[level][i].op;
    if (op < 0)
      return;
    parse_binary(x, level - 1);
    emit(x, (Ins){.op = op}, -1);
  }
}

static void parse_cond(Expr *x)
{
  parse_binary(x, 3);
  if (!eat(x, "?"))
    return;
  parse_cond(x);
  if (!eat(x, ":"))
    expr_fail(x);
  parse_cond(x);
  emit(x, (Ins){.op = C_SEL}, -2);
}

static void expr_compile(Expr *x, Op op, DType real)
{
  char *text = op_c_expr(op, real, (const char *const[]){"x0", "x1"}, NULL, NULL);
  *x = (Expr){.text = text, .p = text, .op = op};
  parse_cond(x);
  while (*x->p == ' ')
    x->p++;
  if (*x->p)
    expr_fail(x);
}

static Val convert(Val v, CType t)
{
  if (t == T_FLOAT)
    return (Val){(float)v.v, T_FLOAT};
  return (Val){v.v, t};
}

/* a op b, for the binary operators, in their common type; false for an
 * integer division by zero. */
static bool binary(int op, Val a, Val b, Val *r)
{
  CType t = a.t > b.t ? a.t : b.t;
  double x = convert(a, t).v, y = convert(b, t).v, z = 0;
  float xf = (float)x, yf = (float)y;
  bool f = t == T_FLOAT;
  switch (op) {
  case C_MUL: z = f ? (double)(xf * yf) : x * y; break;
  case C_DIV:
    if (t == T_INT && y == 0)
      return false;
    z = f ? (double)(xf / yf) : t == T_INT ? (double)((int64_t)x / (int64_t)y) : x / y;
    break;
  case C_ADD: z = f ? (double)(xf + yf) : x + y; break;
  case C_SUB: z = f ? (double)(xf - yf) : x - y; break;
  case C_LT: *r = (Val){x < y, T_INT}; return true;
  case C_GT: *r = (Val){x > y, T_INT}; return true;
  case C_LE: *r = (Val){x <= y, T_INT}; return true;
  case C_GE: *r = (Val){x >= y, T_INT}; return true;
  case C_EQ: *r = (Val){x == y, T_INT}; return true;
  case C_NE: *r = (Val){x != y, T_INT}; return true;
  }
  *r = (Val){z, t};
  return true;
}

/* The value of the compiled text at operands u and v, stored as `real`;
 * false when it is not finite or the text divides an int by zero. */
static bool expr_eval(const Expr *x, DType real, double u, double v, double *r)
{
  CType rt = real == DT_F32 ? T_FLOAT : T_DOUBLE;
  Val st[EXPR_DEPTH + 1], arg[2] = {convert((Val){u, rt}, rt), convert((Val){v, rt}, rt)};
  int sp = 0;
  for (int i = 0; i < x->n; i++) {
    const Ins *in = &x->code[i];
    switch (in->op) {
    case C_ARG: st[sp++] = arg[in->arg]; break;
    case C_NUM: st[sp++] = in->num; break;
    case C_NEG: st[sp - 1].v = -st[sp - 1].v; break;
    case C_CALL: {
      const MathFn *fn = in->fn;
      if (fn->f2 || fn->d2) {
        Val a = st[sp - 2], b = st[sp - 1];
        st[sp - 2] = fn->f2 ? (Val){fn->f2((float)a.v, (float)b.v), T_FLOAT}
                            : (Val){fn->d2(convert(a, T_DOUBLE).v, convert(b, T_DOUBLE).v), T_DOUBLE};
        sp--;
        break;
      }
      Val *top = &st[sp - 1];
      *top = fn->f ? (Val){fn->f((float)top->v), T_FLOAT} : (Val){fn->d(convert(*top, T_DOUBLE).v), T_DOUBLE};
      break;
    }
    case C_SEL: {
      Val c = st[sp - 3], a = st[sp - 2], b = st[sp - 1];
      CType t = a.t > b.t ? a.t : b.t;
      st[sp - 3] = convert(c.v != 0 ? a : b, t);
      sp -= 2;
      break;
    }
    default:
      if (!binary(in->op, st[sp - 2], st[sp - 1], &st[sp - 2]))
        return false;
      sp--;
    }
  }
  *r = convert(st[0], rt).v;
  return isfinite(*r);
}

/* A value as the node's dtype stores it. */
static double store(const Node *n, double v)
{
  return n->dtype == DT_F32 ? (double)(float)v : v;
}

/* Evaluates node i from its constant inputs; NULL when it is not foldable
 * or folding it would change its meaning. */
static double *eval(Fold *F, int i)
{
  Graph *g = F->g;
  Node *n = &g->node[i];
  int64_t cnt = numel(n);
  if (n->dead || n->loop || n->shape.seq || !op_is(n->op, P_FOLD) || n->dtype == DT_I32 || cnt > FOLD_MAX_EVAL)
    return NULL;
  for (int k = 0; k < n->nin; k++)
    if (!F->val[n->in[k]])
      return NULL;
  double *y = xcalloc((size_t)cnt + 1, sizeof(double));
  const double *x0 = n->nin > 0 ? F->val[n->in[0]] : NULL;
  const double *x1 = n->nin > 1 ? F->val[n->in[1]] : NULL;
  int idx[MAXRANK];
  switch (n->op) {
  case OP_CONST:
    y[0] = store(n, n->a.f);
    break;
  case OP_ARANGE:
    for (int64_t j = 0; j < cnt; j++)
      y[j] = store(n, n->a.f + (double)j * n->a.f2);   /* (real)(start + i * step), as k_fill */
    break;
  case OP_LITERAL:
    memcpy(y, n->a.data, sizeof(double) * (size_t)cnt);
    break;
  case OP_RESHAPE:
    memcpy(y, x0, sizeof(double) * (size_t)cnt);
    break;
  case OP_TRANSPOSE: {
    Node *x = &g->node[n->in[0]];
    int64_t xs[MAXRANK];
    strides(&x->shape, xs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += xs[n->a.perm[d]] * idx[d];
      y[j] = x0[off];
    }
    break;
  }
  case OP_SLICE: {
    Node *x = &g->node[n->in[0]];
    int64_t xs[MAXRANK];
    strides(&x->shape, xs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      idx[n->a.axis] += n->a.start;
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += xs[d] * idx[d];
      y[j] = x0[off];
    }
    break;
  }
  case OP_CONCAT: {
    Node *a = &g->node[n->in[0]], *b = &g->node[n->in[1]];
    int ax = n->a.axis, na = a->shape.dim[ax];
    int64_t as[MAXRANK], bs[MAXRANK];
    strides(&a->shape, as);
    strides(&b->shape, bs);
    for (int64_t j = 0; j < cnt; j++) {
      unravel(&n->shape, j, idx);
      bool first = idx[ax] < na;
      if (!first)
        idx[ax] -= na;
      int64_t off = 0;
      for (int d = 0; d < n->shape.rank; d++)
        off += (first ? as[d] : bs[d]) * idx[d];
      y[j] = first ? x0[off] : x1[off];
    }
    break;
  }
  default: {
    if (!op_is(n->op, P_ELEM))
      goto refuse;
    Node *a = &g->node[n->in[0]], *b = n->nin > 1 ? &g->node[n->in[1]] : NULL;
    Expr ex;
    expr_compile(&ex, n->op, n->dtype);
    bool ok = true;
    for (int64_t j = 0; j < cnt && ok; j++) {
      unravel(&n->shape, j, idx);
      double u = x0[bcast_index(&n->shape, &a->shape, idx)];
      double v = b ? x1[bcast_index(&n->shape, &b->shape, idx)] : 0;
      ok = expr_eval(&ex, n->dtype, u, v, &y[j]);
    }
    free(ex.text);
    if (!ok)
      goto refuse;
    break;
  }
  }
  return y;
refuse:
  free(y);
  return NULL;
}

static bool is_leaf_const(const Node *n)
{
  return n->op == OP_CONST || n->op == OP_ARANGE || n->op == OP_LITERAL;
}

/* Rows [lo, hi) of a frontier table that its users can read: when every
 * run-time user slices along axis 0, only the union of their ranges. */
static void used_rows(Fold *F, Users *u, int i, int *lo, int *hi)
{
  Graph *g = F->g;
  Node *n = &g->node[i];
  *lo = 0;
  *hi = n->shape.rank ? n->shape.dim[0] : 1;
  if (!n->shape.rank || u->out[i])
    return;
  int l = *hi, h = 0;
  for (int k = 0; k < u->n[i]; k++) {
    Node *s = &g->node[u->u[i][k]];
    if (F->val[u->u[i][k]])
      continue;   /* folded too */
    if (s->op != OP_SLICE || s->a.axis != 0)
      return;
    int len = s->a.len < 0 ? -s->a.len * g->max_seq + s->a.len_off : s->a.len;
    l = s->a.start < l ? s->a.start : l;
    h = s->a.start + len > h ? s->a.start + len : h;
  }
  if (h > l) {
    *lo = l;
    *hi = h;
  }
}

void fold_constants(Graph *g)
{
  Fold F = {g, xcalloc((size_t)g->nnode + 1, sizeof(double *))};
  for (int i = 0; i < g->nnode; i++)
    F.val[i] = eval(&F, i);
  Users u = users_make(g);
  bool *frontier = xcalloc((size_t)g->nnode + 1, sizeof(bool));

  /* The frontier: constants read at run time.  One too big to write out
   * is not folded, which makes its inputs the frontier; repeat until
   * every frontier table fits. */
  for (bool again = true; again;) {
    again = false;
    for (int i = 0; i < g->nnode; i++) {
      frontier[i] = false;
      if (!F.val[i])
        continue;
      bool runtime_user = u.out[i];
      for (int k = 0; k < u.n[i] && !runtime_user; k++)
        runtime_user = !F.val[u.u[i][k]];
      frontier[i] = runtime_user;
    }
    for (int i = 0; i < g->nnode; i++) {
      if (!frontier[i] || is_leaf_const(&g->node[i]))
        continue;
      int lo, hi;
      used_rows(&F, &u, i, &lo, &hi);
      int64_t row = g->node[i].shape.rank ? numel(&g->node[i]) / g->node[i].shape.dim[0] : 1;
      if ((int64_t)(hi - lo) * row > FOLD_MAX_TABLE) {
        free(F.val[i]);
        F.val[i] = NULL;
        again = true;
      }
    }
  }

  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (!F.val[i] || is_leaf_const(n))
      continue;
    if (!frontier[i]) {
      kill_node(g, &u, i);   /* read only by other constants */
      continue;
    }
    int lo, hi;
    used_rows(&F, &u, i, &lo, &hi);
    int64_t row = n->shape.rank ? numel(n) / n->shape.dim[0] : 1;
    double *data = arena_calloc((size_t)((hi - lo) * row) + 1, sizeof(double));
    memcpy(data, F.val[i] + lo * row, sizeof(double) * (size_t)((hi - lo) * row));
    n->op = OP_LITERAL;
    n->nin = 0;
    for (int k = 0; k < MAXIN; k++)
      n->in[k] = -1;
    Shape s = n->shape;
    if (s.rank)
      s.dim[0] = hi - lo;
    n->a = (Attr){.shape = s, .data = data};
    n->shape = s;
    /* its slices now start at lo; at top level they read the table in place */
    for (int k = 0; k < u.n[i]; k++) {
      Node *sl = &g->node[u.u[i][k]];
      if (F.val[u.u[i][k]] || sl->op != OP_SLICE || !n->shape.rank)
        continue;
      if (sl->a.axis == 0)
        sl->a.start -= lo;
      if (sl->a.axis == 0 && !sl->loop)
        sl->a.view = true;
    }
  }
  /* constant leaves that only constants read are gone with them */
  for (int i = 0; i < g->nnode; i++)
    if (F.val[i] && is_leaf_const(&g->node[i]) && !frontier[i] && !g->node[i].dead)
      kill_node(g, &u, i);
  for (int i = 0; i < g->nnode; i++)
    free(F.val[i]);
  free(F.val);
  free(frontier);
  users_free(&u);
}
