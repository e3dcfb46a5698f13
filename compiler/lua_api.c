/*
 * lua_api.c: the graph API a graph file calls (docs/graph-api.md).
 *
 * Tensors are full userdata holding a node index; their metatable gives
 * + - * / ^ and unary minus, fields shape, rank, dtype, and every op as a
 * method (x:tanh()).  An op checks its arguments (lua_args.c), points the
 * graph at the user's line (here) and builds its node through ir_op() and
 * friends, which check the shapes.  scope() names the layer of the nodes
 * built inside it; scan{} builds a loop over time.
 *
 * Dropout slots.  dropout(x, p [, slot]) names a hyper-parameter (default
 * "dropout", the only one that need not be declared) whose value is its
 * run-time probability; slots are numbered in
 * order of first use and stored in the node (a.id2 = number, a.name = name),
 * so later stages recover the slot table from the training graph's dropout
 * nodes.
 */
#include <limits.h>
#include <string.h>
#include "front.h"

/* ----------------------------------------------------------------- scopes */

/* scope(name, fn, ...) calls fn(...) with name as the scope of every node
 * built meanwhile (Node.scope: the layer that made it) and returns what fn
 * returns.  The name is whole ("encoder.layers.0.self_attn", as parameter
 * names are) and replaces the enclosing scope until fn returns or raises an
 * error: a to-be-closed guard on the C stack puts the enclosing one back,
 * so a pcall around a failing scope cannot leave it set.  Names are
 * checked as other names and interned: one arena string per distinct name,
 * at most LMC_MAX_NODES of them; scopes nest at most SCOPE_DEPTH_MAX deep. */
enum { SCOPE_DEPTH_MAX = 64 };
#define SCOPE_GUARD "lmc.scope"

static const char *intern_scope(lua_State *L, const char *name)
{
  Front *F = front(L);
  int k = strmap_get(&F->scope_ids, name);
  if (k >= 0)
    return F->scope_name[k];
  if (F->nscope_name == LMC_MAX_NODES)
    ferr(L, "scope: more than %d scope names", LMC_MAX_NODES);
  if (F->nscope_name == F->capscope_name) {
    F->capscope_name = F->capscope_name ? 2 * F->capscope_name : 64;
    F->scope_name = arena_realloc(F->scope_name, sizeof(char *) * (size_t)F->capscope_name);
  }
  const char *s = F->scope_name[F->nscope_name] = arena_strdup(name);
  strmap_put(&F->scope_ids, s, F->nscope_name++);
  return s;
}

/* The guard's __close: the enclosing scope again. */
static int l_scope_close(lua_State *L)
{
  Front *F = front(L);
  F->g->cur_scope = *(const char **)lua_touserdata(L, 1);
  F->scope_depth--;
  return 0;
}

