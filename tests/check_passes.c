/*
 * check_passes.c: the optimization passes.
 *
 * Unit tests build small graphs by hand with the ir.c builders, run one
 * pass and look at the IR it leaves (what was folded, merged, fused,
 * where buffers went).  The rest run build/lmc on the graph files:
 *
 *   - numerics: every model in graphs/ at tiny shapes, compiled at -O0,
 *     -O1, -O2, -O2 with each pass disabled alone and -O0 with each pass
 *     enabled alone, each linked with tests/emit/driver.c (clang -O0, to
 *     keep the suite fast; the arithmetic is the same at any clang level,
 *     which never reassociates floats).  One training step (loss, every
 *     gradient, the new hidden state, dropout on at the compiled 0.2) and
 *     one evaluation (the loss) are compared with the -O0
 *     build's, array by array, as the norm-wise relative difference
 *     ||a - b|| / ||a||.  Most passes are bit-exact; fuse-nll computes the
 *     gradient of the logits from log_softmax's own exponentials (a few
 *     units in the last place), and fuse-matmul-bias adds a bias before
 *     the last K block of a GEMM once K spans several blocks.  The
 *     tolerance is 1e-5; the printed differences show how far each build
 *     is.  Configurations whose C is identical to one already run are not
 *     run twice;
 *   - the folded positional-encoding table equals, bit for bit, the one an
 *     -O0 build computes at run time, and the Transformer's -O2 C file
 *     holds that table and calls no sin or cos;
 *   - after fuse-add-dropout no add feeds a dropout and no dropout feeds an
 *     add, in any model, forward and backward;
 *   - golden IR dumps after fold-constants and fuse-add-dropout
 *     (tests/golden/passes/NAME.ir; NAME.graph holds the graph's path,
 *     NAME.flags lmc's flags; UPDATE=1 rewrites them);
 *   - --emit=dot and --stats, and that compiling twice gives the same bytes.
 */
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmc.h"
#include "testutil.h"

/* ------------------------------------------------------------ hand-built graphs */

static Graph *graph(int max_seq, int batch)
{
  Graph *g = ir_new(max_seq, batch, DT_F32);
  g->cur_file = "t.lua";
  g->cur_line = 1;
  return g;
}

/* shp(rank, seq bits, dims...) */
static Shape shp(int rank, unsigned seq, ...)
{
  int dim[MAXRANK] = {0};
  va_list ap;
  va_start(ap, seq);
  for (int i = 0; i < rank; i++)
    dim[i] = va_arg(ap, int);
  va_end(ap);
  return shape_make(rank, dim, seq);
}

static int live(Graph *g, Op op)
{
  int n = 0;
  for (int i = 0; i < g->nnode; i++)
    n += !g->node[i].dead && g->node[i].op == op;
  return n;
}

static int find_live(Graph *g, Op op)
{
  for (int i = 0; i < g->nnode; i++)
    if (!g->node[i].dead && g->node[i].op == op)
      return i;
  return -1;
}

static void check_valid(Graph *g)
{
  char err[512];
  ck_assert_msg(verify(g, err, sizeof err) == 0, "IR invalid: %s", err);
}

/* The positional encoding of graphs/lib/nn.lua, built by hand: (max_len, d). */
static int positional_encoding(Graph *g, int d, int max_len)
{
  int half = d / 2;
  int pos = ir_op1(g, OP_RESHAPE, ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = 0, .f2 = 1, .shape = shp(1, 0, max_len)}),
                   &(Attr){.shape = shp(2, 0, max_len, 1)});
  int div = ir_op1(g, OP_EXP,
                   ir_op2(g, OP_MUL, ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = 0, .f2 = 2, .shape = shp(1, 0, half)}),
                          ir_const(g, -log(10000.0) / d), NULL),
                   NULL);
  int ang = ir_op2(g, OP_MUL, pos, div, NULL);
  int s = ir_op1(g, OP_RESHAPE, ir_op1(g, OP_SIN, ang, NULL), &(Attr){.shape = shp(3, 0, max_len, half, 1)});
  int c = ir_op1(g, OP_RESHAPE, ir_op1(g, OP_COS, ang, NULL), &(Attr){.shape = shp(3, 0, max_len, half, 1)});
  return ir_op1(g, OP_RESHAPE, ir_op2(g, OP_CONCAT, s, c, &(Attr){.axis = 2}), &(Attr){.shape = shp(2, 0, max_len, d)});
}

START_TEST(fold_positional_encoding)
{
  enum { D = 6, MAXLEN = 5000, BPTT = 7 };
  Graph *g = graph(BPTT, 3);
  int x = ir_input(g, "x", DT_F32, shp(3, 1, 1, 3, D), false);
  int pe = positional_encoding(g, D, MAXLEN);
  int sl = ir_op1(g, OP_SLICE, pe, &(Attr){.axis = 0, .start = 0, .len = -1});
  int y = ir_op2(g, OP_ADD, x, ir_op1(g, OP_RESHAPE, sl, &(Attr){.shape = shp(3, 1, 1, 1, D)}), NULL);
  ir_output(g, "logp", y);
  fold_constants(g);
  check_valid(g);
  ck_assert_int_eq(live(g, OP_LITERAL), 1);
  ck_assert_int_eq(live(g, OP_SIN) + live(g, OP_COS) + live(g, OP_EXP) + live(g, OP_ARANGE), 0);
  Node *lit = &g->node[find_live(g, OP_LITERAL)];
  /* only the rows a slice of length T <= bptt can read */
  ck_assert_str_eq(shape_str(&lit->shape), "(7, 6)");
  ck_assert(g->node[sl].a.view && g->node[sl].in[0] == find_live(g, OP_LITERAL) && g->node[sl].a.start == 0);
  /* each value as the f32 kernels compute it */
  double worst = 0;
  for (int p = 0; p < BPTT; p++)
    for (int j = 0; j < D / 2; j++) {
      float div = expf((float)(0.0 + j * 2.0) * (float)(-log(10000.0) / D));
      float ang = (float)p * div;
      worst = fmax(worst, fabs(lit->a.data[p * D + 2 * j] - sinf(ang)));
      worst = fmax(worst, fabs(lit->a.data[p * D + 2 * j + 1] - cosf(ang)));
    }
  printf("folded table against expf/sinf/cosf: max |diff| %g (tolerance 0)\n", worst);
  ck_assert(worst == 0);
}
END_TEST

