/*
 * emit.h: the C emitter's internal header, shared by the files of
 * compiler/emit/ (lmc.h declares only emit_c and emit_c_escape).
 *
 * A Program holds the same network specialised three times (train: forward
 * and backward at the training batch; eval and gen: forward only).  emit_c
 * writes them as one standalone C file that includes lmc_rt.h and
 * <cblas.h> and defines `lmc_model`, the descriptor the runtime drives.
 * The file reads top to bottom: parameter, hyper-parameter and dropout
 * tables; for each program its kernels, its state table and its run(); the
 * model.  The optimizer is the runtime's (runtime/optimizer.c), driven by
 * the parameter table.  docs/emitted-code.md describes it for readers.
 *
 * Every live node that computes something gets one `static void` kernel
 * named after its layer and op (train_rnn_l0_cell, kernel_name.c), preceded
 * by a comment with its shapes and the Lua line that built it (kernels that
 * read the same are defined once in the file), and specialised to its
 * shapes: static sizes are literals, sizes that scale with the sequence
 * length are written in terms of the kernel's argument T.  Every size in a shape is a monomial
 * c * T^k, so the emitter computes with those (Mono), never with strings.
 * Elementwise ops, sums, broadcasts, transposes, slices and concatenations
 * are all one loop nest (Nest): a list of loop sizes and, for each operand,
 * its stride along each loop; adjacent loops that walk every operand
 * contiguously are merged, so an unbroadcast add is one flat loop.
 *
 * Views (reshape, step, stack, final) emit no kernel: they are pointers
 * into their source's buffer (Loc).  A loop becomes a C for loop around
 * the kernels of its body; a body node's buffer holds max_seq copies of its
 * per-step value, and its kernel is called with pointers offset to step t.
 * run() names every buffer it passes (pointers.c).
 *
 * Buffers: parameters live in c->param, hidden state in c->state, tokens
 * and targets are run()'s arguments, every other value in c->work; where
 * each node's value lives (its Loc) is decided before emission, by
 * plan-memory or plan_arena (plan.c) and place (place.c): the emitter
 * only reads g->plan.
 *
 * The emitter's state comes in three lifetimes: the Model (one per emitted
 * file: the parameter and gradient layout, the dropout slots, the folded
 * tables), the Prog (one per program: its graph, where each value lives,
 * each kernel's signature) and the Text (one kernel's body, or run()'s,
 * while it is written: what that text mentions).
 *
 * The output is deterministic: everything is emitted in node order and
 * nothing depends on addresses, hashing or time.
 */
#ifndef EMIT_H
#define EMIT_H

#include "../lmc.h"

/* ------------------------------------------------------------ text.c */

typedef struct {
  char *s;
  size_t len, cap;
} Buf;

void bprintf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void indent(Buf *b, int depth);
const char *bstr(Buf *b);
void bfree(Buf *b);
void bquote(Buf *b, const char *s);     /* a C string literal */
void bcomment(Buf *b, const char *s);   /* text inside a block comment: never closes it */
void bdouble(Buf *b, double v);         /* a C literal that keeps v's value (and sign of zero) */

/* A short C expression (a size, a pointer, an index), by value: it lives
 * as long as the caller's copy, so any number of them can be arguments of
 * one bprintf.  sprint appends to one and die()s rather than truncate. */
enum { STR_MAX = 512 };
typedef struct {
  char s[STR_MAX];
} Str;

