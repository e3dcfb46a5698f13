/*
 * check_emit.c: the C emitter, end to end.
 *
 * Each test builds a small graph by hand with the ir.c builders, emits it,
 * compiles the C file with clang -std=c11 -O2 -Wall -Wextra -Werror
 * together with tests/emit/driver.c, runs it, and compares what the driver
 * printed (inputs, outputs, new hidden state, gradients) with values
 * computed here by naive loops, printing the largest difference next to
 * the tolerance.  Results a program cannot return directly are made
 * outputs named like a state input, which run() copies into c->state.
 * Backward kernels are checked against central finite differences of the
 * naive forward computation.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmc.h"
#include "lmc_rt.h"
#include "testutil.h"

/* ------------------------------------------------------------ running */

typedef struct {
  char kind[16], name[128];
  int n;
  double *v;
} Arr;

typedef struct {
  Arr arr[128];
  int narr;
  char *src;              /* the emitted C */
} Run;

static char *emit_text(Program *p)
{
  char *s = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&s, &n);
  ck_assert(f != NULL);
  place(p);
  emit_c(p, f);
  fclose(f);
  return s;
}

/* Emits p, compiles it with the driver (clang -Werror), runs
 * `prog ARGS` and reads the arrays it printed into *r. */
static void run(Program *p, const char *args, Run *r)
{
  memset(r, 0, sizeof *r);
  char dir[] = "/tmp/check_emit.XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  r->src = emit_text(p);
  char *path = xasprintf("%s/model.c", dir), *prog = xasprintf("%s/prog", dir);
  FILE *f = fopen(path, "w");
  ck_assert(f != NULL);
  fputs(r->src, f);
  fclose(f);
  /* the driver and the optimizer must see the same `real` as the emitted
   * file (the library's optimizer is float's) */
  /* SAN: extra flags (the sanitizers of `make sanitize`) */
  bool f64 = p->train->real == DT_F64;
  char *cc = xasprintf("clang -std=c11 -O2 %s -Wall -Wextra -Werror -Iruntime %s "
                       "$(pkg-config --cflags openblas 2>/dev/null) -o %s %s tests/emit/driver.c %s %s "
                       "$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm 2>&1",
                       getenv("SAN") ? getenv("SAN") : "", f64 ? "-DLMC_REAL=double" : "", prog, path,
                       f64 ? "runtime/optimizer.c" : "", runtime_lib());
  fflush(stdout);
  int rc = system(cc);
  ck_assert_msg(rc == 0, "the emitted C does not compile cleanly: %s", path);
  char *cmd = xasprintf("OPENBLAS_NUM_THREADS=1 %s %s", prog, args);
  FILE *pf = popen(cmd, "r");
  ck_assert(pf != NULL);
  char kind[16], name[128];
  int n;
  while (fscanf(pf, "%15s %127s %d", kind, name, &n) == 3) {
    ck_assert(r->narr < 128);
    Arr *a = &r->arr[r->narr++];
    strcpy(a->kind, kind);
    strcpy(a->name, name);
    a->n = n;
    a->v = xcalloc((size_t)n + 1, sizeof(double));
    for (int i = 0; i < n; i++)
      ck_assert(fscanf(pf, "%lf", &a->v[i]) == 1);
  }
  rc = pclose(pf);
  ck_assert_msg(rc == 0, "%s failed (%d); the C file is %s", cmd, rc, path);
  if (getenv("CHECK_EMIT_KEEP")) {
    printf("kept %s\n", path);
  } else {
    unlink(prog);
    unlink(path);
    rmdir(dir);
  }
  free(path);
  free(prog);
  free(cc);
  free(cmd);
}

static void run_free(Run *r)
{
  for (int i = 0; i < r->narr; i++)
    free(r->arr[i].v);
  free(r->src);
  r->narr = 0;
  r->src = NULL;
}

static const double *get(Run *r, const char *kind, const char *name, int n)
{
  for (int i = 0; i < r->narr; i++)
    if (!strcmp(r->arr[i].kind, kind) && !strcmp(r->arr[i].name, name)) {
      ck_assert_msg(r->arr[i].n == n, "%s %s: %d values, expected %d", kind, name, r->arr[i].n, n);
      return r->arr[i].v;
    }
  ck_abort_msg("the driver printed no %s %s", kind, name);
  return NULL;
}

static void expect(const char *what, const double *got, const double *want, int n, double tol)
{
  double d = max_abs_diff(what, got, want, n, tol);
  ck_assert_msg(d <= tol, "%s: max |diff| %g > %g", what, d, tol);
}

/* ------------------------------------------------------------ graphs */

