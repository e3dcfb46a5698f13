/*
 * check_gemm.c: runtime/gemm.c's C = A B^T + beta C for few rows against
 * a product in double, over shapes that exercise every block and tail
 * (rows of A in fours and the rest, rows of B in threes and in groups of
 * 48, K in eights and the rest, one row), padded leading dimensions,
 * beta 0 and 1; and the claim the emitted code relies on: the same bits
 * whichever columns a call covers, so at any thread count.
 */
#include <float.h>
#include <string.h>

#include "lmc_rt.h"
#include "testutil.h"

static float *filled(long n, unsigned seed)
{
  float *p = malloc(n * sizeof *p);
  for (long i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

/* Worst |C - ref| over the tolerance (K + 2) u (sum |a b| + |beta c|),
 * u = 2^-24, the bound of a float sum of K + 1 terms in any order;
 * checks that C's padding is untouched. */
static double check_shape(int M, int N, int K, float beta)
{
  int lda = K + 3, ldb = K + 5, ldc = N + 2;
  float *A = filled((long)M * lda, 1 + M), *B = filled((long)N * ldb, 2 + N), *C = filled((long)M * ldc, 3 + K);
  float *C0 = malloc((long)M * ldc * sizeof *C0);
  memcpy(C0, C, (long)M * ldc * sizeof *C);
  if (beta == 0)
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++)
        C[(long)i * ldc + j] = NAN;   /* beta 0: C is not read */
  lmc_sgemm_abt(M, N, K, A, lda, B, ldb, beta, C, ldc);
  double worst = 0;
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < N; j++) {
      double ref = beta * (double)C0[(long)i * ldc + j], mag = fabs(ref);
      for (int k = 0; k < K; k++) {
        double p = (double)A[(long)i * lda + k] * B[(long)j * ldb + k];
        ref += p;
        mag += fabs(p);
      }
      double tol = (K + 2) * 0x1p-24 * mag + DBL_MIN;
      double r = fabs(C[(long)i * ldc + j] - ref) / tol;
      if (!(r <= worst))
        worst = r;
    }
    for (int j = N; j < ldc; j++)
      ck_assert_msg(memcmp(&C[(long)i * ldc + j], &C0[(long)i * ldc + j], sizeof *C) == 0,
                    "M %d N %d K %d: padding at (%d, %d) written", M, N, K, i, j);
  }
  free(A);
  free(B);
  free(C);
  free(C0);
  return worst;
}

START_TEST(test_against_double)
{
  static const int Ms[] = {1, 2, 3, 4, 5, 7, 10, 20};
  static const int Ns[] = {1, 2, 3, 4, 47, 48, 49, 100, 150};
  static const int Ks[] = {1, 5, 8, 13, 64, 650};
  double worst = 0;
  int shapes = 0;
  for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
    for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
      for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++)
        for (int beta = 0; beta <= 1; beta++) {
          double r = check_shape(Ms[a], Ns[b], Ks[c], (float)beta);
          ck_assert_msg(r <= 1, "M %d N %d K %d beta %d: error %.3g of the tolerance", Ms[a], Ns[b], Ks[c], beta, r);
          if (r > worst)
            worst = r;
          shapes++;
        }
  printf("lmc_sgemm_abt (%s): %d shapes, worst error %.3f of the tolerance (K + 2) 2^-24 sum |a b|\n",
         lmc_sgemm_abt_native() ? "AVX2 kernels" : "cblas_sgemm", shapes, worst);
}
END_TEST

/* The recurrent shape: 20 x 2600 x 650, and its columns in pieces. */
START_TEST(test_same_bits_any_split)
{
  int M = 20, N = 2600, K = 650;
  float *A = filled((long)M * K, 7), *B = filled((long)N * K, 8);
  float *whole = malloc((long)M * N * sizeof *whole), *parts = malloc((long)M * N * sizeof *parts);
  lmc_sgemm_abt(M, N, K, A, K, B, K, 0, whole, N);
  static const int cuts[] = {0, 1, 5, 48, 1000, 1299, 2599, 2600};
  for (size_t i = 0; i + 1 < sizeof cuts / sizeof *cuts; i++)
    lmc_sgemm_abt(M, cuts[i + 1] - cuts[i], K, A, K, B + (long)cuts[i] * K, K, 0, parts + cuts[i], N);
  ck_assert(memcmp(whole, parts, (long)M * N * sizeof *whole) == 0);
  for (int nt = 2; nt <= 5; nt++) {
    memset(parts, 0, (long)M * N * sizeof *parts);
    lmc_sgemm_abt_mt(nt, M, N, K, A, K, B, K, 0, parts, N);
    ck_assert_msg(memcmp(whole, parts, (long)M * N * sizeof *whole) == 0, "nt %d: other bits", nt);
  }
  /* one row, as generation calls it, split the same ways */
  lmc_sgemm_abt(1, N, K, A, K, B, K, 0, whole, N);
  for (int nt = 2; nt <= 3; nt++) {
    lmc_sgemm_abt_mt(nt, 1, N, K, A, K, B, K, 0, parts, N);
    ck_assert(memcmp(whole, parts, N * sizeof *whole) == 0);
  }
  printf("20 x 2600 x 650 in 7 column pieces and on 2-5 threads: the same bits as one call\n");
  free(A);
  free(B);
  free(whole);
  free(parts);
}
END_TEST

/* beta 1 adds to C; K = 0 leaves beta C. */
START_TEST(test_accumulate)
{
  float A[2 * 9], B[3 * 9], C[2 * 3];
  for (int i = 0; i < 18; i++)
    A[i] = (float)(i % 5) - 2;
  for (int i = 0; i < 27; i++)
    B[i] = (float)(i % 7) - 3;
  for (int i = 0; i < 6; i++)
    C[i] = 100.0f * (float)i;
  lmc_sgemm_abt(2, 3, 9, A, 9, B, 9, 1, C, 3);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) {
      float want = 100.0f * (float)(i * 3 + j);   /* small integers: exact */
      for (int k = 0; k < 9; k++)
        want += A[i * 9 + k] * B[j * 9 + k];
      ck_assert_float_eq(C[i * 3 + j], want);
    }
  lmc_sgemm_abt(2, 3, 0, A, 9, B, 9, 0, C, 3);
  for (int i = 0; i < 6; i++)
    ck_assert_float_eq(C[i], 0);
}
END_TEST

static Suite *gemm_suite(void)
{
  Suite *s = suite_create("gemm");
  TCase *tc = tcase_create("gemm");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_against_double);
  tcase_add_test(tc, test_same_bits_any_split);
  tcase_add_test(tc, test_accumulate);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return run_suite(gemm_suite());
}
