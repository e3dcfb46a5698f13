/*
 * dist.c: data-parallel training over MPI: the ranks, the mean of the
 * loss and of the gradient over them, parameters and state broadcast from
 * rank 0, and the check that every rank holds the same parameters.
 *
 * Compiled twice.  Without LMC_MPI (the library, the default build) there
 * is one rank and every function is the identity, so that train.c calls
 * the same functions either way; with LMC_MPI (make trainer MPI=1, which
 * links that object before the library) over MPI_COMM_WORLD.  Only the
 * primitives below differ between the two; the rest is written once.
 *
 * The gradient is reduced in buckets while the backward still runs, as
 * PyTorch's DDP does.  The buckets tile the dense gradient block (one
 * parameter-shaped copy, as the optimizer reads it) from its end, 4 MiB
 * each (LMC_BUCKET_KB), so that they follow the backward, which finishes
 * the last parameters first.  run() calls grad_ready (LmcCtx) as each parameter's
 * gradient is final: on_ready copies it into the dense block (a rows
 * gradient, row-grad, which differs between ranks, written out
 * parameter-shaped), and a bucket whose parameters are all there is
 * started as a non-blocking sum (MPI_Iallreduce), in the buckets' fixed
 * order, so every rank starts the same collectives in the same order.
 * Each later call tests the outstanding ones, which is what moves them on
 * (Open MPI progresses a non-blocking collective inside MPI calls);
 * dist_grad_mean waits for the rest and scales by 1 / N.  The optimizer
 * then steps over the dense block through a copy of the parameter table
 * whose gradients are all parameter-shaped.  MPI never touches c->grad,
 * which run() may still read after a parameter is ready.
 *
 * Every MPI call is timed: dist_comm_seconds, the time this rank spent
 * in them, gives the log line's communication share.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef LMC_MPI
#include <mpi.h>
#endif

#include "rt.h"

static int my_rank, nrank = 1;
static double comm_s;   /* seconds inside MPI calls */

/* ---------------------------------------------------------- primitives */

#ifdef LMC_MPI
#define REAL_TYPE (sizeof(real) == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE)
#define TIMED(call) do { double t0_ = rt_now(); call; comm_s += rt_now() - t0_; } while (0)
typedef MPI_Request Request;

static void start(void)
{
  int on = 0;
  MPI_Initialized(&on);
  if (!on) MPI_Init(NULL, NULL);
  MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nrank);
}

static void finish(void)
{
  MPI_Finalize();
}

static void abort_all(int rc)
{
  MPI_Abort(MPI_COMM_WORLD, rc);
}

