/*
 * k_matmul.c: the kernels that call BLAS or index rows: matmul, bmm and
 * matmul_bias as GEMM (or GEMV, or lmc_sgemm_abt_mt for few rows), and
 * embedding with its gradient, dense or as rows (row-grad).
 *
 * In single precision every product kernel also has a bf16 path, taken
 * when run() passes it bf16 pointers (--precision bf16; NULL in fp32
 * mode, where the fp32 call below runs as it always has): the operands
 * in bf16, from their copies where they have one (a parameter's in
 * c->param16, the logits' gradient's shadow) or rounded into the bf16
 * scratch, and lmc_gemm_bf16, which sums in fp32.  The products of a loop
 * body (a recurrent layer's h W_hh^T and its two gradients, one step at a
 * time) have none: their rounding compounds from step to step, and one
 * epoch of the default LSTM with them in bf16 ended 4.3% above fp32's test
 * perplexity.  torch.autocast also runs nn.LSTM in fp32; the hoisted input
 * projection, the decoder and every Transformer product are bf16 in both.
 */
#include "emit.h"

/* The 2-D view of a matmul operand: leading dims flattened. */
static void as_matrix(const Shape *s, Mono *rows, Mono *cols)
{
  if (s->rank < 1)
    die("matmul of a scalar");
  *cols = mdim(s, s->rank - 1);
  *rows = mdiv(mnumel(s), *cols);
}

/* a @ b^T of at most SMALL_GEMM_ROWS fixed rows goes to lmc_sgemm_abt_mt;
 * a^T b with more than WEIGHT_GRAD_SPLIT rows is computed in blocks of
 * WEIGHT_GRAD_ROWS. */
enum { SMALL_GEMM_ROWS = 64, WEIGHT_GRAD_SPLIT = 1024, WEIGHT_GRAD_ROWS = 1024 };

static const char *gemm(const Graph *g)
{
  return g->real == DT_F64 ? "cblas_dgemm" : "cblas_sgemm";
}

static const char *gemv(const Graph *g)
{
  return g->real == DT_F64 ? "cblas_dgemv" : "cblas_sgemv";
}

/* One product y (m x nn) = op(a) (m x kk) @ op(b) (kk x nn): a's rows
 * hold ac elements, b's br rows bc; beta "1" adds onto y. */
typedef struct {
  Mono m, nn, kk, ac, br, bc;
  const char *ta, *tb, *beta;
} Gemm;

/* The GEMM of the whole product, its lines indented by ind. */
static void gemm_call(Text *k, Buf *b, const Gemm *q, const char *ind)
{
  bprintf(b, "%s%s(CblasRowMajor, %s, %s, %s, %s, %s,\n", ind, gemm(k->p->g), q->ta, q->tb, mstr(k, q->m).s,
          mstr(k, q->nn).s, mstr(k, q->kk).s);
  bprintf(b, "%s            1, a, %s, b, %s, %s, y, %s);\n", ind, mstr(k, q->ac).s, mstr(k, q->bc).s, q->beta,
          mstr(k, q->nn).s);
}

/* a @ b^T with few rows in single precision (a recurrent layer's per-step
 * products, generation's rows: at most bptt): lmc_sgemm_abt_mt, which
 * reads b in place where OpenBLAS packs all of it on every call; with
 * T rows (maybe 1), only when T is 1.  False if the product is not one. */
static bool gemm_few_rows(Text *k, Buf *b, Node *n, const Gemm *q)
{
  Mono m = q->m;
  bool few = m.c >= 1 && ((m.k == 0 && m.c <= SMALL_GEMM_ROWS) ||
                           (m.k == 1 && m.c * k->p->g->max_seq <= SMALL_GEMM_ROWS));
  bool one_maybe = m.c == 1 && m.k == 1;
  if (k->p->g->real != DT_F32 || n->a.ta || !n->a.tb || !(few || one_maybe))
    return false;
  kthreads(k, id_of(k->p, n));
  const char *ind = "  ";
  if (!few) {
    bprintf(b, "  if (%s == 1)\n", mstr(k, m).s);
    ind = "    ";
  }
  bprintf(b, "%slmc_sgemm_abt_mt(nt, %s, %s, %s, a, %s, b, %s, %s, y, %s);\n", ind, few ? mstr(k, m).s : "1",
          mstr(k, q->nn).s, mstr(k, q->kk).s, mstr(k, q->ac).s, mstr(k, q->bc).s, q->beta, mstr(k, q->nn).s);
  if (!few) {
    bprintf(b, "  else\n");
    gemm_call(k, b, q, "    ");
  }
  return true;
}

