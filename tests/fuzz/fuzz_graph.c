/*
 * fuzz_graph.c: libFuzzer target for the graph front end and the whole
 * compile.  The input bytes are a graph file's text; it is written to a
 * temporary folder and compiled as `lmc compile` does (the training,
 * evaluation and generation specialisations, verify, autodiff, the -O2
 * passes, emit_c into memory).  The sandbox runs with small limits (64 MiB,
 * 2e6 instructions) so every input ends well inside libFuzzer's timeout.
 *
 * A user's mistake prints its message and longjmps here (user_error_jmp)
 * instead of exiting; any other exit (die(): a compiler bug), a sanitizer
 * report, a leak or a hang is a finding.  `require "nn"` finds graphs/lib
 * through LMC_LIBDIR, else graphs/lib under the current folder (make fuzz
 * runs from the project root).  Run: make fuzz (tests/fuzz/README.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lmc.h"

static char graph_path[256];
static const char *libdir;

/* The temporary folder and its graph.lua, removed at exit. */
static void remove_graph(void)
{
  unlink(graph_path);
  *strrchr(graph_path, '/') = 0;
  rmdir(graph_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(graph_path, sizeof graph_path, "%s/lmc_fuzz_graph_XXXXXX", tmp);
  if (!mkdtemp(graph_path)) {
    perror(graph_path);
    abort();
  }
  strcat(graph_path, "/graph.lua");
  atexit(remove_graph);
  libdir = getenv("LMC_LIBDIR") ? getenv("LMC_LIBDIR") : "graphs/lib";
  return 0;
}

static Graph *load(int batch, bool training, int max_seq, Hyper **hyper, int *nhyper)
{
  FrontOptions fo = {
    .path = graph_path,
    .libdir = libdir,
    .batch = batch,
    .training = training,
    .max_seq = max_seq,
    .real = DT_F32,
    .mem_limit = 64u << 20,
    .instr_limit = 2000000,
  };
  return front_load(&fo, hyper, nhyper);
}

/* compiler/main.c's optimize() at -O2. */
static void optimize(Graph *g, bool primary)
{
  verify_or_die(g, "front end");
  if (ir_find_output(g, "loss") >= 0 && primary) {
    autodiff(g);
    verify_or_die(g, "autodiff");
  }
  for (int i = 0; i < npasses; i++)
    if (passes[i].level <= 2) {
      passes[i].run(g);
      verify_or_die(g, passes[i].name);
    }
}

static bool has_state(const Graph *g)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == OP_INPUT && g->node[i].a.state)
      return true;
  return false;
}

/* cmd_compile's pipeline for --emit=c. */
static void compile(void)
{
  Hyper *hyper;
  int nhyper;
  Program p = {.source = graph_path, .flags = "fuzz"};
  p.train = load(0, true, 0, &p.hyper, &p.nhyper);
  ir_drop_output(p.train, "logp");
  optimize(p.train, true);
  p.eval = load(-1, false, 0, &hyper, &nhyper);
  if (has_state(p.eval))
    p.eval = load(-1, false, 2 * p.eval->max_seq, &hyper, &nhyper);   /* main.c's EVAL_SPAN */
  ir_drop_output(p.eval, "logp");
  optimize(p.eval, false);
  p.gen = load(1, false, 0, &hyper, &nhyper);
  ir_drop_output(p.gen, "loss");
  optimize(p.gen, false);
  place(&p);   /* an input the C does not take is a user error: it longjmps */
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  emit_c(&p, out);
  fclose(out);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  FILE *f = fopen(graph_path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    perror(graph_path);
    abort();
  }
  jmp_buf caught;
  if (!setjmp(caught)) {
    user_error_jmp = &caught;
    compile();
  }
  user_error_jmp = NULL;
  arena_free_all();
  return 0;
}
