/*
 * lmc_rt.h: the one public header of the lmc runtime.
 *
 * Every C file that lmc emits includes it and defines `lmc_model`, an
 * LmcModel describing the compiled network: its parameters (names and
 * layouts as PyTorch's state_dict), its hidden state, and up to six programs,
 * each the network specialised to one batch size:
 *   train  batch_size (20), forward + backward, dropout on
 *   eval   eval batch (10), forward only, dropout off
 *   gen    batch 1, forward only, dropout off
 *   sample batch 8 (the eval batch when smaller; none at 1), as gen:
 *          generate --samples, a sample per column
 *   step   batch 1, as gen but for the new positions only, from c->pos,
 *          over key/value caches in its state (a graph whose positions
 *          meet only in causal attention: the Transformer)
 *   steps  the sample program's batch, as step: generate --samples over
 *          key/value caches
 * The runtime (corpus, batching, training loop, evaluation, checkpoints,
 * generation, command line) drives those programs through LmcCtx.
 *
 * Numbers are `real`: float, or double when the emitted file was compiled
 * with --dtype=f64 (then LMC_REAL is defined as double before this header;
 * only test harnesses link such files).
 */
#ifndef LMC_RT_H
#define LMC_RT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "lmc_math.h"

#ifndef LMC_REAL
#define LMC_REAL float
#endif
typedef LMC_REAL real;

enum { LMC_MAXRANK = 4 };

typedef uint16_t lmc_bf16;   /* bfloat16 bits: LmcCtx's bf16 blocks; the products are at the end */

typedef enum {
  LMC_INIT_ZERO,
  LMC_INIT_ONE,
  LMC_INIT_UNIFORM,      /* U(-init_a, init_a) */
  LMC_INIT_XAVIER,       /* U(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
  LMC_INIT_NORMAL,       /* N(0, init_a^2), Box-Muller over the init stream (runtime/model.c) */
} LmcInit;

typedef struct {
  const char *name;      /* state_dict name: "rnn.weight_ih_l0" */
  int rank;
  int shape[LMC_MAXRANK];
  size_t offset;         /* element offset in the parameter block */
  size_t numel;
  LmcInit init;
  double init_a;
  int alias;             /* tied: index of the tensor whose storage this is, else -1 */
  /* A parameter's gradient in the gradient block (LmcModel.grad_numel),
   * which the optimizer reads: at grad_offset, parameter-shaped when
   * grad_rows is 0, else a rows gradient (row-grad) of at most grad_rows
   * rows of numel / shape[0] reals, then grad_rows + 1 int32.  Unused
   * (0) in an alias and in a state table. */
  size_t grad_offset;
  size_t grad_rows;
} LmcTensorDesc;

struct LmcCtx;

typedef struct {
  int batch;             /* B */
  int max_seq;           /* T <= max_seq */
  size_t work_numel;     /* activation arena, in reals */
  size_t state_numel;    /* hidden state carried across calls, in reals */
  int nstate;
  const LmcTensorDesc *state;   /* offsets into LmcCtx.state */
  int has_backward;
  /* Runs the program on tokens (T, B) (row t holds step t of every column).
   * With targets (T, B): returns the mean NLL per token and, when
   * has_backward, writes the gradient of that mean into c->grad, every
   * element of it (zeros where the loss does not reach; a rows gradient,
   * see LmcModel.grad_numel, its rows, ids and count).  Reads the
   * hidden state from c->state and leaves the new one there (detached).
   * When has_logp (lmc compile keeps them for the generation program only),
   * leaves the log-probabilities, (T, B, ntoken), at c->work + logp_offset
   * (step t of column b at ((t * B) + b) * ntoken). */
  double (*run)(struct LmcCtx *c, const int32_t *tokens, const int32_t *targets, int T);
  int has_logp;
  int logp_last;         /* the log-probabilities of step T - 1 only, (1, B, ntoken) */
  size_t logp_offset;
  size_t work16_numel;   /* bf16 arena (--precision bf16): operands of products, in lmc_bf16 */
} LmcProgram;

typedef struct {
  const char *name;      /* hyper-parameter, e.g. "dropout" */
  double value;          /* compiled default */
} LmcDropoutSlot;

