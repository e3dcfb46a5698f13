/*
 * ir.c: building the IR, with shape and dtype inference.
 *
 * Every node is made by ir_op(), which appends it to the graph, stamps it
 * with the Lua location being built (g->cur_file:cur_line), the scope
 * (g->cur_scope) and the loop being built (g->cur_loop), then infers its dtype and shape from its
 * inputs.  A mismatch is the graph file's mistake and is reported with
 * ir_error() at that location: "graphs/x.lua:14: error: matmul: inner
 * dimensions differ (200 vs 650)".  Passes and autodiff build nodes through
 * the same function, so their nodes are checked the same way.
 *
 * Sizes are checked as they are made (check_size): every dimension fits
 * an int, and every node's buffer, and all parameters together, fit in
 * LMC_MAX_BYTES, so no later element count or offset can wrap; a graph
 * over LMC_MAX_NODES nodes stops at the line making the next one.  Every
 * product or sum of dimensions here is checked (__builtin_*_overflow).
 *
 * A graph lives in the compilation arena (util.c) with its node, loop and
 * output arrays; the strings its nodes and outputs point to must live there
 * too (arena_strdup).  arena_free_all() frees every graph at once.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

/* ---------------------------------------------------------------- shapes */

Shape shape_make(int rank, const int *dim, unsigned seq)
{
  Shape s = {0};
  if (rank < 0 || rank > MAXRANK)
    die("rank %d", rank);
  s.rank = rank;
  for (int i = 0; i < rank; i++)
    s.dim[i] = dim[i];
  s.seq = seq;
  return s;
}

bool shape_eq(const Shape *a, const Shape *b)
{
  if (a->rank != b->rank || a->seq != b->seq)
    return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i] || a->off[i] != b->off[i])
      return false;
  return true;
}

int64_t shape_numel(const Shape *s, int T)
{
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++)
    n *= s->seq >> i & 1 ? (int64_t)s->dim[i] * T + s->off[i] : s->dim[i];
  return n;
}

int shape_seqpow(const Shape *s)
{
  return __builtin_popcount(s->seq);
}

static bool dim_eq(const Shape *a, int i, const Shape *b, int j)
{
  return a->dim[i] == b->dim[j] && (a->seq >> i & 1) == (b->seq >> j & 1) && a->off[i] == b->off[j];
}

static bool dim_is_one(const Shape *s, int i)
{
  return s->dim[i] == 1 && !(s->seq >> i & 1);
}

const char *dim_str(const Shape *s, int i)
{
  static char ring[16][32];
  static int k;
  char *buf = ring[k++ % 16];
  if (!(s->seq >> i & 1))
    snprintf(buf, 32, "%d", s->dim[i]);
  else if (s->dim[i] == 1)
    snprintf(buf, 32, "T");
  else
    snprintf(buf, 32, "%d*T", s->dim[i]);
  if (s->off[i])
    snprintf(buf + strlen(buf), 32 - strlen(buf), "%+d", s->off[i]);
  return buf;
}

const char *shape_str(const Shape *s)
{
  static char ring[8][160];
  static int k;
  char *buf = ring[k++ % 8];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, 160 - n, "(");
  for (int i = 0; i < s->rank; i++)
    n += (size_t)snprintf(buf + n, 160 - n, "%s%s", i ? ", " : "", dim_str(s, i));
  snprintf(buf + n, 160 - n, ")");
  return buf;
}

/* Dimension i of s becomes dimension xi of x. */
static void copy_dim(Shape *s, int i, const Shape *x, int xi)
{
  s->dim[i] = x->dim[xi];
  s->seq = (s->seq & ~(1u << i)) | (x->seq >> xi & 1) << i;
  s->off[i] = x->off[xi];
}

/* Right-aligned numpy broadcasting of a and b into *out; false if they do
 * not broadcast. */
static bool broadcast_shapes(const Shape *a, const Shape *b, Shape *out)
{
  int r = a->rank > b->rank ? a->rank : b->rank;
  Shape s = {.rank = r};
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    if (ia < 0)
      copy_dim(&s, i, b, ib);
    else if (ib < 0 || dim_eq(a, ia, b, ib) || dim_is_one(b, ib))
      copy_dim(&s, i, a, ia);
    else if (dim_is_one(a, ia))
      copy_dim(&s, i, b, ib);
    else
      return false;
  }
  *out = s;
  return true;
}

/* Does `from` broadcast to exactly `to`? */
static bool broadcasts_to(const Shape *from, const Shape *to)
{
  Shape s;
  return from->rank <= to->rank && broadcast_shapes(from, to, &s) && shape_eq(&s, to);
}