static int l_scope(lua_State *L)
{
  Front *F = front(L);
  const char *name = check_name(L, 1, "scope", "the name");
  if (lua_type(L, 2) != LUA_TFUNCTION)
    ferr(L, "scope: the body must be a function, got %s", luaL_typename(L, 2));
  if (F->scope_depth == SCOPE_DEPTH_MAX)
    ferr(L, "scope: more than %d scopes inside one another", SCOPE_DEPTH_MAX);
  const char *inner = intern_scope(L, name);
  const char **outer = lua_newuserdatauv(L, sizeof *outer, 0);
  *outer = F->g->cur_scope;
  if (luaL_newmetatable(L, SCOPE_GUARD)) {
    lua_pushcfunction(L, l_scope_close);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  lua_rotate(L, 2, 1);       /* name, guard, fn, fn's arguments */
  lua_toclose(L, 2);
  F->g->cur_scope = inner;
  F->scope_depth++;
  lua_call(L, lua_gettop(L) - 3, LUA_MULTRET);
  return lua_gettop(L) - 2;
}

/* ------------------------------------------------------ tensor metatable */

static int unary(lua_State *L, Op op, const char *fn)
{
  int x = check_tensor(L, 1, fn);
  here(L);
  return push_tensor(L, ir_op1(graph(L), op, x, NULL));
}

static int binary(lua_State *L, Op op, const char *fn)
{
  if (!luaL_testudata(L, 1, TENSOR) && !luaL_testudata(L, 2, TENSOR))
    ferr(L, "%s: expected a tensor operand, got %s and %s", fn, type_of(L, 1), type_of(L, 2));
  int a = tensor_or_number(L, 1, fn);
  int b = tensor_or_number(L, 2, fn);
  here(L);
  return push_tensor(L, ir_op2(graph(L), op, a, b, NULL));
}

/* An op of the table with property P_LUA, called by its name, as a tensor
 * method or (with upvalue 2 true) as a metamethod: upvalue 1 is the op.
 * Lua passes __unm its operand twice; a call with more arguments than
 * the op has inputs is an error. */
static int l_elementwise(lua_State *L)
{
  Op op = (Op)lua_tointeger(L, lua_upvalueindex(1));
  const char *fn = op_info[op].name;
  int nin = op_info[op].nin;
  if (lua_toboolean(L, lua_upvalueindex(2)))
    lua_settop(L, nin);
  else if (lua_gettop(L) > nin)
    ferr(L, "%s: takes %d argument%s, got %d", fn, nin, nin == 1 ? "" : "s", lua_gettop(L));
  return nin == 1 ? unary(L, op, fn) : binary(L, op, fn);
}

static void push_elementwise(lua_State *L, Op op, bool meta)
{
  lua_pushinteger(L, op);
  lua_pushboolean(L, meta);
  lua_pushcclosure(L, l_elementwise, 2);
}

static int l_tostring(lua_State *L)
{
  TensorUD *t = luaL_checkudata(L, 1, TENSOR);
  Node *n = ir_get(graph(L), t->id);
  lua_pushfstring(L, "tensor %%%d %s %s %s", t->id, op_info[n->op].name,
                  dtype_text(n->dtype), shape_str(&n->shape));
  return 1;
}

static int l_newindex(lua_State *L)
{
  ferr(L, "tensors are read-only");
}

/* t.shape, t.rank, t.dtype, or a method: x:tanh() is tanh(x). */
static int l_index(lua_State *L)
{
  TensorUD *t = luaL_checkudata(L, 1, TENSOR);
  const char *k = lua_tostring(L, 2);
  Node *n = ir_get(graph(L), t->id);
  if (k && !strcmp(k, "shape")) {
    lua_createtable(L, n->shape.rank, 0);
    for (int i = 0; i < n->shape.rank; i++) {
      push_dim(L, &n->shape, i);
      lua_rawseti(L, -2, i + 1);
    }
    return 1;
  }
  if (k && !strcmp(k, "rank"))
    return lua_pushinteger(L, n->shape.rank), 1;
  if (k && !strcmp(k, "dtype"))
    return lua_pushstring(L, dtype_text(n->dtype)), 1;
  if (k && !strcmp(k, "op"))
    return lua_pushstring(L, op_info[n->op].name), 1;
  lua_getfield(L, LUA_REGISTRYINDEX, "lmc.methods");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL)
    return 1;
  ferr(L, "tensor has no field '%s' (fields: shape, rank, dtype, op, and the ops as methods)",
       k ? safe_text(k) : luaL_typename(L, 2));
}

/* ------------------------------------------------------------ seq() marker */

/* A size coef * T + off; it must not be negative at T = 1 (seq() - 1 is
 * empty there, seq() - 2 is an error). */
static int push_seq(lua_State *L, long long coef, long long off)
{
  if (coef < 1 || coef > INT_MAX || off < INT_MIN || off > INT_MAX)
    ferr(L, "seq(): size %lld*T%+lld out of range", coef, off);
  if (coef + off < 0)
    ferr(L, "seq(): %s%lld is negative when T = 1", coef == 1 ? "T" : arena_printf("%lld*T", coef), off);
  SeqUD *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->coef = (int)coef;
  s->off = (int)off;
  luaL_setmetatable(L, SEQDIM);
  return 1;
}

/* seq() and an integer, either way round, for the arithmetic of sizes:
 * the integer's argument index in *other. */
static SeqUD *seq_operands(lua_State *L, const char *op, long long *k)
{
  SeqUD *s = luaL_testudata(L, 1, SEQDIM);
  int other = s ? 2 : 1;
  if (!s)
    s = luaL_testudata(L, 2, SEQDIM);
  if (luaL_testudata(L, other, SEQDIM))
    ferr(L, "seq() %s seq(): a dimension can hold T only once", op);
  *k = check_int(L, other, "seq()", arena_printf("the other operand of %s", op));
  return s;
}

static int l_seq_mul(lua_State *L)
{
  long long k;
  SeqUD *s = seq_operands(L, "*", &k);
  if (k < 1 || k > INT_MAX)
    ferr(L, "seq(): multiplier %lld out of range", k);
  return push_seq(L, k * s->coef, k * s->off);
}

static int l_seq_add(lua_State *L)
{
  long long k;
  SeqUD *s = seq_operands(L, "+", &k);
  if (k < INT_MIN || k > INT_MAX)
    ferr(L, "seq(): %lld out of range", k);
  return push_seq(L, s->coef, s->off + k);
}

static int l_seq_sub(lua_State *L)
{
  if (!luaL_testudata(L, 1, SEQDIM))
    ferr(L, "seq(): %s - seq() is not a size (seq() - k is)",
         lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1) : type_of(L, 1));
  long long k;
  SeqUD *s = seq_operands(L, "-", &k);
  if (k < INT_MIN + 1LL || k > INT_MAX)
    ferr(L, "seq(): %lld out of range", k);
  return push_seq(L, s->coef, s->off - k);
}

static int l_seq_tostring(lua_State *L)
{
  SeqUD *s = luaL_checkudata(L, 1, SEQDIM);
  Shape d = {.rank = 1, .dim = {s->coef}, .seq = 1, .off = {s->off}};
  lua_pushstring(L, dim_str(&d, 0));
  return 1;
}

