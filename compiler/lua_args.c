/*
 * lua_args.c: the arguments a graph file gives the graph API, checked.
 *
 * Each reader takes a stack index, the API function's name and what the
 * argument is for, and reports a wrong one at the user's line naming
 * them ("slice: the start must be an integer, got string").  Here too:
 * the names a graph file gives (check_name), their text as messages show
 * it (shown, safe_text), and the tensor and seq() userdata (push_tensor,
 * TensorUD, SeqUD).
 */
#include <ctype.h>
#include <limits.h>
#include <string.h>
#include "front.h"

/* ------------------------------------------------------------------ names */

/* Names from the graph file (parameters, inputs, states, outputs, aliases,
 * scopes, the kind, hyper-parameters, dropout slots) end up in the emitted
 * C, in checkpoints and in messages, so each is checked at the line that
 * gives it: a letter or '_', then letters, digits, '_' and '.', at most GRAPH_NAME_MAX
 * bytes (PyTorch's state_dict names, "encoder.layers.0.self_attn.in_proj_weight",
 * fit).  A string hyper-parameter's value may be any printable text (UTF-8
 * included) of at most VALUE_MAX bytes.  The emitter escapes whatever it
 * writes anyway (emit_c_escape). */
enum { SHOWN_MAX = 40 };   /* GRAPH_NAME_MAX, VALUE_MAX: front.h */

/* What is wrong with s as a name, or NULL. */
static const char *name_problem(const char *s, size_t len)
{
  if (len == 0)
    return "is empty";
  if (len > GRAPH_NAME_MAX)
    return "is too long";
  if (isdigit((unsigned char)s[0]) || s[0] == '.')
    return "does not start with a letter or '_'";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '_' && c != '.')
      return c < 32 || c >= 127 ? "holds a control character or a byte outside ASCII"
                                : "holds a character other than letters, digits, '_' and '.'";
  }
  return NULL;
}

/* s as a message may show it: in quotes, at most SHOWN_MAX bytes, control
 * characters, quotes and backslashes escaped; in one of four buffers, so
 * a message can show a few. */
const char *shown(const char *s, size_t len)
{
  static char buf[4][4 * SHOWN_MAX + 48];   /* "\xNN" each, quotes, "... (N bytes)" */
  static int k;
  char *b = buf[k++ % 4], *o = b;
  *o++ = '"';
  for (size_t i = 0; i < len && i < SHOWN_MAX; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 32 || c >= 127 || c == '"' || c == '\\')
      o += sprintf(o, c == '"' || c == '\\' ? "\\%c" : "\\x%02x", c);
    else
      *o++ = (char)c;
  }
  *o++ = '"';
  if (len > SHOWN_MAX)
    o += sprintf(o, "... (%zu bytes)", len);
  *o = 0;
  return b;
}

/* shown() of the string at stack index idx (a non-string as its type). */
const char *shown_arg(lua_State *L, int idx)
{
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    return luaL_typename(L, idx);
  const char *s = lua_tolstring(L, idx, &len);
  return shown(s, len);
}

/* s itself for a message when it is short printable text without quotes
 * or backslashes, else shown(s). */
const char *safe_text(const char *s)
{
  size_t len = strlen(s);
  bool plain = len <= SHOWN_MAX;
  for (size_t i = 0; plain && i < len; i++)
    plain = s[i] >= 32 && s[i] < 127 && s[i] != '\'' && s[i] != '"' && s[i] != '\\';
  return plain ? s : shown(s, len);
}

/* The name at stack index arg, checked (fn and what say whose it is). */
const char *check_name(lua_State *L, int arg, const char *fn, const char *what)
{
  if (lua_type(L, arg) != LUA_TSTRING)
    ferr(L, "%s: %s must be a string, got %s", fn, what, luaL_typename(L, arg));
  size_t len;
  const char *s = lua_tolstring(L, arg, &len);
  const char *bad = name_problem(s, len);
  if (bad)
    ferr(L, "%s: %s %s %s; a name is a letter or '_' followed by letters, digits, '_' and '.', "
         "at most %d characters", fn, what, shown(s, len), bad, GRAPH_NAME_MAX);
  return s;
}

