/*
 * check_ir.c: IR construction, shape inference, the verifier, dce and the
 * structure autodiff builds, on hand-built graphs.
 */
#include <string.h>
#include "lmc.h"
#include "testutil.h"

static Shape S(int rank, int d0, int d1, int d2, unsigned seq)
{
  return shape_make(rank, (int[]){d0, d1, d2}, seq);
}

static Graph *G(void)
{
  Graph *g = ir_new(35, 20, DT_F32);
  g->cur_file = "test.lua";
  g->cur_line = 7;
  return g;
}

START_TEST(matmul_shapes)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(3, 1, 20, 200, 1), false);
  int w = ir_param(g, "w", S(2, 800, 200, 0, 0), INIT_UNIFORM, 0.1);
  int y = ir_op2(g, OP_MATMUL, x, w, &(Attr){.tb = 1});
  ck_assert_str_eq(shape_str(&g->node[y].shape), "(T, 20, 800)");
  int dw = ir_op2(g, OP_MATMUL, y, x, &(Attr){.ta = 1});
  ck_assert_str_eq(shape_str(&g->node[dw].shape), "(800, 200)");
  int v = ir_param(g, "v", S(2, 200, 650, 0, 0), INIT_ZERO, 0);
  int z = ir_op2(g, OP_MATMUL, x, v, NULL);
  ck_assert_str_eq(shape_str(&g->node[z].shape), "(T, 20, 650)");
}
END_TEST

START_TEST(matmul_mismatch_exits)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(2, 20, 200, 0, 0), false);
  int w = ir_param(g, "w", S(2, 650, 10, 0, 0), INIT_ZERO, 0);
  ir_op2(g, OP_MATMUL, x, w, NULL);   /* inner dimensions differ (200 vs 650) */
}
END_TEST

START_TEST(broadcast_shapes)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(3, 1, 20, 200, 1), false);
  int b = ir_param(g, "b", S(1, 200, 0, 0, 0), INIT_ZERO, 0);
  int pe = ir_input(g, "pe", DT_F32, S(3, 1, 1, 200, 1), false);
  ck_assert_str_eq(shape_str(&g->node[ir_op2(g, OP_ADD, x, b, NULL)].shape), "(T, 20, 200)");
  ck_assert_str_eq(shape_str(&g->node[ir_op2(g, OP_ADD, pe, x, NULL)].shape), "(T, 20, 200)");
  int c = ir_const(g, 2);
  ck_assert_int_eq(g->node[ir_op2(g, OP_MUL, c, x, NULL)].shape.rank, 3);
  int s = ir_op1(g, OP_SUM, x, &(Attr){.shape = S(1, 200, 0, 0, 0)});
  ck_assert_str_eq(shape_str(&g->node[s].shape), "(200)");
}
END_TEST

START_TEST(broadcast_mismatch_exits)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(2, 20, 200, 0, 0), false);
  int b = ir_param(g, "b", S(1, 199, 0, 0, 0), INIT_ZERO, 0);
  ir_op2(g, OP_ADD, x, b, NULL);
}
END_TEST

START_TEST(reshape_infers_seq)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(3, 1, 20, 200, 1), false);
  int r = ir_op1(g, OP_RESHAPE, x, &(Attr){.shape = S(2, -1, 200, 0, 0)});
  ck_assert_str_eq(shape_str(&g->node[r].shape), "(20*T, 200)");
  ck_assert_int_eq(shape_numel(&g->node[r].shape, 3), 3 * 20 * 200);
  int back = ir_op1(g, OP_RESHAPE, r, &(Attr){.shape = S(3, 1, 20, 200, 1)});
  ck_assert(shape_eq(&g->node[back].shape, &g->node[x].shape));
}
END_TEST

START_TEST(slice_to_sequence_length)
{
  Graph *g = G();
  int pe = ir_param(g, "pe", S(3, 5000, 1, 16, 0), INIT_ZERO, 0);
  int s = ir_op1(g, OP_SLICE, pe, &(Attr){.axis = 0, .start = 0, .len = -1});
  ck_assert_str_eq(shape_str(&g->node[s].shape), "(T, 1, 16)");
  int m = ir_op(g, OP_TRIU_MASK, 0, NULL, NULL);
  ck_assert_str_eq(shape_str(&g->node[m].shape), "(T, T)");
  ck_assert_int_eq(shape_numel(&g->node[m].shape, 5), 25);
}
END_TEST

START_TEST(bmm_shapes)
{
  Graph *g = G();
  int q = ir_input(g, "q", DT_F32, shape_make(4, (int[]){20, 2, 1, 100}, 4), false);
  int s = ir_op2(g, OP_BMM, q, q, &(Attr){.tb = 1});
  ck_assert_str_eq(shape_str(&g->node[s].shape), "(20, 2, T, T)");
  int o = ir_op2(g, OP_BMM, s, q, NULL);
  ck_assert_str_eq(shape_str(&g->node[o].shape), "(20, 2, T, 100)");
}
END_TEST

