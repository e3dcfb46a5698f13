/*
 * optimizer.c: the emitted optimizer: lmc_clip (clip_grad_norm_), lmc_sgd,
 * lmc_adamw and lmc_grad_dense over the model's parameter and gradient
 * blocks, as loops specialised to the layout (layout.c), dense or with
 * rows gradients (row-grad).
 */
#include "emit.h"

/* clip, sgd and adamw over the whole parameter block. */
static void emit_optimizer_dense(Model *m, Buf *out)
{
  size_t n = m->param_numel;
  Str sq = fn(m->p->train, "sqrt");
  bprintf(out, "/* torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when\n"
               " * that is below 1; returns the norm before clipping. */\n");
  bprintf(out, "static double lmc_clip(real *grad, double clip)\n{\n");
  bprintf(out, "  double s[8] = { 0 };   /* eight lanes, added pairwise: vectorises, same bits every run */\n");
  if (n >= 8) {
    bprintf(out, "  for (size_t i = 0; i < %zu; i += 8)\n", n & ~(size_t)7);
    bprintf(out, "    for (int j = 0; j < 8; j++)\n");
    bprintf(out, "      s[j] += (double)grad[i + j] * grad[i + j];\n");
  }
  if (n % 8) {
    bprintf(out, "  for (size_t i = %zu; i < %zu; i++)\n", n & ~(size_t)7, n);
    bprintf(out, "    s[0] += (double)grad[i] * grad[i];\n");
  }
  bprintf(out, "  double norm = sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));\n");
  bprintf(out, "  double scale = clip / (norm + 1e-6);\n");
  bprintf(out, "  if (clip > 0 && scale < 1)\n");
  bprintf(out, "    for (size_t i = 0; i < %zu; i++)\n", n);
  bprintf(out, "      grad[i] = (real)(grad[i] * scale);\n");
  bprintf(out, "  return norm;\n}\n\n");

  bprintf(out, "static void lmc_sgd(real *param, const real *grad, double lr)\n{\n");
  bprintf(out, "  real r = (real)lr;\n");
  bprintf(out, "  for (size_t i = 0; i < %zu; i++)\n", n);
  bprintf(out, "    param[i] -= r * grad[i];\n}\n\n");

  bprintf(out, "/* PyTorch's AdamW: decoupled weight decay, then Adam with bias correction. */\n");
  bprintf(out, "static void lmc_adamw(real *param, const real *grad, real *m, real *v, double lr, double wd, long t)\n{\n");
  bprintf(out, "  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;\n");
  bprintf(out, "  real decay = (real)(1 - lr * wd);\n");
  bprintf(out, "  real step = (real)(lr / (1 - pow(b1, (double)t)));\n");
  bprintf(out, "  real bc2 = (real)sqrt(1 - pow(b2, (double)t));\n");
  bprintf(out, "  for (size_t i = 0; i < %zu; i++) {\n", n);
  bprintf(out, "    param[i] *= decay;\n");
  bprintf(out, "    m[i] = (real)b1 * m[i] + (real)(1 - b1) * grad[i];\n");
  bprintf(out, "    v[i] = (real)b2 * v[i] + (real)(1 - b2) * grad[i] * grad[i];\n");
  bprintf(out, "    param[i] -= step * m[i] / (%s(v[i]) / bc2 + (real)eps);\n", sq.s);
  bprintf(out, "  }\n}\n\n");

  bprintf(out, "/* The gradient block is parameter-shaped. */\n");
  bprintf(out, "static void lmc_grad_dense(const real *grad, real *dense)\n{\n");
  bprintf(out, "  memcpy(dense, grad, %zu * sizeof *dense);\n}\n\n", n);
}

/* The next run of dense gradients from parameter i: [*i, *j). */
static bool dense_run(Model *m, int *i, int *j)
{
  while (*i < m->nparam && m->param[*i].rows)
    ++*i;
  if (*i >= m->nparam)
    return false;
  for (*j = *i; *j < m->nparam && !m->param[*j].rows; ++*j)
    ;
  return true;
}

/* lmc_clip's squares of grad[a, b), whose dense positions are congruent
 * to a, b modulo 8: in the lanes of those positions, and from dense
 * position tail on (the last partial group of 8) in lane 0, as the dense
 * loop adds them. */
static void clip_range(Buf *out, size_t a, size_t b, size_t dense_a, size_t tail)
{
  size_t t = dense_a + (b - a) > tail ? (tail > dense_a ? a + (tail - dense_a) : a) : b;   /* tail, in grad indices */
  size_t a8 = (a + 7) & ~(size_t)7, t8 = t & ~(size_t)7;
  if (a8 > t8)
    a8 = t8 = t;
  if (a < a8)
    bprintf(out, "  for (size_t i = %zu; i < %zu; i++)\n    s[i & 7] += (double)grad[i] * grad[i];\n", a, a8);
  if (a8 < t8) {
    bprintf(out, "  for (size_t i = %zu; i < %zu; i += 8)\n", a8, t8);
    bprintf(out, "    for (int j = 0; j < 8; j++)\n      s[j] += (double)grad[i + j] * grad[i + j];\n");
  }
  if (t8 < t)
    bprintf(out, "  for (size_t i = %zu; i < %zu; i++)\n    s[i & 7] += (double)grad[i] * grad[i];\n", t8, t);
  if (t < b)
    bprintf(out, "  for (size_t i = %zu; i < %zu; i++)\n    s[0] += (double)grad[i] * grad[i];\n", t, b);
}

