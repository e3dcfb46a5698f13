/*
 * gemm_dnnl.c: lmc_gemm_bf16 on oneDNN's matmul primitive, where the CPU
 * has AVX512_BF16 and oneDNN is installed (Debian's libdnnl2).
 *
 * oneDNN is opened at run time (dlopen of libdnnl.so.2 on the first bf16
 * product), not linked: a trainer built with it still starts on a machine
 * without the library, and then runs runtime/gemm_bf16.c's own kernels;
 * no link line changes.  The header (libdnnl-dev, which make deps
 * installs) gives the types; without it this file builds to the
 * "unavailable" answer.
 *
 * A primitive is made once per shape (transposes, sizes, leading
 * dimensions, beta, threads) and kept in a small cache with its three
 * memory objects, whose data pointers are set per call: making one costs
 * milliseconds, a call at the recurrent shapes well under one.  The
 * operands are plain strided memory, so op(a) = a^T and op(b) = b^T are
 * strides, not copies; beta 1 is a sum post-op.  A long K (over 2 KCHUNK:
 * the decoder's dx = dlogits W, K = 33278) goes as products of about
 * KCHUNK terms each, summed into y: on one core 72% of the bf16 peak in
 * one call, 80-87% in chunks of 2048 (bench/README.md).  oneDNN runs on
 * OpenMP threads: the thread count is set around each creation and call (the
 * process's OpenMP runtime, libgomp or the libomp of a trainer built with
 * clang -fopenmp, whose GOMP entry points oneDNN then binds to).
 * Called from one thread at a time.
 */
#include "gemm_bf16.h"
#include "rt.h"

#if defined(__has_include)
#if __has_include(<oneapi/dnnl/dnnl.h>)
#define HAVE_DNNL_HEADER 1
#endif
#endif

#ifdef HAVE_DNNL_HEADER
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

/* The entry points used, loaded by name. */
#define DNNL_FUNCS(X)                                                                                      \
  X(dnnl_engine_create) X(dnnl_stream_create) X(dnnl_memory_desc_init_by_strides) X(dnnl_matmul_desc_init) \
  X(dnnl_primitive_attr_create) X(dnnl_primitive_attr_destroy) X(dnnl_primitive_attr_set_post_ops)         \
  X(dnnl_post_ops_create) X(dnnl_post_ops_destroy) X(dnnl_post_ops_append_sum)                              \
  X(dnnl_primitive_desc_create) X(dnnl_primitive_desc_destroy) X(dnnl_primitive_create)                    \
  X(dnnl_primitive_destroy) X(dnnl_memory_create) X(dnnl_memory_destroy) X(dnnl_memory_set_data_handle)    \
  X(dnnl_primitive_execute) X(dnnl_stream_wait)

static struct {
#define FIELD(f) __typeof__(f) *f;
  DNNL_FUNCS(FIELD)
#undef FIELD
  int (*omp_get_max_threads)(void);
  void (*omp_set_num_threads)(int);
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  int state;             /* 0 not tried, 1 ready, -1 unavailable */
} dn;