static Graph *graph(int max_seq, int batch, DType real)
{
  Graph *g = ir_new(max_seq, batch, real);
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

static int param(Graph *g, const char *name, Shape s)
{
  return ir_param(g, name, s, INIT_UNIFORM, 0.1);
}

/* An output run() copies into c->state: the driver prints it. */
static void state_out(Graph *g, const char *name, int node)
{
  ir_input(g, name, g->real, g->node[node].shape, true);
  ir_output(g, name, node);
}

static int tokens(Graph *g, const char *name)
{
  return ir_input(g, name, DT_I32, shp(2, 1, 1, g->batch), false);
}

static Program program(Graph *train, int ntoken)
{
  static char value[32];
  static Hyper hyper[2] = {{"ntoken", value}, {"emsize", "4"}};
  snprintf(value, sizeof value, "%d", ntoken);
  verify_or_die(train, "check_emit");
  return (Program){.train = train, .hyper = hyper, .nhyper = 2, .flags = "check_emit", .source = "t.lua"};
}

static double sigmoid(double x)
{
  return 1 / (1 + exp(-x));
}

/* dx = J^T dy of f at x by central differences; f maps n inputs to m outputs. */
static void fd_vjp(void (*f)(const double *x, double *y, int n), const double *x, const double *dy, int n, int m,
                   double *dx)
{
  double *xp = malloc(sizeof(double) * (size_t)n), *y1 = malloc(sizeof(double) * (size_t)m),
         *y2 = malloc(sizeof(double) * (size_t)m);
  const double h = 1e-6;
  memcpy(xp, x, sizeof(double) * (size_t)n);
  for (int i = 0; i < n; i++) {
    xp[i] = x[i] + h;
    f(xp, y1, n);
    xp[i] = x[i] - h;
    f(xp, y2, n);
    xp[i] = x[i];
    dx[i] = 0;
    for (int j = 0; j < m; j++)
      dx[i] += dy[j] * (y1[j] - y2[j]) / (2 * h);
  }
  free(xp);
  free(y1);
  free(y2);
}

/* ------------------------------------------------------------ elementwise */

START_TEST(elementwise_broadcast)
{
  Graph *g = graph(4, 2, DT_F64);
  int a = param(g, "a", shp(3, 0, 3, 1, 4));
  int b = param(g, "b", shp(2, 0, 2, 1));
  int c = param(g, "c", shp(1, 0, 4));
  int b2 = ir_op2(g, OP_ADD, b, ir_const(g, 2), NULL);
  state_out(g, "add", ir_op2(g, OP_ADD, a, b, NULL));
  state_out(g, "sub", ir_op2(g, OP_SUB, b, a, NULL));
  state_out(g, "mul", ir_op2(g, OP_MUL, a, b, NULL));
  state_out(g, "div", ir_op2(g, OP_DIV, a, b2, NULL));
  state_out(g, "cmul", ir_op2(g, OP_MUL, c, a, NULL));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 1 0", &r);
  const double *A = get(&r, "param", "a", 12), *B = get(&r, "param", "b", 2), *C = get(&r, "param", "c", 4);
  double add[24], sub[24], mul[24], div[24], cmul[12];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 4; k++) {
        int o = (i * 2 + j) * 4 + k;
        add[o] = A[i * 4 + k] + B[j];
        sub[o] = B[j] - A[i * 4 + k];
        mul[o] = A[i * 4 + k] * B[j];
        div[o] = A[i * 4 + k] / (B[j] + 2);
        cmul[i * 4 + k] = C[k] * A[i * 4 + k];
      }
  expect("add (3,1,4)+(2,1)", get(&r, "newstate", "add", 24), add, 24, 1e-15);
  expect("sub (2,1)-(3,1,4)", get(&r, "newstate", "sub", 24), sub, 24, 1e-15);
  expect("mul", get(&r, "newstate", "mul", 24), mul, 24, 1e-15);
  expect("div by (2,1)+scalar", get(&r, "newstate", "div", 24), div, 24, 1e-15);
  expect("mul (4)*(3,1,4)", get(&r, "newstate", "cmul", 12), cmul, 12, 1e-15);
  run_free(&r);
}
END_TEST

static const Op unary_ops[] = {OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_SIN, OP_COS, OP_TANH, OP_SIGMOID, OP_RELU};

static double unary_ref(Op op, double x)
{
  switch (op) {
  case OP_NEG: return -x;
  case OP_EXP: return exp(x);
  case OP_LOG: return log(x + 2);
  case OP_SQRT: return sqrt(x + 2);
  case OP_SIN: return sin(x);
  case OP_COS: return cos(x);
  case OP_TANH: return tanh(x);
  case OP_SIGMOID: return sigmoid(x);
  case OP_RELU: return x > 0 ? x : 0;
  default: return NAN;
  }
}

static Op fd_op;
static void fd_unary(const double *x, double *y, int n)
{
  for (int i = 0; i < n; i++)
    y[i] = unary_ref(fd_op, x[i]);
}

START_TEST(unary_math_and_grads)
{
  Graph *g = graph(4, 2, DT_F64);
  int x = param(g, "x", shp(2, 0, 2, 5));
  int dy = param(g, "dy", shp(2, 0, 2, 5));
  int x2 = ir_op2(g, OP_ADD, x, ir_const(g, 2), NULL);
  int y[16];
  for (size_t i = 0; i < sizeof unary_ops / sizeof *unary_ops; i++) {
    Op op = unary_ops[i];
    y[i] = ir_op1(g, op, op == OP_LOG || op == OP_SQRT ? x2 : x, NULL);
    state_out(g, op_info[op].name, y[i]);
  }
  state_out(g, "tanh_grad", ir_op2(g, OP_TANH_GRAD, dy, y[6], NULL));
  state_out(g, "sigmoid_grad", ir_op2(g, OP_SIGMOID_GRAD, dy, y[7], NULL));
  state_out(g, "relu_grad", ir_op2(g, OP_RELU_GRAD, dy, y[8], NULL));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 1 0", &r);
  const double *X = get(&r, "param", "x", 10), *DY = get(&r, "param", "dy", 10);
  double want[10];
  for (size_t i = 0; i < sizeof unary_ops / sizeof *unary_ops; i++) {
    for (int j = 0; j < 10; j++)
      want[j] = unary_ref(unary_ops[i], X[j]);
    expect(op_info[unary_ops[i]].name, get(&r, "newstate", op_info[unary_ops[i]].name, 10), want, 10, 1e-15);
  }
  static const struct { Op op; const char *name; } grads[] = {
    {OP_TANH, "tanh_grad"}, {OP_SIGMOID, "sigmoid_grad"}, {OP_RELU, "relu_grad"}};
  for (int i = 0; i < 3; i++) {
    fd_op = grads[i].op;
    fd_vjp(fd_unary, X, DY, 10, 10, want);
    expect(grads[i].name, get(&r, "newstate", grads[i].name, 10), want, 10, 1e-8);
  }
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ matmul */

/* y (m, n) = op(a) op(b), a and b row-major with their own shapes. */
static void ref_gemm(const double *a, const double *b, double *y, int m, int n, int k, bool ta, bool tb)
{
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int l = 0; l < k; l++)
        s += (ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
      y[i * n + j] = s;
    }
}