typedef struct LmcModel {
  const char *kind;      /* "RNN_TANH", "RNN_RELU", "LSTM", "GRU", "Transformer" */
  const char *version;   /* lmc version */
  const char *flags;     /* lmc command line */
  const char *graph;     /* the graph file it was compiled from, as lmc was given it: "graphs/lstm.lua" */
  int nhyper;
  const char *const (*hyper)[2];   /* name, value: every hyper-parameter */
  int ntoken, bptt;
  int nparam;
  const LmcTensorDesc *param;
  size_t param_numel;    /* a tied tensor counted once */
  /* The gradient block, c->grad: each parameter's gradient in the
   * parameters' order, parameter-shaped, except an embedding table's
   * marked rows by lmc's row-grad pass: R rows (R = the tokens of a
   * batch), the rows the batch read in ascending order of id, then R + 1
   * int32, those ids and how many there are (LmcTensorDesc.grad_offset,
   * grad_rows).  grad_numel <= param_numel; equal when no gradient is
   * rows.  Every region keeps its parameter's offset modulo 8. */
  size_t grad_numel;
  int ndropout;
  const LmcDropoutSlot *dropout;
  /* sample.run, step.run, steps.run may be NULL: gen serves */
  LmcProgram train, eval, gen, sample, step, steps;
  int fma;               /* LMC_FMA where the emitted file was compiled */
  /* 1: training minimises the graph's "objective" (the loss and its
   * regularisers): train's run() writes that objective's gradient, leaves
   * its value in c->objective and returns the loss, which is what the
   * runtime logs; the other programs compute the loss alone. */
  int has_objective;
} LmcModel;

typedef struct LmcCtx {
  const LmcModel *m;
  real *param;           /* (param_numel) */
  real *grad;            /* (grad_numel), training only */
  real *work;            /* (prog->work_numel) */
  real *state;           /* (prog->state_numel) */
  double *dropout;       /* (m->ndropout) run-time probabilities; the programs
                            other than train ignore them */
  uint64_t seed;         /* dropout masks depend on seed, step, stream, index */
  uint64_t step;         /* training steps taken: advanced by the runtime */
  int pos;               /* the step program: the position of tokens[0] in the window */
  /* Under mpirun each rank's batch is columns [col0, col0 + B) of a
   * global batch of B + col_rest columns, and a mask's index counts the
   * global column (lmc_mask_index); both 0 in one process. */
  long col0, col_rest;
  int threads;
  double objective;      /* train's run() of a model with has_objective: what it minimises */
  /* When set, a program with backward calls it once for every parameter
   * (the index in m->param) as soon as that parameter's region of c->grad
   * holds its final value, in an order fixed by the emitted file: under
   * mpirun dist.c starts reducing it there, overlapped with the rest of
   * the backward.  NULL in one process. */
  void (*grad_ready)(struct LmcCtx *c, int param);
  /* --precision bf16: the parameters rounded to bf16 (param_numel, each
   * at its parameter's offset; the optimizer writes them beside the
   * parameters) and the program's bf16 arena (work16_numel).  NULL in
   * fp32 mode, where every product runs as before. */
  lmc_bf16 *param16;
  lmc_bf16 *work16;
} LmcCtx;

/* base + off, or NULL when base is (fp32 mode): run()'s pointers into
 * the bf16 blocks. */
static inline lmc_bf16 *lmc_bf16_at(lmc_bf16 *base, size_t off)
{
  return base ? base + off : NULL;
}

extern const LmcModel lmc_model;

/* 1 in a file compiled for a target with fused multiply-add (make's
 * NATIVE=1 on such a CPU): there clang contracts a * b + c into one
 * rounding, and the optimizer then rounds the same way (LmcModel.fma). */
#ifdef __FMA__
#define LMC_FMA 1
#else
#define LMC_FMA 0
#endif

