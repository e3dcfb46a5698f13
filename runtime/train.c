/*
 * train.c: main.py's training loop, driving the train and eval programs of
 * an emitted LmcModel over one Net (model.c), and the checkpoints it saves
 * and resumes from.
 *
 * The loop follows main.py where numbers or printed lines depend on it:
 *   - each epoch starts from a zero hidden state, carried (detached) from
 *     window to window; windows are get_batch(train, i) for i in
 *     range(0, nrows - 1, bptt), the last one shorter;
 *   - each step minimises the graph's objective and logs its loss (they
 *     differ when the graph declares an objective with regularisers);
 *   - after each step: clip the global gradient norm, sgd or adamw, then
 *     ctx.step++ (the dropout key); sgd takes the clip as a smaller lr;
 *   - a log line every log_interval batches (at batch % interval == 0,
 *     batch > 0, the loss summed since the last line divided by the
 *     interval, quirks included), tok/s appended;
 *   - after each epoch, evaluate() on valid (eval.c);
 *   - save on a new best validation loss, else lr /= 4; at the end (or on
 *     Ctrl-C / SIGTERM, noticed between batches) reload the best model and
 *     report test loss.
 *
 * Checkpoints hold the model's state_dict, loadable by torch with
 * strict=True, and metadata: format_version, kind, every compiled
 * hyper-parameter (a dropout slot's as training ran it), vocab (words joined by '\n' in id order), vocab_size,
 * vocab_hash, seed, lmc_version, lmc_flags, and for --resume lr, epoch,
 * step, optimizer, valid_loss.  AdamW's moments live in a companion file
 * FILE.optim so that the model file stays a plain state_dict; how the two
 * stay a pair through a kill at any moment is told at save_checkpoint.
 *
 * Under mpirun (dist.c) each rank trains its own columns of the global
 * batch (batchify_slice), with those columns' dropout masks (LmcCtx.col0,
 * col_rest), and steps with the mean gradient of all ranks (reduced while
 * run() goes on, from c->grad_ready); losses are means over the ranks; the
 * log line adds the share of the time spent in MPI; the ranks' parameters
 * are compared every --check-every steps and after each epoch; rank 0
 * alone prints, saves (the metadata of one process at the global batch)
 * and reads a --resume checkpoint, whose contents it broadcasts.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

enum { EVAL_DRY_WINDOWS = 3 };
#define DEFAULT_SAVE "model.safetensors"
#define FORMAT_VERSION "1"

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
  DistGrad *dg;          /* NULL in one process */
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
  char *tmp;             /* the dry run's --save, removed at the end, or NULL */
  bool handlers;         /* on_signal installed, the old handlers in old_int, old_term */
  struct sigaction old_int, old_term;
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
  if (dist_rank() != 0) return;
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

/* v in the fewest digits that read back as v ("0.3", not 0.29999999999999999). */
static void set_shortest(MetaList *l, const char *key, double v)
{
  char buf[32];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  meta_set(l, key, buf);
}

/* What every checkpoint says about the model and its vocabulary; a
 * dropout slot's key holds the probability training ran with (dropout,
 * as --dropout set it), the compiled text when that is unchanged.  Under
 * mpirun the batches are the global ones, as one process at the global
 * batch writes them (lmc_flags still says how this trainer was built). */
static void meta_model(MetaList *l, const LmcModel *m, const double *dropout, const Dict *d, uint64_t seed)
{
  meta_set(l, "format_version", FORMAT_VERSION);
  meta_set(l, "kind", m->kind);
  for (int i = 0; i < m->nhyper; i++) meta_set(l, m->hyper[i][0], m->hyper[i][1]);
  if (dist_size() > 1) {
    setf(l, "batch_size", "%d", m->train.batch * dist_size());
    setf(l, "eval_batch_size", "%d", m->eval.batch * dist_size());
  }
  for (int i = 0; i < m->ndropout; i++)
    if (dropout[i] != m->dropout[i].value) set_shortest(l, m->dropout[i].name, dropout[i]);
  setf(l, "ntoken", "%d", m->ntoken);
  setf(l, "bptt", "%d", m->bptt);
  char *v = vocab_join(d);
  meta_set(l, "vocab", v);
  free(v);
  setf(l, "vocab_size", "%d", d->nword);
  char h[17];
  vocab_hash_hex(d, h);
  meta_set(l, "vocab_hash", h);
  setf(l, "seed", "%llu", (unsigned long long)seed);
  meta_set(l, "lmc_version", m->version);
  meta_set(l, "lmc_flags", m->flags);
}

