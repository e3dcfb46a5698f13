/*
 * kernel_name.c: the C names of kernels, from the scopes of their nodes.
 *
 * A kernel is named  <prog>_<scope>_<what>  (or <prog>_<what> at top level):
 *   prog   the program: "train", "eval" or "gen";
 *   scope  the node's scope (Node.scope, the layer that built it) as an
 *          identifier: dots become '_', a "layers.<k>" pair becomes "l<k>"
 *          as in the recurrent layers' "rnn.l0" (encoder.layers.0.self_attn
 *          is encoder_l0_self_attn), runs of '_' one '_', none at the ends;
 *   what   what the kernel computes: the op (embedding, matmul_bias,
 *          tanh_grad); for a fused group, named by its anchor, "cell"
 *          inside a loop body (a recurrent cell's gates and state update),
 *          "log_softmax_nll" for fuse-nll's log_softmax kernel (with the
 *          loss, and in training the gradient of the logits), "fused"
 *          elsewhere; a node of the backward (from g->backward_start on)
 *          ends in "_grad" (matmul_grad, cell_grad) unless its op's name
 *          does already.
 * The second, third, ... kernel of one name in a program gets _2, _3, ...
 * in the order kernel_name is called.  Every <what> ends in a letter (op
 * names do; check_kernel_name tests it), so no name is another's numbered
 * form, and the names differ from the emitter's other identifiers
 * (<prog>_run, <prog>_state), which have no <what>.
 */
#include <string.h>
#include "lmc.h"

/* Appends c to the identifier being written at *o (id its start), but not
 * a '_' at the start or after another. */
static void put(const char *id, char **o, char c)
{
  if (c != '_' || (*o > id && (*o)[-1] != '_'))
    *(*o)++ = c;
}

/* The scope as a fragment of an identifier, "" at top level. */
static const char *scope_ident(const char *scope)
{
  char *id = arena_calloc(strlen(scope) + 1, 1), *o = id;
  for (const char *p = scope; *p;) {
    size_t n = strcspn(p, ".");
    const char *next = p[n] ? p + n + 1 : p + n;
    size_t d = strspn(next, "0123456789");
    if (n == 6 && !strncmp(p, "layers", 6) && d > 0 && (next[d] == '.' || !next[d])) {
      put(id, &o, 'l');
      for (size_t i = 0; i < d; i++)
        put(id, &o, next[i]);
      p = next + d;
    } else {
      for (size_t i = 0; i < n; i++)
        put(id, &o, p[i]);
      p += n;
    }
    if (*p == '.') {
      put(id, &o, '_');
      p++;
    }
  }
  if (o > id && o[-1] == '_')
    o--;
  *o = 0;
  return id;
}

static bool ends_with(const char *s, const char *tail)
{
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && !strcmp(s + n - t, tail);
}

const char *kernel_name(const Graph *g, int id, const char *prog, StrMap *used)
{
  const Node *n = &g->node[id];
  const char *what = op_info[n->op].name;
  if (n->group)
    what = n->op == OP_LOG_SOFTMAX ? "log_softmax_nll" : n->loop ? "cell" : "fused";
  bool backward = g->backward_start > 0 && id >= g->backward_start;
  const char *grad = backward && !ends_with(what, "_grad") ? "_grad" : "";
  const char *scope = scope_ident(n->scope);
  const char *base = arena_printf("%s_%s%s%s%s", prog, scope, *scope ? "_" : "", what, grad);
  int given = strmap_get(used, base);   /* kernels named base so far, or -1 */
  strmap_put(used, base, given < 0 ? 1 : given + 1);
  return given < 0 ? base : arena_printf("%s_%d", base, given + 1);
}
