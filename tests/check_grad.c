/*
 * check_grad.c: every op's gradient, and the five language models of graphs/
 * at tiny shapes, against central finite differences.
 *
 * Each case is a graph file compiled with `lmc compile --dtype=f64`, linked
 * with tests/grad/driver.c and runtime/optimizer.c and run; the driver prints each parameter's
 * norm-wise relative error next to the tolerance (1e-6) and fails above it.
 */
#include <stdbool.h>
#include <string.h>
#include "testutil.h"

typedef struct {
  const char *graph;   /* graph file */
  const char *defs;    /* extra lmc flags */
  const char *args;    /* driver arguments: T [dropout] */
  const char *name;    /* of the build, when not the graph's */
  bool rows;           /* the embedding's gradient is rows (row-grad) */
} Case;

static const Case cases[] = {
  {"tests/grad/unary.lua", "", "", NULL, false},
  {"tests/grad/log_sqrt.lua", "", "", NULL, false},
  {"tests/grad/activations.lua", "", "", NULL, false},
  {"tests/grad/binary.lua", "", "", NULL, false},
  {"tests/grad/pow_max.lua", "", "", NULL, false},
  {"tests/grad/matmul.lua", "", "", NULL, false},
  {"tests/grad/bmm.lua", "", "", NULL, false},
  {"tests/grad/embedding.lua", "-D bptt=3 -D batch_size=4", "2", NULL, false},
  {"tests/grad/softmax.lua", "", "", NULL, false},
  {"tests/grad/normalize.lua", "", "", NULL, false},
  {"tests/grad/nll_loss.lua", "", "3", NULL, false},
  {"tests/grad/shape_ops.lua", "", "", NULL, false},
  {"tests/grad/dropout.lua", "", "1 0.3", NULL, false},
  {"tests/grad/scan.lua", "", "4", NULL, false},
  {"tests/grad/scan_pass.lua", "", "4", NULL, false},
  {"tests/grad/seq_slice.lua", "", "3", NULL, false},
  /* an objective beyond the loss (L2): its gradient; the logged loss is
   * the evaluated one; and with dropout on */
  {"tests/grad/objective.lua", "-D bptt=3 -D batch_size=3 -D eval_batch_size=3", "3", NULL, false},
  {"tests/grad/objective.lua", "-D bptt=3 -D batch_size=3 -D eval_batch_size=3", "2 0.3", "objective_drop", false},
  /* the whole LSTM language model, dropout on, a partial last window */
  {"graphs/lstm.lua",
   "-D ntoken=13 -D emsize=4 -D nhid=5 -D nlayers=2 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2", NULL, false},
  /* a vocabulary over twice the batch's tokens: the embedding's gradient
   * as the rows the batch read (row-grad), in a partial window; tied to
   * the decoder, the table's gradient is dense */
  {"graphs/lstm.lua",
   "-D ntoken=29 -D emsize=4 -D nhid=5 -D nlayers=1 -D bptt=4 -D batch_size=2 -D eval_batch_size=2",
   "3 0.2", "lstm_rows", true},
  {"graphs/lstm.lua",
   "-D ntoken=29 -D emsize=5 -D nhid=5 -D nlayers=1 -D bptt=4 -D batch_size=2 -D eval_batch_size=2 -D tied=true",
   "3 0.2", "lstm_tied", false},
  {"graphs/rnn_tanh.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=3 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "3 0.1", NULL, false},
  {"graphs/rnn_relu.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=2 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "2 0.1", NULL, false},
  {"graphs/gru.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=2 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "3 0.1", NULL, false},
  /* AWD-LSTM: embedding, locked and weight dropout on, AR and TAR */
  {"graphs/awd_lstm.lua",
   "-D ntoken=13 -D emsize=4 -D nhid=5 -D nlayers=3 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2", NULL, false},
  /* the Transformer: attention over a run-time T, both dropout slots on */
  {"graphs/transformer.lua",
   "-D ntoken=13 -D emsize=8 -D nhid=6 -D nhead=2 -D nlayers=2 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2", NULL, false},
  /* the nanoGPT-style GPT: learned positions, pre-norm blocks, exact GELU, tied head */
  {"graphs/gpt.lua",
   "-D ntoken=13 -D n_embd=8 -D n_head=2 -D n_layer=2 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2", NULL, false},
};

static int sh(const char *cmd)
{
  printf("$ %s\n", cmd);
  fflush(stdout);
  int rc = system(cmd);
  fflush(stdout);
  return rc;
}

START_TEST(gradient)
{
  const Case *c = &cases[_i];
  const char *base = strrchr(c->graph, '/') + 1;
  char name[64], cmd[1024];
  snprintf(name, sizeof name, "%.*s", (int)(strlen(base) - 4), base);
  if (c->name)
    snprintf(name, sizeof name, "%s", c->name);
  ck_assert_int_eq(system("mkdir -p build/grad"), 0);
  /* LMC and SAN (extra flags for the emitted C) from `make sanitize` */
  const char *lmc = getenv("LMC") ? getenv("LMC") : "build/lmc";
  const char *san = getenv("SAN") ? getenv("SAN") : "";
  snprintf(cmd, sizeof cmd, "%s compile %s --dtype=f64 %s -o build/grad/%s.c", lmc, c->graph, c->defs, name);
  ck_assert_msg(sh(cmd) == 0, "lmc compile failed: %s", c->graph);
  snprintf(cmd, sizeof cmd, "grep -q lmc_unique_ids build/grad/%s.c", name);
  ck_assert_msg((system(cmd) == 0) == c->rows, "%s: the embedding's gradient %s rows", name,
                c->rows ? "is not" : "is");
  snprintf(cmd, sizeof cmd,
           "clang -std=c11 -O1 %s -Wall -Wextra -Werror -Iruntime -DLMC_REAL=double -o build/grad/%s build/grad/%s.c "
           "tests/grad/driver.c runtime/optimizer.c -lopenblas -lm", san, name, name);
  ck_assert_msg(sh(cmd) == 0, "clang failed: %s", c->graph);
  snprintf(cmd, sizeof cmd, "build/grad/%s %s", name, c->args);
  ck_assert_msg(sh(cmd) == 0, "gradient check failed: %s", c->graph);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("grad");
  TCase *tc = tcase_create("finite differences");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, gradient, 0, (int)(sizeof cases / sizeof cases[0]));
  suite_add_tcase(s, tc);
  return run_suite(s);
}
