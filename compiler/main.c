/*
 * main.c: the lmc command line, and the pipeline it runs.
 *
 *   graph file --front_load--> IR --verify--> autodiff --> passes --> place --> emit_c
 *
 * The graph file is loaded once per specialisation (training at batch_size
 * with dropout, evaluation at eval_batch_size, generation at batch 1 and at
 * SAMPLE_BATCH, and, for a graph whose positions meet only in causal
 * attention, generation over key/value caches at batch 1 and at SAMPLE_BATCH,
 * kv_cache.c): up to six runs
 * of it.  Each goes through the same pipeline, and emit_c writes them into
 * one C file sharing one parameter layout.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lmc.h"
#include "options.h"
#include "outfile.h"
#include "rt.h"

static _Noreturn void usage_error(const char *fmt, const char *arg)
{
  fprintf(stderr, "lmc: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", lmc_usage);
  exit(2);
}

/* graphs/lib next to the build folder holding this executable, unless
 * LMC_LIBDIR says otherwise. */
static const char *find_libdir(void)
{
  const char *env = getenv("LMC_LIBDIR");
  if (env)
    return env;
  static char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
  if (n <= 0)
    return "graphs/lib";
  path[n] = 0;
  char *dir = dirname(dirname(path));   /* build/lmc -> project root */
  memmove(path, dir, strlen(dir) + 1);
  strcat(path, "/graphs/lib");
  return path;
}

static bool pass_on(const CompileOptions *o, int i)
{
  if (o->disabled[i])
    return false;
  return o->enabled[i] || passes[i].level <= o->level;
}

static void dump(Graph *g, const CompileOptions *o, const char *after)
{
  if (o->dump_after && !strcmp(o->dump_after, after)) {
    printf("; after %s\n", after);
    print_ir(g, stdout);
  }
}

/* Runs the pass pipeline over one specialisation. */
static void optimize(Graph *g, const CompileOptions *o, bool primary)
{
  verify_or_die(g, "front end");
  if (primary)
    dump(g, o, "front");
  if (ir_find_output(g, "loss") >= 0 && primary) {
    autodiff(g);
    verify_or_die(g, "autodiff");
    dump(g, o, "autodiff");
  }
  for (int i = 0; i < npasses; i++) {
    if (!pass_on(o, i))
      continue;
    passes[i].run(g);
    verify_or_die(g, passes[i].name);
    if (primary)
      dump(g, o, passes[i].name);
  }
}

/* A recurrent model's evaluation program runs EVAL_SPAN windows of bptt
 * in one call.  Evaluation carries the hidden state from window to window
 * and has no gradient to truncate, so a longer window gives main.py's
 * per-token losses exactly, and the decoder's GEMM and log_softmax get
 * EVAL_SPAN times the rows (700 for the default LSTM, the training
 * shape, where GEMM runs faster than at 350).  A model without state (the
 * Transformer attends within its window) keeps bptt.  Whether the model
 * has state is the training program's answer, read before the evaluation
 * program is loaded, which needs its max_seq from the start.  The runtime
 * evaluates in windows of the program's max_seq when it has state (so a
 * graph that declared state in one specialisation only would still be
 * evaluated right, in windows of bptt). */
enum { EVAL_SPAN = 2 };

/* generate --samples N draws N independent samples SAMPLE_BATCH at a
 * time, one column each, through a copy of the generation program at that
 * batch: the per-word products read each weight once for all of them
 * (one sample keeps the batch-1 program).  A smaller evaluation batch caps
 * it, so that a model whose evaluation program fits has a sample program
 * that fits; at 1 there is none, and the runtime runs the samples one at a
 * time through the gen program. */
enum { SAMPLE_BATCH = 8 };

static bool has_state(const Graph *g)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == OP_INPUT && g->node[i].a.state)
      return true;
  return false;
}

