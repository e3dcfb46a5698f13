/*
 * autodiff.c: reverse-mode differentiation on the IR.
 *
 * Appends to the graph the gradient of the scalar output "loss" (of
 * "objective" when the graph declares one: the loss plus its
 * regularisers) with respect to every parameter, as outputs
 * "grad:<name>".  The backward nodes
 * live in the same graph as the forward ones, so every later pass (fusion,
 * memory planning) sees both.
 *
 * Top-level nodes are visited in reverse schedule order; each node's
 * gradient is the sum of the contributions of its users (gradients of
 * values used more than once, such as a weight used at every step or a tied
 * embedding, accumulate), and the op's vector-Jacobian product (vjp())
 * turns it into contributions to its inputs.
 *
 * A loop is transposed as JAX transposes scan: its backward is a loop
 * running the other way whose body is the VJP of the forward body.
 *   - The reverse loop carries, for each forward carry, the gradient of the
 *     carry's next value; it starts from the gradient of the FINAL value and
 *     ends as the gradient of the initial value.
 *   - Forward body values the VJP needs are read at step t through a STACK
 *     of the forward node (every body node is stored per step) and a STEP
 *     inside the reverse body.
 *   - Gradients of per-step inputs (STEP) are stacked into the gradient of
 *     the sequence they came from.
 *   - Gradients of captured top-level values (weights, biases) are not
 *     summed step by step: the same VJP is applied once after the reverse
 *     loop to the stacked operands and summed over time, so W_hh's gradient
 *     is one GEMM over all T*B rows instead of T small ones.
 * State inputs are not differentiated, which detaches the hidden state
 * between batches.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

typedef struct {
  Graph *g;
  int *grad;       /* top-level node -> accumulated gradient node, or -1 */
  bool *needs;     /* node depends on a parameter */
  int nfwd;        /* forward nodes: grad and needs cover [0, nfwd) */
  /* the forward graph's loop outputs, so that transposing a loop does not
   * search the graph: final[final_start[c] ..) the FINALs of carry c,
   * stack[stack_start[l] ..) the STACKs of loop l's body nodes, in node order */
  int *final_start, *final;
  int *stack_start, *stack;
} Diff;

/* ------------------------------------------------------------- helpers */

static void at(Graph *g, int node)
{
  g->cur_file = g->node[node].file;
  g->cur_line = g->node[node].line;
  g->cur_scope = g->node[node].scope;
}

static int zeros(Graph *g, const Shape *s)
{
  Attr a = {.shape = *s};   /* before ir_const, which may move *s */
  return ir_op1(g, OP_BROADCAST, ir_const(g, 0), &a);
}

/* Sums dy over the dims that were broadcast to reach it from shape *to. */
static int unbroadcast(Graph *g, int dy, const Shape *to)
{
  if (shape_eq(&g->node[dy].shape, to))
    return dy;
  return ir_op1(g, OP_SUM, dy, &(Attr){.shape = *to});
}

static void accumulate(Graph *g, int *slot, int contribution)
{
  if (contribution < 0)
    return;
  *slot = *slot < 0 ? contribution : ir_op2(g, OP_ADD, *slot, contribution, NULL);
}

/* ---------------------------------------------------- gradient templates */

/* A gradient template of the op table (lmc.h: "op(args...)", $dy, $y, $0
 * $1 $2 and numbers), built node by node, arguments left to right. */
typedef struct {
  Graph *g;
  const Node *n;          /* the node differentiated */
  const char *text, *p;
  int dy, y;
  const int *x;
} Tmpl;

static _Noreturn void tmpl_fail(const Tmpl *t)
{
  die("%s: bad gradient template \"%s\" at \"%s\"", op_info[t->n->op].name, t->text, t->p);
}

static bool tmpl_eat(Tmpl *t, char c)
{
  while (*t->p == ' ')
    t->p++;
  if (*t->p != c)
    return false;
  t->p++;
  return true;
}

