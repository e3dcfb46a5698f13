/*
 * lua_params.c: a graph file's hyper-parameters, params{...} and -D.
 *
 * params{...} declares names with defaults; -D name=value
 * overrides them, parsed as the default's type.  The built-ins bptt (35),
 * batch_size (20) and eval_batch_size (10) always exist.  The graph's
 * max_seq is the bound bptt (o->max_seq > 0 forces another value); batch()
 * is o->batch when positive, the bound batch_size when o->batch is 0 and the
 * bound eval_batch_size when it is -1.  *hyper lists every hyper-parameter:
 * the built-ins first, then each params{} call's names in alphabetical
 * order (a Lua table constructor does not keep the order it was written
 * in).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "front.h"

static const char *htype_name(HType t)
{
  static const char *const n[] = {"an integer", "a number", "a boolean (true or false)",
                                  "a string (at most 1024 bytes of printable text)"};
  return n[t];
}

static char *format_number(double d)
{
  char buf[64];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      break;
  }
  if (isfinite(d) && !strpbrk(buf, ".e"))
    strcat(buf, ".0");
  return xstrdup(buf);
}

Hyp *find_hyp(Front *F, const char *name)
{
  for (int i = 0; i < F->nhyp; i++)
    if (!strcmp(F->hyp[i].name, name))
      return &F->hyp[i];
  return NULL;
}

/* In the arena: an error message's part, which a caught error never frees. */
static char *known_names(Front *F)
{
  size_t n = 1;
  for (int i = 0; i < F->nhyp; i++)
    n += strlen(F->hyp[i].name) + 2;
  char *s = arena_calloc(n, 1);
  for (int i = 0; i < F->nhyp; i++) {
    if (i)
      strcat(s, ", ");
    strcat(s, F->hyp[i].name);
  }
  return s;
}

/* Binds h from -D name=value if given (the last one wins); false if the
 * text does not parse as h's type.  */
static bool bind_define(Front *F, Hyp *h, const char **bad)
{
  const Define *d = NULL;
  for (int i = 0; i < F->o->ndef; i++)
    if (!strcmp(F->o->def[i].name, h->name)) {
      d = &F->o->def[i];
      F->def_used[i] = true;
    }
  if (!d)
    return true;
  const char *v = d->value;
  char *end;
  *bad = v;
  switch (h->type) {
  case HT_INT: {
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno)
      return false;
    h->i = x;
    break;
  }
  case HT_NUM: {
    double x = strtod(v, &end);
    if (!*v || *end || isspace((unsigned char)*v))
      return false;
    h->d = x;
    break;
  }
  case HT_BOOL:
    if (strcmp(v, "true") && strcmp(v, "false"))
      return false;
    h->b = !strcmp(v, "true");
    break;
  case HT_STR:
    if (value_problem(v, strlen(v)))
      return false;
    free(h->s);
    h->s = xstrdup(v);
    break;
  }
  free(h->text);
  h->text = xstrdup(v);
  h->from_def = true;
  return true;
}

static void define_error(Front *F, Hyp *h, const char *value)
{
  char msg[512];
  snprintf(msg, sizeof msg, "-D %s=%s: expected %s", h->name, value, htype_name(h->type));
  fail_at(F->path, 0, msg);
}

static Hyp *add_hyp(Front *F, const char *name)
{
  if (F->nhyp == F->caphyp) {
    F->caphyp = F->caphyp ? 2 * F->caphyp : 16;
    F->hyp = xrealloc(F->hyp, sizeof(Hyp) * (size_t)F->caphyp);
  }
  Hyp *h = &F->hyp[F->nhyp++];
  memset(h, 0, sizeof *h);
  h->name = xstrdup(name);
  return h;
}

static void set_text(Hyp *h)
{
  free(h->text);
  switch (h->type) {
  case HT_INT: h->text = xasprintf("%lld", h->i); break;
  case HT_NUM: h->text = format_number(h->d); break;
  case HT_BOOL: h->text = xstrdup(h->b ? "true" : "false"); break;
  case HT_STR: h->text = xstrdup(h->s); break;
  }
}

void declare_builtin(Front *F, const char *name, long long def)
{
  Hyp *h = add_hyp(F, name);
  h->type = HT_INT;
  h->i = def;
  h->builtin = true;
  set_text(h);
  const char *bad;
  if (!bind_define(F, h, &bad))
    define_error(F, h, bad);
  if (h->i < 1) {
    char msg[256];
    snprintf(msg, sizeof msg, "-D %s=%s: must be at least 1", name, h->text);
    fail_at(F->path, 0, msg);
  }
  if (h->i > 1 << 30) {   /* an int, even times the evaluation span */
    char msg[256];
    snprintf(msg, sizeof msg, "-D %s=%s: must be at most %d", name, h->text, 1 << 30);
    fail_at(F->path, 0, msg);
  }
}

