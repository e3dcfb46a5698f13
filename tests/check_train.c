/*
 * check_train.c: the runtime's training loop, evaluation, generation and
 * command line, against the bigram model of tests/fake_model.c on the tiny
 * corpus in tests/data/tiny_train (22 words with <eos> and <unk>).
 *
 * run_train, run_eval and run_generate are called directly, with stdout
 * and stderr captured to files, so the fake model's hooks (how often the
 * state was found zeroed, the step counter, ...) can be read; the command
 * line is tested through FAKE_TRAINER, the same model linked with main.o.
 */
#define _DEFAULT_SOURCE   /* mknod, S_IFCHR */
#include <regex.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "rt.h"
#include "testutil.h"

#ifndef FAKE_TRAINER
#define FAKE_TRAINER "build/tests/fake_trainer"
#endif
#define DATA "tests/data/tiny_train"

extern long fake_calls[3], fake_fresh[3];
extern int fake_last_T[3], fake_max_T[3];
extern uint64_t fake_last_step;
extern double fake_last_dropout[2];
extern long fake_nan_at, fake_signal_at;
extern double fake_eval_penalty[16];
extern int fake_eval_nan;
extern double fake_objective_extra;
extern const LmcModel fake_window_model;

/* ------------------------------------------------------------ helpers */

static char tmpdir[256];
/* tmp()'s strings, freed by teardown */
static char *tmps[256];
static int ntmps;


static void fake_reset(void)
{
  memset(fake_calls, 0, sizeof fake_calls);
  memset(fake_fresh, 0, sizeof fake_fresh);
  memset(fake_max_T, 0, sizeof fake_max_T);
  memset(fake_eval_penalty, 0, sizeof fake_eval_penalty);
  fake_nan_at = fake_signal_at = -1;
  fake_eval_nan = 0;
  fake_objective_extra = 0;
}

static void setup(void)
{
  snprintf(tmpdir, sizeof tmpdir, "/tmp/check_train.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  fake_reset();
}

static void teardown(void)
{
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
  while (ntmps > 0) free(tmps[--ntmps]);
}

/* tmpdir/name, valid until teardown */
static const char *tmp(const char *name)
{
  for (int i = 0; i < ntmps; i++)
    if (strcmp(tmps[i] + strlen(tmpdir) + 1, name) == 0) return tmps[i];
  ck_assert_int_lt(ntmps, 256);
  char *s = malloc(strlen(tmpdir) + strlen(name) + 2);
  sprintf(s, "%s/%s", tmpdir, name);
  return tmps[ntmps++] = s;
}

static char *slurp(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *s = malloc(cap);
  for (size_t k; (k = fread(s + n, 1, cap - n - 1, f)) > 0;) {
    n += k;
    if (n + 1 == cap) s = realloc(s, cap *= 2);
  }
  s[n] = '\0';
  fclose(f);
  return s;
}

static void spit(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

/* stdout and stderr of direct calls, into out.txt and err.txt of tmpdir */
static int saved_fd[2];
static char *out_text, *err_text;

static void capture(void)
{
  fflush(stdout);
  fflush(stderr);
  saved_fd[0] = dup(1);
  saved_fd[1] = dup(2);
  FILE *o = fopen(tmp("out.txt"), "w"), *e = fopen(tmp("err.txt"), "w");
  dup2(fileno(o), 1);
  dup2(fileno(e), 2);
  fclose(o);
  fclose(e);
}

static void release(void)
{
  fflush(stdout);
  fflush(stderr);
  dup2(saved_fd[0], 1);
  dup2(saved_fd[1], 2);
  close(saved_fd[0]);
  close(saved_fd[1]);
  free(out_text);
  free(err_text);
  out_text = slurp(tmp("out.txt"));
  err_text = slurp(tmp("err.txt"));
}

/* FAKE_TRAINER with arguments (a shell string); its exit status, output in
 * out_text and err_text. */
static int trainer(const char *fmt, ...)
{
  char args[2048], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "%s %s >'%s' 2>'%s' </dev/null", FAKE_TRAINER, args, tmp("out.txt"), tmp("err.txt"));
  int st = system(cmd);
  free(out_text);
  free(err_text);
  out_text = slurp(tmp("out.txt"));
  err_text = slurp(tmp("err.txt"));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static TrainOptions options(int epochs)
{
  return (TrainOptions){
    .data = DATA, .lr = 0, .clip = 0.25, .epochs = epochs, .seed = 1111,
    .log_interval = 40, .save = tmp("model.safetensors"), .threads = 1,
  };
}

static int train(const TrainOptions *o)
{
  capture();
  int rc = run_train(&lmc_model, o);
  release();
  return rc;
}

/* Windows per epoch of the tiny corpus's training data, and its rows. */
static long train_windows(size_t *nrows)
{
  Corpus c;
  char err[ERRLEN];
  ck_assert_msg(corpus_load(&c, DATA, err) == 0, "%s", err);
  ck_assert_int_eq(c.dict.nword, lmc_model.ntoken);
  size_t n = c.train.n / (size_t)lmc_model.train.batch;
  corpus_free(&c);
  if (nrows) *nrows = n;
  return (long)((n - 2) / (size_t)lmc_model.bptt + 1);
}

static size_t split_rows(char which)
{
  Corpus c;
  char err[ERRLEN];
  ck_assert_msg(corpus_load(&c, DATA, err) == 0, "%s", err);
  size_t n = (which == 'v' ? c.valid.n : c.test.n) / (size_t)lmc_model.eval.batch;
  corpus_free(&c);
  return n;
}

/* The number after `key` in the last line of text holding it. */
static double number_after(const char *text, const char *key)
{
  const char *p = NULL;
  for (const char *q = text; (q = strstr(q, key)); q++) p = q;
  ck_assert_msg(p != NULL, "no '%s' in:\n%s", key, text);
  return strtod(p + strlen(key), NULL);
}

static int count(const char *text, const char *needle)
{
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static bool matches(const char *line, const char *re)
{
  regex_t r;
  ck_assert_int_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
  bool ok = regexec(&r, line, 0, NULL, 0) == 0;
  regfree(&r);
  return ok;
}

static MetaList load_meta(const char *path, real *param)
{
  MetaList meta = { 0 };
  real scratch[22 * 22 + 22];
  char err[ERRLEN];
  ck_assert_msg(ckpt_load(path, &lmc_model, param ? param : scratch, NULL, 0, &meta, err) == 0, "%s", err);
  return meta;
}

/* -------------------------------------------------------------- train */

START_TEST(test_train_lowers_loss)
{
  size_t nrows;
  long nb = train_windows(&nrows);
  TrainOptions o = options(3);
  o.lr = 5;   /* 20 overshoots on a bigram table */
  ck_assert_int_eq(train(&o), 0);
  double test_loss = number_after(out_text, "| End of training | test loss");
  printf("tiny corpus: test loss %.2f after 3 epochs (uniform: %.2f, bound 0.90)\n", test_loss, log(22.0));
  ck_assert_double_lt(test_loss, 0.9);
  /* the valid loss goes down epoch by epoch on this easy corpus */
  ck_assert_int_eq(count(out_text, "| end of epoch"), 3);
  /* every window, in order, the last one shorter; the state zeroed once
   * per epoch (then carried) and once per evaluation */
  ck_assert_int_eq(fake_calls[0], 3 * nb);
  ck_assert_int_eq(fake_fresh[0], 3);
  ck_assert_int_eq(fake_fresh[1], 3 + 1);
  ck_assert_int_eq(fake_max_T[0], lmc_model.bptt);
  ck_assert_int_eq(fake_last_T[0], (int)((nrows - 1) % 8 ? (nrows - 1) % 8 : 8));
  ck_assert_uint_eq(fake_last_step, (uint64_t)(3 * nb - 1));
  ck_assert_double_eq(fake_last_dropout[0], 0.2);   /* the compiled defaults */
  ck_assert_double_eq(fake_last_dropout[1], 0.25);
  MetaList meta = load_meta(o.save, NULL);
  ck_assert_int_eq(atoi(meta_get(&meta, "step")), 3 * nb);
  ck_assert_str_eq(meta_get(&meta, "format_version"), "1");
  ck_assert_str_eq(meta_get(&meta, "kind"), "LSTM");
  ck_assert_str_eq(meta_get(&meta, "optimizer"), "sgd");
  ck_assert_str_eq(meta_get(&meta, "nhid"), "22");
  ck_assert_str_eq(meta_get(&meta, "vocab_size"), "22");
  ck_assert_str_eq(meta_get(&meta, "seed"), "1111");
  ck_assert_str_eq(meta_get(&meta, "lmc_version"), "0.0-fake");
  ck_assert_ptr_nonnull(strstr(meta_get(&meta, "vocab"), "the\nsmall\n"));
  meta_free(&meta);
}
END_TEST

START_TEST(test_log_format)
{
  long nb = train_windows(NULL);
  TrainOptions o = options(2);
  o.log_csv = tmp("log.csv");
  ck_assert_int_eq(train(&o), 0);
  const char *log_re = "^\\| epoch +[0-9]+ \\| +[0-9]+/ +[0-9]+ batches \\| lr [0-9]+\\.[0-9]{2} \\| "
                       "ms/batch +[0-9]+\\.[0-9]{2} \\| loss +[0-9]+\\.[0-9]{2} \\| ppl +[0-9]+\\.[0-9]{2} \\| "
                       "tok/s [0-9]+$";
  char head[64];
  int nlog = 0, nend = 0, ndash = 0, neq = 0, nfinal = 0;
  char *text = strdup(out_text);
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, "| epoch ", 8) == 0) {
      ck_assert_msg(matches(line, log_re), "bad log line: '%s'", line);
      nlog++;
    } else if (strncmp(line, "| end of epoch", 14) == 0) {
      ck_assert_msg(matches(line, "^\\| end of epoch +[0-9]+ \\| time: +[0-9]+\\.[0-9]{2}s \\| valid loss +[0-9]+\\.[0-9]{2} "
                                  "\\| valid ppl +[0-9]+\\.[0-9]{2}$"),
                    "bad end-of-epoch line: '%s'", line);
      nend++;
    } else if (line[0] == '-') {
      ck_assert_int_eq(strlen(line), 89);
      ck_assert(strspn(line, "-") == 89);
      ndash++;
    } else if (line[0] == '=') {
      ck_assert(strspn(line, "=") == 89 && strlen(line) == 89);
      neq++;
    } else if (strncmp(line, "| End of training", 17) == 0) {
      ck_assert_msg(matches(line, "^\\| End of training \\| test loss +[0-9]+\\.[0-9]{2} \\| test ppl +[0-9]+\\.[0-9]{2}$"),
                    "bad end line: '%s'", line);
      nfinal++;
    } else
      ck_abort_msg("unexpected line: '%s'", line);
  }
  free(text);
  /* main.py: lines at batch 40, 80, 120 of nrows // bptt; exact widths */
  int per_epoch = (int)((nb - 1) / 40);
  ck_assert_int_eq(nlog, 2 * per_epoch);
  ck_assert_int_eq(nend, 2);
  ck_assert_int_eq(ndash, 4);
  ck_assert_int_eq(neq, 2);
  ck_assert_int_eq(nfinal, 1);
  size_t nrows;
  train_windows(&nrows);
  snprintf(head, sizeof head, "| epoch   1 |    40/%5zu batches | lr 20.00 | ms/batch ", nrows / 8);
  ck_assert_msg(strncmp(out_text, head, strlen(head)) == 0, "first line '%.80s', expected '%s'", out_text, head);
  ck_assert_ptr_nonnull(strstr(out_text, "\n| end of epoch   1 | time: "));
  ck_assert_ptr_nonnull(strstr(out_text, "\n| epoch   2 |    80/"));

  /* the CSV: a header and one row per log line */
  char *csv = slurp(o.log_csv);
  ck_assert_ptr_nonnull(csv);
  ck_assert(strncmp(csv, "epoch,batch,lr,loss,ppl,ms_per_batch,tokens_per_s\n", 50) == 0);
  ck_assert_int_eq(count(csv, "\n"), 1 + nlog);
  int ep, b;
  double lr, loss, ppl, ms, tps;
  ck_assert_int_eq(sscanf(strchr(csv, '\n') + 1, "%d,%d,%lf,%lf,%lf,%lf,%lf", &ep, &b, &lr, &loss, &ppl, &ms, &tps), 7);
  ck_assert_int_eq(ep, 1);
  ck_assert_int_eq(b, 40);
  ck_assert_double_eq(lr, 20);
  ck_assert_double_eq_tol(ppl, exp(loss), 1e-6 * ppl);
  free(csv);
}
END_TEST

