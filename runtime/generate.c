/*
 * generate.c: generate.py's sampling.  The gen program (batch 1) reads a
 * history, the prompt's words (--prompt, --prompt-file) or one random
 * word, and gives the log-probabilities of the next; a word is drawn from
 * them (sample.c: temperature, top-k, top-p) and appended to the history.
 * --samples N draws N independent samples, a column each of the sample
 * program (the gen program at a larger batch), as many at a time as it has
 * columns, so that the weights are read once per word for all of them; the
 * step and steps programs do the same over key/value caches.
 * Words go to --outf through outfile.h, or to standard output, 20 a line,
 * samples apart by an empty line; a progress line every GEN_LOG_INTERVAL
 * words on stderr.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "outfile.h"
#include "rt.h"

enum { GEN_LOG_INTERVAL = 100 };

/* The program that generation runs, and for the step program how many
 * positions of the window its key/value caches hold. */
typedef struct {
  const LmcProgram *p;
  bool step;
  size_t cached;
} Feed;

/* The step program (batch 1, or steps at the sample batch B, hist (rows,
 * B) as gen_feed's) on the window of the last max_seq words of hist: only
 * the words after the cached positions, from c->pos.  Every column holds
 * as many words, so they share the positions.  When the
 * window slides (the history outgrows max_seq), every word moves to
 * another position and the window is computed afresh from position 0, as
 * the gen program computes it for every word. */
static const real *step_feed(LmcCtx *c, Feed *f, const int32_t *hist, size_t len)
{
  size_t max = (size_t)f->p->max_seq, from = len <= max ? f->cached : len - max;
  c->pos = len <= max ? (int)f->cached : 0;
  int T = (int)(len - from);
  size_t B = (size_t)f->p->batch;
  f->p->run(c, hist + from * B, NULL, T);
  f->cached = (size_t)c->pos + (size_t)T;
  return c->work + f->p->logp_offset + (f->p->logp_last ? 0 : (size_t)(T - 1) * B * (size_t)c->m->ntoken);
}

/* Runs the program on the history, B = p->batch columns: row k of hist
 * holds word k of every column.  Returns the log-probabilities of the next
 * word of column 0; column b's follow at b * ntoken.  With a hidden state
 * (RNNs) only the newest n rows are fed; without one (Transformer) the
 * window of the last max_seq rows, or its new rows to the step program. */
static const real *gen_feed(LmcCtx *c, Feed *f, const int32_t *hist, size_t len, size_t n)
{
  if (f->step) return step_feed(c, f, hist, len);
  const LmcProgram *p = f->p;
  int T;
  size_t B = (size_t)p->batch;
  const int32_t *x;
  if (p->nstate > 0) {
    for (size_t k = len - n; k + 1 < len; k++) p->run(c, hist + k * B, NULL, 1);
    x = hist + (len - 1) * B;
    T = 1;
  } else {
    T = len < (size_t)p->max_seq ? (int)len : p->max_seq;
    x = hist + (len - (size_t)T) * B;
  }
  p->run(c, x, NULL, T);
  return c->work + p->logp_offset + (p->logp_last ? 0 : (size_t)(T - 1) * B * (size_t)c->m->ntoken);
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

/* The prompt's words as ids into ids (room for them): <unk> for a word
 * the vocabulary lacks, said; refused when it has no <unk>.  what names
 * the prompt in messages. */
static int prompt_ids(const Dict *d, const char *prompt, const char *what, int32_t *ids)
{
  int unk = dict_find(d, "<unk>");
  size_t len = 0;
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
        rt_error("%s: '%s' is not in the vocabulary, which has no <unk>", what, word);
        return -1;
      }
      rt_warning("%s: '%s' is not in the vocabulary; using <unk>", what, word);
      id = unk;
    }
    ids[len++] = id;
  }
  return 0;
}

/* --prompt-file: a regular file of at most GEN_PROMPT_MAX_BYTES holding
 * text (no NUL byte) with at least one word; malloc'd, or NULL, said. */
static char *read_prompt_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    rt_error("--prompt-file %s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  char *text = NULL;
  const char *why = NULL;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) why = "not a regular file";
  else if (st.st_size > GEN_PROMPT_MAX_BYTES) why = "larger than 1 MiB";
  else {
    size_t n = (size_t)st.st_size;
    text = rt_malloc(n + 1, "the prompt file");
    if (fread(text, 1, n, f) != n || ferror(f)) why = "cannot read it";
    else if (memchr(text, '\0', n)) why = "a binary file (it holds a NUL byte), not text";
    else if (text[n] = '\0', !count_words(text)) why = "holds no words";
  }
  fclose(f);
  if (why) {
    rt_error("--prompt-file %s: %s", path, why);
    free(text);
    return NULL;
  }
  return text;
}

