/*
 * cli.c: the command line of an emitted trainer (cli.h).
 *
 *   MODEL train    [--data DIR] [--lr F] [--clip F] [--epochs N] ...
 *   MODEL eval     --checkpoint FILE [--data DIR] [--split valid|test] [--json] ...
 *   MODEL generate --checkpoint FILE [--words N] [--temperature F] ...
 *   MODEL info
 *   MODEL --help
 *
 * Options are "--name VALUE" or "--name=VALUE".  A user's mistake is one
 * line, "MODEL: error: --lr: expected a number, got 'abc'", returned in err
 * (main.c prints it and exits 2): the parser jumps back to cli_parse from
 * wherever it finds the mistake, as Lua's errors do, and allocates nothing
 * on the way.  Options of main.py that set a compiled shape (--bptt,
 * --emsize, ...) are recognised so that the error can say how to recompile.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_help(FILE *f, const LmcModel *m, const char *prog, const char *which)
{
  if (!which || strcmp(which, "train") == 0)
    fprintf(f,
            "usage: %s train [options]\n"
            "  train %s on a corpus, as PyTorch's word_language_model/main.py\n"
            "  --data DIR          corpus folder with train/valid/test.txt (data/wikitext-2)\n"
            "  --lr F              initial learning rate (20; 0.001 with --optimizer adamw)\n"
            "  --clip F            gradient norm clipping, 0 for none (0.25)\n"
            "  --epochs N          upper epoch limit (40)\n"
            "  --seed N            random seed (1111)\n"
            "  --dropout P         the probability of the slot named dropout (the compiled default)\n"
            "  --dropout NAME=P    that of any dropout slot (see '%s info'); repeatable\n"
            "  --log-interval N    batches between log lines (200)\n"
            "  --save FILE         where the best model goes (model.safetensors)\n"
            "  --dry-run           one batch, a few evaluation batches, one save and reload\n"
            "  --optimizer NAME    sgd or adamw (sgd)\n"
            "  --max-batches N     at most N batches per epoch\n"
            "  --threads N         BLAS and kernel threads (1)\n"
            "  --precision P       fp32 or bf16: the matrix products' operands (fp32)\n"
            "  --resume FILE       continue from a checkpoint: its lr, epoch and step\n"
            "  --log-csv FILE      also write the log lines as CSV\n"
            "  --check-every N     under mpirun, steps between two checks that the ranks'\n"
            "                      parameters agree (100; also at each epoch's end)\n",
            prog, m->kind, prog);
  if (!which || strcmp(which, "eval") == 0)
    fprintf(f,
            "usage: %s eval --checkpoint FILE [options]\n"
            "  loss and perplexity of a checkpoint on a split\n"
            "  --data DIR          corpus folder (data/wikitext-2)\n"
            "  --split NAME        valid or test (test)\n"
            "  --json              one line: {\"loss\": L, \"ppl\": P, \"tokens\": N, \"seconds\": S}\n"
            "  --threads N         BLAS and kernel threads (1)\n"
            "  --precision P       fp32 or bf16: the matrix products' operands (fp32)\n",
            prog);
  if (!which || strcmp(which, "generate") == 0)
    fprintf(f,
            "usage: %s generate --checkpoint FILE [options]\n"
            "  sample text, as word_language_model/generate.py\n"
            "  --words N           words to generate (1000)\n"
            "  --temperature F     higher is more diverse, at least 1e-3 (1.0)\n"
            "  --top-k K           draw from the K most likely words only (all)\n"
            "  --top-p P           then from the fewest whose probability reaches P, in (0, 1] (1)\n"
            "  --seed N            random seed (1111)\n"
            "  --prompt TEXT       words to start from (a random word)\n"
            "  --prompt-file FILE  the words to start from, read from FILE\n"
            "  --samples N         N independent samples, apart by an empty line (1)\n"
            "  --no-kv-cache       recompute the window for every word (where the model has a cache)\n"
            "  --outf FILE         output file, - for stdout (generated.txt)\n"
            "  --threads N         BLAS and kernel threads (1)\n"
            "  --precision P       fp32 or bf16: the matrix products' operands (fp32)\n",
            prog);
  if (!which || strcmp(which, "info") == 0)
    fprintf(f,
            "usage: %s info\n"
            "  the shapes compiled in, vocabulary size, lmc version and flags\n",
            prog);
  if (!which)
    fprintf(f,
            "Shapes (bptt, batch size, emsize, nhid, nlayers, nhead, tied, vocabulary) are\n"
            "fixed at compile time: make trainer MODEL=... LMCFLAGS=\"-D name=value\".\n");
}

/* ------------------------------------------------------------ options */

