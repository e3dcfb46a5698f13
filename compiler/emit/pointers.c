/*
 * pointers.c: run()'s pointers into its memory.  run() passes no bare
 * offsets: at its top it declares one named pointer for each buffer it
 * reads or writes, with the buffer's shape and the Lua line that made it,
 * as llm.c's gpt2_forward points into its activations, and the calls name
 * them (plus t * step inside a loop for a value stored per step):
 *
 *   const real *rnn_weight_ih_l0 = c->param + 6655600;   (rnn.weight_ih_l0 (800, 200))
 *   real *d_rnn_weight_ih_l0 = c->grad + 140704;   (its gradient)
 *   real *hidden_h = c->state;   (the state hidden.h (2, 20, 200))
 *   real *rnn_l0_sigmoid = w + 23714608;   ((20, 200) per step, graphs/lstm.lua:18)
 *
 * A parameter, its gradient and a state are named after their names (as
 * kernel_ident writes them: encoder.layers.0.linear1.weight is
 * encoder_l0_linear1_weight); a value in c->work after the node that owns
 * the buffer (Loc.node: a view reads its source's) by its scope and op,
 * rnn_l0_sigmoid, decoder_matmul_grad.  Names are unique in run(): a second
 * rnn_l0_sigmoid is rnn_l0_sigmoid_2, and a name that could mean something
 * else there (a C keyword, one of run()'s own variables, a kernel's or the
 * runtime's prefix) starts with v_.  Buffers that plan-memory puts at one
 * address by their lifetimes get a name each.  A pointer is declared only
 * if run() uses it, in the order of first use.
 */
#include <stdlib.h>
#include <string.h>

#include "emit.h"

/* What names in run() already mean: C's keywords, run()'s own names, what
 * it calls, and object-like macros of the headers the file includes. */
static const char *const reserved[] = {
  "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
  "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
  "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
  "c", "w", "t", "T", "tokens", "targets", "have_targets", "real", "int32_t", "uint64_t", "LmcCtx", "memcpy",
  "memset", "math_errhandling",
};

/* Prefixes of other names of the file: kernels, tables, the runtime. */
static const char *const reserved_prefix[] = {"train_", "eval_", "gen_", "sample_", "step_", "steps_", "lmc_", "cblas_"};

void pointers_init(Text *t)
{
  Prog *p = t->p;
  t->node_ptr = xcalloc((size_t)p->g->nnode + 1, sizeof *t->node_ptr);
  t->grad_ptr = xcalloc((size_t)p->m->lay->nparam + 1, sizeof *t->grad_ptr);
  t->bf16_ptr = xcalloc((size_t)p->g->nnode + 1, sizeof *t->bf16_ptr);
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    strmap_put(&t->given, reserved[i], 1);
}

enum { D_PARAM, D_STATE, D_WORK, D_GRAD, D_BF16, D_NGROUP };

/* The declarations, a group at a time. */
void pointers_write(Text *t, Buf *out)
{
  static const char *const title[] = {
    [D_PARAM] = "parameters", [D_STATE] = "state",
    [D_WORK] = "values in c->work (values never live at once share bytes)", [D_GRAD] = "gradients",
    [D_BF16] = "bf16 copies (--precision bf16; NULL in fp32 mode)",
  };
  for (int d = 0; d < D_NGROUP; d++)
    if (t->decl[d].len)
      bprintf(out, "  /* %s */\n%s", title[d], bstr(&t->decl[d]));
}

void pointers_free(Text *t)
{
  free(t->node_ptr);
  free(t->grad_ptr);
  free(t->bf16_ptr);
  for (int d = 0; d < D_NGROUP; d++)
    bfree(&t->decl[d]);
}

/* base as a name no other pointer of run() has and nothing else there
 * means. */