/* A round of samples: B columns, column b drawing from its own stream
 * r[b]; hist (rows, B) the words so far. */
typedef struct {
  SampleRule rule;
  Rng *r;                /* (B) */
  real *w;               /* (ntoken) the weights */
  SampleCand *cand;      /* (ntoken) */
  FILE *logp;            /* test hook LMC_TEST_LOGP=FILE: column 0's log-probabilities, a word a line */
} Sampler;

/* words rows drawn after the history hist[0, len) (room for them), every
 * column of program p; a progress line every GEN_LOG_INTERVAL words. */
static void draw_words(LmcCtx *c, Feed *f, int32_t *hist, size_t len, int words, Sampler *s)
{
  int n = c->m->ntoken, B = f->p->batch;
  const real *logp = gen_feed(c, f, hist, len, len);
  for (int i = 0; i < words; i++) {
    for (int v = 0; s->logp && v < n; v++)
      fprintf(s->logp, "%.9g%c", (double)logp[v], v + 1 < n ? ' ' : '\n');
    for (int b = 0; b < B; b++)
      hist[len * (size_t)B + (size_t)b] =
        sample_word(logp + (size_t)b * (size_t)n, n, &s->rule, rng_uniform(&s->r[b]), s->w, s->cand);
    if (i % GEN_LOG_INTERVAL == 0) fprintf(stderr, "| Generated %d/%d words\n", i, words);
    len++;
    if (i + 1 < words) logp = gen_feed(c, f, hist, len, 1);
  }
}

/* Column b's words rows [from, from + words) of hist (B columns), 20 a
 * line as generate.py writes them. */
static void write_words(FILE *f, const Dict *d, const int32_t *hist, int B, int b, size_t from, int words)
{
  for (int i = 0; i < words; i++) {
    fputs(d->word[hist[(from + (size_t)i) * (size_t)B + (size_t)b]], f);
    fputc(i % 20 == 19 ? '\n' : ' ', f);
  }
}

/* The samples, a round of B columns at a time: sample i draws from stream
 * i of the seed (sample 0's is the stream of a one-sample run) and starts
 * from the prompt, or from a random word of its own stream.  Samples are
 * separated by an empty line. */
static void draw_samples(LmcCtx *c, Feed *fd, const Dict *d, const int32_t *prompt, size_t plen,
                         const GenOptions *o, Sampler *s, int32_t *hist, FILE *f)
{
  const LmcProgram *p = fd->p;
  int B = p->batch;
  size_t start = plen ? plen : 1;
  for (int i0 = 0; i0 < o->samples; i0 += B) {
    memset(c->state, 0, p->state_numel * sizeof *c->state);   /* every sample from the zero state */
    fd->cached = 0;
    for (int b = 0; b < B; b++) {
      s->r[b] = rng_new(o->seed, 0x67656e + (uint64_t)(i0 + b));   /* "gen" */
      for (size_t k = 0; k < plen; k++) hist[k * (size_t)B + (size_t)b] = prompt[k];
      if (!plen)   /* torch.randint(ntokens, (1, 1)) */
        hist[b] = (int32_t)(rng_next(&s->r[b]) % (uint64_t)c->m->ntoken);
    }
    draw_words(c, fd, hist, start, o->words, s);
    for (int b = 0; b < B && i0 + b < o->samples; b++) {
      if (i0 + b > 0) fputs(o->words % 20 ? "\n\n" : "\n", f);
      write_words(f, d, hist, B, b, start, o->words);
    }
  }
}