/* A block over rows gradient p's rows: g, row, and a loop over k. */
static void rows_grad_open(Buf *out, Param *p, const char *what)
{
  bprintf(out, "  {   /* ");
  bcomment(out, p->name);
  bprintf(out, "%s */\n", what);
  bprintf(out, "    const real *g = grad + %zu;\n", p->goff);
  bprintf(out, "    const int32_t *row = (const int32_t *)(g + %zu);\n", p->max_rows * p->row_len);
  bprintf(out, "    for (long k = 0; k < row[%zu]; k++)\n", p->max_rows);
}

/* The same three with rows gradients (row-grad): each dense run of the
 * block as one loop, each rows gradient over its nrow rows. */
static void emit_optimizer_rows(Model *m, Buf *out)
{
  Str sq = fn(m->p->train, "sqrt");
  size_t tail = m->param_numel & ~(size_t)7;
  bprintf(out, "/* torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when\n"
               " * that is below 1; returns the norm before clipping.  Every square in\n"
               " * the lane of its position in a dense block, in the dense order: a\n"
               " * rows gradient's zero rows add nothing to it. */\n");
  bprintf(out, "static double lmc_clip(real *grad, double clip)\n{\n");
  bprintf(out, "  double s[8] = { 0 };   /* eight lanes, added pairwise: same bits every run */\n");
  for (int q = 0; q < m->nparam; q++) {
    Param *p = &m->param[q];
    if (!p->rows) {
      int j;
      for (j = q; j < m->nparam && !m->param[j].rows; j++)
        ;
      Param *l = &m->param[j - 1];
      clip_range(out, p->goff, l->goff + l->numel, p->off, tail);
      q = j - 1;
      continue;
    }
    rows_grad_open(out, p, ": its rows");
    bprintf(out, "      for (size_t j = 0, at = %zu + (size_t)row[k] * %zu; j < %zu; j++, at++)\n", p->off, p->row_len,
            p->row_len);
    if (p->off + p->numel > tail)
      bprintf(out, "        s[at >= %zu ? 0 : at & 7] += (double)g[k * %zu + j] * g[k * %zu + j];\n", tail,
              p->row_len, p->row_len);
    else
      bprintf(out, "        s[at & 7] += (double)g[k * %zu + j] * g[k * %zu + j];\n", p->row_len, p->row_len);
    bprintf(out, "  }\n");
  }
  bprintf(out, "  double norm = sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));\n");
  bprintf(out, "  double scale = clip / (norm + 1e-6);\n");
  bprintf(out, "  if (!(clip > 0 && scale < 1))\n    return norm;\n");
  for (int i = 0, j; dense_run(m, &i, &j); i = j) {
    Param *l = &m->param[j - 1];
    bprintf(out, "  for (size_t i = %zu; i < %zu; i++)\n", m->param[i].goff, l->goff + l->numel);
    bprintf(out, "    grad[i] = (real)(grad[i] * scale);\n");
  }
  for (int q = 0; q < m->nparam; q++) {
    Param *p = &m->param[q];
    if (!p->rows)
      continue;
    bprintf(out, "  for (size_t i = %zu; i < %zu + (size_t)((const int32_t *)(grad + %zu))[%zu] * %zu; i++)\n",
            p->goff, p->goff, p->goff + p->max_rows * p->row_len, p->max_rows, p->row_len);
    bprintf(out, "    grad[i] = (real)(grad[i] * scale);\n");
  }
  bprintf(out, "  return norm;\n}\n\n");

  bprintf(out, "/* p -= lr g; a rows gradient's other rows are zero and left alone */\n");
  bprintf(out, "static void lmc_sgd(real *param, const real *grad, double lr)\n{\n");
  bprintf(out, "  real r = (real)lr;\n");
  for (int i = 0, j; dense_run(m, &i, &j); i = j) {
    Param *l = &m->param[j - 1];
    bprintf(out, "  for (size_t i = 0; i < %zu; i++)\n", l->goff + l->numel - m->param[i].goff);
    bprintf(out, "    param[%zu + i] -= r * grad[%zu + i];\n", m->param[i].off, m->param[i].goff);
  }
  for (int q = 0; q < m->nparam; q++) {
    Param *p = &m->param[q];
    if (!p->rows)
      continue;
    rows_grad_open(out, p, "");
    bprintf(out, "      for (size_t j = 0; j < %zu; j++)\n", p->row_len);
    bprintf(out, "        param[%zu + (size_t)row[k] * %zu + j] -= r * g[k * %zu + j];\n", p->off, p->row_len,
            p->row_len);
    bprintf(out, "  }\n");
  }
  bprintf(out, "}\n\n");

  bprintf(out, "/* PyTorch's AdamW: decoupled weight decay, then Adam with bias correction;\n"
               " * every element moves, a rows gradient's other rows with gradient 0. */\n");
  bprintf(out, "static void lmc_adamw(real *param, const real *grad, real *m, real *v, double lr, double wd, long t)\n{\n");
  bprintf(out, "  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;\n");
  bprintf(out, "  real decay = (real)(1 - lr * wd);\n");
  bprintf(out, "  real step = (real)(lr / (1 - pow(b1, (double)t)));\n");
  bprintf(out, "  real bc2 = (real)sqrt(1 - pow(b2, (double)t));\n");
  for (int q = 0; q < m->nparam; q++) {
    Param *p = &m->param[q];
    const char *ind = "    ";
    if (!p->rows) {
      int j;
      for (j = q; j < m->nparam && !m->param[j].rows; j++)
        ;
      Param *l = &m->param[j - 1];
      bprintf(out, "  for (size_t i = %zu; i < %zu; i++) {\n", p->off, l->off + l->numel);
      bprintf(out, "    real gv = grad[%zu + (i - %zu)];\n", p->goff, p->off);
      q = j - 1;
    } else {
      ind = "        ";
      bprintf(out, "  {   /* ");
      bcomment(out, p->name);
      bprintf(out, ": row r's gradient is its rows entry, or 0 */\n");
      bprintf(out, "    const int32_t *row = (const int32_t *)(grad + %zu);\n", p->goff + p->max_rows * p->row_len);
      bprintf(out, "    for (size_t r = 0, k = 0; r < %zu; r++) {\n", p->numel / p->row_len);
      bprintf(out, "      const real *g = k < (size_t)row[%zu] && (size_t)row[k] == r ? grad + %zu + k++ * %zu : NULL;\n",
              p->max_rows, p->goff, p->row_len);
      bprintf(out, "      for (size_t j = 0, i = %zu + r * %zu; j < %zu; j++, i++) {\n", p->off, p->row_len, p->row_len);
      bprintf(out, "        real gv = g ? g[j] : 0;\n");
    }
    bprintf(out, "%sparam[i] *= decay;\n", ind);
    bprintf(out, "%sm[i] = (real)b1 * m[i] + (real)(1 - b1) * gv;\n", ind);
    bprintf(out, "%sv[i] = (real)b2 * v[i] + (real)(1 - b2) * gv * gv;\n", ind);
    bprintf(out, "%sparam[i] -= step * m[i] / (%s(v[i]) / bc2 + (real)eps);\n", ind, sq.s);
    bprintf(out, p->rows ? "      }\n    }\n  }\n" : "  }\n");
  }
  bprintf(out, "}\n\n");

  bprintf(out, "/* The gradient block as a parameter-shaped one (test drivers). */\n");
  bprintf(out, "static void lmc_grad_dense(const real *grad, real *dense)\n{\n");
  for (int i = 0, j; dense_run(m, &i, &j); i = j) {
    Param *l = &m->param[j - 1];
    bprintf(out, "  memcpy(dense + %zu, grad + %zu, %zu * sizeof *dense);\n", m->param[i].off, m->param[i].goff,
            l->goff + l->numel - m->param[i].goff);
  }
  for (int q = 0; q < m->nparam; q++) {
    Param *p = &m->param[q];
    if (!p->rows)
      continue;
    bprintf(out, "  {   /* ");
    bcomment(out, p->name);
    bprintf(out, " */\n");
    bprintf(out, "    const int32_t *row = (const int32_t *)(grad + %zu);\n", p->goff + p->max_rows * p->row_len);
    bprintf(out, "    memset(dense + %zu, 0, %zu * sizeof *dense);\n", p->off, p->numel);
    bprintf(out, "    for (long k = 0; k < row[%zu]; k++)\n", p->max_rows);
    bprintf(out, "      memcpy(dense + %zu + (size_t)row[k] * %zu, grad + %zu + k * %zu, %zu * sizeof *dense);\n", p->off,
            p->row_len, p->goff, p->row_len, p->row_len);
    bprintf(out, "  }\n");
  }
  bprintf(out, "}\n\n");
}

void emit_optimizer(Model *m, Buf *out)
{
  bprintf(out, "/* ---------------------------------------------------------------- optimizer */\n\n");
  bool rows = false;
  for (int q = 0; q < m->nparam; q++)
    rows |= m->param[q].rows;
  if (rows)
    emit_optimizer_rows(m, out);
  else
    emit_optimizer_dense(m, out);
}