/* Do a and b have as many rows: the same product of the leading dims (all
 * but the last), T factors counted?  The products are below the size
 * limit, as a and b are. */
static bool same_leading(const Shape *a, const Shape *b)
{
  int64_t na = 1, nb = 1;
  for (int i = 0; i + 1 < a->rank; i++)
    na *= a->dim[i];
  for (int i = 0; i + 1 < b->rank; i++)
    nb *= b->dim[i];
  return na == nb && __builtin_popcount(a->seq & ((1u << (a->rank - 1)) - 1)) ==
                     __builtin_popcount(b->seq & ((1u << (b->rank - 1)) - 1));
}

/* ------------------------------------------------------------------ graph */

Graph *ir_new(int max_seq, int batch, DType real)
{
  Graph *g = arena_calloc(1, sizeof *g);
  g->max_seq = max_seq;
  g->batch = batch;
  g->real = real;
  g->nloop = 1;   /* loop 0 is the top level */
  g->caploop = 4;
  g->loop = arena_calloc((size_t)g->caploop, sizeof *g->loop);
  g->kind = "";
  g->cur_file = "<graph>";
  g->cur_scope = "";
  return g;
}

Node *ir_get(Graph *g, int id)
{
  if (id < 0 || id >= g->nnode)
    die("node %d out of range (%d nodes)", id, g->nnode);
  return &g->node[id];
}