static int tmpl_build(Tmpl *t)
{
  while (*t->p == ' ')
    t->p++;
  const char *s = t->p;
  if (tmpl_eat(t, '$')) {
    t->p += s[1] == 'd' ? 2 : 1;
    if (!strncmp(s, "$dy", 3))
      return t->dy;
    if (s[1] == 'y')
      return t->y;
    if (s[1] >= '0' && s[1] < '0' + t->n->nin)
      return t->x[s[1] - '0'];
    tmpl_fail(t);
  }
  if ((*s >= '0' && *s <= '9') || *s == '.') {
    char *end;
    double v = strtod(s, &end);
    t->p = end;
    return ir_const(t->g, v);
  }
  size_t len = strspn(s, "abcdefghijklmnopqrstuvwxyz_");
  int op = 0;
  while (op < NOPS && (strlen(op_info[op].name) != len || strncmp(op_info[op].name, s, len)))
    op++;
  t->p += len;
  if (op == NOPS || !tmpl_eat(t, '('))
    tmpl_fail(t);
  int in[MAXIN], nin = 0;
  do {
    if (nin == MAXIN)
      tmpl_fail(t);
    in[nin++] = tmpl_build(t);
  } while (tmpl_eat(t, ','));
  if (!tmpl_eat(t, ')') || nin != op_info[op].nin)
    tmpl_fail(t);
  AttrKind kind = op_info[t->n->op].attr;
  bool same_kind = kind != A_NONE && op_info[op].attr == kind;   /* dropout_grad of a dropout */
  return ir_op(t->g, (Op)op, nin, in, same_kind ? &t->n->a : NULL);
}

static bool has_grad_template(Op op)
{
  for (int k = 0; k < op_info[op].nin; k++)
    if (op_info[op].grad[k])
      return true;
  return false;
}

/* The vector-Jacobian product of node n for its input k: the contribution
 * of output gradient dy to that input's gradient.  x[] are the node's
 * inputs and y its value, as seen where the product is built (inside a
 * reverse loop they are per-step views of the forward values; after it,
 * whole stacks).  Returns -1 when the input has no gradient.  An op with
 * gradient templates in the op table gets them; the others' rules are
 * here. */
static int vjp(Graph *g, const Node *n, int k, int dy, const int *x, int y)
{
  Shape xshape = g->node[x[k]].shape, *xs = &xshape;   /* a copy: g->node moves as nodes are added */
  Attr a = {0};
  if (has_grad_template(n->op)) {
    Tmpl t = {g, n, op_info[n->op].grad[k], op_info[n->op].grad[k], dy, y, x};
    if (!t.text)
      return -1;
    int r = tmpl_build(&t);
    if (*t.p)
      tmpl_fail(&t);
    return unbroadcast(g, r, xs);
  }
  switch (n->op) {
  case OP_MATMUL:
    if (n->a.ta)
      die("matmul with a transposed left operand has no gradient rule");
    if (k == 0)   /* dy (..., N) times b: (N, K) */
      return ir_op2(g, OP_MATMUL, dy, x[1], &(Attr){.tb = !n->a.tb});
    /* b: a^T dy (K, N), or dy^T a (N, K) when b is stored transposed */
    return n->a.tb ? ir_op2(g, OP_MATMUL, dy, x[0], &(Attr){.ta = 1})
                   : ir_op2(g, OP_MATMUL, x[0], dy, &(Attr){.ta = 1});
  case OP_BMM:
    if (!n->a.ta && !n->a.tb)
      return k == 0 ? ir_op2(g, OP_BMM, dy, x[1], &(Attr){.tb = 1})
                    : ir_op2(g, OP_BMM, x[0], dy, &(Attr){.ta = 1});
    if (!n->a.ta && n->a.tb)
      return k == 0 ? ir_op2(g, OP_BMM, dy, x[1], NULL)
                    : ir_op2(g, OP_BMM, dy, x[0], &(Attr){.ta = 1});
    if (n->a.ta && !n->a.tb)
      return k == 0 ? ir_op2(g, OP_BMM, x[1], dy, &(Attr){.tb = 1})
                    : ir_op2(g, OP_BMM, x[0], dy, NULL);
    die("bmm with both operands transposed has no gradient rule");
  case OP_EMBEDDING:
    if (k == 1)
      return -1;
    return ir_op2(g, OP_EMBEDDING_GRAD, dy, x[1], &(Attr){.shape = *xs});
  case OP_SUM:
    return ir_op1(g, OP_BROADCAST, dy, &(Attr){.shape = *xs});
  case OP_BROADCAST:
    return unbroadcast(g, dy, xs);
  case OP_RESHAPE:
    return ir_op1(g, OP_RESHAPE, dy, &(Attr){.shape = *xs});
  case OP_TRANSPOSE:
    for (int i = 0; i < xs->rank; i++)
      a.perm[n->a.perm[i]] = i;
    return ir_op1(g, OP_TRANSPOSE, dy, &a);
  case OP_SLICE:
    a.shape = *xs;
    a.axis = n->a.axis;
    a.start = n->a.start;
    return ir_op1(g, OP_PAD, dy, &a);
  case OP_CONCAT:
    a.axis = n->a.axis;
    a.start = k == 0 ? 0 : g->node[x[0]].shape.dim[n->a.axis];
    a.len = xs->dim[n->a.axis];
    return ir_op1(g, OP_SLICE, dy, &a);
  default:
    die("no gradient rule for %s", op_info[n->op].name);
  }
}