typedef struct {
  const LmcModel *m;
  const char *prog, *cmd;   /* the program's name, the command being parsed */
  int argc;
  char **argv;
  int i;                 /* next argument */
  const char *name;      /* current option, without "=VALUE" */
  char namebuf[64];
  const char *inline_val;
  char *err;             /* the message of a mistake, then a jump to fail */
  size_t errlen;
  jmp_buf fail;
} Args;

static _Noreturn void usage_error(Args *a, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(a->err, a->errlen, "%s: error: ", a->prog);
  if (n >= 0 && (size_t)n < a->errlen) vsnprintf(a->err + n, a->errlen - (size_t)n, fmt, ap);
  va_end(ap);
  longjmp(a->fail, 1);
}

/* Next option name, or NULL at the end. */
static const char *next_option(Args *a)
{
  if (a->i >= a->argc) return NULL;
  const char *s = a->argv[a->i++];
  if (strncmp(s, "--", 2) != 0 || !s[2]) usage_error(a, "%s: unexpected argument '%s'", a->cmd, s);
  const char *eq = strchr(s, '=');
  a->inline_val = NULL;
  a->name = s;
  if (eq) {
    size_t n = (size_t)(eq - s);
    if (n >= sizeof a->namebuf) n = sizeof a->namebuf - 1;
    memcpy(a->namebuf, s, n);
    a->namebuf[n] = '\0';
    a->name = a->namebuf;
    a->inline_val = eq + 1;
  }
  return a->name;
}

static bool is(const Args *a, const char *name)
{
  return strcmp(a->name, name) == 0;
}

static const char *value(Args *a)
{
  if (a->inline_val) return a->inline_val;
  if (a->i >= a->argc || strncmp(a->argv[a->i], "--", 2) == 0) usage_error(a, "%s: missing value", a->name);
  return a->argv[a->i++];
}

/* A file or folder name: never empty ("--save=" is a mistake, not the
 * current folder). */
static const char *path_value(Args *a)
{
  const char *s = value(a);
  if (!*s) usage_error(a, "%s: expected a file name, got ''", a->name);
  return s;
}

static void no_value(Args *a)
{
  if (a->inline_val) usage_error(a, "%s: takes no value, got '%s'", a->name, a->inline_val);
}

/* s as a finite number in [lo, hi]; what names the range in messages. */
static double number_in(Args *a, const char *s, double lo, double hi, const char *what)
{
  char *e;
  errno = 0;
  double v = strtod(s, &e);
  if (e == s || *e || !isfinite(v)) usage_error(a, "%s: expected a number, got '%s'", a->name, s);
  if (v < lo || v > hi) usage_error(a, "%s: expected %s, got '%s'", a->name, what, s);
  return v;
}

static double number(Args *a, double lo, double hi, const char *what)
{
  return number_in(a, value(a), lo, hi, what);
}

static long long integer(Args *a, long long lo, long long hi, const char *what)
{
  const char *s = value(a);
  char *e;
  errno = 0;
  long long v = strtoll(s, &e, 10);
  if (e == s || *e || errno) usage_error(a, "%s: expected %s, got '%s'", a->name, what, s);
  if (v < lo || v > hi) usage_error(a, "%s: expected %s, got '%s'", a->name, what, s);
  return v;
}

static uint64_t seed_value(Args *a)
{
  const char *s = value(a);
  char *e;
  errno = 0;
  unsigned long long v = strtoull(s, &e, 10);
  if (e == s || *e || errno || strchr(s, '-'))
    usage_error(a, "%s: expected a non-negative integer, got '%s'", a->name, s);
  return (uint64_t)v;
}