static char *optim_path(const char *path)
{
  return rt_concat(path, ".optim", "a path");
}

static char *prev_path(const char *path)
{
  return rt_concat(path, ".optim.prev", "a path");
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
    key = rt_strdup(meta_get(&meta, "optimizer_key"), "an optimizer key");
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
      rt_error("%s: cannot rename %s to %s: %s", path, opath, prev, strerror(errno));
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
  meta_model(&meta, m, t->net.dropout, &t->corpus.dict, t->o->seed);
  setf(&meta, "lr", "%.17g", t->lr);
  setf(&meta, "epoch", "%d", t->epoch);
  setf(&meta, "step", "%llu", (unsigned long long)t->net.train.step);
  meta_set(&meta, "optimizer", t->o->adamw ? "adamw" : "sgd");
  setf(&meta, "valid_loss", "%.17g", val_loss);
  setf(&meta, "clip", "%.17g", t->o->clip);
  if (t->o->adamw) {
    opath = optim_path(path);
    prev = prev_path(path);
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
      rt_warning("cannot remove %s: %s", prev, strerror(errno));
  }
  rc = 0;
done:
  if (moved && rename(prev, opath) != 0)
    rt_warning("cannot rename %s back to %s: %s (--resume finds it there)", prev, opath, strerror(errno));
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
    rc = ckpt_check_path(companion[k], err);
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
  real *tmp = rt_calloc(m->param_numel, sizeof(real), "a checkpoint's parameters");
  int rc = -1;
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
      rt_error("%s holds no AdamW moments", cand[i]);
    else
      rc = 0;
    goto done;
  }
  rt_error("%s: its AdamW moments (optimizer_key %s) are in neither %s (%s) nor %s (%s)", path, key, cand[0],
           why[0], cand[1], why[1]);
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
  if (vocab_check(&meta, &t->corpus.dict, path, t->o->data) < 0) goto done;
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
    rt_warning("%s was trained with %s (lr %g); continuing with %s at lr %g (%s)%s", path, opt, lr, mine, t->lr,
               lr_given ? "--lr" : "its default", t->o->adamw ? ", the moments from zero" : "");
  else if (t->o->adamw && !key)
    rt_warning("%s holds no AdamW state%s; the moments start from zero", path,
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

/* The state a --resume gives, from rank 0 to every rank. */
static void share_resume(Trainer *t)
{
  const LmcModel *m = t->m;
  double s[5] = { t->lr, t->epoch, (double)t->net.train.step, t->has_best, t->best };
  dist_bcast(s, sizeof s);
  t->lr = s[0];
  t->epoch = (int)s[1];
  t->net.train.step = (uint64_t)s[2];
  t->has_best = s[3] != 0;
  t->best = s[4];
  t->best_path = t->has_best ? t->o->resume : NULL;
  dist_bcast(t->net.param, m->param_numel * sizeof(real));
  if (t->o->adamw) {
    dist_bcast(t->net.exp_avg, m->param_numel * sizeof(real));
    dist_bcast(t->net.exp_avg_sq, m->param_numel * sizeof(real));
  }
}

/* comm: the share of the time spent in MPI calls, shown with several
 * ranks */
static void log_line(Trainer *t, long batch, long nbatch, double loss, double ms, double tps, double comm)
{
  char share[32] = "", lr[32];
  if (dist_size() > 1) snprintf(share, sizeof share, " | comm %.1f%%", 100 * comm);
  /* main.py's two decimals, which would show AdamW's 1e-3 as 0.00 */
  snprintf(lr, sizeof lr, t->lr >= 0.01 || t->lr == 0 ? "%02.2f" : "%.2e", t->lr);
  out(t, "| epoch %3d | %5ld/%5ld batches | lr %s | ms/batch %5.2f | loss %5.2f | ppl %8.2f | tok/s %.0f%s\n",
      t->epoch, batch, nbatch, lr, ms, loss, exp(loss), tps, share);
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
  double total_loss = 0, epoch_start = rt_now(), start = epoch_start, last_shown = 0;
  double comm_start = dist_comm_seconds();
  size_t tokens = 0;
  long batch = 0;
  for (size_t i = 0; batch < limit; batch++, i += (size_t)bptt) {
    if (dist_any(stop_requested)) return 1;
    const int32_t *x, *y;
    int T = get_batch(b, i, bptt, &x, &y);
    /* run() writes every gradient (a parameter the loss does not reach
     * gets zeros): no clearing pass over the block first */
    double loss = dist_mean(m->train.run(c, x, y, T));
    double obj = m->has_objective && isfinite(loss) ? dist_mean(c->objective) : loss;
    if (!isfinite(obj)) {
      clear_progress(t);
      fflush(stdout);
      rt_error("%s is %s at epoch %d batch %ld", isfinite(loss) ? "the objective" : "loss", isnan(obj) ? "nan" : "inf",
               t->epoch, batch);
      return -1;
    }
    const LmcModel *om = m;   /* the optimizer's view: the mean gradient with several ranks */
    real *g = c->grad;
    dist_grad_mean(t->dg, c, &om, &g);
    if (o->adamw) {
      if (o->clip > 0) lmc_clip(om, g, o->clip);
      lmc_adamw(om, c->param, c->param16, g, t->net.exp_avg, t->net.exp_avg_sq, t->lr, 0.01, (long)c->step + 1);
    } else {
      /* sgd: clip's scale folded into lr, one pass over the gradient less
       * (clip 0 only measures the norm; a NaN norm scales nothing, as
       * before); c->grad then holds the unclipped gradient */
      double lr = t->lr;
      if (o->clip > 0) {
        double scale = o->clip / (lmc_clip(om, g, 0) + 1e-6);   /* as lmc_clip */
        if (scale < 1) lr *= scale;
      }
      lmc_sgd(om, c->param, c->param16, g, lr);
    }
    c->step++;
    if (o->check_every > 0 && c->step % (uint64_t)o->check_every == 0 &&
        dist_check_same(c->param, m->param_numel, c->step) < 0)
      return -1;
    total_loss += loss;
    tokens += (size_t)T * (size_t)b->bsz * (size_t)dist_size();
    double tn = rt_now();
    if ((batch % o->log_interval == 0 && batch > 0) || (o->dry_run && batch == limit - 1)) {
      double elapsed = tn - start;
      double k = batch > 0 ? o->log_interval : 1;
      double comm = dist_comm_seconds();
      log_line(t, batch, nbatch, total_loss / k, elapsed * 1000 / k, elapsed > 0 ? (double)tokens / elapsed : 0,
               elapsed > 0 ? (comm - comm_start) / elapsed : 0);
      total_loss = 0;
      tokens = 0;
      start = tn;
      comm_start = comm;
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
  char *s = rt_malloc(strlen(dir) + 64, "a path");
  sprintf(s, "%s/lmc-dry-run-%ld.safetensors", dir, (long)getpid());
  return s;
}

/* The dry run's reload: the file must give back the parameters bit for bit. */
static int check_reload(Trainer *t, const char *path)
{
  const LmcModel *m = t->m;
  char err[ERRLEN];
  real *p = rt_malloc(m->param_numel * sizeof(real), "the reloaded parameters");
  MetaList meta = { 0 };
  int rc = -1;
  if (ckpt_load(path, m, p, NULL, 0, &meta, err) < 0)
    fprintf(stderr, "%s\n", err);
  else if (memcmp(p, t->net.param, m->param_numel * sizeof(real)) != 0)
    rt_error("%s: the reloaded parameters differ from the saved ones", path);
  else if (vocab_check(&meta, &t->corpus.dict, path, t->o->data) == 0) {
    out(t, "| dry run | saved and reloaded %s (%zu parameters)\n", path, m->param_numel);
    rc = 0;
  }
  free(p);
  meta_free(&meta);
  return rc;
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

/* The options, and every path training will write, before any work:
 * 0, or the exit status. */
static int check_options(Trainer *t)
{
  const LmcModel *m = t->m;
  const TrainOptions *o = t->o;
  if (model_check(m) < 0) return 1;
  if (o->log_interval < 1 || o->epochs < 1 || o->threads < 1) {
    rt_error("log_interval, epochs and threads must be positive");
    return 2;
  }
  t->save = o->save ? o->save : DEFAULT_SAVE;
  if (!*t->save) {
    rt_error("--save: the path is empty");
    return 1;
  }
  if (dist_rank() != 0) return 0;   /* rank 0 alone writes files */
  if (o->dry_run && !o->save)
    t->save = t->tmp = temp_path();
  if (check_save_paths(t->save, o->adamw) < 0) return 1;
  t->run_id = new_run_id();
  if (o->log_csv) {
    char err[ERRLEN];   /* a mistyped --log-csv fails now, not after the first epoch */
    if (outfile_check(o->log_csv, err, sizeof err) < 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    if (rt_same_path(o->log_csv, t->save) || (o->resume && rt_same_path(o->log_csv, o->resume))) {
      rt_error("--log-csv %s: that is the checkpoint's file; the log needs a file of its own", o->log_csv);
      return 1;
    }
  }
  return 0;
}

/* The corpus as batches, the model initialised or resumed, the log open. */
static int prepare(Trainer *t)
{
  const LmcModel *m = t->m;
  const TrainOptions *o = t->o;
  t->lr = o->lr > 0 ? o->lr : o->adamw ? 0.001 : 20;
  openblas_set_num_threads(o->threads);

  if (vocab_load_corpus(m, &t->corpus, o->data) < 0) return -1;
  int rank = dist_rank(), nrank = dist_size();
  batchify_slice(&t->corpus.train, m->train.batch, rank, nrank, &t->train);
  batchify_slice(&t->corpus.valid, m->eval.batch, rank, nrank, &t->valid);
  batchify_slice(&t->corpus.test, m->eval.batch, rank, nrank, &t->test);
  /* from here on the batches are the corpus: the token lists go before the
   * model is allocated (8 MB of peak memory at WikiText-2) */
  tokens_free(&t->corpus.train);
  tokens_free(&t->corpus.valid);
  tokens_free(&t->corpus.test);
  const char *tiny = t->train.nrows < 2   ? "train"
                     : t->valid.nrows < 2 ? "valid"
                     : t->test.nrows < 2  ? "test"
                                          : NULL;
  if (tiny) {
    rt_error("%s/%s.txt is too small for batches of %d columns", o->data, tiny,
             (tiny[1] == 'r' ? m->train.batch : m->eval.batch) * nrank);
    return -1;
  }
  int use = USE_TRAIN | USE_EVAL | (o->adamw ? USE_ADAMW : 0) | net_precision(o->bf16);
  if (net_alloc(&t->net, m, use, o->seed, o->threads, o->dropout, o->ndropout) < 0) return -1;
  init_params(m, t->net.param, o->seed);
  /* the masks of columns [rank * B, (rank + 1) * B) of the global batch */
  t->net.train.col0 = (long)rank * m->train.batch;
  t->net.train.col_rest = (long)(nrank - 1) * m->train.batch;
  if (dist_grad_init(&t->dg, &t->net.train) < 0) return -1;
  if (o->resume && rank == 0 && resume(t, o->lr > 0) < 0) return -1;
  if (o->resume) share_resume(t);
  else dist_bcast(t->net.param, m->param_numel * sizeof(real));   /* every rank starts from rank 0's, as DDP does */
  net_round16(&t->net, m);   /* from here on the optimizer keeps it */
  if (o->log_csv && rank == 0 && open_csv(t) < 0) return -1;
  if (nrank > 1)
    out(t, "| data parallel | %d ranks | global batch %d (%d per rank)\n", nrank, m->train.batch * nrank,
        m->train.batch);
  return 0;
}

/* main.py's epochs, each followed by evaluate() on valid and a save of a
 * new best; Ctrl-C or SIGTERM ends them between batches. */
static int run_epochs(Trainer *t)
{
  const LmcModel *m = t->m;
  const TrainOptions *o = t->o;
  struct sigaction sa = { 0 };
  stop_requested = 0;
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;   /* a second Ctrl-C kills */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &t->old_int);
  sigaction(SIGTERM, &sa, &t->old_term);
  t->handlers = true;

  bool stopped = false;
  int first = t->epoch + 1, last = o->dry_run ? first : o->epochs;
  if (first > last)
    out(t, "| nothing to train: %s is at epoch %d of %d\n", o->resume, t->epoch, o->epochs);
  for (int epoch = first; epoch <= last && !stopped; epoch++) {
    t->epoch = epoch;
    double epoch_start = rt_now();
    int r = train_epoch(t);
    if (r < 0) return -1;
    if (r > 0) {
      stopped = true;
      break;
    }
    double val_loss = dist_mean(eval_loss(&t->net.eval, &m->eval, &t->valid, m->bptt, t->eval_windows, NULL));
    rule(t, '-');
    out(t, "| end of epoch %3d | time: %5.2fs | valid loss %5.2f | valid ppl %8.2f\n", epoch,
        rt_now() - epoch_start, val_loss, exp(val_loss));
    rule(t, '-');
    if (!isfinite(val_loss)) {
      rt_error("valid loss is %s after epoch %d", isnan(val_loss) ? "nan" : "inf", epoch);
      return -1;
    }
    if (dist_check_same(t->net.param, m->param_numel, t->net.train.step) < 0) return -1;
    if (!t->has_best || val_loss < t->best) {
      if (dist_rank() == 0 && save_checkpoint(t, t->save, val_loss) < 0) return -1;
      t->has_best = true;
      t->best = val_loss;
      t->best_path = t->save;
    } else
      t->lr /= 4.0;
    if (dist_any(stop_requested)) stopped = true;
  }
  if (stopped) {
    rule(t, '-');
    out(t, "Exiting from training early\n");
  }
  return 0;
}

/* Rank 0's reload of the best model, as main.py does: 0, or the exit status. */
static int reload_best(Trainer *t)
{
  if (t->o->dry_run) return check_reload(t, t->best_path) < 0;
  char err[ERRLEN];
  MetaList meta = { 0 };
  /* through the gradients and the arena (or AdamW's moments), unused
   * from here on: no second copy of the model in memory at the end of
   * training where they hold it; else through a block of its own */
  int r = ckpt_load_via(t->best_path, t->m, t->net.param, t->net.spare, NULL, 0, &meta, err);
  meta_free(&meta);
  if (r < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  return 0;
}

/* The best model reloaded and its test loss: the exit status. */
static int test_best(Trainer *t)
{
  const LmcModel *m = t->m;
  if (t->best_path) {
    if (dist_rank() == 0 && reload_best(t) != 0) return 1;
    if (!t->o->dry_run) dist_bcast(t->net.param, m->param_numel * sizeof(real));
    net_round16(&t->net, m);
  } else if (dist_rank() == 0)
    rt_warning("no model was saved; testing the current parameters");
  double test_loss = dist_mean(eval_loss(&t->net.eval, &m->eval, &t->test, m->bptt, t->eval_windows, NULL));
  rule(t, '=');
  out(t, "| End of training | test loss %5.2f | test ppl %8.2f\n", test_loss, exp(test_loss));
  rule(t, '=');
  return isfinite(test_loss) ? 0 : 1;
}

/* Everything run_train holds, let go; returns rc, or 1 when the log could
 * not be written. */
static int trainer_end(Trainer *t, int rc)
{
  if (t->handlers) {
    sigaction(SIGINT, &t->old_int, NULL);
    sigaction(SIGTERM, &t->old_term, NULL);
  }
  if (t->csv && (ferror(t->csv) | fclose(t->csv))) {
    rt_error("%s: cannot write: %s", t->o->log_csv, strerror(errno));
    rc = 1;
  }
  net_free(&t->net);
  dist_grad_free(t->dg);
  batches_free(&t->train);
  batches_free(&t->valid);
  batches_free(&t->test);
  corpus_free(&t->corpus);
  if (t->tmp) {
    char *op = optim_path(t->tmp), *pp = prev_path(t->tmp);
    remove(t->tmp);
    remove(op);
    remove(pp);
    free(op);
    free(pp);
    free(t->tmp);
  }
  return rc;
}

int run_train(const LmcModel *m, const TrainOptions *o)
{
  dist_begin();
  Trainer t = { .m = m, .o = o, .tty = isatty(STDERR_FILENO) && dist_rank() == 0,
                .eval_windows = o->dry_run ? EVAL_DRY_WINDOWS : 0 };
  int rc = check_options(&t);
  if (rc == 0)
    rc = prepare(&t) < 0 || run_epochs(&t) < 0 ? 1 : test_best(&t);
  return dist_end(trainer_end(&t, rc));
}