/* ----------------------------------------------------------------- loops */

typedef struct {
  int node;        /* forward body node */
  int k;           /* its input that is a captured top-level value */
  int dy;          /* gradient of the node, in the reverse body */
} Capture;

/* Transposes forward loop `lp` whose body is nodes [first, last]. */
static void diff_loop(Diff *d, int lp, int first, int last)
{
  Graph *g = d->g;
  /* per forward body node i, at [i - first] (the loop's nodes are [first, last]) */
  int nbody = last - first + 1;
  int *stacked = xcalloc((size_t)nbody, sizeof(int));   /* forward body node -> STACK */
  int *seen = xcalloc((size_t)nbody, sizeof(int));      /* -> STEP of that STACK in the reverse body */
  int *gb = xcalloc((size_t)nbody, sizeof(int));        /* forward body node -> gradient, reverse body */
  int *rcarry = xcalloc((size_t)nbody, sizeof(int));    /* forward carry -> reverse carry */
  for (int i = 0; i < nbody; i++)
    stacked[i] = seen[i] = gb[i] = rcarry[i] = -1;
  Capture *cap = xcalloc((size_t)nbody * MAXIN, sizeof(Capture));
  int ncap = 0;

  /* Before the reverse loop: whole stacks of the forward body values, and
   * zero gradients for carries whose final value has none. */
  int *init = xcalloc((size_t)nbody, sizeof(int));
  for (int i = first; i <= last; i++) {
    Node copy = g->node[i], *n = &copy;   /* g->node moves as nodes are added */
    if (n->dead || n->loop != lp)
      continue;
    at(g, i);
    stacked[i - first] = ir_stack(g, i);
    if (n->op == OP_CARRY && d->needs[i]) {
      init[i - first] = -1;
      for (int f = d->final_start[i]; f < d->final_start[i + 1]; f++)
        if (d->grad[d->final[f]] >= 0)
          accumulate(g, &init[i - first], d->grad[d->final[f]]);
      if (init[i - first] < 0)
        init[i - first] = zeros(g, &n->shape);
    }
  }

  ir_loop_begin(g, !g->loop[lp].reverse);
  for (int i = first; i <= last; i++)
    if (g->node[i].op == OP_CARRY && !g->node[i].dead && g->node[i].loop == lp && d->needs[i]) {
      at(g, i);
      rcarry[i - first] = ir_carry(g, init[i - first]);
    }
  /* Gradients arriving from after the loop: stacked outputs and the carry
   * of the next step. */
  for (int f = d->stack_start[lp]; f < d->stack_start[lp + 1]; f++) {
    int j = d->stack[f];
    Node copy = g->node[j], *s = &copy;
    if (s->dead || d->grad[j] < 0)
      continue;
    at(g, j);
    accumulate(g, &gb[s->in[0] - first], ir_step(g, d->grad[j]));
  }
  for (int i = first; i <= last; i++)
    if (rcarry[i - first] >= 0)
      accumulate(g, &gb[g->node[i].in[1] - first], rcarry[i - first]);

  for (int i = last; i >= first; i--) {
    Node copy = g->node[i], *n = &copy;
    if (n->dead || n->loop != lp || gb[i - first] < 0 || n->op == OP_CARRY || n->op == OP_STEP)
      continue;
    at(g, i);
    int x[MAXIN];
    for (int k = 0; k < n->nin; k++) {
      int j = n->in[k];
      if (g->node[j].loop == lp && stacked[j - first] >= 0) {
        if (seen[j - first] < 0)
          seen[j - first] = ir_step(g, stacked[j - first]);
        x[k] = seen[j - first];
      } else {
        x[k] = j;   /* a captured top-level value, or one that needs no gradient */
      }
    }
    if (seen[i - first] < 0)
      seen[i - first] = ir_step(g, stacked[i - first]);
    for (int k = 0; k < n->nin; k++) {
      int j = n->in[k];
      if (!d->needs[j])
        continue;
      if (g->node[j].loop == lp)
        accumulate(g, &gb[j - first], vjp(g, n, k, gb[i - first], x, seen[i - first]));
      else
        cap[ncap++] = (Capture){i, k, gb[i - first]};
    }
  }
  for (int i = first; i <= last; i++)
    if (rcarry[i - first] >= 0) {
      at(g, i);
      ir_carry_next(g, rcarry[i - first], gb[i - first] >= 0 ? gb[i - first] : zeros(g, &g->node[i].shape));
    }
  ir_loop_end(g);

  /* After the reverse loop: gradients of the sequences read by STEP, of the
   * carries' initial values, and of captured values. */
  for (int i = first; i <= last; i++) {
    Node copy = g->node[i], *n = &copy;
    if (n->dead || n->loop != lp)
      continue;
    at(g, i);
    if (n->op == OP_STEP && gb[i - first] >= 0 && d->needs[n->in[0]])
      accumulate(g, &d->grad[n->in[0]], ir_stack(g, gb[i - first]));
    if (n->op == OP_CARRY && rcarry[i - first] >= 0 && d->needs[n->in[0]])
      accumulate(g, &d->grad[n->in[0]], ir_final(g, rcarry[i - first]));
  }
  for (int c = 0; c < ncap; c++) {
    Node copy = g->node[cap[c].node], *n = &copy;
    at(g, cap[c].node);
    int x[MAXIN];
    for (int k = 0; k < n->nin; k++) {
      int j = n->in[k];
      x[k] = g->node[j].loop == lp ? stacked[j - first] : j;
    }
    int dy = ir_stack(g, cap[c].dy);
    int contribution = vjp(g, n, cap[c].k, dy, x, stacked[cap[c].node - first]);
    if (contribution >= 0)
      contribution = unbroadcast(g, contribution, &g->node[n->in[cap[c].k]].shape);
    accumulate(g, &d->grad[n->in[cap[c].k]], contribution);
  }
  free(stacked);
  free(seen);
  free(gb);
  free(rcarry);
  free(init);
  free(cap);
}