START_TEST(matmul_transposes_and_bmm)
{
  Graph *g = graph(4, 2, DT_F64);
  int a = param(g, "a", shp(3, 0, 2, 3, 4));
  int w = param(g, "w", shp(2, 0, 5, 4));
  int w2 = param(g, "w2", shp(2, 0, 4, 5));
  int b5 = param(g, "b5", shp(3, 0, 2, 3, 5));
  int q = param(g, "q", shp(3, 0, 2, 4, 5));
  int at = param(g, "at", shp(3, 0, 2, 4, 3));
  int qt = param(g, "qt", shp(3, 0, 2, 5, 4));
  state_out(g, "a_wT", ir_op2(g, OP_MATMUL, a, w, &(Attr){.tb = 1}));
  state_out(g, "a_w2", ir_op2(g, OP_MATMUL, a, w2, NULL));
  state_out(g, "aT_b5", ir_op2(g, OP_MATMUL, a, b5, &(Attr){.ta = 1}));
  state_out(g, "bmm", ir_op2(g, OP_BMM, a, q, NULL));
  state_out(g, "bmm_ta", ir_op2(g, OP_BMM, at, q, &(Attr){.ta = 1}));
  state_out(g, "bmm_tb", ir_op2(g, OP_BMM, a, qt, &(Attr){.tb = 1}));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 1 0", &r);
  const double *A = get(&r, "param", "a", 24), *W = get(&r, "param", "w", 20), *W2 = get(&r, "param", "w2", 20);
  const double *B5 = get(&r, "param", "b5", 30), *Q = get(&r, "param", "q", 40);
  const double *AT = get(&r, "param", "at", 24), *QT = get(&r, "param", "qt", 40);
  double want[30];
  ref_gemm(A, W, want, 6, 5, 4, false, true);
  expect("matmul a @ w^T, leading dims flattened", get(&r, "newstate", "a_wT", 30), want, 30, 1e-14);
  ref_gemm(A, W2, want, 6, 5, 4, false, false);
  expect("matmul a @ w2", get(&r, "newstate", "a_w2", 30), want, 30, 1e-14);
  ref_gemm(A, B5, want, 4, 5, 6, true, false);
  expect("matmul a^T @ b", get(&r, "newstate", "aT_b5", 20), want, 20, 1e-14);
  for (int i = 0; i < 2; i++)
    ref_gemm(A + i * 12, Q + i * 20, want + i * 15, 3, 5, 4, false, false);
  expect("bmm", get(&r, "newstate", "bmm", 30), want, 30, 1e-14);
  for (int i = 0; i < 2; i++)
    ref_gemm(AT + i * 12, Q + i * 20, want + i * 15, 3, 5, 4, true, false);
  expect("bmm a^T", get(&r, "newstate", "bmm_ta", 30), want, 30, 1e-14);
  for (int i = 0; i < 2; i++)
    ref_gemm(A + i * 12, QT + i * 20, want + i * 15, 3, 5, 4, false, true);
  expect("bmm b^T", get(&r, "newstate", "bmm_tb", 30), want, 30, 1e-14);
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ embedding */

START_TEST(embedding_and_grad_short_T)
{
  enum { V = 7, E = 3, B = 2, T = 3 };
  Graph *g = graph(5, B, DT_F64);
  int tok = tokens(g, "tokens");
  int w = param(g, "w", shp(2, 0, V, E));
  int emb = ir_op2(g, OP_EMBEDDING, w, tok, NULL);
  ir_output(g, "logp", emb);
  int dy = ir_op1(g, OP_SIN, emb, NULL);
  state_out(g, "dw", ir_op2(g, OP_EMBEDDING_GRAD, dy, tok, &(Attr){.shape = shp(2, 0, V, E)}));
  Program p = program(g, V);
  Run r;
  run(&p, "train 3 18", &r);
  const double *W = get(&r, "param", "w", V * E), *tk = get(&r, "tokens", "-", T * B);
  double want[T * B * E], dw[V * E] = {0};
  for (int i = 0; i < T * B; i++)
    for (int j = 0; j < E; j++) {
      want[i * E + j] = W[(int)tk[i] * E + j];
      dw[(int)tk[i] * E + j] += sin(want[i * E + j]);
    }
  expect("embedding (T=3 of 5)", get(&r, "logp", "-", T * B * E), want, T * B * E, 0);
  expect("embedding_grad", get(&r, "newstate", "dw", V * E), dw, V * E, 1e-15);
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ row ops */

static void ref_softmax(const double *x, double *y, int n)
{
  for (int r = 0; r < n / 5; r++) {
    double s = 0;
    for (int i = 0; i < 5; i++)
      s += exp(x[r * 5 + i]);
    for (int i = 0; i < 5; i++)
      y[r * 5 + i] = exp(x[r * 5 + i]) / s;
  }
}

static void ref_log_softmax(const double *x, double *y, int n)
{
  ref_softmax(x, y, n);
  for (int i = 0; i < n; i++)
    y[i] = log(y[i]);
}

static void ref_normalize(const double *x, double *y, int n)
{
  for (int r = 0; r < n / 6; r++) {
    double m = 0, v = 0;
    for (int i = 0; i < 6; i++)
      m += x[r * 6 + i] / 6;
    for (int i = 0; i < 6; i++)
      v += (x[r * 6 + i] - m) * (x[r * 6 + i] - m) / 6;
    for (int i = 0; i < 6; i++)
      y[r * 6 + i] = (x[r * 6 + i] - m) / sqrt(v + 1e-5);
  }
}

START_TEST(softmax_log_softmax_normalize)
{
  Graph *g = graph(4, 2, DT_F64);
  int x = param(g, "x", shp(2, 0, 3, 5));
  int dy = param(g, "dy", shp(2, 0, 3, 5));
  int x6 = param(g, "x6", shp(2, 0, 3, 6));
  int dy6 = param(g, "dy6", shp(2, 0, 3, 6));
  int sm = ir_op1(g, OP_SOFTMAX, x, NULL), lsm = ir_op1(g, OP_LOG_SOFTMAX, x, NULL);
  state_out(g, "softmax", sm);
  state_out(g, "log_softmax", lsm);
  state_out(g, "softmax_grad", ir_op2(g, OP_SOFTMAX_GRAD, dy, sm, NULL));
  state_out(g, "log_softmax_grad", ir_op2(g, OP_LOG_SOFTMAX_GRAD, dy, lsm, NULL));
  state_out(g, "normalize", ir_op1(g, OP_NORMALIZE, x6, &(Attr){.f = 1e-5}));
  state_out(g, "normalize_grad", ir_op2(g, OP_NORMALIZE_GRAD, dy6, x6, &(Attr){.f = 1e-5}));
  /* a causal mask: row i is uniform over columns 0..i */
  ir_output(g, "logp", ir_op1(g, OP_SOFTMAX, ir_op(g, OP_TRIU_MASK, 0, NULL, NULL), NULL));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 3 9", &r);
  const double *X = get(&r, "param", "x", 15), *DY = get(&r, "param", "dy", 15);
  const double *X6 = get(&r, "param", "x6", 18), *DY6 = get(&r, "param", "dy6", 18);
  double want[18];
  ref_softmax(X, want, 15);
  expect("softmax", get(&r, "newstate", "softmax", 15), want, 15, 1e-15);
  ref_log_softmax(X, want, 15);
  expect("log_softmax", get(&r, "newstate", "log_softmax", 15), want, 15, 1e-15);
  fd_vjp(ref_softmax, X, DY, 15, 15, want);
  expect("softmax_grad vs finite differences", get(&r, "newstate", "softmax_grad", 15), want, 15, 1e-8);
  fd_vjp(ref_log_softmax, X, DY, 15, 15, want);
  expect("log_softmax_grad vs finite differences", get(&r, "newstate", "log_softmax_grad", 15), want, 15, 1e-8);
  ref_normalize(X6, want, 18);
  expect("normalize", get(&r, "newstate", "normalize", 18), want, 18, 1e-14);
  fd_vjp(ref_normalize, X6, DY6, 18, 18, want);
  expect("normalize_grad vs finite differences", get(&r, "newstate", "normalize_grad", 18), want, 18, 1e-7);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      want[i * 3 + j] = j <= i ? 1.0 / (i + 1) : 0;
  expect("softmax(triu_mask) at T=3", get(&r, "logp", "-", 9), want, 9, 1e-15);
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ loss */

enum { NV = 6, NB = 3, NT = 3 };
static const double *nll_tok, *nll_tgt;

static double nll_ref(const double *w, double *logp)
{
  double loss = 0, lp[NV];
  for (int i = 0; i < NT * NB; i++) {
    double m = 0, s = 0;
    const double *x = w + (int)nll_tok[i] * NV;
    for (int j = 0; j < NV; j++)
      m = x[j] > m || j == 0 ? x[j] : m;
    for (int j = 0; j < NV; j++)
      s += exp(x[j] - m);
    for (int j = 0; j < NV; j++) {
      lp[j] = x[j] - m - log(s);
      if (logp)
        logp[i * NV + j] = lp[j];
    }
    loss -= lp[(int)nll_tgt[i]];
  }
  return loss / (NT * NB);
}

START_TEST(nll_loss_and_backward)
{
  Graph *g = graph(4, NB, DT_F64);
  int tok = tokens(g, "tokens"), tgt = tokens(g, "targets");
  int w = param(g, "w", shp(2, 0, NV, NV));
  int lp = ir_op1(g, OP_LOG_SOFTMAX, ir_op2(g, OP_EMBEDDING, w, tok, NULL), NULL);
  ir_output(g, "logp", lp);
  ir_output(g, "loss", ir_op2(g, OP_NLL_LOSS, lp, tgt, NULL));
  autodiff(g);
  Program p = program(g, NV);
  Run r, r2;
  run(&p, "train 3 54", &r);
  nll_tok = get(&r, "tokens", "-", NT * NB);
  nll_tgt = get(&r, "targets", "-", NT * NB);
  double W[NV * NV], logp[NT * NB * NV], dw[NV * NV];
  memcpy(W, get(&r, "param", "w", NV * NV), sizeof W);
  double loss = nll_ref(W, logp);
  expect("nll_loss", get(&r, "loss", "-", 1), &loss, 1, 1e-14);
  expect("logp", get(&r, "logp", "-", NT * NB * NV), logp, NT * NB * NV, 1e-14);
  for (int i = 0; i < NV * NV; i++) {
    double w0 = W[i];
    W[i] = w0 + 1e-6;
    double up = nll_ref(W, NULL);
    W[i] = w0 - 1e-6;
    dw[i] = (up - nll_ref(W, NULL)) / 2e-6;
    W[i] = w0;
  }
  ck_assert(get(&r, "meta", "-", 5)[2] == 1);   /* has_backward */
  expect("grad of nll_loss (finite differences)", get(&r, "grad", "w", NV * NV), dw, NV * NV, 1e-8);

  /* without targets: loss 0, the same log-probabilities */
  run(&p, "train 3 54 notargets", &r2);
  double zero = 0;
  expect("loss without targets", get(&r2, "loss", "-", 1), &zero, 1, 0);
  expect("logp without targets", get(&r2, "logp", "-", NT * NB * NV), logp, NT * NB * NV, 1e-14);
  run_free(&r);
  run_free(&r2);
}
END_TEST

/* ------------------------------------------------------------ reductions, copies */

START_TEST(sum_and_broadcast)
{
  Graph *g = graph(4, 2, DT_F64);
  int x = param(g, "x", shp(3, 0, 3, 2, 4));
  int b = param(g, "b", shp(2, 0, 2, 1));
  state_out(g, "s21", ir_op1(g, OP_SUM, x, &(Attr){.shape = shp(2, 0, 2, 1)}));
  state_out(g, "s4", ir_op1(g, OP_SUM, x, &(Attr){.shape = shp(1, 0, 4)}));
  state_out(g, "s", ir_op1(g, OP_SUM, x, &(Attr){.shape = shp(0, 0)}));
  state_out(g, "s311", ir_op1(g, OP_SUM, x, &(Attr){.shape = shp(3, 0, 3, 1, 1)}));
  state_out(g, "bc", ir_op1(g, OP_BROADCAST, b, &(Attr){.shape = shp(3, 0, 3, 2, 4)}));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 1 0", &r);
  const double *X = get(&r, "param", "x", 24), *Bv = get(&r, "param", "b", 2);
  double s21[2] = {0}, s4[4] = {0}, s = 0, s311[3] = {0}, bc[24];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 4; k++) {
        double v = X[(i * 2 + j) * 4 + k];
        s21[j] += v;
        s4[k] += v;
        s += v;
        s311[i] += v;
        bc[(i * 2 + j) * 4 + k] = Bv[j];
      }
  expect("sum to (2, 1)", get(&r, "newstate", "s21", 2), s21, 2, 1e-14);
  expect("sum to (4)", get(&r, "newstate", "s4", 4), s4, 4, 1e-14);
  expect("sum to ()", get(&r, "newstate", "s", 1), &s, 1, 1e-14);
  expect("sum to (3, 1, 1)", get(&r, "newstate", "s311", 3), s311, 3, 1e-14);
  expect("broadcast (2, 1) to (3, 2, 4)", get(&r, "newstate", "bc", 24), bc, 24, 0);
  run_free(&r);
}
END_TEST

START_TEST(transpose_slice_pad_concat)
{
  Graph *g = graph(4, 2, DT_F64);
  int x = param(g, "x", shp(3, 0, 2, 3, 4));
  int x1 = param(g, "x1", shp(3, 0, 2, 1, 4));
  int pe = param(g, "pe", shp(2, 0, 6, 3));
  state_out(g, "tr", ir_op1(g, OP_TRANSPOSE, x, &(Attr){.perm = {2, 0, 1}}));
  int sl = ir_op1(g, OP_SLICE, x, &(Attr){.axis = 1, .start = 1, .len = 2});
  state_out(g, "sl", sl);
  state_out(g, "pad", ir_op1(g, OP_PAD, sl, &(Attr){.axis = 1, .start = 1, .shape = shp(3, 0, 2, 4, 4)}));
  state_out(g, "cat", ir_op2(g, OP_CONCAT, x, x1, &(Attr){.axis = 1}));
  state_out(g, "cat_last", ir_op2(g, OP_CONCAT, x1, x1, &(Attr){.axis = -1}));
  /* pe[1 : 1 + T] transposed: (3, T) */
  int pet = ir_op1(g, OP_SLICE, pe, &(Attr){.axis = 0, .start = 1, .len = -1});
  ir_output(g, "logp", ir_op1(g, OP_TRANSPOSE, pet, &(Attr){.perm = {1, 0}}));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 3 9", &r);
  const double *X = get(&r, "param", "x", 24), *X1 = get(&r, "param", "x1", 8), *PE = get(&r, "param", "pe", 18);
  double tr[24], sl2[16], pad[32] = {0}, cat[32], cl[16], pt[9];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) {
        double v = X[(i * 3 + j) * 4 + k];
        tr[(k * 2 + i) * 3 + j] = v;
        if (j >= 1) {
          sl2[(i * 2 + j - 1) * 4 + k] = v;
          pad[(i * 4 + j) * 4 + k] = v;
        }
        cat[(i * 4 + j) * 4 + k] = v;
      }
  for (int i = 0; i < 2; i++)
    for (int k = 0; k < 4; k++) {
      cat[(i * 4 + 3) * 4 + k] = X1[i * 4 + k];
      cl[i * 8 + k] = cl[i * 8 + 4 + k] = X1[i * 4 + k];
    }
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 3; j++)
      pt[j * 3 + t] = PE[(1 + t) * 3 + j];
  expect("transpose perm (2, 0, 1)", get(&r, "newstate", "tr", 24), tr, 24, 0);
  expect("slice axis 1 [1, 3)", get(&r, "newstate", "sl", 16), sl2, 16, 0);
  expect("pad axis 1 at 1", get(&r, "newstate", "pad", 32), pad, 32, 0);
  expect("concat axis 1", get(&r, "newstate", "cat", 32), cat, 32, 0);
  expect("concat axis -1", get(&r, "newstate", "cat_last", 16), cl, 16, 0);
  expect("slice of length T, transposed", get(&r, "logp", "-", 9), pt, 9, 0);
  run_free(&r);
}
END_TEST