static int dnnl_open(void)
{
  if (dn.state)
    return dn.state;
  dn.state = -1;
  void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return -1;
#define LOAD(f)                                \
  if (!(*(void **)&dn.f = dlsym(h, #f))) \
    return -1;
  DNNL_FUNCS(LOAD)
#undef LOAD
  /* the OpenMP runtime oneDNN's threads come from: the process's first */
  const char *names[2] = {"omp_get_max_threads", "omp_set_num_threads"};
  void *f[2];
  for (int i = 0; i < 2; i++)
    if (!(f[i] = dlsym(RTLD_DEFAULT, names[i])) && !(f[i] = dlsym(h, names[i])))
      return -1;
  *(void **)&dn.omp_get_max_threads = f[0];
  *(void **)&dn.omp_set_num_threads = f[1];
  if (dn.dnnl_engine_create(&dn.engine, dnnl_cpu, 0) != dnnl_success ||
      dn.dnnl_stream_create(&dn.stream, dn.engine, dnnl_stream_default_flags) != dnnl_success)
    return -1;
  dn.state = 1;
  return 1;
}

typedef struct {
  int key[10];           /* ta, tb, M, N, K, lda, ldb, ldy, beta, threads */
  dnnl_primitive_t prim;
  dnnl_memory_t src, wei, dst;
} Entry;

enum { CACHE = 128, KCHUNK = 2048 };
static Entry cache[CACHE];
static int ncache, next_evict;

static void entry_free(Entry *e)
{
  dn.dnnl_primitive_destroy(e->prim);
  dn.dnnl_memory_destroy(e->src);
  dn.dnnl_memory_destroy(e->wei);
  dn.dnnl_memory_destroy(e->dst);
}

/* The primitive of one shape, with memory objects for its operands. */
static int entry_make(Entry *e, const int *key)
{
  int ta = key[0], tb = key[1], M = key[2], N = key[3], K = key[4];
  dnnl_dims_t da = {M, K}, sa = {ta ? 1 : key[5], ta ? key[5] : 1};
  dnnl_dims_t db = {K, N}, sb = {tb ? 1 : key[6], tb ? key[6] : 1};
  dnnl_dims_t dy = {M, N}, sy = {key[7], 1};
  dnnl_memory_desc_t ma, mb, my;
  dnnl_matmul_desc_t desc;
  if (dn.dnnl_memory_desc_init_by_strides(&ma, 2, da, dnnl_bf16, sa) != dnnl_success ||
      dn.dnnl_memory_desc_init_by_strides(&mb, 2, db, dnnl_bf16, sb) != dnnl_success ||
      dn.dnnl_memory_desc_init_by_strides(&my, 2, dy, dnnl_f32, sy) != dnnl_success ||
      dn.dnnl_matmul_desc_init(&desc, &ma, &mb, NULL, &my) != dnnl_success)
    return -1;
  dnnl_primitive_attr_t attr;
  dnnl_post_ops_t ops;
  if (dn.dnnl_primitive_attr_create(&attr) != dnnl_success)
    return -1;
  int ok = dn.dnnl_post_ops_create(&ops) == dnnl_success;
  if (ok) {
    ok = (!key[8] || dn.dnnl_post_ops_append_sum(ops, 1.0f) == dnnl_success) &&
         dn.dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    dn.dnnl_post_ops_destroy(ops);
  }
  dnnl_primitive_desc_t pd = NULL;
  ok = ok && dn.dnnl_primitive_desc_create(&pd, &desc, attr, dn.engine, NULL) == dnnl_success;
  dn.dnnl_primitive_attr_destroy(attr);
  ok = ok && dn.dnnl_primitive_create(&e->prim, pd) == dnnl_success;
  if (pd)
    dn.dnnl_primitive_desc_destroy(pd);
  if (!ok)
    return -1;
  if (dn.dnnl_memory_create(&e->src, &ma, dn.engine, DNNL_MEMORY_NONE) != dnnl_success ||
      dn.dnnl_memory_create(&e->wei, &mb, dn.engine, DNNL_MEMORY_NONE) != dnnl_success ||
      dn.dnnl_memory_create(&e->dst, &my, dn.engine, DNNL_MEMORY_NONE) != dnnl_success)
    return -1;
  memcpy(e->key, key, sizeof e->key);
  return 0;
}

static Entry *lookup(const int *key)
{
  for (int i = 0; i < ncache; i++)
    if (memcmp(cache[i].key, key, sizeof cache[i].key) == 0)
      return &cache[i];
  Entry *e = &cache[ncache < CACHE ? ncache : next_evict];
  if (ncache == CACHE) {
    entry_free(e);
    next_evict = (next_evict + 1) % CACHE;
  }
  Entry fresh = {0};
  if (entry_make(&fresh, key) < 0) {
    if (ncache == CACHE)   /* the slot is free now: fill it from the end */
      *e = cache[--ncache];
    return NULL;
  }
  *e = fresh;
  if (ncache < CACHE)
    ncache++;
  return e;
}

/* The product over k in [k0, k0 + kc) of entry e. */
static int execute(Entry *e, int ta, int tb, int k0, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb, float *y)
{
  const lmc_bf16 *ak = ta ? a + (long)k0 * lda : a + k0, *bk = tb ? b + k0 : b + (long)k0 * ldb;
  if (dn.dnnl_memory_set_data_handle(e->src, (void *)ak) != dnnl_success ||
      dn.dnnl_memory_set_data_handle(e->wei, (void *)bk) != dnnl_success ||
      dn.dnnl_memory_set_data_handle(e->dst, y) != dnnl_success)
    return -1;
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}};
  return dn.dnnl_primitive_execute(e->prim, dn.stream, 3, args) == dnnl_success &&
                 dn.dnnl_stream_wait(dn.stream) == dnnl_success
             ? 0
             : -1;
}

int lmc_gemm_bf16_dnnl(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                       float beta, float *y, int ldy, int threads)
{
  if (dnnl_open() < 0 || M <= 0 || N <= 0 || K <= 0)
    return -1;
  int chunks = K <= 2 * KCHUNK ? 1 : (K + KCHUNK - 1) / KCHUNK;   /* not the recurrent 2600 */
  int kc = (K + chunks - 1) / chunks, last = K - (chunks - 1) * kc;
  int saved = dn.omp_get_max_threads(), nt = threads < 1 ? 1 : threads;
  dn.omp_set_num_threads(nt);
  /* every primitive made before the first writes y: the first chunk
   * (beta), the middle ones and the last (beta 1) */
  int key[3][10] = {{ta != 0, tb != 0, M, N, chunks > 1 ? kc : K, lda, ldb, ldy, beta != 0, nt},
                    {ta != 0, tb != 0, M, N, kc, lda, ldb, ldy, 1, nt},
                    {ta != 0, tb != 0, M, N, last, lda, ldb, ldy, 1, nt}};
  Entry *e[3] = {lookup(key[0]), chunks > 2 ? lookup(key[1]) : NULL, chunks > 1 ? lookup(key[2]) : NULL};
  int ok = e[0] && (chunks <= 2 || e[1]) && (chunks <= 1 || e[2]);
  for (int c = 0; ok && c < chunks; c++)
    if (execute(c == 0 ? e[0] : c < chunks - 1 ? e[1] : e[2], ta, tb, c * kc, a, lda, b, ldb, y) < 0) {
      /* y may be partly summed: no answer left but to stop */
      rt_error("oneDNN's matmul failed on a %d x %d x %d product it had accepted", M, N, K);
      exit(1);
    }
  dn.omp_set_num_threads(saved);
  return ok ? 0 : -1;
}

#else

int lmc_gemm_bf16_dnnl(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                       float beta, float *y, int ldy, int threads)
{
  (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)y;
  (void)ldy, (void)threads;
  return -1;   /* built without oneDNN's header */
}

#endif