static const char *unique(Text *t, const char *base)
{
  bool macro_like = true;   /* no lower-case letter: it could be a macro */
  for (const char *s = base; *s; s++)
    macro_like = macro_like && !(*s >= 'a' && *s <= 'z');
  bool other = macro_like || (*base >= '0' && *base <= '9');
  for (size_t i = 0; i < sizeof reserved_prefix / sizeof *reserved_prefix; i++)
    other = other || !strncmp(base, reserved_prefix[i], strlen(reserved_prefix[i]));
  if (other)
    base = arena_printf("v_%s", base);
  const char *name = base;
  int k = strmap_get(&t->next, base);
  for (k = k < 0 ? 2 : k; strmap_get(&t->given, name) >= 0; k++)
    name = arena_printf("%s_%d", base, k);
  strmap_put(&t->next, base, k);
  strmap_put(&t->given, name, 1);
  return name;
}

/* Declares  type name = init;  in group d with its comment; returns the
 * name, unique(base). */
static const char *declare(Text *t, int d, const char *type, const char *base, const char *init,
                           const char *comment)
{
  const char *name = unique(t, base);
  bprintf(&t->decl[d], "  %s%s = %s;   /* ", type, name, init);
  bcomment(&t->decl[d], comment);
  bprintf(&t->decl[d], " */\n");
  return name;
}

/* "w + 23714608", "c->param + 6655600", "c->state": a block and an offset in it. */
static const char *at(const char *block, size_t off)
{
  return off ? arena_printf("%s + %zu", block, off) : block;
}

/* The parameter whose block (or, for L_GRAD, whose gradient's) node id's
 * Loc is, or NULL for a view into one. */
static const Param *param_of(Prog *p, int id)
{
  Graph *g = p->g;
  Node *n = N(p, id);
  if (p->loc[id].kind == L_PARAM && n->op == OP_PARAM)
    return find_param(p->m->lay, n->a.name);
  if (p->loc[id].kind == L_GRAD && g->plan && g->plan->grad_out[id] >= 0)
    return find_param(p->m->lay, g->out[g->plan->grad_out[id]].name + 5);
  return NULL;
}

const char *grad_ptr(Text *t, const Param *q)
{
  int i = (int)(q - t->p->m->lay->param);
  if (!t->grad_ptr[i]) {
    t->uses_c = true;
    t->grad_ptr[i] = declare(t, D_GRAD, "real *", arena_printf("d_%s", kernel_ident(q->name)), at("c->grad", q->goff),
                             arena_printf("gradient of %s %s", q->name, shape_str(&q->shape)));
  }
  return t->grad_ptr[i];
}

const char *scratch_ptr(Text *t)
{
  if (!t->scratch_ptr) {
    t->uses_w = true;
    t->scratch_ptr = declare(t, D_WORK, "real *", "logit_block", at("w", t->p->g->plan->scratch_off),
                             arena_printf("the loss kernel's logits, %d columns at a time", LOGIT_BLOCK));
  }
  return t->scratch_ptr;
}

const char *targets_ptr(Text *t)
{
  if (!t->targets_ptr) {
    t->uses_w = true;
    t->targets_ptr = declare(t, D_WORK, "real *", "no_targets", at("w", t->p->g->plan->targets_off), "read as targets when run() gets none");
  }
  return t->targets_ptr;
}

/* The pointer to node id's bf16 copy: its shadow in c->work16, or a
 * parameter's (or a view's into one) in c->param16. */
const char *bf16_ptr(Text *t, int id)
{
  Prog *p = t->p;
  Node *n = N(p, id);
  if (t->bf16_ptr[id])
    return t->bf16_ptr[id];
  const Param *q = param_of(p, id);
  const char *scope = kernel_scope(p->g, id), *what = value_what(p->g, id);
  const char *base = q ? kernel_ident(q->name) : *scope ? arena_printf("%s_%s", scope, what) : what;
  const char *comment = arena_printf("%s %s in bf16", q ? q->name : "the value", shape_str(q ? &q->shape : &n->shape));
  size_t shadow = shadow16_of(p, id);
  t->uses_c = true;
  if (shadow != SIZE_MAX)
    t->bf16_ptr[id] = declare(t, D_BF16, "lmc_bf16 *", arena_printf("%s_bf16", base),
                              arena_printf("lmc_bf16_at(c->work16, %zu)", shadow), comment);
  else if (p->loc[id].kind == L_PARAM)
    t->bf16_ptr[id] = declare(t, D_BF16, "const lmc_bf16 *", arena_printf("%s_bf16", base),
                              arena_printf("lmc_bf16_at(c->param16, %zu)", p->loc[id].off), comment);
  else
    die("n%d has no bf16 copy", id);
  return t->bf16_ptr[id];
}

