/*
 * main.c: the lmc command line, and the pipeline it runs.
 *
 *   graph file --front_load--> IR --verify--> autodiff --> passes --> emit_c
 *
 * The graph file is loaded once per specialisation (training at batch_size
 * with dropout, evaluation at eval_batch_size, generation at batch 1); each
 * goes through the same pipeline, and emit_c writes the three into one C
 * file sharing one parameter layout.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lmc.h"
#include "rt.h"

static const char usage[] =
  "usage: lmc compile GRAPH.lua [-o OUT.c] [-D name=value]... [-O0|-O1|-O2]\n"
  "                   [--disable-pass=NAME[,NAME]] [--enable-pass=NAME[,NAME]]\n"
  "                   [--emit=c|ir|dot] [--dump-ir=after:PASS] [--stats] [--dtype=f32|f64]\n"
  "                   [--time-limit=SECONDS]   (each run of the graph file; default 10)\n"
  "       lmc vocab DIR      vocabulary size and hash of a corpus folder\n"
  "       lmc passes         list the optimization passes\n"
  "       lmc --help | --version\n";

typedef struct {
  const char *graph, *out, *emit, *dump_after;
  Define def[256];
  int ndef;
  int level;
  bool enabled[64], disabled[64];
  bool stats;
  DType real;
  double time_limit;      /* seconds per run of the graph file, 0: the front end's default */
} CompileOptions;

static _Noreturn void usage_error(const char *fmt, const char *arg)
{
  fprintf(stderr, "lmc: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage);
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

static void add_define(CompileOptions *o, const char *def)
{
  const char *eq = strchr(def, '=');
  if (!eq || eq == def)
    usage_error("-D %s: expected name=value", def);
  if (o->ndef == (int)(sizeof o->def / sizeof o->def[0]))
    usage_error("-D %s: too many -D options", def);
  o->def[o->ndef++] = (Define){arena_printf("%.*s", (int)(eq - def), def), eq + 1};
}

static void set_passes(CompileOptions *o, const char *list, bool *which)
{
  char *copy = arena_strdup(list);
  for (char *name = strtok(copy, ","); name; name = strtok(NULL, ",")) {
    const Pass *p = find_pass(name);
    if (!p)
      usage_error("unknown pass '%s' (see lmc passes)", name);
    which[p - passes] = true;
  }
  (void)o;
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
 * Transformer attends within its window) keeps bptt.  The runtime
 * evaluates in windows of the program's max_seq when it has state. */
enum { EVAL_SPAN = 2 };

static bool has_state(const Graph *g)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == OP_INPUT && g->node[i].a.state)
      return true;
  return false;
}

static Graph *load(const CompileOptions *o, int batch, bool training, int max_seq, Hyper **hyper, int *nhyper)
{
  FrontOptions fo = {
    .max_seq = max_seq,
    .path = o->graph,
    .libdir = find_libdir(),
    .def = (Define *)o->def,
    .ndef = o->ndef,
    .batch = batch,
    .training = training,
    .real = o->real,
    .mem_limit = 256u << 20,
    .instr_limit = 200000000,
    .time_limit = o->time_limit,
  };
  return front_load(&fo, hyper, nhyper);
}

/* The temporary output of the compile in progress, removed at exit unless
 * close_output renamed it into place: an error found while emitting exits
 * from wherever it is found. */
static char *pending_tmp;

static void remove_pending_output(void)
{
  if (pending_tmp)
    remove(pending_tmp);
}

/* Writes through a temporary file renamed into place, so a failed compile
 * leaves no output and never a half-written one. */
static FILE *open_output(const char *path, char **tmp)
{
  if (!path || !strcmp(path, "-")) {
    *tmp = NULL;
    return stdout;
  }
  *tmp = xasprintf("%s.tmp%d", path, (int)getpid());
  FILE *f = fopen(*tmp, "w");
  if (!f) {
    fprintf(stderr, "%s: error: cannot write: %s\n", path, strerror(errno));
    exit(1);
  }
  static bool registered;
  if (!registered)
    registered = atexit(remove_pending_output) == 0;
  pending_tmp = *tmp;
  return f;
}