static int l_seq(lua_State *L)
{
  front(L)->builtins_used = true;
  return push_seq(L, 1, 0);
}

/* ------------------------------------------------------------ the graph API */

static int l_kind(lua_State *L)
{
  const char *k = check_name(L, 1, "kind", "the model kind");
  graph(L)->kind = arena_strdup(k);
  return 0;
}

static int l_batch(lua_State *L)
{
  front(L)->builtins_used = true;
  lua_pushinteger(L, graph(L)->batch);
  return 1;
}

static int l_training(lua_State *L)
{
  lua_pushboolean(L, front(L)->o->training);
  return 1;
}

static DType check_dtype(lua_State *L, int arg, const char *fn)
{
  const char *d = check_str(L, arg, fn, "dtype");
  if (!strcmp(d, "i32"))
    return DT_I32;
  if (!strcmp(d, "f32"))
    return graph(L)->real;
  ferr(L, "%s: dtype must be \"i32\" or \"f32\", got %s", fn, shown_arg(L, arg));
}

static int l_input(lua_State *L)
{
  const char *name = check_name(L, 1, "input", "the name");
  DType dt = check_dtype(L, 2, "input");
  Shape s = check_shape(L, 3, "input", false);
  here(L);
  return push_tensor(L, ir_input(graph(L), arena_strdup(name), dt, s, false));
}

static int l_state(lua_State *L)
{
  const char *name = check_name(L, 1, "state", "the name");
  Shape s = check_shape(L, 2, "state", false);
  here(L);
  return push_tensor(L, ir_input(graph(L), arena_strdup(name), graph(L)->real, s, true));
}

static int l_param(lua_State *L)
{
  const char *name = check_name(L, 1, "param", "the name");
  Shape s = check_shape(L, 2, "param", false);
  Init init = INIT_ZERO;
  double a = 0;
  if (lua_type(L, 3) == LUA_TSTRING) {
    const char *i = lua_tostring(L, 3);
    if (!strcmp(i, "zeros"))
      init = INIT_ZERO;
    else if (!strcmp(i, "ones"))
      init = INIT_ONE;
    else if (!strcmp(i, "xavier"))
      init = INIT_XAVIER;
    else
      ferr(L, "param '%s': unknown init %s (expected \"zeros\", \"ones\", \"xavier\", "
           "{ uniform = a } or { normal = std })", name, shown_arg(L, 3));
  } else if (lua_istable(L, 3)) {
    check_opts(L, 3, "param", (const char *const[]){"uniform", "normal", NULL});
    lua_getfield(L, 3, "uniform");
    lua_getfield(L, 3, "normal");
    bool normal = !lua_isnil(L, -1);
    if (normal == !lua_isnil(L, -2))
      ferr(L, "param '%s': an init table holds one of uniform = a or normal = std", name);
    if (lua_type(L, -1 - !normal) != LUA_TNUMBER || !(lua_tonumber(L, -1 - !normal) > 0))
      ferr(L, "param '%s': %s needs a positive number", name, normal ? "{ normal = std }" : "{ uniform = a }");
    init = normal ? INIT_NORMAL : INIT_UNIFORM;
    a = lua_tonumber(L, -1 - !normal);
    lua_pop(L, 2);
  } else {
    ferr(L, "param '%s': init must be \"zeros\", \"ones\", \"xavier\", { uniform = a } or "
         "{ normal = std }, got %s", name, type_of(L, 3));
  }
  here(L);
  return push_tensor(L, ir_param(graph(L), arena_strdup(name), s, init, a));
}

static int l_find_param(lua_State *L)
{
  const char *name = check_name(L, 1, "find_param", "the name");
  int id = ir_find_param(graph(L), name);
  if (id < 0)
    return lua_pushnil(L), 1;
  return push_tensor(L, id);
}

/* alias(name, p): p is also known as name in checkpoints (a tied weight:
 * decoder.weight is encoder.weight).  Recorded as output "alias:<name>". */
static int l_alias(lua_State *L)
{
  const char *name = check_name(L, 1, "alias", "the name");
  int p = check_tensor(L, 2, "alias");
  if (ir_get(graph(L), p)->op != OP_PARAM)
    ferr(L, "alias '%s': expected a parameter, got a %s node", name, op_info[ir_get(graph(L), p)->op].name);
  if (ir_find_param(graph(L), name) >= 0)
    ferr(L, "alias '%s': a parameter of that name exists", name);
  here(L);
  ir_output(graph(L), arena_printf("alias:%s", name), p);
  return 0;
}

static int l_output(lua_State *L)
{
  const char *name = check_name(L, 1, "output", "the name");
  int x = check_tensor(L, 2, "output");
  here(L);
  ir_output(graph(L), arena_strdup(name), x);
  return 0;
}

