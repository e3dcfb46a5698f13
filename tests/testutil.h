/*
 * testutil.h: helpers shared by the check suites.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs the suite, printing check's "Checks: N, Failures: F, Errors: E". */
static inline int run_suite(Suite *s)
{
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nfail = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nfail == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* The runtime library the emitted C links against (its product kernels):
 * $B/liblmcrt.a, B the build directory (build, or build/san under make
 * sanitize). */
static inline const char *runtime_lib(void)
{
  static char path[512];
  snprintf(path, sizeof path, "%s/liblmcrt.a", getenv("B") && *getenv("B") ? getenv("B") : "build");
  return path;
}

/* Largest absolute difference of two arrays, printed next to the tolerance. */
static inline double max_abs_diff(const char *what, const double *a, const double *b, int n, double tol)
{
  double m = 0;
  for (int i = 0; i < n; i++) {
    double d = fabs(a[i] - b[i]);
    if (!(d <= m)) m = d;   /* NaN propagates */
  }
  printf("%s: max |diff| %.3g (tolerance %.3g)\n", what, m, tol);
  return m;
}

#endif