START_TEST(const_and_arange)
{
  Graph *g = graph(4, 2, DT_F64);
  state_out(g, "ar", ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = 0.5, .f2 = 2, .shape = shp(1, 0, 5)}));
  state_out(g, "c", ir_op1(g, OP_BROADCAST, ir_const(g, 3.25), &(Attr){.shape = shp(2, 0, 2, 2)}));
  ir_output(g, "logp", ir_op(g, OP_ARANGE, 0, NULL, &(Attr){.f = -1, .f2 = 0.25, .shape = shp(1, 1, 1)}));
  Program p = program(g, 5);
  Run r;
  run(&p, "train 3 3", &r);
  double ar[5] = {0.5, 2.5, 4.5, 6.5, 8.5}, c[4] = {3.25, 3.25, 3.25, 3.25}, at[3] = {-1, -0.75, -0.5};
  expect("arange", get(&r, "newstate", "ar", 5), ar, 5, 0);
  expect("const", get(&r, "newstate", "c", 4), c, 4, 0);
  expect("arange of length T", get(&r, "logp", "-", 3), at, 3, 0);
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ dropout */

START_TEST(dropout_masks)
{
  enum { V = 7, E = 50, B = 2, T = 3 };
  Graph *g = graph(4, B, DT_F64);
  Attr d = {.f = 0.4, .id = 3, .id2 = 0, .name = "dropout"};
  int tok = tokens(g, "tokens");
  int emb = ir_op2(g, OP_EMBEDDING, param(g, "w", shp(2, 0, V, E)), tok, NULL);
  int top = ir_op1(g, OP_DROPOUT, emb, &d);
  ir_loop_begin(g, false);
  int body = ir_op1(g, OP_DROPOUT, ir_step(g, emb), &d);
  ir_loop_end(g);
  int grad = ir_op1(g, OP_DROPOUT_GRAD, emb, &d);
  int cat = ir_op2(g, OP_CONCAT, top, ir_stack(g, body), &(Attr){.axis = 2});
  ir_output(g, "logp", ir_op2(g, OP_CONCAT, cat, grad, &(Attr){.axis = 2}));
  Program p = program(g, V);
  Run r;
  run(&p, "train 3 900", &r);
  const double *W = get(&r, "param", "w", V * E), *tk = get(&r, "tokens", "-", T * B);
  const double *got = get(&r, "logp", "-", T * B * 3 * E);
  double want[T * B * 3 * E];
  uint64_t key = lmc_dropout_key(1234, 5, 3);
  int kept = 0;
  for (int i = 0; i < T * B; i++)
    for (int j = 0; j < E; j++) {
      int keep = lmc_keep(key, (uint64_t)(i * E + j), 0.4);
      double v = keep ? W[(int)tk[i] * E + j] / 0.6 : 0;
      kept += keep;
      for (int c = 0; c < 3; c++)
        want[(i * 3 + c) * E + j] = v;
    }
  printf("dropout 0.4: kept %d of %d\n", kept, T * B * E);
  ck_assert(kept > 0.5 * T * B * E && kept < 0.7 * T * B * E);
  expect("dropout, in a loop body, dropout_grad: one mask", got, want, T * B * 3 * E, 1e-15);

  /* the eval program ignores dropout */
  Program pe = p;
  pe.eval = g;
  Run re;
  run(&pe, "eval 3 900", &re);
  got = get(&re, "logp", "-", T * B * 3 * E);
  for (int i = 0; i < T * B; i++)
    for (int j = 0; j < E; j++)
      for (int c = 0; c < 3; c++)
        want[(i * 3 + c) * E + j] = W[(int)tk[i] * E + j];
  expect("dropout in the eval program is the identity", got, want, T * B * 3 * E, 0);
  run_free(&r);
  run_free(&re);
}
END_TEST

