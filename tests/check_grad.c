/*
 * check_grad.c: every op's gradient, and the five language models of graphs/
 * at tiny shapes, against central finite differences.
 *
 * Each case is a graph file compiled with `lmc compile --dtype=f64`, linked
 * with tests/grad/driver.c and run; the driver prints each parameter's
 * norm-wise relative error next to the tolerance (1e-6) and fails above it.
 */
#include <string.h>
#include "testutil.h"

typedef struct {
  const char *graph;   /* graph file */
  const char *defs;    /* extra lmc flags */
  const char *args;    /* driver arguments: T [dropout] */
} Case;

static const Case cases[] = {
  {"tests/grad/unary.lua", "", ""},
  {"tests/grad/log_sqrt.lua", "", ""},
  {"tests/grad/binary.lua", "", ""},
  {"tests/grad/matmul.lua", "", ""},
  {"tests/grad/bmm.lua", "", ""},
  {"tests/grad/embedding.lua", "-D bptt=3 -D batch_size=4", "2"},
  {"tests/grad/softmax.lua", "", ""},
  {"tests/grad/normalize.lua", "", ""},
  {"tests/grad/nll_loss.lua", "", "3"},
  {"tests/grad/shape_ops.lua", "", ""},
  {"tests/grad/dropout.lua", "", "1 0.3"},
  {"tests/grad/scan.lua", "", "4"},
  /* the whole LSTM language model, dropout on, a partial last window */
  {"graphs/lstm.lua",
   "-D ntoken=13 -D emsize=4 -D nhid=5 -D nlayers=2 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2"},
  {"graphs/rnn_tanh.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=3 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "3 0.1"},
  {"graphs/rnn_relu.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=2 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "2 0.1"},
  {"graphs/gru.lua",
   "-D ntoken=11 -D emsize=5 -D nhid=4 -D nlayers=2 -D bptt=3 -D batch_size=2 -D eval_batch_size=2",
   "3 0.1"},
  /* the Transformer: attention over a run-time T, both dropout slots on */
  {"graphs/transformer.lua",
   "-D ntoken=13 -D emsize=8 -D nhid=6 -D nhead=2 -D nlayers=2 -D bptt=4 -D batch_size=3 -D eval_batch_size=2",
   "3 0.2"},
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
  ck_assert_int_eq(system("mkdir -p build/grad"), 0);
  /* LMC and SAN (extra flags for the emitted C) from `make sanitize` */
  const char *lmc = getenv("LMC") ? getenv("LMC") : "build/lmc";
  const char *san = getenv("SAN") ? getenv("SAN") : "";
  snprintf(cmd, sizeof cmd, "%s compile %s --dtype=f64 %s -o build/grad/%s.c", lmc, c->graph, c->defs, name);
  ck_assert_msg(sh(cmd) == 0, "lmc compile failed: %s", c->graph);
  snprintf(cmd, sizeof cmd,
           "clang -std=c11 -O1 %s -Wall -Wextra -Werror -Iruntime -o build/grad/%s build/grad/%s.c "
           "tests/grad/driver.c -lopenblas -lm", san, name, name);
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