static void verror_at(const char *file, int line, const char *fmt, va_list ap)
{
  fflush(stdout);
  if (line > 0)
    fprintf(stderr, "%s:%d: error: ", file, line);
  else
    fprintf(stderr, "%s: error: ", file);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

_Noreturn void ir_error(Graph *g, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  verror_at(g->cur_file, g->cur_line, fmt, ap);
  va_end(ap);
  user_error_exit();
}

_Noreturn void ir_error_node(Graph *g, int node, const char *fmt, ...)
{
  Node *n = ir_get(g, node);
  va_list ap;
  va_start(ap, fmt);
  verror_at(n->file ? n->file : g->cur_file, n->line, fmt, ap);
  va_end(ap);
  user_error_exit();
}

static const char *dtype_name(DType t)
{
  return t == DT_F32 ? "f32" : t == DT_F64 ? "f64" : "i32";
}

/* ------------------------------------------------------- shape inference */

static void need_real(Graph *g, Node *n, int k)
{
  Node *x = &g->node[n->in[k]];
  if (x->dtype == DT_I32)
    ir_error(g, "%s: input %d is an integer tensor %s; expected floats",
             op_info[n->op].name, k + 1, shape_str(&x->shape));
}

static void need_int(Graph *g, Node *n, int k, const char *what)
{
  Node *x = &g->node[n->in[k]];
  if (x->dtype != DT_I32)
    ir_error(g, "%s: %s must be an i32 tensor, got %s", op_info[n->op].name, what,
             dtype_name(x->dtype));
}

/* Dimension i of s at sequence length T. */
static int64_t dim_at(const Shape *s, int i, int T)
{
  return s->seq >> i & 1 ? (int64_t)s->dim[i] * T + s->off[i] : s->dim[i];
}

/* Dimension i of s at T = max_seq; below the size limit, as s is. */
static int64_t dim_at_max(const Graph *g, const Shape *s, int i)
{
  return dim_at(s, i, g->max_seq);
}

/* A product's matrices go to the BLAS, whose sizes are ints: s as a
 * matrix (its leading dims flattened into rows) must have at most INT_MAX
 * rows. */
static void check_rows(Graph *g, const char *op, const Shape *s)
{
  int64_t rows = 1;
  for (int i = 0; i + 1 < s->rank; i++)
    rows *= dim_at_max(g, s, i);
  if (rows > INT_MAX)
    ir_error(g, "%s: %s is %lld rows as a matrix at T = %d; a product takes at most %d", op, shape_str(s),
             (long long)rows, g->max_seq, INT_MAX);
}

static void infer_matmul(Graph *g, Node *n, const Shape *a, const Shape *b)
{
  const char *op = op_info[n->op].name;
  if (a->rank < 1 || b->rank < 1)
    ir_error(g, "%s: operands must have at least one dimension", op);
  if (n->a.ta) {
    /* a (..., K) flattened to (M, K), transposed; b (..., N) flattened to (M, N) */
    if (n->a.tb)
      ir_error(g, "%s: transposing both operands is not supported", op);
    if (a->rank < 2 || b->rank < 2 || !same_leading(a, b))
      ir_error(g, "%s: leading dimensions differ: %s and %s", op, shape_str(a), shape_str(b));
    if ((a->seq >> (a->rank - 1) & 1) || (b->seq >> (b->rank - 1) & 1))
      ir_error(g, "%s: the last dimension cannot be the sequence", op);
    check_rows(g, op, a);
    n->shape = shape_make(2, (int[]){a->dim[a->rank - 1], b->dim[b->rank - 1]}, 0);
    return;
  }
  if (b->rank != 2 || b->seq)
    ir_error(g, "%s: right operand must be a static matrix, got %s", op, shape_str(b));
  int k = b->dim[n->a.tb ? 1 : 0], nn = b->dim[n->a.tb ? 0 : 1];
  int ka = a->dim[a->rank - 1];
  if (a->seq >> (a->rank - 1) & 1)
    ir_error(g, "%s: inner dimension of the left operand is the sequence", op);
  if (ka != k)
    ir_error(g, "%s: inner dimensions differ (%d vs %d)", op, ka, k);
  check_rows(g, op, a);
  n->shape = *a;
  n->shape.dim[a->rank - 1] = nn;
}

static void infer_bmm(Graph *g, Node *n, const Shape *a, const Shape *b)
{
  if (a->rank < 2 || a->rank != b->rank)
    ir_error(g, "bmm: operands must have the same rank >= 2, got %s and %s", shape_str(a), shape_str(b));
  int r = a->rank;
  for (int i = 0; i < r - 2; i++)
    if (!dim_eq(a, i, b, i))
      ir_error(g, "bmm: batch dimensions differ: %s and %s", shape_str(a), shape_str(b));
  int am = n->a.ta ? r - 1 : r - 2, ak = n->a.ta ? r - 2 : r - 1;
  int bk = n->a.tb ? r - 1 : r - 2, bn = n->a.tb ? r - 2 : r - 1;
  if (!dim_eq(a, ak, b, bk))
    ir_error(g, "bmm: inner dimensions differ (%s vs %s)", dim_str(a, ak), dim_str(b, bk));
  for (int i = r - 2; i < r; i++)   /* each matrix goes to the BLAS: int sizes */
    if (dim_at_max(g, a, i) > INT_MAX || dim_at_max(g, b, i) > INT_MAX)
      ir_error(g, "bmm: a matrix of %s or %s has a side over %d at T = %d", shape_str(a), shape_str(b), INT_MAX,
               g->max_seq);
  Shape s = *a;
  s.seq &= (1u << (r - 2)) - 1;
  s.dim[r - 2] = a->dim[am];
  s.seq |= (a->seq >> am & 1) << (r - 2);
  s.dim[r - 1] = b->dim[bn];
  s.seq |= (b->seq >> bn & 1) << (r - 1);
  n->shape = s;
}

static void infer_reshape(Graph *g, Node *n, const Shape *x)
{
  Shape s = n->a.shape;
  int unknown = -1;
  int64_t coef = 1;
  for (int i = 0; i < s.rank; i++) {
    if (s.dim[i] == -1) {
      if (unknown >= 0)
        ir_error(g, "reshape: more than one -1 in the target shape");
      unknown = i;
    } else if (s.dim[i] <= 0) {
      ir_error(g, "reshape: dimension %d is %d", i, s.dim[i]);
    } else if (__builtin_mul_overflow(coef, s.dim[i], &coef) || coef > LMC_MAX_BYTES) {
      ir_error(g, "reshape: the target shape %s has more than %lld elements", shape_str(&s),
               (long long)LMC_MAX_BYTES);
    }
  }
  int64_t xcoef = 1;
  for (int i = 0; i < x->rank; i++)
    xcoef *= x->dim[i];
  int xpow = shape_seqpow(x), spow = __builtin_popcount(s.seq & ~(unknown >= 0 ? 1u << unknown : 0));
  if (unknown >= 0) {
    s.seq &= ~(1u << unknown);
    if (coef == 0 || xcoef % coef != 0 || xpow - spow < 0 || xpow - spow > 1)
      ir_error(g, "reshape: cannot reshape %s into %s", shape_str(x), shape_str(&n->a.shape));
    if (xcoef / coef > INT_MAX)
      ir_error(g, "reshape: dimension %d of %s would be %lld, more than %d", unknown,
               shape_str(&n->a.shape), (long long)(xcoef / coef), INT_MAX);
    s.dim[unknown] = (int)(xcoef / coef);
    if (xpow - spow == 1)
      s.seq |= 1u << unknown;
  } else if (coef != xcoef || spow != xpow) {
    ir_error(g, "reshape: cannot reshape %s (%lld elements) into %s", shape_str(x),
             (long long)shape_numel(x, g->max_seq), shape_str(&s));
  }
  n->shape = s;
}

static int check_axis(Graph *g, Node *n, int axis, int rank)
{
  if (axis < 0)
    axis += rank;
  if (axis < 0 || axis >= rank)
    ir_error(g, "%s: axis %d out of range for rank %d", op_info[n->op].name, n->a.axis, rank);
  return axis;
}

/* Each infer_<family> sets n's dtype and shape from its inputs x and y
 * (NULL where n has fewer) and returns true, or returns false for an op
 * not of its family; infer() tries them in turn. */

/* Elementwise ops, with broadcasting between two operands. */
static bool infer_elem(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  if (!op_is(n->op, P_ELEM))
    return false;
  for (int k = 0; k < n->nin; k++)
    need_real(g, n, k);
  n->shape = *x;
  if (n->nin == 2 && !broadcast_shapes(x, y, &n->shape))
    ir_error(g, "%s: shapes %s and %s do not broadcast", op_info[n->op].name, shape_str(x), shape_str(y));
  if (n->op == OP_DROPOUT && !(n->a.f >= 0 && n->a.f < 1))
    ir_error(g, "dropout: probability %g is not in [0, 1)", n->a.f);
  return true;
}

/* Nodes without inputs: their shape is given. */
static bool infer_leaf(Graph *g, Node *n)
{
  const char *op = op_info[n->op].name;
  switch (n->op) {
  case OP_INPUT:
  case OP_PARAM:
    n->shape = n->a.shape;
    for (int i = 0; i < n->shape.rank; i++)
      if (n->shape.dim[i] <= 0)
        ir_error(g, "%s '%s': dimension %d is %d", op, n->a.name, i, n->shape.dim[i]);
    if (n->op == OP_PARAM && n->shape.seq)
      ir_error(g, "param '%s': a parameter cannot have a sequence dimension", n->a.name);
    break;
  case OP_CONST:
    n->shape = (Shape){0};
    break;
  case OP_ARANGE:
    n->shape = n->a.shape;
    if (n->shape.rank != 1 || n->shape.dim[0] <= 0)
      ir_error(g, "arange: length must be positive");
    break;
  case OP_TRIU_MASK:
    n->shape = shape_make(2, (int[]){1, 1}, 3);
    break;
  default:
    return false;
  }
  return true;
}

/* Products, and the embedding (a product with a one-hot matrix). */
static bool infer_product(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  switch (n->op) {
  case OP_MATMUL:
    need_real(g, n, 0);
    need_real(g, n, 1);
    infer_matmul(g, n, x, y);
    break;
  case OP_BMM:
    need_real(g, n, 0);
    need_real(g, n, 1);
    infer_bmm(g, n, x, y);
    break;
  case OP_EMBEDDING:
    need_real(g, n, 0);
    need_int(g, n, 1, "the index");
    if (x->rank != 2 || x->seq)
      ir_error(g, "embedding: weight must be a (ntoken, emsize) matrix, got %s", shape_str(x));
    if (y->rank + 1 > MAXRANK)
      ir_error(g, "embedding: index rank %d too large", y->rank);
    n->shape = *y;
    n->shape.rank++;
    n->shape.dim[y->rank] = x->dim[1];
    break;
  case OP_EMBEDDING_GRAD:
    need_real(g, n, 0);
    need_int(g, n, 1, "the index");
    if (n->a.shape.rank != 2 || x->rank != y->rank + 1 || x->dim[y->rank] != n->a.shape.dim[1])
      ir_error(g, "embedding_grad: shapes %s, %s do not fit %s", shape_str(x), shape_str(y),
               shape_str(&n->a.shape));
    n->shape = n->a.shape;
    break;
  default:
    return false;
  }
  return true;
}

/* Ops over the last dimension's rows, and their gradients. */
static bool infer_rows(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  const char *op = op_info[n->op].name;
  switch (n->op) {
  case OP_SOFTMAX:
  case OP_LOG_SOFTMAX:
  case OP_NORMALIZE:
    need_real(g, n, 0);
    if (x->rank < 1)
      ir_error(g, "%s: needs at least one dimension", op);
    n->shape = *x;
    break;
  case OP_SOFTMAX_GRAD:
  case OP_LOG_SOFTMAX_GRAD:
  case OP_NORMALIZE_GRAD:
    if (!shape_eq(x, y))
      ir_error(g, "%s: shapes %s and %s differ", op, shape_str(x), shape_str(y));
    n->shape = *x;
    break;
  case OP_NLL_LOSS: {
    need_real(g, n, 0);
    need_int(g, n, 1, "the target");
    Shape lead = *x;
    lead.rank--;
    lead.seq &= (1u << lead.rank) - 1;
    if (x->rank < 1 || !shape_eq(&lead, y))
      ir_error(g, "nll_loss: target %s does not match log-probabilities %s", shape_str(y), shape_str(x));
    n->shape = (Shape){0};
    break;
  }
  case OP_NLL_LOSS_GRAD:
    n->shape = *y;
    break;
  default:
    return false;
  }
  return true;
}

static void infer_transpose(Graph *g, Node *n, const Shape *x)
{
  unsigned seen = 0;
  Shape s = {.rank = x->rank};
  for (int i = 0; i < x->rank; i++) {
    int p = n->a.perm[i];
    if (p < 0 || p >= x->rank || (seen >> p & 1))
      ir_error(g, "transpose: %s is not a permutation of %d dimensions", "perm", x->rank);
    seen |= 1u << p;
    s.dim[i] = x->dim[p];
    s.seq |= (x->seq >> p & 1) << i;
  }
  n->shape = s;
}

/* The slice's [start, start + len) lies in its dimension at every run-time
 * T, 1 <= T <= max_seq: both ends are linear in T, so at T = 1 and at
 * max_seq.  Its length is a dimension (T - 1: len -1, len_off -1). */
static void infer_slice(Graph *g, Node *n, const Shape *x)
{
  int ax = n->a.axis = check_axis(g, n, n->a.axis, x->rank);
  bool in_T = n->a.len < 0;
  Shape len = {.rank = 1, .dim = {in_T ? -n->a.len : n->a.len}, .seq = in_T,
               .off = {in_T ? n->a.len_off : 0}};
  if (n->a.len == 0 || n->a.start < 0)
    ir_error(g, "slice: the start must be at least 0 and the length positive");
  int at[2] = {g->max_seq, 1};
  Shape end = len;
  if (__builtin_add_overflow(in_T ? end.off[0] : end.dim[0], n->a.start, in_T ? &end.off[0] : &end.dim[0]))
    ir_error(g, "slice: start %d is too large", n->a.start);
  for (int j = 0; j < 2; j++)
    if (dim_at(&end, 0, at[j]) > dim_at(x, ax, at[j]))
      ir_error(g, "slice: [%d, %s) out of range for dimension %d of %s%s", n->a.start, dim_str(&end, 0),
               ax, shape_str(x), (x->seq >> ax & 1) || in_T ? arena_printf(" at T = %d", at[j]) : "");
  n->shape = *x;
  copy_dim(&n->shape, ax, &len, 0);
}

static void infer_concat(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  int ax = n->a.axis = check_axis(g, n, n->a.axis, x->rank);
  bool ok = x->rank == y->rank && !(x->seq >> ax & 1) && !(y->seq >> ax & 1);
  for (int i = 0; ok && i < x->rank; i++)
    if (i != ax && !dim_eq(x, i, y, i))
      ok = false;
  if (!ok)
    ir_error(g, "concat: shapes %s and %s differ outside axis %d", shape_str(x), shape_str(y), ax);
  n->shape = *x;
  if (__builtin_add_overflow(x->dim[ax], y->dim[ax], &n->shape.dim[ax]))
    ir_error(g, "concat: dimension %d would be %lld, more than %d", ax,
             (long long)x->dim[ax] + y->dim[ax], INT_MAX);
}

/* Ops that move or reduce elements without computing on them. */
static bool infer_shape_op(Graph *g, Node *n, const Shape *x, const Shape *y)
{
  switch (n->op) {
  case OP_SUM:
    need_real(g, n, 0);
    if (!broadcasts_to(&n->a.shape, x))
      ir_error(g, "sum: %s cannot be summed to %s", shape_str(x), shape_str(&n->a.shape));
    n->shape = n->a.shape;
    return true;
  case OP_BROADCAST:
    need_real(g, n, 0);
    if (!broadcasts_to(x, &n->a.shape))
      ir_error(g, "broadcast: %s does not broadcast to %s", shape_str(x), shape_str(&n->a.shape));
    n->shape = n->a.shape;
    return true;
  case OP_PAD:
    n->shape = n->a.shape;
    return true;
  case OP_RESHAPE:
    n->dtype = g->node[n->in[0]].dtype;
    infer_reshape(g, n, x);
    return true;
  case OP_TRANSPOSE:
    n->dtype = g->node[n->in[0]].dtype;
    infer_transpose(g, n, x);
    return true;
  case OP_SLICE:
    n->dtype = g->node[n->in[0]].dtype;
    infer_slice(g, n, x);
    return true;
  case OP_CONCAT:
    n->dtype = g->node[n->in[0]].dtype;
    infer_concat(g, n, x, y);
    return true;
  default:
    return false;
  }
}

/* The ops that connect a loop with the outside, and last_step. */
static bool infer_loop_op(Graph *g, Node *n, const Shape *x)
{
  switch (n->op) {
  case OP_STEP:
    n->dtype = g->node[n->in[0]].dtype;
    if (x->rank < 1 || !(x->seq & 1) || x->dim[0] != 1 || x->off[0])
      ir_error(g, "scan: sequence input %s must have the sequence (T) as its first dimension",
               shape_str(x));
    n->shape = *x;
    n->shape.rank--;
    memmove(n->shape.dim, n->shape.dim + 1, sizeof(int) * (MAXRANK - 1));
    n->shape.seq >>= 1;
    if (n->shape.seq)
      ir_error(g, "scan: sequence input %s has more than one sequence dimension", shape_str(x));
    break;
  case OP_CARRY:
    n->dtype = g->node[n->in[0]].dtype;
    if (x->seq)
      ir_error(g, "scan: initial state %s depends on the sequence length", shape_str(x));
    n->shape = *x;
    break;
  case OP_STACK:
    n->dtype = g->node[n->in[0]].dtype;
    if (x->rank + 1 > MAXRANK)
      die("stack rank");
    n->shape.rank = x->rank + 1;
    n->shape.dim[0] = 1;
    memcpy(n->shape.dim + 1, x->dim, sizeof(int) * (size_t)x->rank);
    n->shape.seq = x->seq << 1 | 1;
    break;
  case OP_FINAL:
    n->dtype = g->node[n->in[0]].dtype;
    n->shape = *x;
    break;
  case OP_LAST_STEP:
    n->dtype = g->node[n->in[0]].dtype;
    if (x->rank < 1 || !(x->seq & 1) || x->dim[0] != 1 || x->off[0])
      ir_error(g, "last_step: %s does not have the sequence (T) as its first dimension", shape_str(x));
    n->shape = *x;
    n->shape.seq &= ~1u;
    break;
  default:
    return false;
  }
  return true;
}

static void infer(Graph *g, Node *n)
{
  const Shape *x = n->nin > 0 ? &g->node[n->in[0]].shape : NULL;
  const Shape *y = n->nin > 1 ? &g->node[n->in[1]].shape : NULL;
  n->dtype = g->real;
  if (!infer_elem(g, n, x, y) && !infer_leaf(g, n) && !infer_product(g, n, x, y) &&
      !infer_rows(g, n, x, y) && !infer_shape_op(g, n, x, y) && !infer_loop_op(g, n, x) &&
      !kv_infer(g, n, x, y))
    die("no shape rule for %s", op_info[n->op].name);
}

/* Node n's buffer fits in LMC_MAX_BYTES: its elements at T = max_seq,
 * times max_seq for a loop body value (stored once per step).  The
 * products are checked, so a shape that wraps an int64_t is caught too. */
static void check_size(Graph *g, Node *n)
{
  int64_t numel = 1;
  bool wraps = false;
  for (int i = 0; i < n->shape.rank; i++)
    wraps |= __builtin_mul_overflow(numel, dim_at_max(g, &n->shape, i), &numel);
  if (n->loop)
    wraps |= __builtin_mul_overflow(numel, g->max_seq, &numel);
  int64_t bytes;
  wraps |= __builtin_mul_overflow(numel, n->dtype == DT_F64 ? 8 : 4, &bytes);
  if (!wraps && bytes <= LMC_MAX_BYTES)
    return;
  const char *what = op_info[n->op].name;
  if (n->op == OP_PARAM || n->op == OP_INPUT)
    what = arena_printf("%s '%s'", what, n->a.name);
  const char *when = n->loop ? arena_printf(" for %d steps", g->max_seq)
                     : n->shape.seq ? arena_printf(" at T = %d", g->max_seq) : "";
  if (wraps)
    ir_error(g, "%s: %s%s is too large: its size does not fit in 64 bits", what, shape_str(&n->shape),
             when);
  ir_error(g, "%s: %s needs %.1f GiB%s; a tensor may have at most %d GiB", what, shape_str(&n->shape),
           (double)bytes / (1 << 30), when, LMC_MAX_GIB);
}

/* The node's dtype and shape, from its inputs; a size beyond the limits
 * is an error at its line. */
static void infer_checked(Graph *g, Node *n)
{
  infer(g, n);
  check_size(g, n);
}

/* -------------------------------------------------------------- builders */

static int append(Graph *g, Op op, int nin, const int *in, const Attr *a)
{
  if (g->nnode >= LMC_MAX_NODES)
    ir_error(g, "the graph has more than %d nodes", LMC_MAX_NODES);
  if (g->nnode == g->capnode) {
    g->capnode = g->capnode ? 2 * g->capnode : 256;
    g->node = arena_realloc(g->node, sizeof(Node) * (size_t)g->capnode);
  }
  int id = g->nnode++;
  Node *n = &g->node[id];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->nin = nin;
  for (int k = 0; k < MAXIN; k++)
    n->in[k] = k < nin ? in[k] : -1;
  if (a)
    n->a = *a;
  n->loop = op_is(op, P_LEAF) ? 0 : g->cur_loop;
  n->file = g->cur_file;
  n->line = g->cur_line;
  n->scope = g->cur_scope;
  return id;
}

int ir_op(Graph *g, Op op, int nin, const int *in, const Attr *a)
{
  if (nin != op_info[op].nin)
    die("%s takes %d inputs, got %d", op_info[op].name, op_info[op].nin, nin);
  for (int k = 0; k < nin; k++) {
    if (in[k] < 0 || in[k] >= g->nnode)
      die("%s: input %d is node %d of %d", op_info[op].name, k, in[k], g->nnode);
    if (op == OP_CARRY && k == 1)
      continue;
    int l = g->node[in[k]].loop;
    if (l != 0 && l != g->cur_loop)
      ir_error(g, "%s: uses a value computed inside a scan body (return it from the body instead)",
               op_info[op].name);
  }
  mono_check_inputs(g, op, nin, in);
  int id = append(g, op, nin, in, a);
  infer_checked(g, &g->node[id]);
  mono_check_node(g, &g->node[id]);
  return id;
}

int ir_op1(Graph *g, Op op, int x, const Attr *a)
{
  return ir_op(g, op, 1, &x, a);
}

int ir_op2(Graph *g, Op op, int x, int y, const Attr *a)
{
  return ir_op(g, op, 2, (int[]){x, y}, a);
}

int ir_const(Graph *g, double v)
{
  return ir_op(g, OP_CONST, 0, NULL, &(Attr){.f = v});
}

int ir_input(Graph *g, const char *name, DType dt, Shape s, bool state)
{
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == OP_INPUT && !strcmp(g->node[i].a.name, name))
      ir_error(g, "input '%s' is declared twice", name);
  int id = ir_op(g, OP_INPUT, 0, NULL, &(Attr){.shape = s, .name = name, .state = state});
  g->node[id].dtype = dt == DT_I32 ? DT_I32 : g->real;
  return id;
}