/* The optimizer (runtime/optimizer.c): one step over the whole block, as
 * the table m->param lays it out.  lmc_clip scales the gradients to the
 * global norm clip when clip > 0 (torch.nn.utils.clip_grad_norm_) and
 * returns the norm before clipping; lmc_sgd: p -= lr * g; lmc_adamw:
 * PyTorch's AdamW with the moments exp_avg, exp_avg_sq (param_numel
 * each), betas 0.9/0.999, eps 1e-8, weight decay wd, step count t
 * (1-based); both write the moved parameters' bf16 copy into param16
 * too, at the parameters' offsets, unless it is NULL (fp32 mode; always
 * NULL in double precision); lmc_grad_dense writes the gradient block out
 * parameter-shaped (param_numel), lmc_grad_dense_one tensor d's part of it
 * (at d->offset).  Built once per real type (the library
 * holds float's; a double harness compiles runtime/optimizer.c with
 * -DLMC_REAL=double), their names carry it, so that a file of one
 * precision cannot link the other's. */
#define LMC_CAT_(a, b) a##b
#define LMC_CAT(a, b) LMC_CAT_(a, b)
#define lmc_clip LMC_CAT(lmc_clip_, LMC_REAL)
#define lmc_sgd LMC_CAT(lmc_sgd_, LMC_REAL)
#define lmc_adamw LMC_CAT(lmc_adamw_, LMC_REAL)
#define lmc_grad_dense LMC_CAT(lmc_grad_dense_, LMC_REAL)
#define lmc_grad_dense_one LMC_CAT(lmc_grad_dense_one_, LMC_REAL)
double lmc_clip(const LmcModel *m, real *grad, double clip);
void lmc_sgd(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, double lr);
void lmc_adamw(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, real *exp_avg, real *exp_avg_sq,
               double lr, double wd, long t);
void lmc_grad_dense(const LmcModel *m, const real *grad, real *dense);
void lmc_grad_dense_one(const LmcTensorDesc *d, const real *grad, real *dense);

/* Counter-based dropout generator: a uniform float in [0, 1) from the key
 * (seed, step, stream) and the element index, so masks do not depend on
 * evaluation order, threads or fusion, and backward can redraw them. */
