/*
 * vexp.c: the exponentials of softmax rows in single precision,
 * exp(x[i] - max) for a row, summed, stored, or both: the inner loop of
 * every log_softmax, of the fused loss kernels and of sampling, 33278
 * elements a row at the example's vocabulary.
 *
 * lmc_expf (lmc_math.h) is written so that compilers vectorise it, but
 * clang 14 at -O3 -march=native reloads its constants inside the loop and
 * adds the eight-lane double sum through scalar inserts: 1.1-1.5 ns an
 * element on this machine, a tenth of the default LSTM's evaluation.
 * Here the same arithmetic in AVX2 and FMA intrinsics, eight lanes at a
 * time, the sum's lanes as two vectors of four doubles: 0.8-0.9 ns.
 * The values are lmc_expf's with its multiply-adds fused (the bits of a
 * -march=native build; a portable build's scalar lmc_expf rounds the
 * products apart, at most 1 ulp away), and each sum adds lane i % 8 in
 * the order of lmc_rt.h's row kernels, so the three forms return the same
 * bits for the same row.  The row's maximum, with or without a bias
 * added on the way, is here too: inlined into the emitted row loops,
 * clang left lmc_rt.h's eight-lane max scalar.  Where the CPU lacks AVX2
 * and FMA, lmc_rt.h's portable forms run.
 */
#include "lmc_rt.h"

/* lmc_rt.h's portable forms are the fallback here: real is float. */
_Static_assert(sizeof(real) == sizeof(float), "vexp.c is the single-precision path");

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/* lmc_expf on eight lanes, step for step (see lmc_math.h). */
AVX2 INLINE __m256 exp8(__m256 x)
{
  const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.72283f);
  const __m256 round = _mm256_set1_ps(12582912.0f);   /* 1.5 * 2^23 */
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);   /* NaN -> lo, a finite stand-in */
  __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), round), round);
  n = _mm256_min_ps(n, _mm256_set1_ps(127.0f));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  y = _mm256_and_ps(y, _mm256_cmp_ps(x, lo, _CMP_NLT_UQ));   /* below lo: 0 */
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));   /* NaN stays NaN */
}

/* s0 += lanes 0..3 of y, s1 += lanes 4..7, in double. */
AVX2 INLINE void add_lanes(__m256d *s0, __m256d *s1, __m256 y)
{
  *s0 = _mm256_add_pd(*s0, _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
  *s1 = _mm256_add_pd(*s1, _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
}

/* The tail (n % 8 elements, into lane 0) and the lanes pairwise. */
AVX2 INLINE double finish(__m256d s0, __m256d s1, const float *tail, long n)
{
  double s[8];
  _mm256_storeu_pd(s, s0);
  _mm256_storeu_pd(s + 4, s1);
  for (long i = 0; i < n; i++)
    s[0] += tail[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

AVX2 static double exp_sum_to_avx2(float *y, const float *x, long n, float max)
{
  const __m256 m = _mm256_set1_ps(max);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0;
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(y + i, v);
    add_lanes(&s0, &s1, v);
  }
  for (long j = i; j < n; j++)
    y[j] = lmc_expf(x[j] - max);
  return finish(s0, s1, y + i, n - i);
}

AVX2 static double exp_sum_avx2(const float *x, long n, float max)
{
  const __m256 m = _mm256_set1_ps(max);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0;
  long i = 0;
  for (; i + 8 <= n; i += 8)
    add_lanes(&s0, &s1, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m)));
  float tail[8];
  for (long j = i; j < n; j++)
    tail[j - i] = lmc_expf(x[j] - max);
  return finish(s0, s1, tail, n - i);
}

/* The lanes of m after the vector part, the tail, then lanes 1..7 into 0
 * (_mm256_max_ps(a, b) is a > b ? a : b, the scalar form's select). */
AVX2 INLINE float max_finish(__m256 m, const float *x, long i, long n)
{
  float l[8];
  _mm256_storeu_ps(l, m);
  for (; i < n; i++)
    l[0] = x[i] > l[0] ? x[i] : l[0];
  for (int j = 1; j < 8; j++)
    l[0] = l[j] > l[0] ? l[j] : l[0];
  return l[0];
}

AVX2 static float row_max_avx2(const float *x, long n)
{
  __m256 m = _mm256_set1_ps(x[0]);
  long i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
  return max_finish(m, x, i, n);
}

AVX2 static float add_row_max_avx2(float *x, const float *bias, long n)
{
  if (n < 8)
    return lmc_add_row_max_c(x, bias, n);
  __m256 m = _mm256_set1_ps(x[0] + bias[0]);
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(bias + i));
    _mm256_storeu_ps(x + i, v);
    m = _mm256_max_ps(v, m);
  }
  for (long j = i; j < n; j++)
    x[j] += bias[j];
  return max_finish(m, x, i, n);
}

static int have_avx2(void)
{
  return lmc_sgemm_abt_native();
}

#else

static int have_avx2(void)
{
  return 0;
}

static double exp_sum_to_avx2(float *y, const float *x, long n, float max)
{
  return lmc_exp_sum_to_c(y, x, n, max);
}

static double exp_sum_avx2(const float *x, long n, float max)
{
  return lmc_exp_sum_c(x, n, max);
}

static float row_max_avx2(const float *x, long n)
{
  return lmc_row_max_c(x, n);
}

static float add_row_max_avx2(float *x, const float *bias, long n)
{
  return lmc_add_row_max_c(x, bias, n);
}

#endif

double lmc_exp_sum_to_f32(float *y, const float *x, long n, float max)
{
  return have_avx2() ? exp_sum_to_avx2(y, x, n, max) : lmc_exp_sum_to_c(y, x, n, max);
}

double lmc_exp_sum_f32(const float *x, long n, float max)
{
  return have_avx2() ? exp_sum_avx2(x, n, max) : lmc_exp_sum_c(x, n, max);
}

float lmc_row_max_f32(const float *x, long n)
{
  return have_avx2() ? row_max_avx2(x, n) : lmc_row_max_c(x, n);
}

float lmc_add_row_max_f32(float *x, const float *bias, long n)
{
  return have_avx2() ? add_row_max_avx2(x, bias, n) : lmc_add_row_max_c(x, bias, n);
}
