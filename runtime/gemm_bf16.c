/*
 * gemm_bf16.c: the matrix products of --precision bf16, y = op(a) op(b) +
 * beta y with bf16 operands and fp32 sums (lmc_rt.h has the contract),
 * and the rounding of floats to bf16.
 *
 * A bf16 is the top half of a float: 8 bits of significand, float's
 * exponent range.  The product of two of them is exact in a float, so
 * the only roundings of a product are those of its sums.  The portable
 * loop below sums each output in ascending k after beta y, one float
 * add per term: it runs on any CPU, the reference the fast paths are
 * checked against.  It converts a block of op(b), KB x NB, to floats once
 * and runs every row of op(a) over it (the inner loop over NB columns,
 * which the compiler vectorises).
 *
 * On a CPU with AVX512_BF16, products of at most LMC_BF16_FEW (2) rows
 * with y = a b^T (generation's one row) run on a kernel of vdpbf16ps dot
 * products here, b read once where it lies: at one row 2.8 times oneDNN's
 * rate at 1 x 2600 x 650 and 1.3 times at the decoder's 1 x 33278 x 650
 * (bench/README.md); from 3 rows on, b is read twice and oneDNN wins at
 * the decoder.  The rest go to oneDNN (runtime/gemm_dnnl.c), and to the
 * portable loop where neither is there.
 *
 * The rounding follows vcvtne2ps2bf16 bit for bit, so that the vector and
 * the scalar forms agree: nearest, ties to even; a NaN keeps its sign and
 * top payload bits and is made quiet; a denormal input (and so output)
 * is a zero of its sign, as the instruction treats them whatever MXCSR
 * says.
 */
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "rt.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512_BF16 1
#include <immintrin.h>
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

int lmc_cpu_has_bf16(void)
{
  static int has = -1;
  if (has < 0) {
#ifdef HAVE_AVX512_BF16
    __builtin_cpu_init();
    has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    has = 0;
#endif
  }
  return has;
}

static inline lmc_bf16 round_bf16(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (lmc_bf16)((u >> 16) | 0x40);
  if ((u & 0x7f800000u) == 0)
    return (lmc_bf16)((u >> 16) & 0x8000);
  return (lmc_bf16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline float bf16_float(lmc_bf16 h)
{
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

void lmc_to_bf16_c(const float *x, lmc_bf16 *y, size_t n)
{
  for (size_t i = 0; i < n; i++)
    y[i] = round_bf16(x[i]);
}

#ifdef HAVE_AVX512_BF16
AVX512BF16 static void to_bf16_avx512(const float *x, lmc_bf16 *y, size_t n)
{
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(y + i, (__m512i)v);
  }
  for (; i < n; i += 16) {
    size_t r = n - i < 16 ? n - i : 16;
    __mmask16 m = (__mmask16)((1u << r) - 1);
    __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(y + i, m, (__m256i)h);
  }
}
#endif

void lmc_to_bf16(const float *x, lmc_bf16 *y, size_t n)
{
#ifdef HAVE_AVX512_BF16
  if (lmc_cpu_has_bf16()) {
    to_bf16_avx512(x, y, n);
    return;
  }
#endif
  lmc_to_bf16_c(x, y, n);
}

/* The portable loop's blocks: a KB x NB panel of op(b) as floats (128 KB). */
enum { KB = 128, NB = 256 };

void lmc_gemm_bf16_c(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                     float beta, float *y, int ldy)
{
  if (beta == 0)
    for (int i = 0; i < M; i++)
      memset(y + (long)i * ldy, 0, (size_t)N * sizeof *y);
  float *panel = rt_malloc((size_t)KB * NB * sizeof *panel, "bf16 product panel");
  for (int j0 = 0; j0 < N; j0 += NB) {
    int nb = N - j0 < NB ? N - j0 : NB;
    for (int k0 = 0; k0 < K; k0 += KB) {
      int kb = K - k0 < KB ? K - k0 : KB;
      for (int k = 0; k < kb; k++)
        for (int j = 0; j < nb; j++)
          panel[k * NB + j] = bf16_float(tb ? b[(long)(j0 + j) * ldb + k0 + k] : b[(long)(k0 + k) * ldb + j0 + j]);
      for (int i = 0; i < M; i++) {
        float *yr = y + (long)i * ldy + j0;
        for (int k = 0; k < kb; k++) {
          float av = bf16_float(ta ? a[(long)(k0 + k) * lda + i] : a[(long)i * lda + k0 + k]);
          const float *p = panel + k * NB;
          for (int j = 0; j < nb; j++)
            yr[j] += av * p[j];
        }
      }
    }
  }
  free(panel);
}

#ifdef HAVE_AVX512_BF16
#define INLINE static inline __attribute__((always_inline))

/* y[0..mr)[0..nr) (+)= a rows . b rows, rows of K bf16 (y = a b^T):
 * vdpbf16ps over 32 of K a step, the tail masked to zeros; mr and nr are
 * constants where this is inlined, so acc lives in registers. */
AVX512BF16 INLINE void nt_block(int mr, int nr, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                                float beta, float *y, int ldy)
{
  __m512 acc[2][8];
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++)
      acc[i][j] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 32) {
    __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (K - k)) - 1);
    __m512bh bv[8];
    for (int j = 0; j < nr; j++)
      bv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, b + (long)j * ldb + k);
    for (int i = 0; i < mr; i++) {
      __m512bh av = (__m512bh)_mm512_maskz_loadu_epi16(m, a + (long)i * lda + k);
      for (int j = 0; j < nr; j++)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      float s = _mm512_reduce_add_ps(acc[i][j]), *c = y + (long)i * ldy + j;
      *c = beta == 0 ? s : *c + s;
    }
}

/* One row of a against 8 rows of b a block, or two against 6: 8 and 12
 * sums in flight, each row of b read once per row pair. */
AVX512BF16 static void gemm_nt_few(int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                                   float beta, float *y, int ldy)
{
  for (int i = 0; i < M; i += 2) {
    const lmc_bf16 *ai = a + (long)i * lda;
    float *yi = y + (long)i * ldy;
    int j = 0;
    if (M - i == 1) {
      for (; j + 8 <= N; j += 8)
        nt_block(1, 8, K, ai, lda, b + (long)j * ldb, ldb, beta, yi + j, ldy);
      if (j < N)
        nt_block(1, N - j, K, ai, lda, b + (long)j * ldb, ldb, beta, yi + j, ldy);
    } else {
      for (; j + 6 <= N; j += 6)
        nt_block(2, 6, K, ai, lda, b + (long)j * ldb, ldb, beta, yi + j, ldy);
      if (j < N)
        nt_block(2, N - j, K, ai, lda, b + (long)j * ldb, ldb, beta, yi + j, ldy);
    }
  }
}
#endif

int lmc_gemm_bf16_few(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                      float beta, float *y, int ldy)
{
#ifdef HAVE_AVX512_BF16
  if (lmc_cpu_has_bf16() && !ta && tb) {
    gemm_nt_few(M, N, K, a, lda, b, ldb, beta, y, ldy);
    return 0;
  }
#endif
  (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)y;
  (void)ldy;
  return -1;
}

void lmc_gemm_bf16(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                   float beta, float *y, int ldy, int threads)
{
  if (M <= LMC_BF16_FEW && lmc_gemm_bf16_few(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy) == 0)
    return;
  if (lmc_cpu_has_bf16() && lmc_gemm_bf16_dnnl(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy, threads) == 0)
    return;
  lmc_gemm_bf16_c(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy);
}