START_TEST(test_init_and_seed)
{
  /* one step with a negligible lr leaves the initial parameters */
  TrainOptions o = options(1);
  o.max_batches = 1;
  o.lr = 1e-30;
  ck_assert_int_eq(train(&o), 0);
  real a[22 * 22 + 22], b[22 * 22 + 22];
  MetaList m = load_meta(o.save, a);
  meta_free(&m);
  double bound = sqrt(6.0 / 44), maxw = 0, maxb = 0;
  for (int i = 0; i < 22 * 22; i++) maxw = fmax(maxw, fabs(a[i]));
  for (int i = 0; i < 22; i++) maxb = fmax(maxb, fabs(a[22 * 22 + i]));
  printf("init: max |W| %.4f (xavier bound %.4f), max |b| %.4f (bound 0.1)\n", maxw, bound, maxb);
  ck_assert_double_le(maxw, bound);
  ck_assert_double_gt(maxw, 0.8 * bound);
  ck_assert_double_le(maxb, 0.1);
  ck_assert_double_gt(maxb, 0.05);
  /* same seed, same parameters; another seed, others */
  ck_assert_int_eq(train(&o), 0);
  m = load_meta(o.save, b);
  meta_free(&m);
  ck_assert(memcmp(a, b, sizeof a) == 0);
  o.seed = 1;
  ck_assert_int_eq(train(&o), 0);
  m = load_meta(o.save, b);
  meta_free(&m);
  ck_assert(memcmp(a, b, sizeof a) != 0);
}
END_TEST

/* SGD takes the clip as a smaller lr: one step moves the parameters by
 * lr * clip in norm when the gradient norm is above clip, by lr * norm
 * without clipping. */
START_TEST(test_clip_sgd)
{
  enum { N = 22 * 22 + 22 };
  TrainOptions o = options(1);
  o.max_batches = 1;
  o.lr = 1e-30;
  ck_assert_int_eq(train(&o), 0);
  real a[N], b[N];
  MetaList m = load_meta(o.save, a);
  meta_free(&m);
  double moved[2];
  for (int k = 0; k < 2; k++) {
    o.lr = 2;
    o.clip = k ? 0 : 0.01;
    ck_assert_int_eq(train(&o), 0);
    m = load_meta(o.save, b);
    meta_free(&m);
    double ss = 0;
    for (int i = 0; i < N; i++) ss += ((double)b[i] - a[i]) * ((double)b[i] - a[i]);
    moved[k] = sqrt(ss);
  }
  printf("clip + sgd: a step of lr 2 moves %.6f with clip 0.01 (want 0.02), %.4f without\n", moved[0], moved[1]);
  ck_assert_double_eq_tol(moved[0], 2 * 0.01, 1e-4);
  ck_assert_double_gt(moved[1], 0.1);   /* the gradient's norm is well above 0.01 */
}
END_TEST

START_TEST(test_dropout_option)
{
  TrainOptions o = options(1);
  o.max_batches = 2;
  o.ndropout = 1;
  o.dropout[0] = (DropoutSet){ 0, 0.5 };
  ck_assert_int_eq(train(&o), 0);
  ck_assert_double_eq(fake_last_dropout[0], 0.5);
  ck_assert_double_eq(fake_last_dropout[1], 0.25);   /* another slot keeps its value */
  ck_assert_int_eq(fake_calls[0], 2);
  /* the checkpoint records the probabilities training ran with; an
   * unchanged slot keeps the compiled text */
  MetaList meta = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&meta, "dropout"), "0.5");
  ck_assert_str_eq(meta_get(&meta, "dropouth"), "0.25");
  meta_free(&meta);
  /* through the command line: plain P is the slot named dropout, NAME=P
   * any slot, the last for a slot winning */
  ck_assert_int_eq(trainer("train --data %s --max-batches 2 --epochs 1 --save %s --dropout dropouth=0.7 "
                           "--dropout 0.3 --dropout=dropouth=0.125",
                           DATA, tmp("slots.safetensors")),
                   0);
  meta = load_meta(tmp("slots.safetensors"), NULL);
  ck_assert_str_eq(meta_get(&meta, "dropout"), "0.3");
  ck_assert_str_eq(meta_get(&meta, "dropouth"), "0.125");
  meta_free(&meta);
  ck_assert_int_eq(trainer("info"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "dropout       dropout = 0.2 (run time: --dropout P)\n"));
  ck_assert_ptr_nonnull(strstr(out_text, "dropout       dropouth = 0.25 (run time: --dropout dropouth=P)\n"));
}
END_TEST