/* ------------------------------------------------------------ loops */

enum { RV = 7, RE = 4, RH = 3, RB = 2, RMAX = 5 };

/* A tanh RNN language model: tokens (T, B) -> embedding -> tanh RNN ->
 * linear -> log_softmax -> nll_loss; the hidden state is carried. */
static Graph *rnn_graph(DType real, bool with_grad)
{
  Graph *g = graph(RMAX, RB, real);
  int tok = tokens(g, "tokens"), tgt = tokens(g, "targets");
  int h0 = ir_input(g, "hidden", real, shp(2, 0, RB, RH), true);
  g->cur_line = 3;
  int we = param(g, "encoder.weight", shp(2, 0, RV, RE));
  int wih = param(g, "rnn.weight_ih_l0", shp(2, 0, RH, RE));
  int whh = param(g, "rnn.weight_hh_l0", shp(2, 0, RH, RH));
  int bh = param(g, "rnn.bias_hh_l0", shp(1, 0, RH));
  int wd = param(g, "decoder.weight", shp(2, 0, RV, RH));
  int bd = param(g, "decoder.bias", shp(1, 0, RV));
  g->cur_line = 7;
  int emb = ir_op2(g, OP_EMBEDDING, we, tok, NULL);
  int xw = ir_op2(g, OP_MATMUL, emb, wih, &(Attr){.tb = 1});
  g->cur_line = 9;
  ir_loop_begin(g, false);
  int x = ir_step(g, xw);
  int h = ir_carry(g, h0);
  int pre = ir_op2(g, OP_ADD, ir_op2(g, OP_ADD, x, ir_op2(g, OP_MATMUL, h, whh, &(Attr){.tb = 1}), NULL), bh, NULL);
  int hn = ir_op1(g, OP_TANH, pre, NULL);
  ir_carry_next(g, h, hn);
  ir_loop_end(g);
  int out = ir_stack(g, hn);
  int fin = ir_final(g, h);
  g->cur_line = 12;
  int logits = ir_op2(g, OP_ADD, ir_op2(g, OP_MATMUL, out, wd, &(Attr){.tb = 1}), bd, NULL);
  int lp = ir_op1(g, OP_LOG_SOFTMAX, logits, NULL);
  ir_output(g, "logp", lp);
  ir_output(g, "loss", ir_op2(g, OP_NLL_LOSS, lp, tgt, NULL));
  ir_output(g, "hidden", fin);
  if (with_grad)
    autodiff(g);
  return g;
}