/* --precision: true for bf16 */
static bool precision(Args *a)
{
  const char *v = value(a);
  if (strcmp(v, "bf16") != 0 && strcmp(v, "fp32") != 0)
    usage_error(a, "--precision: expected 'fp32' or 'bf16', got '%s'", v);
  return strcmp(v, "bf16") == 0;
}

static const char *hyper(const LmcModel *m, const char *name)
{
  for (int i = 0; i < m->nhyper; i++)
    if (strcmp(m->hyper[i][0], name) == 0) return m->hyper[i][1];
  return NULL;
}

/* main.py's options for what is compiled in: say how to recompile. */
static void compiled_option(Args *a)
{
  const LmcModel *m = a->m;
  static const char *const shapes[][2] = {
    { "--bptt", "bptt" }, { "--batch-size", "batch_size" }, { "--batch_size", "batch_size" },
    { "--emsize", "emsize" }, { "--nhid", "nhid" }, { "--nlayers", "nlayers" },
    { "--nhead", "nhead" }, { "--tied", "tied" }, { "--ntoken", "ntoken" }, { "--model", "model" },
  };
  char cmd[256];
  bool make = rt_rebuild_command(m, cmd, sizeof cmd);
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    if (!is(a, shapes[i][0])) continue;
    const char *h = shapes[i][1];
    const char *given = a->inline_val;
    if (!given && strcmp(h, "tied") != 0 && a->i < a->argc && strncmp(a->argv[a->i], "--", 2) != 0)
      given = a->argv[a->i];
    if (strcmp(h, "model") == 0)
      usage_error(a, "--model: this trainer is compiled for %s; build another one:\n"
                  "  make trainer MODEL=%s",
                  m->kind, given ? given : "lstm");
    if (strcmp(h, "ntoken") == 0)
      usage_error(a, "--ntoken: the vocabulary size is fixed at compile time (%d); recompile for a corpus:\n  %s%s",
                  m->ntoken, cmd, make ? " DATA=DIR" : " -D ntoken=N (lmc vocab DIR says N)");
    const char *cur = hyper(m, h);
    char example[64];
    if (strcmp(h, "tied") == 0) snprintf(example, sizeof example, cur && strcmp(cur, "true") == 0 ? "false" : "true");
    else if (given) snprintf(example, sizeof example, "%.40s", given);
    else snprintf(example, sizeof example, "N");
    usage_error(a, "%s: %s is fixed at compile time (this trainer: %s); recompile:\n  %s %s-D %s=%s%s", a->name, h,
                cur ? cur : "not a parameter of this model", cmd, make ? "LMCFLAGS=\"" : "", h, example,
                make ? "\"" : "");
  }
}

static _Noreturn void unknown(Args *a)
{
  compiled_option(a);
  usage_error(a, "%s: unknown option '%s' (see '%s %s --help')", a->cmd, a->name, a->prog, a->cmd);
}

/* ------------------------------------------------------------ dropout */

/* "its slots: dropout, dropouth" (cut short with "..." to fit out). */
static void slot_list(const LmcModel *m, char *out, size_t len)
{
  size_t k = (size_t)snprintf(out, len, "its slot%s: ", m->ndropout == 1 ? "" : "s");
  for (int i = 0; i < m->ndropout && k < len; i++) {
    if (k + strlen(m->dropout[i].name) + 8 > len) {
      snprintf(out + k, len - k, "...");
      return;
    }
    k += (size_t)snprintf(out + k, len - k, "%s%s", i ? ", " : "", m->dropout[i].name);
  }
}

static _Noreturn void unknown_slot(Args *a, const char *name, bool named)
{
  const LmcModel *m = a->m;
  if (m->ndropout == 0) usage_error(a, "--dropout: this model has no dropout");
  char list[512];
  slot_list(m, list, sizeof list);
  if (!named)
    usage_error(a, "--dropout: this model has no slot named 'dropout'; %s (set one: --dropout NAME=P)", list);
  RtNear near = rt_near_start(name);
  for (int i = 0; i < m->ndropout; i++) rt_near_offer(&near, m->dropout[i].name);
  if (near.best)
    usage_error(a, "--dropout: no dropout slot '%s' in this model; did you mean '%s'? (%s)", name, near.best, list);
  usage_error(a, "--dropout: no dropout slot '%s' in this model; %s", name, list);
}