static inline uint64_t lmc_mix64(uint64_t z)
{
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline uint64_t lmc_dropout_key(uint64_t seed, uint64_t step, uint64_t stream)
{
  return lmc_mix64(lmc_mix64(lmc_mix64(seed) ^ step) ^ (stream * 0xd1b54a32d192ed03ull));
}

/* Element i of a mask over (outer, batch, inner) elements, as one
 * process at the global batch (batch + col_rest columns) numbers it when
 * this batch is its columns [col0, col0 + batch): the index of element
 * (o, b, r) is ((o * (batch + col_rest)) + col0 + b) * inner + r.  With
 * col0 = col_rest = 0, i itself. */
static inline uint64_t lmc_mask_index(uint64_t i, uint64_t inner, uint64_t batch, long col0, long col_rest)
{
  return i + inner * ((uint64_t)col0 + i / (inner * batch) * (uint64_t)col_rest);
}

/* 1 when element idx is kept with drop probability p. */
static inline int lmc_keep(uint64_t key, uint64_t idx, double p)
{
  return (double)(lmc_mix64(key ^ lmc_mix64(idx)) >> 11) * 0x1p-53 >= p;
}

/* Row kernels of the softmax family, written so that clang and gcc
 * vectorise them at -O3 without -ffast-math: the exponentials in a loop of
 * their own (in place, or between buffers that do not overlap; kept out of
 * line, because inlined into a caller's row loop the compiler no longer
 * proves that loop safe), max and sum over eight lanes; in single
 * precision the exponentials are runtime/vexp.c's.  A sum adds lane i % 8
 * for i below n rounded down to 8, the rest into lane 0 in order, and the
 * lanes pairwise, so the three exp_sum variants return the same bits for
 * the same row. */
#if defined(__GNUC__) || defined(__clang__)
#define LMC_NOINLINE __attribute__((noinline))
#else
#define LMC_NOINLINE
#endif

/* A rows gradient's ids (row-grad): ids[0..n) in ascending order without
 * repeats into out (n); returns how many. */
static inline long lmc_unique_ids(const int32_t *ids, long n, int32_t *out)
{
  for (long i = 0; i < n; i++) {   /* insertion sort: n is a batch of tokens */
    int32_t x = ids[i];
    long j = i;
    for (; j > 0 && out[j - 1] > x; j--)
      out[j] = out[j - 1];
    out[j] = x;
  }
  long m = 0;
  for (long i = 0; i < n; i++)
    if (m == 0 || out[i] != out[m - 1])
      out[m++] = out[i];
  return m;
}

/* The index of id in sorted[0..n), which holds it. */
static inline long lmc_find_id(const int32_t *sorted, long n, int32_t id)
{
  long lo = 0, hi = n - 1;
  while (lo < hi) {
    long mid = (lo + hi) / 2;
    if (sorted[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static inline real lmc_exp_real(real x)
{
  return sizeof(real) == sizeof(float) ? (real)lmc_expf((float)x) : (real)exp((double)x);
}

/* The portable forms (the _c functions below) serve double precision and
 * CPUs without AVX2; single precision otherwise goes to runtime/vexp.c,
 * which computes the same values in the same lanes. */
#define LMC_IS_F32 (sizeof(real) == sizeof(float))
float lmc_row_max_f32(const float *x, long n);
float lmc_add_row_max_f32(float *x, const float *bias, long n);
double lmc_exp_sum_to_f32(float *y, const float *x, long n, float max);   /* y may be x */
double lmc_exp_sum_f32(const float *x, long n, float max);

/* The largest x[i] (n >= 1), over eight lanes: lane i % 8 below n rounded
 * down to 8, the rest in lane 0, then the lanes into lane 0. */
static inline real lmc_row_max_c(const real *x, long n)
{
  real m[8];
  for (int j = 0; j < 8; j++)
    m[j] = x[0];
  long i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++)
      m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
  for (; i < n; i++)
    m[0] = x[i] > m[0] ? x[i] : m[0];
  for (int j = 1; j < 8; j++)
    m[0] = m[j] > m[0] ? m[j] : m[0];
  return m[0];
}

static inline real lmc_row_max(const real *x, long n)
{
  if (LMC_IS_F32)
    return (real)lmc_row_max_f32((const float *)x, n);
  return lmc_row_max_c(x, n);
}

/* x[i] += bias[i], then the max of x, in one pass. */
static inline real lmc_add_row_max_c(real *x, const real *bias, long n)
{
  for (long i = 0; i < n; i++)
    x[i] += bias[i];
  return lmc_row_max_c(x, n);
}

static inline real lmc_add_row_max(real *x, const real *bias, long n)
{
  if (LMC_IS_F32)
    return (real)lmc_add_row_max_f32((float *)x, (const float *)bias, n);
  return lmc_add_row_max_c(x, bias, n);
}

static inline void lmc_lanes_add(double s[8], const real *x, long from, long to)
{
  for (long i = from; i < to; i += 8)
    for (int j = 0; j < 8; j++)
      s[j] += x[i + j];
}

static inline double lmc_lanes_total(double s[8], const real *x, long from, long n)
{
  for (long i = from; i < n; i++)
    s[0] += x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* y[i] = exp(x[i] - max), y either x or apart from it; returns the sum
 * of y. */
static inline LMC_NOINLINE double lmc_exp_sum_to_c(real *y, const real *x, long n, real max)
{
  for (long i = 0; i < n; i++)
    y[i] = lmc_exp_real(x[i] - max);
  double s[8] = { 0 };
  lmc_lanes_add(s, y, 0, n & ~7L);
  return lmc_lanes_total(s, y, n & ~7L, n);
}

/* The sum of exp(x[i] - max), stored nowhere (through a stack chunk). */
static inline LMC_NOINLINE double lmc_exp_sum_c(const real *x, long n, real max)
{
  real buf[512];
  double s[8] = { 0 };
  long n8 = n & ~7L;
  for (long i = 0; i < n8; i += 512) {
    long k = n8 - i < 512 ? n8 - i : 512;
    for (long j = 0; j < k; j++)
      buf[j] = lmc_exp_real(x[i + j] - max);
    lmc_lanes_add(s, buf, 0, k);
  }
  for (long i = n8; i < n; i++)
    s[0] += lmc_exp_real(x[i] - max);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* x[i] = exp(x[i] - max); returns the sum of the new x. */
static inline double lmc_exp_sum_inplace(real *x, long n, real max)
{
  if (LMC_IS_F32)
    return lmc_exp_sum_to_f32((float *)x, (const float *)x, n, (float)max);
  return lmc_exp_sum_to_c(x, x, n, max);
}

/* y[i] = exp(x[i] - max), y and x apart; returns the sum of y. */
static inline double lmc_exp_sum_to(real *y, const real *x, long n, real max)
{
  if (LMC_IS_F32)
    return lmc_exp_sum_to_f32((float *)y, (const float *)x, n, (float)max);
  return lmc_exp_sum_to_c(y, x, n, max);
}

static inline double lmc_exp_sum(const real *x, long n, real max)
{
  if (LMC_IS_F32)
    return lmc_exp_sum_f32((const float *)x, n, (float)max);
  return lmc_exp_sum_c(x, n, max);
}

/* Before a loop over rows that the emitted code runs on nt threads when it
 * is compiled with OpenMP (make's OMP_CFLAGS), on one otherwise.  Every
 * iteration writes its own rows and nothing else, so results do not
 * depend on nt. */
#ifdef _OPENMP
#define LMC_PRAGMA(x) _Pragma(#x)
#define LMC_PARALLEL_FOR(nt) LMC_PRAGMA(omp parallel for num_threads(nt) schedule(static) if ((nt) > 1))
#else
#define LMC_PARALLEL_FOR(nt) (void)(nt);
#endif

/* C (M, N) = A (M, K) B^T + beta C in single precision, B (N, K), for
 * products of few rows (runtime/gemm.c); beta is 0 or 1.  Each output is
 * summed in an order that does not depend on M, N or which columns a call
 * covers: lmc_sgemm_abt_mt splits the columns between nt threads and
 * gives the same bits at any nt. */
void lmc_sgemm_abt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                   int ldc);
int lmc_sgemm_abt_native(void);   /* 1: the AVX2 kernels run, 0: cblas_sgemm */

/* Below this many multiply-adds (a GRU's per-word product at generation:
 * 600 x 200) waking a second thread costs more than it saves. */
enum { LMC_SGEMM_MT_MIN = 1 << 20 };

static inline void lmc_sgemm_abt_mt(int nt, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                                    float beta, float *C, int ldc)
{
  if (nt <= 1 || N < 48 * nt || (long)M * N * K < LMC_SGEMM_MT_MIN || !lmc_sgemm_abt_native()) {
    lmc_sgemm_abt(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  LMC_PARALLEL_FOR(nt)
  for (int p = 0; p < nt; p++) {
    int n0 = (int)((long)N * p / nt / 48 * 48);
    int n1 = p + 1 == nt ? N : (int)((long)N * (p + 1) / nt / 48 * 48);
    lmc_sgemm_abt(M, n1 - n0, K, A, lda, B + (long)n0 * ldb, ldb, beta, C + n0, ldc);
  }
}

/* bf16 products (runtime/gemm_bf16.c), for --precision bf16: bf16
 * operands, fp32 sums and output.  lmc_bf16 holds the top 16 bits of a
 * float.  lmc_to_bf16 rounds to nearest even; NaN stays NaN (quieted), a
 * denormal becomes a zero of its sign (as vcvtne2ps2bf16 does).
 * lmc_gemm_bf16: y (M, N) = op(a) op(b) + beta y, op(a) (M, K) = a (M, K)
 * row-major, or a^T when ta (a stored (K, M)); op(b) (K, N) = b (K, N),
 * or b^T when tb (b stored (N, K)); leading dimensions in elements; beta 0
 * or 1; on at most `threads` threads.  On a CPU with AVX512_BF16
 * (lmc_cpu_has_bf16, checked once) the fast kernels run; elsewhere a
 * portable loop (fp32 sums of the exact bf16 products, several times
 * slower than sgemm). */
typedef uint16_t lmc_bf16;
int lmc_cpu_has_bf16(void);
void lmc_to_bf16(const float *x, lmc_bf16 *y, size_t n);
void lmc_gemm_bf16(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                   float beta, float *y, int ldy, int threads);

#endif