static int l_const(lua_State *L)
{
  double v = check_num(L, 1, "const", "the value");
  here(L);
  return push_tensor(L, ir_const(graph(L), v));
}

static int matmul_like(lua_State *L, Op op, const char *fn)
{
  int a = check_tensor(L, 1, fn), b = check_tensor(L, 2, fn);
  check_opts(L, 3, fn, (const char *const[]){"ta", "tb", NULL});
  Attr at = {.ta = opt_bool(L, 3, fn, "ta"), .tb = opt_bool(L, 3, fn, "tb")};
  here(L);
  if (op == OP_BMM && front(L)->o->kv_cache) {   /* keys and values from a cache (kv_cache.c) */
    int w = kv_cache_rows(graph(L), b, front(L)->nkv);
    front(L)->nkv += w != b;
    b = w;
  }
  return push_tensor(L, ir_op2(graph(L), op, a, b, &at));
}

static int l_matmul(lua_State *L)
{
  return matmul_like(L, OP_MATMUL, "matmul");
}

static int l_bmm(lua_State *L)
{
  return matmul_like(L, OP_BMM, "bmm");
}

static int l_embedding(lua_State *L)
{
  int w = check_tensor(L, 1, "embedding"), idx = check_tensor(L, 2, "embedding");
  here(L);
  return push_tensor(L, ir_op2(graph(L), OP_EMBEDDING, w, idx, NULL));
}

static int slot_of(Front *F, const char *name)
{
  for (int i = 0; i < F->nslot; i++)
    if (!strcmp(F->slot[i], name))
      return i;
  if (F->nslot == F->capslot) {
    F->capslot = F->capslot ? 2 * F->capslot : 4;
    F->slot = xrealloc(F->slot, sizeof(char *) * (size_t)F->capslot);
  }
  F->slot[F->nslot] = arena_strdup(name);
  return F->nslot++;
}

/* dropout(x, p [, slot]): x itself unless training.  The default slot
 * "dropout" need not be declared; any other must be a numeric
 * hyper-parameter. */
static int l_dropout(lua_State *L)
{
  Front *F = front(L);
  int x = check_tensor(L, 1, "dropout");
  double p = check_num(L, 2, "dropout", "the probability");
  const char *slot = lua_isnoneornil(L, 3) ? "dropout" : check_name(L, 3, "dropout", "the slot");
  Hyp *h = find_hyp(F, slot);
  if ((h || strcmp(slot, "dropout")) && (!h || (h->type != HT_NUM && h->type != HT_INT)))
    ferr(L, "dropout: slot '%s' must name a numeric hyper-parameter declared with params{}", slot);
  if (!(p >= 0 && p < 1))
    ferr(L, "dropout: probability %g is not in [0, 1)", p);
  if (!F->o->training) {
    lua_settop(L, 1);
    return 1;
  }
  Attr a = {.f = p, .id = F->g->ndropout, .id2 = slot_of(F, slot)};
  a.name = F->slot[a.id2];
  here(L);
  int id = ir_op1(F->g, OP_DROPOUT, x, &a);
  F->g->ndropout++;
  return push_tensor(L, id);
}

static int last_dim_op(lua_State *L, Op op, const char *fn)
{
  int x = check_tensor(L, 1, fn);
  Attr a = {.axis = ir_get(graph(L), x)->shape.rank - 1};
  if (op == OP_NORMALIZE)
    a.f = lua_isnoneornil(L, 2) ? 1e-5 : check_num(L, 2, fn, "eps");
  here(L);
  return push_tensor(L, ir_op1(graph(L), op, x, &a));
}

static int l_softmax(lua_State *L)
{
  return last_dim_op(L, OP_SOFTMAX, "softmax");
}

static int l_log_softmax(lua_State *L)
{
  return last_dim_op(L, OP_LOG_SOFTMAX, "log_softmax");
}

static int l_normalize(lua_State *L)
{
  return last_dim_op(L, OP_NORMALIZE, "normalize");
}

static int l_nll_loss(lua_State *L)
{
  int x = check_tensor(L, 1, "nll_loss"), t = check_tensor(L, 2, "nll_loss");
  here(L);
  return push_tensor(L, ir_op2(graph(L), OP_NLL_LOSS, x, t, NULL));
}

static int shape_op(lua_State *L, Op op, const char *fn)
{
  int x = check_tensor(L, 1, fn);
  Attr a = {.shape = check_shape(L, 2, fn, op == OP_RESHAPE)};
  here(L);
  return push_tensor(L, ir_op1(graph(L), op, x, &a));
}

static int l_sum(lua_State *L)
{
  return shape_op(L, OP_SUM, "sum");
}

static int l_broadcast(lua_State *L)
{
  return shape_op(L, OP_BROADCAST, "broadcast");
}

static int l_reshape(lua_State *L)
{
  return shape_op(L, OP_RESHAPE, "reshape");
}

