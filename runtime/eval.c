/*
 * eval.c: main.py's evaluate(), which training runs after every epoch and
 * at the end, and the `eval` command: a checkpoint's loss and perplexity
 * on the valid or test split.
 *
 * Under mpirun (dist.c) evaluation splits its columns as training does:
 * the split is batchified into N x eval batch columns, each rank scores
 * its own eval batch of them, and the loss is the mean over the ranks,
 * which all score the same rows: the figure one process at the global
 * eval batch prints (the trainer compiled at N x batch_size, whose
 * checkpoints an np=N run writes).  `eval` reads the checkpoint on rank 0,
 * which broadcasts it, and rank 0 alone prints.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt.h"

/* main.py's evaluate(): zero state, no dropout, sum over windows of
 * T * mean loss, divided by the rows covered (nrows - 1 for all of them).
 * max_windows > 0 stops early (dry run).  *ntok: targets scored. */
/* Windows of bptt, or of the program's max_seq for a model with hidden
 * state: its evaluation program is compiled for several bptt (lmc's
 * compiler/main.c, EVAL_SPAN), which gives the same per-token losses, the
 * state being carried across windows either way. */
double eval_loss(LmcCtx *c, const LmcProgram *p, const Batches *b, int bptt, long max_windows, size_t *ntok)
{
  if (p->nstate > 0 && p->max_seq > bptt)
    bptt = p->max_seq;
  memset(c->state, 0, p->state_numel * sizeof(real));
  double total = 0;
  size_t rows = 0;
  long k = 0;
  for (size_t i = 0; i + 1 < b->nrows; i += (size_t)bptt) {
    if (max_windows > 0 && k++ >= max_windows) break;
    const int32_t *x, *y;
    int T = get_batch(b, i, bptt, &x, &y);
    total += T * p->run(c, x, y, T);
    rows += (size_t)T;
  }
  if (ntok) *ntok = rows * (size_t)b->bsz;
  return rows ? total / (double)rows : NAN;
}

/* The checkpoint's parameters, read by rank 0 and broadcast, checked
 * against the corpus's vocabulary: 0, or -1 on every rank. */
static int load_shared(const LmcModel *m, Net *n, const char *checkpoint, const Corpus *c, const char *data)
{
  MetaList meta = { 0 };
  char err[ERRLEN];
  int rc = 0;
  /* straight into the parameters: on failure we stop */
  if (dist_rank() == 0 && ckpt_load_via(checkpoint, m, n->param, n->param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    rc = -1;
  } else if (dist_rank() == 0 && vocab_check(&meta, &c->dict, checkpoint, data) < 0)
    rc = -1;
  meta_free(&meta);
  if (dist_any(rc < 0)) return -1;
  dist_bcast(n->param, m->param_numel * sizeof(real));
  return 0;
}

/* The eval command's line, or with --json its object. */
static void print_result(const char *split, double loss, size_t ntok, double seconds, bool json)
{
  double ppl = exp(loss);
  if (json) {
    char l[32] = "null", p[32] = "null";
    if (isfinite(loss)) snprintf(l, sizeof l, "%.17g", loss);
    if (isfinite(ppl)) snprintf(p, sizeof p, "%.17g", ppl);
    printf("{\"loss\": %s, \"ppl\": %s, \"tokens\": %zu, \"seconds\": %.6f}\n", l, p, ntok, seconds);
  } else
    printf("| %s loss %5.2f | %s ppl %8.2f\n", split, loss, split, ppl);
  fflush(stdout);
}

static int eval_split(const LmcModel *m, const char *checkpoint, const char *data, const char *split, bool json,
                      int threads, bool bf16)
{
  if (model_check(m) < 0) return 1;
  if (strcmp(split, "valid") != 0 && strcmp(split, "test") != 0) {
    rt_error("--split: expected 'valid' or 'test', got '%s'", split);
    return 2;
  }
  if (threads < 1) {
    rt_error("threads must be positive");
    return 2;
  }
  openblas_set_num_threads(threads);
  Corpus c;
  if (vocab_load_corpus(m, &c, data) < 0) return 1;
  int rc = 1;
  Net n;
  Batches b = { 0 };
  if (net_alloc(&n, m, USE_EVAL | net_precision(bf16), 0, threads, NULL, 0) < 0) goto done_corpus;
  if (load_shared(m, &n, checkpoint, &c, data) < 0) goto done;
  net_round16(&n, m);
  batchify_slice(split[0] == 'v' ? &c.valid : &c.test, m->eval.batch, dist_rank(), dist_size(), &b);
  if (b.nrows < 2) {
    if (dist_rank() == 0)
      rt_error("%s/%s.txt is too small for batches of %d columns", data, split, m->eval.batch * dist_size());
    goto done;
  }
  size_t ntok;
  double t0 = rt_now();
  double loss = dist_mean(eval_loss(&n.eval, &m->eval, &b, m->bptt, 0, &ntok));
  double seconds = rt_now() - t0;   /* the evaluation loop alone, for benchmarks */
  ntok *= (size_t)dist_size();
  if (dist_rank() == 0) print_result(split, loss, ntok, seconds, json);
  if (isfinite(loss)) rc = 0;
  else if (dist_rank() == 0) rt_error("%s loss is %s", split, isnan(loss) ? "nan" : "inf");
done:
  batches_free(&b);
  net_free(&n);
done_corpus:
  corpus_free(&c);
  return rc;
}

int run_eval(const LmcModel *m, const char *checkpoint, const char *data, const char *split, bool json,
             int threads, bool bf16)
{
  dist_begin();
  return dist_end(eval_split(m, checkpoint, data, split, json, threads, bf16));
}
