/*
 * optimizer.c: one optimizer step over the parameter block, driven by the
 * model's parameter table: gradient-norm clipping, SGD and AdamW, and the
 * gradient block written out parameter-shaped.  A parameter's gradient is
 * at its grad_offset in the gradient block, parameter-shaped or, marked by
 * lmc's row-grad pass, as the rows the batch read (LmcTensorDesc): a
 * dense gradient is one loop over its elements, a rows gradient a loop
 * over its rows, whose other rows are zero.  A tied weight's second name
 * (alias) is the same storage and is skipped.
 *
 * The norm's squares go to eight double lanes, each to the lane of its
 * position in the parameter block (position & 7, lane 0 in the block's
 * last partial group of 8), in block order, and the lanes are added
 * pairwise: the dense loops vectorise, and the norm has the same bits
 * whether a gradient is rows or not (zero rows add nothing).
 *
 * --precision bf16: a step also writes the parameters' bf16 copy (param16,
 * NULL in fp32 mode), a piece at a time while the piece is in cache, so
 * the products read weights rounded from the ones just computed and no
 * pass of its own walks the block.  Single precision only: a double
 * build (the tests' harnesses) has no bf16 mode.
 *
 * Rounding.  An element's update is a few expressions in `real`, and a
 * C compiler that contracts a * b + c into a fused multiply-add (clang on
 * a target with FMA) rounds them once where it would round twice.  The
 * emitted kernels are compiled with the trainer's flags, which may target
 * FMA (make's NATIVE=1), the runtime for the baseline target; so each step
 * is built twice, for the baseline and for FMA, and LmcModel.fma (LMC_FMA
 * where the emitted file was compiled) picks the build that rounds as a
 * loop compiled with the trainer would.
 */
#include <math.h>
#include <string.h>

#include "lmc_rt.h"

#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__) || defined(__i386__)
#define FMA __attribute__((target("fma")))
#else
#define FMA
#endif

#define SINGLE_float 1
#define SINGLE LMC_CAT(SINGLE_, LMC_REAL)   /* 1 for float, 0 for double */

/* Elements a dense update moves before rounding them to bf16. */
enum { PIECE = 4096 };

/* p[0, n), the parameters at block offset at, into the bf16 copy. */
INLINE void round16(lmc_bf16 *p16, size_t at, const real *p, size_t n)
{
#if SINGLE
  if (p16)
    lmc_to_bf16(p, p16 + at, n);
#else
  (void)p16, (void)at, (void)p, (void)n;
#endif
}

static size_t row_len(const LmcTensorDesc *d)
{
  return d->numel / (size_t)d->shape[0];
}

/* A rows gradient's ids, ascending, then how many: row[d->grad_rows]. */
static const int32_t *row_ids(const LmcTensorDesc *d, const real *grad)
{
  return (const int32_t *)(grad + d->grad_offset + d->grad_rows * row_len(d));
}

INLINE real sqrt_real(real x)
{
  return LMC_IS_F32 ? (real)sqrtf((float)x) : (real)sqrt((double)x);
}

/* The squares of a dense gradient g[0, n) at block positions off on, into
 * their lanes; tail: the block's size rounded down to 8. */
INLINE void dense_squares(double s[8], const real *g, size_t n, size_t off, size_t tail)
{
  size_t t = off >= tail ? 0 : tail - off < n ? tail - off : n;   /* g[t, n) lies in the tail */
  size_t i = 0;
  for (; i < t && (off + i) % 8; i++)
    s[(off + i) & 7] += (double)g[i] * g[i];
  for (; i + 8 <= t; i += 8)
    for (int j = 0; j < 8; j++)
      s[j] += (double)g[i + j] * g[i + j];
  for (; i < t; i++)
    s[(off + i) & 7] += (double)g[i] * g[i];
  for (; i < n; i++)
    s[0] += (double)g[i] * g[i];
}

/* The squares of a rows gradient g of nrow rows: its row k, of len, is
 * row row[k] of the parameter at block position off. */