START_TEST(test_save_on_best_and_anneal)
{
  /* the second evaluation is made worse: no save, lr / 4 */
  long nb = train_windows(NULL);
  fake_eval_penalty[2] = 5;
  TrainOptions o = options(2);
  ck_assert_int_eq(train(&o), 0);
  MetaList m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "1");
  ck_assert_double_eq(atof(meta_get(&m, "lr")), 20);
  ck_assert_int_eq(atoi(meta_get(&m, "step")), nb);
  meta_free(&m);

  fake_reset();
  fake_eval_penalty[2] = 5;
  o.epochs = 3;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   2 |    40/"));
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   3 |    40/"));
  ck_assert_ptr_nonnull(strstr(strstr(out_text, "| epoch   3 |    40/"), "| lr 5.00 |"));
  m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "3");
  ck_assert_double_eq(atof(meta_get(&m, "lr")), 5);
  ck_assert_int_eq(atoi(meta_get(&m, "step")), 3 * nb);
  meta_free(&m);

  /* the test evaluation uses the best model (epoch 1), not the last one */
  fake_reset();
  fake_eval_penalty[2] = 5;
  o.epochs = 2;
  ck_assert_int_eq(train(&o), 0);
  double end = number_after(out_text, "| End of training | test loss");
  capture();
  ck_assert_int_eq(run_eval(&lmc_model, o.save, DATA, "test", true, 1, false), 0);
  release();
  ck_assert_double_eq_tol(number_after(out_text, "\"loss\":"), end, 0.0051);
}
END_TEST

START_TEST(test_resume_sgd)
{
  long nb = train_windows(NULL);
  /* two epochs straight ... */
  TrainOptions o = options(2);
  ck_assert_int_eq(train(&o), 0);
  real straight[22 * 22 + 22], resumed[22 * 22 + 22];
  MetaList m = load_meta(o.save, straight);
  meta_free(&m);
  /* ... and one, then one more from the checkpoint */
  o.epochs = 1;
  o.save = tmp("one.safetensors");
  ck_assert_int_eq(train(&o), 0);
  fake_reset();
  o.epochs = 2;
  o.resume = tmp("one.safetensors");
  o.save = tmp("two.safetensors");
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_null(strstr(out_text, "| epoch   1 |"));
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   2 |    40/"));
  ck_assert_int_eq(fake_calls[0], nb);
  ck_assert_uint_eq(fake_last_step, (uint64_t)(2 * nb - 1));
  m = load_meta(o.save, resumed);
  ck_assert_str_eq(meta_get(&m, "epoch"), "2");
  meta_free(&m);
  ck_assert_msg(memcmp(straight, resumed, sizeof straight) == 0, "resumed run differs from the straight one");

  /* the saved lr wins over the default, a given --lr over the saved one */
  fake_reset();
  fake_eval_penalty[2] = 5;   /* epoch 2 worse: lr / 4, epoch 3 saved with it */
  o.resume = NULL;
  o.epochs = 3;
  o.save = tmp("annealed.safetensors");
  ck_assert_int_eq(train(&o), 0);
  m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "3");
  ck_assert_str_eq(meta_get(&m, "lr"), "5");
  meta_free(&m);
  o.resume = o.save;
  o.save = tmp("four.safetensors");
  o.epochs = 4;
  fake_reset();
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   4 |    40/"));
  ck_assert_ptr_nonnull(strstr(strstr(out_text, "| epoch   4 |    40/"), "| lr 5.00 |"));
  o.lr = 7;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(strstr(out_text, "| epoch   4 |    40/"), "| lr 7.00 |"));

  /* nothing left to train: straight to the test */
  o.lr = 0;
  o.resume = tmp("two.safetensors");
  o.epochs = 2;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "nothing to train"));
  ck_assert_ptr_nonnull(strstr(out_text, "| End of training |"));
}
END_TEST

START_TEST(test_resume_adamw)
{
  TrainOptions o = options(2);
  o.adamw = true;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "| lr 1.00e-03 |"));   /* main.py's %.2f would print 0.00 */
  real straight[22 * 22 + 22], resumed[22 * 22 + 22];
  MetaList m = load_meta(o.save, straight);
  ck_assert_str_eq(meta_get(&m, "optimizer"), "adamw");
  ck_assert_str_eq(meta_get(&m, "optimizer_state"), "model.safetensors.optim");
  ck_assert_double_eq(atof(meta_get(&m, "lr")), 0.001);
  meta_free(&m);
  /* the model file alone is a plain state_dict: no optimizer tensors */
  char *head = slurp(o.save);
  ck_assert_ptr_null(strstr(head + 8, "exp_avg"));
  free(head);

  o.epochs = 1;
  o.save = tmp("one.safetensors");
  ck_assert_int_eq(train(&o), 0);
  o.epochs = 2;
  o.resume = tmp("one.safetensors");
  o.save = tmp("two.safetensors");
  ck_assert_int_eq(train(&o), 0);
  m = load_meta(o.save, resumed);
  meta_free(&m);
  ck_assert_msg(memcmp(straight, resumed, sizeof straight) == 0, "resumed AdamW run differs from the straight one");

  /* without its moments, an AdamW checkpoint does not resume */
  ck_assert_int_eq(remove(tmp("one.safetensors.optim")), 0);
  ck_assert_int_ne(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "one.safetensors.optim"));
}
END_TEST

START_TEST(test_nan_stops)
{
  long nb = train_windows(NULL);
  TrainOptions o = options(3);
  fake_nan_at = nb + 5;
  ck_assert_int_ne(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "error: loss is nan at epoch 2 batch 5\n"));
  ck_assert_ptr_null(strstr(out_text, "End of training"));
  MetaList m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "1");
  meta_free(&m);
}
END_TEST

/* A model whose objective is more than its loss (has_objective): the log
 * shows the loss; a non-finite objective stops training as a loss would. */
START_TEST(test_objective)
{
  TrainOptions o = options(1);
  o.max_batches = 45;
  LmcModel m = lmc_model;
  m.has_objective = 1;
  fake_objective_extra = 100;
  capture();
  int rc = run_train(&m, &o);
  release();
  ck_assert_int_eq(rc, 0);
  double logged = number_after(out_text, "| loss ");
  ck_assert_double_lt(logged, 10);   /* the loss (ln 22 = 3.09 untrained), not the objective (100 more) */
  fake_reset();
  fake_objective_extra = INFINITY;
  capture();
  rc = run_train(&m, &o);
  release();
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(err_text, "error: the objective is inf at epoch 1 batch 0\n"), "%s", err_text);
  fake_reset();
  fake_objective_extra = INFINITY;   /* ignored by a model without an objective */
  ck_assert_int_eq(train(&o), 0);
}
END_TEST

/* A program compiled from a graph that is not a language model (no kind,
 * no ntoken, no loss) is refused before anything is read, with the reason. */
START_TEST(test_descriptor_checked)
{
  TrainOptions o = options(1);
  LmcModel m = lmc_model;
  m.kind = "";
  capture();
  int rc = run_train(&m, &o);
  release();
  ck_assert_int_eq(rc, 1);
  ck_assert_ptr_nonnull(strstr(err_text, "model descriptor of a graph without kind is inconsistent: no kind or no "
                                         "ntoken: the graph is not a language model"));
  m = lmc_model;
  m.train.has_backward = false;
  capture();
  rc = run_train(&m, &o);
  release();
  ck_assert_int_eq(rc, 1);
  ck_assert_ptr_nonnull(strstr(err_text, "the train program has no backward (the graph has no output loss)"));
  ck_assert_int_eq(fake_calls[0], 0);
}
END_TEST

/* A --save that cannot be written fails before the first batch, with the
 * message the save itself would give, and leaves what is there alone. */