START_TEST(fold_refuses_and_limits)
{
  Graph *g = graph(4, 2);
  int x = ir_input(g, "x", DT_F32, shp(1, 0, 5), false);
  /* 1 / 0 and log(-1): left to run time */
  int inf = ir_op2(g, OP_DIV, ir_const(g, 1), ir_const(g, 0), NULL);
  int nan = ir_op1(g, OP_LOG, ir_const(g, -1), NULL);
  /* -0.0 keeps its sign */
  int nz = ir_op1(g, OP_NEG, ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = 0, .f2 = 1, .shape = shp(1, 0, 5)}), NULL);
  /* too big to write out: 2^19 elements */
  int big = ir_op1(g, OP_SIN, ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = 0, .f2 = 1, .shape = shp(1, 0, 1 << 19)}), NULL);
  ir_output(g, "a", ir_op2(g, OP_ADD, x, inf, NULL));
  ir_output(g, "b", ir_op2(g, OP_ADD, x, nan, NULL));
  ir_output(g, "c", ir_op2(g, OP_ADD, x, nz, NULL));
  ir_output(g, "d", ir_op1(g, OP_SUM, big, &(Attr){.shape = shp(0, 0)}));
  fold_constants(g);
  check_valid(g);
  ck_assert(!g->node[inf].dead && g->node[inf].op == OP_DIV);
  ck_assert(!g->node[nan].dead && g->node[nan].op == OP_LOG);
  ck_assert_int_eq(g->node[nz].op, OP_LITERAL);
  ck_assert(signbit(g->node[nz].a.data[0]) && g->node[nz].a.data[0] == 0 && g->node[nz].a.data[4] == -4);
  ck_assert(!g->node[big].dead && g->node[big].op == OP_SIN);
  ck_assert_int_eq(live(g, OP_LITERAL), 1);
}
END_TEST

START_TEST(cse_merges_duplicates)
{
  Graph *g = graph(4, 2);
  int x = ir_input(g, "x", DT_F32, shp(3, 1, 1, 2, 3), false);
  int h0 = ir_input(g, "h", DT_F32, shp(2, 0, 2, 3), true);
  ir_loop_begin(g, false);
  int st = ir_step(g, x);
  int h = ir_carry(g, h0);
  int hn = ir_op1(g, OP_TANH, ir_op2(g, OP_ADD, st, h, NULL), NULL);
  ir_carry_next(g, h, hn);
  ir_loop_end(g);
  int s1 = ir_stack(g, hn), s2 = ir_stack(g, hn);
  int c1 = ir_const(g, 2), c2 = ir_const(g, 2), c3 = ir_const(g, -0.0), c4 = ir_const(g, 0.0);
  int m1 = ir_op2(g, OP_MUL, s1, c1, NULL), m2 = ir_op2(g, OP_MUL, s2, c2, NULL);
  ir_output(g, "a", m1);
  ir_output(g, "b", m2);
  ir_output(g, "z", ir_op2(g, OP_ADD, ir_op2(g, OP_ADD, m1, c3, NULL), c4, NULL));
  cse(g);
  check_valid(g);
  ck_assert(g->node[s2].dead && g->node[c2].dead && g->node[m2].dead);
  ck_assert(!g->node[c3].dead && !g->node[c4].dead);   /* -0.0 is not 0.0 */
  ck_assert_int_eq(ir_find_output(g, "b"), m1);
  ck_assert_int_eq(live(g, OP_STACK), 1);
}
END_TEST

