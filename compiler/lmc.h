/*
 * lmc.h: the one internal header of the lmc compiler.
 *
 * The pipeline is   Lua graph file -> Graph (IR) -> passes -> C file.
 * A Graph is a flat array of Nodes in schedule order; nodes refer to each
 * other by index.  Every op is declared once in the OPS table below, which
 * generates the Op enum, the op names and the property table.
 *
 * Shapes are static except for the sequence dimension: each dimension is a
 * static coefficient, and a dimension whose bit is set in Shape.seq is that
 * coefficient times the run-time sequence length T (1 <= T <= g->max_seq).
 * (T, B, H) is {rank 3, dim {1, B, H}, seq 0x1}; its (T*B, H) reshape is
 * {rank 2, dim {B, H}, seq 0x1}; attention scores (B, nh, T, T) set two bits.
 *
 * Loops over time.  A loop is a contiguous run of nodes whose Node.loop is
 * the loop's number (top-level nodes have loop 0).  The body runs once per
 * time step t (0..T-1, or T-1..0 for a reverse loop), and every body node
 * is stored stacked: its buffer holds max_seq copies of its per-step shape,
 * step t at offset t * per-step size.  Body nodes may read top-level nodes
 * (captures, e.g. weights) and nodes of their own loop.  Four ops connect a
 * loop with the outside:
 *   OP_STEP  (body)  x[t] of a top-level tensor x whose dim 0 is T
 *   OP_CARRY (body)  carried state: in[0] = initial value (top level),
 *                    in[1] = the body node holding the next value (the only
 *                    backward reference in a graph); at the first step it is
 *                    in[0], afterwards in[1] of the previous step
 *   OP_STACK (top)   the (T, ...) stack of a body node over all steps
 *   OP_FINAL (top)   a carry's next value after the last step
 *
 * Errors in a graph file are the user's: ir_error() prints
 * "file:line: error: ..." at the location of the node being built and exits
 * with status 1.  A compiler bug is die(), with the C source location.
 */
#ifndef LMC_H
#define LMC_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LMC_VERSION "0.1.0"

#define MAXRANK 6
#define MAXIN 4

/* ---------------------------------------------------------------- util.c */

_Noreturn void die_at(const char *file, int line, const char *fmt, ...);
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
/* Where a user's mistake ends, once its message is printed: exit(1), or a
 * longjmp to *user_error_jmp when a caller that compiles many graphs in
 * one process (tests/fuzz/fuzz_graph.c) has set it.  die() always exits. */
extern jmp_buf *user_error_jmp;
_Noreturn void user_error_exit(void);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...);
/* v as a C literal that keeps its value and the sign of zero ("0.5",
 * "-0.0", "1e+30", "INFINITY"): written into out, or a constant string. */
enum { C_DOUBLE_LEN = 32 };
const char *c_double(double v, char out[C_DOUBLE_LEN]);
/* The compilation arena: graphs and every string they point to.  Freed
 * all at once by arena_free_all(), never piece by piece. */
void *arena_calloc(size_t n, size_t size);
void *arena_realloc(void *p, size_t size);     /* p from the arena, or NULL */
char *arena_strdup(const char *s);
char *arena_printf(const char *fmt, ...);
void arena_free_all(void);
/* Names to numbers, in the arena; keys are not copied (arena strings). */
typedef struct {
  const char **key;
  int *val;
  size_t n, cap;          /* cap: 0 or a power of two */
} StrMap;
int strmap_get(const StrMap *m, const char *key);   /* the value, or -1 */
void strmap_put(StrMap *m, const char *key, int val);
void strmap_clear(StrMap *m);

/* ------------------------------------------------------------------ ops */

typedef enum { DT_F32, DT_F64, DT_I32 } DType;

/* Op properties. */
enum {
  P_ELEM = 1 << 0,   /* elementwise, inputs broadcast to the output shape */
  P_FOLD = 1 << 1,   /* fold-constants may evaluate it */
  P_GRAD = 1 << 2,   /* has a vector-Jacobian product in autodiff.c */
  P_LEAF = 1 << 3,   /* no inputs: a value from outside or a constant */
  P_LOOP = 1 << 4,   /* connects a loop body with the outside */
  P_VIEW = 1 << 5,   /* same bytes as in[0], another shape */
  P_ROWS = 1 << 6,   /* row t along dim 0 needs only row t of its operands (last-step) */
  P_LUA  = 1 << 7,   /* a Lua function and tensor method of its name (lua_front.c) */
  P_UNIQUE = 1 << 8, /* its own value, never the same as another node's (cse) */
  /* a plain elementwise math op: a Lua function, folded, differentiated by its row */
  P_MATH = P_ELEM | P_FOLD | P_GRAD | P_ROWS | P_LUA,
  /* a comparison: 1 or 0, a Lua function, folded, no gradient (it stops there) */
  P_CMP = P_ELEM | P_FOLD | P_ROWS | P_LUA,
};

/* Which fields of Attr an op reads (attr.c prints, compares and hashes
 * them by this kind). */
typedef enum {
  A_NONE,         /* none */
  A_INPUT,        /* name, state */
  A_PARAM,        /* name, init, init_a */
  A_CONST,        /* f: the value */
  A_ARANGE,       /* f: start, f2: step */
  A_LITERAL,      /* data */
  A_DROPOUT,      /* f: p, id: stream, id2: run-time slot */
  A_MATMUL,       /* ta, tb */
  A_EPS,          /* f: epsilon */
  A_SLICE,        /* axis, start, len, view */
  A_PAD,          /* axis, start (the target shape is the node's own) */
  A_AXIS,         /* axis */
  A_LAST_AXIS,    /* axis, always the last: compared, not printed */
  A_PERM,         /* perm */
  A_SHAPE,        /* shape, the node's own: compared, not printed */
  A_ROWS,         /* shape (compared), rows (printed) */
} AttrKind;

