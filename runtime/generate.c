/*
 * generate.c: generate.py's sampling.  The gen program (batch 1) reads a
 * history, the prompt's words or one random word, and gives the
 * log-probabilities of the next; a word is drawn from them at the
 * temperature, written, and appended to the history.  Words go to --outf
 * through outfile.h, or to standard output, 20 a line; a progress line
 * every GEN_LOG_INTERVAL words on stderr.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outfile.h"
#include "rt.h"

enum { GEN_LOG_INTERVAL = 100 };

/* torch.multinomial(exp(logp / temperature), 1) for one word: the first
 * index whose running sum of weights passes u (in [0, 1)) times their
 * total; w (n) holds the weights, exp((logp - max) / temperature), by the
 * softmax kernels' vectorised exp (libm's exp took a tenth of a word's
 * time).  Words of weight 0 are never drawn. */
int sample_word(const real *logp, int n, double temperature, double u, real *w)
{
  real mx = lmc_row_max(logp, n);
  double total;
  if (temperature == 1)
    total = lmc_exp_sum_to(w, logp, n, mx);
  else {
    for (int v = 0; v < n; v++) w[v] = (real)(logp[v] / temperature);
    total = lmc_exp_sum_inplace(w, n, (real)(mx / temperature));
  }
  double at = u * total, acc = 0;
  for (int v = 0; v < n; v++)
    if ((acc += w[v]) > at && w[v] > 0)
      return v;
  for (int v = n - 1; v > 0; v--)   /* rounding: the last word of weight > 0 */
    if (w[v] > 0)
      return v;
  return 0;
}

/* Runs the gen program on the history and returns the log-probabilities of
 * the next token.  With a hidden state (RNNs) only the newest n tokens are
 * fed; without one (Transformer) the window of the last max_seq tokens. */
static const real *gen_feed(LmcCtx *c, const LmcProgram *p, const int32_t *hist, size_t len, size_t n)
{
  int T;
  const int32_t *x;
  if (p->nstate > 0) {
    for (size_t k = len - n; k + 1 < len; k++) p->run(c, hist + k, NULL, 1);
    x = hist + len - 1;
    T = 1;
  } else {
    T = len < (size_t)p->max_seq ? (int)len : p->max_seq;
    x = hist + len - (size_t)T;
  }
  p->run(c, x, NULL, T);
  return c->work + p->logp_offset + (p->logp_last ? 0 : (size_t)(T - 1) * (size_t)c->m->ntoken);
}

/* Sampling needs finite weights: a NaN or infinite one is refused before
 * any word, as eval refuses the NaN loss such weights give. */
static int check_finite(const LmcModel *m, const real *param, const char *ckpt)
{
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->alias >= 0) continue;
    for (size_t k = 0; k < d->numel; k++)
      if (!isfinite(param[d->offset + k])) {
        rt_error("%s: %s holds %s at element %zu: the weights are not finite", ckpt, d->name,
                 isnan(param[d->offset + k]) ? "nan" : "inf", k);
        return -1;
      }
  }
  return 0;
}

/* How many words s holds (NULL: none). */
static size_t count_words(const char *s)
{
  size_t n = 0;
  if (s)
    for (const char *p = s; *p;) {
      while (*p && strchr(" \t\n\r\v\f", *p)) p++;
      if (*p) n++;
      while (*p && !strchr(" \t\n\r\v\f", *p)) p++;
    }
  return n;
}

/* The prompt's words as ids, appended to hist (room for them): <unk> for
 * a word the vocabulary lacks, said; refused when it has no <unk>. */
static int prompt_ids(const Dict *d, const char *prompt, int32_t *hist, size_t *len)
{
  int unk = dict_find(d, "<unk>");
  for (const char *p = prompt; *p;) {
    while (*p && strchr(" \t\n\r\v\f", *p)) p++;
    const char *s = p;
    while (*p && !strchr(" \t\n\r\v\f", *p)) p++;
    if (p == s) break;
    char word[256];
    size_t k = (size_t)(p - s) < sizeof word - 1 ? (size_t)(p - s) : sizeof word - 1;
    memcpy(word, s, k);
    word[k] = '\0';
    int id = dict_find(d, word);
    if (id < 0) {
      if (unk < 0) {
        rt_error("--prompt: '%s' is not in the vocabulary, which has no <unk>", word);
        return -1;
      }
      rt_warning("--prompt: '%s' is not in the vocabulary; using <unk>", word);
      id = unk;
    }
    hist[(*len)++] = id;
  }
  return 0;
}

