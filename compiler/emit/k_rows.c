/*
 * k_rows.c: the kernels that work row by row along the last dim:
 * softmax, log_softmax and their gradients, normalize (layer norm),
 * nll_loss, and the fused loss kernels of fuse_nll.c (log_softmax with
 * nll_loss and its gradient; the loss of a product of logits a block at
 * a time).
 */
#include "emit.h"

/* Row ops along the last dim: rows of n elements. */
static void rows_open(Text *k, Buf *b, const Shape *s)
{
  Mono n = mdim(s, s->rank - 1);
  bprintf(b, "  const long n = %s;\n", mstr(k, n).s);
  bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(k, mdiv(mnumel(s), n)).s);
}

void k_softmax(Text *k, Buf *b, Node *n)
{
  const char *ex = fast_exp(k->p->g);
  kout(k, n);
  switch (n->op) {
  case OP_SOFTMAX:
  case OP_LOG_SOFTMAX:
    kin(k, n, 0, "x");
    rows_open(k, b, &n->shape);
    bprintf(b, "    const real *xr = x + r * n;\n");
    bprintf(b, "    real *yr = y + r * n;\n");
    bprintf(b, "    real max = lmc_row_max(xr, n);\n");
    if (n->op == OP_SOFTMAX) {
      bprintf(b, "    double sum = lmc_exp_sum_to(yr, xr, n, max);   /* y and x are apart */\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      yr[i] = (real)(yr[i] / sum);\n");
    } else {
      bprintf(b, "    double sum = lmc_exp_sum(xr, n, max);\n");
      bprintf(b, "    real lse = max + (real)log(sum);\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      yr[i] = xr[i] - lse;\n");
    }
    break;
  case OP_SOFTMAX_GRAD:
  case OP_LOG_SOFTMAX_GRAD:
    /* softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy) */
    kin(k, n, 0, "dy");
    kin(k, n, 1, "y");
    rows_open(k, b, &n->shape);
    bprintf(b, "    const real *dyr = dy + r * n, *yr = y + r * n;\n");
    bprintf(b, "    real *dxr = dx + r * n;\n");
    bprintf(b, "    double sum = 0;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    if (n->op == OP_SOFTMAX_GRAD) {
      bprintf(b, "      sum += dyr[i] * yr[i];\n");
      bprintf(b, "    for (long i = 0; i < n; i++)\n");
      bprintf(b, "      dxr[i] = yr[i] * (dyr[i] - (real)sum);\n");
    } else {
      bprintf(b, "      sum += dyr[i];\n");
      bprintf(b, "    for (long i = 0; i < n; i++) {\n");
      bprintf(b, "      real e = %s(yr[i]) * (real)sum;\n", ex);
      bprintf(b, "      dxr[i] = dyr[i] - e;\n");
      bprintf(b, "    }\n");
    }
    break;
  default:
    die("not a softmax: %s", op_info[n->op].name);
  }
  bprintf(b, "  }\n");
}

/* (x - mean) / sqrt(var + eps) over the last dim, var biased, as
 * torch.nn.functional.layer_norm without its affine part. */
void k_normalize(Text *k, Buf *b, Node *n)
{
  kout(k, n);
  if (n->op == OP_NORMALIZE)
    kin(k, n, 0, "x");
  else {
    kin(k, n, 0, "dy");
    kin(k, n, 1, "x");
  }
  rows_open(k, b, &n->shape);
  bprintf(b, "    const real *xr = x + r * n;\n");
  bprintf(b, "    double mean = 0, var = 0;\n");
  bprintf(b, "    for (long i = 0; i < n; i++)\n");
  bprintf(b, "      mean += xr[i];\n");
  bprintf(b, "    mean /= n;\n");
  bprintf(b, "    for (long i = 0; i < n; i++)\n");
  bprintf(b, "      var += (xr[i] - mean) * (xr[i] - mean);\n");
  bprintf(b, "    double rstd = 1 / sqrt(var / n + ");
  bdouble(b, n->a.f);
  bprintf(b, ");\n");
  if (n->op == OP_NORMALIZE) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      y[r * n + i] = (real)((xr[i] - mean) * rstd);\n");
  } else {
    /* dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) */
    bprintf(b, "    const real *dyr = dy + r * n;\n");
    bprintf(b, "    double mdy = 0, mdyx = 0;\n");
    bprintf(b, "    for (long i = 0; i < n; i++) {\n");
    bprintf(b, "      mdy += dyr[i];\n");
    bprintf(b, "      mdyx += dyr[i] * (xr[i] - mean) * rstd;\n");
    bprintf(b, "    }\n");
    bprintf(b, "    mdy /= n;\n");
    bprintf(b, "    mdyx /= n;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dx[r * n + i] = (real)(rstd * (dyr[i] - mdy - (xr[i] - mean) * rstd * mdyx));\n");
  }
  bprintf(b, "  }\n");
}