/* An axis, 0-based, negative counting from the end as in PyTorch. */
static int check_axis(lua_State *L, int arg, const char *fn, int rank)
{
  long long ax = check_int(L, arg, fn, "the axis");
  if (ax < -rank || ax >= rank)
    ferr(L, "%s: axis %lld out of range for a tensor of rank %d (axes are 0-based)", fn, ax, rank);
  return (int)(ax < 0 ? ax + rank : ax);
}

/* mean(x) over every element (a scalar), mean(x, dim [, keepdim]) over one
 * dimension as torch.mean: sum(x) / n.  The sequence dimension's length is
 * known only at run time, so it cannot be averaged over. */
static int l_mean(lua_State *L)
{
  int x = check_tensor(L, 1, "mean");
  Shape in = ir_get(graph(L), x)->shape, kept = in, out = {0};
  int64_t n = 1;
  bool all = lua_isnoneornil(L, 2);
  int axis = all ? -1 : check_axis(L, 2, "mean", in.rank);
  if (!lua_isnoneornil(L, 3) && !lua_isboolean(L, 3))
    ferr(L, "mean: keepdim must be a boolean, got %s", type_of(L, 3));
  if (all && !lua_isnoneornil(L, 3))
    ferr(L, "mean: keepdim needs a dim");
  for (int i = 0; i < in.rank; i++) {
    if (!all && i != axis) {
      out.dim[out.rank] = in.dim[i];
      out.seq |= (in.seq >> i & 1u) << out.rank++;
      continue;
    }
    if (in.seq >> i & 1)
      ferr(L, "mean: cannot average over dimension %d of %s, the sequence (its length is known only at "
           "run time)", i, shape_str(&in));
    n *= in.dim[i];
    kept.dim[i] = 1;
  }
  here(L);
  int y = ir_op1(graph(L), OP_SUM, x, &(Attr){.shape = all ? out : kept});
  y = ir_op2(graph(L), OP_DIV, y, ir_const(graph(L), (double)n), NULL);
  if (!all && !lua_toboolean(L, 3))
    y = ir_op1(graph(L), OP_RESHAPE, y, &(Attr){.shape = out});
  return push_tensor(L, y);
}

/* where(cond, a, b): a where cond is not 0, else b, as torch.where (cond a
 * 0/1 mask such as a comparison's); a, b tensors or numbers, broadcast.
 * Built as keep_if(cond, a) + keep_unless(cond, b), exact for every value:
 * the element not taken is -0.0.  cond gets no gradient. */
static int l_where(lua_State *L)
{
  int c = check_tensor(L, 1, "where");
  int a = tensor_or_number(L, 2, "where"), b = tensor_or_number(L, 3, "where");
  here(L);
  Graph *g = graph(L);
  int y = ir_op2(g, OP_ADD, ir_op2(g, OP_KEEP_IF, c, a, NULL), ir_op2(g, OP_KEEP_UNLESS, c, b, NULL), NULL);
  return push_tensor(L, y);
}

/* transpose(x, {perm}) permutes like torch.permute; transpose(x, i, j)
 * swaps two axes like torch.transpose.  Axes are 0-based. */
static int l_transpose(lua_State *L)
{
  int x = check_tensor(L, 1, "transpose");
  int rank = ir_get(graph(L), x)->shape.rank;
  Attr a = {0};
  if (lua_istable(L, 2)) {
    if (lua_gettop(L) > 2)
      ferr(L, "transpose: a permutation { perm } takes no further argument, got %d arguments", lua_gettop(L));
    if (luaL_len(L, 2) != rank)
      ferr(L, "transpose: permutation has %d entries for a tensor of rank %d",
           (int)luaL_len(L, 2), rank);
    unsigned seen = 0;
    for (int i = 0; i < rank; i++) {
      lua_geti(L, 2, i + 1);
      int p = check_axis(L, lua_gettop(L), "transpose", rank);
      lua_pop(L, 1);
      if (seen >> p & 1)
        ferr(L, "transpose: axis %d appears twice in the permutation", p);
      seen |= 1u << p;
      a.perm[i] = p;
    }
  } else {
    int i = check_axis(L, 2, "transpose", rank), j = check_axis(L, 3, "transpose", rank);
    for (int k = 0; k < rank; k++)
      a.perm[k] = k;
    a.perm[i] = j;
    a.perm[j] = i;
  }
  here(L);
  return push_tensor(L, ir_op1(graph(L), OP_TRANSPOSE, x, &a));
}

/* slice(x, axis, start, len): len an integer or a size in seq() (T, k*T,
 * T - 1). */