static const char *rnn_names[] = {"encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_hh_l0",
                                  "decoder.weight", "decoder.bias"};
static const int rnn_sizes[] = {RV * RE, RH * RE, RH * RH, RH, RV * RH, RV};

typedef struct {
  double *p[6];
  const double *h0, *tok, *tgt;
  int T;
} Rnn;

static double rnn_ref(const Rnn *m, double *logp, double *hT)
{
  const double *we = m->p[0], *wih = m->p[1], *whh = m->p[2], *bh = m->p[3], *wd = m->p[4], *bd = m->p[5];
  double h[RB * RH], hn[RB * RH], loss = 0;
  memcpy(h, m->h0, sizeof h);
  for (int t = 0; t < m->T; t++) {
    for (int b = 0; b < RB; b++)
      for (int i = 0; i < RH; i++) {
        const double *e = we + (int)m->tok[t * RB + b] * RE;
        double s = bh[i];
        for (int j = 0; j < RE; j++)
          s += e[j] * wih[i * RE + j];
        for (int j = 0; j < RH; j++)
          s += h[b * RH + j] * whh[i * RH + j];
        hn[b * RH + i] = tanh(s);
      }
    memcpy(h, hn, sizeof h);
    for (int b = 0; b < RB; b++) {
      double z[RV], m0 = -INFINITY, s = 0;
      for (int v = 0; v < RV; v++) {
        z[v] = bd[v];
        for (int j = 0; j < RH; j++)
          z[v] += h[b * RH + j] * wd[v * RH + j];
        m0 = z[v] > m0 ? z[v] : m0;
      }
      for (int v = 0; v < RV; v++)
        s += exp(z[v] - m0);
      for (int v = 0; v < RV; v++) {
        double l = z[v] - m0 - log(s);
        if (logp)
          logp[(t * RB + b) * RV + v] = l;
        if (v == (int)m->tgt[t * RB + b])
          loss -= l;
      }
    }
  }
  if (hT)
    memcpy(hT, h, sizeof h);
  return loss / (m->T * RB);
}

