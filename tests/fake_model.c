/*
 * fake_model.c: a hand-written LmcModel, so the runtime can be tested
 * without the compiler.
 *
 * It is a bigram language model over the 22-word vocabulary of
 * tests/data/tiny_train:
 *
 *   logp[t, b, :] = log_softmax(W[x[t, b], :] + bias)      W (V, V), bias (V)
 *
 * W is stored as "encoder.weight" and tied to "decoder.weight" (an alias),
 * so checkpoints exercise the tied-pair path.  Every program carries a
 * one-element hidden state that counts the tokens seen since it was last
 * zeroed; it does not change the numbers, but it lets the tests see when
 * the runtime zeroes the state (fake_fresh) and that it carries it between
 * calls otherwise.  The gradient is that of the mean NLL, exact.
 *
 * fake_window_model is the same network whose gen program has no state,
 * as a Transformer's: the runtime must then feed it the window of recent
 * tokens.  A bigram reads only the last one, so both must generate the
 * same text for a seed.
 */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "lmc_rt.h"

enum { V = 22, BPTT = 8, TRAIN_B = 4, EVAL_B = 2, GEN_SEQ = 8 };

/* Test hooks, read and set by tests/check_train.c. */
long fake_calls[3];          /* runs of train, eval, gen */
long fake_fresh[3];          /* runs that found the state zeroed */
int fake_last_T[3];
int fake_max_T[3];
uint64_t fake_last_step;     /* c->step seen by the last train run */
double fake_last_dropout[2]; /* c->dropout[0..1] seen by the last train run */
long fake_nan_at = -1;       /* the train run (0-based) that returns NaN */
long fake_signal_at = -1;    /* the train run (0-based) that raises SIGINT */
double fake_eval_penalty[16];/* added to eval losses of the k-th evaluation (fake_fresh[1] == k) */
int fake_eval_nan;           /* eval runs return NaN */
double fake_objective_extra; /* train runs leave loss + this in c->objective */

static const LmcTensorDesc params[] = {
  { "encoder.weight", 2, { V, V }, 0, (size_t)V * V, LMC_INIT_XAVIER, 0, -1, 0, 0 },
  { "decoder.weight", 2, { V, V }, 0, (size_t)V * V, LMC_INIT_XAVIER, 0, 0, 0, 0 },
  { "decoder.bias", 1, { V }, (size_t)V * V, V, LMC_INIT_UNIFORM, 0.1, -1, (size_t)V * V, 0 },
};

static const LmcTensorDesc state[] = {
  { "hidden", 1, { 1 }, 0, 1, LMC_INIT_ZERO, 0, -1, 0, 0 },
};

static const char *const hyper[][2] = {
  { "ntoken", "22" }, { "emsize", "22" }, { "nhid", "22" }, { "nlayers", "1" },
  { "bptt", "8" }, { "batch_size", "4" }, { "dropout", "0.2" }, { "dropouth", "0.25" },
  { "tied", "true" },
};

/* two slots, as a model with dropouts of its own (AWD-LSTM's dropouth) */
static const LmcDropoutSlot dropout[] = { { "dropout", 0.2 }, { "dropouth", 0.25 } };

/* Forward (and backward when targets and grad are given) of one program. */
static double bigram(LmcCtx *c, int which, int B, int nstate, const int32_t *x, const int32_t *y, int T,
                     int backward)
{
  const real *W = c->param, *bias = c->param + (size_t)V * V;
  real *logp = c->work;   /* logp_offset 0: (T, B, V) */
  fake_calls[which]++;
  fake_last_T[which] = T;
  if (T > fake_max_T[which]) fake_max_T[which] = T;
  if (nstate) {
    if (c->state[0] == 0) fake_fresh[which]++;
    c->state[0] += (real)T;
  }
  if (which == 0) {
    fake_last_step = c->step;
    fake_last_dropout[0] = c->dropout[0];
    fake_last_dropout[1] = c->dropout[1];
  }
  real *gW = NULL, *gb = NULL;
  if (backward) {
    memset(c->grad, 0, ((size_t)V * V + V) * sizeof(real));
    gW = c->grad;
    gb = c->grad + (size_t)V * V;
  }
  int N = T * B;
  double loss = 0;
  for (int n = 0; n < N; n++) {
    int tok = x[n];
    if (tok < 0 || tok >= V) abort();
    real *row = logp + (size_t)n * V;
    double z[V], mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) {
      z[v] = (double)W[tok * V + v] + bias[v];
      if (z[v] > mx) mx = z[v];
    }
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++) row[v] = (real)(z[v] - lse);
    if (!y) continue;
    if (y[n] < 0 || y[n] >= V) abort();
    loss -= z[y[n]] - lse;
    if (backward)
      for (int v = 0; v < V; v++) {
        double d = (exp(z[v] - lse) - (v == y[n])) / N;
        gW[tok * V + v] += (real)d;
        gb[v] += (real)d;
      }
  }
  if (which == 0 && fake_signal_at >= 0 && fake_calls[0] - 1 == fake_signal_at)
    raise(SIGINT);
  if (which == 0 && fake_nan_at >= 0 && fake_calls[0] - 1 == fake_nan_at)
    return NAN;
  if (which == 0 && y) c->objective = loss / N + fake_objective_extra;
  if (which == 1 && y) {
    if (fake_eval_nan) return NAN;
    if (fake_fresh[1] < 16) loss += N * fake_eval_penalty[fake_fresh[1]];
  }
  return y ? loss / N : 0;
}

static double run_train(LmcCtx *c, const int32_t *x, const int32_t *y, int T)
{
  return bigram(c, 0, TRAIN_B, 1, x, y, T, 1);
}

static double run_eval(LmcCtx *c, const int32_t *x, const int32_t *y, int T)
{
  return bigram(c, 1, EVAL_B, 1, x, y, T, 0);
}

static double run_gen(LmcCtx *c, const int32_t *x, const int32_t *y, int T)
{
  return bigram(c, 2, 1, 1, x, y, T, 0);
}

static double run_gen_window(LmcCtx *c, const int32_t *x, const int32_t *y, int T)
{
  return bigram(c, 2, 1, 0, x, y, T, 0);
}

#define PROGRAM(B, SEQ, NSTATE, BACKWARD, RUN) \
  { B, SEQ, (size_t)(SEQ) * (B) * V, NSTATE, NSTATE, state, BACKWARD, RUN, 1, 0, 0, 0 }

#define MODEL(GEN)                                                                  \
  {                                                                                 \
    .kind = "LSTM", .version = "0.0-fake", .flags = "tests/fake_model.c",           \
    .nhyper = (int)(sizeof hyper / sizeof hyper[0]), .hyper = hyper,                \
    .ntoken = V, .bptt = BPTT, .nparam = 3, .param = params,                        \
    .param_numel = (size_t)V * V + V, .grad_numel = (size_t)V * V + V,              \
    .ndropout = 2, .dropout = dropout,                                              \
    .train = PROGRAM(TRAIN_B, BPTT, 1, 1, run_train),                               \
    .eval = PROGRAM(EVAL_B, BPTT, 1, 0, run_eval), .gen = GEN,                      \
  }

const LmcModel lmc_model = MODEL(PROGRAM(1, 1, 1, 0, run_gen));
const LmcModel fake_window_model = MODEL(PROGRAM(1, GEN_SEQ, 0, 0, run_gen_window));