/* A weight gradient a^T b with many rows (the decoder's, 33278; an LSTM's
 * 4 nhid): in blocks of rows, or OpenBLAS packs all of a's columns at
 * once, 41 MiB more of peak memory for the decoder at nhid 650, 1.3 MiB
 * in blocks, about 2% slower (each output is summed as before). */
static void gemm_row_blocks(Text *k, Buf *b, const Gemm *q)
{
  Str m = mstr(k, q->m), nn = mstr(k, q->nn);
  bprintf(b, "  for (long r = 0; r < %s; r += %d)\n", m.s, WEIGHT_GRAD_ROWS);
  bprintf(b, "    %s(CblasRowMajor, %s, %s, r + %d <= %s ? %d : %s - r, %s, %s,\n", gemm(k->p->g), q->ta, q->tb,
          WEIGHT_GRAD_ROWS, m.s, WEIGHT_GRAD_ROWS, m.s, nn.s, mstr(k, q->kk).s);
  bprintf(b, "                1, a + r, %s, b, %s, %s, y + r * %s, %s);\n", mstr(k, q->ac).s, mstr(k, q->bc).s,
          q->beta, nn.s, nn.s);
}

/* One matrix product; with one row (generation's single step), or T rows
 * when T is 1, a matrix-vector product, which reads b in place where GEMM
 * would first pack all of it. */
static void gemm_one(Text *k, Buf *b, Node *n, const Gemm *q)
{
  bool one = mone(q->m), maybe_one = q->m.c == 1 && q->m.k == 1;
  const char *ind = "  ";
  if (one || maybe_one) {
    if (maybe_one)
      bprintf(b, "  if (%s == 1)\n  ", mstr(k, q->m).s);
    bprintf(b, "  %s(CblasRowMajor, %s, %s, %s, 1, b, %s, a, %s, %s, y, 1);\n", gemv(k->p->g),
            n->a.tb ? "CblasNoTrans" : "CblasTrans", mstr(k, q->br).s, mstr(k, q->bc).s, mstr(k, q->bc).s,
            n->a.ta ? mstr(k, q->ac).s : "1", q->beta);
    if (one)
      return;
    bprintf(b, "  else\n");
    ind = "    ";
  }
  gemm_call(k, b, q, ind);
}

/* A batch of products; a matrix whose step sa (sb) is 0 is the same for
 * every one. */
static void gemm_batched(Text *k, Buf *b, const Gemm *q, Mono batch, Mono sa, Mono sb)
{
  Str pa = {"a"}, pb = {"b"};   /* batch i's matrices */
  if (sa.c)
    sprint(&pa, " + i * %s", mstr(k, sa).s);
  if (sb.c)
    sprint(&pb, " + i * %s", mstr(k, sb).s);
  bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, batch).s);
  bprintf(b, "    %s(CblasRowMajor, %s, %s, %s, %s, %s,\n", gemm(k->p->g), q->ta, q->tb, mstr(k, q->m).s,
          mstr(k, q->nn).s, mstr(k, q->kk).s);
  bprintf(b, "                1, %s, %s, %s, %s, 0, y + i * %s, %s);\n", pa.s, mstr(k, q->ac).s, pb.s,
          mstr(k, q->bc).s, mstr(k, mmul(q->m, q->nn)).s, mstr(k, q->nn).s);
}

/* The bf16 forms of operands in[0, nop) of product n, whose fp32
 * parameters are name[i]: const lmc_bf16 *name16 where the operand has a
 * copy, else lines in conv that round it into the scratch, lmc_bf16 *s16
 * (each operand at a multiple of 32 elements); op[i] gets each one's
 * pointer.  Returns the one that is NULL in fp32 mode, for the kernel's
 * test. */
