/*
 * check_scope.c: scopes (the graph API's scope(), Node.scope through
 * nn.lua, autodiff and the passes) and the kernel names made from them
 * (compiler/kernel_name.c).
 *
 * The last tests compile the LSTM and the Transformer training programs
 * as lmc compile does (-O2) and print the name of every node that has a
 * kernel of its own, as the emitter names them (identical kernels then
 * share one definition and a name kernel_shared_name gives), so the names
 * can be read in the test log.  Run from the repository root (graphs/,
 * graphs/lib).
 */
#include <ctype.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lmc.h"
#include "testutil.h"

static char dir[64];

static void setup(void)
{
  strcpy(dir, "/tmp/check_scope.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
  arena_free_all();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

static FrontOptions opts(const char *path, bool training)
{
  return (FrontOptions){
    .path = path, .libdir = "graphs/lib", .batch = training ? 0 : -1, .training = training,
    .real = DT_F32, .mem_limit = 64u << 20, .instr_limit = 20000000,
  };
}

/* The graph file src, written under the temporary folder. */
static const char *put(const char *src)
{
  static char path[128];
  snprintf(path, sizeof path, "%s/g.lua", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(src, f);
  fclose(f);
  return path;
}

static Graph *load(const char *src)
{
  FrontOptions o = opts(put(src), true);
  Hyper *h;
  int nh;
  return front_load(&o, &h, &nh);
}

/* Expects src to fail with status 1 and a message holding want. */
static void fails(const char *src, const char *want)
{
  FrontOptions o = opts(put(src), true);
  int fd[2];
  ck_assert_int_eq(pipe(fd), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(fd[1], 2);
    Hyper *h;
    int nh;
    front_load(&o, &h, &nh);
    _exit(0);
  }
  close(fd[1]);
  char err[2048];
  size_t n = 0;
  ssize_t k;
  while (n + 1 < sizeof err && (k = read(fd[0], err + n, sizeof err - 1 - n)) > 0)
    n += (size_t)k;
  err[n] = 0;
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(err, want))
    ck_abort_msg("status %d, stderr:\n%s\nexpected status 1 and: %s", st, err, want);
}

/* The live node of op whose first input is node x, or -1. */
static int reader(const Graph *g, Op op, int x)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == op && g->node[i].nin > 0 && g->node[i].in[0] == x)
      return i;
  return -1;
}

static int find_input(const Graph *g, const char *name)
{
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == OP_INPUT && !strcmp(g->node[i].a.name, name))
      return i;
  return -1;
}

/* ------------------------------------------------------------ scope() */

START_TEST(scope_nests_and_returns)
{
  Graph *g = load("local x = input('x', 'f32', { 3 })\n"
                  "local a = tanh(x)\n"
                  "local b, c, k = scope('outer', function(u, none, seven)\n"
                  "  assert(none == nil and seven == 7)\n"
                  "  local y = sigmoid(u)\n"
                  "  local z = scope('outer.inner', function() return exp(y) end)\n"
                  "  return relu(z), y, 5\n"
                  "end, a, nil, 7)\n"
                  "assert(k == 5)\n"
                  "output('b', neg(b))\n");
  const char *want[][2] = {{"tanh", ""}, {"sigmoid", "outer"}, {"exp", "outer.inner"},
                           {"relu", "outer"}, {"neg", ""}};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    int n = -1;
    for (int j = 0; j < g->nnode && n < 0; j++)
      if (!strcmp(op_info[g->node[j].op].name, want[i][0]))
        n = j;
    ck_assert_int_ge(n, 0);
    ck_assert_str_eq(g->node[n].scope, want[i][1]);
  }
  ck_assert_str_eq(g->node[find_input(g, "x")].scope, "");
}
END_TEST

START_TEST(scope_restored_after_an_error)
{
  Graph *g = load("local x = input('x', 'f32', { 3 })\n"
                  "assert(not pcall(scope, 'a', function() local y = tanh(x); error('no') end))\n"
                  "scope('b', function() assert(not pcall(scope, 'c', error, 'no')) end)\n"
                  "output('y', exp(x))\n");
  ck_assert_str_eq(g->node[reader(g, OP_TANH, find_input(g, "x"))].scope, "a");
  ck_assert_str_eq(g->node[reader(g, OP_EXP, find_input(g, "x"))].scope, "");
}
END_TEST

START_TEST(scope_names_interned)
{
  Graph *g = load("local x = input('x', 'f32', { 3 })\n"
                  "local a = scope('s', tanh, x)\n"
                  "local b = scope('s', exp, x)\n"
                  "output('y', a + b)\n");
  int x = find_input(g, "x");
  const char *a = g->node[reader(g, OP_TANH, x)].scope, *b = g->node[reader(g, OP_EXP, x)].scope;
  ck_assert_str_eq(a, "s");
  ck_assert_ptr_eq(a, b);
}
END_TEST