static int l_slice(lua_State *L)
{
  int x = check_tensor(L, 1, "slice");
  Attr a = {.axis = check_axis(L, 2, "slice", ir_get(graph(L), x)->shape.rank)};
  long long start = check_int(L, 3, "slice", "the start");
  if (start < 0 || start > INT_MAX)
    ferr(L, "slice: start %lld is negative or too large (starts are 0-based)", start);
  a.start = (int)start;
  SeqUD *s = luaL_testudata(L, 4, SEQDIM);
  if (s) {
    a.len = -s->coef;
    a.len_off = s->off;
  } else {
    long long len = check_int(L, 4, "slice", "the length (an integer or seq())");
    if (len < 1 || len > INT_MAX)
      ferr(L, "slice: length %lld must be positive", len);
    a.len = (int)len;
  }
  here(L);
  if (front(L)->o->kv_cache && a.len == -1 && a.start == 0 && !ir_get(graph(L), x)->shape.seq) {
    /* kv_cache.c: rows pos .. pos + T - 1 of the first max_seq, which
     * fold-constants folds as it folds the gen program's slice */
    int head = ir_op1(graph(L), OP_SLICE, x, &(Attr){.axis = a.axis, .len = graph(L)->max_seq});
    return push_tensor(L, ir_op1(graph(L), OP_SLICE_POS, head, &(Attr){.axis = a.axis}));
  }
  return push_tensor(L, ir_op1(graph(L), OP_SLICE, x, &a));
}

/* Entry i of concat's list: a tensor. */
static int concat_entry(lua_State *L, lua_Integer i)
{
  lua_geti(L, 1, i);
  if (!luaL_testudata(L, -1, TENSOR))
    ferr(L, "concat: entry %lld of the list must be a tensor, got %s", (long long)i, type_of(L, -1));
  int id = ((TensorUD *)lua_touserdata(L, -1))->id;
  lua_pop(L, 1);
  return id;
}

/* concat(a, b, axis) or concat({a, b, ...}, axis), any number of tensors:
 * a chain of two-input concats. */
static int l_concat(lua_State *L)
{
  bool list = lua_istable(L, 1) && !luaL_testudata(L, 1, TENSOR);
  if (list && lua_gettop(L) > 2)
    ferr(L, "concat: a list { a, b, ... } takes only the axis after it, got %d arguments", lua_gettop(L));
  lua_Integer n = list ? luaL_len(L, 1) : 2;
  if (n < 1)
    ferr(L, "concat: expected a list of tensors, got an empty one");
  int first = list ? concat_entry(L, 1) : check_tensor(L, 1, "concat");
  int axis = check_axis(L, list ? 2 : 3, "concat", ir_get(graph(L), first)->shape.rank);
  int acc = first;
  for (lua_Integer i = 2; i <= n; i++) {
    int next = list ? concat_entry(L, i) : check_tensor(L, 2, "concat");
    here(L);
    acc = ir_op2(graph(L), OP_CONCAT, acc, next, &(Attr){.axis = axis});
  }
  return push_tensor(L, acc);
}

/* arange(n [, start [, step]]): start + i * step for i < n; n may be seq(). */
static int l_arange(lua_State *L)
{
  Attr a = {.shape = {.rank = 1}};
  SeqUD *s = luaL_testudata(L, 1, SEQDIM);
  if (s) {
    if (s->off)
      ferr(L, "arange: the length is seq() or k * seq(), not a shifted size");
    a.shape.dim[0] = s->coef;
    a.shape.seq = 1;
  } else {
    long long n = check_int(L, 1, "arange", "the length");
    if (n < 1 || n > INT_MAX)
      ferr(L, "arange: length %lld must be positive", n);
    a.shape.dim[0] = (int)n;
  }
  a.f = lua_isnoneornil(L, 2) ? 0 : check_num(L, 2, "arange", "the start");
  a.f2 = lua_isnoneornil(L, 3) ? 1 : check_num(L, 3, "arange", "the step");
  here(L);
  return push_tensor(L, ir_op(graph(L), OP_ARANGE, 0, NULL, &a));
}

static int l_triu_mask(lua_State *L)
{
  here(L);
  return push_tensor(L, ir_op(graph(L), front(L)->o->kv_cache ? OP_CAUSAL_MASK : OP_TRIU_MASK, 0, NULL, NULL));
}

/* Reads list field `key` of the scan table (a tensor alone is a list of
 * one) into ids; returns the count. */