START_TEST(fuse_add_dropout_patterns)
{
  Graph *g = graph(4, 2);
  Attr d0 = {.f = 0.3, .id = 0, .id2 = 0, .name = "dropout"}, d1 = d0, d2 = d0;
  d1.id = 1;
  d2.id = 2;
  int a = ir_input(g, "a", DT_F32, shp(3, 1, 1, 2, 3), false);
  int b = ir_input(g, "b", DT_F32, shp(3, 1, 1, 1, 3), false);
  int da = ir_op1(g, OP_DROPOUT, ir_op2(g, OP_ADD, a, b, NULL), &d0);        /* dropout(a + b) */
  int ad = ir_op2(g, OP_ADD, a, ir_op1(g, OP_DROPOUT, b, &d1), NULL);       /* a + dropout(b), b broadcast */
  int h0 = ir_input(g, "h", DT_F32, shp(2, 0, 2, 3), true);
  int dg = ir_op1(g, OP_DROPOUT_GRAD, a, &d2);
  ir_loop_begin(g, true);
  int h = ir_carry(g, h0);
  int hn = ir_op2(g, OP_ADD, ir_step(g, dg), h, NULL);                     /* step(dropout_grad) + carry */
  ir_carry_next(g, h, hn);
  ir_loop_end(g);
  ir_output(g, "x", da);
  ir_output(g, "y", ad);
  ir_output(g, "h", ir_final(g, h));
  fuse_add_dropout(g);
  check_valid(g);
  ck_assert_int_eq(g->node[da].op, OP_DROPOUT_ADD);
  ck_assert(g->node[da].in[0] == a && g->node[da].in[1] == b && g->node[da].a.id == 0);
  ck_assert_int_eq(g->node[ad].op, OP_ADD_DROPOUT);
  ck_assert(g->node[ad].in[0] == a && g->node[ad].in[1] == b && g->node[ad].a.id == 1);
  ck_assert_int_eq(g->node[hn].op, OP_ADD_DROPOUT);
  ck_assert_int_eq(g->node[g->node[hn].in[1]].op, OP_STEP);
  ck_assert_int_eq(g->node[g->node[hn].in[1]].in[0], a);   /* the step reads the undropped value */
  ck_assert_int_eq(live(g, OP_ADD) + live(g, OP_DROPOUT) + live(g, OP_DROPOUT_GRAD), 0);
}
END_TEST

START_TEST(fuse_nll_and_bias)
{
  Graph *g = graph(4, 2);
  int x = ir_input(g, "x", DT_F32, shp(3, 1, 1, 2, 3), false);
  int tgt = ir_input(g, "targets", DT_I32, shp(2, 1, 1, 2), false);
  int w = ir_param(g, "w", shp(2, 0, 5, 3), INIT_UNIFORM, 0.1);
  int bias = ir_param(g, "b", shp(1, 0, 5), INIT_ZERO, 0);
  int lp = ir_op1(g, OP_LOG_SOFTMAX, ir_op2(g, OP_ADD, ir_op2(g, OP_MATMUL, x, w, &(Attr){.tb = 1}), bias, NULL),
                  &(Attr){.axis = 2});
  ir_output(g, "logp", lp);
  ir_output(g, "loss", ir_op2(g, OP_NLL_LOSS, lp, tgt, NULL));
  autodiff(g);
  fuse_nll(g);
  check_valid(g);
  ck_assert_int_eq(live(g, OP_NLL_LOSS_GRAD) + live(g, OP_LOG_SOFTMAX_GRAD), 0);
  int f = find_live(g, OP_NLL_LOG_SOFTMAX_GRAD);
  ck_assert(f >= 0 && g->node[f].in[1] == lp && g->node[f].in[2] == tgt);
  /* the bias joins the log_softmax's kernel, the product first */
  int add = g->node[lp].in[0];
  ck_assert_int_eq(g->node[add].op, OP_ADD);
  ck_assert(g->node[lp].group && g->node[add].group == g->node[lp].group && g->node[f].group == g->node[lp].group);
  ck_assert_int_eq(g->node[g->node[add].in[0]].op, OP_MATMUL);
  ck_assert_int_eq(g->node[add].in[1], bias);
  fuse_matmul_bias(g);   /* leaves it there */
  check_valid(g);
  ck_assert_int_eq(live(g, OP_MATMUL_BIAS), 0);
  ck_assert_int_eq(g->node[add].op, OP_ADD);
  ck_assert_int_eq(live(g, OP_MATMUL), 2);   /* the product and the weight gradient's */

  /* the loss alone (an evaluation program): the product joins the kernel,
   * the logits are never stored */
  Graph *ev = graph(4, 2);
  x = ir_input(ev, "x", DT_F32, shp(3, 1, 1, 2, 3), false);
  tgt = ir_input(ev, "targets", DT_I32, shp(2, 1, 1, 2), false);
  w = ir_param(ev, "w", shp(2, 0, 5, 3), INIT_UNIFORM, 0.1);
  bias = ir_param(ev, "b", shp(1, 0, 5), INIT_ZERO, 0);
  int prod = ir_op2(ev, OP_MATMUL, x, w, &(Attr){.tb = 1});
  add = ir_op2(ev, OP_ADD, bias, prod, NULL);
  lp = ir_op1(ev, OP_LOG_SOFTMAX, add, &(Attr){.axis = 2});
  int loss = ir_op2(ev, OP_NLL_LOSS, lp, tgt, NULL);
  ir_output(ev, "loss", loss);
  fuse_nll(ev);
  fuse_matmul_bias(ev);
  check_valid(ev);
  ck_assert(ev->node[lp].group && ev->node[prod].group == ev->node[lp].group &&
            ev->node[add].group == ev->node[lp].group && ev->node[loss].group == ev->node[lp].group);
  ck_assert(ev->node[add].in[0] == prod && ev->node[add].in[1] == bias);   /* the product first */
  ck_assert_int_eq(live(ev, OP_MATMUL_BIAS), 0);

  /* a biased product read by anything else: one matmul_bias */
  Graph *h = graph(4, 2);
  x = ir_input(h, "x", DT_F32, shp(3, 1, 1, 2, 3), false);
  w = ir_param(h, "w", shp(2, 0, 5, 3), INIT_UNIFORM, 0.1);
  bias = ir_param(h, "b", shp(1, 0, 5), INIT_ZERO, 0);
  ir_output(h, "y", ir_op1(h, OP_TANH, ir_op2(h, OP_ADD, ir_op2(h, OP_MATMUL, x, w, &(Attr){.tb = 1}), bias, NULL),
                            NULL));
  fuse_nll(h);
  fuse_matmul_bias(h);
  check_valid(h);
  int mb = find_live(h, OP_MATMUL_BIAS);
  ck_assert(mb >= 0 && h->node[mb].in[0] == x && h->node[mb].in[1] == w && h->node[mb].in[2] == bias);
  ck_assert(h->node[mb].a.tb && !h->node[mb].a.ta);
  ck_assert_int_eq(live(h, OP_MATMUL), 0);
}
END_TEST