START_TEST(scope_mistakes)
{
  fails("scope('a b', function() end)\n", "g.lua:1: error: scope: the name \"a b\" holds a character other");
  fails("\nscope(nil, function() end)\n", "g.lua:2: error: scope: the name must be a string, got nil");
  fails("scope('a', 3)\n", "g.lua:1: error: scope: the body must be a function, got number");
  fails("scope(('x'):rep(129), function() end)\n", "is too long");
  fails("local function f(d) return scope('s' .. d, f, d + 1) end\nf(0)\n",
        "g.lua:1: error: scope: more than 64 scopes inside one another");
}
END_TEST

/* A user error inside scopes, caught as the fuzz target catches it: the Lua
 * state is closed with the scopes' guards still open. */
START_TEST(scope_error_caught)
{
  jmp_buf caught;
  user_error_jmp = &caught;
  if (!setjmp(caught)) {
    load("local x = input('x', 'f32', { 3 })\n"
         "scope('a', scope, 'b', function() return matmul(x, x) end)\n");
    ck_abort_msg("the graph loaded");
  }
  user_error_jmp = NULL;
  Graph *g = load("output('y', scope('c', tanh, input('x', 'f32', { 3 })))\n");
  ck_assert_str_eq(g->node[ir_find_output(g, "y")].scope, "c");
}
END_TEST

/* ------------------------------------------------------- through the layers */

START_TEST(scope_of_layers)
{
  Define d[] = {{"ntoken", "40"}, {"emsize", "6"}, {"nhid", "5"}};
  FrontOptions o = opts("graphs/lstm.lua", true);
  o.def = d;
  o.ndef = 3;
  Hyper *h;
  int nh;
  Graph *g = front_load(&o, &h, &nh);
  ck_assert_str_eq(g->node[reader(g, OP_EMBEDDING, ir_find_param(g, "encoder.weight"))].scope, "encoder");
  int w_ih1 = ir_find_param(g, "rnn.weight_ih_l1");
  ck_assert_str_eq(g->node[w_ih1].scope, "rnn.l1");
  bool body = false;
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].loop == 2 && g->node[i].op == OP_SIGMOID) {
      ck_assert_str_eq(g->node[i].scope, "rnn.l1");
      body = true;
    }
  ck_assert(body);
  ck_assert_str_eq(g->node[ir_find_output(g, "hidden.h")].scope, "rnn");   /* the layers' concat */
  ck_assert_str_eq(g->node[ir_find_param(g, "decoder.bias")].scope, "decoder");
  ck_assert_str_eq(g->node[ir_find_output(g, "loss")].scope, "");
}
END_TEST

/* Autodiff builds the backward of a node in the node's scope. */
START_TEST(scope_of_the_backward)
{
  Define d[] = {{"ntoken", "40"}, {"emsize", "6"}, {"nhid", "6"}, {"nhead", "2"}};
  FrontOptions o = opts("graphs/transformer.lua", true);
  o.def = d;
  o.ndef = 4;
  Hyper *h;
  int nh;
  Graph *g = front_load(&o, &h, &nh);
  autodiff(g);
  ck_assert_int_gt(g->backward_start, 0);
  const char *grads[][2] = {
    {"grad:decoder.weight", "decoder"},
    {"grad:encoder.layers.1.linear2.weight", "encoder.layers.1.linear2"},
    {"grad:encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn"},
    {"grad:encoder.norm.bias", "encoder.norm"},
  };
  for (size_t i = 0; i < sizeof grads / sizeof *grads; i++) {
    int n = ir_find_output(g, grads[i][0]);
    ck_assert_int_ge(n, g->backward_start);
    ck_assert_str_eq(g->node[n].scope, grads[i][1]);
  }
}
END_TEST

/* ------------------------------------------------------------ kernel names */

static Graph *G(void)
{
  Graph *g = ir_new(35, 20, DT_F32);
  g->cur_file = "t.lua";
  g->cur_line = 1;
  return g;
}

START_TEST(names_from_scopes)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, shape_make(1, (int[]){4}, 0), false);
  const char *cases[][2] = {
    {"", "train_tanh"},
    {"decoder", "train_decoder_tanh"},
    {"encoder.layers.0.self_attn.out_proj", "train_encoder_l0_self_attn_out_proj_tanh"},
    {"encoder.layers.12", "train_encoder_l12_tanh"},
    {"layers.x.layers", "train_layers_x_layers_tanh"},
    {"a.layers.3b", "train_a_layers_3b_tanh"},
    {"_a..b_.__c.", "train_a_b_c_tanh"},
    {"rnn.l0", "train_rnn_l0_tanh"},
  };
  StrMap used = {0};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    g->cur_scope = cases[i][0];
    ck_assert_str_eq(kernel_name(g, ir_op1(g, OP_TANH, x, NULL), "train", &used), cases[i][1]);
  }
}
END_TEST

