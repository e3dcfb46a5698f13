/*
 * driver.c: runs a C file emitted by lmc once and prints what it computed,
 * for tests/check_emit.c, which compares it with naive loops of its own.
 *
 *   prog train|eval|gen T NLOGP [notargets]
 *       fills the parameters, the hidden state, tokens and targets with
 *       fixed values, calls that program's run() once and prints inputs and
 *       results, one array a line: KIND NAME N V1 ... VN
 *   prog opt
 *       runs clip, sgd and adamw on fixed values and prints the results
 *
 * Numbers are printed with %.17g so f64 results come back exactly.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmc_rt.h"

static void print(const char *kind, const char *name, const real *v, size_t n)
{
  printf("%s %s %zu", kind, name, n);
  for (size_t i = 0; i < n; i++)
    printf(" %.17g", (double)v[i]);
  printf("\n");
}

static void print_i32(const char *kind, const int32_t *v, size_t n)
{
  printf("%s - %zu", kind, n);
  for (size_t i = 0; i < n; i++)
    printf(" %d", v[i]);
  printf("\n");
}

static real *fill(size_t n, double scale, double freq, double phase)
{
  real *v = calloc(n + 1, sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = (real)(scale * sin(freq * (double)i + phase));
  return v;
}

static int optimizer(const LmcModel *m)
{
  size_t n = m->param_numel;
  real *p = fill(n, 0.5, 0.37, 0.1), *g = fill(n, 2.0, 0.53, 0.4);
  real *mm = fill(n, 0.1, 0.29, 0.7), *v = fill(n, 0.01, 0.31, 0.2);
  for (size_t i = 0; i < n; i++)
    v[i] = v[i] * v[i];
  print("param", "-", p, n);
  print("grad", "-", g, n);
  print("m", "-", mm, n);
  print("v", "-", v, n);
  double norm = lmc_clip(m, g, 1.5);
  printf("norm - 1 %.17g\n", norm);
  print("clipped", "-", g, n);
  lmc_sgd(m, p, NULL, g, 0.25);
  print("sgd", "-", p, n);
  lmc_adamw(m, p, NULL, g, mm, v, 0.01, 0.1, 3);
  print("adamw", "-", p, n);
  print("adamw_m", "-", mm, n);
  print("adamw_v", "-", v, n);
  double unclipped = lmc_clip(m, g, 1e9);
  printf("unclipped - 1 %.17g\n", unclipped);
  print("after_big_clip", "-", g, n);
  free(p);
  free(g);
  free(mm);
  free(v);
  return 0;
}

int main(int argc, char **argv)
{
  const LmcModel *m = &lmc_model;
  if (argc >= 2 && !strcmp(argv[1], "opt"))
    return optimizer(m);
  if (argc < 4) {
    fprintf(stderr, "usage: %s train|eval|gen T NLOGP [notargets] | opt\n", argv[0]);
    return 2;
  }
  const LmcProgram *p = !strcmp(argv[1], "eval") ? &m->eval : !strcmp(argv[1], "gen") ? &m->gen : &m->train;
  int T = atoi(argv[2]);
  size_t nlogp = (size_t)atol(argv[3]);
  int with_targets = argc < 5 || strcmp(argv[4], "notargets");
  printf("meta - 5 %d %d %d %d %zu\n", m->eval.run != NULL, m->gen.run != NULL, p->has_backward, m->ntoken,
         p->work_numel);
  if (!p->run) {
    fprintf(stderr, "no %s program\n", argv[1]);
    return 2;
  }
  if (T < 1 || T > p->max_seq) {
    fprintf(stderr, "T %d not in 1..%d\n", T, p->max_seq);
    return 2;
  }

  LmcCtx c = {.m = m, .seed = 1234, .step = 5, .threads = 1};
  c.param = fill(m->param_numel, 0.5, 0.37, 0.1);
  c.grad = fill(m->grad_numel, 9, 1, 0);   /* garbage the program must overwrite */
  c.work = fill(p->work_numel, 7, 1, 0);
  c.state = fill(p->state_numel, 0.3, 0.91, 0.5);
  double dropout[16] = {0};
  for (int i = 0; i < m->ndropout && i < 16; i++)
    dropout[i] = m->dropout[i].value;
  c.dropout = dropout;

  int ntok = m->ntoken > 0 ? m->ntoken : 1;
  size_t n = (size_t)T * (size_t)p->batch;
  int32_t *tokens = calloc(n, sizeof *tokens), *targets = calloc(n, sizeof *targets);
  for (size_t i = 0; i < n; i++) {
    tokens[i] = (int32_t)((i * 7 + 3) % (size_t)ntok);
    targets[i] = (int32_t)((i * 5 + 1) % (size_t)ntok);
  }
  print_i32("tokens", tokens, n);
  print_i32("targets", targets, n);
  for (int i = 0; i < m->nparam; i++)
    print("param", m->param[i].name, c.param + m->param[i].offset, m->param[i].numel);
  for (int i = 0; i < p->nstate; i++)
    print("state", p->state[i].name, c.state + p->state[i].offset, p->state[i].numel);

  double loss = p->run(&c, tokens, with_targets ? targets : NULL, T);
  printf("loss - 1 %.17g\n", loss);
  for (int i = 0; i < p->nstate; i++)
    print("newstate", p->state[i].name, c.state + p->state[i].offset, p->state[i].numel);
  real *dense = fill(m->param_numel, 0, 0, 0);
  if (p->has_backward) {
    lmc_grad_dense(m, c.grad, dense);   /* rows gradients (row-grad) written out */
    for (int i = 0; i < m->nparam; i++)
      print("grad", m->param[i].name, dense + m->param[i].offset, m->param[i].numel);
  }
  free(dense);
  if (nlogp && p->has_logp)
    print("logp", "-", c.work + p->logp_offset, nlogp);
  free(c.param);
  free(c.grad);
  free(c.work);
  free(c.state);
  free(tokens);
  free(targets);
  return 0;
}