const char *bf16_operands(Text *k, Buf *conv, Node *n, int nop, const char *const name[], Str op[])
{
  Prog *p = k->p;
  const char *test = NULL;
  bool copy[2] = {0}, scratch = false;
  for (int i = 0; i < nop; i++) {
    copy[i] = p->loc[n->in[i]].kind == L_PARAM || shadow16_of(p, n->in[i]) != SIZE_MAX;
    scratch |= !copy[i];
    if (copy[i]) {
      karg(k, A_BF16, n->in[i], -1, "const lmc_bf16 *%s16", name[i]);
      op[i] = (Str){""};
      sprint(&op[i], "%s16", name[i]);
      test = test ? test : arena_strdup(op[i].s);
    }
  }
  size_t at = 0;
  if (scratch) {
    karg(k, A_SCRATCH16, id_of(p, n), -1, "lmc_bf16 *s16");
    test = test ? test : "s16";
  }
  for (int i = 0; i < nop; i++) {
    if (copy[i])
      continue;
    Mono numel = mnumel(&IN(p, n, i)->shape);
    op[i] = (Str){""};
    sprint(&op[i], at ? "s16 + %zu" : "s16", at);
    bprintf(conv, "    lmc_to_bf16(%s, %s, %s);\n", name[i], op[i].s, mstr(k, numel).s);
    at += (mval(numel, p->g->max_seq) + 31) / 32 * 32;
  }
  if (at > p->scratch16_numel)
    p->scratch16_numel = at;
  kthreads(k, id_of(p, n));
  return test;
}

/* The product in bf16, ahead of the fp32 one (the top of the file); a
 * batch of products as gemm_batched. */
static void gemm_bf16(Text *k, Buf *b, Node *n, const Gemm *q, Mono batch, Mono sa, Mono sb)
{
  static const char *const name[] = {"a", "b"};
  Str op[2];
  Buf conv = {0};
  const char *test = bf16_operands(k, &conv, n, 2, name, op);
  bprintf(b, "  if (%s) {   /* --precision bf16 */\n%s", test, bstr(&conv));
  bfree(&conv);
  Str m = mstr(k, q->m), nn = mstr(k, q->nn), kk = mstr(k, q->kk), ac = mstr(k, q->ac), bc = mstr(k, q->bc);
  if (mone(batch)) {
    bprintf(b, "    lmc_gemm_bf16(%d, %d, %s, %s, %s, %s, %s, %s, %s, %s, y, %s, nt);\n", n->a.ta, n->a.tb, m.s, nn.s,
            kk.s, op[0].s, ac.s, op[1].s, bc.s, q->beta, nn.s);
  } else {
    if (sa.c)
      sprint(&op[0], " + i * %s", mstr(k, sa).s);
    if (sb.c)
      sprint(&op[1], " + i * %s", mstr(k, sb).s);
    bprintf(b, "    for (long i = 0; i < %s; i++)\n", mstr(k, batch).s);
    bprintf(b, "      lmc_gemm_bf16(%d, %d, %s, %s, %s, %s, %s, %s, %s, 0, y + i * %s, %s, nt);\n", n->a.ta, n->a.tb,
            m.s, nn.s, kk.s, op[0].s, ac.s, op[1].s, bc.s, mstr(k, mmul(q->m, q->nn)).s, nn.s);
  }
  bprintf(b, "    return;\n  }\n");
}

/* y = op(a) @ op(b); op transposes where a.ta / a.tb is set.  MATMUL: a and
 * b are matrices with leading dims flattened; BMM: batches of matrices
 * over the leading dims (an operand whose leading dims are all 1 is the
 * same matrix for every batch). */