/* nll_loss: y = -mean over rows of logp[row, target[row]];
 * nll_loss_grad: dlogp = -dloss / rows at each target, 0 elsewhere. */
void k_nll(Text *k, Buf *b, Node *n)
{
  kout(k, n);
  if (n->op == OP_NLL_LOSS) {
    Node *lp = IN(k->p, n, 0);
    Mono c = mdim(&lp->shape, lp->shape.rank - 1);
    Mono rows = mdiv(mnumel(&lp->shape), c);
    kin(k, n, 0, "logp");
    kin(k, n, 1, "target");
    Str cs = mstr(k, c), rs = mstr(k, rows);
    bprintf(b, "  double sum = 0;\n");
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", rs.s);
    bprintf(b, "    sum -= logp[i * %s + target[i]];\n", cs.s);
    bprintf(b, "  y[0] = (real)(sum / (%s));\n", rs.s);
  } else if (n->op == OP_NLL_LOSS_GRAD) {
    Mono c = mdim(&n->shape, n->shape.rank - 1);
    Mono rows = mdiv(mnumel(&n->shape), c);
    kin(k, n, 0, "dloss");
    kin(k, n, 2, "target");
    Str cs = mstr(k, c), rs = mstr(k, rows);
    bprintf(b, "  memset(dx, 0, %s * sizeof *dx);\n", mstr(k, mnumel(&n->shape)).s);
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", rs.s);
    bprintf(b, "    dx[i * %s + target[i]] = -dloss[0] / (%s);\n", cs.s, rs.s);
  } else {
    /* nll_loss_grad and log_softmax_grad in one pass: with s = dloss / rows,
     * sum(dy) over a row is exactly -s, so dx = exp(logp) * s at every
     * column and that minus s at the target, the bits the pair computes */
    Mono c = mdim(&n->shape, n->shape.rank - 1);
    Mono rows = mdiv(mnumel(&n->shape), c);
    kin(k, n, 0, "dloss");
    kin(k, n, 1, "logp");
    kin(k, n, 2, "target");
    bprintf(b, "  const real s = -(-dloss[0] / (%s));\n", mstr(k, rows).s);
    bprintf(b, "  const long n = %s;\n", mstr(k, c).s);
    bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(k, rows).s);
    bprintf(b, "    const real *lr = logp + r * n;\n");
    bprintf(b, "    real *dxr = dx + r * n;\n");
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dxr[i] = %s(lr[i]) * s;\n", fast_exp(k->p->g));
    bprintf(b, "    dxr[target[r]] -= s;\n");
    bprintf(b, "  }\n");
  }
}

/* The loss of log_softmax(h W^T + bias) without storing the logits
 * (fuse_nll.c): blocks of LOGIT_BLOCK columns computed into a buffer that
 * stays in cache (Prog.scratch_off), a running maximum and sum of
 * exponentials per row. */