static Graph *load(const CompileOptions *o, int batch, bool training, int max_seq, bool kv_cache, Hyper **hyper,
                   int *nhyper)
{
  FrontOptions fo = {
    .max_seq = max_seq,
    .path = o->graph,
    .libdir = find_libdir(),
    .def = (Define *)o->def,
    .ndef = o->ndef,
    .batch = batch,
    .training = training,
    .kv_cache = kv_cache,
    .real = o->real,
    .mem_limit = 256u << 20,
    .instr_limit = 200000000,
    .time_limit = o->time_limit,
  };
  return front_load(&fo, hyper, nhyper);
}

/* The output file of the compile in progress (outfile.h), abandoned at
 * exit unless write_output committed it: an error found while emitting
 * exits from wherever it is found, and a failed compile leaves no output,
 * never a half-written one. */
static OutFile pending;

static void abandon_output(void)
{
  outfile_abort(&pending);
}

static bool to_stdout(const char *path)
{
  return !path || !strcmp(path, "-");
}

static FILE *open_output(const char *path)
{
  if (to_stdout(path))
    return stdout;
  char err[ERRLEN];
  if (outfile_open(&pending, path, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  static bool registered;
  if (!registered)
    registered = atexit(abandon_output) == 0;
  return pending.f;
}

static void close_output(FILE *f)
{
  if (f == stdout)
    return;   /* main checks stdout at exit */
  char err[ERRLEN];
  if (outfile_commit(&pending, false, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

/* Before any work: the graph must be a regular file (a FIFO or /dev/zero
 * would hang the front end; its size cap is the front end's, shared with
 * modules), and the output a path that may be replaced and is not the
 * graph itself. */

static void check_files(const CompileOptions *o)
{
  struct stat st;
  if (stat(o->graph, &st) != 0) {
    fprintf(stderr, "%s: error: cannot open: %s\n", o->graph, strerror(errno));
    exit(1);
  }
  if (!S_ISREG(st.st_mode)) {
    fprintf(stderr, "%s: error: a graph file must be a regular file, not %s\n", o->graph,
            S_ISDIR(st.st_mode) ? "a folder" : S_ISFIFO(st.st_mode) ? "a FIFO" :
            S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file");
    exit(1);
  }
  if (to_stdout(o->out))
    return;
  if (outfile_same_file(o->out, o->graph)) {
    fprintf(stderr, "%s: error: the output would replace the graph file %s\n", o->out, o->graph);
    exit(1);
  }
  char err[ERRLEN];
  if (outfile_check(o->out, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

static char *join_args(int argc, char **argv)
{
  size_t n = 1;
  for (int i = 0; i < argc; i++)
    n += strlen(argv[i]) + 1;
  char *s = arena_calloc(n, 1);
  for (int i = 0; i < argc; i++) {
    if (i)
      strcat(s, " ");
    strcat(s, argv[i]);
  }
  return s;
}

static int cmd_compile(int argc, char **argv)
{
  CompileOptions o;
  char err[ERRLEN];
  if (options_parse(argc, argv, &o, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n%s", err, lmc_usage);
    exit(2);
  }
  check_files(&o);
  if (o.dump_after && find_pass(o.dump_after) && !pass_on(&o, (int)(find_pass(o.dump_after) - passes)))
    fprintf(stderr, "lmc: note: --dump-ir=after:%s: that pass does not run with these flags; nothing dumped\n",
            o.dump_after);

  Hyper *hyper;
  int nhyper;
  Program p = {.source = o.graph, .flags = join_args(argc, argv)};
  p.train = load(&o, 0, true, 0, false, &p.hyper, &p.nhyper);
  int eval_seq = has_state(p.train) ? EVAL_SPAN * p.train->max_seq : 0;   /* see EVAL_SPAN */
  if (!strcmp(o.emit, "c"))
    ir_drop_output(p.train, "logp");   /* only generation reads it */
  optimize(p.train, &o, true);
  if (strcmp(o.emit, "c") && !o.stats) {
    FILE *f = open_output(o.out);
    if (!strcmp(o.emit, "ir"))
      print_ir(p.train, f);
    else
      emit_dot(p.train, f);
    close_output(f);
    arena_free_all();
    return 0;
  }
  p.eval = load(&o, -1, false, eval_seq, false, &hyper, &nhyper);
  ir_drop_output(p.eval, "logp");
  ir_drop_output(p.eval, "objective");   /* evaluation reports the loss */
  optimize(p.eval, &o, false);
  p.gen = load(&o, 1, false, 0, false, &hyper, &nhyper);
  ir_drop_output(p.gen, "loss");   /* generation samples from logp; see last_step.c */
  ir_drop_output(p.gen, "objective");
  bool kv = kv_cacheable(p.gen);
  optimize(p.gen, &o, false);
  int sample_batch = p.eval->batch < SAMPLE_BATCH ? p.eval->batch : SAMPLE_BATCH;
  if (sample_batch > 1) {
    p.sample = load(&o, sample_batch, false, 0, false, &hyper, &nhyper);
    ir_drop_output(p.sample, "loss");
    ir_drop_output(p.sample, "objective");
    optimize(p.sample, &o, false);
  }
  if (kv) {   /* generation over key/value caches: kv_cache.c */
    p.step = load(&o, 1, false, 0, true, &hyper, &nhyper);
    ir_drop_output(p.step, "loss");
    ir_drop_output(p.step, "objective");
    optimize(p.step, &o, false);
    if (sample_batch > 1) {   /* and the samples of --samples N, a column each */
      p.steps = load(&o, sample_batch, false, 0, true, &hyper, &nhyper);
      ir_drop_output(p.steps, "loss");
      ir_drop_output(p.steps, "objective");
      optimize(p.steps, &o, false);
    }
  }
  if (!strcmp(o.emit, "c"))
    place(&p);   /* where every value lives: the layout, each program's arena */
  FILE *f = open_output(o.out);
  if (!strcmp(o.emit, "c"))
    emit_c(&p, f);
  else if (!strcmp(o.emit, "ir"))
    print_ir(p.train, f);
  else
    emit_dot(p.train, f);
  /* the statistics go to stdout, or to stderr when the output does */
  if (o.stats)
    print_stats(&p, f == stdout ? stderr : stdout);
  close_output(f);
  arena_free_all();
  return 0;
}

static int cmd_vocab(int argc, char **argv)
{
  if (argc != 1)
    usage_error("%s", "vocab: expected one corpus folder");
  Corpus c;
  char err[ERRLEN];
  if (corpus_load(&c, argv[0], err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  printf("%d\t%016llx\n", c.dict.nword, (unsigned long long)dict_hash(&c.dict));
  corpus_free(&c);
  return 0;
}

static int cmd_passes(void)
{
  printf("%-20s %-8s %s\n", "pass", "levels", "what it does");
  for (int i = 0; i < npasses; i++) {
    char levels[16] = "";
    for (int l = passes[i].level; l <= 2; l++)
      snprintf(levels + strlen(levels), sizeof levels - strlen(levels), "%s-O%d", l > passes[i].level ? "," : "", l);
    printf("%-20s %-8s %s\n", passes[i].name, levels, passes[i].what);
  }
  return 0;
}

/* Every command's standard output is checked at exit: `lmc compile -o -
 * >/dev/full` must not exit 0. */
static int finish(int rc)
{
  if (outfile_close_stdout("lmc") < 0 && rc == 0)
    rc = 1;
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(lmc_usage, argc < 2 ? stderr : stdout);
    return finish(argc < 2 ? 2 : 0);
  }
  if (!strcmp(argv[1], "--version")) {
    printf("lmc %s\n", LMC_VERSION);
    return finish(0);
  }
  if (!strcmp(argv[1], "compile"))
    return finish(cmd_compile(argc - 2, argv + 2));
  if (!strcmp(argv[1], "vocab"))
    return finish(cmd_vocab(argc - 2, argv + 2));
  if (!strcmp(argv[1], "passes"))
    return finish(cmd_passes());
  usage_error("unknown command '%s'", argv[1]);
}
