/*
 * driver.c: runs the programs of a model emitted with `lmc compile
 * --dtype=f64` on weights and tokens that tests/parity/parity.py chose, and
 * writes back what torch.nn must reproduce.
 *
 *   driver WEIGHTS.safetensors JOB OUT.safetensors
 *
 * WEIGHTS is a state_dict in F64, read with the runtime's own ckpt_load
 * (this file is linked with runtime/checkpoint.c, safetensors.c, json.c,
 * util.c, outfile.c, corpus.c and optimizer.c built with LMC_REAL=double,
 * so no value goes through float).  JOB is a text file of lines "key value...":
 *
 *   eval N id...     a token stream for main.py's evaluate() at the eval
 *                    batch: batchify, windows of bptt (the last shorter),
 *                    hidden state carried from zero, T-weighted mean loss
 *   train N id...    the training stream, batchified at the train batch
 *   steps K          training steps over its windows, dropout off; the
 *                    hidden state is zeroed when the windows start over
 *                    (a new epoch), as main.py's train() does
 *   optimizer sgd|adamw, lr F, clip F, wd F
 *                    after each step: clip the global norm (clip > 0),
 *                    then p -= lr * g, or AdamW with weight decay wd
 *   gen N id...      a history for generate: the next-token log-
 *                    probabilities after each prefix, fed as the runtime's
 *                    generate feeds them (the RNNs one token at a time
 *                    with their state, the Transformer the window of the
 *                    last max_seq tokens)
 *
 * Prints one JSON line: {"eval_loss": L, "losses": [...], "objectives":
 * [...], "norms": [...]} (losses: what train's run() returns, the graph's
 * "loss"; objectives: what the step minimised, the graph's "objective"
 * where it declares one, else the loss; norms: the gradient norm before
 * clipping, per step).  OUT holds F64
 * tensors: grad.<name> (the gradient of step 1, before clipping),
 * step1.<name> (the parameters after step 1), final.<name> (after the last
 * step) and gen_logp (N, ntoken).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static void fail(const char *fmt, const char *arg)
{
  fprintf(stderr, "driver: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
  void *p = calloc(n + 1, size);
  if (!p) fail("%s", "out of memory");
  return p;
}

/* ------------------------------------------------------------- output */

enum { MAXOUT = 1024 };

typedef struct {
  char *name;
  int rank;
  int shape[LMC_MAXRANK];
  double *data;
  size_t numel;
} Out;

static Out outs[MAXOUT];
static int nout;

static void out_add(const char *prefix, const char *name, int rank, const int *shape, const real *x, size_t n)
{
  if (nout == MAXOUT) fail("%s", "too many output tensors");
  Out *o = &outs[nout++];
  o->name = malloc(strlen(prefix) + strlen(name) + 1);
  sprintf(o->name, "%s%s", prefix, name);
  o->rank = rank;
  memcpy(o->shape, shape, sizeof(int) * (size_t)rank);
  o->data = xcalloc(n, sizeof(double));
  for (size_t i = 0; i < n; i++) o->data[i] = x[i];
  o->numel = n;
}

static void out_params(const char *prefix, const LmcModel *m, const real *block)
{
  for (int k = 0; k < m->nparam; k++) {
    const LmcTensorDesc *d = &m->param[k];
    out_add(prefix, d->name, d->rank, d->shape, block + d->offset, d->numel);
  }
}

/* A safetensors file of F64 tensors in the order added (names are plain
 * state_dict names, no JSON escaping needed). */
static void out_write(const char *path)
{
  size_t cap = 4096 + (size_t)nout * 256, len = 0, off = 0;
  char *h = xcalloc(cap, 1);
  len += (size_t)sprintf(h + len, "{");
  for (int i = 0; i < nout; i++) {
    const Out *o = &outs[i];
    len += (size_t)sprintf(h + len, "%s\"%s\":{\"dtype\":\"F64\",\"shape\":[", i ? "," : "", o->name);
    for (int r = 0; r < o->rank; r++) len += (size_t)sprintf(h + len, "%s%d", r ? "," : "", o->shape[r]);
    len += (size_t)sprintf(h + len, "],\"data_offsets\":[%zu,%zu]}", off, off + 8 * o->numel);
    off += 8 * o->numel;
  }
  len += (size_t)sprintf(h + len, "}");
  while (len % 8) h[len++] = ' ';
  FILE *f = fopen(path, "wb");
  if (!f) fail("cannot write %s", path);
  uint64_t n = len;
  fwrite(&n, 8, 1, f);   /* little-endian hosts only, as the runtime */
  fwrite(h, 1, len, f);
  for (int i = 0; i < nout; i++) fwrite(outs[i].data, sizeof(double), outs[i].numel, f);
  if (fclose(f) != 0) fail("cannot write %s", path);
  free(h);
}