static void close_output(FILE *f, const char *path, char *tmp)
{
  if (!tmp) {
    fflush(f);
    return;
  }
  if (ferror(f) | fclose(f) || rename(tmp, path) != 0) {
    fprintf(stderr, "%s: error: cannot write: %s\n", path, strerror(errno));
    exit(1);   /* remove_pending_output removes tmp */
  }
  pending_tmp = NULL;
  free(tmp);
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
  CompileOptions o = {.level = 2, .emit = "c", .real = DT_F32};
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-o")) {
      if (i + 1 >= argc)
        usage_error("%s needs a file name", a);
      o.out = argv[++i];
    } else if (!strcmp(a, "-D")) {
      if (i + 1 >= argc)
        usage_error("%s needs name=value", a);
      add_define(&o, argv[++i]);
    } else if (!strncmp(a, "-D", 2)) {
      add_define(&o, a + 2);
    } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2")) {
      o.level = a[2] - '0';
    } else if (!strncmp(a, "--disable-pass=", 15)) {
      set_passes(&o, a + 15, o.disabled);
    } else if (!strncmp(a, "--enable-pass=", 14)) {
      set_passes(&o, a + 14, o.enabled);
    } else if (!strncmp(a, "--emit=", 7)) {
      o.emit = a + 7;
      if (strcmp(o.emit, "c") && strcmp(o.emit, "ir") && strcmp(o.emit, "dot"))
        usage_error("--emit=%s: expected c, ir or dot", o.emit);
    } else if (!strcmp(a, "--stats")) {
      o.stats = true;
    } else if (!strncmp(a, "--dump-ir=after:", 16)) {
      o.dump_after = a + 16;
      if (!find_pass(o.dump_after) && strcmp(o.dump_after, "front") && strcmp(o.dump_after, "autodiff"))
        usage_error("--dump-ir=after:%s: unknown pass (see lmc passes)", o.dump_after);
    } else if (!strncmp(a, "--dtype=", 8)) {
      if (!strcmp(a + 8, "f32"))
        o.real = DT_F32;
      else if (!strcmp(a + 8, "f64"))
        o.real = DT_F64;
      else
        usage_error("%s: expected --dtype=f32 or --dtype=f64", a);
    } else if (!strncmp(a, "--time-limit=", 13)) {
      char *end;
      o.time_limit = strtod(a + 13, &end);
      if (end == a + 13 || *end || !(o.time_limit > 0 && o.time_limit <= 86400))
        usage_error("%s: expected a number of seconds, more than 0 and at most 86400", a);
    } else if (a[0] == '-') {
      usage_error("unknown option '%s'", a);
    } else if (o.graph) {
      usage_error("more than one graph file ('%s')", a);
    } else {
      o.graph = a;
    }
  }
  if (!o.graph)
    usage_error("%s", "compile: no graph file");
  if (o.dump_after && find_pass(o.dump_after) && !pass_on(&o, (int)(find_pass(o.dump_after) - passes)))
    fprintf(stderr, "lmc: note: --dump-ir=after:%s: that pass does not run with these flags; nothing dumped\n",
            o.dump_after);

  Hyper *hyper;
  int nhyper;
  Program p = {.source = o.graph, .flags = join_args(argc, argv)};
  p.train = load(&o, 0, true, 0, &p.hyper, &p.nhyper);
  if (!strcmp(o.emit, "c"))
    ir_drop_output(p.train, "logp");   /* only generation reads it */
  optimize(p.train, &o, true);
  if (strcmp(o.emit, "c") && !o.stats) {
    char *tmp;
    FILE *f = open_output(o.out, &tmp);
    if (!strcmp(o.emit, "ir"))
      print_ir(p.train, f);
    else
      emit_dot(p.train, f);
    close_output(f, o.out, tmp);
    arena_free_all();
    return 0;
  }
  p.eval = load(&o, -1, false, 0, &hyper, &nhyper);
  if (has_state(p.eval))   /* see eval_span */
    p.eval = load(&o, -1, false, EVAL_SPAN * p.eval->max_seq, &hyper, &nhyper);
  ir_drop_output(p.eval, "logp");
  optimize(p.eval, &o, false);
  p.gen = load(&o, 1, false, 0, &hyper, &nhyper);
  ir_drop_output(p.gen, "loss");   /* generation samples from logp; see last_step.c */
  optimize(p.gen, &o, false);
  char *tmp;
  FILE *f = open_output(o.out, &tmp);
  if (!strcmp(o.emit, "c"))
    emit_c(&p, f);
  else if (!strcmp(o.emit, "ir"))
    print_ir(p.train, f);
  else
    emit_dot(p.train, f);
  /* the statistics go to stdout, or to stderr when the output does */
  if (o.stats)
    print_stats(&p, f == stdout ? stderr : stdout);
  close_output(f, o.out, tmp);
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

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("lmc %s\n", LMC_VERSION);
    return 0;
  }
  if (!strcmp(argv[1], "compile"))
    return cmd_compile(argc - 2, argv + 2);
  if (!strcmp(argv[1], "vocab"))
    return cmd_vocab(argc - 2, argv + 2);
  if (!strcmp(argv[1], "passes"))
    return cmd_passes();
  usage_error("unknown command '%s'", argv[1]);
}