static int scan_list(lua_State *L, const char *key, int *ids, int max)
{
  lua_getfield(L, 1, key);
  int n = 0;
  if (luaL_testudata(L, -1, TENSOR)) {
    ids[n++] = ((TensorUD *)lua_touserdata(L, -1))->id;
  } else if (lua_istable(L, -1)) {
    n = (int)luaL_len(L, -1);
    if (n > max)
      ferr(L, "scan: %s has %d entries; at most %d", key, n, max);
    for (int i = 0; i < n; i++) {
      lua_geti(L, -1, i + 1);
      if (!luaL_testudata(L, -1, TENSOR))
        ferr(L, "scan: %s[%d] must be a tensor, got %s", key, i + 1, type_of(L, -1));
      ids[i] = ((TensorUD *)lua_touserdata(L, -1))->id;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    ferr(L, "scan: %s must be a list of tensors, got %s", key, type_of(L, -1));
  }
  lua_pop(L, 1);
  return n;
}

/* Reads the body's result at stack index idx (a list of tensors, a tensor,
 * or nil for none) into ids. */
static int body_list(lua_State *L, int idx, const char *what, int *ids, int max)
{
  if (lua_isnil(L, idx))
    return 0;
  if (luaL_testudata(L, idx, TENSOR)) {
    ids[0] = ((TensorUD *)lua_touserdata(L, idx))->id;
    return 1;
  }
  if (!lua_istable(L, idx))
    ferr(L, "scan: the body must return two lists, {outputs...}, {next states...}; its %s is a %s",
         what, type_of(L, idx));
  int n = (int)luaL_len(L, idx);
  if (n > max)
    ferr(L, "scan: the body returned %d %s; at most %d", n, what, max);
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    if (!luaL_testudata(L, -1, TENSOR))
      ferr(L, "scan: the body's %s %d is a %s, expected a tensor", what, i + 1, type_of(L, -1));
    ids[i] = ((TensorUD *)lua_touserdata(L, -1))->id;
    lua_pop(L, 1);
  }
  return n;
}

enum { MAXSCAN = 32 };

/* The loop a value the body returns (its `what` i) belongs to: its own
 * loop, or 0 for a tensor built outside every body (a weight, the initial
 * state, a constant); a tensor of another scan's body is an error. */
static int body_value(lua_State *L, int loop, int id, const char *what, int i)
{
  int k = ir_get(front(L)->g, id)->loop;
  if (k != 0 && k != loop)
    ferr(L, "scan: %s %d of the body was computed in another scan's body", what, i + 1);
  return k;
}

/* scan { xs = {...}, init = {...}, reverse = false, body = function(x..., s...)
 *        return {y...}, {s_next...} end }  ->  {Y...}, {s_final...} */