typedef struct {
  Rng r;
  double temperature;
  real *w;               /* (ntoken) the weights */
} Sampler;

/* words words drawn after the history hist[0, len) (room for them), into
 * f, 20 a line. */
static void draw_words(LmcCtx *c, const Dict *d, int32_t *hist, size_t len, int words, Sampler *s, FILE *f)
{
  const LmcModel *m = c->m;
  const real *logp = gen_feed(c, &m->gen, hist, len, len);
  for (int i = 0; i < words; i++) {
    int idx = sample_word(logp, m->ntoken, s->temperature, rng_uniform(&s->r), s->w);
    fputs(d->word[idx], f);
    fputc(i % 20 == 19 ? '\n' : ' ', f);
    if (i % GEN_LOG_INTERVAL == 0) fprintf(stderr, "| Generated %d/%d words\n", i, words);
    hist[len++] = idx;
    if (i + 1 < words) logp = gen_feed(c, &m->gen, hist, len, 1);
  }
}

int run_generate(const LmcModel *m, const char *checkpoint, int words, double temperature, uint64_t seed,
                 const char *prompt, const char *outf, int threads, bool bf16)
{
  if (model_check(m) < 0) return 1;
  if (!(temperature >= 1e-3) || words < 0 || threads < 1) {
    rt_error("--temperature must be at least 1e-3, --words non-negative and --threads positive");
    return 2;
  }
  bool to_stdout = strcmp(outf, "-") == 0;
  char err[ERRLEN];
  if (!to_stdout && outfile_check(outf, err, sizeof err) < 0) {   /* before the checkpoint is read */
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (!to_stdout && rt_same_path(outf, checkpoint)) {
    rt_error("--outf %s: that is the checkpoint; the text needs a file of its own", outf);
    return 1;
  }
  openblas_set_num_threads(threads);
  int rc = 1;
  Net n;
  MetaList meta = { 0 };
  Dict d;
  dict_init(&d);
  int32_t *hist = NULL;
  real *w = NULL;
  FILE *f = NULL;
  OutFile of = { 0 };
  if (net_alloc(&n, m, USE_GEN | net_precision(bf16), seed, threads, 0) < 0) return 1;
  /* straight into the parameters: on failure we stop */
  if (ckpt_load_via(checkpoint, m, n.param, n.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  net_round16(&n, m);
  if (check_finite(m, n.param, checkpoint) < 0) goto done;
  if (vocab_for_generate(m, &meta, checkpoint, &d) < 0) goto done;

  /* history: the prompt (or one random word), then what we generate */
  size_t plen = count_words(prompt), len = 0;
  hist = rt_malloc((16 + plen + (size_t)words) * sizeof *hist, "the history");
  w = rt_malloc((size_t)m->ntoken * sizeof *w, "the sampling weights");
  Sampler s = { rng_new(seed, 0x67656e), temperature, w };   /* "gen" */
  if (!plen)
    hist[len++] = (int32_t)(rng_next(&s.r) % (uint64_t)m->ntoken);   /* torch.randint(ntokens, (1, 1)) */
  else if (prompt_ids(&d, prompt, hist, &len) < 0)
    goto done;

  if (to_stdout) f = stdout;
  else if (outfile_open(&of, outf, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  } else
    f = of.f;
  draw_words(&n.gen, &d, hist, len, words, &s, f);
  if (to_stdout ? fflush(f) != 0 || ferror(f) : outfile_commit(&of, false, err, sizeof err) < 0) {
    if (to_stdout) {
      rt_error("cannot write standard output: %s", strerror(errno));
      clearerr(stdout);   /* said once: main's check at exit finds nothing more to report */
    } else
      fprintf(stderr, "%s\n", err);
    goto done;
  }
  rc = 0;
done:
  outfile_abort(&of);
  free(hist);
  free(w);
  dict_free(&d);
  meta_free(&meta);
  net_free(&n);
  return rc;
}