static void k_logits_nll(Text *k, Buf *b, Node *lsm, Node *prod, Node *bias, Node *nll)
{
  Graph *g = k->p->g;
  Node *w = IN(k->p, prod, 1);
  Mono c = mdim(&lsm->shape, lsm->shape.rank - 1), kk = mdim(&w->shape, 1);
  Mono rows = mdiv(mnumel(&lsm->shape), c);
  size_t maxrows = logit_rows(g, prod);
  karg(k, A_PTR, id_of(k->p, nll), -1, "real *loss");
  karg(k, A_PTR, prod->in[0], -1, "const real *h");
  karg(k, A_PTR, prod->in[1], -1, "const real *w");
  if (bias)
    karg(k, A_PTR, bias->in[1], -1, "const real *bias");
  karg(k, A_PTR, nll->in[1], -1, "const int32_t *target");
  karg(k, A_THREADS, id_of(k->p, lsm), -1, "int nt");
  karg(k, A_SCRATCH, id_of(k->p, prod), -1, "real *block /* rows x 1024 logits, in cache */");
  static const char *const name[] = {"h", "w"};
  Str op[2];
  const char *test = NULL;
  Buf conv = {0};
  if (k->p->bf16)
    test = bf16_operands(k, &conv, prod, 2, name, op);
  bprintf(b, "  real max[%zu];\n  double sum[%zu], nll_row[%zu];\n", maxrows, maxrows, maxrows);
  bprintf(b, "  const long n = %s, rows = %s;\n", mstr(k, c).s, mstr(k, rows).s);
  if (conv.len)
    bprintf(b, "  if (%s) {   /* --precision bf16 */\n%s  }\n", test, bstr(&conv));
  bfree(&conv);
  bprintf(b, "  for (long j0 = 0; j0 < n; j0 += %d) {\n", LOGIT_BLOCK);
  bprintf(b, "    const long nb = n - j0 < %d ? n - j0 : %d;\n", LOGIT_BLOCK, LOGIT_BLOCK);
  Str ks = mstr(k, kk);
  const char *ind = "";
  if (test) {
    bprintf(b, "    if (%s)\n", test);
    bprintf(b, "      lmc_gemm_bf16(0, 1, rows, nb, %s, %s, %s, %s + j0 * %s, %s, 0, block, nb, nt);\n", ks.s, op[0].s,
            ks.s, op[1].s, ks.s, ks.s);
    bprintf(b, "    else\n");
    ind = "  ";
  }
  bprintf(b, "    %scblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nb, %s,\n", ind, ks.s);
  bprintf(b, "    %s            1, h, %s, w + j0 * %s, %s, 0, block, nb);\n", ind, ks.s, ks.s, ks.s);
  bprintf(b, "    LMC_PARALLEL_FOR(nt)\n");
  bprintf(b, "    for (long r = 0; r < rows; r++) {\n");
  bprintf(b, "      real *xr = block + r * nb;\n");
  if (bias)
    bprintf(b, "      real m = lmc_add_row_max(xr, bias + j0, nb);\n");
  else
    bprintf(b, "      real m = lmc_row_max(xr, nb);\n");
  bprintf(b, "      if (j0 == 0 || m > max[r]) {   /* a new maximum: the sum so far rescaled */\n");
  bprintf(b, "        sum[r] = j0 == 0 ? 0 : sum[r] * exp((double)max[r] - m);\n");
  bprintf(b, "        max[r] = m;\n");
  bprintf(b, "      }\n");
  bprintf(b, "      sum[r] += lmc_exp_sum(xr, nb, max[r]);\n");
  bprintf(b, "      if (target[r] >= j0 && target[r] < j0 + nb)\n");
  bprintf(b, "        nll_row[r] = xr[target[r] - j0];\n");
  bprintf(b, "    }\n");
  bprintf(b, "  }\n");
  bprintf(b, "  double nll = 0;\n");
  bprintf(b, "  for (long r = 0; r < rows; r++)\n");
  bprintf(b, "    nll -= (real)(nll_row[r] - (max[r] + (real)log(sum[r])));\n");
  bprintf(b, "  loss[0] = (real)(nll / rows);\n");
  k->sig->iter = lsm->shape;
}

