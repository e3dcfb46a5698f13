/*
 * check_gemm_bf16.c: runtime/gemm_bf16.c.  The rounding to bf16 bit for
 * bit against a scalar reference written another way (the two bf16
 * neighbours of x, the nearer taken, ties to the even one), over the
 * special values (ties, NaN, Inf, denormals, overflow) and random bit
 * patterns, at every tail length of the vector form.  The products
 * y = op(a) op(b) + beta y, in all four transpose combinations, odd sizes,
 * beta 0 and 1, leading dimensions wider than the rows, against a sum in
 * double of the same bf16 operands: the portable loop, then lmc_gemm_bf16
 * (the fast path where the CPU has AVX512_BF16), oneDNN's matmul
 * (runtime/gemm_dnnl.c, where it is installed) and the few-row kernel,
 * each within the tolerance of a float sum of K + 1 terms in any order,
 * and the fast one against the portable one.
 */
#include <float.h>
#include <string.h>

#include "gemm_bf16.h"
#include "testutil.h"

static uint32_t bits_of(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float float_of(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* x to bf16: of the truncation lo and the next bf16 up (in magnitude), the
 * nearer one, measured in double; at a tie, the one with an even last
 * bit.  NaN: quiet, sign and top payload kept; denormal: signed zero. */
static uint16_t ref_bf16(float x)
{
  uint32_t u = bits_of(x);
  if (isnan(x))
    return (uint16_t)((u >> 16) | 0x40);
  if (fpclassify(x) == FP_SUBNORMAL)
    return (uint16_t)((u >> 16) & 0x8000);
  if (isinf(x) || x == 0)
    return (uint16_t)(u >> 16);
  uint16_t lo = (uint16_t)(u >> 16);
  int e = (int)((u >> 23) & 0xff);
  double dlo = fabs((double)float_of((uint32_t)lo << 16)), ulp = ldexp(1, e - 127 - 7), ax = fabs((double)x);
  double below = ax - dlo, above = dlo + ulp - ax;
  if (below < above || (below == above && (lo & 1) == 0))
    return lo;
  return (uint16_t)(lo + 1);   /* carries into the exponent, up to Inf */
}

static uint32_t lcg(uint32_t *s)
{
  *s = *s * 1664525u + 1013904223u;
  return *s;
}

enum { NVAL = 1 << 18 };

START_TEST(test_rounding)
{
  static const uint32_t special[] = {
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000, 0x00800000,
    0x80800000, 0x00808000, 0x00818000, 0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f817fff,
    0x3f80ffff, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, 0x7f7effff, 0x7f800000, 0xff800000,
    0x7f800001, 0xff800001, 0x7fc00000, 0xffc00000, 0x7fbfffff, 0x7fff0000, 0x7f810000, 0x3effffff,
  };
  enum { NS = sizeof special / sizeof *special };
  float *x = malloc(NVAL * sizeof *x);
  uint16_t *y = malloc((NVAL + 1) * sizeof *y), *want = malloc(NVAL * sizeof *want);
  uint32_t s = 7;
  for (int i = 0; i < NVAL; i++) {
    uint32_t r = lcg(&s);
    /* every 4th a tie or a neighbour of one, in any exponent */
    x[i] = float_of(i < NS ? special[i] : i % 4 ? r : (r & 0xffff0000u) | (0x7fffu + (lcg(&s) >> 30)));
    want[i] = ref_bf16(x[i]);
  }
  int paths = 0;
  for (int v = 0; v < 2; v++) {
    void (*f)(const float *, lmc_bf16 *, size_t) = v ? lmc_to_bf16 : lmc_to_bf16_c;
    f(x, y, NVAL);
    for (int i = 0; i < NVAL; i++)
      ck_assert_msg(y[i] == want[i], "%s: %08x -> %04x, want %04x", v ? "lmc_to_bf16" : "lmc_to_bf16_c",
                    bits_of(x[i]), y[i], want[i]);
    /* every tail length, and nothing written past n */
    for (int n = 0; n <= 70; n++) {
      y[n] = 0xabcd;
      f(x + NS + n, y, (size_t)n);
      ck_assert_msg(y[n] == 0xabcd, "n %d: wrote past the end", n);
      for (int i = 0; i < n; i++)
        ck_assert_msg(y[i] == want[NS + n + i], "n %d: element %d differs", n, i);
    }
    paths++;
  }
  printf("rounding: %d values (%d special), bit-exact in %d forms (vector form: %s)\n", NVAL, NS, paths,
         lmc_cpu_has_bf16() ? "vcvtne2ps2bf16" : "portable, no AVX512_BF16 here");
  free(x);
  free(y);
  free(want);
}
END_TEST

static lmc_bf16 *bf16_filled(long n, uint32_t seed)
{
  lmc_bf16 *p = malloc(n * sizeof *p);
  for (long i = 0; i < n; i++)
    p[i] = ref_bf16((float)(lcg(&seed) >> 8) / 8388608.0f - 1.0f);
  return p;
}

typedef void Gemm(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                  float beta, float *y, int ldy, int threads);

static void portable(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                     float beta, float *y, int ldy, int threads)
{
  (void)threads;
  lmc_gemm_bf16_c(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy);
}

typedef struct {
  double worst;          /* largest |y - ref| / tol */
  double apart;          /* largest |y - portable y| / tol */
} Errors;

/* One product by f at threads, against the double sum and the portable
 * loop's result; tol = (K + 2) 2^-24 (sum |a b| + |beta y|).  Checks that
 * y's padding is untouched and that beta 0 does not read y. */
static void check_shape(Gemm *f, int threads, int ta, int tb, int M, int N, int K, float beta, Errors *e)
{
  int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldy = N + 2;
  lmc_bf16 *a = bf16_filled((long)(ta ? K : M) * lda, 1 + M), *b = bf16_filled((long)(tb ? N : K) * ldb, 2 + N);
  float *y0 = malloc((long)M * ldy * sizeof *y0), *y = malloc((long)M * ldy * sizeof *y);
  float *yc = malloc((long)M * ldy * sizeof *yc);
  uint32_t s = 3 + K;
  for (long i = 0; i < (long)M * ldy; i++)
    y0[i] = (float)(lcg(&s) >> 8) / 8388608.0f - 1.0f;
  memcpy(y, y0, (long)M * ldy * sizeof *y);
  if (beta == 0)
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++)
        y[(long)i * ldy + j] = NAN;
  memcpy(yc, y, (long)M * ldy * sizeof *y);
  f(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy, threads);
  lmc_gemm_bf16_c(ta, tb, M, N, K, a, lda, b, ldb, beta, yc, ldy);
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < N; j++) {
      double ref = beta * (double)y0[(long)i * ldy + j], mag = fabs(ref);
      for (int k = 0; k < K; k++) {
        lmc_bf16 ak = ta ? a[(long)k * lda + i] : a[(long)i * lda + k];
        lmc_bf16 bk = tb ? b[(long)j * ldb + k] : b[(long)k * ldb + j];
        double p = (double)float_of((uint32_t)ak << 16) * float_of((uint32_t)bk << 16);
        ref += p;
        mag += fabs(p);
      }
      double tol = (K + 2) * 0x1p-24 * mag + DBL_MIN, v = y[(long)i * ldy + j];
      double r = fabs(v - ref) / tol, d = fabs(v - yc[(long)i * ldy + j]) / tol;
      if (!(r <= e->worst))
        e->worst = r;
      if (!(d <= e->apart))
        e->apart = d;
    }
    for (int j = N; j < ldy; j++)
      ck_assert_msg(memcmp(&y[(long)i * ldy + j], &y0[(long)i * ldy + j], sizeof *y) == 0,
                    "ta %d tb %d M %d N %d K %d: padding at (%d, %d) written", ta, tb, M, N, K, i, j);
  }
  free(a);
  free(b);
  free(y0);
  free(y);
  free(yc);
}