START_TEST(test_save_path_checked)
{
  TrainOptions o = options(1);
  const char *nodir = tmp("no-such-folder/model.safetensors");
  o.save = nodir;
  ck_assert_int_eq(train(&o), 1);
  char want[600];
  snprintf(want, sizeof want, "%s: error: cannot create %s.tmp: No such file or directory\n", nodir, nodir);
  ck_assert_str_eq(err_text, want);
  ck_assert_int_eq(fake_calls[0], 0);
  ck_assert_ptr_null(strstr(out_text, "| epoch"));

  o.save = tmp("");   /* the test's folder */
  ck_assert_int_eq(train(&o), 1);
  snprintf(want, sizeof want, "%s: error: refusing to write %s: it exists and is a folder, not a regular file\n",
           o.save, o.save);
  ck_assert_str_eq(err_text, want);
  ck_assert_int_eq(fake_calls[0], 0);

  /* a stale PATH.tmp of an interrupted save does not stop training, and
   * the save replaces it */
  o = options(1);
  const char *stale = tmp("model.safetensors.tmp");
  FILE *f = fopen(stale, "w");
  ck_assert_ptr_nonnull(f);
  fputs("partial", f);
  fclose(f);
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_gt(fake_calls[0], 0);
  ck_assert_int_eq(access(stale, F_OK), -1);
  MetaList m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "1");
  meta_free(&m);
}
END_TEST

START_TEST(test_interrupt)
{
  long nb = train_windows(NULL);
  TrainOptions o = options(5);
  fake_signal_at = nb + 10;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(fake_calls[0], nb + 11);   /* stopped at the next batch boundary */
  ck_assert_ptr_nonnull(strstr(out_text, "-\nExiting from training early\n"));
  ck_assert_ptr_nonnull(strstr(out_text, "| End of training | test loss"));
  ck_assert_int_eq(count(out_text, "| end of epoch"), 1);
}
END_TEST

START_TEST(test_dry_run)
{
  TrainOptions o = options(40);
  o.dry_run = true;
  o.save = NULL;
  char cwd[1024];
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
  struct stat st;
  bool had = stat("model.safetensors", &st) == 0;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(fake_calls[0], 1);
  ck_assert_int_eq(fake_calls[1], 3 + 3);
  ck_assert_ptr_nonnull(strstr(out_text, "saved and reloaded"));
  ck_assert_ptr_nonnull(strstr(out_text, "| End of training |"));
  ck_assert_int_eq(stat("model.safetensors", &st) == 0, had);   /* a temp file, removed */

  o.save = tmp("dry.safetensors");
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(stat(o.save, &st), 0);
}
END_TEST

/* --------------------------------------------------------------- eval */

START_TEST(test_eval_json)
{
  TrainOptions o = options(1);
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s --json", o.save, DATA), 0);
  ck_assert_int_eq(count(out_text, "\n"), 1);
  double loss, ppl;
  size_t tokens;
  double seconds;
  ck_assert_int_eq(sscanf(out_text, "{\"loss\": %lf, \"ppl\": %lf, \"tokens\": %zu, \"seconds\": %lf}\n", &loss, &ppl,
                          &tokens, &seconds), 4);
  ck_assert(matches(out_text,
                    "^\\{\"loss\": [0-9.e+-]+, \"ppl\": [0-9.e+-]+, \"tokens\": [0-9]+, \"seconds\": [0-9.]+\\}\n$"));
  ck_assert(seconds >= 0 && seconds < 60);
  ck_assert_double_eq_tol(ppl, exp(loss), 1e-12 * ppl);
  ck_assert_uint_eq(tokens, (split_rows('t') - 1) * 2);

  /* the plain line, on valid */
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s --split valid", o.save, DATA), 0);
  ck_assert_msg(matches(out_text, "^\\| valid loss +[0-9]+\\.[0-9]{2} \\| valid ppl +[0-9]+\\.[0-9]{2}\n$"), "'%s'", out_text);

  /* direct, with a broken model: null and a failure */
  fake_eval_nan = 1;
  capture();
  int rc = run_eval(&lmc_model, o.save, DATA, "valid", true, 1, false);
  release();
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strncmp(out_text, "{\"loss\": null, \"ppl\": null, \"tokens\": ", 38) == 0, "'%s'", out_text);
}
END_TEST

START_TEST(test_vocab_mismatch)
{
  /* a corpus with another vocabulary size: say how to recompile */
  ck_assert_int_eq(mkdir(tmp("other"), 0777), 0);
  spit(tmp("other/train.txt"), "a b c\n");
  spit(tmp("other/valid.txt"), "a b\n");
  spit(tmp("other/test.txt"), "a c\n");
  TrainOptions o = options(1);
  o.data = tmp("other");
  ck_assert_int_ne(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "has a vocabulary of 4 words, but this trainer was compiled for 22"));
  ck_assert_ptr_nonnull(strstr(err_text, "make trainer MODEL=lstm DATA="));
  ck_assert_ptr_nonnull(strstr(err_text, "-D ntoken=4"));
  /* one line, its hint not turned into '?' by the message's sanitising */
  ck_assert_ptr_nonnull(strstr(err_text, "compiled for 22; recompile for it: make trainer"));

  /* the same 22 words in another order: a checkpoint does not fit it */
  o = options(1);
  o.max_batches = 1;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(mkdir(tmp("shuffled"), 0777), 0);
  char *t = slurp(DATA "/train.txt");
  size_t n = strlen(t) + 64;
  char *s = malloc(n);
  snprintf(s, n, "cat the\n%s", t);
  spit(tmp("shuffled/train.txt"), s);
  free(s);
  free(t);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "cp " DATA "/valid.txt " DATA "/test.txt '%s'", tmp("shuffled"));
  ck_assert_int_eq(system(cmd), 0);
  capture();
  int rc = run_eval(&lmc_model, o.save, tmp("shuffled"), "valid", false, 1, false);
  release();
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(err_text, "another vocabulary") && strstr(err_text, "word 0 is 'the' there, 'cat' here"), "%s",
                err_text);

  /* a word holding an escape sequence is quoted with its control bytes as '?' */
  ck_assert_int_eq(mkdir(tmp("escape"), 0777), 0);
  snprintf(cmd, sizeof cmd, "for f in train valid test; do sed 's/\\bthe\\b/\\x1b[2J/g' " DATA "/$f.txt >'%s'/$f.txt; done",
           tmp("escape"));
  ck_assert_int_eq(system(cmd), 0);
  capture();
  rc = run_eval(&lmc_model, o.save, tmp("escape"), "valid", false, 1, false);
  release();
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(err_text, "word 0 is 'the' there, '?[2J' here") && !strchr(err_text, '\x1b'), "%s", err_text);
  o.resume = o.save;
  o.data = tmp("shuffled");
  o.save = tmp("x.safetensors");
  ck_assert_int_ne(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "another vocabulary"));
}
END_TEST

/* ----------------------------------------------------------- generate */

static void check_layout(const char *text, int words)
{
  int w = 0, inword = 0, line_words = 0;
  for (const char *p = text; *p; p++) {
    if (*p == ' ' || *p == '\n') {
      ck_assert_msg(inword, "two separators in a row at offset %td", p - text);
      inword = 0;
      line_words++;
      if (*p == '\n') {
        ck_assert_int_eq(line_words, 20);
        line_words = 0;
      }
    } else if (!inword) {
      inword = 1;
      w++;
    }
  }
  ck_assert_int_eq(w, words);
  ck_assert(!inword);   /* every word has its separator */
  ck_assert_int_eq(line_words, words % 20);
}

static char *generate(const LmcModel *m, const char *ckpt, int words, double temp, uint64_t seed, const char *prompt)
{
  const char *outf = tmp("gen.txt");
  capture();
  GenOptions o = { .checkpoint = ckpt, .prompt = prompt, .outf = outf, .words = words, .samples = 1, .threads = 1,
                   .rule = { temp, 0, 1.0 }, .seed = seed };
  int rc = run_generate(m, &o);
  release();
  ck_assert_msg(rc == 0, "%s", err_text);
  return slurp(outf);
}

/* sample_word draws the first word whose running weight passes u * total,
 * with weights p^(1 / temperature) */
