/*
 * verify.c: the invariants every pass relies on.
 *
 * Runs after the front end and between passes (as QBE runs ssacheck), so a
 * pass that breaks the graph is caught where it broke it.  A failure here
 * is a compiler bug, never the user's mistake.
 *
 * verify_c_inputs checks what the C target takes of a graph that the IR
 * allows: the inputs the emitted C feeds a program.  A failure there is
 * the user's, reported at the input's line.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

int verify(Graph *g, char *err, size_t errlen)
{
  int *first = xcalloc((size_t)g->nloop, sizeof(int));
  int *last = xcalloc((size_t)g->nloop, sizeof(int));
  for (int k = 0; k < g->nloop; k++)
    first[k] = last[k] = -1;
  int rc = -1;
#undef FAIL
#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead)
      continue;
    const char *op = op_info[n->op].name;
    if (n->nin != op_info[n->op].nin)
      FAIL("%%%d %s: %d inputs, expected %d", i, op, n->nin, op_info[n->op].nin);
    if (n->loop < 0 || n->loop >= g->nloop)
      FAIL("%%%d %s: loop %d does not exist", i, op, n->loop);
    if (n->shape.rank < 0 || n->shape.rank > MAXRANK)
      FAIL("%%%d %s: rank %d", i, op, n->shape.rank);
    if (op_is(n->op, P_LEAF) && n->loop != 0)
      FAIL("%%%d %s: a leaf inside a loop body", i, op);
    if (n->loop) {
      if (first[n->loop] < 0)
        first[n->loop] = i;
      last[n->loop] = i;
    }
    for (int k = 0; k < n->nin; k++) {
      int j = n->in[k];
      if (j < 0 || j >= g->nnode)
        FAIL("%%%d %s: input %d is %%%d, out of range", i, op, k, j);
      Node *x = &g->node[j];
      if (x->dead)
        FAIL("%%%d %s: input %d is %%%d, which is dead", i, op, k, j);
      bool back = n->op == OP_CARRY && k == 1;
      if (back ? j <= i : j >= i)
        FAIL("%%%d %s: input %d is %%%d, out of schedule order", i, op, k, j);
      bool crosses = x->loop != 0 && x->loop != n->loop;
      if (crosses && !(n->op == OP_STACK || n->op == OP_FINAL))
        FAIL("%%%d %s: reads %%%d of loop %d from loop %d", i, op, j, x->loop, n->loop);
      if (back && x->loop != n->loop)
        FAIL("%%%d carry: next value %%%d is not in its loop", i, j);
    }
    switch (n->op) {
    case OP_STEP:
    case OP_CARRY:
      if (n->loop == 0)
        FAIL("%%%d %s: outside a loop body", i, op);
      if (g->node[n->in[0]].loop != 0)
        FAIL("%%%d %s: input is not a top-level value", i, op);
      if (n->op == OP_CARRY && !shape_eq(&n->shape, &g->node[n->in[1]].shape))
        FAIL("%%%d carry: shape %s, next value %s", i, shape_str(&n->shape),
             shape_str(&g->node[n->in[1]].shape));
      break;
    case OP_STACK:
    case OP_FINAL:
      if (n->loop != 0)
        FAIL("%%%d %s: inside a loop body", i, op);
      if (g->node[n->in[0]].loop == 0)
        FAIL("%%%d %s: input is not a loop body value", i, op);
      if (n->op == OP_FINAL && g->node[n->in[0]].op != OP_CARRY)
        FAIL("%%%d final: input is %s, not carry", i, op_info[g->node[n->in[0]].op].name);
      break;
    default:
      break;
    }
  }
  /* A loop body is one contiguous run of nodes, top-level leaves aside. */
  for (int k = 1; k < g->nloop; k++) {
    if (first[k] < 0)
      continue;
    for (int i = first[k]; i <= last[k]; i++) {
      Node *n = &g->node[i];
      if (!n->dead && n->loop != k && !op_is(n->op, P_LEAF))
        FAIL("%%%d %s: inside the run of loop %d (%%%d..%%%d) but not in it", i,
             op_info[n->op].name, k, first[k], last[k]);
    }
  }
  for (int o = 0; o < g->nout; o++) {
    int j = g->out[o].node;
    if (j < 0 || j >= g->nnode || g->node[j].dead || g->node[j].loop)
      FAIL("output '%s' is %%%d, not a live top-level node", g->out[o].name, j);
  }
  rc = 0;
out:
  free(first);
  free(last);
  return rc;
}

void verify_or_die(Graph *g, const char *after)
{
  char err[512];
  if (verify(g, err, sizeof err) != 0)
    die("IR invalid after %s: %s", after, err);
}

void verify_c_inputs(Graph *g)
{
  for (int i = 0; i < g->nnode; i++) {
    Node *n = &g->node[i];
    if (n->dead || n->op != OP_INPUT || n->a.state)
      continue;
    if (strcmp(n->a.name, "tokens") && strcmp(n->a.name, "targets"))
      ir_error_node(g, i, "input '%s': the emitted C takes the inputs \"tokens\" and \"targets\" (i32) "
                    "and state; use --emit=ir or --emit=dot for other graphs", n->a.name);
    if (n->dtype != DT_I32)
      ir_error_node(g, i, "input '%s': token ids are i32, not %s", n->a.name, n->dtype == DT_F64 ? "f64" : "f32");
  }
}
