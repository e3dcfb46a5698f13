/*
 * model.c: the compiled network in memory: the check of its descriptor,
 * its one allocation (a Net), the initialisation of its parameters, the
 * generator behind initialisation and sampling, and `info`.
 *
 * One allocation (a Net) holds the parameters, their gradient, the AdamW
 * moments (only when AdamW is chosen), one activation arena sized for the
 * largest program in use, and the hidden state of each program in use;
 * every program gets an LmcCtx into it, all sharing the parameters and the
 * arena.
 */
#define _DEFAULT_SOURCE   /* madvise */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rt.h"

/* ---------------------------------------------------------- generator */

/* splitmix64 */
Rng rng_new(uint64_t seed, uint64_t stream)
{
  return (Rng){ lmc_mix64(lmc_mix64(seed) ^ stream) };
}

uint64_t rng_next(Rng *r)
{
  uint64_t z = r->s;
  r->s += 0x9e3779b97f4a7c15ull;
  return lmc_mix64(z);
}

double rng_uniform(Rng *r)
{
  return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* ---------------------------------------------------------------- Net */

static size_t pad(size_t n)   /* to 128 bytes */
{
  size_t k = 128 / sizeof(real);
  return (n + k - 1) / k * k;
}

/* Checks what the runtime relies on, so a broken descriptor fails here. */
int model_check(const LmcModel *m)
{
  const char *why = NULL;
  if (!m->kind || !m->kind[0] || m->ntoken <= 0)
    why = "no kind or no ntoken: the graph is not a language model (docs/graph-api.md: kind, params { ntoken }, "
          "inputs tokens and targets, outputs loss and logp)";
  else if (m->bptt <= 0) why = "bptt must be positive";
  else if (m->train.max_seq < m->bptt || m->eval.max_seq < m->bptt) why = "a program's max_seq is below bptt";
  else if (!m->train.has_backward) why = "the train program has no backward (the graph has no output loss)";
  else if (m->gen.batch != 1 || m->gen.max_seq < 1) why = "the gen program must have batch 1";
  else if (!m->gen.has_logp) why = "the gen program keeps no log-probabilities";
  else if (m->sample.run && (m->sample.batch < 1 || m->sample.max_seq != m->gen.max_seq || !m->sample.has_logp ||
                             (m->sample.nstate > 0) != (m->gen.nstate > 0)))
    why = "the sample program is not the gen program at another batch";
  else if (m->step.run && (m->step.batch != 1 || m->step.max_seq != m->gen.max_seq || !m->step.has_logp ||
                           m->step.nstate < 1 || m->gen.nstate > 0))
    why = "the step program is not the gen program over key/value caches";
  else if (m->steps.run && (!m->step.run || !m->sample.run || m->steps.batch != m->sample.batch ||
                            m->steps.max_seq != m->gen.max_seq || !m->steps.has_logp || m->steps.nstate != m->step.nstate))
    why = "the steps program is not the step program at the sample program's batch";
  else if (m->train.batch < 1 || m->eval.batch < 1) why = "a program has no batch";
  else if (m->grad_numel > m->param_numel) why = "the gradient block does not fit the parameters";
  for (int i = 0; !why && i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->offset + d->numel > m->param_numel) why = "a parameter lies outside the parameter block";
    else if (d->alias >= m->nparam) why = "a parameter aliases a tensor that does not exist";
  }
  if (why) {
    rt_error("model descriptor of %s is inconsistent: %s", m->kind && m->kind[0] ? m->kind : "a graph without kind",
             why);
    return -1;
  }
  return 0;
}

/* The parameter block, on 2 MiB boundaries when it is large, with
 * transparent huge pages asked for (where the kernel gives them only on
 * request, as Debian's does): the GEMMs and generation's matrix-vector
 * product stream tens of MB of weights, which in 4 KiB pages is a TLB
 * miss every 4 KiB.  The advice is advice: where it is refused the block
 * works the same in small pages. */