/* ---------------------------------------------------------------- job */

typedef struct {
  Tokens eval, train, gen;
  long steps;
  int adamw;
  double lr, clip, wd;
} Job;

static void read_tokens(FILE *f, Tokens *t, const char *what)
{
  if (fscanf(f, "%zu", &t->n) != 1) fail("bad token count in '%s'", what);
  t->id = xcalloc(t->n, sizeof(int32_t));
  for (size_t i = 0; i < t->n; i++)
    if (fscanf(f, "%d", &t->id[i]) != 1) fail("bad token in '%s'", what);
}

static Job read_job(const char *path)
{
  Job j = {.lr = 1, .wd = 0.01};
  FILE *f = fopen(path, "r");
  if (!f) fail("cannot read %s", path);
  char key[64];
  while (fscanf(f, "%63s", key) == 1) {
    if (!strcmp(key, "eval")) read_tokens(f, &j.eval, key);
    else if (!strcmp(key, "train")) read_tokens(f, &j.train, key);
    else if (!strcmp(key, "gen")) read_tokens(f, &j.gen, key);
    else if (!strcmp(key, "steps")) { if (fscanf(f, "%ld", &j.steps) != 1) fail("%s", "bad steps"); }
    else if (!strcmp(key, "lr")) { if (fscanf(f, "%lf", &j.lr) != 1) fail("%s", "bad lr"); }
    else if (!strcmp(key, "clip")) { if (fscanf(f, "%lf", &j.clip) != 1) fail("%s", "bad clip"); }
    else if (!strcmp(key, "wd")) { if (fscanf(f, "%lf", &j.wd) != 1) fail("%s", "bad wd"); }
    else if (!strcmp(key, "optimizer")) {
      char o[16];
      if (fscanf(f, "%15s", o) != 1 || (strcmp(o, "sgd") && strcmp(o, "adamw"))) fail("%s", "bad optimizer");
      j.adamw = !strcmp(o, "adamw");
    } else
      fail("unknown job key '%s'", key);
  }
  fclose(f);
  return j;
}

/* -------------------------------------------------------------- runs */

static LmcCtx ctx(const LmcModel *m, const LmcProgram *p, real *param, double *dropout)
{
  LmcCtx c = {.m = m, .param = param, .dropout = dropout, .seed = 1, .threads = 1};
  c.work = xcalloc(p->work_numel, sizeof(real));
  c.state = xcalloc(p->state_numel, sizeof(real));
  if (p->has_backward) c.grad = xcalloc(m->grad_numel, sizeof(real));
  return c;
}

/* main.py's evaluate(), as the runtime's. */
static double evaluate(const LmcModel *m, real *param, double *dropout, const Tokens *t)
{
  const LmcProgram *p = &m->eval;
  LmcCtx c = ctx(m, p, param, dropout);
  Batches b;
  batchify(t, p->batch, &b);
  double total = 0;
  size_t rows = 0;
  for (size_t i = 0; i + 1 < b.nrows; i += (size_t)m->bptt) {
    const int32_t *x, *y;
    int T = get_batch(&b, i, m->bptt, &x, &y);
    total += T * p->run(&c, x, y, T);
    rows += (size_t)T;
  }
  batches_free(&b);
  free(c.work);
  free(c.state);
  return total / (double)rows;
}