/* log_softmax with nll_loss and the loss's gradient through it
 * (fuse_nll.c), whichever of the two the group has, in one pass over the
 * rows.  Per row: the max, the exponentials and their sum (as log_softmax
 * alone computes them), lse = max + log(sum); then
 *   logp = x - lse                         where something else reads it,
 *   dx = e * (s / sum) - (i == target ? s : 0),   s = dloss / rows,
 *   loss -= x[target] - lse                (nll_loss's sum, in row order).
 * The exponentials go into logp when it is stored, else into dx; x[target]
 * is read before either is written.  dx may take x's bytes (plan.c gives
 * it them when x dies here: the logits and their gradient are the biggest
 * tensors), so every x is read before the dx at its index is written. */
/* The members of a log_softmax group (what it stores: logp when read,
 * the gradient and the loss when live), checked to be one of the forms
 * fuse_nll.c makes. */
typedef struct {
  Node *lsm, *grad, *nll, *bias, *prod;
  bool logp;              /* log_softmax's value is stored */
  bool inplace;           /* dx takes x's bytes */
  bool shadow;            /* dx also in bf16, for the products that read it (--precision bf16) */
} LsmGroup;

static LsmGroup lsm_group(Prog *p, int group)
{
  LsmGroup G = {0};
  for (int m = p->member_start[group]; m < p->member_start[group + 1]; m++) {
    Node *n = N(p, p->member[m]);
    if (n->op == OP_LOG_SOFTMAX)
      G.lsm = n;
    else if (n->op == OP_NLL_LOG_SOFTMAX_GRAD)
      G.grad = n;
    else if (n->op == OP_NLL_LOSS)
      G.nll = n;
    else if (n->op == OP_ADD)
      G.bias = n;
    else if (n->op == OP_MATMUL)
      G.prod = n;
  }
  if (G.grad && !stored(p, id_of(p, G.grad)))
    G.grad = NULL;
  if (G.nll && !stored(p, id_of(p, G.nll)))
    G.nll = NULL;
  if (!G.lsm || (G.grad && (IN(p, G.grad, 1) != G.lsm || IN(p, G.grad, 0)->op != OP_CONST)) ||
      (G.nll && IN(p, G.nll, 0) != G.lsm) || (G.bias && IN(p, G.lsm, 0) != G.bias))
    die("group %d is not log_softmax with nll_loss or its gradient", group);
  G.logp = stored(p, id_of(p, G.lsm));
  if (G.prod && (!G.nll || G.grad || G.logp))
    die("group %d: a product fused with log_softmax computes the loss only", group);
  /* dx in x's bytes: one pointer, so the loops are plainly in place */
  int xin = G.bias ? G.bias->in[0] : G.lsm->in[0];
  G.inplace = G.grad && same_loc(&p->loc[id_of(p, G.grad)], &p->loc[xin]);
  return G;
}

/* The body of the loop over rows r: max, exponentials and their sum, then
 * logp, dx and the row's loss. */
static void lsm_row(Buf *b, const LsmGroup *G)
{
  bool grad = G->grad, nll = G->nll, logp = G->logp, inplace = G->inplace;
  if (grad)
    bprintf(b, "    real *dxr = dx + r * n;\n");
  if (G->bias)
    bprintf(b, inplace ? "    real *xr = dxr;\n" : "    real *xr = x + r * n;\n");
  else
    bprintf(b, inplace ? "    const real *xr = dxr;\n" : "    const real *xr = x + r * n;\n");
  if (logp)
    bprintf(b, "    real *yr = logp + r * n;\n");
  if (G->bias)   /* the bias added as the row comes into cache */
    bprintf(b, "    real max = lmc_add_row_max(xr, bias, n);\n");
  else
    bprintf(b, "    real max = lmc_row_max(xr, n);\n");
  if (nll)
    bprintf(b, "    const real xt = xr[target[r]];\n");
  if (logp)
    bprintf(b, "    double sum = lmc_exp_sum_to(yr, xr, n, max);\n");
  else if (inplace)
    bprintf(b, "    double sum = lmc_exp_sum_inplace(dxr, n, max);\n");
  else if (grad)
    bprintf(b, "    double sum = lmc_exp_sum_to(dxr, xr, n, max);\n");
  else
    bprintf(b, "    double sum = lmc_exp_sum(xr, n, max);\n");
  bprintf(b, "    real lse = max + (real)log(sum);\n");
  if (grad)
    bprintf(b, "    double q = s / sum;\n");
  if (logp && grad) {
    bprintf(b, "    for (long i = 0; i < n; i++) {   /* x is read before dx is written: dx may be x */\n");
    bprintf(b, "      real xi = xr[i];\n");
    bprintf(b, "      dxr[i] = (real)(yr[i] * q);\n");
    bprintf(b, "      yr[i] = xi - lse;\n");
    bprintf(b, "    }\n");
  } else if (logp) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      yr[i] = xr[i] - lse;\n");
  } else if (grad) {
    bprintf(b, "    for (long i = 0; i < n; i++)\n");
    bprintf(b, "      dxr[i] = (real)(dxr[i] * q);\n");
  }
  if (grad)
    bprintf(b, "    dxr[target[r]] -= s;\n");
  if (G->shadow) {
    bprintf(b, "    if (dx16)   /* --precision bf16: the products read dx in bf16, this row while it is in cache */\n");
    bprintf(b, "      lmc_to_bf16(dxr, dx16 + r * n, n);\n");
  }
  if (nll)
    bprintf(b, "    nll_row[r] = (real)(xt - lse);\n");
}