/* The op table.  Columns: the Op, its IR name, its number of inputs, its
 * properties, its attribute kind, and for elementwise ops three more:
 *
 *   args   the names of its inputs in an emitted kernel's parameters
 *   value  the C expression of its value, a template over
 *            $0 $1   the inputs
 *            $f      "f" in an f32 program, "" in an f64 one: libm's expf
 *                    against exp (exp$f), a float literal (0.5$f)
 *            $v      "lmc_" in an f32 program, "" in an f64 one: the
 *                    vectorisable lmc_expf and lmc_tanhf of lmc_math.h
 *                    ($vexp$f, $vtanh$f) against libm's exp and tanh
 *            $i $s   dropout: the mask element's index (uint64_t, from
 *                    the emitter's kmask_index: the global column's), and
 *                    the suffix naming its key, p, scale and idx0 in a
 *                    fused kernel
 *          The emitter writes it with operands substituted (op_c_expr) and
 *          fold-constants evaluates the same text, with C's types.
 *   grad   per input, the gradient the input gets, an expression over ops
 *          that autodiff builds node by node: op(args...) by the op's IR
 *          name, $dy the incoming gradient, $y the node's value, $0 $1 $2
 *          its inputs, numbers scalar constants; summed down to the
 *          input's shape where it was broadcast.  NULL: that input has no
 *          gradient.  An op built this way with the attribute kind of the
 *          node (dropout_grad of dropout) takes the node's attributes.
 *
 * Ops with a gradient but no grad column (matmul, the shape ops, loops)
 * have their rule in autodiff.c's vjp(). */