void k_matmul(Text *k, Buf *b, Node *n)
{
  Node *a = IN(k->p, n, 0), *bb = IN(k->p, n, 1);
  Mono ar, ac, br, bc, batch = mono(1, 0), sa = mono(0, 0), sb = mono(0, 0);
  kout(k, n);
  kin(k, n, 0, "a");
  kin(k, n, 1, "b");
  if (n->op != OP_BMM) {
    as_matrix(&a->shape, &ar, &ac);
    as_matrix(&bb->shape, &br, &bc);
  } else {
    if (a->shape.rank < 2 || bb->shape.rank < 2 || n->shape.rank < 2)
      die("bmm operands of rank < 2");
    ar = mdim(&a->shape, a->shape.rank - 2);
    ac = mdim(&a->shape, a->shape.rank - 1);
    br = mdim(&bb->shape, bb->shape.rank - 2);
    bc = mdim(&bb->shape, bb->shape.rank - 1);
    batch = mdiv(mnumel(&n->shape), mmul(mdim(&n->shape, n->shape.rank - 2), mdim(&n->shape, n->shape.rank - 1)));
    if (!mone(mdiv(mnumel(&a->shape), mmul(ar, ac))))
      sa = mmul(ar, ac);
    if (!mone(mdiv(mnumel(&bb->shape), mmul(br, bc))))
      sb = mmul(br, bc);
  }
  Gemm q = {.m = n->a.ta ? ac : ar, .kk = n->a.ta ? ar : ac, .nn = n->a.tb ? br : bc, .ac = ac, .br = br, .bc = bc,
            .ta = n->a.ta ? "CblasTrans" : "CblasNoTrans", .tb = n->a.tb ? "CblasTrans" : "CblasNoTrans",
            .beta = "0"};
  /* matmul_bias: y starts as the broadcast bias and the product is added */
  if (n->op == OP_MATMUL_BIAS) {
    Nest ns;
    Str idx[MAXOPND];
    kin(k, n, 2, "c");
    nest_init(&ns, &n->shape);
    nest_bcast(&ns, &n->shape);
    nest_bcast(&ns, &IN(k->p, n, 2)->shape);
    int d = nest_open(k, b, &ns, 1, idx);
    indent(b, d);
    bprintf(b, "y[%s] = c[%s];\n", idx[0].s, idx[1].s);
    q.beta = "1";
  }
  if (!meq(q.kk, n->a.tb ? bc : br))
    die("n%d: matmul inner sizes differ", id_of(k->p, n));
  if (!meq(mmul(batch, mmul(q.m, q.nn)), mnumel(&n->shape)))
    die("n%d: matmul output %s does not hold the product", id_of(k->p, n), shape_str(&n->shape));
  if (k->p->bf16 && !n->loop)   /* a loop body's products (the recurrence) stay fp32: the top of the file */
    gemm_bf16(k, b, n, &q, batch, sa, sb);
  if (!mone(batch))
    gemm_batched(k, b, &q, batch, sa, sb);
  else if (gemm_few_rows(k, b, n, &q))
    return;
  else if (n->a.ta && !n->a.tb && q.m.k == 0 && q.m.c > WEIGHT_GRAD_SPLIT)
    gemm_row_blocks(k, b, &q);
  else
    gemm_one(k, b, n, &q);
}

void k_embedding(Text *k, Buf *b, Node *n)
{
  Node *ids = IN(k->p, n, 1);
  Mono rows = mnumel(&ids->shape);
  kout(k, n);
  if (n->op == OP_EMBEDDING) {
    Mono dim = mdiv(mnumel(&n->shape), rows);
    kin(k, n, 0, "w");
    kin(k, n, 1, "ids");
    Str d = mstr(k, dim);
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, rows).s);
    bprintf(b, "    memcpy(y + i * %s, w + (long)ids[i] * %s, %s * sizeof *y);\n", d.s, d.s, d.s);
  } else {
    Mono dim = mdim(&n->shape, n->shape.rank - 1);
    kin(k, n, 0, "dy");
    kin(k, n, 1, "ids");
    Str d = mstr(k, dim);
    if (n->a.rows) {
      /* row-grad: the rows ids reads, in ascending order of id, each summed
       * over i as the dense scatter below sums it; then ids and count */
      size_t max_rows = (size_t)mval(rows, k->p->g->max_seq);
      bprintf(b, "  int32_t *row = (int32_t *)(dx + %zu);   /* the rows' ids, ascending; row[%zu]: how many */\n",
              max_rows * (size_t)mval(dim, 1), max_rows);
      bprintf(b, "  const long nrow = row[%zu] = (int32_t)lmc_unique_ids(ids, %s, row);\n", max_rows, mstr(k, rows).s);
      bprintf(b, "  memset(dx, 0, nrow * %s * sizeof *dx);\n", d.s);
      bprintf(b, "  for (long i = 0; i < %s; i++) {\n", mstr(k, rows).s);
      bprintf(b, "    real *d = dx + lmc_find_id(row, nrow, ids[i]) * %s;\n", d.s);
      bprintf(b, "    for (long j = 0; j < %s; j++)\n", d.s);
      bprintf(b, "      d[j] += dy[i * %s + j];\n", d.s);
      bprintf(b, "  }\n");
      return;
    }
    bprintf(b, "  memset(dx, 0, %s * sizeof *dx);\n", mstr(k, mnumel(&n->shape)).s);
    bprintf(b, "  for (long i = 0; i < %s; i++)\n", mstr(k, rows).s);
    bprintf(b, "    for (long j = 0; j < %s; j++)\n", d.s);
    bprintf(b, "      dx[(long)ids[i] * %s + j] += dy[i * %s + j];\n", d.s, d.s);
  }
}