static void check_rnn(DType real, int T, double tol, double gtol)
{
  Graph *g = rnn_graph(real, true);
  Program p = program(g, RV);
  Run r;
  char args[64];
  snprintf(args, sizeof args, "train %d %d", T, T * RB * RV);
  run(&p, args, &r);
  Rnn m = {.h0 = get(&r, "state", "hidden", RB * RH), .tok = get(&r, "tokens", "-", T * RB),
           .tgt = get(&r, "targets", "-", T * RB), .T = T};
  for (int i = 0; i < 6; i++) {
    m.p[i] = malloc(sizeof(double) * (size_t)rnn_sizes[i]);
    memcpy(m.p[i], get(&r, "param", rnn_names[i], rnn_sizes[i]), sizeof(double) * (size_t)rnn_sizes[i]);
  }
  double logp[RMAX * RB * RV], hT[RB * RH];
  double loss = rnn_ref(&m, logp, hT);
  printf("rnn %s T=%d of %d: loss %.6f\n", real == DT_F64 ? "f64" : "f32", T, RMAX, loss);
  expect("rnn loss", get(&r, "loss", "-", 1), &loss, 1, tol);
  expect("rnn logp", get(&r, "logp", "-", T * RB * RV), logp, T * RB * RV, tol);
  expect("rnn new hidden state", get(&r, "newstate", "hidden", RB * RH), hT, RB * RH, tol);
  for (int i = 0; i < 6; i++) {
    double fd[RV * RE];
    for (int j = 0; j < rnn_sizes[i]; j++) {
      double v = m.p[i][j];
      m.p[i][j] = v + 1e-6;
      double up = rnn_ref(&m, NULL, NULL);
      m.p[i][j] = v - 1e-6;
      fd[j] = (up - rnn_ref(&m, NULL, NULL)) / 2e-6;
      m.p[i][j] = v;
    }
    char what[96];
    snprintf(what, sizeof what, "rnn grad %s (finite differences)", rnn_names[i]);
    expect(what, get(&r, "grad", rnn_names[i], rnn_sizes[i]), fd, rnn_sizes[i], gtol);
  }
  for (int i = 0; i < 6; i++)
    free(m.p[i]);
  run_free(&r);
}

START_TEST(rnn_tanh_f64_short_T)
{
  check_rnn(DT_F64, 3, 1e-13, 1e-8);
}
END_TEST

START_TEST(rnn_tanh_f64_full_T)
{
  check_rnn(DT_F64, RMAX, 1e-13, 1e-8);
}
END_TEST

START_TEST(rnn_tanh_f32)
{
  check_rnn(DT_F32, 4, 1e-6, 1e-6);
}
END_TEST