/* One LSTM step, as graphs/lib/nn.lua builds it. */
static void lstm_body(Graph *g, int H, int *gates_out, int *h_out, int *c_out)
{
  int xw = ir_input(g, "xw", DT_F32, shp(3, 1, 1, g->batch, 4 * H), false);
  int h0 = ir_input(g, "h", DT_F32, shp(2, 0, g->batch, H), true);
  int c0 = ir_input(g, "c", DT_F32, shp(2, 0, g->batch, H), true);
  int whh = ir_param(g, "w_hh", shp(2, 0, 4 * H, H), INIT_UNIFORM, 0.1);
  int bhh = ir_param(g, "b_hh", shp(1, 0, 4 * H), INIT_UNIFORM, 0.1);
  ir_loop_begin(g, false);
  int x = ir_step(g, xw);
  int h = ir_carry(g, h0), c = ir_carry(g, c0);
  int gates = ir_op2(g, OP_ADD, ir_op2(g, OP_ADD, x, ir_op2(g, OP_MATMUL, h, whh, &(Attr){.tb = 1}), NULL), bhh, NULL);
  int gi[4];
  for (int k = 0; k < 4; k++)
    gi[k] = ir_op1(g, k == 2 ? OP_TANH : OP_SIGMOID,
                   ir_op1(g, OP_SLICE, gates, &(Attr){.axis = 1, .start = k * H, .len = H}), NULL);
  int cn = ir_op2(g, OP_ADD, ir_op2(g, OP_MUL, gi[1], c, NULL), ir_op2(g, OP_MUL, gi[0], gi[2], NULL), NULL);
  int hn = ir_op2(g, OP_MUL, gi[3], ir_op1(g, OP_TANH, cn, NULL), NULL);
  ir_carry_next(g, h, hn);
  ir_carry_next(g, c, cn);
  ir_loop_end(g);
  ir_output(g, "out", ir_stack(g, hn));
  ir_output(g, "h", ir_final(g, h));
  ir_output(g, "c", ir_final(g, c));
  *gates_out = gates;
  *h_out = hn;
  *c_out = cn;
}

START_TEST(fuse_elementwise_lstm_cell)
{
  Graph *g = graph(5, 3);
  int gates, hn, cn;
  lstm_body(g, 4, &gates, &hn, &cn);
  fuse_elementwise(g);
  check_valid(g);
  ck_assert_int_eq(g->ngroup, 1);
  int members = 0;
  for (int i = 0; i < g->nnode; i++)
    members += g->node[i].group == 1;
  printf("LSTM cell: %d nodes in one fused kernel\n", members);
  ck_assert_int_eq(members, 15);   /* 2 adds, 4 slices, 4 activations, 3 muls, add, tanh */
  ck_assert(g->node[gates].group == 1 && g->node[hn].group == 1 && g->node[cn].group == 1);
  bool *need = buffers_needed(g);
  ck_assert(!need[gates]);            /* read through its slices only: never stored */
  ck_assert(need[hn] && need[cn]);    /* carried to the next step, stacked, final */
  free(need);
}
END_TEST

/* plan-memory: a chain of values, each read only by the next, needs two
 * buffers at a time; the first one's region is used again. */
START_TEST(plan_memory_reuses)
{
  Graph *g = graph(4, 2);
  int x = ir_input(g, "x", DT_F32, shp(2, 0, 64, 64), false);
  int v[6];
  v[0] = ir_op1(g, OP_TANH, x, NULL);
  for (int i = 1; i < 6; i++)
    v[i] = ir_op1(g, i % 2 ? OP_SIGMOID : OP_TANH, v[i - 1], NULL);
  int keep = ir_op1(g, OP_NEG, v[1], NULL);   /* v[1] lives until here */
  ir_output(g, "y", ir_op2(g, OP_ADD, v[5], keep, NULL));
  plan_memory(g);
  Plan *p = g->plan;
  printf("plan: %zu elements, %zu unplanned\n", p->numel, p->naive);
  ck_assert(p->numel < p->naive);
  ck_assert(p->numel >= 3 * 4096);   /* v[1], and two more at once */
  for (int i = 2; i < 6; i++)        /* v[1] is live while v[2..5] are computed */
    ck_assert(p->off[i + v[0]] + 4096 <= p->off[v[1]] || p->off[v[1]] + 4096 <= p->off[i + v[0]]);
  ck_assert(p->off[v[0]] == p->off[v[2]] || p->off[v[0]] == p->off[v[3]] || p->off[v[0]] == p->off[v[4]]);
}
END_TEST

/* A body value no STACK reads is stored for one step; a stacked one for all. */
START_TEST(plan_memory_one_step)
{
  Graph *g = graph(5, 3);
  int gates, hn, cn;
  lstm_body(g, 4, &gates, &hn, &cn);
  plan_memory(g);
  ck_assert(g->plan->one_step[gates] && g->plan->one_step[cn]);
  ck_assert(!g->plan->one_step[hn]);
  ck_assert_uint_eq(buffer_numel(g, gates), 3 * 16);
  ck_assert_uint_eq(buffer_numel(g, hn), 5 * 3 * 4);
}
END_TEST

