/*
 * fuse_elem.c: fuse-elementwise, chains of elementwise ops as one loop.
 *
 * An LSTM step is a dozen small elementwise ops (the gate pre-activations,
 * four slices, sigmoid and tanh, the cell update), and its backward two
 * dozen; each as its own kernel reads and writes its operands in memory.
 * This pass groups them: a group is a set of nodes of one loop (or of the
 * top level) that one kernel computes in one loop nest over the group's
 * shape (emit/k_fused.c), with intermediate values in registers.  A
 * node's group is Node.group; the kernel runs where the group's last live
 * member is (its anchor).
 *
 * Groups grow from a root, the latest elementwise node not yet grouped,
 * backwards over its producers in decreasing node order (so a node's users
 * in the group are settled before it is looked at).  A producer joins when
 * it is elementwise, a slice or a broadcast, in the same loop, and
 *   - every user is in the group: it is never stored, and may have any
 *     shape the group's index maps reach (a slice shifts an axis, a
 *     broadcast repeats one), unless it computes something on fewer
 *     elements than the group's shape (that would recompute it for every
 *     element it is broadcast to); or
 *   - it has the group's shape and every user outside the group runs after
 *     the root, or is a carry reading it at the next step: it is stored.
 *     Users outside the group that run before the root are pulled into it
 *     when they can be (elementwise, the group's shape, their own users
 *     after the root): the gradients of an LSTM cell's four gates are
 *     siblings that all read dc, and they become one kernel.
 * A root that is a sum of pads with disjoint windows covering its axis
 * (the gradient of the four gate slices, assembled into one (B, 4*nhid)
 * tensor) is grown at the shape of the padded values: the kernel stores
 * each one straight into its window, and the pads and adds cost nothing.
 * Dropout ops join like any other; the kernel draws their masks at the
 * same indices.  A group of one node stays an ordinary kernel; groups are
 * capped in size so that a kernel's loop nest stays small.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

enum { MAX_MEMBERS = 48 };

typedef struct {
  Graph *g;
  Users u;
  bool *in;               /* in the group being grown */
  bool *want;             /* an input of a member */
  int *wanted;            /* the nodes want marks, each once */
  int nwanted;
  int *members;
  int nm;
  int root;
  Shape shape;            /* the group's: of every member it stores */
} Fuse;

static bool computes(const Node *n)
{
  return op_is(n->op, P_ELEM) && n->dtype != DT_I32;
}

static bool joinable(const Node *n)
{
  if (n->dead || n->group || n->dtype == DT_I32)
    return false;
  return computes(n) || (n->op == OP_SLICE && !n->a.view) || n->op == OP_BROADCAST;
}

static int64_t size_of(const Graph *g, const Shape *s)
{
  return shape_numel(s, g->max_seq);
}

static void add_member(Fuse *F, int j)
{
  Node *n = &F->g->node[j];
  F->members[F->nm++] = j;
  F->in[j] = true;
  for (int k = 0; k < n->nin; k++)
    if (!F->want[n->in[k]]) {
      F->want[n->in[k]] = true;
      F->wanted[F->nwanted++] = n->in[k];
    }
}

/* Is node x a sum of pads along one axis whose windows are disjoint and
 * cover x, each pad read only by that sum?  Collects the adds and pads
 * into F as members and sets the group's shape to the padded values'. */
static bool pad_tree(Fuse *F, int x, int *axis, int64_t *covered, bool top)
{
  Graph *g = F->g;
  Node *n = &g->node[x];
  if (n->dead || n->group || n->loop != g->node[F->root].loop)
    return false;
  if (!top && (F->u.n[x] != 1 || F->u.out[x]))
    return false;
  if (n->op == OP_ADD)
    return shape_eq(&g->node[n->in[0]].shape, &n->shape) && shape_eq(&g->node[n->in[1]].shape, &n->shape) &&
           pad_tree(F, n->in[0], axis, covered, false) && pad_tree(F, n->in[1], axis, covered, false);
  if (n->op != OP_PAD || n->shape.seq)
    return false;
  Node *v = &g->node[n->in[0]];
  if (*axis < 0) {
    *axis = n->a.axis;
    F->shape = v->shape;
  }
  if (n->a.axis != *axis || !shape_eq(&v->shape, &F->shape))
    return false;
  int len = v->shape.dim[*axis], dim = n->shape.dim[*axis];
  if (n->a.start % len || dim / len > 62 || dim % len)
    return false;
  int64_t bit = (int64_t)1 << (n->a.start / len);
  if (*covered & bit)
    return false;
  *covered |= bit;
  return true;
}

static void take_tree(Fuse *F, int x)
{
  Node *n = &F->g->node[x];
  add_member(F, x);
  if (n->op == OP_ADD) {
    take_tree(F, n->in[0]);
    take_tree(F, n->in[1]);
  }
}

/* Can node v, a user of a member that runs before the root, join the
 * group as a sibling: computed in the same loop at the group's shape, with
 * every user of its own after the root? */