/* gelu's tanh(sqrt(2/pi) (x + 0.044715 x^3)) of operand x, for its value and its gradient */
#define GELU_TANH_OF(x) "$vtanh$f(0.7978845608028654$f * (" x " + 0.044715$f * (" x " * " x " * " x ")))"
#define OPS(X) \
  X(INPUT,        "input",        0, P_LEAF | P_UNIQUE, A_INPUT, (NULL), NULL, (NULL)) /* named run-time input: tokens, targets, state */ \
  X(PARAM,        "param",        0, P_LEAF | P_UNIQUE, A_PARAM, (NULL), NULL, (NULL)) /* trained parameter, named as PyTorch's state_dict */ \
  X(CONST,        "const",        0, P_LEAF | P_FOLD, A_CONST, (NULL), NULL, (NULL)) /* scalar constant a.f, broadcast */ \
  X(ARANGE,       "arange",       0, P_LEAF | P_FOLD, A_ARANGE, (NULL), NULL, (NULL)) /* a.f + i * a.f2, i < dim 0 */ \
  X(NEG,          "neg",          1, P_MATH, A_NONE, ("x"), "-$0", ("neg($dy)")) \
  X(EXP,          "exp",          1, P_MATH, A_NONE, ("x"), "exp$f($0)", ("mul($dy, $y)")) \
  X(LOG,          "log",          1, P_MATH, A_NONE, ("x"), "log$f($0)", ("div($dy, $0)")) \
  X(SQRT,         "sqrt",         1, P_MATH, A_NONE, ("x"), "sqrt$f($0)", ("div($dy, mul($y, 2))")) \
  X(SIN,          "sin",          1, P_MATH, A_NONE, ("x"), "sin$f($0)", ("mul($dy, cos($0))")) \
  X(COS,          "cos",          1, P_MATH, A_NONE, ("x"), "cos$f($0)", ("neg(mul($dy, sin($0)))")) \
  X(TANH,         "tanh",         1, P_MATH, A_NONE, ("x"), "$vtanh$f($0)", ("tanh_grad($dy, $y)")) \
  X(SIGMOID,      "sigmoid",      1, P_MATH, A_NONE, ("x"), "1 / (1 + $vexp$f(-$0))", ("sigmoid_grad($dy, $y)")) \
  X(RELU,         "relu",         1, P_MATH, A_NONE, ("x"), "$0 > 0 ? $0 : 0", ("relu_grad($dy, $y)")) \
  X(GELU,         "gelu",         1, P_MATH, A_NONE, ("x"), "0.5$f * $0 * (1 + erf$f($0 * 0.7071067811865476$f))", \
    ("gelu_grad($dy, $0)")) /* exact, x Phi(x), as torch.nn.GELU(); 0.7071067811865476 = 1/sqrt(2) */ \
  X(GELU_TANH,    "gelu_tanh",    1, P_MATH, A_NONE, ("x"), "0.5$f * $0 * (1 + " GELU_TANH_OF("$0") ")", \
    ("gelu_tanh_grad($dy, $0)")) /* tanh form, as torch.nn.GELU(approximate='tanh') */ \
  X(SILU,         "silu",         1, P_MATH, A_NONE, ("x"), "$0 / (1 + $vexp$f(-$0))", \
    ("mul($dy, add(sigmoid($0), mul($y, sub(1, sigmoid($0)))))")) /* x * sigmoid(x) */ \
  X(ERF,          "erf",          1, P_MATH, A_NONE, ("x"), "erf$f($0)", \
    ("mul($dy, mul(1.1283791670955126, exp(neg(mul($0, $0)))))")) /* 1.1283791670955126 = 2/sqrt(pi) */ \
  X(ADD,          "add",          2, P_MATH, A_NONE, ("a", "b"), "$0 + $1", ("$dy", "$dy")) \
  X(SUB,          "sub",          2, P_MATH, A_NONE, ("a", "b"), "$0 - $1", ("$dy", "neg($dy)")) \
  X(MUL,          "mul",          2, P_MATH, A_NONE, ("a", "b"), "$0 * $1", ("mul($dy, $1)", "mul($dy, $0)")) \
  X(DIV,          "div",          2, P_MATH, A_NONE, ("a", "b"), "$0 / $1", \
    ("div($dy, $1)", "neg(div(mul($dy, $y), $1))")) /* d(a/b)/db = -(a/b) / b */ \
  X(POW,          "pow",          2, P_MATH, A_NONE, ("a", "b"), "pow$f($0, $1)", \
    ("mul($dy, mul($1, pow($0, sub($1, 1))))", "mul($dy, mul($y, log($0)))")) /* a ^ b, torch.pow */ \
  X(MAXIMUM,      "maximum",      2, P_MATH, A_NONE, ("a", "b"), "$1 != $1 ? $1 : ($0 < $1 ? $1 : $0)", \
    ("mul($dy, mul(0.5, add(ge($0, $1), gt($0, $1))))", "mul($dy, mul(0.5, add(ge($1, $0), gt($1, $0))))")) \
    /* torch.maximum: NaN if either is; a tie gives each input half of dy */ \
  X(LT,           "lt",           2, P_CMP, A_NONE, ("a", "b"), "$0 < $1", (NULL, NULL)) /* 1 where a < b, else 0 */ \
  X(LE,           "le",           2, P_CMP, A_NONE, ("a", "b"), "$0 <= $1", (NULL, NULL)) \
  X(GT,           "gt",           2, P_CMP, A_NONE, ("a", "b"), "$0 > $1", (NULL, NULL)) \
  X(GE,           "ge",           2, P_CMP, A_NONE, ("a", "b"), "$0 >= $1", (NULL, NULL)) \
  X(EQ,           "eq",           2, P_CMP, A_NONE, ("a", "b"), "$0 == $1", (NULL, NULL)) \
  X(NE,           "ne",           2, P_CMP, A_NONE, ("a", "b"), "$0 != $1", (NULL, NULL)) \
  X(KEEP_IF,      "keep_if",      2, P_ELEM | P_FOLD | P_GRAD | P_ROWS, A_NONE, ("c", "x"), "$0 != 0 ? $1 : -0.0$f", \
    (NULL, "keep_if($0, $dy)")) /* where(c, a, b) is keep_if(c, a) + keep_unless(c, b): */ \
  X(KEEP_UNLESS,  "keep_unless",  2, P_ELEM | P_FOLD | P_GRAD | P_ROWS, A_NONE, ("c", "x"), "$0 != 0 ? -0.0$f : $1", \
    (NULL, "keep_unless($0, $dy)")) /* -0.0 + v is v for every v, infinities and -0.0 included */ \
  X(DROPOUT,      "dropout",      1, P_ELEM | P_GRAD, A_DROPOUT, ("x"), \
    "lmc_keep(key$s, $i, p$s) ? $0 * scale$s : 0", \
    ("dropout_grad($dy)")) /* a * mask / (1 - p); p is run-time slot a.id2 */ \
  X(TANH_GRAD,    "tanh_grad",    2, P_ELEM | P_ROWS, A_NONE, ("dy", "y"), "$0 * (1 - $1 * $1)", (NULL)) \
  X(SIGMOID_GRAD, "sigmoid_grad", 2, P_ELEM | P_ROWS, A_NONE, ("dy", "y"), "$0 * $1 * (1 - $1)", (NULL)) \
  X(RELU_GRAD,    "relu_grad",    2, P_ELEM | P_ROWS, A_NONE, ("dy", "y"), "$1 > 0 ? $0 : 0", (NULL)) \
  X(GELU_GRAD,    "gelu_grad",    2, P_ELEM | P_ROWS, A_NONE, ("dy", "x"), \
    "$0 * (0.5$f * (1 + erf$f($1 * 0.7071067811865476$f)) + $1 * 0.3989422804014327$f * exp$f(-0.5$f * $1 * $1))", \
    (NULL)) /* dy * (Phi(x) + x phi(x)), 0.3989422804014327 = 1/sqrt(2 pi) */ \
  X(GELU_TANH_GRAD,"gelu_tanh_grad",2, P_ELEM | P_ROWS, A_NONE, ("dy", "x"), \
    "$0 * (0.5$f * (1 + " GELU_TANH_OF("$1") ") + 0.5$f * $1 * (1 - " GELU_TANH_OF("$1") " * " GELU_TANH_OF("$1") ") * " \
    "0.7978845608028654$f * (1 + 0.134145$f * $1 * $1))", (NULL)) /* dy * gelu'(x), 0.134145 = 3 * 0.044715 */ \
  X(DROPOUT_GRAD, "dropout_grad", 1, P_ELEM, A_DROPOUT, ("dy"), \
    "lmc_keep(key$s, $i, p$s) ? $0 * scale$s : 0", (NULL)) /* the mask redrawn */ \
  X(ADD_DROPOUT,  "add_dropout",  2, P_ELEM, A_DROPOUT, ("a", "b"), \
    "$0 + (lmc_keep(key$s, $i, p$s) ? $1 * scale$s : 0)", (NULL)) /* a + dropout(b), fused; mask over b's elements */ \
  X(DROPOUT_ADD,  "dropout_add",  2, P_ELEM, A_DROPOUT, ("a", "b"), \
    "lmc_keep(key$s, $i, p$s) ? ($0 + $1) * scale$s : 0", (NULL)) /* dropout(a + b), fused; mask over y's elements */ \
  X(MATMUL,       "matmul",       2, P_GRAD, A_MATMUL, (NULL), NULL, (NULL)) /* a @ b, a.ta / a.tb transpose */ \
  X(MATMUL_BIAS,  "matmul_bias",  3, 0, A_MATMUL, (NULL), NULL, (NULL)) /* a @ b + c, c broadcast to y (a bias): gemm with beta 1 */ \
  X(BMM,          "bmm",          2, P_GRAD, A_MATMUL, (NULL), NULL, (NULL)) /* batched a @ b over leading dims */ \
  X(EMBEDDING,    "embedding",    2, P_GRAD, A_NONE, (NULL), NULL, (NULL)) /* rows of in[0] (V, E) picked by i32 in[1] */ \
  X(EMBEDDING_GRAD,"embedding_grad",2, 0, A_ROWS, (NULL), NULL, (NULL)) /* scatter-add dy in[0] into (V, E) rows in[1] */ \
  X(SOFTMAX,      "softmax",      1, P_GRAD | P_ROWS, A_LAST_AXIS, (NULL), NULL, ("softmax_grad($dy, $y)")) /* along the last dim */ \
  X(LOG_SOFTMAX,  "log_softmax",  1, P_GRAD | P_ROWS, A_LAST_AXIS, (NULL), NULL, ("log_softmax_grad($dy, $y)")) /* along the last dim */ \
  X(SOFTMAX_GRAD, "softmax_grad", 2, 0, A_NONE, (NULL), NULL, (NULL)) /* in: dy, y = softmax */ \
  X(LOG_SOFTMAX_GRAD,"log_softmax_grad",2, 0, A_NONE, (NULL), NULL, (NULL)) /* in: dy, y = log_softmax */ \
  X(NORMALIZE,    "normalize",    1, P_GRAD | P_ROWS, A_EPS, (NULL), NULL, ("normalize_grad($dy, $0)")) /* (a - mean) / sqrt(var + a.f), last dim */ \
  X(NORMALIZE_GRAD,"normalize_grad",2, 0, A_EPS, (NULL), NULL, (NULL)) /* in: dy, a */ \
  X(NLL_LOSS,     "nll_loss",     2, P_GRAD, A_NONE, (NULL), NULL, ("nll_loss_grad($dy, $0, $1)", NULL)) /* mean of -in[0][.., in[1][..]] */ \
  X(NLL_LOSS_GRAD,"nll_loss_grad",3, 0, A_NONE, (NULL), NULL, (NULL)) /* in: dloss (scalar), logp, target */ \
  X(NLL_LOG_SOFTMAX_GRAD,"nll_log_softmax_grad",3, 0, A_NONE, (NULL), NULL, (NULL)) /* fused: (exp(logp) - onehot(target)) * dloss / rows */ \
  X(SUM,          "sum",          1, P_GRAD, A_SHAPE, (NULL), NULL, (NULL)) /* sum to shape a.shape (dims of size 1 or missing) */ \
  X(BROADCAST,    "broadcast",    1, P_GRAD, A_SHAPE, (NULL), NULL, (NULL)) /* broadcast to shape a.shape */ \
  X(RESHAPE,      "reshape",      1, P_GRAD | P_VIEW | P_FOLD, A_SHAPE, (NULL), NULL, (NULL)) /* same elements, shape a.shape */ \
  X(TRANSPOSE,    "transpose",    1, P_GRAD | P_FOLD, A_PERM, (NULL), NULL, (NULL)) /* permute dims by a.perm */ \
  X(SLICE,        "slice",        1, P_GRAD | P_FOLD, A_SLICE, (NULL), NULL, (NULL)) /* a.len items from a.start along a.axis */ \
  X(PAD,          "pad",          1, 0, A_PAD, (NULL), NULL, (NULL)) /* inverse of slice: zeros around, shape a.shape */ \
  X(CONCAT,       "concat",       2, P_GRAD | P_FOLD, A_AXIS, (NULL), NULL, (NULL)) /* in[0], in[1] joined along a.axis */ \
  X(TRIU_MASK,    "triu_mask",    0, P_LEAF | P_FOLD, A_NONE, (NULL), NULL, (NULL)) /* (T, T): 0 on and below the diagonal, -inf above */ \
  X(CAUSAL_MASK,  "causal_mask",  0, P_LEAF, A_NONE, (NULL), NULL, (NULL)) /* step program: (T, max_seq), 0 where column j <= pos + row i, -inf elsewhere */ \
  X(SLICE_POS,    "slice_pos",    1, 0, A_AXIS, (NULL), NULL, (NULL)) /* step program: T rows from row pos along a.axis of a table */ \
  X(KV_WRITE,     "kv_write",     2, 0, A_AXIS, (NULL), NULL, (NULL)) /* step program: cache in[0] with in[1]'s T rows written at pos along a.axis */ \
  X(LITERAL,      "literal",      0, P_LEAF | P_FOLD, A_LITERAL, (NULL), NULL, (NULL)) /* a.data: values folded at compile time, a static array */ \
  X(STEP,         "step",         1, P_LOOP | P_GRAD, A_NONE, (NULL), NULL, (NULL)) /* body: x[t] */ \
  X(CARRY,        "carry",        2, P_LOOP | P_GRAD | P_UNIQUE, A_NONE, (NULL), NULL, (NULL)) /* body: carried state (init, next) */ \
  X(STACK,        "stack",        1, P_LOOP | P_GRAD, A_NONE, (NULL), NULL, (NULL)) /* top: (T, ...) stack of a body node */ \
  X(FINAL,        "final",        1, P_LOOP | P_GRAD, A_NONE, (NULL), NULL, (NULL)) /* top: carry after the last step */ \
  X(LAST_STEP,    "last_step",    1, 0, A_NONE, (NULL), NULL, (NULL)) /* x[T - 1] of a (T, ...) tensor, as (1, ...): a view */