int ir_param(Graph *g, const char *name, Shape s, Init init, double init_a)
{
  if (ir_find_param(g, name) >= 0)
    ir_error(g, "parameter '%s' is declared twice", name);
  int id = ir_op(g, OP_PARAM, 0, NULL, &(Attr){.shape = s, .name = name, .init = init, .init_a = init_a});
  g->param_bytes += (int64_t)shape_numel(&g->node[id].shape, 0) * (g->real == DT_F64 ? 8 : 4);
  if (g->param_bytes > LMC_MAX_BYTES)
    ir_error(g, "param '%s': the parameters need %.1f GiB in all; at most %d GiB", name,
             (double)g->param_bytes / (1 << 30), LMC_MAX_GIB);
  strmap_put(&g->param_names, name, id);
  return id;
}

int ir_find_param(Graph *g, const char *name)
{
  int id = strmap_get(&g->param_names, name);
  if (id < 0 || !g->node[id].dead)
    return id;
  for (int i = 0; i < g->nnode; i++)   /* killed, and declared again? */
    if (g->node[i].op == OP_PARAM && !g->node[i].dead && !strcmp(g->node[i].a.name, name))
      return i;
  return -1;
}

void ir_output(Graph *g, const char *name, int node)
{
  if (ir_find_output(g, name) >= 0)
    ir_error(g, "output '%s' is set twice", name);
  if (g->node[node].loop != 0)
    ir_error(g, "output '%s': a value inside a scan body cannot be an output", name);
  if (g->nout == g->capout) {
    g->capout = g->capout ? 2 * g->capout : 16;
    g->out = arena_realloc(g->out, sizeof(Output) * (size_t)g->capout);
  }
  strmap_put(&g->out_names, name, g->nout);
  g->out[g->nout++] = (Output){name, node};
}