static int check_options(const GenOptions *o)
{
  const SampleRule *r = &o->rule;
  if (!(r->temperature >= 1e-3) || o->words < 0 || o->threads < 1 || r->top_k < 0 || !(r->top_p > 0 && r->top_p <= 1) ||
      o->samples < 1 || o->samples > GEN_MAX_SAMPLES || (o->prompt && o->prompt_file)) {
    rt_error("--temperature must be at least 1e-3, --words non-negative, --threads positive, --top-k positive, "
             "--top-p in (0, 1], --samples in [1, %d], and --prompt and --prompt-file are not given together",
             GEN_MAX_SAMPLES);
    return 2;
  }
  if (strcmp(o->outf, "-") != 0) {
    char err[ERRLEN];
    if (outfile_check(o->outf, err, sizeof err) < 0) {   /* before the checkpoint is read */
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    if (rt_same_path(o->outf, o->checkpoint)) {
      rt_error("--outf %s: that is the checkpoint; the text needs a file of its own", o->outf);
      return 1;
    }
  }
  return 0;
}

static int generate(const LmcModel *m, const GenOptions *o)
{
  if (model_check(m) < 0) return 1;
  int rc = check_options(o);
  if (rc) return rc;
  rc = 1;
  bool to_stdout = strcmp(o->outf, "-") == 0;
  char err[ERRLEN];
  char *text = NULL;
  if (o->prompt_file && !(text = read_prompt_file(o->prompt_file))) return 1;
  const char *prompt = text ? text : o->prompt;
  const char *what = text ? "--prompt-file" : "--prompt";
  /* one sample at batch 1, more SAMPLE_BATCH columns at a time; each over
   * key/value caches where the model has them */
  bool many = o->samples > 1 && m->sample.run, cache = !o->no_kv_cache;
  bool step = cache && (many ? m->steps.run != NULL : m->step.run != NULL);
  const LmcProgram *prog = many ? (step ? &m->steps : &m->sample) : step ? &m->step : &m->gen;
  Feed fd = { prog, step, 0 };
  size_t B = (size_t)fd.p->batch;
  openblas_set_num_threads(o->threads);
  Net n;
  MetaList meta = { 0 };
  Dict d;
  dict_init(&d);
  int32_t *ids = NULL, *hist = NULL;
  Sampler s = { o->rule, NULL, NULL, NULL, NULL };
  FILE *f = NULL;
  OutFile of = { 0 };
  int use = (many ? (step ? USE_STEPS : USE_SAMPLE) : step ? USE_STEP : USE_GEN) | net_precision(o->bf16);
  if (net_alloc(&n, m, use, o->seed, o->threads, NULL, 0) < 0) {
    free(text);
    return 1;
  }
  LmcCtx *c = many ? (step ? &n.steps : &n.sample) : step ? &n.step : &n.gen;
  /* straight into the parameters: on failure we stop */
  if (ckpt_load_via(o->checkpoint, m, n.param, n.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  net_round16(&n, m);
  if (check_finite(m, n.param, o->checkpoint) < 0) goto done;
  if (vocab_for_generate(m, &meta, o->checkpoint, &d) < 0) goto done;

  /* history: the prompt (or one random word), then what we generate */
  size_t plen = count_words(prompt);
  ids = rt_malloc((plen + 1) * sizeof *ids, "the prompt");
  if (prompt_ids(&d, prompt ? prompt : "", what, ids) < 0) goto done;
  hist = rt_malloc((plen + 1 + (size_t)o->words) * B * sizeof *hist, "the history");
  s.r = rt_malloc(B * sizeof *s.r, "the samples' generators");
  s.w = rt_malloc((size_t)m->ntoken * sizeof *s.w, "the sampling weights");
  s.cand = rt_malloc((size_t)m->ntoken * sizeof *s.cand, "the sampling candidates");

  if (to_stdout) f = stdout;
  else if (outfile_open(&of, o->outf, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  } else
    f = of.f;
  const char *dump = getenv("LMC_TEST_LOGP");
  if (dump && !(s.logp = fopen(dump, "w"))) {
    rt_error("LMC_TEST_LOGP %s: cannot open: %s", dump, strerror(errno));
    goto done;
  }
  draw_samples(c, &fd, &d, ids, plen, o, &s, hist, f);
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
  if (s.logp) fclose(s.logp);
  free(text);
  free(ids);
  free(hist);
  free(s.r);
  free(s.w);
  free(s.cand);
  dict_free(&d);
  meta_free(&meta);
  net_free(&n);
  return rc;
}

/* Under mpirun rank 0 alone generates (one text, one --outf); the other
 * ranks exit 0 at once, and a failure on rank 0 still ends the job
 * non-zero (dist_end). */
int run_generate(const LmcModel *m, const GenOptions *o)
{
  dist_begin();
  if (dist_rank() != 0) return dist_end(0);
  return dist_end(generate(m, o));
}
