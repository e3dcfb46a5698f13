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
};

/*     name          text            inputs  properties */
#define OPS(X) \
  X(INPUT,        "input",        0, P_LEAF) /* named run-time input: tokens, targets, state */ \
  X(PARAM,        "param",        0, P_LEAF) /* trained parameter, named as PyTorch's state_dict */ \
  X(CONST,        "const",        0, P_LEAF | P_FOLD) /* scalar constant a.f, broadcast */ \
  X(ARANGE,       "arange",       0, P_LEAF | P_FOLD) /* a.f + i * a.f2, i < dim 0 */ \
  X(NEG,          "neg",          1, P_ELEM | P_FOLD | P_GRAD) /* -a */ \
  X(EXP,          "exp",          1, P_ELEM | P_FOLD | P_GRAD) /* exp(a) */ \
  X(LOG,          "log",          1, P_ELEM | P_FOLD | P_GRAD) /* log(a) */ \
  X(SQRT,         "sqrt",         1, P_ELEM | P_FOLD | P_GRAD) /* sqrt(a) */ \
  X(SIN,          "sin",          1, P_ELEM | P_FOLD | P_GRAD) /* sin(a) */ \
  X(COS,          "cos",          1, P_ELEM | P_FOLD | P_GRAD) /* cos(a) */ \
  X(TANH,         "tanh",         1, P_ELEM | P_FOLD | P_GRAD) /* tanh(a) */ \
  X(SIGMOID,      "sigmoid",      1, P_ELEM | P_FOLD | P_GRAD) /* 1 / (1 + exp(-a)) */ \
  X(RELU,         "relu",         1, P_ELEM | P_FOLD | P_GRAD) /* max(a, 0) */ \
  X(ADD,          "add",          2, P_ELEM | P_FOLD | P_GRAD) /* a + b */ \
  X(SUB,          "sub",          2, P_ELEM | P_FOLD | P_GRAD) /* a - b */ \
  X(MUL,          "mul",          2, P_ELEM | P_FOLD | P_GRAD) /* a * b */ \
  X(DIV,          "div",          2, P_ELEM | P_FOLD | P_GRAD) /* a / b */ \
  X(DROPOUT,      "dropout",      1, P_ELEM | P_GRAD) /* a * mask / (1 - p); p is run-time slot a.id2 */ \
  X(TANH_GRAD,    "tanh_grad",    2, P_ELEM) /* dy * (1 - y*y), in: dy, y */ \
  X(SIGMOID_GRAD, "sigmoid_grad", 2, P_ELEM) /* dy * y * (1 - y), in: dy, y */ \
  X(RELU_GRAD,    "relu_grad",    2, P_ELEM) /* y > 0 ? dy : 0, in: dy, y */ \
  X(DROPOUT_GRAD, "dropout_grad", 1, P_ELEM) /* dy * mask / (1 - p), the mask redrawn */ \
  X(ADD_DROPOUT,  "add_dropout",  2, P_ELEM) /* a + dropout(b), fused; mask over b's elements */ \
  X(DROPOUT_ADD,  "dropout_add",  2, P_ELEM) /* dropout(a + b), fused; mask over y's elements */ \
  X(MATMUL,       "matmul",       2, P_GRAD) /* a @ b, a.ta / a.tb transpose */ \
  X(MATMUL_BIAS,  "matmul_bias",  3, 0) /* a @ b + c, c broadcast to y (a bias): gemm with beta 1 */ \
  X(BMM,          "bmm",          2, P_GRAD) /* batched a @ b over leading dims */ \
  X(EMBEDDING,    "embedding",    2, P_GRAD) /* rows of in[0] (V, E) picked by i32 in[1] */ \
  X(EMBEDDING_GRAD,"embedding_grad",2, 0) /* scatter-add dy in[0] into (V, E) rows in[1] */ \
  X(SOFTMAX,      "softmax",      1, P_GRAD) /* along the last dim */ \
  X(LOG_SOFTMAX,  "log_softmax",  1, P_GRAD) /* along the last dim */ \
  X(SOFTMAX_GRAD, "softmax_grad", 2, 0) /* in: dy, y = softmax */ \
  X(LOG_SOFTMAX_GRAD,"log_softmax_grad",2, 0) /* in: dy, y = log_softmax */ \
  X(NORMALIZE,    "normalize",    1, P_GRAD) /* (a - mean) / sqrt(var + a.f), last dim */ \
  X(NORMALIZE_GRAD,"normalize_grad",2, 0) /* in: dy, a */ \
  X(NLL_LOSS,     "nll_loss",     2, P_GRAD) /* mean of -in[0][.., in[1][..]] */ \
  X(NLL_LOSS_GRAD,"nll_loss_grad",3, 0) /* in: dloss (scalar), logp, target */ \
  X(NLL_LOG_SOFTMAX_GRAD,"nll_log_softmax_grad",3, 0) /* fused: (exp(logp) - onehot(target)) * dloss / rows */ \
  X(SUM,          "sum",          1, P_GRAD) /* sum to shape a.shape (dims of size 1 or missing) */ \
  X(BROADCAST,    "broadcast",    1, P_GRAD) /* broadcast to shape a.shape */ \
  X(RESHAPE,      "reshape",      1, P_GRAD | P_VIEW | P_FOLD) /* same elements, shape a.shape */ \
  X(TRANSPOSE,    "transpose",    1, P_GRAD | P_FOLD) /* permute dims by a.perm */ \
  X(SLICE,        "slice",        1, P_GRAD | P_FOLD) /* a.len items from a.start along a.axis */ \
  X(PAD,          "pad",          1, 0) /* inverse of slice: zeros around, shape a.shape */ \
  X(CONCAT,       "concat",       2, P_GRAD | P_FOLD) /* in[0], in[1] joined along a.axis */ \
  X(TRIU_MASK,    "triu_mask",    0, P_LEAF | P_FOLD) /* (T, T): 0 on and below the diagonal, -inf above */ \
  X(LITERAL,      "literal",      0, P_LEAF | P_FOLD) /* a.data: values folded at compile time, a static array */ \
  X(STEP,         "step",         1, P_LOOP | P_GRAD) /* body: x[t] */ \
  X(CARRY,        "carry",        2, P_LOOP | P_GRAD) /* body: carried state (init, next) */ \
  X(STACK,        "stack",        1, P_LOOP | P_GRAD) /* top: (T, ...) stack of a body node */ \
  X(FINAL,        "final",        1, P_LOOP | P_GRAD) /* top: carry after the last step */ \
  X(LAST_STEP,    "last_step",    1, 0) /* x[T - 1] of a (T, ...) tensor, as (1, ...): a view */