typedef enum {
#define X(id, text, nin, props, attr, args, value, grad) OP_##id,
  OPS(X)
#undef X
  NOPS
} Op;

typedef struct {
  const char *name;
  int nin;                  /* fixed number of inputs */
  int props;
  AttrKind attr;
  const char *arg[MAXIN];   /* elementwise: input names in a kernel */
  const char *value;        /* elementwise: the C template */
  const char *grad[MAXIN];  /* per input: the gradient template, or NULL */
} OpInfo;

extern const OpInfo op_info[NOPS];
bool op_is(Op op, int prop);
/* "f" and "lmc_" for an f32 program, "" for an f64 one: $f and $v of a template. */
const char *libm_suffix(DType real);
const char *fast_prefix(DType real);
/* The value template of elementwise op `op` with $0, $1 replaced by x[0],
 * x[1], $i by idx and $s by sfx, for a program of float type `real`; a
 * malloc'ed string. */
char *op_c_expr(Op op, DType real, const char *const *x, const char *idx, const char *sfx);

/* -------------------------------------------------------------- shapes */

typedef struct {
  int rank;
  int dim[MAXRANK];   /* static size; times T where the seq bit is set */
  unsigned seq;       /* bit i: dim i scales with the sequence length */
  int off[MAXRANK];   /* added to a sequence dim: dim[i]*T + off[i] (T - 1 of
                         h[1:]); 0 where the seq bit is clear */
} Shape;