INLINE void rows_squares(double s[8], const real *g, const int32_t *row, long nrow, size_t len, size_t off,
                         size_t tail)
{
  for (long k = 0; k < nrow; k++)
    for (size_t j = 0, at = off + (size_t)row[k] * len; j < len; j++, at++)
      s[at >= tail ? 0 : at & 7] += (double)g[k * len + j] * g[k * len + j];
}

INLINE double clip_step(const LmcModel *m, real *grad, double clip)
{
  size_t tail = m->param_numel & ~(size_t)7;
  double s[8] = { 0 };   /* eight lanes, added pairwise: same bits every run */
  for (int q = 0; q < m->nparam; q++) {
    const LmcTensorDesc *d = &m->param[q];
    if (d->alias >= 0)
      continue;
    if (!d->grad_rows)
      dense_squares(s, grad + d->grad_offset, d->numel, d->offset, tail);
    else
      rows_squares(s, grad + d->grad_offset, row_ids(d, grad), row_ids(d, grad)[d->grad_rows], row_len(d), d->offset,
                   tail);
  }
  double norm = sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
  double scale = clip / (norm + 1e-6);
  if (!(clip > 0 && scale < 1))
    return norm;
  for (int q = 0; q < m->nparam; q++) {
    const LmcTensorDesc *d = &m->param[q];
    if (d->alias >= 0)
      continue;
    real *g = grad + d->grad_offset;
    size_t n = d->grad_rows ? (size_t)row_ids(d, grad)[d->grad_rows] * row_len(d) : d->numel;
    for (size_t i = 0; i < n; i++)
      g[i] = (real)(g[i] * scale);
  }
  return norm;
}

/* p -= lr g; a rows gradient's other rows are zero and left alone. */
INLINE void sgd_step(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, double lr)
{
  real r = (real)lr;
  for (int q = 0; q < m->nparam; q++) {
    const LmcTensorDesc *d = &m->param[q];
    if (d->alias >= 0)
      continue;
    real *p = param + d->offset;
    const real *g = grad + d->grad_offset;
    if (!d->grad_rows) {
      for (size_t i0 = 0; i0 < d->numel; i0 += PIECE) {
        size_t n = d->numel - i0 < PIECE ? d->numel - i0 : PIECE;
        for (size_t i = i0; i < i0 + n; i++)
          p[i] -= r * g[i];
        round16(param16, d->offset + i0, p + i0, n);
      }
      continue;
    }
    const int32_t *row = row_ids(d, grad);
    size_t len = row_len(d);
    for (long k = 0; k < row[d->grad_rows]; k++) {
      real *pr = p + (size_t)row[k] * len;
      for (size_t j = 0; j < len; j++)
        pr[j] -= r * g[k * len + j];
      round16(param16, d->offset + (size_t)row[k] * len, pr, len);
    }
  }
}

typedef struct {
  real decay, step, bc2;
} AdamW;

/* Element i of PyTorch's AdamW: decoupled weight decay, then Adam with
 * bias correction. */
INLINE void adamw_one(const AdamW *a, real *param, real *m, real *v, size_t i, real gv)
{
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  param[i] *= a->decay;
  m[i] = (real)b1 * m[i] + (real)(1 - b1) * gv;
  v[i] = (real)b2 * v[i] + (real)(1 - b2) * gv * gv;
  param[i] -= a->step * m[i] / (sqrt_real(v[i]) / a->bc2 + (real)eps);
}