/* ------------------------------------------------------------------ main */

/* d->final and d->stack: the loop outputs of the forward graph. */
static void find_loop_outputs(Diff *d)
{
  Graph *g = d->g;
  d->final_start = xcalloc((size_t)d->nfwd + 2, sizeof(int));
  d->stack_start = xcalloc((size_t)g->nloop + 2, sizeof(int));
  for (int j = 0; j < d->nfwd; j++) {
    Node *n = &g->node[j];
    if (n->op == OP_FINAL)
      d->final_start[n->in[0] + 2]++;
    else if (n->op == OP_STACK)
      d->stack_start[g->node[n->in[0]].loop + 2]++;
  }
  for (int i = 0; i < d->nfwd; i++)
    d->final_start[i + 2] += d->final_start[i + 1];
  for (int l = 0; l < g->nloop; l++)
    d->stack_start[l + 2] += d->stack_start[l + 1];
  d->final = xcalloc((size_t)d->final_start[d->nfwd + 1] + 1, sizeof(int));
  d->stack = xcalloc((size_t)d->stack_start[g->nloop + 1] + 1, sizeof(int));
  for (int j = 0; j < d->nfwd; j++) {
    Node *n = &g->node[j];
    if (n->op == OP_FINAL)
      d->final[d->final_start[n->in[0] + 1]++] = j;
    else if (n->op == OP_STACK)
      d->stack[d->stack_start[g->node[n->in[0]].loop + 1]++] = j;
  }
}

