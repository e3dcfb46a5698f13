/*
 * train.c: main.py's training loop and evaluation, generate.py's sampling,
 * and `info`, driving the three programs of an emitted LmcModel.
 *
 * One allocation (a Net) holds the parameters, their gradient, the AdamW
 * moments (only when AdamW is chosen), one activation arena sized for the
 * largest program in use, and the hidden state of each program in use;
 * every program gets an LmcCtx into it, all sharing the parameters and the
 * arena.
 *
 * The loop follows main.py where numbers or printed lines depend on it:
 *   - each epoch starts from a zero hidden state, carried (detached) from
 *     window to window; windows are get_batch(train, i) for i in
 *     range(0, nrows - 1, bptt), the last one shorter;
 *   - after each step: clip the global gradient norm, sgd or adamw, then
 *     ctx.step++ (the dropout key); sgd takes the clip as a smaller lr;
 *   - a log line every log_interval batches (at batch % interval == 0,
 *     batch > 0, the loss summed since the last line divided by the
 *     interval, quirks included), tok/s appended;
 *   - evaluate() is main.py's: sum over windows of T * mean loss, divided
 *     by nrows - 1, from a zero state with dropout off;
 *   - save on a new best validation loss, else lr /= 4; at the end (or on
 *     Ctrl-C / SIGTERM, noticed between batches) reload the best model and
 *     report test loss.
 *
 * Checkpoints hold the model's state_dict, loadable by torch with
 * strict=True, and metadata: format_version, kind, every compiled
 * hyper-parameter, vocab (words joined by '\n' in id order), vocab_size,
 * vocab_hash, seed, lmc_version, lmc_flags, and for --resume lr, epoch,
 * step, optimizer, valid_loss.  AdamW's moments live in a companion file
 * FILE.optim so that the model file stays a plain state_dict; how the two
 * stay a pair through a kill at any moment is told at save_checkpoint.
 */
#define _DEFAULT_SOURCE   /* madvise */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

extern void openblas_set_num_threads(int);

const char *rt_progname = "lmc";

enum { EVAL_DRY_WINDOWS = 3, GEN_LOG_INTERVAL = 100 };
#define DEFAULT_SAVE "model.safetensors"
#define FORMAT_VERSION "1"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints "PROG: LEVEL: message" with the message's control bytes as '?':
 * messages quote words, names and values read from checkpoints and corpora,
 * which must not reach the terminal as escape sequences. */
static void report(const char *level, const char *fmt, va_list ap)
{
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  for (char *p = msg; *p; p++)
    if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
      *p = '?';
  fprintf(stderr, "%s: %s: %s\n", rt_progname, level, msg);
}

static void error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  report("error", fmt, ap);
  va_end(ap);
}

static void warning(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  report("warning", fmt, ap);
  va_end(ap);
}

/* "lstm" for LSTM: the graph file and make's MODEL name. */
static void model_name(const LmcModel *m, char *buf, size_t n)
{
  size_t i = 0;
  for (; m->kind[i] && i + 1 < n; i++)
    buf[i] = (char)(m->kind[i] >= 'A' && m->kind[i] <= 'Z' ? m->kind[i] - 'A' + 'a' : m->kind[i]);
  buf[i] = '\0';
}

/* ---------------------------------------------------------- generator */

/* splitmix64: parameter init and sampling (dropout has its own, in lmc_rt.h). */
typedef struct {
  uint64_t s;
} Rng;

static Rng rng_new(uint64_t seed, uint64_t stream)
{
  return (Rng){ lmc_mix64(lmc_mix64(seed) ^ stream) };
}

static uint64_t rng_next(Rng *r)
{
  uint64_t z = r->s;
  r->s += 0x9e3779b97f4a7c15ull;
  return lmc_mix64(z);
}

static double rng_uniform(Rng *r)   /* [0, 1) */
{
  return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* ---------------------------------------------------------------- Net */

typedef struct {
  real *block;
  real *param;                  /* (param_numel) */
  real *exp_avg, *exp_avg_sq;   /* (param_numel) each, AdamW only */
  real *spare;                  /* param_numel reals free once training ends, or NULL */
  double *dropout;              /* (ndropout) */
  LmcCtx train, eval, gen;
} Net;

enum { USE_TRAIN = 1, USE_EVAL = 2, USE_GEN = 4, USE_ADAMW = 8 };

static size_t pad(size_t n)   /* to 128 bytes */
{
  size_t k = 128 / sizeof(real);
  return (n + k - 1) / k * k;
}

/* Checks what the runtime relies on, so a broken descriptor fails here. */
static int check_model(const LmcModel *m)
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
  else if (m->train.batch < 1 || m->eval.batch < 1) why = "a program has no batch";
  else if (m->grad_numel > m->param_numel) why = "the gradient block does not fit the parameters";
  for (int i = 0; !why && i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->offset + d->numel > m->param_numel) why = "a parameter lies outside the parameter block";
    else if (d->alias >= m->nparam) why = "a parameter aliases a tensor that does not exist";
  }
  if (why) {
    error("model descriptor of %s is inconsistent: %s", m->kind && m->kind[0] ? m->kind : "a graph without kind", why);
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

static int net_alloc(Net *n, const LmcModel *m, int use, uint64_t seed, int threads, double dropout)
{
  const LmcProgram *prog[3] = { &m->train, &m->eval, &m->gen };
  LmcCtx *ctx[3] = { &n->train, &n->eval, &n->gen };
  memset(n, 0, sizeof *n);
  size_t total = pad(m->param_numel);
  if (use & USE_TRAIN) total += pad(m->grad_numel);
  if (use & USE_ADAMW) total += 2 * pad(m->param_numel);
  /* one activation arena for every program in use: it is scratch, nothing
   * in it lives from one run() to the next, and the programs never run at
   * the same time (train and eval take turns); states stay apart */
  size_t work = 0;
  for (int k = 0; k < 3; k++)
    if (use & (1 << k)) {
      if (prog[k]->work_numel > work) work = prog[k]->work_numel;
      total += pad(prog[k]->state_numel);
    }
  total += pad(work);
  n->block = block_alloc(total * sizeof(real));
  n->dropout = calloc((size_t)m->ndropout + 1, sizeof *n->dropout);
  if (!n->block || !n->dropout) {
    error("out of memory (%.0f MiB)", (double)(total * sizeof(real)) / (1 << 20));
    free(n->block);
    free(n->dropout);
    return -1;
  }
  memset(n->block, 0, total * sizeof(real));
  /* --dropout sets the model's "dropout" slot, as the example's --dropout
   * does; other slots (the Transformer's dropout_inner) keep their value. */
  for (int i = 0; i < m->ndropout; i++)
    n->dropout[i] = dropout < 0 || strcmp(m->dropout[i].name, "dropout") ? m->dropout[i].value : dropout;
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
  for (int k = 0; k < 3; k++) {
    if (!(use & (1 << k))) continue;
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
  return 0;
}

static void net_free(Net *n)
{
  free(n->block);
  free(n->dropout);
  memset(n, 0, sizeof *n);
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

/* Every tensor per its descriptor, in order, from one seeded stream;
 * an alias shares its target's storage and is skipped.  XAVIER uses
 * init_a when the compiler gave one, else the bound from the shape. */
static void init_params(const LmcModel *m, real *param, uint64_t seed)
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
    }
  }
}