/* What is wrong with s as a string hyper-parameter's value, or NULL. */
const char *value_problem(const char *s, size_t len)
{
  if (len > VALUE_MAX)
    return "is too long";
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 32 || s[i] == 127)
      return "holds a control character";
  return NULL;
}

/* ------------------------------------------------ tensors and other arguments */

int push_tensor(lua_State *L, int id)
{
  TensorUD *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->id = id;
  luaL_setmetatable(L, TENSOR);
  return 1;
}

const char *type_of(lua_State *L, int arg)
{
  if (luaL_testudata(L, arg, TENSOR))
    return "tensor";
  if (luaL_testudata(L, arg, SEQDIM))
    return "seq()";
  return luaL_typename(L, arg);
}

int check_tensor(lua_State *L, int arg, const char *fn)
{
  TensorUD *t = luaL_testudata(L, arg, TENSOR);
  if (!t)
    ferr(L, "%s: argument %d must be a tensor, got %s", fn, arg, type_of(L, arg));
  return t->id;
}

/* A tensor, or a number made into a scalar constant. */
int tensor_or_number(lua_State *L, int arg, const char *fn)
{
  if (lua_type(L, arg) == LUA_TNUMBER) {
    here(L);
    return ir_const(graph(L), lua_tonumber(L, arg));
  }
  TensorUD *t = luaL_testudata(L, arg, TENSOR);
  if (!t)
    ferr(L, "%s: argument %d must be a tensor or a number, got %s", fn, arg, type_of(L, arg));
  return t->id;
}

long long check_int(lua_State *L, int arg, const char *fn, const char *what)
{
  int ok;
  lua_Integer v = lua_tointegerx(L, arg, &ok);
  if (!ok || lua_type(L, arg) != LUA_TNUMBER)
    ferr(L, "%s: %s must be an integer, got %s", fn, what,
         lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : type_of(L, arg));
  return v;
}

double check_num(lua_State *L, int arg, const char *fn, const char *what)
{
  if (lua_type(L, arg) != LUA_TNUMBER)
    ferr(L, "%s: %s must be a number, got %s", fn, what, type_of(L, arg));
  return lua_tonumber(L, arg);
}

const char *check_str(lua_State *L, int arg, const char *fn, const char *what)
{
  if (lua_type(L, arg) != LUA_TSTRING)
    ferr(L, "%s: %s must be a string, got %s", fn, what, type_of(L, arg));
  return lua_tostring(L, arg);
}

/* "T", "N*T", "T-1", "N*T+K" as t.shape shows a sequence dimension. */
static bool parse_seq_dim(const char *t, int *dim, int *off)
{
  int c = 1, d = 0, n = 0;
  if (sscanf(t, "%d*%n", &c, &n) == 1)
    t += n;
  else
    c = 1;
  if (*t++ != 'T' || c < 1)
    return false;
  n = 0;
  if (*t && (sscanf(t, "%d%n", &d, &n) != 1 || (t[0] != '+' && t[0] != '-') || t[n] || c + (long long)d < 0))
    return false;
  *dim = c;
  *off = d;
  return true;
}

/* One dimension at stack index idx: an integer, a size in seq() (k *
 * seq(), seq() - 1), or the strings "T", "N*T", "T-1" that t.shape shows. */
static bool read_dim(lua_State *L, int idx, int *dim, bool *seq, int *off)
{
  SeqUD *s = luaL_testudata(L, idx, SEQDIM);
  *off = 0;
  if (s) {
    *dim = s->coef;
    *off = s->off;
    *seq = true;
    return true;
  }
  *seq = false;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || v < INT_MIN || v > INT_MAX)
      return false;
    *dim = (int)v;
    return true;
  }
  if (lua_type(L, idx) == LUA_TSTRING && parse_seq_dim(lua_tostring(L, idx), dim, off)) {
    *seq = true;
    return true;
  }
  return false;
}