/* A tanh RNN: h_t = tanh(x_t + h_{t-1} W^T); returns the loss node. */
static int build_rnn(Graph *g, int *carry)
{
  int x = ir_input(g, "x", DT_F32, S(3, 1, 4, 8, 1), false);
  int h0 = ir_input(g, "h0", DT_F32, S(2, 4, 8, 0, 0), true);
  int w = ir_param(g, "w", S(2, 8, 8, 0, 0), INIT_UNIFORM, 0.3);
  ir_loop_begin(g, false);
  int xt = ir_step(g, x);
  int h = ir_carry(g, h0);
  int hn = ir_op1(g, OP_TANH, ir_op2(g, OP_ADD, xt, ir_op2(g, OP_MATMUL, h, w, &(Attr){.tb = 1}), NULL), NULL);
  ir_carry_next(g, h, hn);
  ir_loop_end(g);
  int ys = ir_stack(g, hn);
  ir_output(g, "h0", ir_final(g, h));
  int t = ir_input(g, "targets", DT_I32, S(2, 1, 4, 0, 1), false);
  int loss = ir_op2(g, OP_NLL_LOSS, ir_op1(g, OP_LOG_SOFTMAX, ys, NULL), t, NULL);
  ir_output(g, "loss", loss);
  if (carry)
    *carry = h;
  return loss;
}

START_TEST(scan_builds_loop)
{
  Graph *g = G();
  int h;
  build_rnn(g, &h);
  char err[256];
  ck_assert_msg(verify(g, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(g->nloop, 2);
  ck_assert_int_eq(g->node[h].loop, 1);
  ck_assert_int_eq(g->node[h].op, OP_CARRY);
  ck_assert_int_gt(g->node[h].in[1], h);
}
END_TEST

START_TEST(verifier_catches_malformed)
{
  char err[256];
  Graph *g;
  int h;

  g = G(); build_rnn(g, &h);
  g->node[h + 2].in[0] = g->nnode - 1;           /* reads a later node */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "out of schedule order"));

  g = G(); build_rnn(g, &h);
  g->node[h].loop = 0;                            /* a carry outside its loop */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);

  g = G(); build_rnn(g, &h);
  int ys = -1;
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == OP_STACK)
      ys = i;
  g->node[ys].op = OP_TANH;                       /* top level reads a body value directly */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "reads"));

  g = G(); build_rnn(g, &h);
  g->node[h + 1].dead = true;                     /* a live node reads a dead one */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "dead"));

  g = G(); build_rnn(g, &h);
  g->node[h].nin = 1;                             /* wrong arity */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);

  g = G(); build_rnn(g, &h);
  g->out[0].node = h;                             /* output inside a loop */
  ck_assert_int_eq(verify(g, err, sizeof err), -1);
}
END_TEST

START_TEST(autodiff_structure)
{
  Graph *g = G();
  build_rnn(g, NULL);
  autodiff(g);
  char err[256];
  ck_assert_msg(verify(g, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(g->nloop, 3);
  ck_assert(g->loop[2].reverse);
  int gw = ir_find_output(g, "grad:w");
  ck_assert_int_ge(gw, 0);
  ck_assert_str_eq(shape_str(&g->node[gw].shape), "(8, 8)");
  /* The state input is detached: nothing flows into it. */
  for (int i = 0; i < g->nout; i++)
    ck_assert_str_ne(g->out[i].name, "grad:h0");
  /* W's gradient is one matmul over all steps, outside the loops. */
  ck_assert_int_eq(g->node[gw].loop, 0);
  ck_assert_int_eq(g->node[gw].op, OP_MATMUL);
  dce(g);
  ck_assert_msg(verify(g, err, sizeof err) == 0, "%s", err);
}
END_TEST

START_TEST(dce_removes_unused)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(2, 4, 8, 0, 0), false);
  int unused = ir_op1(g, OP_EXP, x, NULL);
  int used = ir_op1(g, OP_TANH, x, NULL);
  ir_output(g, "y", used);
  dce(g);
  ck_assert(g->node[unused].dead);
  ck_assert(!g->node[used].dead);
  ck_assert(!g->node[x].dead);
}
END_TEST

/* ---------------------------------------------------------------- sizes */

static Shape S4(int d0, int d1, int d2)
{
  return shape_make(3, (int[]){d0, d1, d2}, 0);
}

/* 64 GiB is allowed, one element more is not */
START_TEST(tensor_at_the_size_limit)
{
  Graph *g = G();
  int p = ir_param(g, "p", shape_make(2, (int[]){16, 1 << 30}, 0), INIT_ZERO, 0);
  ck_assert_int_eq(shape_numel(&g->node[p].shape, 35) * 4, LMC_MAX_BYTES);
}
END_TEST

START_TEST(tensor_over_the_size_limit_exits)
{
  Graph *g = G();
  ir_input(g, "x", DT_F32, shape_make(2, (int[]){16, (1 << 30) + 1}, 0), false);
}
END_TEST

/* (T, 20, 2^31 - 1) at T = 35: 5.6 TB */
START_TEST(matmul_result_too_large_exits)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(3, 1, 20, 4, 1), false);
  int w = ir_input(g, "w", DT_F32, S(2, 4, 2147483647, 0, 0), false);
  ir_op2(g, OP_MATMUL, x, w, NULL);
}
END_TEST