/* Drops output name, if there is one; what only it read dies in dce. */
void ir_drop_output(Graph *g, const char *name)
{
  if (strmap_get(&g->out_names, name) < 0)
    return;
  int k = 0;
  strmap_clear(&g->out_names);
  for (int i = 0; i < g->nout; i++)
    if (strcmp(g->out[i].name, name)) {
      strmap_put(&g->out_names, g->out[i].name, k);
      g->out[k++] = g->out[i];
    }
  g->nout = k;
}

int ir_find_output(Graph *g, const char *name)
{
  int o = strmap_get(&g->out_names, name);
  return o < 0 ? -1 : g->out[o].node;
}

/* ----------------------------------------------------------------- loops */

int ir_loop_begin(Graph *g, bool reverse)
{
  if (g->cur_loop != 0)
    ir_error(g, "scan: nested scans are not supported");
  if (g->nloop == g->caploop) {
    g->caploop *= 2;
    g->loop = arena_realloc(g->loop, sizeof(Loop) * (size_t)g->caploop);
  }
  g->loop[g->nloop] = (Loop){.reverse = reverse};
  g->cur_loop_start = g->nnode;
  return g->cur_loop = g->nloop++;
}

int ir_step(Graph *g, int seq_tensor)
{
  if (g->cur_loop == 0)
    die("ir_step outside a loop");
  return ir_op1(g, OP_STEP, seq_tensor, NULL);
}