/* --dropout P sets the slot named "dropout" (as the example's --dropout;
 * the Transformer's dropout_inner keeps its value); --dropout NAME=P any
 * slot the graph declares.  Repeatable, the last for a slot winning. */
static void dropout_option(Args *a, TrainOptions *o)
{
  const LmcModel *m = a->m;
  const char *v = value(a), *eq = strchr(v, '=');
  char name[160];
  snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - v) : 7, eq ? v : "dropout");
  int slot = -1;
  for (int i = 0; i < m->ndropout && slot < 0; i++)
    if (strcmp(m->dropout[i].name, name) == 0) slot = i;
  if (slot < 0) unknown_slot(a, name, eq != NULL);
  double p = number_in(a, eq ? eq + 1 : v, 0, nextafter(1.0, 0.0), "a probability in [0, 1)");
  if (o->ndropout == MAX_DROPOUT_SET) usage_error(a, "--dropout: at most %d of them", MAX_DROPOUT_SET);
  o->dropout[o->ndropout++] = (DropoutSet){ slot, p };
}

/* ----------------------------------------------------------- commands */

static void parse_train(Args *a, TrainOptions *out)
{
  TrainOptions o = {
    .data = "data/wikitext-2", .lr = 0, .clip = 0.25, .epochs = 40, .seed = 1111, 
    .log_interval = 200, .save = NULL, .threads = 1, .check_every = 100,
  };
  while (next_option(a)) {
    if (is(a, "--data")) o.data = path_value(a);
    else if (is(a, "--lr")) o.lr = number(a, 1e-300, INFINITY, "a positive number");
    else if (is(a, "--clip")) o.clip = number(a, 0, INFINITY, "a non-negative number (0: no clipping)");
    else if (is(a, "--epochs")) o.epochs = (int)integer(a, 1, 1000000000, "a positive integer");
    else if (is(a, "--seed")) o.seed = seed_value(a);
    else if (is(a, "--dropout")) dropout_option(a, &o);
    else if (is(a, "--log-interval")) o.log_interval = (int)integer(a, 1, 1000000000, "a positive integer");
    else if (is(a, "--save")) o.save = path_value(a);
    else if (is(a, "--dry-run")) no_value(a), o.dry_run = true;
    else if (is(a, "--optimizer")) {
      const char *v = value(a);
      if (strcmp(v, "sgd") == 0) o.adamw = false;
      else if (strcmp(v, "adamw") == 0) o.adamw = true;
      else usage_error(a, "--optimizer: expected 'sgd' or 'adamw', got '%s'", v);
    } else if (is(a, "--max-batches")) o.max_batches = (long)integer(a, 1, 1000000000000LL, "a positive integer");
    else if (is(a, "--threads")) o.threads = (int)integer(a, 1, 4096, "a positive integer");
    else if (is(a, "--precision")) o.bf16 = precision(a);
    else if (is(a, "--resume")) o.resume = path_value(a);
    else if (is(a, "--log-csv")) o.log_csv = path_value(a);
    else if (is(a, "--check-every")) o.check_every = (long)integer(a, 1, 1000000000000LL, "a positive integer");
    else unknown(a);
  }
  *out = o;
}

static void parse_eval(Args *a, CliOptions *out)
{
  const char *ckpt = NULL, *data = "data/wikitext-2", *split = "test";
  bool json = false, bf16 = false;
  int threads = 1;
  while (next_option(a)) {
    if (is(a, "--checkpoint")) ckpt = path_value(a);
    else if (is(a, "--data")) data = path_value(a);
    else if (is(a, "--split")) {
      split = value(a);
      if (strcmp(split, "valid") != 0 && strcmp(split, "test") != 0)
        usage_error(a, "--split: expected 'valid' or 'test', got '%s'", split);
    } else if (is(a, "--json")) no_value(a), json = true;
    else if (is(a, "--threads")) threads = (int)integer(a, 1, 4096, "a positive integer");
    else if (is(a, "--precision")) bf16 = precision(a);
    else unknown(a);
  }
  if (!ckpt) usage_error(a, "eval: --checkpoint FILE is required");
  out->eval.bf16 = bf16;
  out->eval.checkpoint = ckpt;
  out->eval.data = data;
  out->eval.split = split;
  out->eval.json = json;
  out->eval.threads = threads;
}