START_TEST(pass_table)
{
  const char *must[] = {"fold-constants", "cse", "fuse-add-dropout", "fuse-nll", "fuse-elementwise", "dce",
                        "plan-memory"};
  for (size_t i = 0; i < sizeof must / sizeof *must; i++)
    ck_assert_msg(find_pass(must[i]), "no pass %s", must[i]);
  for (int i = 0; i < npasses; i++) {
    ck_assert(passes[i].what && strlen(passes[i].what) < 100);
    ck_assert(passes[i].level >= 1 && passes[i].level <= 2);
  }
  ck_assert_str_eq(passes[npasses - 1].name, "plan-memory");   /* places what the others leave */
  ck_assert(!find_pass("no-such-pass"));
}
END_TEST

/* ------------------------------------------------------------ the lmc binary */

static int sh(const char *fmt, ...)
{
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  fflush(stdout);
  int rc = system(cmd);
  if (rc)
    printf("$ %s\n  -> exit %d\n", cmd, rc);
  return rc;
}

static char *slurp(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = calloc((size_t)n + 1, 1);
  if (fread(s, 1, (size_t)n, f) != (size_t)n)
    n = 0;
  s[n] = 0;
  fclose(f);
  return s;
}

/* The models: every graph file in graphs/. */
static glob_t models;

static const char *model(int i)
{
  return models.gl_pathv[i];
}

static const char *tiny(const char *graph)
{
  char *src = slurp(graph);
  bool nhead = src && strstr(src, "nhead"), gpt = src && strstr(src, "n_embd");
  free(src);
  if (gpt)   /* nanoGPT's names (graphs/gpt.lua) */
    return "-D ntoken=13 -D n_embd=8 -D n_layer=2 -D n_head=2 -D bptt=5 -D batch_size=3 -D eval_batch_size=2";
  return nhead ? "-D ntoken=13 -D emsize=8 -D nhid=6 -D nlayers=2 -D nhead=2 -D bptt=5 -D batch_size=3 "
                 "-D eval_batch_size=2"
               : "-D ntoken=13 -D emsize=8 -D nhid=6 -D nlayers=2 -D bptt=5 -D batch_size=3 -D eval_batch_size=2";
}

static char tmpdir[] = "/tmp/check_passes.XXXXXX";
static const char *lmc = "build/lmc";   /* LMC and SAN: from `make sanitize` */
static const char *san = "";

typedef struct {
  int n;
  char key[256][160];
  double *v[256];
  int len[256];
} Out;

static bool read_out(const char *path, Out *o)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  char kind[32], name[128];
  int n;
  while (fscanf(f, "%31s %127s %d", kind, name, &n) == 3 && o->n < 256) {
    snprintf(o->key[o->n], sizeof o->key[0], "%s %s", kind, name);
    o->len[o->n] = n;
    o->v[o->n] = calloc((size_t)n + 1, sizeof(double));
    for (int i = 0; i < n; i++)
      if (fscanf(f, "%lf", &o->v[o->n][i]) != 1)
        return fclose(f), false;
    o->n++;
  }
  fclose(f);
  return true;
}

static void free_out(Out *o)
{
  for (int i = 0; i < o->n; i++)
    free(o->v[i]);
  o->n = 0;
}

/* The largest norm-wise relative difference ||a - b|| / ||a|| over the
 * arrays of two driver outputs (meta lines aside); -1 when they do not
 * hold the same arrays. */
static double out_diff(Out *a, Out *b, char *where, size_t wlen)
{
  double worst = 0;
  if (a->n != b->n)
    return -1;
  for (int i = 0; i < a->n; i++) {
    if (strcmp(a->key[i], b->key[i]) || a->len[i] != b->len[i])
      return -1;
    if (!strncmp(a->key[i], "meta", 4))
      continue;
    double d2 = 0, a2 = 0;
    for (int j = 0; j < a->len[i]; j++) {
      double x = a->v[i][j], y = b->v[i][j];
      if (x != y)
        d2 += (x - y) * (x - y);
      a2 += x * x;
    }
    double d = d2 == 0 ? 0 : sqrt(d2) / fmax(sqrt(a2), 1e-30);
    if (!(d <= worst)) {
      worst = d;
      snprintf(where, wlen, "%s", a->key[i]);
    }
  }
  return worst;
}

/* The emitted C without the lines that quote the lmc command line. */
static char *normalized(const char *path)
{
  char *s = slurp(path);
  if (!s)
    return NULL;
  char *out = calloc(strlen(s) + 1, 1), *o = out;
  for (char *line = s; *line;) {
    char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line + 1) : strlen(line);
    bool flags = (line < s + 400 && !strncmp(line, " *   ", 5)) || !strncmp(line, "  .flags = ", 11);
    if (!flags) {
      memcpy(o, line, n);
      o += n;
    }
    line += n;
  }
  free(s);
  return out;
}

/* Builds dir/NAME from dir/NAME.c and runs one training step and one
 * evaluation; false when anything fails. */