static int l_scan(lua_State *L)
{
  Front *F = front(L);
  Graph *g = F->g;
  if (!lua_istable(L, 1))
    ferr(L, "scan: expected a table { xs = ..., init = ..., body = function ... end }");
  check_opts(L, 1, "scan", (const char *const[]){"xs", "init", "reverse", "body", NULL});
  if (F->in_scan)
    ferr(L, "scan: a scan inside a scan body is not supported");
  int xs[MAXSCAN], init[MAXSCAN], ys[MAXSCAN], next[MAXSCAN];
  int nx = scan_list(L, "xs", xs, MAXSCAN);
  int ns = scan_list(L, "init", init, MAXSCAN);
  lua_getfield(L, 1, "reverse");
  bool reverse = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "body");
  if (!lua_isfunction(L, -1))
    ferr(L, "scan: body must be a function, got %s", type_of(L, -1));
  if (nx == 0)
    ferr(L, "scan: xs is empty; a scan needs at least one sequence input (T, ...)");
  for (int i = 0; i < nx; i++) {
    Node *n = ir_get(g, xs[i]);
    if (n->shape.rank < 1 || !(n->shape.seq & 1) || n->shape.dim[0] != 1 || n->shape.off[0])
      ferr(L, "scan: xs[%d] has shape %s; its first dimension must be the sequence (T)", i + 1,
           shape_str(&n->shape));
  }
  here(L);
  int loop = ir_loop_begin(g, reverse);
  int carry[MAXSCAN];
  for (int i = 0; i < nx; i++)
    push_tensor(L, ir_step(g, xs[i]));
  for (int i = 0; i < ns; i++)
    push_tensor(L, carry[i] = ir_carry(g, init[i]));
  F->in_scan++;
  call(L, nx + ns, 2);
  F->in_scan--;
  int top = lua_gettop(L);
  int ny = body_list(L, top - 1, "outputs", ys, MAXSCAN);
  int nn = body_list(L, top, "next states", next, MAXSCAN);
  if (nn != ns)
    ferr(L, "scan: the body returned %d next state%s for %d initial state%s", nn,
         nn == 1 ? "" : "s", ns, ns == 1 ? "" : "s");
  here(L);
  for (int i = 0; i < ny; i++) {
    if (body_value(L, loop, ys[i], "output", i) != 0)
      continue;
    const Shape *s = &ir_get(g, ys[i])->shape;
    if (s->seq)
      ferr(L, "scan: output %d of the body is a tensor from outside the body whose shape %s "
           "depends on the sequence; a per-step output cannot", i + 1, shape_str(s));
    ys[i] = ir_body_copy(g, ys[i]);   /* the same value at every step */
  }
  for (int i = 0; i < ns; i++) {
    Node *c = ir_get(g, carry[i]), *n = ir_get(g, next[i]);
    body_value(L, loop, next[i], "next state", i);
    if (!shape_eq(&c->shape, &n->shape))
      ferr(L, "scan: next state %d has shape %s, but its initial state has shape %s", i + 1,
           shape_str(&n->shape), shape_str(&c->shape));
    ir_carry_next(g, carry[i], next[i]);
  }
  ir_loop_end(g);
  lua_createtable(L, ny, 0);
  for (int i = 0; i < ny; i++) {
    push_tensor(L, ir_stack(g, ys[i]));
    lua_rawseti(L, -2, i + 1);
  }
  lua_createtable(L, ns, 0);
  for (int i = 0; i < ns; i++) {
    push_tensor(L, ir_final(g, carry[i]));
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

/* The tensor ops, also methods of tensors; with them the P_LUA ops of the
 * op table (add_elementwise). */
static const Api tensor_ops[] = {
  {"matmul", l_matmul, 3, "matmul(a, b [, { ta = bool, tb = bool }])"},
  {"bmm", l_bmm, 3, "bmm(a, b [, { ta = bool, tb = bool }])"},
  {"embedding", l_embedding, 2, "embedding(weight, indices)"},
  {"dropout", l_dropout, 3, "dropout(x, p [, slot])"},
  {"softmax", l_softmax, 1, "softmax(x), along the last dimension"},
  {"log_softmax", l_log_softmax, 1, "log_softmax(x), along the last dimension"},
  {"normalize", l_normalize, 2, "normalize(x [, eps]), along the last dimension"},
  {"nll_loss", l_nll_loss, 2, "nll_loss(logp, targets)"},
  {"sum", l_sum, 2, "sum(x, shape)"},
  {"mean", l_mean, 3, "mean(x [, dim [, keepdim]])"},
  {"broadcast", l_broadcast, 2, "broadcast(x, shape)"},
  {"reshape", l_reshape, 2, "reshape(x, shape)"},
  {"transpose", l_transpose, 3, "transpose(x, { perm }) or transpose(x, i, j)"},
  {"slice", l_slice, 4, "slice(x, axis, start, len)"},
  {"concat", l_concat, 3, "concat(a, b, axis) or concat({ a, b, ... }, axis)"},
  {"where", l_where, 3, "where(cond, a, b)"},
  {NULL, NULL, 0, NULL},
};

static const Api graph_api[] = {
  {"params", l_params, 1, "params { name = default, ... }"},
  {"kind", l_kind, 1, "kind(name)"},
  {"seq", l_seq, 0, "seq()"},
  {"batch", l_batch, 0, "batch()"},
  {"training", l_training, 0, "training()"},
  {"input", l_input, 3, "input(name, dtype, shape)"},
  {"state", l_state, 2, "state(name, shape)"},
  {"param", l_param, 3, "param(name, shape, init)"},
  {"find_param", l_find_param, 1, "find_param(name)"},
  {"alias", l_alias, 2, "alias(name, param)"},
  {"output", l_output, 2, "output(name, x)"},
  {"const", l_const, 1, "const(value)"},
  {"arange", l_arange, 3, "arange(n [, start [, step]])"},
  {"triu_mask", l_triu_mask, 0, "triu_mask()"},
  {"scan", l_scan, 1, "scan { xs = ..., init = ..., body = function ... end }"},
  {"scope", l_scope, -1, "scope(name, fn, ...)"},
  {NULL, NULL, 0, NULL},
};

/* The P_LUA ops as functions of their names in the table at -2 (the
 * globals) and the table at -1 (the methods), one function in both. */
static void add_elementwise(lua_State *L)
{
  for (int op = 0; op < NOPS; op++) {
    if (!op_is(op, P_LUA))
      continue;
    push_elementwise(L, op, false);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, op_info[op].name);
    lua_setfield(L, -3, op_info[op].name);
  }
}

void open_api(lua_State *L)
{
  lua_pushglobaltable(L);
  set_api(L, tensor_ops);
  set_api(L, graph_api);
  lua_newtable(L);
  set_api(L, tensor_ops);
  add_elementwise(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "lmc.methods");
  lua_pop(L, 1);

  static const luaL_Reg meta[] = {
    {"__index", l_index}, {"__newindex", l_newindex},
    {"__tostring", l_tostring}, {NULL, NULL},
  };
  static const struct { const char *event; Op op; } arith[] = {
    {"__add", OP_ADD}, {"__sub", OP_SUB}, {"__mul", OP_MUL}, {"__div", OP_DIV}, {"__unm", OP_NEG},
    {"__pow", OP_POW},
  };
  luaL_newmetatable(L, TENSOR);
  luaL_setfuncs(L, meta, 0);
  for (size_t i = 0; i < sizeof arith / sizeof *arith; i++) {
    push_elementwise(L, arith[i].op, true);
    lua_setfield(L, -2, arith[i].event);
  }
  lua_pushliteral(L, "tensor");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  static const luaL_Reg seqmeta[] = {
    {"__mul", l_seq_mul}, {"__add", l_seq_add}, {"__sub", l_seq_sub},
    {"__tostring", l_seq_tostring}, {NULL, NULL},
  };
  luaL_newmetatable(L, SEQDIM);
  luaL_setfuncs(L, seqmeta, 0);
  lua_pushliteral(L, "seq");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);

  /* strict globals: must come last */
  lua_pushglobaltable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_unknown_global);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}
