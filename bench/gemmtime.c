/*
 * gemmtime.c: where a trainer's time goes in BLAS.  A preloaded library
 * that times every cblas_sgemm call of the process and, at exit, prints
 * one line per distinct call shape (transposes, M, N, K): the calls, the
 * seconds spent and the GFLOP/s reached, then the total.
 *
 *   make build/bench/gemmtime.so
 *   LD_PRELOAD=build/bench/gemmtime.so OPENBLAS_NUM_THREADS=1 \
 *     build/bench/lstm-650 train --data build/bench/data --epochs 1 \
 *     --max-batches 11 --log-interval 5 --threads 1 --save /tmp/g.safetensors
 *
 * Shapes tell training from evaluation (training runs bptt x batch rows,
 * evaluation bptt x 10).  The few-row products of runtime/gemm.c are linked
 * into the trainer and do not pass through here.  The clock costs about
 * 50 ns a call, well under 1% of the smallest product a trainer makes.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void SgemmFn(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                     const blasint, const blasint, const float, const float *, const blasint, const float *,
                     const blasint, const float, float *, const blasint);

typedef struct {
  int ta, tb, M, N, K;
  long calls;
  double seconds;
} Shape;

enum { MAX_SHAPES = 512 };
static Shape shapes[MAX_SHAPES];
static int nshapes, overflow;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void report(void)
{
  double total = 0, flops = 0;
  fprintf(stderr, "gemmtime: %-5s %6s %6s %6s %8s %9s %8s\n", "op", "M", "N", "K", "calls", "seconds", "GFLOP/s");
  for (int i = 0; i < nshapes; i++) {
    const Shape *s = &shapes[i];
    double f = 2.0 * s->M * s->N * s->K * (double)s->calls;
    fprintf(stderr, "gemmtime: %c%c    %6d %6d %6d %8ld %9.3f %8.1f\n", s->ta == CblasTrans ? 'T' : 'N',
            s->tb == CblasTrans ? 'T' : 'N', s->M, s->N, s->K, s->calls, s->seconds,
            s->seconds > 0 ? f / s->seconds * 1e-9 : 0.0);
    total += s->seconds;
    flops += f;
  }
  fprintf(stderr, "gemmtime: total %.3f s, %.1f GFLOP/s%s\n", total, total > 0 ? flops / total * 1e-9 : 0.0,
          overflow ? " (more shapes than the table holds: some calls not counted)" : "");
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C,
                 const blasint ldc)
{
  static SgemmFn *real;
  if (!real) {
    real = (SgemmFn *)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!real) {
      fprintf(stderr, "gemmtime: no cblas_sgemm after this library\n");
      abort();
    }
    atexit(report);
  }
  double t = now();
  real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  t = now() - t;
  int i = 0;
  while (i < nshapes && !(shapes[i].ta == (int)ta && shapes[i].tb == (int)tb && shapes[i].M == M &&
                          shapes[i].N == N && shapes[i].K == K))
    i++;
  if (i == nshapes) {
    if (nshapes == MAX_SHAPES) {
      overflow = 1;
      return;
    }
    shapes[nshapes++] = (Shape){ .ta = ta, .tb = tb, .M = M, .N = N, .K = K };
  }
  shapes[i].calls++;
  shapes[i].seconds += t;
}