/* The sizes of M, N and K: all five for the portable loop, the odd
 * three where each shape makes a oneDNN primitive (milliseconds each). */
static const int Ms[] = {3, 20, 37, 1, 16};
static const int Ns[] = {7, 65, 300, 1, 32};
static const int Ks[] = {2, 31, 200, 1, 64};

static void check_all(const char *name, Gemm *f, int threads, int sizes)
{
  Errors e = {0, 0};
  int shapes = 0;
  for (int t = 0; t < 4; t++)
    for (int i = 0; i < sizes; i++)
      for (int j = 0; j < sizes; j++)
        for (int k = 0; k < sizes; k++)
          for (int beta = 0; beta <= 1; beta++) {
            Errors one = {0, 0};
            check_shape(f, threads, t >> 1, t & 1, Ms[i], Ns[j], Ks[k], (float)beta, &one);
            ck_assert_msg(one.worst <= 1 && one.apart <= 2,
                          "%s: ta %d tb %d M %d N %d K %d beta %d: error %.3g of the tolerance, %.3g of it from the "
                          "portable loop",
                          name, t >> 1, t & 1, Ms[i], Ns[j], Ks[k], beta, one.worst, one.apart);
            e.worst = one.worst > e.worst ? one.worst : e.worst;
            e.apart = one.apart > e.apart ? one.apart : e.apart;
            shapes++;
          }
  printf("%s: %d products, largest error %.3g of the tolerance (K + 2) 2^-24 (sum |a b| + |beta y|); "
         "largest difference from the portable loop %.3g of it (at most 2)\n",
         name, shapes, e.worst, e.apart);
}