int ir_carry(Graph *g, int init)
{
  if (g->cur_loop == 0)
    die("ir_carry outside a loop");
  if (g->node[init].loop != 0)
    ir_error(g, "scan: the initial state must be computed outside the body");
  int id = append(g, OP_CARRY, 2, (int[]){init, init}, NULL);
  g->node[id].in[1] = -1;
  infer_checked(g, &g->node[id]);
  return id;
}

void ir_carry_next(Graph *g, int carry, int next)
{
  Node *c = ir_get(g, carry), *n = ir_get(g, next);
  if (c->op != OP_CARRY)
    die("ir_carry_next on %s", op_info[c->op].name);
  if (n->loop != c->loop && n->loop != 0)
    ir_error(g, "scan: the next state must be computed in the body");
  if (!shape_eq(&c->shape, &n->shape) || c->dtype != n->dtype)
    ir_error(g, "scan: state %d changes shape: %s at the start of a step, %s at its end",
             carry, shape_str(&c->shape), shape_str(&n->shape));
  /* the one backward reference of the IR points forward to a body node:
   * a value from outside the body, a step input or a carry before this
   * one (or this one, unchanged) becomes a copy made in the body */
  if (n->loop == 0 || next <= carry)
    next = ir_body_copy(g, next);
  g->node[carry].in[1] = next;
}