static void train(const LmcModel *m, real *param, double *dropout, const Job *j, FILE *json)
{
  const LmcProgram *p = &m->train;
  LmcCtx c = ctx(m, p, param, dropout);
  real *mom = xcalloc(m->param_numel, sizeof(real)), *vel = xcalloc(m->param_numel, sizeof(real));
  Batches b;
  batchify(&j->train, p->batch, &b);
  size_t nwin = (b.nrows - 1 + (size_t)m->bptt - 1) / (size_t)m->bptt;
  double *norms = xcalloc((size_t)j->steps, sizeof(double));
  double *objectives = xcalloc((size_t)j->steps, sizeof(double));
  fprintf(json, ", \"windows\": %zu, \"losses\": [", nwin);
  for (long s = 0; s < j->steps; s++) {
    size_t w = (size_t)s % nwin;
    if (w == 0) memset(c.state, 0, p->state_numel * sizeof(real));
    const int32_t *x, *y;
    int T = get_batch(&b, w * (size_t)m->bptt, m->bptt, &x, &y);
    c.step = (uint64_t)s;
    double loss = p->run(&c, x, y, T);
    objectives[s] = m->has_objective ? c.objective : loss;
    if (s == 0) {
      real *dense = xcalloc(m->param_numel, sizeof(real));
      lmc_grad_dense(m, c.grad, dense);   /* rows gradients (row-grad) written out */
      for (int k = 0; k < m->nparam; k++) {
        const LmcTensorDesc *d = &m->param[k];
        out_add("grad.", d->name, d->rank, d->shape, dense + d->offset, d->numel);
      }
      free(dense);
    }
    norms[s] = lmc_clip(m, c.grad, j->clip);
    if (j->adamw) lmc_adamw(m, param, NULL, c.grad, mom, vel, j->lr, j->wd, s + 1);
    else lmc_sgd(m, param, NULL, c.grad, j->lr);
    if (s == 0) out_params("step1.", m, param);
    fprintf(json, "%s%.17g", s ? ", " : "", loss);
  }
  fprintf(json, "], \"objectives\": [");
  for (long s = 0; s < j->steps; s++) fprintf(json, "%s%.17g", s ? ", " : "", objectives[s]);
  fprintf(json, "], \"norms\": [");
  for (long s = 0; s < j->steps; s++) fprintf(json, "%s%.17g", s ? ", " : "", norms[s]);
  fprintf(json, "]");
  out_params("final.", m, param);
  batches_free(&b);
  free(norms);
  free(objectives);
  free(mom);
  free(vel);
  free(c.work);
  free(c.state);
  free(c.grad);
}

/* The log-probabilities of the next token after each prefix of the
 * history, fed as the runtime's gen_feed does. */
static void generate(const LmcModel *m, real *param, double *dropout, const Tokens *h)
{
  const LmcProgram *p = &m->gen;
  LmcCtx c = ctx(m, p, param, dropout);
  size_t V = (size_t)m->ntoken;
  real *out = xcalloc(h->n * V, sizeof(real));
  for (size_t i = 0; i < h->n; i++) {
    int T = 1;
    const int32_t *x = h->id + i;
    if (p->nstate == 0) {
      T = i + 1 < (size_t)p->max_seq ? (int)(i + 1) : p->max_seq;
      x = h->id + i + 1 - T;
    }
    p->run(&c, x, NULL, T);
    memcpy(out + i * V, c.work + p->logp_offset + (p->logp_last ? 0 : (size_t)(T - 1) * V), V * sizeof(real));
  }
  out_add("", "gen_logp", 2, (int[]){(int)h->n, (int)V}, out, h->n * V);
  free(out);
  free(c.work);
  free(c.state);
}

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: driver WEIGHTS.safetensors JOB OUT.safetensors\n");
    return 2;
  }
  const LmcModel *m = &lmc_model;
  real *param = xcalloc(m->param_numel, sizeof(real));
  double *dropout = xcalloc((size_t)m->ndropout, sizeof(double));   /* all off */
  char err[ERRLEN];
  if (ckpt_load(argv[1], m, param, NULL, 0, NULL, err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  Job j = read_job(argv[2]);
  printf("{\"kind\": \"%s\"", m->kind);
  if (j.eval.n) printf(", \"eval_loss\": %.17g", evaluate(m, param, dropout, &j.eval));
  if (j.gen.n) generate(m, param, dropout, &j.gen);
  if (j.steps > 0) train(m, param, dropout, &j, stdout);
  printf("}\n");
  out_write(argv[3]);
  free(j.eval.id);
  free(j.train.id);
  free(j.gen.id);
  free(param);
  free(dropout);
  return 0;
}
