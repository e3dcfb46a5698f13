/*
 * peak.c: what one core can do in fp32 and in bf16, and how close the
 * products of the trainers come to it.
 *
 *   build/bench/peak [THREADS [SECONDS]]
 *
 * Prints the CPU model and the flags that matter, then
 *   peak fp32   vfmadd231ps on 16 floats, 12 independent sums (2 FLOP a lane)
 *   peak bf16   vdpbf16ps on 32 bf16 pairs into 16 floats, 12 sums (2 FLOP a pair)
 * (the median of many short runs)
 * on one thread (where the CPU lacks AVX-512 or AVX512_BF16, that peak is
 * reported as absent), and then, at THREADS threads (default 1), the
 * GFLOP/s of OpenBLAS's cblas_sgemm and of lmc_gemm_bf16 (and of each of
 * its paths) at the shapes the trainers run, each as a share of its
 * precision's peak times THREADS.  A shape is
 *   NAME M N K ta tb: y (M, N) = op(a) (M, K) op(b) (K, N)
 * (the decoder Linear(K -> N) over M = 700 rows: fwd y = x W^T, dx = dy W,
 * dw = dy^T x), timed after one warm-up call for at least SECONDS (default
 * 0.5) and 3 calls; "best" is the fastest call, "mean" all of them,
 * "share" the mean over the peak.  At one thread the clock is the
 * thread's CPU time (see seconds_now).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm_bf16.h"
#include "rt.h"

extern void openblas_set_num_threads(int);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum { CHAINS = 12, REPS = 1 << 16 };

/* Seconds on the clock every figure is measured with: at one thread the
 * calling thread's CPU time, so that on a shared machine the time others
 * hold the core is not counted (one thread's OpenBLAS and oneDNN run on
 * the caller); at several, the wall clock. */
static clockid_t clock_id = CLOCK_THREAD_CPUTIME_ID;

static double seconds_now(void)
{
  struct timespec ts;
  clock_gettime(clock_id, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef HAVE_X86
__attribute__((target("avx512f"))) static double fma_loop(long n)
{
  __m512 acc[CHAINS], x = _mm512_set1_ps(1.0f - 0x1p-20f), c = _mm512_set1_ps(0x1p-30f);
  for (int i = 0; i < CHAINS; i++)
    acc[i] = _mm512_set1_ps((float)i);
  for (long r = 0; r < n; r++)
    for (int i = 0; i < CHAINS; i++) {
      acc[i] = _mm512_fmadd_ps(acc[i], x, c);
      __asm__ volatile("" : "+v"(acc[i]));   /* one FMA each, none folded */
    }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++)
    s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static double dpbf16_loop(long n)
{
  __m512 acc[CHAINS];
  __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x2f80);
  for (int i = 0; i < CHAINS; i++)
    acc[i] = _mm512_set1_ps((float)i);
  for (long r = 0; r < n; r++)
    for (int i = 0; i < CHAINS; i++) {
      acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
      __asm__ volatile("" : "+v"(acc[i]));
    }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++)
    s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

static int by_value(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* GFLOP/s of loop: the median of runs of REPS iterations (a tenth of a
 * millisecond or more) repeated for `seconds`, robust against the odd
 * run that a clock read inflates or a neighbour's cache traffic slows. */
static double peak(double (*loop)(long), double flop_per_rep, double seconds)
{
  enum { MAXRUNS = 4096 };
  static double g[MAXRUNS];
  double sink = 0, end = seconds_now() + seconds;
  int n = 0;
  while (n < MAXRUNS && (n < 5 || seconds_now() < end)) {
    double t0 = seconds_now();
    sink += loop(REPS);
    g[n++] = flop_per_rep * REPS / (seconds_now() - t0) * 1e-9;
  }
  qsort(g, n, sizeof *g, by_value);
  double median = g[n / 2];
  if (sink == 12345)   /* keeps the loops */
    printf(" ");
  return median;
}

static void cpu_line(void)
{
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[8192], model[256] = "unknown", flags[512] = "";
  static const char *want[] = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16"};
  while (f && fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10) && strchr(line, ':'))
      snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
    if (!strncmp(line, "flags", 5) && !*flags) {
      line[strcspn(line, "\n")] = ' ';   /* every flag between spaces */
      for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        char pat[32];
        snprintf(pat, sizeof pat, " %s ", want[i]);
        if (strstr(line, pat))
          snprintf(flags + strlen(flags), sizeof flags - strlen(flags), " %s", want[i]);
      }
    }
  }
  if (f)
    fclose(f);
  model[strcspn(model, "\n")] = 0;
  printf("cpu %s\nflags%s\n", model, *flags ? flags : " (none of avx2 fma avx512f avx512bw avx512vl avx512_bf16)");
}

typedef struct {
  const char *name;
  int M, N, K, ta, tb;
} Shape;