/* A reverse scan outside autodiff: h[t] = h[t+1] + x[t], from the state. */
START_TEST(reverse_loop)
{
  enum { V = 5, E = 3, B = 2, T = 3 };
  Graph *g = graph(4, B, DT_F64);
  int tok = tokens(g, "tokens");
  int emb = ir_op2(g, OP_EMBEDDING, param(g, "w", shp(2, 0, V, E)), tok, NULL);
  int h0 = ir_input(g, "h", DT_F64, shp(2, 0, B, E), true);
  ir_loop_begin(g, true);
  int h = ir_carry(g, h0);
  int hn = ir_op2(g, OP_ADD, h, ir_step(g, emb), NULL);
  ir_carry_next(g, h, hn);
  ir_loop_end(g);
  ir_output(g, "logp", ir_stack(g, hn));
  ir_output(g, "h", ir_final(g, h));
  Program p = program(g, V);
  Run r;
  run(&p, "train 3 18", &r);
  const double *W = get(&r, "param", "w", V * E), *tk = get(&r, "tokens", "-", T * B);
  double want[T * B * E], acc[B * E];
  memcpy(acc, get(&r, "state", "h", B * E), sizeof acc);
  for (int t = T - 1; t >= 0; t--)
    for (int i = 0; i < B * E; i++) {
      acc[i] += W[(int)tk[t * B + i / E] * E + i % E];
      want[t * B * E + i] = acc[i];
    }
  expect("reverse scan, stacked", get(&r, "logp", "-", T * B * E), want, T * B * E, 1e-15);
  expect("reverse scan, final (step 0)", get(&r, "newstate", "h", B * E), acc, B * E, 1e-15);
  run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ the file */

START_TEST(deterministic)
{
  Graph *g1 = rnn_graph(DT_F64, true), *g2 = rnn_graph(DT_F64, true);
  Program p1 = program(g1, RV);
  p1.eval = rnn_graph(DT_F64, false);
  char *a = emit_text(&p1), *b = emit_text(&p1);
  Program p2 = program(g2, RV);
  p2.eval = rnn_graph(DT_F64, false);
  char *c = emit_text(&p2);
  printf("emitted %zu bytes, three times\n", strlen(a));
  ck_assert_msg(!strcmp(a, b), "emitting the same program twice differs");
  ck_assert_msg(!strcmp(a, c), "emitting the same graph built twice differs");
  free(a);
  free(b);
  free(c);
}
END_TEST

START_TEST(layout_and_names)
{
  Graph *g = rnn_graph(DT_F64, true);
  Program p = program(g, RV);
  Run r;
  run(&p, "train 2 0", &r);
  const char *s = r.src;
  ck_assert(strstr(s, "#define LMC_REAL double\n") < strstr(s, "#include \"lmc_rt.h\""));
  ck_assert(strstr(s, "#include <cblas.h>"));
  ck_assert(strstr(s, "cblas_dgemm(") && !strstr(s, "cblas_sgemm("));
  ck_assert_msg(strstr(s, "static void train_tanh(real *y, const real *x)"), "kernels named by what they compute");
  ck_assert_msg(strstr(s, "t.lua:9 */"), "kernel comments name the Lua line");
  ck_assert(strstr(s, "for (int t = 0; t < T; t++)"));
  ck_assert(strstr(s, "for (int t = T - 1; t >= 0; t--)"));
  ck_assert(strstr(s, ".eval = { .run = NULL }") && strstr(s, ".gen = { .run = NULL }"));
  ck_assert(strstr(s, "const LmcModel lmc_model = {"));
  const double *meta = get(&r, "meta", "-", 5);
  ck_assert(meta[0] == 0 && meta[1] == 0 && meta[2] == 1 && meta[3] == RV);

  Graph *g32 = rnn_graph(DT_F32, false);
  Program p32 = program(g32, RV);
  char *t = emit_text(&p32);
  /* single precision: cblas_sgemm, or the runtime's few-row kernel, which
   * takes every product of this forward-only model's few rows */
  ck_assert(!strstr(t, "LMC_REAL") && !strstr(t, "cblas_dgemm(") && strstr(t, "tanhf("));
  ck_assert(strstr(t, "cblas_sgemm(") || strstr(t, "lmc_sgemm_abt_mt("));
  ck_assert(strstr(t, ".has_backward = 0"));
  free(t);
  run_free(&r);
}
END_TEST

START_TEST(optimizer)
{
  Graph *g = graph(4, 2, DT_F64);
  state_out(g, "y", ir_op1(g, OP_NEG, param(g, "p", shp(1, 0, 10)), NULL));
  state_out(g, "z", ir_op1(g, OP_NEG, param(g, "q", shp(2, 0, 3, 4)), NULL));
  Program p = program(g, 5);
  Run r;
  run(&p, "opt", &r);
  enum { N = 22 };
  double P[N], G[N], M[N], V[N], norm = 0;
  memcpy(P, get(&r, "param", "-", N), sizeof P);
  memcpy(G, get(&r, "grad", "-", N), sizeof G);
  memcpy(M, get(&r, "m", "-", N), sizeof M);
  memcpy(V, get(&r, "v", "-", N), sizeof V);
  for (int i = 0; i < N; i++)
    norm += G[i] * G[i];
  norm = sqrt(norm);
  expect("clip: norm", get(&r, "norm", "-", 1), &norm, 1, 1e-13);
  double scale = 1.5 / (norm + 1e-6);
  ck_assert(scale < 1);
  for (int i = 0; i < N; i++)
    G[i] *= scale;
  expect("clip: grads scaled", get(&r, "clipped", "-", N), G, N, 1e-15);
  for (int i = 0; i < N; i++)
    P[i] -= 0.25 * G[i];
  expect("sgd", get(&r, "sgd", "-", N), P, N, 1e-15);
  double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999;
  for (int i = 0; i < N; i++) {
    P[i] *= 1 - lr * wd;
    M[i] = b1 * M[i] + (1 - b1) * G[i];
    V[i] = b2 * V[i] + (1 - b2) * G[i] * G[i];
    P[i] -= lr * (M[i] / (1 - pow(b1, 3))) / (sqrt(V[i] / (1 - pow(b2, 3))) + 1e-8);
  }
  expect("adamw", get(&r, "adamw", "-", N), P, N, 1e-14);
  expect("adamw m", get(&r, "adamw_m", "-", N), M, N, 1e-15);
  expect("adamw v", get(&r, "adamw_v", "-", N), V, N, 1e-15);
  double n2 = 0;
  for (int i = 0; i < N; i++)
    n2 += G[i] * G[i];
  n2 = sqrt(n2);
  expect("clip below the threshold: norm", get(&r, "unclipped", "-", 1), &n2, 1, 1e-13);
  expect("clip below the threshold: unchanged", get(&r, "after_big_clip", "-", N), G, N, 1e-15);
  run_free(&r);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("emit");
  TCase *tc = tcase_create("emit");
  tcase_add_checked_fixture(tc, NULL, arena_free_all);   /* the graphs a test built */
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, elementwise_broadcast);
  tcase_add_test(tc, unary_math_and_grads);
  tcase_add_test(tc, matmul_transposes_and_bmm);
  tcase_add_test(tc, embedding_and_grad_short_T);
  tcase_add_test(tc, softmax_log_softmax_normalize);
  tcase_add_test(tc, nll_loss_and_backward);
  tcase_add_test(tc, sum_and_broadcast);
  tcase_add_test(tc, transpose_slice_pad_concat);
  tcase_add_test(tc, const_and_arange);
  tcase_add_test(tc, dropout_masks);
  tcase_add_test(tc, rnn_tanh_f64_short_T);
  tcase_add_test(tc, rnn_tanh_f64_full_T);
  tcase_add_test(tc, rnn_tanh_f32);
  tcase_add_test(tc, reverse_loop);
  tcase_add_test(tc, deterministic);
  tcase_add_test(tc, layout_and_names);
  tcase_add_test(tc, optimizer);
  suite_add_tcase(s, tc);
  return run_suite(s);
}