Shape shape_make(int rank, const int *dim, unsigned seq);
bool shape_eq(const Shape *a, const Shape *b);
int64_t shape_numel(const Shape *s, int T);     /* elements at sequence length T */
int shape_seqpow(const Shape *s);                /* power of T in the element count */
const char *shape_str(const Shape *s);           /* "(T, 20, 200)", static buffer ring */
const char *dim_str(const Shape *s, int i);      /* "20", "T" or "20*T" */

/* mono.c: the size algebra.  Every size and stride of a shape is
 * c * T^k + d in the run-time sequence length T: a monomial, shifted by d
 * only where a sequence dimension is (T - 1 rows); d = 0 when k = 0. */
typedef struct {
  int64_t c;
  int k;
  int64_t d;
} Mono;

Mono mono(int64_t c, int k);
Mono mmul(Mono a, Mono b);
Mono madd(Mono a, Mono b);
Mono mdiv(Mono a, Mono b);
bool meq(Mono a, Mono b);
bool mone(Mono a);
Mono mdim(const Shape *s, int i);
Mono mnumel(const Shape *s);
size_t mval(Mono m, int T);
void contig(const Shape *s, Mono *st);   /* row-major strides of a contiguous tensor */

/* ------------------------------------------------------------------ IR */

/* Parameter initialisers, as the PyTorch example and torch.nn apply them. */
typedef enum {
  INIT_ZERO,       /* zeros */
  INIT_ONE,        /* ones */
  INIT_UNIFORM,    /* U(-init_a, init_a) */
  INIT_XAVIER,     /* xavier_uniform over the last two dims */
  INIT_NORMAL,     /* N(0, init_a^2) */
} Init;

typedef struct {
  int axis;               /* softmax, slice, concat */
  int start, len;         /* slice; len < 0 means -len * T (+ len_off) */
  int len_off;            /* slice: added to a length in T (T - 1: len -1, len_off -1) */
  int ta, tb;             /* matmul: transpose a, transpose b */
  int perm[MAXRANK];      /* transpose */
  Shape shape;            /* reshape, sum, broadcast, pad target; input/param shape */
  double f, f2;           /* const value, arange start/step, dropout p, eps */
  const char *name;       /* input, param: state_dict name; dropout: hyper-parameter */
  Init init;              /* param */
  double init_a;          /* param: uniform bound, normal std */
  int id;                 /* dropout: stream number, stable across passes */
  int id2;                /* dropout: run-time probability slot */
  bool state;             /* input: carried across batches (hidden state) */
  bool view;              /* slice: no copy, a pointer into in[0] (set by passes) */
  bool rows;              /* embedding_grad: the rows ids read, not the table (row-grad) */
  const double *data;     /* literal: the values, row-major (exact in the node's dtype) */
} Attr;

typedef struct {
  Op op;
  DType dtype;
  Shape shape;            /* per-step shape for body nodes */
  int nin;
  int in[MAXIN];
  int loop;               /* 0: top level; k: body of loop k */
  Attr a;
  const char *file;       /* Lua location that built the node */
  int line;
  const char *scope;      /* the layer that built it ("encoder", "rnn.l0"; "" at
                             top level); a backward node has its forward
                             node's, a node a pass makes its anchor's */
  bool dead;              /* removed by a pass; skipped by everything */
  int group;              /* 0, or the fused kernel (1..g->ngroup) that computes it */
} Node;

typedef struct {
  bool reverse;           /* t runs from T-1 down to 0 */
} Loop;

typedef struct {
  const char *name;       /* "loss", "logp", a state input's name, "grad:<param>" */
  int node;
} Output;

typedef struct {
  const char *name;       /* hyper-parameter */
  const char *value;      /* as written after -D or as the default */
} Hyper;

/* Where a node's value lives (place.c). */
enum { L_NONE, L_WORK, L_PARAM, L_GRAD, L_STATE, L_TOKENS, L_TARGETS, L_CONST };