static bool sibling(Fuse *F, int v)
{
  Graph *g = F->g;
  Node *n = &g->node[v];
  if (!joinable(n) || !computes(n) || n->loop != g->node[F->root].loop || !shape_eq(&n->shape, &F->shape))
    return false;
  for (int k = 0; k < F->u.n[v]; k++) {
    int w = F->u.u[v][k];
    Node *wn = &g->node[w];
    if (!F->in[w] && w < F->root && !(wn->op == OP_CARRY && wn->in[1] == v))
      return false;
  }
  return true;
}

/* Tries to add producer j; returns the highest node that joined (j, or a
 * sibling pulled in with it), or -1. */
static int try_join(Fuse *F, int j)
{
  Graph *g = F->g;
  Node *p = &g->node[j];
  Node *root = &g->node[F->root];
  if (!joinable(p) || p->loop != root->loop || F->nm >= MAX_MEMBERS)
    return -1;
  bool internal = !F->u.out[j];
  for (int k = 0; k < F->u.n[j] && internal; k++)
    internal = F->in[F->u.u[j][k]];
  if (internal) {
    if (computes(p) && size_of(g, &p->shape) < size_of(g, &F->shape))
      return -1;
    add_member(F, j);
    return j;
  }
  /* users outside the group that run before the root */
  int early[MAXIN * 8], ne = 0;
  for (int k = 0; k < F->u.n[j]; k++) {
    int v = F->u.u[j][k];
    Node *vn = &g->node[v];
    if (F->in[v] || v > F->root || (vn->op == OP_CARRY && vn->in[1] == j))
      continue;
    bool dup = false;
    for (int e = 0; e < ne; e++)
      dup |= early[e] == v;
    if (dup)
      continue;
    if (ne == (int)(sizeof early / sizeof early[0]) || !sibling(F, v))
      return -1;
    early[ne++] = v;
  }
  if (F->nm + ne + 1 > MAX_MEMBERS)
    return -1;
  if (computes(p) && size_of(g, &p->shape) < size_of(g, &F->shape))
    return -1;
  /* stored unless its only outside users were the siblings */
  bool others = F->u.out[j];
  for (int k = 0; k < F->u.n[j] && !others; k++) {
    int v = F->u.u[j][k];
    bool sib = false;
    for (int e = 0; e < ne; e++)
      sib |= early[e] == v;
    others = !F->in[v] && !sib;
  }
  if (others && !shape_eq(&p->shape, &F->shape))
    return -1;
  int hi = j;
  for (int e = 0; e < ne; e++) {
    add_member(F, early[e]);
    hi = early[e] > hi ? early[e] : hi;
  }
  add_member(F, j);
  return hi;
}

void fuse_elementwise(Graph *g)
{
  int nn = g->nnode;
  Fuse F = {.g = g, .u = users_make(g)};
  F.in = xcalloc((size_t)nn + 1, sizeof(bool));
  F.want = xcalloc((size_t)nn + 1, sizeof(bool));
  F.members = xcalloc((size_t)nn + 1, sizeof(int));
  F.wanted = xcalloc((size_t)nn + 1, sizeof(int));
  for (int r = nn - 1; r >= 0; r--) {
    Node *root = &g->node[r];
    if (root->dead || root->group)
      continue;
    F.nm = 0;
    F.nwanted = 0;
    F.root = r;
    int axis = -1;
    int64_t covered = 0;
    if (root->op == OP_ADD && pad_tree(&F, r, &axis, &covered, true) &&
        covered == ((int64_t)1 << (root->shape.dim[axis] / F.shape.dim[axis])) - 1) {
      take_tree(&F, r);
    } else if (joinable(root) && computes(root)) {
      F.shape = root->shape;
      add_member(&F, r);
    } else {
      continue;
    }
    /* the producers in decreasing node order: the highest wanted node
     * not in the group below a cursor, which steps down past each one
     * tried, or back up when a sibling joined, to look again at what it
     * reads (the wanted nodes are few: a search of them, not the graph) */
    for (int cursor = r - 1;;) {
      int j = -1;
      for (int w = 0; w < F.nwanted; w++)
        if (F.wanted[w] <= cursor && F.wanted[w] > j && !F.in[F.wanted[w]])
          j = F.wanted[w];
      if (j < 0)
        break;
      int hi = try_join(&F, j);
      cursor = (hi > j ? hi : j) - 1;
    }
    if (F.nm > 1) {
      g->ngroup++;
      for (int m = 0; m < F.nm; m++)
        g->node[F.members[m]].group = g->ngroup;
    }
    for (int m = 0; m < F.nm; m++)
      F.in[F.members[m]] = false;
    for (int w = 0; w < F.nwanted; w++)
      F.want[F.wanted[w]] = false;
  }
  free(F.in);
  free(F.want);
  free(F.members);
  free(F.wanted);
  users_free(&F.u);
}