START_TEST(test_sample_word)
{
  real logp[37], w[37];
  SampleCand cand[37];
  const double p[4] = { 0.1, 0.2, 0.3, 0.4 };
  for (int v = 0; v < 4; v++) logp[v] = (real)log(p[v]);
  /* temperature 1: boundaries at 0.1, 0.3, 0.6 */
  const double u1[] = { 0, 0.05, 0.099, 0.101, 0.299, 0.301, 0.599, 0.601, 0.999999 };
  const int want1[] = { 0, 0, 0, 1, 1, 2, 2, 3, 3 };
  for (size_t i = 0; i < sizeof u1 / sizeof u1[0]; i++)
    ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 1 }, u1[i], w, cand), want1[i]);
  for (int v = 0; v < 4; v++)   /* the weights: p / max p, within 1e-6 */
    ck_assert_double_eq_tol(w[v], p[v] / 0.4, 1e-6);
  /* temperature 2: weights sqrt(p), boundaries at 0.1628, 0.3929, 0.6747 */
  double s = 0, cum[4];
  for (int v = 0; v < 4; v++) cum[v] = s += sqrt(p[v]);
  for (int v = 0; v < 3; v++) {
    ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 2.0, 0, 1 }, cum[v] / s - 1e-4, w, cand), v);
    ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 2.0, 0, 1 }, cum[v] / s + 1e-4, w, cand), v + 1);
  }
  /* near-greedy: the most likely word whatever u */
  for (double u = 0; u < 1; u += 0.125)
    ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1e-3, 0, 1 }, u, w, cand), 3);
  /* words of probability 0 are never drawn, at either end */
  logp[0] = logp[3] = -INFINITY;
  logp[1] = logp[2] = (real)log(0.5);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 1 }, 0, w, cand), 1);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 1 }, 0.999999, w, cand), 2);
  /* a vocabulary not a multiple of the vector width, uniform */
  for (int v = 0; v < 37; v++) logp[v] = (real)log(1.0 / 37);
  for (int v = 0; v < 37; v++)
    ck_assert_int_eq(sample_word(logp, 37, &(SampleRule){ 1.0, 0, 1 }, (v + 0.5) / 37, w, cand), v);
  /* ties rank by id: top-k 1 is word 0, top-k 5 the first five */
  ck_assert_int_eq(sample_word(logp, 37, &(SampleRule){ 1.0, 1, 1 }, 0.999, w, cand), 0);
  ck_assert_int_eq(sample_word(logp, 37, &(SampleRule){ 1.0, 5, 1 }, 0.999, w, cand), 4);
  ck_assert_int_eq(sample_word(logp, 37, &(SampleRule){ 1.0, 5, 1 }, 0.5, w, cand), 2);
}
END_TEST

/* top-k, then top-p over the k renormalised, then a draw over what is
 * left: p = 0.1, 0.2, 0.3, 0.4 for words 0..3 */
START_TEST(test_sample_top)
{
  real logp[4], w[4];
  SampleCand cand[4];
  const double p[4] = { 0.1, 0.2, 0.3, 0.4 };
  for (int v = 0; v < 4; v++) logp[v] = (real)log(p[v]);
  /* top-k 1, or a tiny top-p: the argmax whatever the temperature and u */
  for (double t = 0.5; t < 100; t *= 3)
    for (double u = 0; u < 1; u += 0.125) {
      ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ t, 1, 1 }, u, w, cand), 3);
      ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ t, 0, 1e-9 }, u, w, cand), 3);
    }
  /* top-k 2: words 3 and 2, weights 4/7 and 3/7 */
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 2, 1 }, 4.0 / 7 - 1e-4, w, cand), 3);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 2, 1 }, 4.0 / 7 + 1e-4, w, cand), 2);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 2, 1 }, 0.999999, w, cand), 2);
  /* top-p 0.75: 0.4 + 0.3 < 0.75 <= 0.4 + 0.3 + 0.2, words 3, 2, 1 */
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 0.75 }, 0.999999, w, cand), 1);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 0.75 }, 0.7 / 0.9 - 1e-4, w, cand), 2);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 0, 0.35 }, 0.999999, w, cand), 3);
  /* top-k 3 then top-p 0.6 of their 0.9: 0.4 < 0.54 <= 0.7, words 3 and 2 */
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 3, 0.6 }, 0.999999, w, cand), 2);
  /* the temperature comes first: at 1e-3 the weights of 0..2 vanish, and
   * top-p 0.99 keeps word 3 alone */
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1e-3, 0, 0.99 }, 0.999999, w, cand), 3);
  /* words of weight 0 are never kept */
  logp[0] = logp[3] = -INFINITY;
  logp[1] = logp[2] = (real)log(0.5);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 4, 1 }, 0.999999, w, cand), 2);
  ck_assert_int_eq(sample_word(logp, 4, &(SampleRule){ 1.0, 3, 0.9 }, 0, w, cand), 1);
}
END_TEST

START_TEST(test_generate)
{
  TrainOptions o = options(2);
  ck_assert_int_eq(train(&o), 0);
  char *a = generate(&lmc_model, o.save, 45, 1.0, 7, NULL);
  check_layout(a, 45);
  ck_assert_int_eq(count(err_text, "| Generated "), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "| Generated 0/45 words\n"));
  /* deterministic for a seed, different for another */
  char *b = generate(&lmc_model, o.save, 45, 1.0, 7, NULL);
  ck_assert_str_eq(a, b);
  free(b);
  b = generate(&lmc_model, o.save, 45, 1.0, 8, NULL);
  ck_assert_str_ne(a, b);
  free(b);
  /* every word from the vocabulary, and the bigram learnt: "on" is followed by "a" */
  ck_assert_ptr_null(strstr(a, "on the"));
  /* a model without state (Transformer) gets the window; a bigram gives the same text */
  b = generate(&fake_window_model, o.save, 45, 1.0, 7, NULL);
  ck_assert_str_eq(a, b);
  ck_assert_int_eq(fake_max_T[2], 8);
  ck_assert_int_eq(fake_last_T[2], 8);
  free(b);
  free(a);
  /* a prompt; unknown words become <unk> with a warning */
  a = generate(&lmc_model, o.save, 20, 1.0, 7, "the zebra");
  check_layout(a, 20);
  ck_assert_ptr_nonnull(strstr(err_text, "'zebra' is not in the vocabulary; using <unk>"));
  b = generate(&fake_window_model, o.save, 20, 1.0, 7, "the zebra");
  ck_assert_str_eq(a, b);
  ck_assert_int_eq(fake_max_T[2], 8);
  free(a);
  free(b);
  /* near-greedy sampling does not depend on the seed */
  a = generate(&lmc_model, o.save, 30, 1e-3, 1, "sat on");
  b = generate(&lmc_model, o.save, 30, 1e-3, 2, "sat on");
  ck_assert_str_eq(a, b);
  ck_assert(strncmp(a, "a ", 2) == 0);
  free(a);
  free(b);
  /* through the command line, to stdout */
  ck_assert_int_eq(trainer("generate --checkpoint %s --words 40 --seed 7 --outf -", o.save), 0);
  check_layout(out_text, 40);
  b = strdup(out_text);
  a = generate(&lmc_model, o.save, 40, 1.0, 7, NULL);
  ck_assert_str_eq(a, b);
  free(a);
  free(b);
}
END_TEST

/* ------------------------------------------------------- command line */

static void bad_args(const char *args, const char *message)
{
  int rc = trainer("%s", args);
  ck_assert_msg(rc == 2, "'%s': exit %d, expected 2\n%s", args, rc, err_text);
  char want[512];
  snprintf(want, sizeof want, "fake_trainer: error: %s", message);
  ck_assert_msg(strncmp(err_text, want, strlen(want)) == 0, "'%s': got '%s', expected '%s'", args, err_text, want);
  ck_assert_str_eq(out_text, "");
}