static real *block_alloc(size_t bytes)
{
  enum { HUGE_PAGE = 2 << 20 };
  if (bytes < 4 * (size_t)HUGE_PAGE)
    return aligned_alloc(128, (bytes + 127) / 128 * 128);
  bytes = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  real *p = aligned_alloc(HUGE_PAGE, bytes);
#ifdef MADV_HUGEPAGE
  if (p)
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

/* USE_BF16: the parameters' bf16 copy and one bf16 arena for the
 * programs in use (scratch, as the fp32 one), in a block of their own so
 * that fp32 mode's memory stays as it is. */
static int alloc16(Net *n, const LmcModel *m, int use, const LmcProgram *const *prog, LmcCtx *const *ctx,
                   const int *bit, int nprog)
{
  size_t work = 0, k16 = 64;   /* elements in 128 bytes */
  for (int k = 0; k < nprog; k++)
    if ((use & bit[k]) && prog[k]->work16_numel > work) work = prog[k]->work16_numel;
  size_t np = (m->param_numel + k16 - 1) / k16 * k16, total = np + work;
  n->block16 = (lmc_bf16 *)block_alloc(total * sizeof(lmc_bf16));
  if (!n->block16) {
    rt_error("out of memory (%.0f MiB for the bf16 copies)", (double)(total * sizeof(lmc_bf16)) / (1 << 20));
    return -1;
  }
  n->param16 = n->block16;
  for (int k = 0; k < nprog; k++)
    if (use & bit[k]) {
      ctx[k]->param16 = n->param16;
      ctx[k]->work16 = n->block16 + np;
    }
  return 0;
}

int net_alloc(Net *n, const LmcModel *m, int use, uint64_t seed, int threads, const DropoutSet *set, int nset)
{
  enum { NPROG = 6 };
  const LmcProgram *prog[NPROG] = { &m->train, &m->eval, &m->gen, &m->sample, &m->step, &m->steps };
  LmcCtx *ctx[NPROG] = { &n->train, &n->eval, &n->gen, &n->sample, &n->step, &n->steps };
  const int bit[NPROG] = { USE_TRAIN, USE_EVAL, USE_GEN, USE_SAMPLE, USE_STEP, USE_STEPS };
  memset(n, 0, sizeof *n);
  size_t total = pad(m->param_numel);
  if (use & USE_TRAIN) total += pad(m->grad_numel);
  if (use & USE_ADAMW) total += 2 * pad(m->param_numel);
  /* one activation arena for every program in use: it is scratch, nothing
   * in it lives from one run() to the next, and the programs never run at
   * the same time (train and eval take turns); states stay apart */
  size_t work = 0;
  for (int k = 0; k < NPROG; k++)
    if (use & bit[k]) {
      if (prog[k]->work_numel > work) work = prog[k]->work_numel;
      total += pad(prog[k]->state_numel);
    }
  total += pad(work);
  /* not rt_malloc: the one block of the model, reported by its size (util.c) */
  n->block = block_alloc(total * sizeof(real));
  if (!n->block) {
    rt_error("out of memory (%.0f MiB)", (double)(total * sizeof(real)) / (1 << 20));
    return -1;
  }
  n->dropout = rt_calloc((size_t)m->ndropout + 1, sizeof *n->dropout, "the dropout probabilities");
  memset(n->block, 0, total * sizeof(real));
  for (int i = 0; i < m->ndropout; i++)
    n->dropout[i] = m->dropout[i].value;
  for (int k = 0; k < nset; k++)
    if (set[k].slot >= 0 && set[k].slot < m->ndropout) n->dropout[set[k].slot] = set[k].p;
  /* parameters | gradients | arena | AdamW's moments | states: the
   * gradients and the arena together hold a copy of the parameters when
   * they are large enough (the best model reloaded at the end) */
  real *p = n->block;
  n->param = p, p += pad(m->param_numel);
  real *grad = NULL;
  if (use & USE_TRAIN) grad = p, p += pad(m->grad_numel);
  real *shared = p;
  p += pad(work);
  if (use & USE_ADAMW) {
    n->exp_avg = p, p += pad(m->param_numel);
    n->exp_avg_sq = p, p += pad(m->param_numel);
  }
  if (grad && pad(m->grad_numel) + pad(work) >= m->param_numel) n->spare = grad;
  else n->spare = n->exp_avg;
  for (int k = 0; k < NPROG; k++) {
    if (!(use & bit[k])) continue;
    LmcCtx *c = ctx[k];
    c->m = m;
    c->param = n->param;
    c->grad = k == 0 ? grad : NULL;
    c->work = shared;
    c->state = p, p += pad(prog[k]->state_numel);
    c->dropout = n->dropout;
    c->seed = seed;
    c->threads = threads;
  }
  return use & USE_BF16 ? alloc16(n, m, use, prog, ctx, bit, NPROG) : 0;
}

void net_free(Net *n)
{
  free(n->block);
  free(n->block16);
  free(n->dropout);
  memset(n, 0, sizeof *n);
}

int net_precision(bool bf16)
{
  if (!bf16)
    return 0;
  if (!lmc_cpu_has_bf16())
    rt_warning("--precision bf16: this CPU has no AVX512_BF16; the products run in portable C, several times "
               "slower than in fp32");
  return USE_BF16;
}

void net_round16(Net *n, const LmcModel *m)
{
  if (n->param16)
    lmc_to_bf16(n->param, n->param16, m->param_numel);
}

/* torch.nn.init.xavier_uniform_'s bound, from the shape. */
static double xavier_bound(const LmcTensorDesc *d)
{
  double fan_in, fan_out;
  if (d->rank < 2)
    fan_in = fan_out = d->rank ? d->shape[0] : 1;
  else {
    double rf = 1;
    for (int i = 2; i < d->rank; i++) rf *= d->shape[i];
    fan_in = d->shape[1] * rf;
    fan_out = d->shape[0] * rf;
  }
  return sqrt(6.0 / (fan_in + fan_out));
}

/* Every tensor per its descriptor, in order, from one seeded stream (a
 * NORMAL tensor draws two uniforms per pair of elements), so the same seed
 * gives the same weights; an alias shares its target's storage and is skipped.  XAVIER uses
 * init_a when the compiler gave one, else the bound from the shape. */
void init_params(const LmcModel *m, real *param, uint64_t seed)
{
  Rng r = rng_new(seed, 0x696e6974);   /* "init" */
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->alias >= 0) continue;
    real *x = param + d->offset;
    double a = d->init_a;
    switch (d->init) {
    case LMC_INIT_ZERO:
      for (size_t j = 0; j < d->numel; j++) x[j] = 0;
      break;
    case LMC_INIT_ONE:
      for (size_t j = 0; j < d->numel; j++) x[j] = 1;
      break;
    case LMC_INIT_XAVIER:
      if (!(a > 0)) a = xavier_bound(d);
      /* fall through */
    case LMC_INIT_UNIFORM:
      for (size_t j = 0; j < d->numel; j++) x[j] = (real)(a * (2 * rng_uniform(&r) - 1));
      break;
    case LMC_INIT_NORMAL:
      /* Box-Muller: two uniforms give two normals, the second kept for
       * the next element; 1 - u is in (0, 1], so its log is finite */
      for (size_t j = 0; j < d->numel; j += 2) {
        double rad = sqrt(-2 * log(1 - rng_uniform(&r))), th = 2 * M_PI * rng_uniform(&r);
        x[j] = (real)(a * rad * cos(th));
        if (j + 1 < d->numel) x[j + 1] = (real)(a * rad * sin(th));
      }
      break;
    }
  }
}