Shape check_shape(lua_State *L, int arg, const char *fn, bool allow_unknown)
{
  if (!lua_istable(L, arg))
    ferr(L, "%s: shape must be a table such as { seq(), batch(), 200 }, got %s", fn,
         type_of(L, arg));
  Shape s = {0};
  int n = (int)luaL_len(L, arg);
  if (n > MAXRANK)
    ferr(L, "%s: shape has %d dimensions; at most %d", fn, n, MAXRANK);
  s.rank = n;
  int unknown = 0;
  for (int i = 0; i < n; i++) {
    lua_geti(L, arg, i + 1);
    bool seq;
    if (!read_dim(L, -1, &s.dim[i], &seq, &s.off[i]))
      ferr(L, "%s: shape entry %d must be a positive integer or seq(), got %s", fn, i + 1,
           lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING
             ? lua_tostring(L, -1) : type_of(L, -1));
    if (seq)
      s.seq |= 1u << i;
    bool minus1 = allow_unknown && !seq && s.dim[i] == -1;
    unknown += minus1;
    if (!minus1 && s.dim[i] < 1)
      ferr(L, "%s: shape entry %d must be a positive integer or seq(), got %d%s", fn, i + 1,
           s.dim[i], allow_unknown ? " (one -1 is allowed)" : "");
    lua_pop(L, 1);
  }
  if (unknown > 1)
    ferr(L, "%s: shape has %d entries -1; at most one", fn, unknown);
  return s;
}

void push_dim(lua_State *L, const Shape *s, int i)
{
  if (s->seq >> i & 1)
    lua_pushstring(L, dim_str(s, i));     /* "T", "20*T", "T-1" */
  else
    lua_pushinteger(L, s->dim[i]);
}

const char *dtype_text(DType t)
{
  return t == DT_F32 ? "f32" : t == DT_F64 ? "f64" : "i32";
}

/* Optional table of options at arg: only the listed keys, booleans. */
bool opt_bool(lua_State *L, int arg, const char *fn, const char *key)
{
  if (lua_isnoneornil(L, arg))
    return false;
  if (!lua_istable(L, arg))
    ferr(L, "%s: options must be a table such as { tb = true }, got %s", fn, type_of(L, arg));
  lua_getfield(L, arg, key);
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

void check_opts(lua_State *L, int arg, const char *fn, const char *const *keys)
{
  if (!lua_istable(L, arg))
    return;
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    bool ok = false;
    for (int i = 0; k && keys[i]; i++)
      ok |= !strcmp(k, keys[i]);
    if (!ok)
      ferr(L, "%s: unknown option '%s'", fn, k ? safe_text(k) : luaL_typename(L, -1));
  }
}

/* ---------------------------------------------------- argument counts */

/* An API function called through its Api row (upvalue 1): more arguments
 * than the row allows is an error naming the function's usage, so that
 * softmax(x, 0) is refused rather than read as softmax(x). */
static int l_counted(lua_State *L)
{
  const Api *a = lua_touserdata(L, lua_upvalueindex(1));
  if (a->max >= 0 && lua_gettop(L) > a->max)
    ferr(L, "%s: takes at most %d argument%s, got %d (%s)", a->name, a->max, a->max == 1 ? "" : "s",
         lua_gettop(L), a->usage);
  return a->fn(L);
}

void set_api(lua_State *L, const Api *api)
{
  for (; api->name; api++) {
    lua_pushlightuserdata(L, (void *)api);
    lua_pushcclosure(L, l_counted, 1);
    lua_setfield(L, -2, api->name);
  }
}