START_TEST(test_cli_errors)
{
  bad_args("train --lr abc", "--lr: expected a number, got 'abc'\n");
  bad_args("train --lr=abc", "--lr: expected a number, got 'abc'\n");
  bad_args("train --lr -1", "--lr: expected a positive number, got '-1'\n");
  bad_args("train --epochs -3", "--epochs: expected a positive integer, got '-3'\n");
  bad_args("train --epochs 2.5", "--epochs: expected a positive integer, got '2.5'\n");
  bad_args("train --clip x", "--clip: expected a number, got 'x'\n");
  bad_args("train --dropout 1", "--dropout: expected a probability in [0, 1), got '1'\n");
  bad_args("train --dropout dropouth=-0.1", "--dropout: expected a probability in [0, 1), got '-0.1'\n");
  bad_args("train --dropout dropouth=", "--dropout: expected a number, got ''\n");
  bad_args("train --dropout dropouth_x=0.1",
           "--dropout: no dropout slot 'dropouth_x' in this model; did you mean 'dropouth'? "
           "(its slots: dropout, dropouth)\n");
  bad_args("train --dropout dorpout=0.1",
           "--dropout: no dropout slot 'dorpout' in this model; did you mean 'dropout'? "
           "(its slots: dropout, dropouth)\n");
  bad_args("train --dropout weight_drop=0.1",
           "--dropout: no dropout slot 'weight_drop' in this model; its slots: dropout, dropouth\n");
  bad_args("train --seed -5", "--seed: expected a non-negative integer, got '-5'\n");
  bad_args("train --threads 0", "--threads: expected a positive integer, got '0'\n");
  bad_args("train --optimizer adam", "--optimizer: expected 'sgd' or 'adamw', got 'adam'\n");
  bad_args("train --lr", "--lr: missing value\n");
  bad_args("train --save --dry-run", "--save: missing value\n");
  bad_args("train --dry-run=yes", "--dry-run: takes no value, got 'yes'\n");
  bad_args("train --cuda", "train: unknown option '--cuda'");
  bad_args("train extra", "train: unexpected argument 'extra'\n");
  bad_args("train --bptt 70", "--bptt: bptt is fixed at compile time (this trainer: 8); recompile:\n"
                              "  make trainer MODEL=lstm LMCFLAGS=\"-D bptt=70\"\n");
  bad_args("train --batch-size 3", "--batch-size: batch_size is fixed at compile time (this trainer: 4)");
  bad_args("train --emsize=650", "--emsize: emsize is fixed at compile time (this trainer: 22); recompile:\n"
                                 "  make trainer MODEL=lstm LMCFLAGS=\"-D emsize=650\"\n");
  bad_args("train --nhid 650", "--nhid: nhid is fixed at compile time");
  bad_args("train --nlayers 3", "--nlayers: nlayers is fixed at compile time");
  bad_args("train --nhead 2", "--nhead: nhead is fixed at compile time");
  bad_args("train --tied", "--tied: tied is fixed at compile time (this trainer: true)");
  bad_args("train --model GRU", "--model: this trainer is compiled for LSTM");
  bad_args("eval --data " DATA, "eval: --checkpoint FILE is required\n");
  bad_args("eval --checkpoint x --split train", "--split: expected 'valid' or 'test', got 'train'\n");
  bad_args("generate --checkpoint x --temperature 0", "--temperature: expected a number >= 1e-3, got '0'\n");
  bad_args("generate --checkpoint x --temperature -1", "--temperature: expected a number >= 1e-3, got '-1'\n");
  bad_args("generate --checkpoint x --words many", "--words: expected a non-negative integer, got 'many'\n");
  bad_args("generate --checkpoint x --lr 1", "generate: unknown option '--lr'");
  bad_args("info --verbose", "info: unknown option '--verbose'");
  bad_args("fit", "unknown command 'fit'");
  ck_assert_int_eq(trainer(""), 2);
  ck_assert_ptr_nonnull(strstr(err_text, "usage:"));
}
END_TEST

/* The recompile hint names the graph file the trainer came from. */
START_TEST(test_rebuild_hint)
{
  LmcModel m = lmc_model;
  char err[1024], arg0[] = "awd", arg1[] = "train", arg2[] = "--bptt", arg3[] = "70";
  char *argv[] = { arg0, arg1, arg2, arg3, NULL };
  CliOptions o;
  m.graph = "graphs/awd.lua";   /* kind LSTM: the hint once said MODEL=lstm */
  ck_assert_int_eq(cli_parse(&m, "awd", 4, argv, &o, err, sizeof err), 2);
  ck_assert_str_eq(err, "awd: error: --bptt: bptt is fixed at compile time (this trainer: 8); recompile:\n"
                        "  make trainer MODEL=awd LMCFLAGS=\"-D bptt=70\"");
  m.graph = "../models/awd.lua";   /* outside graphs/: make trainer GRAPH= */
  ck_assert_int_eq(cli_parse(&m, "awd", 4, argv, &o, err, sizeof err), 2);
  ck_assert_str_eq(err, "awd: error: --bptt: bptt is fixed at compile time (this trainer: 8); recompile:\n"
                        "  make trainer GRAPH=../models/awd.lua LMCFLAGS=\"-D bptt=70\"");
  m.graph = "graphs/lib/awd.lua";   /* in a folder of graphs/: not MODEL= */
  ck_assert_int_eq(cli_parse(&m, "awd", 4, argv, &o, err, sizeof err), 2);
  ck_assert_str_eq(err, "awd: error: --bptt: bptt is fixed at compile time (this trainer: 8); recompile:\n"
                        "  make trainer GRAPH=graphs/lib/awd.lua LMCFLAGS=\"-D bptt=70\"");
  m.graph = "my models/Bob's awd.lua";   /* make cannot take it: lmc, quoted */
  ck_assert_int_eq(cli_parse(&m, "awd", 4, argv, &o, err, sizeof err), 2);
  ck_assert_str_eq(err, "awd: error: --bptt: bptt is fixed at compile time (this trainer: 8); recompile:\n"
                        "  lmc compile 'my models/Bob'\\''s awd.lua' -D bptt=70");
  /* a corpus of another vocabulary */
  m.ntoken = 5;
  Corpus c;
  for (int k = 0; k < 2; k++) {
    m.graph = k ? "./graphs/awd.lua" : "../models/awd.lua";
    capture();
    int rc = vocab_load_corpus(&m, &c, DATA);
    release();
    ck_assert_int_eq(rc, -1);
    const char *want = k ? "recompile for it: make trainer MODEL=awd DATA=" DATA
                           " (or: lmc compile ./graphs/awd.lua -D ntoken=22 ...)\n"
                         : "recompile for it: make trainer GRAPH=../models/awd.lua DATA=" DATA
                           " (or: lmc compile ../models/awd.lua -D ntoken=22 ...)\n";
    ck_assert_msg(strstr(err_text, want), "got %s, expected ...%s", err_text, want);
  }
}
END_TEST

START_TEST(test_cli_commands)
{
  ck_assert_int_eq(trainer("--help"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "usage: fake_trainer train"));
  ck_assert_ptr_nonnull(strstr(out_text, "usage: fake_trainer generate"));
  ck_assert_int_eq(trainer("train --help"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "--log-csv FILE"));
  ck_assert_ptr_null(strstr(out_text, "usage: fake_trainer eval"));
  ck_assert_int_eq(trainer("info"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "kind          LSTM\n"));
  ck_assert_ptr_nonnull(strstr(out_text, "vocabulary    22 words"));
  ck_assert_ptr_nonnull(strstr(out_text, "parameters    506\n"));
  ck_assert_ptr_nonnull(strstr(out_text, "0.0-fake"));
  /* a whole run through the command line, every train option */
  ck_assert_int_eq(trainer("train --data %s --lr 10 --clip 0.5 --epochs 2 --seed 3 --dropout 0.1 "
                           "--log-interval 50 --save %s --optimizer sgd --max-batches 60 --threads 1 --log-csv %s",
                           DATA, tmp("cli.safetensors"), tmp("cli.csv")),
                   0);
  ck_assert_int_eq(count(out_text, "| epoch "), 2);
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   1 |    50/"));
  ck_assert_ptr_nonnull(strstr(out_text, "| lr 10.00 |"));
  ck_assert_int_eq(trainer("train --data=%s --dry-run", DATA), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "saved and reloaded"));
  ck_assert_int_eq(trainer("train --data %s --epochs 3 --resume %s --save %s", DATA, tmp("cli.safetensors"),
                           tmp("cli3.safetensors")),
                   0);
  ck_assert_ptr_nonnull(strstr(out_text, "| end of epoch   3 |"));
  ck_assert_ptr_null(strstr(out_text, "| end of epoch   2 |"));
  /* a missing corpus or checkpoint: exit 1 with the file named */
  ck_assert_int_eq(trainer("train --data %s", tmp("nowhere")), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "nowhere/train.txt"));
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s", tmp("none.safetensors"), DATA), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "none.safetensors"));
}
END_TEST