int ir_body_copy(Graph *g, int x)
{
  if (g->cur_loop == 0)
    die("ir_body_copy outside a loop");
  return ir_op1(g, OP_BROADCAST, x, &(Attr){.shape = g->node[x].shape});
}

void ir_loop_end(Graph *g)
{
  int k = g->cur_loop;
  if (k == 0)
    die("ir_loop_end outside a loop");
  for (int i = g->cur_loop_start; i < g->nnode; i++)
    if (g->node[i].op == OP_CARRY && g->node[i].loop == k && g->node[i].in[1] < 0)
      ir_error(g, "scan: a carried state has no next value");
  g->cur_loop = 0;
}

int ir_stack(Graph *g, int body_node)
{
  if (g->cur_loop != 0)
    die("ir_stack inside a loop");
  if (g->node[body_node].loop == 0)
    ir_error(g, "scan: a per-step output must be computed in the body");
  int id = append(g, OP_STACK, 1, &body_node, NULL);
  infer_checked(g, &g->node[id]);
  return id;
}

int ir_final(Graph *g, int carry)
{
  if (g->cur_loop != 0)
    die("ir_final inside a loop");
  if (g->node[carry].op != OP_CARRY)
    die("ir_final of %s", op_info[g->node[carry].op].name);
  int id = append(g, OP_FINAL, 1, &carry, NULL);
  infer_checked(g, &g->node[id]);
  return id;
}