static void parse_generate(Args *a, CliOptions *out)
{
  GenOptions o = { .outf = "generated.txt", .words = 1000, .samples = 1, .threads = 1, .seed = 1111,
                   .rule = { .temperature = 1.0, .top_k = 0, .top_p = 1.0 } };
  while (next_option(a)) {
    if (is(a, "--checkpoint")) o.checkpoint = path_value(a);
    else if (is(a, "--words")) o.words = (int)integer(a, 0, 1000000000, "a non-negative integer");
    else if (is(a, "--temperature")) o.rule.temperature = number(a, 1e-3, INFINITY, "a number >= 1e-3");
    else if (is(a, "--top-k")) o.rule.top_k = (int)integer(a, 1, 1000000000, "a positive integer");
    else if (is(a, "--top-p")) o.rule.top_p = number(a, 0x1p-1074, 1, "a probability in (0, 1]");
    else if (is(a, "--seed")) o.seed = seed_value(a);
    else if (is(a, "--prompt")) o.prompt = a->inline_val ? a->inline_val : a->i < a->argc ? a->argv[a->i++] : value(a);
    else if (is(a, "--prompt-file")) o.prompt_file = path_value(a);
    else if (is(a, "--samples"))
      o.samples = (int)integer(a, 1, GEN_MAX_SAMPLES, "an integer in [1, 100000]");
    else if (is(a, "--no-kv-cache")) no_value(a), o.no_kv_cache = true;
    else if (is(a, "--outf")) o.outf = path_value(a);
    else if (is(a, "--threads")) o.threads = (int)integer(a, 1, 4096, "a positive integer");
    else if (is(a, "--precision")) o.bf16 = precision(a);
    else unknown(a);
  }
  if (!o.checkpoint) usage_error(a, "generate: --checkpoint FILE is required");
  if (o.prompt && o.prompt_file) usage_error(a, "generate: --prompt and --prompt-file exclude each other");
  out->gen = o;
}

int cli_parse(const LmcModel *m, const char *prog, int argc, char **argv, CliOptions *o, char *err,
              size_t errlen)
{
  *o = (CliOptions){ 0 };
  if (errlen) err[0] = '\0';
  Args a = { .m = m, .prog = prog, .cmd = argc > 1 ? argv[1] : "", .argc = argc, .argv = argv, .i = 2,
             .err = err, .errlen = errlen };
  if (setjmp(a.fail)) return 2;
  if (argc < 2) usage_error(&a, "no command: expected train, eval, generate or info (see '%s --help')", prog);
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    o->cmd = CLI_HELP;
    return 0;
  }
  bool known = strcmp(cmd, "train") == 0 || strcmp(cmd, "eval") == 0 || strcmp(cmd, "generate") == 0 ||
               strcmp(cmd, "info") == 0;
  if (!known)
    usage_error(&a, "unknown command '%s': expected train, eval, generate or info (see '%s --help')", cmd, prog);
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      o->cmd = CLI_HELP;
      o->help = cmd;
      return 0;
    }
    /* the value of --prompt may be anything */
    if (strcmp(argv[i], "--prompt") == 0) i++;
  }
  if (strcmp(cmd, "train") == 0) {
    o->cmd = CLI_TRAIN;
    parse_train(&a, &o->train);
  } else if (strcmp(cmd, "eval") == 0) {
    o->cmd = CLI_EVAL;
    parse_eval(&a, o);
  } else if (strcmp(cmd, "generate") == 0) {
    o->cmd = CLI_GENERATE;
    parse_generate(&a, o);
  } else {
    o->cmd = CLI_INFO;
    if (next_option(&a)) unknown(&a);
  }
  return 0;
}