void sprint(Str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------ size.c */

/* ------------------------------------------------------------ the emitter's state */

/* What a kernel parameter receives at the call. */
typedef enum {
  A_PTR,                  /* node's value (at step t in a loop) */
  A_CARRY,                /* carry node's source: its initial value at the first step, else next at t - 1 */
  A_KEY,                  /* dropout node's mask key */
  A_P,                    /* dropout node's probability */
  A_IDX0,                 /* t * numel of node `shape`: where this step's mask indices start */
  A_COL0,                 /* c->col0: this rank's first column in the global batch */
  A_COL_REST,             /* c->col_rest: the global batch's columns on the other ranks */
  A_THREADS,              /* c->threads, for a kernel's parallel loop */
  A_SCRATCH,              /* the program's kernel scratch in c->work (Plan.scratch_off) */
  A_POS,                  /* c->pos: the step program's first new position */
  A_BF16,                 /* node's bf16 copy: a parameter's in c->param16, a shadow in c->work16; NULL in fp32 mode */
  A_SCRATCH16,            /* the program's bf16 scratch in c->work16 (Prog.scratch16_off); NULL in fp32 mode */
} ArgKind;

typedef struct {
  ArgKind kind;
  int node;
  int shape;              /* A_IDX0: the node whose per-step size is the stride */
} Arg;

enum { MAXARG = 96 };

typedef struct {
  bool has;               /* the node has a kernel (a fused kernel: its anchor has) */
  int narg;
  Arg arg[MAXARG];
  char decl[MAXARG][48];
  bool T;                 /* takes int T */
  int kernel;             /* the one run() calls: index in Model.kernel */
  Shape iter;             /* a fused kernel: the shape its loop nest covers */
} Sig;

/* A kernel the file defines: one for every kernel whose parameters and
 * body read the same, in the section of the program that uses it first. */
typedef struct {
  const char *own;        /* the name it would have alone (kernel_name): train_rnn_l0_carry */
  const char *scope, *what;
} KernelUse;

typedef struct {
  const char *name;       /* its C name (name_kernels, once every program's kernels are in) */
  const char *prog;       /* the program whose section defines it: "train", "eval", "gen" */
  const char *comment;    /* its comment, open: what it computes, its shapes, the Lua line */
  const char *text;       /* its parameter list and body */
  int nuse;
  KernelUse *use;         /* the kernels it stands for, in program and node order */
} Kernel;

/* One per emitted file: what every program shares. */
typedef struct {
  Program *p;
  const Layout *lay;      /* p->layout: the parameter and gradient blocks, the folded tables */
  /* dropout slots, recovered from the training graph's dropout nodes */
  int nslot;
  const char **slot_name;
  double *slot_default;
  /* the kernels of every program, each text once */
  Kernel *kernel;
  int nkernel;
  StrMap kernel_index;    /* text -> index in kernel */
} Model;

/* One per program being emitted. */
typedef struct {
  Model *m;
  Graph *g;
  const char *name;       /* "train", "eval", "gen" */
  bool training;          /* dropout applies */
  Loc *loc;               /* g->plan->loc: where each value lives (place.c) */
  Sig *sig;
  bool *skip;             /* g->plan->skip: not emitted */
  int *anchor;            /* per group: the member whose position runs the kernel, or -1 */
  int *member_start;      /* group k's live members, in node order: */
  int *member;            /* member[member_start[k] .. member_start[k + 1]) */
  /* --precision bf16 (single-precision programs): c->work16 holds the
   * shadows, bf16 copies that the kernel computing a value writes beside
   * it (the logits' gradient), then the scratch into which a product's
   * kernel rounds the operands that have no copy */
  bool bf16;
  size_t *shadow16;       /* per node: its shadow's offset in c->work16, or SIZE_MAX */
  size_t scratch16_off, scratch16_numel;
} Prog;

/* The text being written, one kernel's body or run()'s, and what it
 * mentions: a kernel whose body names T takes int T; run() declares w and
 * casts c, tokens and T to void by these. */
typedef struct {
  Prog *p;
  Sig *sig;               /* the kernel's signature; NULL for run() */
  bool uses_T, uses_w, uses_c, uses_tokens;
  /* run() only: the pointers it declares (pointers.c), in order of first
   * use, by what they point to: parameters, state, c->work, gradients */
  Buf decl[5];            /* pointers.c's groups: parameters, state, work, gradients, bf16 */
  StrMap given, next;     /* names declared; base name -> next number to try */
  const char **node_ptr;  /* per node (a Loc's node): the pointer to its buffer, or NULL */
  const char **grad_ptr;  /* per parameter: the pointer to its gradient, or NULL */
  const char *scratch_ptr, *targets_ptr;
  /* run() only: the parameters whose gradient node i's kernel finishes in
   * c->grad, ready_head[i], ready_next[q], ... (-1 ends), and those that
   * are ready since (each once; c->grad_ready, run.c) */
  int *ready_head, *ready_next;
  bool *announced;
  const char **bf16_ptr;  /* per node: the pointer to its bf16 copy, or NULL */
  const char *scratch16_ptr;
} Text;

/* What the model's descriptor says about one program. */
typedef struct {
  size_t work_numel;
  size_t state_numel;
  int nstate;
  bool has_backward;
  bool has_objective;     /* run() leaves the objective in c->objective */
  bool has_logp, logp_last;
  size_t logp_offset;
  size_t work16_numel;
} ProgInfo;

static inline Node *N(Prog *p, int id)
{
  return &p->g->node[id];
}

static inline Node *IN(Prog *p, Node *n, int k)
{
  return &p->g->node[n->in[k]];
}

static inline int id_of(Prog *p, Node *n)
{
  return (int)(n - p->g->node);
}

/* Node id has a buffer of its own: in c->work, or its gradient's in c->grad. */
static inline bool stored(Prog *p, int id)
{
  return p->g->plan->off[id] != SIZE_MAX || p->g->plan->grad_out[id] >= 0;
}

/* size.c: a size as a C expression (200, T, 20*T, 4*T*T); sets uses_T. */
Str mstr(Text *k, Mono m);

/* ------------------------------------------------------------ layout.c */

bool is_dropout_op(Op op);
void find_slots(Model *m);
void emit_const_tables(Model *m, Buf *out);

/* ------------------------------------------------------------ pointers.c */

void pointers_init(Text *t);
void pointers_write(Text *t, Buf *out);
void pointers_free(Text *t);
Str ptr(Text *t, int id, const char *tsel);
const char *grad_ptr(Text *t, const Param *q);
const char *scratch_ptr(Text *t);
const char *targets_ptr(Text *t);
const char *bf16_ptr(Text *t, int id);
const char *scratch16_ptr(Text *t);

/* ------------------------------------------------------------ nest.c */

enum { MAXOPND = 64 };

/* Loops over sizes size[0..n) (outermost first); operand j is read or
 * written at base[j] + sum of i_d * stride[j][d]; a zero stride
 * broadcasts. */
typedef struct {
  int n;
  Mono size[MAXRANK];
  int nop;
  Mono stride[MAXOPND][MAXRANK];
  Mono base[MAXOPND];
} Nest;

void nest_init(Nest *ns, const Shape *s);
void nest_bcast(Nest *ns, const Shape *x);
void nest_strided(Nest *ns, const Mono *stride, Mono base);
int nest_open_block(Text *k, Buf *b, Nest *ns, int depth, Str *idx, bool block);
int nest_open(Text *k, Buf *b, Nest *ns, int depth, Str *idx);

/* ------------------------------------------------------------ elem.c */

Str fn(const Graph *g, const char *name);
const char *fast_exp(const Graph *g);
void elem_expr(const Graph *g, Buf *b, Op op, const char *x, const char *y, const char *idx, const char *sfx);
const char *elem_name(Op op, int k);

/* ------------------------------------------------------------ kernel.c */

const char *ctype(DType dt);
void karg(Text *k, ArgKind kind, int node, int shape, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
const char *out_name(Op op);
void kout(Text *k, Node *n);
void kin(Text *k, Node *n, int i, const char *name);
void kdropout(Text *k, Buf *b, Node *n, int shape, const char *sfx);
Str kmask_index(Text *k, Node *n, int shape, const char *idx, const char *sfx);
void kthreads(Text *k, int node);   /* int nt, once */
void emit_kernels(Prog *p);
void name_kernels(Model *m);
void emit_kernel_defs(Model *m, const char *prog, Buf *out);

/* ------------------------------------------------------------ the kernels */

void k_elementwise(Text *k, Buf *b, Node *n);   /* k_elementwise.c */
void k_fill(Text *k, Buf *b, Node *n);
void k_triu_mask(Text *k, Buf *b, Node *n);
void k_kv(Text *k, Buf *b, Node *n);             /* k_kv.c: causal_mask, slice_pos, kv_write */
void k_copy(Text *k, Buf *b, Node *n);
void k_sum_broadcast(Text *k, Buf *b, Node *n);
void k_shuffle(Text *k, Buf *b, Node *n);
void k_matmul(Text *k, Buf *b, Node *n);        /* k_matmul.c */
void k_embedding(Text *k, Buf *b, Node *n);
const char *bf16_operands(Text *k, Buf *conv, Node *n, int nop, const char *const name[], Str op[]);
void k_softmax(Text *k, Buf *b, Node *n);       /* k_rows.c */
void k_normalize(Text *k, Buf *b, Node *n);
void k_nll(Text *k, Buf *b, Node *n);
void k_log_softmax_nll(Text *k, Buf *b, int group);
void k_fused(Text *k, Buf *b, int group);       /* k_fused.c */

/* ------------------------------------------------------------ run.c */

Prog *open_program(Model *m, Graph *g, const char *prog, bool training);
void emit_program(Prog *p, Buf *out, ProgInfo *pi);
void emit_prog_struct(Buf *out, const char *field, Graph *g, const char *prog, ProgInfo *pi);
size_t shadow16_of(Prog *p, int id);   /* node id's shadow in c->work16 (through reshapes), or SIZE_MAX */

#endif
