/*
 * kernel_name.c: the C names of kernels, from the scopes of their nodes.
 *
 * A kernel is named  <prog>_<scope>_<what>  (or <prog>_<what> at top level):
 *   prog   the program: "train", "eval", "gen" or "sample";
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
 * The second, third, ... kernel of one name gets _2, _3, ... in the order
 * the names are given (kernel_name, kernel_numbered).  Every <what> ends
 * in a letter (op names do; check_scope tests it), so no name is
 * another's numbered form, and the names differ from the emitter's other
 * identifiers (<prog>_run, <prog>_state), which have no <what>.
 *
 * One kernel can stand for several whose code reads the same (the
 * emitter defines it once): kernel_shared_name names it by what their
 * names share, the '_'-separated words every scope starts and ends with
 * (rnn.l0 and rnn.l1 share "rnn"; encoder.layers.0.self_attn and
 * encoder.layers.1.self_attn share "encoder_self_attn") and the words
 * every <what> starts with (div and div_grad share "div").
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

const char *kernel_ident(const char *scope)
{
  char *ident = arena_calloc(strlen(scope) + 1, 1), *o = ident;
  for (const char *p = scope; *p;) {
    size_t n = strcspn(p, ".");
    const char *next = p[n] ? p + n + 1 : p + n;
    size_t d = strspn(next, "0123456789");
    if (n == 6 && !strncmp(p, "layers", 6) && d > 0 && (next[d] == '.' || !next[d])) {
      put(ident, &o, 'l');
      for (size_t i = 0; i < d; i++)
        put(ident, &o, next[i]);
      p = next + d;
    } else {
      for (size_t i = 0; i < n; i++)
        put(ident, &o, p[i]);
      p += n;
    }
    if (*p == '.') {
      put(ident, &o, '_');
      p++;
    }
  }
  if (o > ident && o[-1] == '_')
    o--;
  *o = 0;
  return ident;
}

static bool ends_with(const char *s, const char *tail)
{
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && !strcmp(s + n - t, tail);
}

const char *kernel_scope(const Graph *g, int id)
{
  return kernel_ident(g->node[id].scope);
}

/* what, ending in _grad for a node of the backward */
static const char *in_pass(const Graph *g, int id, const char *what)
{
  bool backward = g->backward_start > 0 && id >= g->backward_start;
  return backward && !ends_with(what, "_grad") ? arena_printf("%s_grad", what) : what;
}

const char *kernel_what(const Graph *g, int id)
{
  const Node *n = &g->node[id];
  const char *what = op_info[n->op].name;
  if (n->group)
    what = n->op == OP_LOG_SOFTMAX ? "log_softmax_nll" : n->loop ? "cell" : "fused";
  return in_pass(g, id, what);
}

const char *value_what(const Graph *g, int id)
{
  return in_pass(g, id, op_info[g->node[id].op].name);
}

const char *kernel_numbered(StrMap *used, const char *base)
{
  int given = strmap_get(used, base);   /* kernels named base so far, or -1 */
  strmap_put(used, base, given < 0 ? 1 : given + 1);
  return given < 0 ? base : arena_printf("%s_%d", base, given + 1);
}

static const char *join(const char *prog, const char *scope, const char *what)
{
  return arena_printf("%s_%s%s%s", prog, scope, *scope ? "_" : "", what);
}

const char *kernel_name(const Graph *g, int id, const char *prog, StrMap *used)
{
  return kernel_numbered(used, join(prog, kernel_scope(g, id), kernel_what(g, id)));
}

/* ------------------------------------------------------------ shared names */

typedef struct {
  const char *s;
  int n;                  /* words, '_'-separated */
} Words;

static Words words(const char *s)
{
  Words w = {s, *s != 0};
  for (const char *p = s; *p; p++)
    w.n += *p == '_';
  return w;
}

/* Where word k of w starts, and its length. */
static const char *word(Words w, int k, size_t *len)
{
  const char *p = w.s;
  for (int i = 0; i < k; i++)
    p += strcspn(p, "_") + 1;
  *len = strcspn(p, "_");
  return p;
}

static bool same_word(Words a, int i, Words b, int j)
{
  size_t na, nb;
  const char *pa = word(a, i, &na), *pb = word(b, j, &nb);
  return na == nb && !strncmp(pa, pb, na);
}

/* The words all n strings start with (head) and, after those, end with
 * (tail), as "head_tail"; tail words only when keep_tail. */
static const char *shared_words(int n, const char *const *s, bool keep_tail)
{
  Words first = words(s[0]);
  int head = first.n, tail = keep_tail ? first.n : 0, shortest = first.n;
  for (int i = 1; i < n; i++) {
    Words w = words(s[i]);
    int h = 0, t = 0;
    while (h < head && h < w.n && same_word(first, h, w, h))
      h++;
    while (t < tail && t < w.n && same_word(first, first.n - 1 - t, w, w.n - 1 - t))
      t++;
    head = h;
    tail = t;
    shortest = w.n < shortest ? w.n : shortest;
  }
  if (head + tail > shortest)
    tail = shortest - head;
  char *o = arena_calloc(strlen(s[0]) + 1, 1);
  for (int k = 0; k < first.n; k++) {
    if (k >= head && k < first.n - tail)
      continue;
    size_t len;
    const char *p = word(first, k, &len);
    if (*o)
      strcat(o, "_");
    strncat(o, p, len);
  }
  return o;
}

const char *kernel_shared_name(const char *prog, int n, const char *const *scope, const char *const *what)
{
  const char *w = shared_words(n, what, false);
  return join(prog, shared_words(n, scope, true), *w ? w : what[0]);
}