START_TEST(test_portable)
{
  check_all("portable", portable, 1, 5);
}
END_TEST

static void dnnl(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                 float beta, float *y, int ldy, int threads)
{
  ck_assert_msg(lmc_gemm_bf16_dnnl(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy, threads) == 0,
                "oneDNN refused ta %d tb %d M %d N %d K %d beta %g", ta, tb, M, N, K, beta);
}

START_TEST(test_dnnl)
{
  lmc_bf16 one = 0x3f80;
  float y = 0;
  if (lmc_gemm_bf16_dnnl(0, 0, 1, 1, 1, &one, 1, &one, 1, 0, &y, 1, 1) < 0) {
    printf("oneDNN: not installed here (libdnnl.so.2), path not checked\n");
    return;
  }
  ck_assert_msg(y == 1, "oneDNN: 1 x 1 = %g", y);
  check_all("oneDNN, 1 thread", dnnl, 1, 3);
  /* a K over 4096 goes in chunks of about 2048 (runtime/gemm_dnnl.c):
   * three, four, five, the last one shorter */
  static const int longK[] = {4097, 6145, 8200};
  Errors e = {0, 0};
  for (int t = 0; t < 4; t++)
    for (int k = 0; k < 3; k++)
      for (int beta = 0; beta <= 1; beta++)
        check_shape(dnnl, 2, t >> 1, t & 1, 5, 33, longK[k], (float)beta, &e);
  printf("oneDNN, K 4097, 6145, 8200 in chunks: largest error %.3g of the tolerance, %.3g of it from the portable "
         "loop\n", e.worst, e.apart);
  ck_assert_msg(e.worst <= 1 && e.apart <= 2, "oneDNN, long K: error %.3g of the tolerance", e.worst);
}
END_TEST

static void few(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                float beta, float *y, int ldy, int threads)
{
  (void)threads;
  ck_assert_msg(lmc_gemm_bf16_few(ta, tb, M, N, K, a, lda, b, ldb, beta, y, ldy) == 0,
                "the few-row kernel refused M %d N %d K %d", M, N, K);
}

/* The few-row a b^T kernel: rows of a one and in pairs, rows of b in
 * eights, sixes and the rest, K in 32s and the masked rest. */
START_TEST(test_few)
{
  lmc_bf16 one = 0x3f80;
  float y = 0;
  if (lmc_gemm_bf16_few(0, 1, 1, 1, 1, &one, 1, &one, 1, 0, &y, 1) < 0) {
    printf("few-row kernel: no AVX512_BF16 here, not checked\n");
    return;
  }
  ck_assert_msg(lmc_gemm_bf16_few(1, 1, 1, 1, 1, &one, 1, &one, 1, 0, &y, 1) < 0, "a^T taken");
  static const int fm[] = {1, 2, 3, 5, 6}, fn[] = {1, 7, 8, 9, 13, 100}, fk[] = {1, 31, 32, 33, 64, 650};
  Errors e = {0, 0};
  int n = 0;
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 6; j++)
      for (int k = 0; k < 6; k++)
        for (int beta = 0; beta <= 1; beta++, n++)
          check_shape(few, 1, 0, 1, fm[i], fn[j], fk[k], (float)beta, &e);
  printf("few-row kernel: %d products, largest error %.3g of the tolerance, %.3g of it from the portable loop\n", n,
         e.worst, e.apart);
  ck_assert_msg(e.worst <= 1 && e.apart <= 2, "few-row kernel: error %.3g of the tolerance", e.worst);
}
END_TEST

START_TEST(test_fast)
{
  printf("this CPU has AVX512_BF16: %s\n", lmc_cpu_has_bf16() ? "yes" : "no");
  check_all("lmc_gemm_bf16, 2 threads", lmc_gemm_bf16, 2, 3);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("gemm_bf16");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_rounding);
  tcase_add_test(tc, test_portable);
  tcase_add_test(tc, test_dnnl);
  tcase_add_test(tc, test_few);
  tcase_add_test(tc, test_fast);
  suite_add_tcase(s, tc);
  /* In one process, not a forked child per test: LeakSanitizer's leak
   * check at the exit of a forked child that started oneDNN's OpenMP
   * threads crashes in its thread tracer (make sanitize); at the exit of
   * the process it runs as it should. */
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int nfail = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nfail == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