/* rows of 2^32 and 2^33: equal as wrapped ints (0), not equal */
START_TEST(matmul_rows_beyond_int_exits)
{
  Graph *g = G();
  int a = ir_input(g, "a", DT_F32, S4(65536, 65536, 2), false);
  int b = ir_input(g, "b", DT_F32, S4(131072, 65536, 1), false);
  ir_op2(g, OP_MATMUL, a, b, &(Attr){.ta = 1});
}
END_TEST

/* (T, 100000000, 1) at T = 35: 3500000000 rows, more than the BLAS's int */
START_TEST(matmul_rows_over_int_exits)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(3, 1, 100000000, 1, 1), false);
  int w = ir_input(g, "w", DT_F32, S(2, 1, 2, 0, 0), false);
  ir_op2(g, OP_MATMUL, x, w, NULL);
}
END_TEST

START_TEST(concat_beyond_int_exits)
{
  Graph *g = G();
  int a = ir_input(g, "a", DT_F32, shape_make(1, (int[]){1200000000}, 0), false);
  ir_op2(g, OP_CONCAT, a, a, &(Attr){.axis = 0});
}
END_TEST

/* (2^31 - 1, 2^31 - 1, 1) * 4 bytes does not fit in an int64_t */
START_TEST(broadcast_beyond_int64_exits)
{
  Graph *g = G();
  int a = ir_input(g, "a", DT_F32, S4(2147483647, 1, 1), false);
  int b = ir_input(g, "b", DT_F32, S4(1, 2147483647, 1), false);
  ir_op2(g, OP_ADD, a, b, NULL);
}
END_TEST

START_TEST(parameters_over_the_size_limit_exit)
{
  Graph *g = G();
  for (int i = 0; i < 6; i++)   /* 12 GiB each */
    ir_param(g, arena_printf("p%d", i), shape_make(2, (int[]){3, 1 << 30}, 0), INIT_ZERO, 0);
}
END_TEST

START_TEST(node_limit_exits)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(2, 4, 8, 0, 0), false);
  for (int i = 0; i <= LMC_MAX_NODES; i++)
    x = ir_op1(g, OP_TANH, x, NULL);
}
END_TEST

/* outputs and parameters are found by name (a hash map), also after one
 * is dropped */
START_TEST(names_found_after_a_drop)
{
  Graph *g = G();
  int x = ir_input(g, "x", DT_F32, S(2, 4, 8, 0, 0), false);
  int y[300];
  for (int i = 0; i < 300; i++) {
    y[i] = ir_op1(g, OP_TANH, x, NULL);
    ir_output(g, arena_printf("y%d", i), y[i]);
    ir_param(g, arena_printf("w%d", i), S(1, 8, 0, 0, 0), INIT_ZERO, 0);
  }
  ir_drop_output(g, "y7");
  ck_assert_int_eq(g->nout, 299);
  ck_assert_int_eq(ir_find_output(g, "y7"), -1);
  for (int i = 0; i < 300; i++)
    if (i != 7)
      ck_assert_int_eq(ir_find_output(g, arena_printf("y%d", i)), y[i]);
  ir_output(g, "y7", y[3]);
  ck_assert_int_eq(ir_find_output(g, "y7"), y[3]);
  ck_assert_int_eq(g->node[ir_find_param(g, "w299")].op, OP_PARAM);
  ck_assert_int_eq(ir_find_param(g, "w300"), -1);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ir");
  TCase *tc = tcase_create("ir");
  tcase_add_checked_fixture(tc, NULL, arena_free_all);   /* the graphs a test built */
  tcase_add_test(tc, matmul_shapes);
  tcase_add_exit_test(tc, matmul_mismatch_exits, 1);
  tcase_add_test(tc, broadcast_shapes);
  tcase_add_exit_test(tc, broadcast_mismatch_exits, 1);
  tcase_add_test(tc, reshape_infers_seq);
  tcase_add_test(tc, slice_to_sequence_length);
  tcase_add_test(tc, bmm_shapes);
  tcase_add_test(tc, scan_builds_loop);
  tcase_add_test(tc, verifier_catches_malformed);
  tcase_add_test(tc, autodiff_structure);
  tcase_add_test(tc, dce_removes_unused);
  tcase_add_test(tc, tensor_at_the_size_limit);
  tcase_add_exit_test(tc, tensor_over_the_size_limit_exits, 1);
  tcase_add_exit_test(tc, matmul_result_too_large_exits, 1);
  tcase_add_exit_test(tc, matmul_rows_beyond_int_exits, 1);
  tcase_add_exit_test(tc, matmul_rows_over_int_exits, 1);
  tcase_add_exit_test(tc, concat_beyond_int_exits, 1);
  tcase_add_exit_test(tc, broadcast_beyond_int64_exits, 1);
  tcase_add_exit_test(tc, parameters_over_the_size_limit_exit, 1);
  tcase_add_exit_test(tc, node_limit_exits, 1);
  tcase_add_test(tc, names_found_after_a_drop);
  suite_add_tcase(s, tc);
  return run_suite(s);
}