/* Every element moves, a rows gradient's other rows with gradient 0. */
INLINE void adamw_step(const LmcModel *model, real *param, lmc_bf16 *param16, const real *grad, real *m, real *v,
                       double lr, double wd, long t)
{
  const double b1 = 0.9, b2 = 0.999;
  AdamW a = { (real)(1 - lr * wd), (real)(lr / (1 - pow(b1, (double)t))), (real)sqrt(1 - pow(b2, (double)t)) };
  for (int q = 0; q < model->nparam; q++) {
    const LmcTensorDesc *d = &model->param[q];
    if (d->alias >= 0)
      continue;
    if (!d->grad_rows) {
      real *p = param + d->offset, *pm = m + d->offset, *pv = v + d->offset;
      const real *g = grad + d->grad_offset;
      for (size_t i0 = 0; i0 < d->numel; i0 += PIECE) {
        size_t n = d->numel - i0 < PIECE ? d->numel - i0 : PIECE;
        for (size_t i = i0; i < i0 + n; i++)
          adamw_one(&a, p, pm, pv, i, g[i]);
        round16(param16, d->offset + i0, p + i0, n);
      }
      continue;
    }
    const int32_t *row = row_ids(d, grad);
    size_t len = row_len(d), nrow = (size_t)row[d->grad_rows];
    for (size_t r = 0, k = 0; r < (size_t)d->shape[0]; r++) {   /* row r's gradient: its rows entry, or 0 */
      const real *g = k < nrow && (size_t)row[k] == r ? grad + d->grad_offset + k++ * len : NULL;
      for (size_t j = 0, i = d->offset + r * len; j < len; j++, i++)
        adamw_one(&a, param, m, v, i, g ? g[j] : 0);
      round16(param16, d->offset + r * len, param + d->offset + r * len, len);
    }
  }
}

/* Each step for the baseline target and for FMA (the top of the file). */
static double clip_base(const LmcModel *m, real *grad, double clip)
{
  return clip_step(m, grad, clip);
}

FMA static double clip_fma(const LmcModel *m, real *grad, double clip)
{
  return clip_step(m, grad, clip);
}

static void sgd_base(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, double lr)
{
  sgd_step(m, param, param16, grad, lr);
}

FMA static void sgd_fma(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, double lr)
{
  sgd_step(m, param, param16, grad, lr);
}

static void adamw_base(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, real *exp_avg,
                       real *exp_avg_sq, double lr, double wd, long t)
{
  adamw_step(m, param, param16, grad, exp_avg, exp_avg_sq, lr, wd, t);
}

FMA static void adamw_fma(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, real *exp_avg,
                          real *exp_avg_sq, double lr, double wd, long t)
{
  adamw_step(m, param, param16, grad, exp_avg, exp_avg_sq, lr, wd, t);
}

double lmc_clip(const LmcModel *m, real *grad, double clip)
{
  return m->fma ? clip_fma(m, grad, clip) : clip_base(m, grad, clip);
}

void lmc_sgd(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, double lr)
{
  if (m->fma)
    sgd_fma(m, param, param16, grad, lr);
  else
    sgd_base(m, param, param16, grad, lr);
}

void lmc_adamw(const LmcModel *m, real *param, lmc_bf16 *param16, const real *grad, real *exp_avg, real *exp_avg_sq,
               double lr, double wd, long t)
{
  if (m->fma)
    adamw_fma(m, param, param16, grad, exp_avg, exp_avg_sq, lr, wd, t);
  else
    adamw_base(m, param, param16, grad, exp_avg, exp_avg_sq, lr, wd, t);
}

void lmc_grad_dense_one(const LmcTensorDesc *d, const real *grad, real *dense)
{
  const real *g = grad + d->grad_offset;
  real *out = dense + d->offset;
  if (!d->grad_rows) {
    memcpy(out, g, d->numel * sizeof *out);
    return;
  }
  const int32_t *row = row_ids(d, grad);
  size_t len = row_len(d);
  memset(out, 0, d->numel * sizeof *out);
  for (long k = 0; k < row[d->grad_rows]; k++)
    memcpy(out + (size_t)row[k] * len, g + k * len, len * sizeof *out);
}

void lmc_grad_dense(const LmcModel *m, const real *grad, real *dense)
{
  for (int q = 0; q < m->nparam; q++)
    if (m->param[q].alias < 0)
      lmc_grad_dense_one(&m->param[q], grad, dense);
}