const char *scratch16_ptr(Text *t)
{
  if (!t->scratch16_ptr) {
    t->uses_c = true;
    t->scratch16_ptr = declare(t, D_BF16, "lmc_bf16 *", "bf16_scratch",
                               arena_printf("lmc_bf16_at(c->work16, %zu)", t->p->scratch16_off),
                               "products' operands rounded to bf16");
  }
  return t->scratch16_ptr;
}

/* The pointer to the buffer of node id (a Loc's node), declared at its
 * first use. */
static const char *node_ptr(Text *t, int id)
{
  Prog *p = t->p;
  Loc *l = &p->loc[id];
  Node *n = N(p, id);
  if (t->node_ptr[id])
    return t->node_ptr[id];
  const Param *q = param_of(p, id);
  const char *name;
  if (l->kind == L_GRAD && q) {
    name = grad_ptr(t, q);
  } else if (l->kind == L_PARAM && q) {
    t->uses_c = true;
    name = declare(t, D_PARAM, "const real *", kernel_ident(q->name), at("c->param", l->off),
                   arena_printf("%s %s", q->name, shape_str(&q->shape)));
  } else if (l->kind == L_STATE && n->op == OP_INPUT) {
    t->uses_c = true;
    name = declare(t, D_STATE, "real *", kernel_ident(n->a.name), at("c->state", l->off),
                   arena_printf("state %s %s", n->a.name, shape_str(&n->shape)));
  } else {
    /* a value in c->work, or a slice view into a block */
    const char *scope = kernel_scope(p->g, id), *what = value_what(p->g, id);
    const char *base = *scope ? arena_printf("%s_%s", scope, what) : what;
    const char *comment = arena_printf("%s%s, %s:%d", shape_str(&n->shape), l->stacked ? " per step" : "",
                                       n->file ? n->file : "?", n->line);
    static const char *const block[] = {[L_WORK] = "w", [L_PARAM] = "c->param", [L_GRAD] = "c->grad",
                                        [L_STATE] = "c->state"};
    if (l->kind == L_CONST)
      name = declare(t, D_WORK, "const real *", base, at(arena_printf("lmc_const%d", l->table), l->off), comment);
    else if (l->kind < L_WORK || l->kind > L_STATE)
      die("n%d has no storage", id);
    else {
      t->uses_w = t->uses_w || l->kind == L_WORK;
      t->uses_c = t->uses_c || l->kind != L_WORK;
      static const int group[] = {[L_WORK] = D_WORK, [L_PARAM] = D_PARAM, [L_GRAD] = D_GRAD, [L_STATE] = D_STATE};
      const char *init = at(block[l->kind], l->off);
      if (n->dtype == DT_I32)
        name = declare(t, group[l->kind], "int32_t *", base, arena_printf("(int32_t *)(%s)", init), comment);
      else
        name = declare(t, group[l->kind], l->kind == L_PARAM ? "const real *" : "real *", base, init, comment);
    }
  }
  return t->node_ptr[id] = name;
}

/* A pointer to node id's value as a C expression; tsel is the step
 * ("t", "(t - 1)") for stacked values read inside a loop, else NULL. */
Str ptr(Text *t, int id, const char *tsel)
{
  Loc *l = &t->p->loc[id];
  Str s = {""};
  switch (l->kind) {
  case L_TOKENS:
    t->uses_tokens = true;
    sprint(&s, "tokens");
    break;
  case L_TARGETS:
    sprint(&s, "targets");
    break;
  case L_CONST:
    if (!l->off) {
      sprint(&s, "lmc_const%d", l->table);
      break;
    }
    /* fall through */
  default:
    sprint(&s, "%s", node_ptr(t, l->node));
    break;
  }
  if (l->last) {
    t->uses_T = true;
    sprint(&s, " + (T - 1) * %s", mstr(t, l->step).s);
  }
  if (l->stacked && tsel)
    sprint(&s, " + %s * %s", tsel, mstr(t, l->step).s);
  return s;
}