typedef struct {
  int kind;
  size_t off;             /* element offset in c->work, c->param, c->grad, c->state or the table */
  int table;              /* L_CONST: lmc_const<table>, an index into Layout.table */
  bool stacked;           /* a body node: step t at + t * step */
  bool last;              /* plus (T - 1) * step: the last slot of a forward loop */
  Mono step;              /* per-step size of a stacked buffer */
  int node;               /* whose buffer this is: the node, or a view's source's (run()'s pointer to it) */
} Loc;
bool same_loc(const Loc *a, const Loc *b);   /* the same bytes, neither stored per step */

/* The memory of one program (plan.c, place.c): where each node's value
 * lives.  plan-memory makes off, grad_out and one_step with buffers
 * sharing bytes by lifetime (shared); without it, plan_arena makes them
 * as a bump layout that reuses nothing.  plan_arena adds the stand-in
 * targets and the scratch block after the buffers, and place resolves
 * every live node, views included, to its Loc. */
typedef struct {
  size_t *off;            /* per node: its own buffer's offset in c->work, or
                             SIZE_MAX for none (or one in c->grad) */
  int *grad_out;          /* per node: the "grad:" output whose c->grad slot
                             it is computed in (outside the arena), or -1 */
  bool *one_step;         /* per body node: stored for the current step only */
  size_t numel;           /* the buffers: the peak of the plan */
  size_t naive;           /* every buffer its own region, for comparison */
  bool shared;            /* made by plan-memory; false: the bump layout */
  size_t targets_off;     /* stand-in targets when run() gets NULL, or SIZE_MAX */
  size_t scratch_off;     /* k_logits_nll's block of logits (fuse_nll.c), or SIZE_MAX */
  size_t work_numel;      /* the arena: buffers, targets and scratch */
  Loc *loc;               /* per node: where its value lives; L_NONE: dead or skipped */
  bool *skip;             /* per node: no output needs it and it reads a value
                             only a fused kernel sees: not emitted */
} Plan;

/* Size limits, checked as each node is made (ir.c); a graph beyond one is
 * the graph file's mistake, reported at the line that made the node (a
 * runaway loop, a hyper-parameter that makes a shape too large).
 * LMC_MAX_NODES counts every node of one specialisation, autodiff's and the
 * passes' too: the Transformer at nlayers=4000 makes 392049 in training.
 * LMC_MAX_BYTES bounds one tensor's buffer (times max_seq for a loop value
 * stored for every step), all parameters together, and the work arena; it
 * keeps every element count and byte offset the compiler and the emitted C
 * compute far inside int64_t and size_t. */
enum { LMC_MAX_NODES = 1000000 };
#define LMC_MAX_GIB 64
#define LMC_MAX_BYTES ((int64_t)LMC_MAX_GIB << 30)

typedef struct Graph {
  Node *node;
  int nnode, capnode;
  Loop *loop;             /* loop[0] unused: top level */
  int nloop, caploop;
  Output *out;
  int nout, capout;
  int max_seq;            /* compiled bptt: T <= max_seq */
  int batch;              /* batch size of this specialisation */
  DType real;             /* DT_F32 or DT_F64: dtype of every float node */
  const char *kind;       /* "LSTM", "GRU", "RNN_TANH", "RNN_RELU", "Transformer" */
  int ndropout;           /* dropout streams */
  int ngroup;             /* fused kernels (Node.group) */
  Plan *plan;             /* set by plan-memory, or by plan_arena (plan.c) */
  StrMap param_names;     /* parameter name -> node */
  StrMap out_names;       /* output name -> index in out */
  int64_t param_bytes;    /* all parameters (at most LMC_MAX_BYTES) */
  int backward_start;     /* the first node autodiff appended; 0: no backward */
  /* where new nodes are being built */
  int cur_loop;
  int cur_loop_start;     /* first node of the loop being built */
  const char *cur_file;
  int cur_line;
  const char *cur_scope;  /* never NULL: "" at top level */
} Graph;

/* A graph and its arrays live in the compilation arena; so must every name
 * given to ir_input, ir_param, ir_output or put in an Attr or g->kind. */
Graph *ir_new(int max_seq, int batch, DType real);
Node *ir_get(Graph *g, int id);
/* Appends a node built by op with inputs in[0..nin) and attributes *a (may be
 * NULL), infers its dtype and shape, reports a user error when the inputs do
 * not fit the op, and returns its index. */
int ir_op(Graph *g, Op op, int nin, const int *in, const Attr *a);
int ir_op1(Graph *g, Op op, int x, const Attr *a);
/* mono.c, for ir_op: a user error at the graph line unless op may read
 * in[0..nin) and node n's shape stays in the size algebra (a shifted
 * sequence dimension: read by elementwise ops, slice, pad, sum and
 * broadcast only; at top level; no other sequence dimension). */
void mono_check_inputs(Graph *g, Op op, int nin, const int *in);
void mono_check_node(Graph *g, Node *n);
int ir_op2(Graph *g, Op op, int x, int y, const Attr *a);
int ir_const(Graph *g, double v);
int ir_input(Graph *g, const char *name, DType dt, Shape s, bool state);
int ir_param(Graph *g, const char *name, Shape s, Init init, double init_a);
void ir_output(Graph *g, const char *name, int node);
int ir_find_output(Graph *g, const char *name);   /* node, or -1 */
void ir_drop_output(Graph *g, const char *name);
int ir_find_param(Graph *g, const char *name);    /* node, or -1 */

/* Loops: begin, build STEP / CARRY nodes and the body, set each carry's
 * next value, end, then STACK / FINAL nodes at top level. */
int ir_loop_begin(Graph *g, bool reverse);
int ir_step(Graph *g, int seq_tensor);
int ir_carry(Graph *g, int init);
void ir_carry_next(Graph *g, int carry, int next);   /* copies a next value made before the carry */
int ir_body_copy(Graph *g, int x);                   /* x copied by a node of the loop being built */
void ir_loop_end(Graph *g);
int ir_stack(Graph *g, int body_node);
int ir_final(Graph *g, int carry);

