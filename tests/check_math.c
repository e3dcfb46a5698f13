/*
 * check_math.c: the vectorisable float functions of runtime/lmc_math.h
 * against libm, and the softmax row helpers of runtime/lmc_rt.h (with
 * runtime/vexp.c) against plain loops in double and against lmc_expf.  Errors are in ulp of libm's float result.
 */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "lmc_rt.h"
#include "testutil.h"

static double ulp_error(float got, float want)
{
  if (got == want)
    return 0;
  float a = fabsf(want);
  double ulp = (double)nextafterf(a, INFINITY) - a;
  return fabs((double)got - want) / ulp;
}

/* 0 and the floats of magnitude 1e-30 up to max(-lo, hi) at relative
 * steps of 2^-14, each sign where it lies in [lo, hi]; returns the worst
 * error and where. */
static double sweep(float (*f)(float), float (*ref)(float), float lo, float hi, float *where, long *count)
{
  double worst = ulp_error(f(0), ref(0));
  long n = 1;
  float top = -lo > hi ? -lo : hi;
  for (float a = 1e-30f; a <= top; a += a * 0x1p-14f)
    for (int sign = -1; sign <= 1; sign += 2) {
      float x = sign * a;
      if (x < lo || x > hi)
        continue;
      double e = ulp_error(f(x), ref(x));
      if (!(e <= worst)) {
        worst = e;
        *where = x;
      }
      n++;
    }
  *count = n;
  return worst;
}

START_TEST(test_expf)
{
  float where = 0;
  long n;
  double worst = sweep(lmc_expf, expf, -87.3f, 88.7f, &where, &n);
  printf("lmc_expf over [-87.3, 88.7]: %ld points, worst %.2f ulp at %.9g (tolerance 4.2 ulp)\n", n, worst, where);
  ck_assert(worst <= 4.2);
  ck_assert(lmc_expf(0) == 1);
  ck_assert(lmc_expf(-0.0f) == 1);
  ck_assert(lmc_expf(-INFINITY) == 0);
  ck_assert(lmc_expf(-88.0f) == 0);   /* below ln(FLT_MIN): no subnormals */
  ck_assert(lmc_expf(-1e30f) == 0);
  ck_assert(isinf(lmc_expf(89.0f)) && lmc_expf(89.0f) > 0);
  ck_assert(isinf(lmc_expf(INFINITY)));
  ck_assert(isnan(lmc_expf(NAN)));
}
END_TEST

START_TEST(test_tanhf)
{
  float where = 0;
  long n;
  double worst = sweep(lmc_tanhf, tanhf, -20, 20, &where, &n);
  printf("lmc_tanhf over [-20, 20]: %ld points, worst %.2f ulp at %.9g (tolerance 6 ulp)\n", n, worst, where);
  ck_assert(worst <= 6);
  ck_assert(lmc_tanhf(0) == 0);
  ck_assert(lmc_tanhf(INFINITY) == 1 && lmc_tanhf(-INFINITY) == -1);
  ck_assert(lmc_tanhf(50) == 1 && lmc_tanhf(-50) == -1);
  ck_assert(isnan(lmc_tanhf(NAN)));
  for (float x = -3; x <= 3; x += 0.01f)   /* odd */
    ck_assert(lmc_tanhf(-x) == -lmc_tanhf(x));
}
END_TEST

static uint64_t rng = 88172645463325252ull;

static float uniform(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)(rng >> 40) * 0x1p-24f;
}

/* The three exp_sum forms give the same bits and the values of libm's
 * exp within 4.2 ulp; row_max is the plain max; for rows whose length is
 * or is not a multiple of the eight lanes and of exp_sum's chunk. */