static bool build_run(const char *name, Out *train, Out *eval)
{
  if (sh("clang -std=c11 -O0 %s -Wall -Wextra -Werror -Iruntime -o %s/%s %s/%s.c %s/driver.o %s "
         "$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm",
         san, tmpdir, name, tmpdir, name, tmpdir, runtime_lib()))
    return false;
  if (sh("OPENBLAS_NUM_THREADS=1 %s/%s train 4 156 >%s/%s.train", tmpdir, name, tmpdir, name) ||
      sh("OPENBLAS_NUM_THREADS=1 %s/%s eval 4 104 >%s/%s.eval", tmpdir, name, tmpdir, name))
    return false;
  char path[512];
  snprintf(path, sizeof path, "%s/%s.train", tmpdir, name);
  if (!read_out(path, train))
    return false;
  snprintf(path, sizeof path, "%s/%s.eval", tmpdir, name);
  return read_out(path, eval);
}

START_TEST(numerics_across_builds)
{
  const char *graph = model(_i);
  enum { MAXCFG = 64 };
  char cfg[MAXCFG][128];
  int ncfg = 0;
  snprintf(cfg[ncfg++], 128, "-O0");
  snprintf(cfg[ncfg++], 128, "-O1");
  snprintf(cfg[ncfg++], 128, "-O2");
  for (int p = 0; p < npasses && ncfg + 2 <= MAXCFG; p++) {
    snprintf(cfg[ncfg++], 128, "-O2 --disable-pass=%s", passes[p].name);
    snprintf(cfg[ncfg++], 128, "-O0 --enable-pass=%s", passes[p].name);
  }
  Out ref_t = {0}, ref_e = {0};
  char *texts[MAXCFG] = {0};
  int ran = 0;
  for (int c = 0; c < ncfg; c++) {
    char name[32];
    snprintf(name, sizeof name, "m%d_c%d", _i, c);
    ck_assert_msg(sh("%s compile %s %s %s -o %s/%s.c", lmc, graph, tiny(graph), cfg[c], tmpdir, name) == 0,
                  "%s %s: lmc failed", graph, cfg[c]);
    /* the same C as a configuration already run: the same result */
    char path[512];
    snprintf(path, sizeof path, "%s/%s.c", tmpdir, name);
    texts[c] = normalized(path);
    bool seen = false;
    for (int d = 0; d < c && !seen; d++)
      seen = texts[d] && texts[c] && !strcmp(texts[d], texts[c]);
    if (seen)
      continue;
    Out t = {0}, e = {0};
    ck_assert_msg(build_run(name, &t, &e), "%s %s: build or run failed", graph, cfg[c]);
    ran++;
    if (c == 0) {
      ref_t = t;
      ref_e = e;
      continue;
    }
    char wt[200] = "-", we[200] = "-";
    double dt = out_diff(&ref_t, &t, wt, sizeof wt), de = out_diff(&ref_e, &e, we, sizeof we);
    printf("%s %-40s train: %.3g (%s), eval: %.3g (%s); tolerance 1e-5\n", graph, cfg[c], dt, wt, de, we);
    ck_assert_msg(dt >= 0 && dt <= 1e-5, "%s %s: training step differs from -O0 by %g at %s", graph, cfg[c], dt, wt);
    ck_assert_msg(de >= 0 && de <= 1e-5, "%s %s: evaluation differs from -O0 by %g at %s", graph, cfg[c], de, we);
    free_out(&t);
    free_out(&e);
  }
  printf("%s: %d configurations, %d distinct builds run\n", graph, ncfg, ran);
  for (int c = 0; c < ncfg; c++)
    free(texts[c]);
  free_out(&ref_t);
  free_out(&ref_e);
}
END_TEST

/* Node ids and ops of a --dump-ir listing; false on a line it cannot read. */
static bool no_add_dropout_edges(const char *path, char *bad, size_t blen)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  static char op[1 << 16][24];
  static int in[1 << 16][MAXIN];
  memset(op, 0, sizeof op);
  char line[4096];
  int ids[1 << 12], n = 0;
  while (fgets(line, sizeof line, f)) {
    char *p = line;
    if (p[0] == 'L')
      p = strchr(p, ' ') + 1;
    int id;
    char o[24];
    if (sscanf(p, "%%%d = %23s", &id, o) != 2 || id < 0 || id >= (1 << 16))
      continue;
    strcpy(op[id], o);
    char *q = strchr(p, '=') + 1 + strlen(o) + 1;
    for (int k = 0; k < MAXIN; k++)
      in[id][k] = -1;
    for (int k = 0; k < MAXIN && *q == ' ' && q[1] == '%'; k++) {
      in[id][k] = (int)strtol(q + 2, &q, 10);
      if (*q == ',')
        q++;
    }
    if (n < (1 << 12))
      ids[n++] = id;
  }
  fclose(f);
  for (int i = 0; i < n; i++) {
    int id = ids[i];
    bool is_add = !strcmp(op[id], "add"), is_drop = !strncmp(op[id], "dropout", 7) && strcmp(op[id], "dropout_add");
    for (int k = 0; k < MAXIN && in[id][k] >= 0; k++) {
      int x = in[id][k];
      bool x_add = !strcmp(op[x], "add"), x_drop = !strncmp(op[x], "dropout", 7) && strcmp(op[x], "dropout_add");
      if ((is_drop && x_add) || (is_add && x_drop)) {
        snprintf(bad, blen, "%%%d %s reads %%%d %s", id, op[id], x, op[x]);
        return false;
      }
    }
  }
  return true;
}

