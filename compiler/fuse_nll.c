/*
 * fuse_nll.c: fuse-nll, the backward of log_softmax + nll_loss in one pass.
 *
 * Autodiff differentiates nll_loss(log_softmax(x)) one op at a time:
 * nll_loss_grad writes a (rows, ntoken) tensor that is -dloss/rows at each
 * target and zero elsewhere (a memset of the whole tensor), and
 * log_softmax_grad reads it twice and log_softmax's output once to write
 * dx = dy - exp(logp) * sum(dy).  For a word-level model those tensors are
 * the biggest of all (700 x 33278 floats, 93 MB, for the default LSTM), so
 * the pair becomes one op,
 *
 *   nll_log_softmax_grad(dloss, logp, target):
 *     dx = exp(logp) * s - (i == target ? s : 0),   s = dloss / rows
 *
 * which reads logp once and writes dx once.  It is the same arithmetic in
 * the same order as the pair computes (sum(dy) is exactly -s), so dx is
 * bit for bit the unfused build's.
 *
 * That still computes every exponential twice, once for log_softmax's sum
 * and once here, 23 million expf calls each for the default LSTM, most of
 * the time of both kernels.  When dloss is a constant (it is: the loss's
 * own gradient, 1), the gradient needs nothing the backward computes, so
 * log_softmax and it become one fused kernel that runs where log_softmax
 * does (emit/k_rows.c's k_log_softmax_nll): per row, the exponentials
 * e = exp(x - max) are written into dx, summed (the same sum, so logp and
 * the loss are bit for bit the unfused ones), and then
 *   logp = x - lse,   dx = e * (s / sum) - (i == target ? s : 0)
 * in one pass.  dx differs from exp(logp) * s by rounding only (a few
 * units in the last place: one rounding of e * (s / sum) in double,
 * against exp of a rounded logp).
 *
 * nll_loss of log_softmax joins the same kernel (and makes one of its own
 * with log_softmax in the programs without a backward): it reads one
 * log-probability per row, x[target] - lse, which the kernel has at hand,
 * so when nothing else reads the log-probabilities they are never stored
 * (700 x 33278 floats written and read again for 700 of them) and the
 * exponentials go straight into dx.  The loss is the same sum in the same
 * order over the same rounded values, bit for bit the unfused one.
 *
 * A bias added to the logits joins too: add(m, b) read by nothing but the
 * log_softmax, b a vector over the last dim and m (the decoder's product)
 * read by nothing but the add.  The kernel adds b to each row of m in
 * place as its first pass over the row, which then stays in L2 for the
 * passes that follow.  fuse-matmul-bias would fill the logits with the
 * bias and have the GEMM add onto them (beta = 1), where OpenBLAS clears
 * them for beta = 0: the same passes over memory (measured: the same
 * ms per batch), but here the sums are the unfused add's,
 * round(round(m) + b), at any hidden size, where the GEMM adds the bias
 * before its last K block.
 *
 * Where the loss is all the group computes (no gradient, log-probabilities
 * unread: the evaluation program), the product joins as well: matmul(h, W)
 * with W^T (the decoder), read by nothing but the add.  The kernel then
 * never stores the logits: it computes them a block of columns at a time
 * (rows x 1024, in cache) and keeps a running maximum and sum of
 * exponentials per row, the sum rescaled when the maximum grows (as
 * flash attention does).  The 93 MB of logits are not written, cleared
 * and read again; the loss differs from the two-pass one by rounding (the
 * sums are in double).
 */
#include "lmc.h"

/* log_softmax node i is read by one nll_loss of its group and nothing else. */
static bool loss_only(const Graph *g, const Users *u, int i)
{
  if (u->n[i] != 1)
    return false;
  const Node *r = &g->node[u->u[i][0]];
  return r->op == OP_NLL_LOSS && r->group == g->node[i].group;
}

void fuse_nll(Graph *g)
{
  Users u = users_make(g);
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_LOG_SOFTMAX_GRAD)
      continue;
    int d = n->in[0];
    Node *ng = &g->node[d];
    if (ng->op != OP_NLL_LOSS_GRAD || ng->in[1] != n->in[1] || u.n[d] != 1 || u.out[d])
      continue;
    if (g->node[n->in[1]].op != OP_LOG_SOFTMAX || ng->loop != n->loop)
      continue;
    n->op = OP_NLL_LOG_SOFTMAX_GRAD;
    n->nin = 3;
    n->in[0] = ng->in[0];
    n->in[1] = ng->in[1];
    n->in[2] = ng->in[2];
    kill_node(g, &u, d);
    /* with a constant dloss (the loss's own gradient, 1) the gradient
     * needs nothing the backward computes: one kernel writes it with the
     * forward's log-probabilities, from the same exponentials */
    Node *x = &g->node[n->in[1]];
    if (g->node[n->in[0]].op == OP_CONST && !n->loop && !x->loop && !x->group) {
      g->ngroup++;
      x->group = n->group = g->ngroup;
    }
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_NLL_LOSS || n->loop || n->group)
      continue;
    Node *x = &g->node[n->in[0]];
    if (x->op != OP_LOG_SOFTMAX || x->loop)
      continue;
    if (!x->group) {
      g->ngroup++;
      x->group = g->ngroup;
    }
    n->group = x->group;
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_LOG_SOFTMAX || !n->group || n->a.axis != n->shape.rank - 1)
      continue;
    Node *x = &g->node[n->in[0]];
    if (x->op != OP_ADD || x->group || x->loop || u.n[n->in[0]] != 1 || u.out[n->in[0]])
      continue;
    for (int k = 0; k < 2; k++) {
      int m = x->in[k], b = x->in[1 - k];
      Node *mm = &g->node[m], *bias = &g->node[b];
      if (mm->loop || u.n[m] != 1 || u.out[m] || is_view(g, mm) || mm->op == OP_PARAM || mm->op == OP_INPUT ||
          mm->op == OP_LITERAL || !shape_eq(&mm->shape, &x->shape))
        continue;
      if (bias->shape.rank != 1 || bias->shape.seq || bias->shape.dim[0] != x->shape.dim[x->shape.rank - 1] ||
          (x->shape.seq >> (x->shape.rank - 1)) & 1)
        continue;
      x->in[0] = m;   /* the kernel reads the product first, the bias second */
      x->in[1] = b;
      x->group = n->group;
      break;
    }
  }
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_LOG_SOFTMAX || !n->group || u.out[i] || !loss_only(g, &u, i))
      continue;
    Node *x = &g->node[n->in[0]];
    int mi = x->op == OP_ADD && x->group == n->group ? x->in[0] : n->in[0];
    Node *mm = &g->node[mi];
    if (mm->op != OP_MATMUL || mm->group || mm->loop || !mm->a.tb || mm->a.ta || u.n[mi] != 1 || u.out[mi] ||
        g->node[mm->in[1]].shape.rank != 2 || g->node[mm->in[1]].shape.seq || g->real != DT_F32)
      continue;
    mm->group = n->group;
  }
  users_free(&u);
}