static long long builtin(Front *F, const char *name)
{
  return find_hyp(F, name)->i;
}

/* The graph's batch and max_seq from the bound built-ins. */
void apply_builtins(Front *F)
{
  int b = F->o->batch;
  F->g->batch = b > 0 ? b : (int)builtin(F, b == 0 ? "batch_size" : "eval_batch_size");
  F->g->max_seq = F->o->max_seq > 0 ? F->o->max_seq : (int)builtin(F, "bptt");
}

/* After the graph file has run: a -D that bound nothing is a mistake. */
void check_defines_used(Front *F)
{
  const FrontOptions *o = F->o;
  for (int i = 0; i < o->ndef; i++)
    if (!F->def_used[i]) {
      char *known = known_names(F);
      char *msg = arena_printf("-D %s=%s: unknown hyper-parameter '%s' (known: %s)",
                               o->def[i].name, o->def[i].value, o->def[i].name, known);
      fail_at(o->path, 0, msg);
    }
}

static void push_hyp(lua_State *L, Hyp *h)
{
  switch (h->type) {
  case HT_INT: lua_pushinteger(L, h->i); break;
  case HT_NUM: lua_pushnumber(L, h->d); break;
  case HT_BOOL: lua_pushboolean(L, h->b); break;
  case HT_STR: lua_pushstring(L, h->s); break;
  }
}

static int l_params_index(lua_State *L)
{
  Front *F = front(L);
  const char *k = lua_tostring(L, 2);
  char *known = known_names(F);
  ferr(L, "unknown hyper-parameter '%s' (known: %s)", k ? safe_text(k) : "?", known);
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* params { name = default, ... } -> table of bound values */
int l_params(lua_State *L)
{
  Front *F = front(L);
  if (!lua_istable(L, 1))
    ferr(L, "params: expected a table of defaults, params { nhid = 200, ... }");
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      ferr(L, "params: every key must be a name, got a %s key", luaL_typename(L, -2));
    check_name(L, -2, "params", "the hyper-parameter");
    lua_pop(L, 1);
    n++;
  }
  char **names = arena_calloc((size_t)n + 1, sizeof(char *));
  n = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    names[n++] = arena_strdup(lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  qsort(names, (size_t)n, sizeof(char *), cmp_str);
  for (int i = 0; i < n; i++) {
    lua_getfield(L, 1, names[i]);
    Hyp tmp = {.name = names[i]};
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER:
      if (lua_isinteger(L, -1)) {
        tmp.type = HT_INT;
        tmp.i = lua_tointeger(L, -1);
      } else {
        tmp.type = HT_NUM;
        tmp.d = lua_tonumber(L, -1);
      }
      break;
    case LUA_TBOOLEAN:
      tmp.type = HT_BOOL;
      tmp.b = lua_toboolean(L, -1);
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *v = lua_tolstring(L, -1, &len);
      const char *bad = value_problem(v, len);
      if (bad)
        ferr(L, "params: the default of '%s', %s, %s; a string value is at most %d bytes of "
             "printable text", names[i], shown(v, len), bad, VALUE_MAX);
      tmp.type = HT_STR;
      tmp.s = arena_strdup(v);
      break;
    }
    default:
      ferr(L, "params: '%s' has a %s default; expected an integer, number, boolean or string",
           names[i], luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    Hyp *h = find_hyp(F, names[i]);
    if (h && (!h->builtin || h->redeclared))
      ferr(L, "params: hyper-parameter '%s' is declared twice", names[i]);
    if (h) {
      if (tmp.type != HT_INT || tmp.i < 1)
        ferr(L, "params: '%s' is a built-in and must be a positive integer", names[i]);
      h->redeclared = true;
      if (!h->from_def && h->i != tmp.i) {
        if (F->builtins_used)
          ferr(L, "params: '%s' must be declared before seq() or batch() is used", names[i]);
        h->i = tmp.i;
        set_text(h);
      }
      continue;
    }
    h = add_hyp(F, names[i]);
    h->type = tmp.type;
    h->i = tmp.i;
    h->d = tmp.d;
    h->b = tmp.b;
    h->s = tmp.s ? xstrdup(tmp.s) : NULL;
    set_text(h);
    const char *bad;
    if (!bind_define(F, h, &bad))
      define_error(F, h, bad);
  }
  apply_builtins(F);

  lua_createtable(L, 0, F->nhyp);
  for (int i = 0; i < F->nhyp; i++) {
    push_hyp(L, &F->hyp[i]);
    lua_setfield(L, -2, F->hyp[i].name);
  }
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_params_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
