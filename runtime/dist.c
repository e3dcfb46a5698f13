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
 * A rank's gradient block may hold rows gradients (row-grad: the rows its
 * own batch read), which differ between ranks; with several ranks it is
 * written out parameter-shaped (lmc_grad_dense) before the reduction, and
 * the optimizer steps over that dense block through a copy of the
 * parameter table whose gradients are all parameter-shaped.
 */
#include <stdlib.h>
#include <string.h>

#ifdef LMC_MPI
#include <mpi.h>
#endif

#include "rt.h"

static int my_rank, nrank = 1;

/* ---------------------------------------------------------- primitives */

#ifdef LMC_MPI
#define REAL_TYPE (sizeof(real) == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE)

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
  MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

/* every rank's x, in rank order */
static void gather(uint64_t x, uint64_t *all)
{
  MPI_Allgather(&x, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
}

/* MPI counts are int: a large block goes in chunks */
enum { CHUNK = 1 << 28 };

static void sum_reals(real *v, size_t n)
{
  for (size_t i = 0; i < n; i += CHUNK)
    MPI_Allreduce(MPI_IN_PLACE, v + i, (int)(n - i < CHUNK ? n - i : CHUNK), REAL_TYPE, MPI_SUM, MPI_COMM_WORLD);
}

static void bcast_bytes(void *p, size_t n)
{
  for (size_t i = 0; i < n; i += CHUNK)
    MPI_Bcast((char *)p + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_BYTE, 0, MPI_COMM_WORLD);
}
#else
static void start(void) {}
static void finish(void) {}
static void abort_all(int rc) { (void)rc; }
static void sum_doubles(double *v, int n) { (void)v, (void)n; }
static void gather(uint64_t x, uint64_t *all) { *all = x; }
static void sum_reals(real *v, size_t n) { (void)v, (void)n; }
static void bcast_bytes(void *p, size_t n) { (void)p, (void)n; }
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

void dist_grad_init(DistGrad *d, const LmcModel *m)
{
  memset(d, 0, sizeof *d);
  if (nrank == 1) return;
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
  d->grad = rt_malloc(m->param_numel * sizeof(real), "the reduced gradient");
}

void dist_grad_free(DistGrad *d)
{
  free(d->table);
  free(d->grad);
  memset(d, 0, sizeof *d);
}

void dist_grad_mean(DistGrad *d, const LmcModel **m, real **grad)
{
  if (nrank == 1) return;
  lmc_grad_dense(*m, *grad, d->grad);
  sum_reals(d->grad, (*m)->param_numel);
  const real scale = (real)(1.0 / nrank);
  for (size_t i = 0; i < (*m)->param_numel; i++)
    d->grad[i] *= scale;
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
