/*
 * gemm.c: C (M, N) = A (M, K) B^T + beta C in single precision for few
 * rows M, with B (N, K): the per-step products of a recurrent layer,
 * h (B, H) times W_hh^T (4H, H) where B is the batch (10 or 20), and the
 * one-row products of generation.
 *
 * OpenBLAS packs the whole weight (6.8 MB at nhid 650) on every such call
 * and then runs its 16-row kernel over 10 or 20 rows: 1.5 ms a call at
 * M = 10 in the evaluation loop, 23 GFLOP/s.  Here the weight is read
 * where it lies, once per call, with a 4 x 3 block of outputs (4 rows of
 * A by 3 rows of B) in twelve AVX2 registers, eight lanes of K per step,
 * each lane sum reduced in a fixed order at the end.  Rows of B go in
 * groups of 48 (125 KB at K = 650, held in L2 while every row of A passes
 * over them), and the next group is prefetched while one is in use: the
 * weight comes from memory on every step (0.65 ms a call at M = 10).
 * One row (M = 1) is a dot product per row of B, B read as one stream.
 *
 * Each output is summed in the same order whatever M and N and whichever
 * columns a call covers (lmc_sgemm_abt_mt in lmc_rt.h splits them between
 * threads), so results do not depend on the thread count.  Where the CPU
 * lacks AVX2 and FMA (checked once), or off x86-64, the product goes to
 * cblas_sgemm.
 */
#include <cblas.h>

#include "lmc_rt.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_KERNELS 1
#include <immintrin.h>
#endif

static void blas(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc)
{
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

#ifdef HAVE_AVX2_KERNELS

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/* Lanes 0 .. n-1 on (n in 0..8). */
AVX2 INLINE __m256i lane_mask(int n)
{
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The eight lanes of v summed pairwise: (0+4 + 2+6) + (1+5 + 3+7). */
AVX2 INLINE float hsum(__m256 v)
{
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* C[0..mr)[0..nr) (+)= A[0..mr) . B[0..nr), rows of length K (NT).  mr and
 * nr are constants where this is inlined, so acc lives in registers. */
AVX2 INLINE void nt_block(int mr, int nr, int K, const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc)
{
  __m256 acc[4][3];
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++)
      acc[i][j] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 b[3];
    for (int j = 0; j < nr; j++)
      b[j] = _mm256_loadu_ps(B + (long)j * ldb + k);
    for (int i = 0; i < mr; i++) {
      __m256 a = _mm256_loadu_ps(A + (long)i * lda + k);
      for (int j = 0; j < nr; j++)
        acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
  if (k < K) {
    __m256i m = lane_mask(K - k);
    __m256 b[3];
    for (int j = 0; j < nr; j++)
      b[j] = _mm256_maskload_ps(B + (long)j * ldb + k, m);
    for (int i = 0; i < mr; i++) {
      __m256 a = _mm256_maskload_ps(A + (long)i * lda + k, m);
      for (int j = 0; j < nr; j++)
        acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      float *c = C + (long)i * ldc + j;
      *c = beta == 0 ? hsum(acc[i][j]) : *c + hsum(acc[i][j]);
    }
}

/* Panels of B in groups of NT_GROUP (48 rows, 125 KB at K = 650, in L2),
 * each group against every 4 rows of A (10 KB, in L1). */
enum { NT_GROUP = 16 };

AVX2 static void sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc)
{
  for (int g = 0; g < N; g += 3 * NT_GROUP) {
    int g1 = N - g < 3 * NT_GROUP ? N : g + 3 * NT_GROUP;
    int g2 = N - g1 < 3 * NT_GROUP ? N : g1 + 3 * NT_GROUP;
    /* the next group, a slice before each block: B streams from memory
     * (the weight is read once per step, and L3 does not keep it) */
    const char *pf = (const char *)(B + (long)g1 * ldb);
    const char *pf_end = g2 > g1 ? (const char *)(B + (long)(g2 - 1) * ldb + K) : pf;
    long blocks = (long)((M + 3) / 4) * ((g1 - g + 2) / 3);
    long step = ((pf_end - pf + 63) / 64 + blocks - 1) / blocks * 64;
    for (int i = 0; i < M; i += 4) {
      int mr = M - i < 4 ? M - i : 4;
      const float *a = A + (long)i * lda;
      float *c = C + (long)i * ldc;
      for (int j = g; j < g1; j += 3) {
        int nr = g1 - j < 3 ? g1 - j : 3;
        const float *b = B + (long)j * ldb;
        for (const char *q = pf + step; pf < pf_end && pf < q; pf += 64)
          _mm_prefetch(pf, _MM_HINT_T1);
        switch (mr * 4 + nr) {
        case 4 * 4 + 3: nt_block(4, 3, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 4 * 4 + 2: nt_block(4, 2, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 4 * 4 + 1: nt_block(4, 1, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 3 * 4 + 3: nt_block(3, 3, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 3 * 4 + 2: nt_block(3, 2, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 3 * 4 + 1: nt_block(3, 1, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 2 * 4 + 3: nt_block(2, 3, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 2 * 4 + 2: nt_block(2, 2, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 2 * 4 + 1: nt_block(2, 1, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 1 * 4 + 3: nt_block(1, 3, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 1 * 4 + 2: nt_block(1, 2, K, a, lda, b, ldb, beta, c + j, ldc); break;
        case 1 * 4 + 1: nt_block(1, 1, K, a, lda, b, ldb, beta, c + j, ldc); break;
        }
      }
    }
  }
}

/* One row: y (N) = x (K) B^T, B (N, K), a row of B at a time so that B is
 * read as one sequential stream: the decoder's 86 MB at nhid 650 in 6.5 ms
 * against 7.8 for sgemv, measured alternating on this machine. */
AVX2 static void sgemv_t(int N, int K, const float *x, const float *B, int ldb, float beta, float *y)
{
  for (int n = 0; n < N; n++) {
    const float *w = B + (long)n * ldb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int k = 0;
    for (; k + 32 <= K; k += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8)
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    if (k < K) {
      __m256i m = lane_mask(K - k);
      a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w + k, m), _mm256_maskload_ps(x + k, m), a1);
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    y[n] = beta == 0 ? s : y[n] + s;
  }
}

int lmc_sgemm_abt_native(void)
{
  static int have = -1;
  if (have < 0) {
    __builtin_cpu_init();
    have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return have;
}

void lmc_sgemm_abt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                   int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  if (!lmc_sgemm_abt_native() || K <= 0 || (beta != 0 && beta != 1))
    blas(M, N, K, A, lda, B, ldb, beta, C, ldc);
  else if (M == 1)
    sgemv_t(N, K, A, B, ldb, beta, C);
  else
    sgemm_nt(M, N, K, A, lda, B, ldb, beta, C, ldc);
}

#else

int lmc_sgemm_abt_native(void)
{
  return 0;
}

void lmc_sgemm_abt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                   int ldc)
{
  if (M > 0 && N > 0)
    blas(M, N, K, A, lda, B, ldb, beta, C, ldc);
}

#endif