typedef enum {
#define X(id, text, nin, props) OP_##id,
  OPS(X)
#undef X
  NOPS
} Op;

typedef struct {
  const char *name;
  int nin;      /* fixed number of inputs */
  int props;
} OpInfo;

extern const OpInfo op_info[NOPS];
bool op_is(Op op, int prop);

/* -------------------------------------------------------------- shapes */

typedef struct {
  int rank;
  int dim[MAXRANK];   /* static size; times T where the seq bit is set */
  unsigned seq;       /* bit i: dim i scales with the sequence length */
} Shape;

Shape shape_make(int rank, const int *dim, unsigned seq);
bool shape_eq(const Shape *a, const Shape *b);
int64_t shape_numel(const Shape *s, int T);     /* elements at sequence length T */
int shape_seqpow(const Shape *s);                /* power of T in the element count */
const char *shape_str(const Shape *s);           /* "(T, 20, 200)", static buffer ring */
const char *dim_str(const Shape *s, int i);      /* "20", "T" or "20*T" */

/* ------------------------------------------------------------------ IR */

/* Parameter initialisers, as the PyTorch example and torch.nn apply them. */
typedef enum {
  INIT_ZERO,       /* zeros */
  INIT_ONE,        /* ones */
  INIT_UNIFORM,    /* U(-init_a, init_a) */
  INIT_XAVIER,     /* xavier_uniform over the last two dims */
} Init;

typedef struct {
  int axis;               /* softmax, slice, concat */
  int start, len;         /* slice; len < 0 means -len * T */
  int ta, tb;             /* matmul: transpose a, transpose b */
  int perm[MAXRANK];      /* transpose */
  Shape shape;            /* reshape, sum, broadcast, pad target; input/param shape */
  double f, f2;           /* const value, arange start/step, dropout p, eps */
  const char *name;       /* input, param: state_dict name; dropout: hyper-parameter */
  Init init;              /* param */
  double init_a;          /* param: uniform bound */
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

/* The static memory plan of one program (plan.c): where each node's value
 * lives in the work arena. */
typedef struct {
  size_t *off;            /* per node: offset in c->work, or SIZE_MAX for none */
  int *grad_out;          /* per node: the "grad:" output whose c->grad slot
                             it is computed in (outside the arena), or -1 */
  bool *one_step;         /* per body node: stored for the current step only */
  size_t numel;           /* the arena: the peak of the plan */
  size_t naive;           /* every buffer its own region, for comparison */
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
  Plan *plan;             /* set by plan-memory; NULL: every buffer its own region */
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
void ir_carry_next(Graph *g, int carry, int next);
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

/* --------------------------------------------------------------- print.c */

void print_ir(Graph *g, FILE *f);        /* the text format of docs/ir.md */

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
bool same_attr(const Node *a, const Node *b);     /* attributes that matter to op */
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

/* --------------------------------------------------------------- stats.c */

typedef struct Program Program;
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
  Hyper *hyper;
  int nhyper;
  const char *flags;      /* the lmc command line, for `info` and checkpoints */
  const char *source;     /* graph file name */
};

void emit_c(Program *p, FILE *out);

/* s as emit_c writes it inside a C string literal (literal) or a block
 * comment: whatever s holds, the literal or comment does not end early.
 * Returns a malloc'ed string. */
char *emit_c_escape(const char *s, bool literal);

#endif