static const Shape shapes[] = {
  {"dec200.fwd", 700, 33278, 200, 0, 1},   {"dec200.dx", 700, 200, 33278, 0, 0},
  {"dec200.dw", 33278, 200, 700, 1, 0},    {"dec650.fwd", 700, 33278, 650, 0, 1},
  {"dec650.dx", 700, 650, 33278, 0, 0},    {"dec650.dw", 33278, 650, 700, 1, 0},
  {"rec650.fwd", 20, 2600, 650, 0, 1},     {"rec650.dx", 20, 650, 2600, 0, 0},
  {"rec650.dw", 2600, 650, 20, 1, 0},      {"in650.fwd", 700, 2600, 650, 0, 1},
  {"tf200.fwd", 700, 200, 200, 0, 1},      {"gen650.rec", 1, 2600, 650, 0, 1},
  {"gen650.dec", 1, 33278, 650, 0, 1},
};

typedef struct {
  const Shape *s;
  int threads;
  const float *fa, *fb;
  const lmc_bf16 *a, *b;
  float *y;
} Call;

static void call_sgemm(const Call *c)
{
  const Shape *s = c->s;
  cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K,
              1.0f, c->fa, s->ta ? s->M : s->K, c->fb, s->tb ? s->K : s->N, 0.0f, c->y, s->N);
}

static void call_bf16(const Call *c)
{
  const Shape *s = c->s;
  lmc_gemm_bf16(s->ta, s->tb, s->M, s->N, s->K, c->a, s->ta ? s->M : s->K, c->b, s->tb ? s->K : s->N, 0.0f, c->y,
                s->N, c->threads);
}

static void call_dnnl(const Call *c)
{
  const Shape *s = c->s;
  if (lmc_gemm_bf16_dnnl(s->ta, s->tb, s->M, s->N, s->K, c->a, s->ta ? s->M : s->K, c->b, s->tb ? s->K : s->N, 0.0f,
                         c->y, s->N, c->threads) < 0) {
    fprintf(stderr, "peak: oneDNN's matmul is not available here\n");
    exit(1);
  }
}

/* Best and mean GFLOP/s of f over at least 3 calls and `seconds`. */
static void timed(void (*f)(const Call *), const Call *c, double seconds, double *best, double *mean)
{
  double flop = 2.0 * c->s->M * c->s->N * c->s->K, total = 0, fastest = 1e30;
  f(c);
  int n = 0;
  while (n < 3 || total < seconds) {
    double t0 = seconds_now();
    f(c);
    double dt = seconds_now() - t0;
    total += dt;
    fastest = dt < fastest ? dt : fastest;
    n++;
  }
  *best = flop / fastest * 1e-9;
  *mean = flop * n / total * 1e-9;
}

int main(int argc, char **argv)
{
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  double seconds = argc > 2 ? atof(argv[2]) : 0.5;
  if (threads < 1 || seconds <= 0 || argc > 3) {
    fprintf(stderr, "usage: peak [THREADS [SECONDS]]\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  if (threads > 1)
    clock_id = CLOCK_MONOTONIC;
  cpu_line();
  printf("clock %s\n", threads > 1 ? "wall" : "the thread's CPU time");
  double p32 = 0, p16 = 0;
#ifdef HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    p32 = peak(fma_loop, CHAINS * 16 * 2.0, seconds);
  if (lmc_cpu_has_bf16())
    p16 = peak(dpbf16_loop, CHAINS * 32 * 2.0, seconds);
#endif
  printf("peak fp32 %.1f GFLOP/s (vfmadd231ps, one thread)\n", p32);
  printf("peak bf16 %.1f GFLOP/s (vdpbf16ps, one thread)\n", p16);
  printf("%-11s %6s %6s %6s %3s  %-8s %7s %7s %6s\n", "shape", "M", "N", "K", "t", "program", "best", "mean",
         "share");
  size_t big = 33278L * 700;   /* the largest operand: (700, 33278) */
  float *fa = rt_malloc(big * sizeof *fa, "operand"), *fb = rt_malloc(big * sizeof *fb, "operand");
  float *y = rt_malloc(33278L * 700 * sizeof *y, "result");
  lmc_bf16 *a = rt_malloc(big * sizeof *a, "operand"), *b = rt_malloc(big * sizeof *b, "operand");
  for (size_t i = 0; i < big; i++) {
    fa[i] = (float)(i % 1013) / 1013.0f - 0.5f;
    fb[i] = (float)(i % 977) / 977.0f - 0.5f;
  }
  lmc_to_bf16(fa, a, big);
  lmc_to_bf16(fb, b, big);
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    const Shape *s = &shapes[i];
    Call c = {s, threads, fa, fb, a, b, y};
    struct { const char *name; void (*f)(const Call *); double peak; int on; } progs[] = {
      {"sgemm", call_sgemm, p32, 1},
      {"bf16", call_bf16, p16, 1},
      {"dnnl", call_dnnl, p16, lmc_gemm_bf16_dnnl(0, 0, 1, 1, 1, a, 1, b, 1, 0, y, 1, 1) == 0},
    };
    for (size_t p = 0; p < sizeof progs / sizeof *progs; p++) {
      if (!progs[p].on)
        continue;
      double best, mean;
      timed(progs[p].f, &c, seconds, &best, &mean);
      printf("%-11s %6d %6d %6d %d%d  %-8s %7.1f %7.1f %5.0f%%\n", s->name, s->M, s->N, s->K, s->ta, s->tb,
             progs[p].name, best, mean, progs[p].peak > 0 ? 100 * mean / (progs[p].peak * threads) : 0);
    }
  }
  return 0;
}
