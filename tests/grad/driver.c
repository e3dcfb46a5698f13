/*
 * driver.c: gradient check of one emitted f64 program.
 *
 * Linked with a file emitted by `lmc compile --dtype=f64` and with
 * runtime/optimizer.c built with LMC_REAL=double (lmc_grad_dense).  Fills the
 * parameters with seeded values, runs the training program once for the
 * analytic gradient, then compares every parameter element with the central
 * difference (L(p + h) - L(p - h)) / 2h.  Prints, per tensor, the
 * norm-wise relative error ||g - fd|| / max(||fd||, 1e-12) and the
 * tolerance; exits 1 if any tensor is above it.  The first run also checks
 * c->grad_ready (lmc_rt.h): every parameter announced once, its gradient
 * then already what run() returns.
 *
 * A graph with an "objective" output (LmcModel.has_objective) is checked
 * against the objective's differences, which run() leaves in c->objective;
 * and when its evaluation program has the training batch, the loss that
 * run() returns (the one the trainer logs) must be the evaluation
 * program's on the same tokens, at dropout 0.
 *
 * usage: driver [T] [dropout-probability]
 */
#define LMC_REAL double
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lmc_rt.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static double uniform(void)   /* [-1, 1) */
{
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng >> 11) * 0x1p-52 - 1;
}

/* What training minimises at the parameters in c: the objective, or the
 * loss when the graph declares none. */
static double minimised(LmcCtx *c, const int32_t *tokens, const int32_t *targets, int T)
{
  double loss = c->m->train.run(c, tokens, targets, T);
  return c->m->has_objective ? c->objective : loss;
}

/* The logged loss (train's run()) against the evaluation program's; 0 when
 * they agree or cannot be compared. */
static int check_logged_loss(LmcCtx *c, const double *state0, const int32_t *tokens, const int32_t *targets, int T,
                             double drop)
{
  const LmcModel *m = c->m;
  if (!m->has_objective || m->eval.batch != m->train.batch || m->eval.state_numel || drop != 0)
    return 0;
  memcpy(c->state, state0, sizeof(double) * m->train.state_numel);
  double loss = m->train.run(c, tokens, targets, T), objective = c->objective;
  double *work = c->work;
  c->work = calloc(m->eval.work_numel + 1, sizeof(double));
  double eval = m->eval.run(c, tokens, targets, T);
  free(c->work);
  c->work = work;
  double diff = fabs(loss - eval) / fmax(fabs(eval), 1e-300);
  printf("logged loss %.12g, evaluated %.12g (rel. difference %.3g, tolerance 1e-12); objective %.12g\n", loss,
         eval, diff, objective);
  return !(diff <= 1e-12) || !(objective > loss);
}

/* grad_ready's view: each parameter's gradient when announced */
static double *announced;
static int *times;

static void on_ready(LmcCtx *c, int q)
{
  times[q]++;
  lmc_grad_dense_one(&c->m->param[q], c->grad, announced);
}

/* 0 when every parameter was announced once with its final gradient */
static int check_ready(const LmcModel *m, const double *grad)
{
  int bad = 0, own = 0;
  for (int k = 0; k < m->nparam; k++) {
    const LmcTensorDesc *d = &m->param[k];
    if (d->alias >= 0)
      continue;
    own++;
    size_t n = d->numel * sizeof(double);
    if (times[k] != 1 || memcmp(announced + d->offset, grad + d->offset, n)) {
      printf("grad_ready: %s announced %d times, %s  FAIL\n", d->name, times[k],
             memcmp(announced + d->offset, grad + d->offset, n) ? "not yet final" : "final");
      bad = 1;
    }
  }
  if (!bad)
    printf("grad_ready: each of %d parameters announced once, its gradient final\n", own);
  return bad;
}

int main(int argc, char **argv)
{
  const LmcModel *m = &lmc_model;
  const LmcProgram *p = &m->train;
  int T = argc > 1 ? atoi(argv[1]) : p->max_seq;
  double drop = argc > 2 ? atof(argv[2]) : 0;
  double tol = 1e-6, h = 1e-6;
  if (T < 1 || T > p->max_seq)
    T = p->max_seq;

  LmcCtx c = {.m = m, .seed = 7, .step = 3, .threads = 1};
  c.param = calloc(m->param_numel + 1, sizeof(double));
  c.grad = calloc(m->grad_numel + 1, sizeof(double));
  c.work = calloc(p->work_numel + 1, sizeof(double));
  c.state = calloc(p->state_numel + 1, sizeof(double));
  double *state0 = calloc(p->state_numel + 1, sizeof(double));
  double *dropout = calloc((size_t)m->ndropout + 1, sizeof(double));
  for (int i = 0; i < m->ndropout; i++)
    dropout[i] = drop;
  c.dropout = dropout;
  for (size_t i = 0; i < m->param_numel; i++)
    c.param[i] = uniform();
  for (size_t i = 0; i < p->state_numel; i++)
    state0[i] = 0.5 * uniform();
  int n = T * p->batch, V = m->ntoken > 0 ? m->ntoken : 1;
  int32_t *tokens = calloc((size_t)n, sizeof(int32_t)), *targets = calloc((size_t)n, sizeof(int32_t));
  for (int i = 0; i < n; i++) {
    tokens[i] = (int32_t)((uniform() + 1) / 2 * V) % V;
    targets[i] = (int32_t)((uniform() + 1) / 2 * V) % V;
  }

  memcpy(c.state, state0, sizeof(double) * p->state_numel);
  announced = calloc(m->param_numel + 1, sizeof(double));
  times = calloc((size_t)m->nparam + 1, sizeof(int));
  c.grad_ready = on_ready;
  double loss = minimised(&c, tokens, targets, T);
  c.grad_ready = NULL;
  double *grad = malloc(sizeof(double) * (m->param_numel + 1));
  lmc_grad_dense(m, c.grad, grad);   /* rows gradients (row-grad) written out */
  printf("T=%d B=%d %s=%.12g dropout=%g\n", T, p->batch, m->has_objective ? "objective" : "loss", loss, drop);

  int bad = check_ready(m, grad);
  for (int k = 0; k < m->nparam; k++) {
    const LmcTensorDesc *d = &m->param[k];
    if (d->alias >= 0)
      continue;
    double num = 0, den = 0;
    for (size_t i = 0; i < d->numel; i++) {
      double *x = &c.param[d->offset + i], saved = *x;
      *x = saved + h;
      memcpy(c.state, state0, sizeof(double) * p->state_numel);
      double lp = minimised(&c, tokens, targets, T);
      *x = saved - h;
      memcpy(c.state, state0, sizeof(double) * p->state_numel);
      double lm = minimised(&c, tokens, targets, T);
      *x = saved;
      double fd = (lp - lm) / (2 * h), g = grad[d->offset + i];
      num += (g - fd) * (g - fd);
      den += fd * fd;
    }
    double err = sqrt(num) / fmax(sqrt(den), 1e-12);
    printf("%-32s %8zu elements  |grad| %-10.4g rel. error %.3g (tolerance %.0e)%s\n", d->name, d->numel,
           sqrt(den), err, tol, err <= tol ? "" : "  FAIL");
    if (!(err <= tol))
      bad = 1;
  }
  bad |= check_logged_loss(&c, state0, tokens, targets, T, drop);
  free(c.param);
  free(c.grad);
  free(c.work);
  free(c.state);
  free(state0);
  free(dropout);
  free(tokens);
  free(targets);
  free(grad);
  free(announced);
  free(times);
  return bad;
}
