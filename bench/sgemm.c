/*
 * sgemm.c: how fast OpenBLAS's cblas_sgemm runs the decoder's products on
 * this machine, at a given thread count: the yardstick the benchmark holds
 * the trainers' GFLOP/s against.
 *
 *   build/bench/sgemm M K N THREADS [SECONDS]
 *
 * The decoder of every model is Linear(K -> N) over M = bptt * batch rows
 * (700 x 200 @ 200 x 33278 at the example's sizes).  A training step runs
 * three products with it, each timed here with the layouts of a PyTorch
 * Linear whose weight W is (N, K), row-major:
 *
 *   fwd  Y  = X W^T     (M, K) x (N, K)^T  -> (M, N)
 *   dx   dX = dY W      (M, N) x (N, K)    -> (M, K)
 *   dw   dW = dY^T X    (M, N)^T x (M, K)  -> (N, K)
 *
 * Each is called once to warm up, then repeated for at least SECONDS
 * (default 1) and at least 3 times; reported as "NAME M K N BEST MEAN"
 * lines, the GFLOP/s of the best call and of all of them (the sustained
 * rate, which is what a program calling it once per step sees), then
 * "total - - - BEST MEAN" for the three together (their FLOPs over the sum
 * of their times).  THREADS goes to openblas_set_num_threads; the caller
 * also sets OPENBLAS_NUM_THREADS.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern void openblas_set_num_threads(int);

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *randoms(size_t n)
{
  float *p = malloc(n * sizeof *p);
  if (!p) {
    fprintf(stderr, "sgemm: out of memory\n");
    exit(1);
  }
  unsigned s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 1103515245u + 12345u;
    p[i] = (float)((s >> 9) & 0xffff) / 65536.0f - 0.5f;
  }
  return p;
}

typedef struct {
  const char *name;
  CBLAS_TRANSPOSE ta, tb;
  int m, n, k;            /* C (m, n) = op(A) (m, k) op(B) (k, n) */
  const float *a, *b;
  int lda, ldb;
  float *c;
} Product;

/* Seconds per call: the best one and the mean. */
static void time_calls(const Product *p, double seconds, double *best, double *mean)
{
  cblas_sgemm(CblasRowMajor, p->ta, p->tb, p->m, p->n, p->k, 1.0f, p->a, p->lda, p->b, p->ldb, 0.0f, p->c, p->n);
  double start = now();
  int rep;
  *best = 1e30;
  for (rep = 0; rep < 3 || now() - start < seconds; rep++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, p->ta, p->tb, p->m, p->n, p->k, 1.0f, p->a, p->lda, p->b, p->ldb, 0.0f, p->c,
                p->n);
    double t = now() - t0;
    if (t < *best) *best = t;
  }
  *mean = (now() - start) / rep;
}

int main(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: sgemm M K N THREADS [SECONDS]\n");
    return 2;
  }
  int M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]), threads = atoi(argv[4]);
  double seconds = argc > 5 ? atof(argv[5]) : 1.0;
  if (M < 1 || K < 1 || N < 1 || threads < 1) {
    fprintf(stderr, "sgemm: M, K, N and THREADS must be positive\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  float *x = randoms((size_t)M * K), *w = randoms((size_t)N * K), *dy = randoms((size_t)M * N);
  float *y = randoms((size_t)M * N), *dx = randoms((size_t)M * K), *dw = randoms((size_t)N * K);
  Product prods[3] = {
    { "fwd", CblasNoTrans, CblasTrans, M, N, K, x, w, K, K, y },
    { "dx", CblasNoTrans, CblasNoTrans, M, K, N, dy, w, N, K, dx },
    { "dw", CblasTrans, CblasNoTrans, N, K, M, dy, x, N, K, dw },
  };
  double flops = 2.0 * M * K * N, total_best = 0, total_mean = 0;
  for (int i = 0; i < 3; i++) {
    double best, mean;
    time_calls(&prods[i], seconds, &best, &mean);
    total_best += best;
    total_mean += mean;
    printf("%s %d %d %d %.2f %.2f\n", prods[i].name, M, K, N, flops / best * 1e-9, flops / mean * 1e-9);
    fflush(stdout);
  }
  printf("total - - - %.2f %.2f\n", 3 * flops / total_best * 1e-9, 3 * flops / total_mean * 1e-9);
  free(x), free(w), free(dy), free(y), free(dx), free(dw);
  return 0;
}