static void sum_doubles(double *v, int n)
{
  TIMED(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

/* every rank's x, in rank order */
static void gather(uint64_t x, uint64_t *all)
{
  TIMED(MPI_Allgather(&x, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD));
}

/* MPI counts are int: a large block goes in chunks */
enum { CHUNK = 1 << 28 };

static void bcast_bytes(void *p, size_t n)
{
  for (size_t i = 0; i < n; i += CHUNK)
    TIMED(MPI_Bcast((char *)p + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_BYTE, 0, MPI_COMM_WORLD));
}

/* the sum of v (a bucket: n fits an int) over the ranks, in place, started */
static void sum_start(real *v, size_t n, Request *r)
{
  TIMED(MPI_Iallreduce(MPI_IN_PLACE, v, (int)n, REAL_TYPE, MPI_SUM, MPI_COMM_WORLD, r));
}

static void sum_test(Request *r, int n)
{
  int done;
  TIMED(MPI_Testall(n, r, &done, MPI_STATUSES_IGNORE));
}

static void sum_wait(Request *r, int n)
{
  TIMED(MPI_Waitall(n, r, MPI_STATUSES_IGNORE));
}

static void request_clear(Request *r)
{
  *r = MPI_REQUEST_NULL;
}
#else
typedef int Request;
static void start(void) {}
static void finish(void) {}
static void abort_all(int rc) { (void)rc; }
static void sum_doubles(double *v, int n) { (void)v, (void)n; }
static void gather(uint64_t x, uint64_t *all) { *all = x; }
static void bcast_bytes(void *p, size_t n) { (void)p, (void)n; }
static void sum_start(real *v, size_t n, Request *r) { (void)v, (void)n, (void)r; }
static void sum_test(Request *r, int n) { (void)r, (void)n; }
static void sum_wait(Request *r, int n) { (void)r, (void)n; }
static void request_clear(Request *r) { *r = 0; }
#endif

/* ------------------------------------------------------------ the ranks */

static char *ranked_name;

void dist_begin(void)
{
  start();
  if (nrank > 1) {   /* every message names its rank */
    char tag[32];
    snprintf(tag, sizeof tag, " (rank %d of %d)", my_rank, nrank);
    ranked_name = rt_concat(rt_progname, tag, "the program's name");
    rt_progname = ranked_name;
  }
}

int dist_end(int rc)
{
  if (rc != 0 && nrank > 1) {
    rt_error("ending the job (exit status %d)", rc);
    fflush(stdout);
    fflush(stderr);
    abort_all(rc);   /* the other ranks may wait in a collective */
  }
  finish();
  return rc;
}

int dist_rank(void)
{
  return my_rank;
}

int dist_size(void)
{
  return nrank;
}

/* --------------------------------------------------------- reductions */

double dist_mean(double x)
{
  if (nrank == 1) return x;
  sum_doubles(&x, 1);
  return x / nrank;
}

bool dist_any(bool x)
{
  double v = x;
  sum_doubles(&v, 1);
  return v > 0;
}

void dist_bcast(void *p, size_t bytes)
{
  bcast_bytes(p, bytes);
}

double dist_comm_seconds(void)
{
  return comm_s;
}

/* A bucket: reals [off, off + n) of the dense block, d->cap at most:
 * LMC_BUCKET_KB KiB, 4 MiB unless set (as DDP's bucket_cap_mb). */
enum { BUCKET_KB = 4096 };

typedef struct {
  size_t off, n;
  int nparam;            /* the parameters it overlaps */
  int waiting;           /* of those, not ready this step */
} Bucket;

struct DistGrad {
  LmcModel dense;        /* the model, every gradient parameter-shaped */
  LmcTensorDesc *table;  /* dense's parameter table */
  real *grad;            /* (param_numel) the dense block: the mean gradient */
  size_t cap;            /* reals a bucket holds at most */
  int nbucket;
  Bucket *bucket;        /* from the block's end down */
  Request *request;      /* per bucket */
  bool *ready;           /* per parameter, this step */
  int started;           /* buckets started this step: 0 .. started - 1 */
};

static DistGrad *the_grad;   /* the one training context's, for on_ready */

/* The buckets parameter q overlaps: first .. last (first <= last). */
static void buckets_of(const DistGrad *d, const LmcTensorDesc *q, int *first, int *last)
{
  size_t top = d->dense.param_numel;
  *first = (int)((top - (q->offset + q->numel)) / d->cap);
  *last = (int)((top - 1 - q->offset) / d->cap);
}

static void next_step(DistGrad *d)
{
  for (int k = 0; k < d->nbucket; k++) {
    d->bucket[k].waiting = d->bucket[k].nparam;
    request_clear(&d->request[k]);
  }
  memset(d->ready, 0, (size_t)d->dense.nparam * sizeof *d->ready);
  d->started = 0;
}

static void on_ready(LmcCtx *c, int q)
{
  DistGrad *d = the_grad;
  const LmcTensorDesc *p = &c->m->param[q];
  if (p->alias >= 0 || d->ready[q]) return;
  d->ready[q] = true;
  lmc_grad_dense_one(p, c->grad, d->grad);
  int first, last;
  buckets_of(d, p, &first, &last);
  for (int k = first; k <= last; k++)
    d->bucket[k].waiting--;
  for (; d->started < d->nbucket && d->bucket[d->started].waiting == 0; d->started++) {
    Bucket *b = &d->bucket[d->started];
    sum_start(d->grad + b->off, b->n, &d->request[d->started]);
  }
  sum_test(d->request, d->started);
}

/* LMC_BUCKET_KB, or the default: reals per bucket; 0 for a bad value */
static size_t bucket_cap(void)
{
  const char *s = getenv("LMC_BUCKET_KB");
  unsigned long long kb = BUCKET_KB;
  if (s) {
    char *e;
    errno = 0;
    kb = strtoull(s, &e, 10);
    if (!*s || *e || errno || strchr(s, '-') || kb == 0 || kb > (1ull << 20)) {
      rt_error("LMC_BUCKET_KB is '%s': give the KiB of a gradient bucket, 1 to 1048576", s);
      return 0;
    }
  }
  return (size_t)(kb * 1024 / sizeof(real));
}

int dist_grad_init(DistGrad **out, LmcCtx *c)
{
  const LmcModel *m = c->m;
  *out = NULL;
  if (nrank == 1) return 0;
  size_t cap = bucket_cap();
  if (!cap) return -1;
  DistGrad *d = rt_calloc(1, sizeof *d, "the reduced gradient");
  d->table = rt_malloc((size_t)m->nparam * sizeof *d->table, "a parameter table");
  memcpy(d->table, m->param, (size_t)m->nparam * sizeof *d->table);
  for (int q = 0; q < m->nparam; q++)
    if (d->table[q].alias < 0) {
      d->table[q].grad_offset = d->table[q].offset;
      d->table[q].grad_rows = 0;
    }
  d->dense = *m;
  d->dense.param = d->table;
  d->dense.grad_numel = m->param_numel;
  /* zeroed: the reals between parameters, if any, sum to zero */
  d->grad = rt_calloc(m->param_numel, sizeof(real), "the reduced gradient");
  d->cap = cap;
  d->nbucket = (int)((m->param_numel + cap - 1) / cap);
  d->bucket = rt_calloc((size_t)d->nbucket, sizeof *d->bucket, "the gradient buckets");
  d->request = rt_calloc((size_t)d->nbucket, sizeof *d->request, "the gradient buckets");
  d->ready = rt_calloc((size_t)m->nparam, sizeof *d->ready, "the gradient buckets");
  for (int k = 0; k < d->nbucket; k++) {
    size_t end = m->param_numel - (size_t)k * cap;
    d->bucket[k].n = end < cap ? end : cap;
    d->bucket[k].off = end - d->bucket[k].n;
  }
  for (int q = 0; q < m->nparam; q++) {
    int first, last;
    if (m->param[q].alias >= 0) continue;
    buckets_of(d, &m->param[q], &first, &last);
    for (int k = first; k <= last; k++)
      d->bucket[k].nparam++;
  }
  next_step(d);
  the_grad = d;
  c->grad_ready = on_ready;
  *out = d;
  return 0;
}

void dist_grad_free(DistGrad *d)
{
  if (!d) return;
  free(d->table);
  free(d->grad);
  free(d->bucket);
  free(d->request);
  free(d->ready);
  free(d);
  the_grad = NULL;
}

void dist_grad_mean(DistGrad *d, LmcCtx *c, const LmcModel **m, real **grad)
{
  if (!d) return;
  /* any parameter run() did not announce (a file lmc emits announces
   * each), in order: every rank then starts every bucket */
  for (int q = 0; q < c->m->nparam; q++)
    on_ready(c, q);
  sum_wait(d->request, d->nbucket);
  const real scale = (real)(1.0 / nrank);
  for (size_t i = 0; i < c->m->param_numel; i++)
    d->grad[i] *= scale;
  next_step(d);
  *m = &d->dense;
  *grad = d->grad;
}

/* 64 bits of n reals' bytes, word by word */
static uint64_t hash_reals(const real *p, size_t n)
{
  const unsigned char *b = (const unsigned char *)p;
  size_t bytes = n * sizeof *p;
  uint64_t h = 0x6c6d632d64697374ull;
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t w = 0;
    memcpy(&w, b + i, bytes - i < 8 ? bytes - i : 8);
    h = lmc_mix64(h ^ w);
  }
  return h;
}

int dist_check_same(const real *p, size_t n, uint64_t step)
{
  if (nrank == 1) return 0;
  uint64_t *all = rt_malloc((size_t)nrank * sizeof *all, "the ranks' hashes");
  gather(hash_reals(p, n), all);
  int ndiff = 0, first = 0;
  for (int r = nrank - 1; r > 0; r--)
    if (all[r] != all[0]) ndiff++, first = r;
  if (ndiff && my_rank == 0)
    rt_error("the ranks' parameters differ after step %llu: rank %d's hash is %016llx, rank 0's %016llx "
             "(%d of %d ranks differ from rank 0)",
             (unsigned long long)step, first, (unsigned long long)all[first], (unsigned long long)all[0], ndiff,
             nrank);
  free(all);
  return ndiff ? -1 : 0;
}