START_TEST(names_unique_in_node_order)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, shape_make(1, (int[]){4}, 0), false);
  g->cur_scope = "a.b";
  int n1 = ir_op1(g, OP_EXP, x, NULL), n2 = ir_op1(g, OP_EXP, x, NULL), n3 = ir_op1(g, OP_EXP, x, NULL);
  g->cur_scope = "a_b";
  int n4 = ir_op1(g, OP_EXP, x, NULL);
  StrMap train = {0}, eval = {0};
  ck_assert_str_eq(kernel_name(g, n1, "train", &train), "train_a_b_exp");
  ck_assert_str_eq(kernel_name(g, n2, "train", &train), "train_a_b_exp_2");
  ck_assert_str_eq(kernel_name(g, n3, "train", &train), "train_a_b_exp_3");
  ck_assert_str_eq(kernel_name(g, n4, "train", &train), "train_a_b_exp_4");
  ck_assert_str_eq(kernel_name(g, n2, "eval", &eval), "eval_a_b_exp");
}
END_TEST

START_TEST(names_of_groups_and_the_backward)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, shape_make(1, (int[]){4}, 0), false);
  g->cur_scope = "rnn.l0";
  int top = ir_op1(g, OP_EXP, x, NULL);
  int lsm = ir_op1(g, OP_LOG_SOFTMAX, x, NULL);
  g->cur_loop = 1;   /* as if in a loop body: only Node.loop matters here */
  int cell = ir_op1(g, OP_SIGMOID, x, NULL);
  g->cur_loop = 0;
  g->backward_start = g->nnode;
  int mul = ir_op2(g, OP_MUL, x, x, NULL);
  int tg = ir_op2(g, OP_TANH_GRAD, x, x, NULL);
  g->cur_loop = 1;
  int cell_grad = ir_op1(g, OP_SIGMOID, x, NULL);
  g->cur_loop = 0;
  int fused_grad = ir_op1(g, OP_EXP, x, NULL);
  g->node[top].group = 1;
  g->node[lsm].group = 2;
  g->node[cell].group = 3;
  g->node[cell_grad].group = 4;
  g->node[fused_grad].group = 5;
  StrMap used = {0};
  ck_assert_str_eq(kernel_name(g, top, "train", &used), "train_rnn_l0_fused");
  ck_assert_str_eq(kernel_name(g, lsm, "train", &used), "train_rnn_l0_log_softmax_nll");
  ck_assert_str_eq(kernel_name(g, cell, "train", &used), "train_rnn_l0_cell");
  ck_assert_str_eq(kernel_name(g, mul, "train", &used), "train_rnn_l0_mul_grad");
  ck_assert_str_eq(kernel_name(g, tg, "train", &used), "train_rnn_l0_tanh_grad");
  ck_assert_str_eq(kernel_name(g, cell_grad, "train", &used), "train_rnn_l0_cell_grad");
  ck_assert_str_eq(kernel_name(g, fused_grad, "train", &used), "train_rnn_l0_fused_grad");
}
END_TEST

/* One kernel standing for several identical ones: named by the scope words
 * they all start and end with and the what words they all start with. */