/* eval --json's line up to its timing, the part that must not change. */
static char *json_numbers(const char *s)
{
  char *t = strdup(s), *sec = strstr(t, ", \"seconds\"");
  ck_assert_ptr_nonnull(sec);
  *sec = '\0';
  return t;
}

/* eval and generate --threads N: the same numbers and text as one thread
 * (the fake model does not depend on it); 0 or a non-number is refused. */
START_TEST(test_eval_generate_threads)
{
  TrainOptions o = options(1);
  o.threads = 2;   /* the end-of-epoch evaluation with the train --threads */
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "| end of epoch   1 |"));
  char *one;
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s --json", o.save, DATA), 0);
  one = json_numbers(out_text);
  char *other;
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s --json --threads 2", o.save, DATA), 0);
  ck_assert_str_eq(other = json_numbers(out_text), one);
  free(other);
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s --json --threads=3", o.save, DATA), 0);
  ck_assert_str_eq(other = json_numbers(out_text), one);
  free(other);
  free(one);
  ck_assert_int_eq(trainer("generate --checkpoint %s --words 40 --seed 7 --outf -", o.save), 0);
  check_layout(out_text, 40);
  one = strdup(out_text);
  ck_assert_int_eq(trainer("generate --checkpoint %s --words 40 --seed 7 --outf - --threads 2", o.save), 0);
  ck_assert_str_eq(out_text, one);
  free(one);
  bad_args("eval --checkpoint x --threads 0", "--threads: expected a positive integer, got '0'\n");
  bad_args("eval --checkpoint x --threads x", "--threads: expected a positive integer, got 'x'\n");
  bad_args("eval --checkpoint x --threads -2", "--threads: expected a positive integer, got '-2'\n");
  bad_args("eval --checkpoint x --threads", "--threads: missing value\n");
  bad_args("generate --checkpoint x --threads 0", "--threads: expected a positive integer, got '0'\n");
  bad_args("generate --checkpoint x --threads x", "--threads: expected a positive integer, got 'x'\n");
  bad_args("generate --checkpoint x --threads=1.5", "--threads: expected a positive integer, got '1.5'\n");
  /* direct calls check it too */
  capture();
  int rc = run_eval(&lmc_model, o.save, DATA, "test", true, 0, false);
  GenOptions go = { .checkpoint = o.save, .outf = tmp("gen0.txt"), .words = 5, .samples = 1, .threads = 0,
                    .rule = { 1.0, 0, 1.0 }, .seed = 7 };
  int rg = run_generate(&lmc_model, &go);
  release();
  ck_assert_int_eq(rc, 2);
  ck_assert_int_eq(rg, 2);
  ck_assert_str_eq(out_text, "");
  ck_assert_int_eq(count(err_text, "threads"), 2);
  ck_assert_ptr_null(slurp(tmp("gen0.txt")));
  /* the help names it */
  ck_assert_int_eq(trainer("eval --help"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "--threads N"));
  ck_assert_int_eq(trainer("generate --help"), 0);
  ck_assert_ptr_nonnull(strstr(out_text, "--threads N"));
}
END_TEST

START_TEST(test_plot)
{
  if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
    printf("test_plot: gnuplot not installed, skipped\n");
    return;
  }
  TrainOptions o = options(2);
  o.log_csv = tmp("run.csv");
  ck_assert_int_eq(train(&o), 0);
  spit(tmp("run.log"), out_text);
  char cmd[1024];
  for (int k = 0; k < 2; k++) {
    snprintf(cmd, sizeof cmd, "sh tools/plot.sh '%s' >/dev/null", tmp(k ? "run.csv" : "run.log"));
    ck_assert_int_eq(system(cmd), 0);
    char *png = slurp(tmp("run.png"));
    ck_assert_ptr_nonnull(png);
    ck_assert(memcmp(png, "\x89PNG", 4) == 0);
    free(png);
    remove(tmp("run.png"));
  }
}
END_TEST

/* ---------------------------------------- checkpoints you did not make (issue 14) */

static void copy_file(const char *from, const char *to)
{
  FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
  ck_assert_msg(f && g, "copy %s to %s", from, to);
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;)
    ck_assert_uint_eq(fwrite(buf, 1, n, g), n);
  fclose(f);
  ck_assert_int_eq(fclose(g), 0);
}

/* path's metadata key set to value (the parameters as they are) */
static void set_meta(const char *path, const char *key, const char *value)
{
  real p[22 * 22 + 22];
  MetaList m = load_meta(path, p);
  meta_set(&m, key, value);
  char err[ERRLEN];
  ck_assert_msg(ckpt_save(path, &lmc_model, p, NULL, 0, &m, err) == 0, "%s", err);
  meta_free(&m);
}

/* optimizer_state is never a path: a crafted "../evil.optim" pointing at a
 * matching moments file outside the checkpoint's folder is not opened; the
 * companion comes from the checkpoint's own name. */
START_TEST(test_ckpt_companion_from_own_path)
{
  ck_assert_int_eq(mkdir(tmp("a"), 0700), 0);
  TrainOptions o = options(1);
  o.adamw = true;
  o.save = tmp("a/m.safetensors");
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(rename(tmp("a/m.safetensors.optim"), tmp("evil.optim")), 0);
  set_meta(o.save, "optimizer_state", "../evil.optim");
  fake_reset();
  o.resume = o.save;
  o.save = tmp("b.safetensors");
  o.epochs = 2;
  ck_assert_int_eq(train(&o), 1);
  ck_assert_ptr_null(strstr(err_text, "evil"));
  ck_assert_ptr_nonnull(strstr(err_text, "a/m.safetensors.optim (absent) nor "));
  ck_assert_int_eq(fake_calls[0], 0);
}
END_TEST

/* Another run's moments at the same step do not pair: the key holds a
 * random run id. */
START_TEST(test_ckpt_other_runs_moments)
{
  TrainOptions o = options(1);
  o.adamw = true;
  o.save = tmp("a.safetensors");
  ck_assert_int_eq(train(&o), 0);
  o.save = tmp("b.safetensors");
  ck_assert_int_eq(train(&o), 0);
  MetaList ma = load_meta(tmp("a.safetensors"), NULL), mb = load_meta(tmp("b.safetensors"), NULL);
  ck_assert_str_eq(meta_get(&ma, "step"), meta_get(&mb, "step"));
  ck_assert_str_ne(meta_get(&ma, "optimizer_key"), meta_get(&mb, "optimizer_key"));
  meta_free(&ma);
  meta_free(&mb);
  copy_file(tmp("b.safetensors.optim"), tmp("a.safetensors.optim"));
  o.resume = tmp("a.safetensors");
  o.save = tmp("c.safetensors");
  o.epochs = 2;
  ck_assert_int_eq(train(&o), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "a.safetensors.optim (another save's) nor "));
}
END_TEST

/* A kill between the two files of a save leaves the old model, the new
 * moments in .optim and the old ones in .optim.prev: --resume takes .prev
 * and continues exactly as from the old pair; the next save makes a clean
 * pair of it. */
START_TEST(test_ckpt_killed_between_files)
{
  TrainOptions o = options(1);
  o.adamw = true;
  o.save = tmp("one.safetensors");
  ck_assert_int_eq(train(&o), 0);
  o.epochs = 2;
  o.resume = tmp("one.safetensors");
  o.save = tmp("two.safetensors");
  ck_assert_int_eq(train(&o), 0);
  real straight[22 * 22 + 22], resumed[22 * 22 + 22];
  MetaList m = load_meta(o.save, straight);
  meta_free(&m);

  /* the kill: one's model, two's moments, one's moments as .prev */
  ck_assert_int_eq(mkdir(tmp("k"), 0700), 0);
  copy_file(tmp("one.safetensors"), tmp("k/one.safetensors"));
  copy_file(tmp("two.safetensors.optim"), tmp("k/one.safetensors.optim"));
  copy_file(tmp("one.safetensors.optim"), tmp("k/one.safetensors.optim.prev"));
  o.resume = tmp("k/one.safetensors");
  o.save = tmp("k2.safetensors");
  ck_assert_msg(train(&o) == 0, "%s", err_text);
  m = load_meta(o.save, resumed);
  meta_free(&m);
  ck_assert_msg(memcmp(straight, resumed, sizeof straight) == 0, "resumed from .prev differs from the straight run");

  /* saving over it: the pair is (new model, new .optim), .prev goes */
  o.save = tmp("k/one.safetensors");
  ck_assert_int_eq(train(&o), 0);
  ck_assert_int_eq(access(tmp("k/one.safetensors.optim.prev"), F_OK), -1);
  m = load_meta(o.save, NULL);
  ck_assert_str_eq(meta_get(&m, "epoch"), "2");
  meta_free(&m);
  o.epochs = 3;
  ck_assert_msg(train(&o) == 0, "%s", err_text);
}
END_TEST