void k_log_softmax_nll(Text *k, Buf *b, int group)
{
  Prog *p = k->p;
  LsmGroup G = lsm_group(p, group);
  Node *lsm = G.lsm, *grad = G.grad, *nll = G.nll, *bias = G.bias;
  if (G.prod) {
    k_logits_nll(k, b, lsm, G.prod, bias, nll);
    return;
  }
  /* x: the logits, or with a bias fused in (fuse_nll.c) the product it is
   * added to, in place: nothing else reads it */
  int xin = bias ? bias->in[0] : lsm->in[0];
  if (G.logp)
    karg(k, A_PTR, id_of(p, lsm), -1, "real *logp");
  if (grad)
    karg(k, A_PTR, id_of(p, grad), -1, G.inplace ? "real *dx /* over x */" : "real *dx");
  G.shadow = grad && shadow16_of(p, id_of(p, grad)) != SIZE_MAX;
  if (G.shadow)
    karg(k, A_BF16, id_of(p, grad), -1, "lmc_bf16 *dx16");
  if (nll)
    karg(k, A_PTR, id_of(p, nll), -1, "real *loss");
  if (!G.inplace)
    karg(k, A_PTR, xin, -1, bias ? "real *x" : "const real *x");
  if (bias)
    karg(k, A_PTR, bias->in[1], -1, "const real *bias");
  int target = grad ? grad->in[2] : nll ? nll->in[1] : -1;
  if (target >= 0)
    karg(k, A_PTR, target, -1, "const int32_t *target");
  karg(k, A_THREADS, id_of(p, lsm), -1, "int nt");
  Mono c = mdim(&lsm->shape, lsm->shape.rank - 1);
  Mono rows = mdiv(mnumel(&lsm->shape), c);
  if (grad) {
    bprintf(b, "  const real s = -(-(real)");
    bdouble(b, IN(p, grad, 0)->a.f);
    bprintf(b, " / (%s));   /* dloss / rows */\n", mstr(k, rows).s);
  }
  if (nll)
    bprintf(b, "  double nll_row[%zu];   /* summed in row order after the loop */\n", mval(rows, p->g->max_seq));
  bprintf(b, "  const long n = %s;\n", mstr(k, c).s);
  bprintf(b, "  LMC_PARALLEL_FOR(nt)\n");
  bprintf(b, "  for (long r = 0; r < %s; r++) {\n", mstr(k, rows).s);
  lsm_row(b, &G);
  bprintf(b, "  }\n");
  if (nll) {
    bprintf(b, "  double nll = 0;\n");
    bprintf(b, "  for (long r = 0; r < %s; r++)\n", mstr(k, rows).s);
    bprintf(b, "    nll -= nll_row[r];\n");
    bprintf(b, "  loss[0] = (real)(nll / (%s));\n", mstr(k, rows).s);
  }
  k->sig->iter = lsm->shape;
}