START_TEST(test_rows)
{
  static const long lens[] = { 1, 7, 8, 9, 511, 512, 513, 1031, 33278 };
  double worst_sum = 0, worst_elem = 0;
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    long n = lens[k];
    real *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y), *z = malloc((size_t)n * sizeof *z);
    for (long i = 0; i < n; i++)
      x[i] = 20 * uniform() - 12;
    real max = x[0];
    for (long i = 1; i < n; i++)
      max = x[i] > max ? x[i] : max;
    ck_assert(lmc_row_max(x, n) == max);

    double s_to = lmc_exp_sum_to(y, x, n, max);
    memcpy(z, x, (size_t)n * sizeof *z);
    double s_in = lmc_exp_sum_inplace(z, n, max);
    double s_none = lmc_exp_sum(x, n, max);
    ck_assert_msg(s_to == s_in && s_to == s_none, "n %ld: sums %.17g %.17g %.17g", n, s_to, s_in, s_none);
    ck_assert(memcmp(y, z, (size_t)n * sizeof *y) == 0);
    /* the portable forms (double precision, CPUs without AVX2): the same
     * lanes, values at most an ulp away where multiply-adds are not fused */
    ck_assert(lmc_row_max_c(x, n) == max);
    double c_to = lmc_exp_sum_to_c(z, x, n, max), c_none = lmc_exp_sum_c(x, n, max);
    ck_assert_msg(c_to == c_none && fabs(c_to - s_to) <= 1e-6 * s_to, "n %ld: portable sums %.17g %.17g, %.17g",
                  n, c_to, c_none, s_to);
    for (long i = 0; i < n; i++)
      ck_assert(ulp_error(z[i], y[i]) <= 1);

    double ref = 0;
    for (long i = 0; i < n; i++) {
      ref += exp((double)x[i] - max);
      double e = ulp_error(y[i], expf(x[i] - max));
      worst_elem = e > worst_elem ? e : worst_elem;
    }
    double rel = fabs(s_to - ref) / ref;
    worst_sum = rel > worst_sum ? rel : worst_sum;
    free(x);
    free(y);
    free(z);
  }
  printf("exp_sum rows (9 lengths): the three forms agree bit for bit; element worst %.2f ulp (tolerance 4.2), "
         "sum rel. error %.3g against double (tolerance 1e-6)\n", worst_elem, worst_sum);
  ck_assert(worst_elem <= 4.2);
  ck_assert(worst_sum <= 1e-6);
}
END_TEST

/* runtime/vexp.c against lmc_expf element by element, with the edges in
 * vector lanes and in the tail (a row of 19: two vectors and 3): below
 * ln(FLT_MIN) and -inf give 0, above ln(FLT_MAX) inf, NaN stays NaN and
 * makes the sum NaN (the trainer's NaN stop reads it there). */
START_TEST(test_rows_edges)
{
  enum { N = 19 };
  real x[N], y[N], z[N];
  for (int i = 0; i < N; i++)
    x[i] = 12 * uniform() - 10;
  x[2] = -INFINITY, x[17] = -INFINITY;
  x[3] = -200, x[18] = -200;
  x[4] = -87.5f;
  double worst = 0;
  double s = lmc_exp_sum_to(y, x, N, 0);
  for (int i = 0; i < N; i++) {
    double e = ulp_error(y[i], lmc_expf(x[i]));
    worst = e > worst ? e : worst;
  }
  printf("exp_sum edges: worst %.2f ulp against lmc_expf (tolerance 1: multiply-adds fused or not)\n", worst);
  ck_assert(worst <= 1);
  ck_assert(y[2] == 0 && y[17] == 0 && y[3] == 0 && y[18] == 0 && y[4] == 0);
  ck_assert(s == lmc_exp_sum(x, N, 0));

  x[5] = 100;   /* x - max above ln(FLT_MAX) */
  s = lmc_exp_sum_to(y, x, N, 0);
  ck_assert(isinf(y[5]) && y[5] > 0 && isinf(s));

  /* the max with a bias added on the way: the same sums in x, the plain
   * max of them; a NaN counts only as the first element (x > m is false) */
  real w[N], bias[N];
  for (int i = 0; i < N; i++)
    bias[i] = 4 * uniform() - 2;
  for (int len = 1; len <= N; len += 6) {
    memcpy(w, x, sizeof w);
    real m = lmc_add_row_max(w, bias, len), want = x[0] + bias[0];
    for (int i = 0; i < len; i++) {
      ck_assert(w[i] == x[i] + bias[i] || (isnan(w[i]) && isnan(x[i])));
      want = w[i] > want ? w[i] : want;
    }
    ck_assert_msg(m == want, "len %d: max %g, want %g", len, m, want);
    ck_assert(lmc_row_max(w, len) == want);
  }
  memcpy(w, x, sizeof w);
  w[9] = NAN, w[18] = NAN;
  ck_assert(lmc_row_max(w, N) == lmc_row_max(x, N));
  w[0] = NAN;
  ck_assert(isnan(lmc_row_max(w, N)));

  for (int at = 6; at < N; at += 10) {   /* a vector lane, then the tail */
    memcpy(z, x, sizeof z);
    z[5] = 0;
    z[at] = NAN;
    ck_assert(isnan(lmc_exp_sum(z, N, 0)));
    ck_assert(isnan(lmc_exp_sum_inplace(z, N, 0)) && isnan(z[at]) && !isnan(z[at - 1]));
  }
}
END_TEST

static Suite *math_suite(void)
{
  Suite *s = suite_create("math");
  TCase *tc = tcase_create("math");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_expf);
  tcase_add_test(tc, test_tanhf);
  tcase_add_test(tc, test_rows);
  tcase_add_test(tc, test_rows_edges);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return run_suite(math_suite());
}