/* ------------------------------------------------------------ corpus */

static int load_corpus(const LmcModel *m, Corpus *c, const char *dir)
{
  char err[ERRLEN];
  memset(c, 0, sizeof *c);
  if (corpus_load(c, dir, err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  if (c->dict.nword != m->ntoken) {
    char name[64];
    model_name(m, name, sizeof name);
    error("%s has a vocabulary of %d words, but this trainer was compiled for %d;\n"
          "  recompile for it: make trainer MODEL=%s DATA=%s\n"
          "  (or: lmc compile graphs/%s.lua -D ntoken=%d ...)",
          dir, c->dict.nword, m->ntoken, name, dir, name, c->dict.nword);
    corpus_free(c);
    return -1;
  }
  return 0;
}

static char *vocab_join(const Dict *d)
{
  size_t n = 1;
  for (int i = 0; i < d->nword; i++) n += strlen(d->word[i]) + 1;
  char *s = malloc(n), *p = s;
  if (!s) return NULL;
  for (int i = 0; i < d->nword; i++) {
    size_t k = strlen(d->word[i]);
    memcpy(p, d->word[i], k);
    p += k;
    if (i + 1 < d->nword) *p++ = '\n';
  }
  *p = '\0';
  return s;
}

/* The dictionary stored in a checkpoint's metadata; 0 when there is none. */
static int vocab_from_meta(const MetaList *meta, Dict *d)
{
  const char *v = meta_get(meta, "vocab");
  dict_init(d);
  if (!v) return 0;
  const char *p = v;
  char *w = malloc(strlen(v) + 1);
  for (;;) {
    const char *e = strchr(p, '\n');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    memcpy(w, p, k);
    w[k] = '\0';
    if (dict_add(d, w) != d->nword - 1) {
      free(w);
      return -1;   /* a word twice */
    }
    if (!e) break;
    p = e + 1;
  }
  free(w);
  return 1;
}

static void hash_hex(uint64_t h, char *buf)
{
  snprintf(buf, 17, "%016llx", (unsigned long long)h);
}

/* A checkpoint's vocabulary must be the corpus's, word for word. */
static int check_vocab(const MetaList *meta, const Dict *corpus, const char *ckpt, const char *dir)
{
  Dict d;
  int have = vocab_from_meta(meta, &d);
  if (have < 0) {
    error("%s: the vocabulary in the metadata repeats a word", ckpt);
    dict_free(&d);
    return -1;
  }
  if (!have) {
    const char *h = meta_get(meta, "vocab_hash");
    char mine[17];
    hash_hex(dict_hash(corpus), mine);
    if (h && strcmp(h, mine) != 0) {
      error("%s was trained on another vocabulary than %s's (hash %s, %s's is %s)", ckpt, dir, h, dir, mine);
      return -1;
    }
    if (!h) warning("%s holds no vocabulary; assuming %s's", ckpt, dir);
    return 0;
  }
  int rc = 0;
  if (d.nword != corpus->nword) {
    error("%s was trained on a vocabulary of %d words, %s has %d", ckpt, d.nword, dir, corpus->nword);
    rc = -1;
  } else
    for (int i = 0; i < d.nword; i++)
      if (strcmp(d.word[i], corpus->word[i]) != 0) {
        error("%s was trained on another vocabulary than %s's: word %d is '%s' there, '%s' here", ckpt, dir,
              i, d.word[i], corpus->word[i]);
        rc = -1;
        break;
      }
  dict_free(&d);
  return rc;
}

/* ---------------------------------------------------------- evaluate */

/* main.py's evaluate(): zero state, no dropout, sum over windows of
 * T * mean loss, divided by the rows covered (nrows - 1 for all of them).
 * max_windows > 0 stops early (dry run).  *ntok: targets scored. */
/* Windows of bptt, or of the program's max_seq for a model with hidden
 * state: its evaluation program is compiled for several bptt (lmc's
 * compiler/main.c, EVAL_SPAN), which gives the same per-token losses, the
 * state being carried across windows either way. */
static double evaluate(LmcCtx *c, const LmcProgram *p, const Batches *b, int bptt, long max_windows,
                       size_t *ntok)
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

/* ------------------------------------------------------------- train */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

typedef struct {
  const LmcModel *m;
  const TrainOptions *o;
  Corpus corpus;
  Batches train, valid, test;
  Net net;
  double lr;
  int epoch;             /* the one running, or the last done */
  bool has_best;
  double best;
  const char *save;      /* where a new best goes */
  const char *best_path; /* the file holding the best model, NULL when none yet */
  uint64_t run_id;       /* random, drawn at start: pairs this run's model and moments files */
  long eval_windows;     /* 0: all */
  FILE *csv;             /* --log-csv, a line per logged batch */
  bool tty, progress;    /* stderr is a terminal; a progress line is showing */
} Trainer;

static void clear_progress(Trainer *t)
{
  if (t->progress) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
    t->progress = false;
  }
}

static void out(Trainer *t, const char *fmt, ...)
{
  clear_progress(t);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

static void rule(Trainer *t, char c)
{
  char line[90];
  memset(line, c, 89);
  line[89] = '\0';
  out(t, "%s\n", line);
}

static void fmt_duration(double s, char *buf, size_t n)
{
  long x = (long)(s + 0.5);
  if (x >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
  else snprintf(buf, n, "%ld:%02ld", x / 60, x % 60);
}

static void setf(MetaList *l, const char *key, const char *fmt, ...)
{
  char buf[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  meta_set(l, key, buf);
}

/* What every checkpoint says about the model and its vocabulary. */
static int meta_model(MetaList *l, const LmcModel *m, const Dict *d, uint64_t seed)
{
  meta_set(l, "format_version", FORMAT_VERSION);
  meta_set(l, "kind", m->kind);
  for (int i = 0; i < m->nhyper; i++) meta_set(l, m->hyper[i][0], m->hyper[i][1]);
  setf(l, "ntoken", "%d", m->ntoken);
  setf(l, "bptt", "%d", m->bptt);
  char *v = vocab_join(d);
  if (!v) return -1;
  meta_set(l, "vocab", v);
  free(v);
  setf(l, "vocab_size", "%d", d->nword);
  char h[17];
  hash_hex(dict_hash(d), h);
  meta_set(l, "vocab_hash", h);
  setf(l, "seed", "%llu", (unsigned long long)seed);
  meta_set(l, "lmc_version", m->version);
  meta_set(l, "lmc_flags", m->flags);
  return 0;
}

/* PATH + suffix (malloc'd) */
static char *suffixed(const char *path, const char *suffix)
{
  char *s = malloc(strlen(path) + strlen(suffix) + 1);
  if (s) sprintf(s, "%s%s", path, suffix);
  return s;
}

static char *optim_path(const char *path)
{
  return suffixed(path, ".optim");
}

static char *prev_path(const char *path)
{
  return suffixed(path, ".optim.prev");
}

static const char *base_name(const char *p)
{
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* The optimizer_key in path's metadata (malloc'd), NULL when path is
 * absent, unreadable or has none. */
static char *read_key(const char *path)
{
  MetaList meta = { 0 };
  char err[ERRLEN];
  char *key = NULL;
  if (ckpt_read_meta(path, &meta, err) == 0 && meta_get(&meta, "optimizer_key"))
    key = strdup(meta_get(&meta, "optimizer_key"));
  meta_free(&meta);
  return key;
}

/* Before new moments replace PATH.optim: when PATH.optim is the one PATH
 * names, it moves to PATH.optim.prev (*moved set), so that PATH keeps its
 * moments until the new PATH is in place.  A PATH.optim that is not
 * PATH's (left by a kill between the two files) stays where it is, to be
 * replaced; the PATH.optim.prev that PATH then names is kept. */
static int keep_paired_moments(const char *path, const char *opath, const char *prev, bool *moved)
{
  char err[ERRLEN];
  char *kf = read_key(path), *ko = kf ? read_key(opath) : NULL;
  int rc = 0;
  if (kf && ko && strcmp(kf, ko) == 0) {
    if (ckpt_check_path(prev, err) < 0) {
      fprintf(stderr, "%s\n", err);
      rc = -1;
    } else if (rename(opath, prev) != 0) {
      error("%s: cannot rename %s to %s: %s", path, opath, prev, strerror(errno));
      rc = -1;
    } else
      *moved = true;
  }
  free(kf);
  free(ko);
  return rc;
}

/*
 * A checkpoint is the model file PATH and, with AdamW, its moments in
 * PATH.optim.  Both name the pair's key in their metadata,
 * optimizer_key = RUNID-STEP: a random 64-bit run id drawn when training
 * starts and the step of the save, so that another run's PATH.optim at the
 * same step never pairs.  The key is a name, never a path: the companion
 * is always found from PATH's own name.  A save, each file written to
 * FILE.tmp, fsync'd and renamed over FILE (ckpt_save):
 *
 *   a. if PATH.optim holds PATH's key, rename it to PATH.optim.prev
 *   b. write the new moments to PATH.optim
 *   c. write the new model to PATH: the commit point
 *   d. remove PATH.optim.prev
 *
 * A kill before c leaves the old PATH, whose moments are PATH.optim
 * (before a) or PATH.optim.prev (after a); from c on, the new PATH and
 * PATH.optim.  --resume takes whichever of PATH.optim and PATH.optim.prev
 * holds PATH's key (load_moments); eval and generate read PATH alone.  A
 * save that fails (a full disk) before c undoes a: the files are then as
 * they were, names and bytes.
 */
static int save_checkpoint(Trainer *t, const char *path, double val_loss)
{
  const LmcModel *m = t->m;
  char err[ERRLEN];
  MetaList meta = { 0 };
  int rc = -1;
  char *opath = NULL, *prev = NULL;
  bool moved = false;
  if (meta_model(&meta, m, &t->corpus.dict, t->o->seed) < 0) goto oom;
  setf(&meta, "lr", "%.17g", t->lr);
  setf(&meta, "epoch", "%d", t->epoch);
  setf(&meta, "step", "%llu", (unsigned long long)t->net.train.step);
  meta_set(&meta, "optimizer", t->o->adamw ? "adamw" : "sgd");
  setf(&meta, "valid_loss", "%.17g", val_loss);
  setf(&meta, "clip", "%.17g", t->o->clip);
  if (t->o->adamw) {
    if (!(opath = optim_path(path)) || !(prev = prev_path(path))) goto oom;
    /* optimizer_state: for readers; lmc itself never opens a path read from a file */
    meta_set(&meta, "optimizer_state", base_name(opath));
    setf(&meta, "optimizer_key", "%016llx-%llu", (unsigned long long)t->run_id,
         (unsigned long long)t->net.train.step);
    if (keep_paired_moments(path, opath, prev, &moved) < 0) goto done;
    ckpt_test_pause();
    MetaList om = { 0 };
    meta_set(&om, "format_version", FORMAT_VERSION);
    meta_set(&om, "kind", m->kind);
    meta_set(&om, "optimizer", "adamw");
    meta_set(&om, "step", meta_get(&meta, "step"));
    meta_set(&om, "optimizer_key", meta_get(&meta, "optimizer_key"));
    ExtraBlock ex[2] = { { "optimizer.exp_avg.", t->net.exp_avg }, { "optimizer.exp_avg_sq.", t->net.exp_avg_sq } };
    int r = ckpt_save(opath, m, t->net.param, ex, 2, &om, err);
    meta_free(&om);
    if (r < 0) {
      fprintf(stderr, "%s\n", err);
      goto done;
    }
    ckpt_test_pause();
  }
  if (ckpt_save(path, m, t->net.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  moved = false;
  if (prev) {
    ckpt_test_pause();
    if (unlink(prev) != 0 && errno != ENOENT)
      warning("cannot remove %s: %s", prev, strerror(errno));
  }
  rc = 0;
  goto done;
oom:
  error("out of memory");
done:
  if (moved && rename(prev, opath) != 0)
    warning("cannot rename %s back to %s: %s (--resume finds it there)", prev, opath, strerror(errno));
  free(opath);
  free(prev);
  meta_free(&meta);
  return rc;
}

/* A mistyped --save, or one that names a device, FIFO, link or folder (or
 * whose .tmp, and with AdamW .optim, .optim.tmp, .optim.prev, does), fails
 * at start, not after the first epoch. */
static int check_save_paths(const char *save, bool adamw)
{
  char err[ERRLEN];
  char *companion[2] = { adamw ? optim_path(save) : NULL, adamw ? prev_path(save) : NULL };
  int rc = ckpt_check_path(save, err);
  for (int k = 0; k < 2 && adamw && rc == 0; k++)
    rc = companion[k] ? ckpt_check_path(companion[k], err) : (snprintf(err, sizeof err, "out of memory"), -1);
  if (rc < 0) fprintf(stderr, "%s\n", err);
  free(companion[0]);
  free(companion[1]);
  return rc;
}

/* A run id no other run has: getrandom, else the clock and the pid. */
static uint64_t new_run_id(void)
{
  uint64_t id;
  if (getrandom(&id, sizeof id, 0) == (ssize_t)sizeof id) return id;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  id = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
  return id * 0x9e3779b97f4a7c15u;
}

static double meta_num(const MetaList *l, const char *key, double dflt)
{
  const char *s = meta_get(l, key);
  if (!s) return dflt;
  char *e;
  double v = strtod(s, &e);
  return e != s && *e == '\0' ? v : dflt;
}

/* The AdamW moments of the checkpoint at path, whose optimizer_key is
 * key: from PATH.optim or PATH.optim.prev, whichever holds the same key
 * (see save_checkpoint), never from a path the file names. */
static int load_moments(Trainer *t, const char *path, const char *key)
{
  const LmcModel *m = t->m;
  char *cand[2] = { optim_path(path), prev_path(path) };
  const char *why[2] = { "absent", "absent" };
  char err[ERRLEN];
  real *tmp = calloc(m->param_numel, sizeof(real));
  int rc = -1;
  if (!tmp || !cand[0] || !cand[1]) {
    error("out of memory");
    goto done;
  }
  for (int i = 0; i < 2; i++) {
    if (access(cand[i], F_OK) != 0) continue;
    char *k = read_key(cand[i]);
    why[i] = !k ? "unreadable or without a key" : strcmp(k, key) != 0 ? "another save's" : NULL;
    free(k);
    if (why[i]) continue;
    ExtraBlock ex[2] = { { "optimizer.exp_avg.", t->net.exp_avg }, { "optimizer.exp_avg_sq.", t->net.exp_avg_sq } };
    if (ckpt_load(cand[i], m, tmp, ex, 2, NULL, err) < 0)
      fprintf(stderr, "%s\n", err);
    else if (!ex[0].data || !ex[1].data)
      error("%s holds no AdamW moments", cand[i]);
    else
      rc = 0;
    goto done;
  }
  error("%s: its AdamW moments (optimizer_key %s) are in neither %s (%s) nor %s (%s)", path, key, cand[0], why[0],
        cand[1], why[1]);
done:
  free(tmp);
  free(cand[0]);
  free(cand[1]);
  return rc;
}

/* --resume: parameters, lr, epoch, step, best valid loss, AdamW moments.
 * A checkpoint of the other optimizer continues with this one's default lr
 * (unless --lr is given; sgd's 20 would wreck AdamW) and, for AdamW, zero
 * moments, and says so. */
static int resume(Trainer *t, bool lr_given)
{
  const LmcModel *m = t->m;
  const char *path = t->o->resume;
  char err[ERRLEN];
  MetaList meta = { 0 };
  int rc = -1;
  if (ckpt_load(path, m, t->net.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  if (check_vocab(&meta, &t->corpus.dict, path, t->o->data) < 0) goto done;
  double lr = meta_num(&meta, "lr", 0), ep = meta_num(&meta, "epoch", 0), st = meta_num(&meta, "step", 0);
  const char *opt = meta_get(&meta, "optimizer"), *mine = t->o->adamw ? "adamw" : "sgd";
  bool other = opt && strcmp(opt, mine) != 0;
  if (!lr_given && lr > 0 && !other) t->lr = lr;
  t->epoch = ep >= 0 && ep < 1e9 ? (int)ep : 0;
  t->net.train.step = st >= 0 && st < 1e19 ? (uint64_t)st : 0;
  double vl = meta_num(&meta, "valid_loss", NAN);
  if (isfinite(vl)) {
    t->has_best = true;
    t->best = vl;
    t->best_path = path;
  }
  const char *key = meta_get(&meta, "optimizer_key");
  if (other)
    warning("%s was trained with %s (lr %g); continuing with %s at lr %g (%s)%s", path, opt, lr, mine, t->lr,
            lr_given ? "--lr" : "its default", t->o->adamw ? ", the moments from zero" : "");
  else if (t->o->adamw && !key)
    warning("%s holds no AdamW state%s; the moments start from zero", path,
            opt ? " it can pair with (no optimizer_key)" : "");
  else if (t->o->adamw && load_moments(t, path, key) < 0)
    goto done;
  printf("resuming from %s: %d epochs done, %llu steps, lr %g\n", path, t->epoch,
         (unsigned long long)t->net.train.step, t->lr);
  rc = 0;
done:
  meta_free(&meta);
  return rc;
}

static void log_line(Trainer *t, long batch, long nbatch, double loss, double ms, double tps)
{
  out(t, "| epoch %3d | %5ld/%5ld batches | lr %02.2f | ms/batch %5.2f | loss %5.2f | ppl %8.2f | tok/s %.0f\n",
      t->epoch, batch, nbatch, t->lr, ms, loss, exp(loss), tps);
  if (t->csv) {
    fprintf(t->csv, "%d,%ld,%.9g,%.9g,%.9g,%.6g,%.6g\n", t->epoch, batch, t->lr, loss, exp(loss), ms, tps);
    fflush(t->csv);
  }
}

/* One epoch of main.py's train().  0: done, 1: stop requested, -1: error. */
static int train_epoch(Trainer *t)
{
  const LmcModel *m = t->m;
  const TrainOptions *o = t->o;
  LmcCtx *c = &t->net.train;
  const Batches *b = &t->train;
  const int bptt = m->bptt;
  memset(c->state, 0, m->train.state_numel * sizeof(real));
  long nbatch = (long)(b->nrows / (size_t)bptt);   /* as main.py prints it */
  long limit = b->nrows > 1 ? (long)((b->nrows - 2) / (size_t)bptt + 1) : 0;
  if (o->max_batches > 0 && o->max_batches < limit) limit = o->max_batches;
  if (o->dry_run && limit > 1) limit = 1;
  double total_loss = 0, epoch_start = now(), start = epoch_start, last_shown = 0;
  size_t tokens = 0;
  long batch = 0;
  for (size_t i = 0; batch < limit; batch++, i += (size_t)bptt) {
    if (stop_requested) return 1;
    const int32_t *x, *y;
    int T = get_batch(b, i, bptt, &x, &y);
    /* run() writes every gradient (a parameter the loss does not reach
     * gets zeros): no clearing pass over the block first */
    double loss = m->train.run(c, x, y, T);
    if (!isfinite(loss)) {
      clear_progress(t);
      fflush(stdout);
      error("loss is %s at epoch %d batch %ld", isnan(loss) ? "nan" : "inf", t->epoch, batch);
      return -1;
    }
    if (o->adamw) {
      if (o->clip > 0) lmc_clip(m, c->grad, o->clip);
      lmc_adamw(m, c->param, c->grad, t->net.exp_avg, t->net.exp_avg_sq, t->lr, 0.01, (long)c->step + 1);
    } else {
      /* sgd: clip's scale folded into lr, one pass over the gradient less
       * (clip 0 only measures the norm; a NaN norm scales nothing, as
       * before); c->grad then holds the unclipped gradient */
      double lr = t->lr;
      if (o->clip > 0) {
        double scale = o->clip / (lmc_clip(m, c->grad, 0) + 1e-6);   /* as lmc_clip */
        if (scale < 1) lr *= scale;
      }
      lmc_sgd(m, c->param, c->grad, lr);
    }
    c->step++;
    total_loss += loss;
    tokens += (size_t)T * (size_t)b->bsz;
    double tn = now();
    if ((batch % o->log_interval == 0 && batch > 0) || (o->dry_run && batch == limit - 1)) {
      double elapsed = tn - start;
      double k = batch > 0 ? o->log_interval : 1;
      log_line(t, batch, nbatch, total_loss / k, elapsed * 1000 / k, elapsed > 0 ? (double)tokens / elapsed : 0);
      total_loss = 0;
      tokens = 0;
      start = tn;
    } else if (t->tty && tn - last_shown > 0.2) {
      double el = tn - epoch_start;
      char eta[32];
      fmt_duration(el / (double)(batch + 1) * (double)(limit - batch - 1), eta, sizeof eta);
      fprintf(stderr, "\r| epoch %3d | %5ld/%5ld batches | tok/s %.0f | ETA %s\033[K", t->epoch, batch + 1, limit,
              tn > start ? (double)tokens / (tn - start) : 0, eta);
      fflush(stderr);
      t->progress = true;
      last_shown = tn;
    }
  }
  clear_progress(t);
  return 0;
}

static char *temp_path(void)
{
  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  char *s = malloc(strlen(dir) + 64);
  if (s) sprintf(s, "%s/lmc-dry-run-%ld.safetensors", dir, (long)getpid());
  return s;
}

/* The dry run's reload: the file must give back the parameters bit for bit. */
static int check_reload(Trainer *t, const char *path)
{
  const LmcModel *m = t->m;
  char err[ERRLEN];
  real *p = malloc(m->param_numel * sizeof(real));
  MetaList meta = { 0 };
  int rc = -1;
  if (!p)
    error("out of memory");
  else if (ckpt_load(path, m, p, NULL, 0, &meta, err) < 0)
    fprintf(stderr, "%s\n", err);
  else if (memcmp(p, t->net.param, m->param_numel * sizeof(real)) != 0)
    error("%s: the reloaded parameters differ from the saved ones", path);
  else if (check_vocab(&meta, &t->corpus.dict, path, t->o->data) == 0) {
    out(t, "| dry run | saved and reloaded %s (%zu parameters)\n", path, m->param_numel);
    rc = 0;
  }
  free(p);
  meta_free(&meta);
  return rc;
}

/* Whether two paths name one file, existing or not yet. */
static bool same_path(const char *a, const char *b)
{
  return strcmp(a, b) == 0 || outfile_same_file(a, b);
}

/* --log-csv: written line by line as training goes, so it can be watched
 * and a killed run keeps its rows; a resumed run appends to a log that has
 * lines, and a fresh run starts it anew. */
static int open_csv(Trainer *t)
{
  const char *path = t->o->log_csv;
  char err[ERRLEN];
  bool append = false;
  struct stat st;
  if (t->o->resume && lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
    append = true;
  if (!(t->csv = outfile_open_log(path, append, err, sizeof err))) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  if (!append) fprintf(t->csv, "epoch,batch,lr,loss,ppl,ms_per_batch,tokens_per_s\n");
  return 0;
}

int run_train(const LmcModel *m, const TrainOptions *o)
{
  Trainer t = { 0 };
  t.m = m;
  t.o = o;
  t.tty = isatty(STDERR_FILENO);
  t.eval_windows = o->dry_run ? EVAL_DRY_WINDOWS : 0;
  char *tmp = NULL;
  int rc = 1;
  struct sigaction sa = { 0 }, old_int, old_term;
  bool handlers = false;

  if (check_model(m) < 0) return 1;
  if (o->log_interval < 1 || o->epochs < 1 || o->threads < 1) {
    error("log_interval, epochs and threads must be positive");
    return 2;
  }
  t.save = o->save ? o->save : DEFAULT_SAVE;
  if (!*t.save) {
    error("--save: the path is empty");
    return 1;
  }
  if (o->dry_run && !o->save) {
    if (!(tmp = temp_path())) return 1;
    t.save = tmp;
  }
  if (check_save_paths(t.save, o->adamw) < 0) goto done_tmp;
  t.run_id = new_run_id();
  if (o->log_csv) {
    char err[ERRLEN];   /* a mistyped --log-csv fails now, not after the first epoch */
    if (outfile_check(o->log_csv, err, sizeof err) < 0) {
      fprintf(stderr, "%s\n", err);
      goto done_tmp;
    }
    if (same_path(o->log_csv, t.save) || (o->resume && same_path(o->log_csv, o->resume))) {
      error("--log-csv %s: that is the checkpoint's file; the log needs a file of its own", o->log_csv);
      goto done_tmp;
    }
  }
  t.lr = o->lr > 0 ? o->lr : o->adamw ? 0.001 : 20;
  openblas_set_num_threads(o->threads);

  if (load_corpus(m, &t.corpus, o->data) < 0) goto done_tmp;
  batchify(&t.corpus.train, m->train.batch, &t.train);
  batchify(&t.corpus.valid, m->eval.batch, &t.valid);
  batchify(&t.corpus.test, m->eval.batch, &t.test);
  /* from here on the batches are the corpus: the token lists go before the
   * model is allocated (8 MB of peak memory at WikiText-2) */
  tokens_free(&t.corpus.train);
  tokens_free(&t.corpus.valid);
  tokens_free(&t.corpus.test);
  const char *tiny = t.train.nrows < 2 ? "train" : t.valid.nrows < 2 ? "valid" : t.test.nrows < 2 ? "test" : NULL;
  if (tiny) {
    error("%s/%s.txt is too small for batches of %d columns", o->data, tiny,
          tiny[1] == 'r' ? m->train.batch : m->eval.batch);
    goto done_corpus;
  }
  if (net_alloc(&t.net, m, USE_TRAIN | USE_EVAL | (o->adamw ? USE_ADAMW : 0), o->seed, o->threads,
                o->dropout) < 0)
    goto done_corpus;
  init_params(m, t.net.param, o->seed);
  if (o->resume && resume(&t, o->lr > 0) < 0) goto done_net;

  if (o->log_csv && open_csv(&t) < 0) goto done_net;

  stop_requested = 0;
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;   /* a second Ctrl-C kills */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  handlers = true;

  bool stopped = false;
  int first = t.epoch + 1, last = o->dry_run ? first : o->epochs;
  if (first > last)
    out(&t, "| nothing to train: %s is at epoch %d of %d\n", o->resume, t.epoch, o->epochs);
  for (int epoch = first; epoch <= last && !stopped; epoch++) {
    t.epoch = epoch;
    double epoch_start = now();
    int r = train_epoch(&t);
    if (r < 0) goto done_net;
    if (r > 0) {
      stopped = true;
      break;
    }
    double val_loss = evaluate(&t.net.eval, &m->eval, &t.valid, m->bptt, t.eval_windows, NULL);
    rule(&t, '-');
    out(&t, "| end of epoch %3d | time: %5.2fs | valid loss %5.2f | valid ppl %8.2f\n", epoch, now() - epoch_start,
        val_loss, exp(val_loss));
    rule(&t, '-');
    if (!isfinite(val_loss)) {
      error("valid loss is %s after epoch %d", isnan(val_loss) ? "nan" : "inf", epoch);
      goto done_net;
    }
    if (!t.has_best || val_loss < t.best) {
      if (save_checkpoint(&t, t.save, val_loss) < 0) goto done_net;
      t.has_best = true;
      t.best = val_loss;
      t.best_path = t.save;
    } else
      t.lr /= 4.0;
    if (stop_requested) stopped = true;
  }
  if (stopped) {
    rule(&t, '-');
    out(&t, "Exiting from training early\n");
  }

  /* the best model, as main.py reloads it */
  if (t.best_path) {
    if (o->dry_run) {
      if (check_reload(&t, t.best_path) < 0) goto done_net;
    } else {
      char err[ERRLEN];
      MetaList meta = { 0 };
      /* through the gradients and the arena (or AdamW's moments), unused
       * from here on: no second copy of the model in memory at the end of
       * training where they hold it; else through a block of its own */
      int r = ckpt_load_via(t.best_path, m, t.net.param, t.net.spare, NULL, 0, &meta, err);
      meta_free(&meta);
      if (r < 0) {
        fprintf(stderr, "%s\n", err);
        goto done_net;
      }
    }
  } else
    warning("no model was saved; testing the current parameters");
  double test_loss = evaluate(&t.net.eval, &m->eval, &t.test, m->bptt, t.eval_windows, NULL);
  rule(&t, '=');
  out(&t, "| End of training | test loss %5.2f | test ppl %8.2f\n", test_loss, exp(test_loss));
  rule(&t, '=');
  rc = isfinite(test_loss) ? 0 : 1;

done_net:
  if (handlers) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  if (t.csv && (ferror(t.csv) | fclose(t.csv))) {
    error("%s: cannot write: %s", o->log_csv, strerror(errno));
    rc = 1;
  }
  net_free(&t.net);
done_corpus:
  batches_free(&t.train);
  batches_free(&t.valid);
  batches_free(&t.test);
  corpus_free(&t.corpus);
done_tmp:
  if (tmp) {
    char *op = optim_path(tmp), *pp = prev_path(tmp);
    remove(tmp);
    if (op) remove(op);
    if (pp) remove(pp);
    free(op);
    free(pp);
    free(tmp);
  }
  return rc;
}

/* -------------------------------------------------------------- eval */

int run_eval(const LmcModel *m, const char *checkpoint, const char *data, const char *split, bool json,
             int threads)
{
  if (check_model(m) < 0) return 1;
  if (strcmp(split, "valid") != 0 && strcmp(split, "test") != 0) {
    error("--split: expected 'valid' or 'test', got '%s'", split);
    return 2;
  }
  if (threads < 1) {
    error("threads must be positive");
    return 2;
  }
  openblas_set_num_threads(threads);
  Corpus c;
  if (load_corpus(m, &c, data) < 0) return 1;
  int rc = 1;
  Net n;
  Batches b = { 0 };
  MetaList meta = { 0 };
  char err[ERRLEN];
  if (net_alloc(&n, m, USE_EVAL, 0, threads, 0) < 0) goto done_corpus;
  /* straight into the parameters: on failure we stop */
  if (ckpt_load_via(checkpoint, m, n.param, n.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  if (check_vocab(&meta, &c.dict, checkpoint, data) < 0) goto done;
  batchify(split[0] == 'v' ? &c.valid : &c.test, m->eval.batch, &b);
  if (b.nrows < 2) {
    error("%s/%s.txt is too small for batches of %d columns", data, split, m->eval.batch);
    goto done;
  }
  size_t ntok;
  double t0 = now();
  double loss = evaluate(&n.eval, &m->eval, &b, m->bptt, 0, &ntok), ppl = exp(loss);
  double seconds = now() - t0;   /* the evaluation loop alone, for benchmarks */
  if (json) {
    char l[32] = "null", p[32] = "null";
    if (isfinite(loss)) snprintf(l, sizeof l, "%.17g", loss);
    if (isfinite(ppl)) snprintf(p, sizeof p, "%.17g", ppl);
    printf("{\"loss\": %s, \"ppl\": %s, \"tokens\": %zu, \"seconds\": %.6f}\n", l, p, ntok, seconds);
  } else
    printf("| %s loss %5.2f | %s ppl %8.2f\n", split, loss, split, ppl);
  fflush(stdout);
  if (!isfinite(loss)) error("%s loss is %s", split, isnan(loss) ? "nan" : "inf");
  else rc = 0;
done:
  batches_free(&b);
  meta_free(&meta);
  net_free(&n);
done_corpus:
  corpus_free(&c);
  return rc;
}

/* ---------------------------------------------------------- generate */

/* The vocabulary for generate: the checkpoint's, or data/wikitext-2's for a
 * state_dict saved without one. */
static int gen_vocab(const LmcModel *m, const MetaList *meta, const char *ckpt, Dict *d)
{
  int have = vocab_from_meta(meta, d);
  if (have < 0) {
    error("%s: the vocabulary in the metadata repeats a word", ckpt);
    dict_free(d);
    return -1;
  }
  if (!have) {
    const char *dir = "data/wikitext-2";
    Corpus c;
    warning("%s holds no vocabulary; using %s's", ckpt, dir);
    if (load_corpus(m, &c, dir) < 0) return -1;
    *d = c.dict;
    dict_init(&c.dict);
    corpus_free(&c);
  }
  if (d->nword != m->ntoken) {
    error("%s has a vocabulary of %d words, this trainer was compiled for %d", ckpt, d->nword, m->ntoken);
    dict_free(d);
    return -1;
  }
  const char *h = meta_get(meta, "vocab_hash");
  char mine[17];
  hash_hex(dict_hash(d), mine);
  if (have && h && strcmp(h, mine) != 0) {
    error("%s: the vocabulary does not match its hash (%s, computed %s)", ckpt, h, mine);
    dict_free(d);
    return -1;
  }
  return 0;
}

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
        error("%s: %s holds %s at element %zu: the weights are not finite", ckpt, d->name,
              isnan(param[d->offset + k]) ? "nan" : "inf", k);
        return -1;
      }
  }
  return 0;
}

int run_generate(const LmcModel *m, const char *checkpoint, int words, double temperature, uint64_t seed,
                 const char *prompt, const char *outf, int threads)
{
  if (check_model(m) < 0) return 1;
  if (!(temperature >= 1e-3) || words < 0 || threads < 1) {
    error("--temperature must be at least 1e-3, --words non-negative and --threads positive");
    return 2;
  }
  bool to_stdout = strcmp(outf, "-") == 0;
  char err[ERRLEN];
  if (!to_stdout && outfile_check(outf, err, sizeof err) < 0) {   /* before the checkpoint is read */
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (!to_stdout && same_path(outf, checkpoint)) {
    error("--outf %s: that is the checkpoint; the text needs a file of its own", outf);
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
  if (net_alloc(&n, m, USE_GEN, seed, threads, 0) < 0) return 1;
  /* straight into the parameters: on failure we stop */
  if (ckpt_load_via(checkpoint, m, n.param, n.param, NULL, 0, &meta, err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  }
  if (check_finite(m, n.param, checkpoint) < 0) goto done;
  if (gen_vocab(m, &meta, checkpoint, &d) < 0) goto done;

  /* history: the prompt (or one random word), then what we generate */
  size_t plen = 0, cap = 16;
  if (prompt)
    for (const char *p = prompt; *p;) {
      while (*p && strchr(" \t\n\r\v\f", *p)) p++;
      if (*p) plen++;
      while (*p && !strchr(" \t\n\r\v\f", *p)) p++;
    }
  cap += plen + (size_t)words;
  hist = malloc(cap * sizeof *hist);
  w = malloc((size_t)m->ntoken * sizeof *w);
  if (!hist || !w) {
    error("out of memory");
    goto done;
  }
  Rng r = rng_new(seed, 0x67656e);   /* "gen" */
  size_t len = 0;
  if (plen) {
    int unk = dict_find(&d, "<unk>");
    for (const char *p = prompt; *p;) {
      while (*p && strchr(" \t\n\r\v\f", *p)) p++;
      const char *s = p;
      while (*p && !strchr(" \t\n\r\v\f", *p)) p++;
      if (p == s) break;
      char word[256];
      size_t k = (size_t)(p - s) < sizeof word - 1 ? (size_t)(p - s) : sizeof word - 1;
      memcpy(word, s, k);
      word[k] = '\0';
      int id = dict_find(&d, word);
      if (id < 0) {
        if (unk < 0) {
          error("--prompt: '%s' is not in the vocabulary, which has no <unk>", word);
          goto done;
        }
        warning("--prompt: '%s' is not in the vocabulary; using <unk>", word);
        id = unk;
      }
      hist[len++] = id;
    }
  } else
    hist[len++] = (int32_t)(rng_next(&r) % (uint64_t)m->ntoken);   /* torch.randint(ntokens, (1, 1)) */

  if (to_stdout) f = stdout;
  else if (outfile_open(&of, outf, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto done;
  } else
    f = of.f;
  const real *logp = gen_feed(&n.gen, &m->gen, hist, len, len);
  for (int i = 0; i < words; i++) {
    int idx = sample_word(logp, m->ntoken, temperature, rng_uniform(&r), w);
    fputs(d.word[idx], f);
    fputc(i % 20 == 19 ? '\n' : ' ', f);
    if (i % GEN_LOG_INTERVAL == 0) fprintf(stderr, "| Generated %d/%d words\n", i, words);
    hist[len++] = idx;
    if (i + 1 < words) logp = gen_feed(&n.gen, &m->gen, hist, len, 1);
  }
  if (to_stdout ? fflush(f) != 0 || ferror(f) : outfile_commit(&of, false, err, sizeof err) < 0) {
    if (to_stdout) {
      error("cannot write standard output: %s", strerror(errno));
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
  for (int i = 0; i < m->ndropout; i++)
    printf("dropout       %s = %g%s\n", m->dropout[i].name, m->dropout[i].value,
           strcmp(m->dropout[i].name, "dropout") ? "" : " (run time: --dropout)");
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