START_TEST(no_add_feeds_dropout)
{
  const char *graph = model(_i);
  char path[512], bad[256] = "";
  snprintf(path, sizeof path, "%s/dump%d.ir", tmpdir, _i);
  ck_assert_int_eq(sh("%s compile %s --dump-ir=after:fuse-add-dropout --emit=ir -o %s/discard.ir >%s", lmc, graph, tmpdir, path), 0);
  bool ok = no_add_dropout_edges(path, bad, sizeof bad);
  printf("%s after fuse-add-dropout: %s\n", graph, ok ? "no add feeds a dropout, no dropout feeds an add" : bad);
  ck_assert_msg(ok, "%s: %s", graph, bad);
}
END_TEST

/* The values of `static const real lmc_constK[N] = { ... }` in a C file. */
static double *table_of(const char *src, int k, size_t *n)
{
  char head[64];
  snprintf(head, sizeof head, "static const real lmc_const%d[", k);
  const char *p = strstr(src, head);
  if (!p)
    return NULL;
  *n = strtoul(p + strlen(head), NULL, 10);
  double *v = calloc(*n + 1, sizeof(double));
  p = strchr(p, '{') + 1;
  for (size_t i = 0; i < *n; i++) {
    char *end;
    v[i] = strtod(p, &end);
    p = end + 1;   /* the comma */
  }
  return v;
}

START_TEST(folded_table_equals_runtime)
{
  enum { D = 200, BPTT = 35, B = 2 };
  char path[512];
  ck_assert_int_eq(sh("%s compile tests/passes/pe_table.lua -O0 -D batch_size=%d -o %s/pe0.c", lmc, B, tmpdir), 0);
  ck_assert_int_eq(sh("%s compile tests/passes/pe_table.lua -O2 -D batch_size=%d -o %s/pe2.c", lmc, B, tmpdir), 0);
  ck_assert_int_eq(sh("clang -std=c11 -O0 %s -Wall -Wextra -Werror -Iruntime -o %s/pe0 %s/pe0.c %s/driver.o %s "
                      "$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm",
                      san, tmpdir, tmpdir, tmpdir, runtime_lib()),
                   0);
  /* the generation program: lmc compile keeps "logp" there only */
  ck_assert_int_eq(sh("%s/pe0 gen %d %d >%s/pe0.out", tmpdir, BPTT, BPTT * D, tmpdir), 0);
  Out o = {0};
  snprintf(path, sizeof path, "%s/pe0.out", tmpdir);
  ck_assert(read_out(path, &o));
  const double *rt = NULL;
  for (int i = 0; i < o.n; i++)
    if (!strcmp(o.key[i], "logp -"))
      rt = o.v[i];
  ck_assert(rt != NULL);
  snprintf(path, sizeof path, "%s/pe2.c", tmpdir);
  char *src2 = slurp(path);
  size_t n;
  double *tab = table_of(src2, 0, &n);
  ck_assert_msg(tab && n == BPTT * D, "the -O2 build folds a (%d, %d) table", BPTT, D);
  int differ = 0;
  for (int t = 0; t < BPTT; t++)
    for (int j = 0; j < D; j++)
      differ += tab[t * D + j] != rt[t * D + j] || signbit(tab[t * D + j]) != signbit(rt[t * D + j]);
  printf("folded (%d, %d) table against the -O0 build's run-time one: %d values differ (tolerance 0)\n", BPTT, D,
         differ);
  ck_assert_int_eq(differ, 0);
  ck_assert_msg(!strstr(src2, "sinf(") && !strstr(src2, "cosf("), "the -O2 build calls sinf or cosf");
  snprintf(path, sizeof path, "%s/pe0.c", tmpdir);
  char *src0 = slurp(path);
  ck_assert_msg(strstr(src0, "sinf(") && strstr(src0, "cosf("), "the -O0 build computes the table at run time");

  /* the Transformer at its default shapes folds the same table */
  if (access("graphs/transformer.lua", R_OK) == 0) {
    ck_assert_int_eq(sh("%s compile graphs/transformer.lua -o %s/tr.c", lmc, tmpdir), 0);
    snprintf(path, sizeof path, "%s/tr.c", tmpdir);
    char *tr = slurp(path);
    size_t tn;
    double *tt = table_of(tr, 0, &tn);
    ck_assert(tt && tn == n && !memcmp(tt, tab, n * sizeof(double)));
    ck_assert_msg(!strstr(tr, "sin(") && !strstr(tr, "cos(") && !strstr(tr, "sinf(") && !strstr(tr, "cosf("),
                  "graphs/transformer.lua's C calls sin or cos");
    ck_assert_int_eq(sh("%s compile graphs/transformer.lua --disable-pass=fold-constants -o %s/tr0.c", lmc,
                        tmpdir),
                     0);
    snprintf(path, sizeof path, "%s/tr0.c", tmpdir);
    char *tr0 = slurp(path);
    ck_assert(strstr(tr0, "sinf(") && strstr(tr0, "cosf(") && !strstr(tr0, "lmc_const0"));
    printf("graphs/transformer.lua: the same table folded, no sin or cos; --disable-pass=fold-constants "
           "computes it\n");
    free(tt);
    free(tr);
    free(tr0);
  }
  free(tab);
  free(src0);
  free(src2);
  free_out(&o);
}
END_TEST