/* -------------------------------------------------------------- info */

void run_info(const LmcModel *m)
{
  printf("kind          %s\n", m->kind);
  printf("lmc           %s\n", m->version);
  printf("flags         %s\n", m->flags);
  printf("vocabulary    %d words (ntoken)\n", m->ntoken);
  printf("bptt          %d\n", m->bptt);
  printf("batch         train %d, eval %d, generate %d\n", m->train.batch, m->eval.batch, m->gen.batch);
  for (int i = 0; i < m->nhyper; i++) printf("  %-11s %s\n", m->hyper[i][0], m->hyper[i][1]);
  for (int i = 0; i < m->ndropout; i++) {
    const char *s = m->dropout[i].name;
    bool plain = strcmp(s, "dropout") == 0;   /* what --dropout P sets */
    printf("dropout       %s = %g (run time: --dropout %s%s)\n", s, m->dropout[i].value, plain ? "" : s,
           plain ? "P" : "=P");
  }
  printf("parameters    %zu\n", m->param_numel);
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    printf("  %-40s (", d->name);
    for (int k = 0; k < d->rank; k++) printf(k ? ", %d" : "%d", d->shape[k]);
    printf(")");
    if (d->alias >= 0) printf(" tied to %s", m->param[d->alias].name);
    printf("\n");
  }
  const LmcProgram *p[3] = { &m->train, &m->eval, &m->gen };
  const char *pn[3] = { "train", "eval", "generate" };
  for (int k = 0; k < 3; k++)
    printf("memory        %-8s activations %.1f MiB, state %zu\n", pn[k],
           (double)(p[k]->work_numel * sizeof(real)) / (1 << 20), p[k]->state_numel);
}