_Noreturn void ir_error(Graph *g, const char *fmt, ...);      /* at g->cur_file:cur_line */
_Noreturn void ir_error_node(Graph *g, int node, const char *fmt, ...);

/* -------------------------------------------------------------- verify.c */

/* Checks the invariants every pass relies on; returns 0 or reports the
 * first broken one into err and returns -1. */
int verify(Graph *g, char *err, size_t errlen);
void verify_or_die(Graph *g, const char *after);
/* The inputs the emitted C feeds a program: "tokens" and "targets" (i32)
 * and state; another is the user's mistake, reported at its line
 * (--emit=ir and --emit=dot take any). */
void verify_c_inputs(Graph *g);

/* --------------------------------------------------------------- print.c */

void print_ir(Graph *g, FILE *f);        /* the text format of docs/ir.md */

/* ---------------------------------------------------------------- attr.c */

void attr_print(const Node *n, FILE *f);          /* as print_ir writes them */
char *attr_comment(const Node *n);               /* as a kernel's comment in the emitted C: malloc'ed */
bool same_attr(const Node *a, const Node *b);     /* same op, type, shape and attributes that matter to it */
uint64_t attr_hash(const Node *n);                /* equal for nodes same_attr finds equal */

/* ------------------------------------------------------------ lua_front.c */

typedef struct {
  const char *name;
  const char *value;
} Define;                                  /* -D name=value */

typedef struct {
  const char *path;       /* graph file */
  const char *libdir;     /* graphs/lib */
  Define *def;
  int ndef;
  int batch;              /* batch() in the graph file */
  int max_seq;            /* bptt unless given by -D bptt= */
  bool training;          /* false: dropout is the identity */
  bool kv_cache;          /* the step program: attention over key/value caches (kv_cache.c) */
  DType real;
  size_t mem_limit;       /* bytes of Lua heap */
  long instr_limit;       /* Lua VM instructions */
  double time_limit;      /* seconds of wall clock per run of the graph file; 0: 10 */
} FrontOptions;

/* Runs the graph file in a sandbox and returns the graph it built; the
 * hyper-parameters as finally bound are stored in *hyper. */
Graph *front_load(const FrontOptions *o, Hyper **hyper, int *nhyper);

/* ------------------------------------------------------------ autodiff.c */

/* Appends the backward graph: outputs "grad:<name>" for every parameter,
 * the gradient of output "loss". */
void autodiff(Graph *g);

/* -------------------------------------------------------------- passes.c */

/* An optimization pass; `lmc passes` lists them.  Each lives in a file of
 * its own and runs over forward and backward together. */
typedef struct {
  const char *name;
  const char *what;        /* one line */
  int level;               /* lowest -O level that runs it */
  void (*run)(Graph *g);
} Pass;

extern const Pass passes[];
extern const int npasses;
const Pass *find_pass(const char *name);

/* Who reads each node: u[i][0..n[i]) are the nodes that have node i as an
 * input (once per input slot) and that some output depends on; outputs
 * are not users. */
typedef struct {
  int nnode;
  int *n;                  /* nusers per node */
  int **u;
  bool *out;               /* node is a graph output */
  bool *live;              /* some output depends on the node */
  int *idle_start;         /* the readers no output depends on, of node i: */
  int *idle;               /* idle[idle_start[i] .. idle_start[i + 1]) */
} Users;
Users users_make(Graph *g);
void users_free(Users *u);
/* Marks node i dead, with the nodes no output depends on that read it,
 * directly or through others such (dce would remove them; the verifier
 * must not see them read a dead node).  Walks u->idle: as many steps as
 * it kills nodes. */
void kill_node(Graph *g, const Users *u, int i);
void replace_uses(Graph *g, int from, int to);   /* inputs and outputs */
bool is_view(const Graph *g, const Node *n);      /* shares in[0]'s bytes: no kernel, no buffer */
void mark_live(const Graph *g, bool *live);      /* outputs' entries set: closes over their inputs */

void fold_constants(Graph *g);   /* fold.c */
void cse(Graph *g);              /* cse.c */
void dce(Graph *g);              /* dce.c */
void fuse_add_dropout(Graph *g); /* fuse_dropout.c */
void fuse_nll(Graph *g);         /* fuse_nll.c */
void fuse_matmul_bias(Graph *g); /* fuse_bias.c */
void fuse_elementwise(Graph *g); /* fuse_elem.c */
void row_grad(Graph *g);         /* row_grad.c */
void plan_memory(Graph *g);      /* plan.c */
void last_step(Graph *g);        /* last_step.c */

/* fold.c: the largest folded table written into the emitted file, in
 * elements; bigger constants are computed at run time. */
enum { FOLD_MAX_TABLE = 1 << 18 };

/* ---------------------------------------------------------------- plan.c */

/* need[i]: node i has a work buffer of its own: it computes a value that
 * is not a view, an input, a parameter or a literal, and a fused kernel
 * that computes it also stores it (an output, or read outside the kernel). */
bool *buffers_needed(Graph *g);
/* Elements of node i's buffer: its shape at T = max_seq, times max_seq for
 * a body node stored for every step. */
size_t buffer_numel(const Graph *g, int i);
/* Where each fused kernel runs: anchor[k] for group k (1..ngroup) is its
 * last live member (its log_softmax for log_softmax fused with its nll
 * gradient, see fuse_nll.c), -1 when all are dead; ngroup + 1 entries. */