/* An SGD checkpoint resumed with AdamW starts at AdamW's lr, not sgd's 20,
 * and says so; the other way round too. */
START_TEST(test_ckpt_other_optimizer)
{
  TrainOptions o = options(1);
  o.save = tmp("sgd.safetensors");
  ck_assert_int_eq(train(&o), 0);
  o.adamw = true;
  o.epochs = 2;
  o.resume = o.save;
  o.save = tmp("adamw.safetensors");
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "sgd.safetensors was trained with sgd (lr 20); continuing with adamw at lr "
                                         "0.001 (its default), the moments from zero\n"));
  ck_assert_ptr_nonnull(strstr(out_text, "| epoch   2 |    40/"));
  ck_assert_ptr_nonnull(strstr(strstr(out_text, "| epoch   2 |    40/"), "| lr 1.00e-03 |"));
  o.adamw = false;
  o.resume = tmp("adamw.safetensors");
  o.save = tmp("sgd2.safetensors");
  o.epochs = 3;
  ck_assert_int_eq(train(&o), 0);
  ck_assert_ptr_nonnull(strstr(err_text, "adamw.safetensors was trained with adamw (lr 0.001); continuing with sgd "
                                         "at lr 20 (its default)\n"));
  ck_assert_ptr_nonnull(strstr(strstr(out_text, "| epoch   3 |    40/"), "| lr 20.00 |"));
}
END_TEST

/* --save at a device node, a FIFO or a symlink (or such a thing at its
 * .optim or .optim.prev) is refused before the first batch and stays what
 * it was; an empty --save is refused. */
START_TEST(test_ckpt_special_save_paths)
{
  struct stat st;
  TrainOptions o = options(1);
  bool dev = mknod(tmp("dev"), S_IFCHR | 0666, makedev(1, 3)) == 0;
  if (!dev) printf("mknod not permitted: the device node cases are skipped\n");
  ck_assert_int_eq(mkfifo(tmp("fifo"), 0600), 0);
  spit(tmp("target"), "keep");
  ck_assert_int_eq(symlink(tmp("target"), tmp("link")), 0);
  const char *paths[] = { "dev", "fifo", "link" }, *kinds[] = { "a character device", "a FIFO", "a symbolic link" };
  for (int i = dev ? 0 : 1; i < 3; i++) {
    o.save = tmp(paths[i]);
    ck_assert_int_eq(train(&o), 1);
    char want[600];
    snprintf(want, sizeof want, "%s: error: refusing to write %s: it exists and is %s, not a regular file\n",
             o.save, o.save, kinds[i]);
    ck_assert_str_eq(err_text, want);
    ck_assert_int_eq(fake_calls[0], 0);
  }
  if (dev) ck_assert(lstat(tmp("dev"), &st) == 0 && S_ISCHR(st.st_mode));
  ck_assert(lstat(tmp("fifo"), &st) == 0 && S_ISFIFO(st.st_mode));
  ck_assert(lstat(tmp("link"), &st) == 0 && S_ISLNK(st.st_mode));
  char *kept = slurp(tmp("target"));
  ck_assert_str_eq(kept, "keep");
  free(kept);

  /* the companions of an AdamW save */
  o.adamw = true;
  o.save = tmp("m.safetensors");
  ck_assert_int_eq(symlink(tmp("target"), tmp("m.safetensors.optim")), 0);
  ck_assert_int_eq(train(&o), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "m.safetensors.optim: it exists and is a symbolic link"));
  ck_assert_int_eq(unlink(tmp("m.safetensors.optim")), 0);
  ck_assert_int_eq(mkfifo(tmp("m.safetensors.optim.prev"), 0600), 0);
  ck_assert_int_eq(train(&o), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "m.safetensors.optim.prev: it exists and is a FIFO"));
  ck_assert_int_eq(fake_calls[0], 0);
  ck_assert_int_eq(access(tmp("m.safetensors"), F_OK), -1);

  o.save = "";
  ck_assert_int_eq(train(&o), 1);
  ck_assert_str_eq(err_text, "lmc: error: --save: the path is empty\n");
  /* on the command line it is a usage error, refused by the parser */
  ck_assert_int_eq(trainer("train --data %s --save ''", DATA), 2);
  ck_assert_ptr_nonnull(strstr(err_text, "--save: expected a file name"));
}
END_TEST

/* generate refuses NaN or infinite weights, as eval refuses their loss. */
START_TEST(test_ckpt_generate_nonfinite)
{
  TrainOptions o = options(1);
  ck_assert_int_eq(train(&o), 0);
  real p[22 * 22 + 22];
  MetaList m = load_meta(o.save, p);
  char err[ERRLEN];
  p[5] = NAN;
  ck_assert_msg(ckpt_save(tmp("nan.safetensors"), &lmc_model, p, NULL, 0, &m, err) == 0, "%s", err);
  p[5] = 0;
  p[22 * 22 + 3] = -INFINITY;
  ck_assert_msg(ckpt_save(tmp("inf.safetensors"), &lmc_model, p, NULL, 0, &m, err) == 0, "%s", err);
  meta_free(&m);
  ck_assert_int_eq(trainer("eval --checkpoint %s --data %s", tmp("nan.safetensors"), DATA), 1);
  ck_assert_ptr_nonnull(strstr(err_text, "fake_trainer: error: test loss is nan"));
  ck_assert_int_eq(trainer("generate --checkpoint %s --words 5 --outf -", tmp("nan.safetensors")), 1);
  char want[600];
  snprintf(want, sizeof want, "fake_trainer: error: %s: encoder.weight holds nan at element 5: the weights are not "
           "finite\n", tmp("nan.safetensors"));
  ck_assert_str_eq(err_text, want);
  ck_assert_str_eq(out_text, "");
  ck_assert_int_eq(trainer("generate --checkpoint %s --words 5 --outf -", tmp("inf.safetensors")), 1);
  snprintf(want, sizeof want, "fake_trainer: error: %s: decoder.bias holds inf at element 3: the weights are not "
           "finite\n", tmp("inf.safetensors"));
  ck_assert_str_eq(err_text, want);
}
END_TEST

static Suite *train_suite(void)
{
  Suite *s = suite_create("train");
  struct {
    const char *name;
    const TTest *test;
  } tests[] = {
    { "train", test_train_lowers_loss }, { "log", test_log_format },
    { "init", test_init_and_seed }, { "clip_sgd", test_clip_sgd }, { "dropout", test_dropout_option },
    { "rebuild_hint", test_rebuild_hint }, { "objective", test_objective },
    { "anneal", test_save_on_best_and_anneal }, { "resume_sgd", test_resume_sgd },
    { "resume_adamw", test_resume_adamw }, { "nan", test_nan_stops }, { "save_path", test_save_path_checked },
    { "descriptor", test_descriptor_checked },
    { "interrupt", test_interrupt }, { "dry_run", test_dry_run },
    { "eval", test_eval_json }, { "threads", test_eval_generate_threads },
    { "vocab", test_vocab_mismatch },
    { "sample", test_sample_word }, { "sample_top", test_sample_top }, { "generate", test_generate },
    { "cli_errors", test_cli_errors },
    { "cli", test_cli_commands }, { "plot", test_plot },
    { "ckpt_companion", test_ckpt_companion_from_own_path }, { "ckpt_other_run", test_ckpt_other_runs_moments },
    { "ckpt_killed", test_ckpt_killed_between_files }, { "ckpt_optimizer", test_ckpt_other_optimizer },
    { "ckpt_special", test_ckpt_special_save_paths }, { "ckpt_nonfinite", test_ckpt_generate_nonfinite },
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    TCase *tc = tcase_create(tests[i].name);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, tests[i].test);
    suite_add_tcase(s, tc);
  }
  return s;
}

int main(void)
{
  return run_suite(train_suite());
}