START_TEST(golden_dumps)
{
  glob_t gl;
  int ngold = 0;
  if (glob("tests/golden/passes/*.ir", 0, NULL, &gl) == 0) {
    for (size_t i = 0; i < gl.gl_pathc; i++) {
      char base[512], path[600], got[600];
      snprintf(base, sizeof base, "%.*s", (int)(strlen(gl.gl_pathv[i]) - 3), gl.gl_pathv[i]);
      snprintf(path, sizeof path, "%s.graph", base);
      char *graph = slurp(path);
      snprintf(path, sizeof path, "%s.flags", base);
      char *flags = slurp(path);
      ck_assert_msg(graph && flags, "%s: needs .graph and .flags", base);
      graph[strcspn(graph, "\n")] = 0;
      flags[strcspn(flags, "\n")] = 0;
      snprintf(got, sizeof got, "%s/golden%zu.ir", tmpdir, i);
      ck_assert_int_eq(sh("%s compile %s %s --emit=ir -o %s/discard.ir >%s", lmc, graph, flags, tmpdir, got), 0);
      if (getenv("UPDATE"))
        sh("cp %s %s", got, gl.gl_pathv[i]);
      int rc = sh("diff -u %s %s", gl.gl_pathv[i], got);
      printf("%s: %s\n", gl.gl_pathv[i], rc ? "differs" : "matches");
      ck_assert_msg(rc == 0, "%s differs from what lmc prints (UPDATE=1 rewrites it)", gl.gl_pathv[i]);
      ngold++;
      free(graph);
      free(flags);
    }
    globfree(&gl);
  }
  ck_assert_int_ge(ngold, 2);
}
END_TEST

START_TEST(dot_and_stats)
{
  char path[512];
  snprintf(path, sizeof path, "%s/lstm.dot", tmpdir);
  ck_assert_int_eq(sh("%s compile graphs/lstm.lua --emit=dot -o %s", lmc, path), 0);
  char *dot = slurp(path);
  ck_assert(dot && !strncmp(dot, "digraph", 7));
  ck_assert_msg(strstr(dot, "subgraph cluster_loop1") && strstr(dot, "subgraph cluster_fused"),
                "loops and fused kernels are clusters");
  free(dot);
  if (sh("command -v dot >/dev/null") == 0)
    ck_assert_int_eq(sh("dot -Tsvg %s -o %s.svg", path, path), 0);
  snprintf(path, sizeof path, "%s/stats.txt", tmpdir);
  ck_assert_int_eq(sh("%s compile graphs/lstm.lua --stats -o %s/discard.c >%s", lmc, tmpdir, path), 0);
  char *st = slurp(path);
  printf("%s", st);
  const char *lines[] = {"parameters:         13987678 (", "gradients:", "optimizer state:", "train activations:",
                         "FLOPs per step:", "MB arena, the memory plan's peak"};
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
    ck_assert_msg(strstr(st, lines[i]), "--stats prints no '%s'", lines[i]);
  free(st);
}
END_TEST

/* The same graph and flags give the same bytes, passes and all. */
START_TEST(deterministic)
{
  const char *graph = model(_i);
  /* the same -o too: the file quotes the command line */
  ck_assert_int_eq(sh("%s compile %s -o %s/det%d.c && mv %s/det%d.c %s/det%d.first && %s compile %s -o %s/det%d.c && "
                      "cmp %s/det%d.first %s/det%d.c",
                      lmc, graph, tmpdir, _i, tmpdir, _i, tmpdir, _i, lmc, graph, tmpdir, _i, tmpdir, _i, tmpdir, _i),
                   0);
}
END_TEST

static void setup(void)
{
  static bool ready;
  if (ready)
    return;
  ck_assert(mkdtemp(tmpdir) != NULL);
  ck_assert_int_eq(sh("clang -std=c11 -O0 %s -Wall -Wextra -Werror -Iruntime -c tests/emit/driver.c -o %s/driver.o",
                      san, tmpdir),
                   0);
  ready = true;
}

int main(void)
{
  if (getenv("LMC"))
    lmc = getenv("LMC");
  if (getenv("SAN"))
    san = getenv("SAN");
  if (glob("graphs/*.lua", 0, NULL, &models) != 0) {
    fprintf(stderr, "check_passes: no graphs/*.lua (run from the repository root)\n");
    return 1;
  }
  Suite *s = suite_create("passes");
  TCase *unit = tcase_create("unit");
  tcase_add_checked_fixture(unit, NULL, arena_free_all);   /* the graphs a test built */
  tcase_add_test(unit, fold_positional_encoding);
  tcase_add_test(unit, fold_refuses_and_limits);
  tcase_add_test(unit, cse_merges_duplicates);
  tcase_add_test(unit, fuse_add_dropout_patterns);
  tcase_add_test(unit, fuse_nll_and_bias);
  tcase_add_test(unit, fuse_elementwise_lstm_cell);
  tcase_add_test(unit, plan_memory_reuses);
  tcase_add_test(unit, plan_memory_one_step);
  tcase_add_test(unit, pass_table);
  suite_add_tcase(s, unit);
  TCase *tc = tcase_create("lmc");
  tcase_set_timeout(tc, 600);
  tcase_add_unchecked_fixture(tc, setup, NULL);
  tcase_add_loop_test(tc, no_add_feeds_dropout, 0, (int)models.gl_pathc);
  tcase_add_test(tc, folded_table_equals_runtime);
  tcase_add_test(tc, golden_dumps);
  tcase_add_test(tc, dot_and_stats);
  tcase_add_loop_test(tc, deterministic, 0, (int)models.gl_pathc);
  tcase_add_loop_test(tc, numerics_across_builds, 0, (int)models.gl_pathc);
  suite_add_tcase(s, tc);
  int rc = run_suite(s);
  if (strcmp(tmpdir + strlen(tmpdir) - 6, "XXXXXX"))
    sh("rm -rf %s", tmpdir);
  globfree(&models);
  return rc;
}