int *group_anchors(const Graph *g);
/* Rows of a product of logits at T = max_seq: its numel over its last dim. */
size_t logit_rows(const Graph *g, const Node *prod);
enum { LOGIT_BLOCK = 1024 };   /* columns of logits per block in k_logits_nll */
/* The work arena in every configuration: plan-memory's plan, or without
 * it a bump layout (a user error past LMC_MAX_BYTES), then the stand-in
 * targets and the scratch block; sets g->plan but for loc and skip. */
void plan_arena(Graph *g);

/* --------------------------------------------------------------- place.c */

/* A parameter in the parameter block, and its gradient in the gradient
 * block. */
typedef struct {
  const char *name;
  int node;               /* first PARAM node in p->train */
  Shape shape;
  size_t off, numel;
  /* its gradient in c->grad: at goff, gnumel reals; with rows (row-grad)
   * max_rows rows of row_len, then their ids and count */
  size_t goff, gnumel;
  bool rows;
  size_t max_rows, row_len;
} Param;

/* What the programs of one emitted file share: the parameter block, the
 * gradient block and the folded constant tables. */
typedef struct {
  Param *param;
  int nparam;
  StrMap index;           /* name -> index in param */
  int nalias;             /* tied names ("alias:<name>" outputs) after the parameters */
  size_t param_numel;
  size_t grad_numel;      /* the gradient block: param_numel unless a gradient is rows */
  int ntable;             /* folded tables (literal nodes) of every program, one per distinct table */
  const double **table;
  size_t *table_n;
} Layout;

typedef struct Program Program;
/* The memory of a program to be emitted as C: lays out p->layout, then
 * gives each specialisation its arena (plan_arena) and every live node of
 * it its Loc (g->plan->loc).  Reports the user's errors: a work arena
 * past the limit, inputs the emitted C does not take. */
void place(Program *p);
Param *find_param(const Layout *l, const char *name);
/* s's rank, for a tensor descriptor of the runtime (what, name: for the
 * compiler bug it die()s with: a sequence-length dim, rank over 4). */
int desc_rank(const Shape *s, const char *what, const char *name);

/* ------------------------------------------------------------ kv_cache.c */

/* Whether the positions of gen graph g (as the front end built it, loss
 * dropped) meet only in causal attention, so that a step program with
 * key/value caches computes what it computes. */
bool kv_cacheable(const Graph *g);
/* Under FrontOptions.kv_cache: bmm operand b, when its rows are the
 * positions, as cache number k with b's rows written at pos; else b. */
int kv_cache_rows(Graph *g, int b, int k);
/* ir.c's shape rule for causal_mask, slice_pos and kv_write. */
bool kv_infer(Graph *g, Node *n, const Shape *x, const Shape *y);

/* --------------------------------------------------------------- stats.c */

void print_stats(Program *p, FILE *f);

/* --------------------------------------------------------- kernel_name.c */

/* The C name of the kernel that computes node id of program prog ("train",
 * "eval", "gen"), or the fused group that id anchors: prog, the node's
 * scope as an identifier (kernel_scope) and what the kernel computes
 * (kernel_what), e.g. "train_rnn_l0_cell", "train_decoder_matmul_bias_grad".
 * used counts the kernels given each name so far (start it empty, one per
 * program): a name given before gets a suffix _2, _3, ... (kernel_numbered),
 * so calls in node order name deterministically. */
const char *kernel_name(const Graph *g, int id, const char *prog, StrMap *used);
const char *kernel_ident(const char *scope);              /* "encoder.layers.0.norm1": "encoder_l0_norm1" */
const char *kernel_scope(const Graph *g, int id);          /* the node's scope as kernel_ident writes it */
const char *kernel_what(const Graph *g, int id);           /* "matmul_grad", "cell" */
const char *value_what(const Graph *g, int id);            /* the node's own op, not its group's: "sigmoid" */
const char *kernel_numbered(StrMap *used, const char *base);
/* The name (before numbering) of one kernel standing for n whose code
 * reads the same, of the given scopes and whats: prog, the scope words they
 * all start and end with, the what words they all start with (the first's
 * what if none): rnn_l0 carry and rnn_l1 carry are rnn carry. */
const char *kernel_shared_name(const char *prog, int n, const char *const *scope, const char *const *what);

/* ------------------------------------------------------------ emit_dot.c */

void emit_dot(Graph *g, FILE *f);

/* ----------------------------------------------------- emit/ (model.c, text.c) */

struct Program {
  Graph *train;           /* batch_size, forward and backward */
  Graph *eval;            /* eval batch, forward only */
  Graph *gen;             /* batch 1, forward only */
  Graph *sample;          /* SAMPLE_BATCH or the smaller eval batch, forward only: generate --samples N; or NULL */
  Graph *step;            /* batch 1, forward only, new positions over key/value caches (kv_cache.c); or NULL */
  Graph *steps;           /* the step program at the sample program's batch: generate --samples N; or NULL */
  Hyper *hyper;
  int nhyper;
  const char *flags;      /* the lmc command line, for `info` and checkpoints */
  const char *source;     /* graph file name */
  Layout *layout;         /* place() */
};

/* The programs in the order the emitted file defines them, and their
 * names (each a prefix of its kernels' names, none a prefix of another
 * followed by '_'). */
enum { NPROGRAM = 6 };
extern const char *const program_name[NPROGRAM];
void program_graphs(const Program *p, Graph *gs[NPROGRAM]);

void emit_c(Program *p, FILE *out);

/* s as emit_c writes it inside a C string literal (literal) or a block
 * comment: whatever s holds, the literal or comment does not end early.
 * Returns a malloc'ed string. */
char *emit_c_escape(const char *s, bool literal);

#endif