START_TEST(names_shared)
{
  struct {
    int n;
    const char *scope[4], *what[4], *want;
  } cases[] = {
    {1, {"decoder"}, {"matmul_grad"}, "train_decoder_matmul_grad"},
    {4, {"rnn_l0", "rnn_l0", "rnn_l1", "rnn_l1"}, {"carry", "carry", "carry_grad", "carry_grad"}, "train_rnn_carry"},
    {2, {"encoder_l0_self_attn", "encoder_l1_self_attn"}, {"div", "div_grad"}, "train_encoder_self_attn_div"},
    {2, {"encoder_l0_self_attn_out_proj", "encoder_l0_linear2"}, {"matmul", "matmul"}, "train_encoder_l0_matmul"},
    {3, {"", "rnn", ""}, {"dropout", "dropout", "dropout"}, "train_dropout"},
    {2, {"a_b", "a_b_b"}, {"exp", "exp"}, "train_a_b_exp"},
    {2, {"a_x_b", "a_b"}, {"exp", "exp"}, "train_a_b_exp"},
    {2, {"a", "b"}, {"carry", "reshape"}, "train_carry"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    ck_assert_str_eq(kernel_shared_name("train", cases[i].n, cases[i].scope, cases[i].what), cases[i].want);
}
END_TEST

/* A numbered name (_2) is never another kernel's first name: every name
 * without a number ends in a letter. */
START_TEST(names_end_in_a_letter)
{
  for (int op = 0; op < NOPS; op++) {
    const char *s = op_info[op].name;
    ck_assert_msg(isalpha((unsigned char)s[strlen(s) - 1]), "op %s", s);
  }
}
END_TEST

/* -------------------------------------------------- the models' kernels */

/* prog of graph path as lmc compile builds it at -O2, training or eval. */
static Graph *compile(const char *path, bool training)
{
  FrontOptions o = opts(path, training);
  o.mem_limit = 256u << 20;
  o.instr_limit = 200000000;
  Hyper *h;
  int nh;
  Graph *g = front_load(&o, &h, &nh);
  ir_drop_output(g, "logp");
  if (training)
    autodiff(g);
  for (int i = 0; i < npasses; i++)
    if (passes[i].level <= 2)
      passes[i].run(g);
  char err[256];
  ck_assert_msg(verify(g, err, sizeof err) == 0, "%s", err);
  return g;
}

static bool is_identifier(const char *s)
{
  if (!isalpha((unsigned char)*s) && *s != '_')
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_')
      return false;
  return true;
}

/* Names every node with a kernel of its own (not a view, input, parameter
 * or folded literal; a fused group at its anchor), prints them and checks
 * that the names are unique identifiers holding each of want[]. */
static void name_kernels(const char *path, bool training, const char *prog, const char *const *want)
{
  Graph *g = compile(path, training);
  int *anchor = group_anchors(g);
  StrMap used = {0}, seen = {0};
  printf("%s, %s program:\n", path, prog);
  int nkernel = 0;
  for (int i = 0; i < g->nnode; i++) {
    const Node *n = &g->node[i];
    if (n->dead || n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_LITERAL || is_view(g, n) ||
        (n->group && anchor[n->group] != i))
      continue;
    const char *name = kernel_name(g, i, prog, &used);
    printf("  n%-5d %-16s %-36s %s\n", i, n->group ? "(fused)" : op_info[n->op].name,
           *n->scope ? n->scope : "-", name);
    ck_assert_msg(is_identifier(name), "%s", name);
    ck_assert_msg(strmap_get(&seen, name) < 0, "%s given twice", name);
    strmap_put(&seen, name, i);
    nkernel++;
  }
  for (int k = 0; want[k]; k++)
    ck_assert_msg(strmap_get(&seen, want[k]) >= 0, "no kernel named %s", want[k]);
  printf("  %d kernels\n", nkernel);
  free(anchor);
}

START_TEST(names_of_the_lstm)
{
  const char *train[] = {"train_encoder_embedding", "train_rnn_l0_matmul_bias", "train_rnn_l0_cell",
                         "train_rnn_l1_cell", "train_rnn_l1_cell_grad", "train_decoder_matmul",
                         "train_log_softmax_nll", "train_decoder_matmul_grad", "train_encoder_embedding_grad",
                         NULL};
  const char *eval[] = {"eval_rnn_l0_cell", "eval_log_softmax_nll", NULL};
  name_kernels("graphs/lstm.lua", true, "train", train);
  name_kernels("graphs/lstm.lua", false, "eval", eval);
}
END_TEST

START_TEST(names_of_the_transformer)
{
  const char *train[] = {"train_input_emb_embedding", "train_encoder_l0_self_attn_softmax",
                         "train_encoder_l1_self_attn_out_proj_matmul", "train_encoder_l1_norm2_normalize_grad",
                         "train_decoder_matmul_grad", NULL};
  name_kernels("graphs/transformer.lua", true, "train", train);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("scope");
  TCase *tc = tcase_create("scope");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, scope_nests_and_returns);
  tcase_add_test(tc, scope_restored_after_an_error);
  tcase_add_test(tc, scope_names_interned);
  tcase_add_test(tc, scope_mistakes);
  tcase_add_test(tc, scope_error_caught);
  tcase_add_test(tc, scope_of_layers);
  tcase_add_test(tc, scope_of_the_backward);
  tcase_add_test(tc, names_from_scopes);
  tcase_add_test(tc, names_unique_in_node_order);
  tcase_add_test(tc, names_of_groups_and_the_backward);
  tcase_add_test(tc, names_shared);
  tcase_add_test(tc, names_end_in_a_letter);
  tcase_add_test(tc, names_of_the_lstm);
  tcase_add_test(tc, names_of_the_transformer);
  suite_add_tcase(s, tc);
  return run_suite(s);
}