/* needs[i]: node i depends on a parameter (only those get gradients)
 * through ops that have one: a comparison's 0/1 stops it. */
static bool *find_needs(Graph *g)
{
  bool *needs = xcalloc((size_t)g->nnode, sizeof(bool));
  for (bool changed = true; changed;) {
    changed = false;
    for (int i = 0; i < g->nnode; i++) {
      Node *n = &g->node[i];
      if (n->dead || needs[i])
        continue;
      bool v = n->op == OP_PARAM;
      for (int k = 0; k < n->nin && !v; k++)
        v = needs[n->in[k]] && g->node[n->in[k]].dtype != DT_I32;
      if (v && n->dtype != DT_I32 && (n->op == OP_PARAM || op_is(n->op, P_GRAD))) {
        needs[i] = true;
        changed = true;
      }
    }
  }
  return needs;
}

void autodiff(Graph *g)
{
  int loss = ir_find_output(g, "loss");
  if (loss < 0)
    die("autodiff: no output named loss");
  if (g->node[loss].shape.rank != 0)
    ir_error_node(g, loss, "output 'loss' must be a scalar, got %s", shape_str(&g->node[loss].shape));
  int objective = ir_find_output(g, "objective");
  if (objective >= 0 && g->node[objective].shape.rank != 0)
    ir_error_node(g, objective, "output 'objective' must be a scalar, got %s",
                  shape_str(&g->node[objective].shape));
  if (objective >= 0)
    loss = objective;   /* what training minimises */
  int nfwd = g->backward_start = g->nnode;
  Diff d = {.g = g, .grad = xcalloc((size_t)nfwd, sizeof(int)), .needs = find_needs(g), .nfwd = nfwd};
  for (int i = 0; i < nfwd; i++)
    d.grad[i] = -1;
  find_loop_outputs(&d);
  at(g, loss);
  d.grad[loss] = ir_const(g, 1);

  for (int i = nfwd - 1; i >= 0; i--) {
    Node copy = g->node[i], *n = &copy;
    if (n->dead)
      continue;
    if (n->loop != 0) {
      int first = i;
      while (first > 0 && (g->node[first - 1].loop == n->loop || op_is(g->node[first - 1].op, P_LEAF)))
        first--;
      diff_loop(&d, n->loop, first, i);
      i = first;
      continue;
    }
    if (d.grad[i] < 0 || !d.needs[i] || op_is(n->op, P_LEAF) || n->op == OP_STACK || n->op == OP_FINAL)
      continue;
    at(g, i);
    for (int k = 0; k < n->nin; k++)
      if (d.needs[n->in[k]])
        accumulate(g, &d.grad[n->in[k]], vjp(g, n, k, d.grad[i], n->in, i));
  }

  for (int i = 0; i < nfwd; i++) {
    Node copy = g->node[i], *n = &copy;
    if (n->op != OP_PARAM || n->dead)
      continue;
    at(g, i);
    int gr = d.grad[i] >= 0 ? d.grad[i] : zeros(g, &n->shape);
    ir_output(g, arena_printf("grad:%s", n->a.name), gr);
  }
  free(d.grad);
  free(d.needs);
  free(d.final_start);
  free(d.final);
  free(d.stack_start);
  free(d.stack);
}
