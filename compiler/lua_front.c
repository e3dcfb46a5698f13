/*
 * lua_front.c: runs a graph file in a sandboxed Lua 5.4 and builds its IR.
 *
 * A graph file is plain Lua calling the tensor API registered below
 * (docs/graph-api.md): every call builds IR nodes through ir_op() and
 * friends, so shapes are checked as the file runs and a mistake is reported
 * at the line of the graph file that made it.  Tensors are full userdata
 * holding a node index; their metatable gives + - * / and unary minus,
 * fields shape, rank, dtype, and every op as a method (x:tanh()).
 *
 * The sandbox.  A graph file is data, not a program with the user's rights:
 *   - a fresh lua_State whose allocator refuses to grow the heap past
 *     o->mem_limit bytes, and a count hook that stops the file after
 *     o->instr_limit VM instructions; both exit at once, so pcall cannot
 *     swallow them;
 *   - only the base, table, string, math and utf8 libraries, without
 *     dofile, loadfile, collectgarbage, math.random (a graph must be
 *     deterministic) and with print going to stderr;
 *   - library functions that loop in C (string.rep, the pattern functions,
 *     table.move and friends) charge their work to the instruction count
 *     and are refused when it would pass the limit; setmetatable refuses
 *     __gc (finalizers run with hooks off); a wall-clock timer
 *     (o->time_limit) backs all of this up;
 *   - load() takes text chunks only, and require() is ours: a dotted name
 *     resolved to <graph file's folder>/name.lua, then <libdir>/name.lua;
 *     the graph file and modules are read only from regular files of at
 *     most SOURCE_MAX bytes;
 *   - every name the file gives is checked ([A-Za-z_][A-Za-z0-9_.]*, at
 *     most 128 bytes) at the line that gives it;
 *   - reading an undefined global is an error ("unknown global 'sigmod'
 *     (did you mean 'sigmoid'?)"), which is also what io, os, debug and
 *     package look like from inside.
 *
 * Errors.  Everything the front end reports is "file:line: error: message"
 * followed by user_error_exit(), like ir_error() (exit(1); a longjmp in the
 * fuzz target, after front_load has closed the Lua state).  The line is the user's: the
 * innermost Lua frame not in the library folder, so a shape mismatch in
 * nn.linear points at the graph file line that called nn.linear.  Lua's own
 * errors (syntax, runtime, error()) keep the location Lua gives them.
 *
 * Hyper-parameters.  params{...} declares names with defaults; -D name=value
 * overrides them, parsed as the default's type.  The built-ins bptt (35),
 * batch_size (20) and eval_batch_size (10) always exist.  The graph's
 * max_seq is the bound bptt (o->max_seq > 0 forces another value); batch()
 * is o->batch when positive, the bound batch_size when o->batch is 0 and the
 * bound eval_batch_size when it is -1.  *hyper lists every hyper-parameter:
 * the built-ins first, then each params{} call's names in alphabetical
 * order (a Lua table constructor does not keep the order it was written
 * in).
 *
 * Dropout slots.  dropout(x, p [, slot]) names a hyper-parameter (default
 * "dropout", the only one that need not be declared) whose value is its
 * run-time probability; slots are numbered in
 * order of first use and stored in the node (a.id2 = number, a.name = name),
 * so later stages recover the slot table from the training graph's dropout
 * nodes.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include "lmc.h"

#define TENSOR "lmc.tensor"
#define SEQDIM "lmc.seqdim"

typedef enum { HT_INT, HT_NUM, HT_BOOL, HT_STR } HType;

typedef struct {
  char *name;
  HType type;
  long long i;
  double d;
  bool b;
  char *s;
  char *text;          /* value as written after -D, or the default formatted */
  bool builtin;
  bool redeclared;     /* a built-in given a new default by params{} */
  bool from_def;       /* bound by -D */
} Hyp;

typedef struct {
  const FrontOptions *o;
  Graph *g;
  size_t used, limit;          /* Lua heap bytes */
  long instr, instr_limit;
  int hook_every;
  const char *path;            /* graph file, as given */
  char *dir;                   /* its folder, "" for the current one */
  char *libdir;                /* as shown in messages and node locations */
  char *libsrc;                /* "@" libdir "/": chunk names of library files */
  Hyp *hyp;
  int nhyp, caphyp;
  bool *def_used;              /* per o->def */
  bool builtins_used;          /* seq() or batch() was called */
  char **slot;                 /* dropout slots: hyper-parameter names */
  int nslot, capslot;
  char **file;                 /* interned file names for node locations */
  int nfile, capfile;
  int in_scan;
  StrMap scope_ids;            /* scope name -> index in scope_name */
  const char **scope_name;     /* interned scope names (arena) */
  int nscope_name, capscope_name, scope_depth;
  double time_limit;           /* seconds */
} Front;

static Front *front(lua_State *L)
{
  return *(Front **)lua_getextraspace(L);
}

/* --------------------------------------------------------------- locations */

static const char *intern_file(Front *F, const char *name)
{
  for (int i = 0; i < F->nfile; i++)
    if (!strcmp(F->file[i], name))
      return F->file[i];
  if (F->nfile == F->capfile) {
    F->capfile = F->capfile ? 2 * F->capfile : 8;
    F->file = xrealloc(F->file, sizeof(char *) * (size_t)F->capfile);
  }
  return F->file[F->nfile++] = arena_strdup(name);
}

static bool is_lib(Front *F, const char *source)
{
  return !strncmp(source, F->libsrc, strlen(F->libsrc));
}

/* The user's call site: the innermost Lua frame outside the library folder,
 * else the innermost Lua frame.  Returns false when no Lua code is running. */
static bool locate(lua_State *L, const char **file, int *line)
{
  Front *F = front(L);
  lua_Debug ar;
  char src[LUA_IDSIZE + 512] = "";
  int at = 0;
  for (int lv = 0; lua_getstack(L, lv, &ar); lv++) {
    if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
      continue;
    bool lib = is_lib(F, ar.source);
    if (!at || !lib) {
      snprintf(src, sizeof src, "%s", ar.source[0] == '@' ? ar.source + 1 : ar.short_src);
      at = ar.currentline;
    }
    if (!lib)
      break;
  }
  if (!at)
    return false;
  *file = intern_file(F, src);
  *line = at;
  return true;
}

/* Points g->cur_file:cur_line at the user's call site before building. */
static void here(lua_State *L)
{
  Front *F = front(L);
  const char *file;
  int line;
  if (locate(L, &file, &line)) {
    F->g->cur_file = file;
    F->g->cur_line = line;
  }
}

/* Writes n bytes of text a graph file made (an error message, print's
 * arguments) to stderr with its control bytes as '?' ('\t' and '\n'
 * kept): a graph cannot send escape sequences to the terminal. */
static void put_text(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    bool control = (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f;
    fputc(control ? '?' : c, stderr);
  }
}

static _Noreturn void fail_at(const char *file, int line, const char *msg)
{
  fflush(stdout);
  put_text(file, strlen(file));
  if (line > 0)
    fprintf(stderr, ":%d", line);
  fputs(": error: ", stderr);
  put_text(msg, strlen(msg));
  fputc('\n', stderr);
  user_error_exit();
}

/* Reports a mistake found by the front end at the user's call site. */
static _Noreturn void ferr(lua_State *L, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *file = front(L)->path;
  int line = 0;
  locate(L, &file, &line);
  fail_at(file, line, msg);
}

/* Prints a Lua error message "file:line: msg" as "file:line: error: msg"
 * and exits. */
static _Noreturn void fail_lua(Front *F, const char *msg)
{
  fflush(stdout);
  if (!msg)
    msg = "error object is not a string";
  const char *p = msg;
  while (*p && *p != '\n') {
    /* the first ":<digits>: " ends the location */
    if (*p == ':' && isdigit((unsigned char)p[1])) {
      const char *q = p + 1;
      while (isdigit((unsigned char)*q))
        q++;
      if (q[0] == ':' && q[1] == ' ') {
        q += 2;
        bool has = !strncmp(q, "error: ", 7);
        put_text(msg, (size_t)(q - msg));
        fputs(has ? "" : "error: ", stderr);
        put_text(q, strlen(q));
        fputc('\n', stderr);
        user_error_exit();
      }
    }
    p++;
  }
  fail_at(F->path, 0, msg);
}

/* Message handler: gives a location-less error the user's location, and a
 * library location a note pointing at the user's call. */
static int msgh(lua_State *L)
{
  Front *F = front(L);
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "error object is a %s value", luaL_typename(L, 1));
  }
  const char *file;
  int line;
  if (!locate(L, &file, &line))
    return lua_pushstring(L, msg), 1;
  /* "file:line: ..." or a bare message */
  const char *c = strchr(msg, ':');
  bool located = c && isdigit((unsigned char)c[1]);
  if (!located) {
    lua_pushfstring(L, "%s:%d: %s", file, line, msg);
    return 1;
  }
  char where[512];
  snprintf(where, sizeof where, "%s:%d:", file, line);
  if (strncmp(msg, where, strlen(where)) && !strncmp(msg, F->libdir, strlen(F->libdir)))
    lua_pushfstring(L, "%s\n%s:%d: note: called from here", msg, file, line);
  else
    lua_pushstring(L, msg);
  return 1;
}

/* Runs the function on the stack top (with nargs arguments below it) under
 * msgh; any error is reported and ends the program. */
static void call(lua_State *L, int nargs, int nres)
{
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msgh);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, nres, base) != LUA_OK)
    fail_lua(front(L), lua_tostring(L, -1));
  lua_remove(L, base);
}

/* ------------------------------------------------------------------ names */

/* Names from the graph file (parameters, inputs, states, outputs, aliases,
 * scopes, the kind, hyper-parameters, dropout slots) end up in the emitted
 * C, in checkpoints and in messages, so each is checked at the line that
 * gives it: a letter or '_', then letters, digits, '_' and '.', at most GRAPH_NAME_MAX
 * bytes (PyTorch's state_dict names, "encoder.layers.0.self_attn.in_proj_weight",
 * fit).  A string hyper-parameter's value may be any printable text (UTF-8
 * included) of at most VALUE_MAX bytes.  The emitter escapes whatever it
 * writes anyway (emit_c_escape). */
enum { GRAPH_NAME_MAX = 128, VALUE_MAX = 1024, SHOWN_MAX = 40 };

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
static const char *shown(const char *s, size_t len)
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
static const char *shown_arg(lua_State *L, int idx)
{
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    return luaL_typename(L, idx);
  const char *s = lua_tolstring(L, idx, &len);
  return shown(s, len);
}

/* s itself for a message when it is short printable text without quotes
 * or backslashes, else shown(s). */
static const char *safe_text(const char *s)
{
  size_t len = strlen(s);
  bool plain = len <= SHOWN_MAX;
  for (size_t i = 0; plain && i < len; i++)
    plain = s[i] >= 32 && s[i] < 127 && s[i] != '\'' && s[i] != '"' && s[i] != '\\';
  return plain ? s : shown(s, len);
}

/* The name at stack index arg, checked (fn and what say whose it is). */
static const char *check_name(lua_State *L, int arg, const char *fn, const char *what)
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
static const char *value_problem(const char *s, size_t len)
{
  if (len > VALUE_MAX)
    return "is too long";
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 32 || s[i] == 127)
      return "holds a control character";
  return NULL;
}

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

/* ----------------------------------------------------------------- sandbox */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
  Front *F = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    F->used -= old;
    return NULL;
  }
  if (nsize > old && F->used - old + nsize > F->limit) {
    char msg[128];
    snprintf(msg, sizeof msg, "memory limit exceeded (%zu bytes)", F->limit);
    /* the Lua stack may be mid-reallocation here: no location */
    fail_at(F->path, 0, msg);
  }
  void *p = realloc(ptr, nsize);
  if (p)
    F->used = F->used - old + nsize;
  return p;
}

/* The wall-clock limit, a backstop behind the instruction count for
 * whatever still runs long (a C function not wrapped below).  A POSIX
 * timer raises SIGALRM when the limit passes: the first time, the handler
 * sets time_up, which the count hook turns into an error at the user's
 * line; if the hook has not run a second later (a C function that does
 * not return), the handler writes "FILE: error: ..." and _exits.  Both
 * are async-signal-safe, and nothing needs cleaning up: the front end
 * runs before lmc opens its output. */
static volatile sig_atomic_t time_up;
static char time_msg[PATH_MAX + 128];
static size_t time_msg_len;

static void on_alarm(int sig)
{
  (void)sig;
  if (!time_up) {
    time_up = 1;
    return;
  }
  ssize_t rc = write(2, time_msg, time_msg_len);
  (void)rc;
  _exit(1);
}

typedef struct {
  timer_t timer;
  struct sigaction old;
} Alarm;

static void alarm_start(Front *F, Alarm *a)
{
  time_up = 0;
  snprintf(time_msg, sizeof time_msg,
           "%s: error: the graph file ran longer than the time limit (%g s; --time-limit)\n",
           F->path, F->time_limit);
  time_msg_len = strlen(time_msg);
  struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGALRM};
  if (sigaction(SIGALRM, &sa, &a->old) != 0 || timer_create(CLOCK_MONOTONIC, &ev, &a->timer) != 0)
    fail_at(F->path, 0, "cannot start the timer of the time limit");
  double whole = floor(F->time_limit);
  struct itimerspec its = {
    .it_value = {.tv_sec = (time_t)whole, .tv_nsec = (long)((F->time_limit - whole) * 1e9)},
    .it_interval = {.tv_sec = 1},
  };
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
    its.it_value.tv_nsec = 1;
  timer_settime(a->timer, 0, &its, NULL);
}

static void alarm_stop(Alarm *a)
{
  timer_delete(a->timer);
  sigaction(SIGALRM, &a->old, NULL);
  time_up = 0;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
  Front *F = front(L);
  (void)ar;
  if (time_up)
    ferr(L, "the graph file ran longer than the time limit (%g s; --time-limit)", F->time_limit);
  F->instr += F->hook_every;
  if (F->instr >= F->instr_limit)
    ferr(L, "instruction limit exceeded (%ld instructions)", F->instr_limit);
}

static const char *const banned[] = {
  "io", "os", "debug", "package", "dofile", "loadfile", "collectgarbage",
  "coroutine", "loadstring", "module", "setfenv", "getfenv", "jit", "ffi", NULL,
};

static int edit_distance(const char *a, const char *b)
{
  int la = (int)strlen(a), lb = (int)strlen(b);
  if (la > 40 || lb > 40)
    return 99;
  int d[41][41];
  for (int i = 0; i <= la; i++)
    d[i][0] = i;
  for (int j = 0; j <= lb; j++)
    d[0][j] = j;
  for (int i = 1; i <= la; i++)
    for (int j = 1; j <= lb; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c)
        c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c)
        c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

/* __index of the globals: reading an undefined name is a mistake. */
static int l_unknown_global(lua_State *L)
{
  const char *k = lua_tostring(L, 2);
  if (!k)
    return 0;
  for (int i = 0; banned[i]; i++)
    if (!strcmp(k, banned[i]))
      ferr(L, "'%s' is not available: graph files run in a sandbox without io, os, debug, "
           "package, dofile, loadfile and collectgarbage", k);
  const char *best = NULL;
  int bestd = 3;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      continue;
    const char *cand = lua_tostring(L, -1);
    int d = edit_distance(k, cand);
    if (d < bestd || (d == bestd && best && strcmp(cand, best) < 0)) {
      bestd = d;
      best = cand;
    }
  }
  if (best && bestd <= (strlen(k) > 3 ? 2 : 1))
    ferr(L, "unknown global '%s' (did you mean '%s'?)", safe_text(k), best);
  ferr(L, "unknown global '%s'", safe_text(k));
}

/* load(chunk [, chunkname [, mode [, env]]]): text chunks given as strings. */
static int l_load(lua_State *L)
{
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING)
    ferr(L, "load: the chunk must be a string of Lua source, got %s", luaL_typename(L, 1));
  const char *s = lua_tolstring(L, 1, &len);
  const char *name = luaL_optstring(L, 2, s);
  const char *mode = luaL_optstring(L, 3, "t");
  if (len > 0 && s[0] == LUA_SIGNATURE[0])
    ferr(L, "load: binary chunks are not allowed in graph files");
  if (!strchr(mode, 't'))
    ferr(L, "load: mode '%s' is not allowed in graph files (only \"t\", text)", safe_text(mode));
  bool env = !lua_isnone(L, 4);
  if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (env) {
    lua_pushvalue(L, 4);
    if (!lua_setupvalue(L, -2, 1))
      lua_pop(L, 1);
  }
  return 1;
}

static int l_print(lua_State *L)
{
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);
    if (i > 1)
      fputc('\t', stderr);
    put_text(s, len);
    lua_pop(L, 1);
  }
  fputc('\n', stderr);
  return 0;
}

static bool valid_module_name(const char *s)
{
  if (!*s || *s == '.')
    return false;
  for (const char *p = s; *p; p++) {
    if (*p == '.' && (p[1] == '.' || p[1] == 0))
      return false;
    if (*p != '.' && *p != '_' && !isalnum((unsigned char)*p))
      return false;
  }
  return true;
}

/* Reads a graph file or module: only a regular file, of at most
 * SOURCE_MAX bytes.  The open does not block (a FIFO would wait for a
 * writer) and the checks are made on the opened file, so nothing can be
 * swapped in between.  Returns NULL with the reason in why ("is not a
 * regular file ..."). */
enum { SOURCE_MAX = 4 << 20 };

static char *read_source(const char *path, size_t *len, char *why, size_t whylen)
{
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(why, whylen, "cannot read: %s", strerror(errno));
  } else if (S_ISDIR(st.st_mode)) {
    snprintf(why, whylen, "is a folder, not a Lua source file");
  } else if (!S_ISREG(st.st_mode)) {
    snprintf(why, whylen, "is not a regular file; graph files and modules are read only from "
             "regular files");
  } else if (st.st_size > SOURCE_MAX) {
    snprintf(why, whylen, "is %lld bytes; graph files and modules may be at most %d bytes",
             (long long)st.st_size, SOURCE_MAX);
  } else {
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = arena_calloc(cap, 1);   /* arena: a caught error frees it */
    ssize_t k;
    while ((k = read(fd, buf + n, cap - n)) != 0) {
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0 || (n += (size_t)k) > SOURCE_MAX)
        break;
      if (n == cap)
        buf = arena_realloc(buf, cap = 2 * cap);
    }
    if (k == 0) {
      close(fd);
      *len = n;
      return buf;
    }
    if (k < 0)
      snprintf(why, whylen, "cannot read: %s", strerror(errno));
    else
      snprintf(why, whylen, "grew past %d bytes while it was read", SOURCE_MAX);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

/* Loads a file as a text chunk named "@path"; a file that cannot be read
 * (reported at the require line when required) and syntax errors end the
 * program. */
static void load_file(lua_State *L, const char *path, const char *required_as)
{
  size_t len;
  char why[256];
  char *src = read_source(path, &len, why, sizeof why);
  if (!src && required_as)
    ferr(L, "require '%s': %s %s", required_as, path, why);
  if (!src)
    fail_at(path, 0, why);
  if (len > 0 && src[0] == LUA_SIGNATURE[0])
    fail_at(path, 0, "binary chunks are not allowed; a graph file is Lua source");
  lua_pushfstring(L, "@%s", path);
  int rc = luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t");
  if (rc != LUA_OK)
    fail_lua(front(L), lua_tostring(L, -1));
  lua_remove(L, -2);
}

/* Whether anything is at path (stat does not open it: a FIFO or a device
 * is found here and refused by read_source). */
static bool file_exists(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0;
}

/* require(name): a Lua file from the graph's folder or the library folder. */
static int l_require(lua_State *L)
{
  Front *F = front(L);
  if (lua_type(L, 1) != LUA_TSTRING)
    ferr(L, "require: module name must be a string, got %s", luaL_typename(L, 1));
  const char *name = lua_tostring(L, 1), *as = safe_text(name);
  if (name[0] == '/' || strchr(name, '/') || strchr(name, '\\'))
    ferr(L, "require '%s': paths are not allowed; name a module such as 'nn' "
         "(found in the graph's folder or %s)", as, F->libdir);
  if (strstr(name, ".."))
    ferr(L, "require '%s': '..' is not allowed; modules come only from the graph's folder or %s",
         as, F->libdir);
  if (!valid_module_name(name) || strlen(name) > GRAPH_NAME_MAX || strlen(name) != lua_rawlen(L, 1))
    ferr(L, "require '%s': a module name is letters, digits and '_' joined by dots, "
         "at most %d characters", as, GRAPH_NAME_MAX);
  lua_getfield(L, LUA_REGISTRYINDEX, "lmc.loaded");
  lua_getfield(L, -1, name);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA)
      ferr(L, "require '%s': circular require", name);
    return 1;
  }
  lua_pop(L, 1);
  char *rel = arena_strdup(name);
  for (char *p = rel; *p; p++)
    if (*p == '.')
      *p = '/';
  char *path = arena_printf("%s%s.lua", F->dir, rel);
  if (!file_exists(path)) {
    path = arena_printf("%s/%s.lua", F->libdir, rel);
    if (!file_exists(path))
      ferr(L, "require '%s': no %s%s.lua or %s; graph files can require only Lua files from "
           "these two folders (no C modules or standard libraries)",
           name, F->dir, rel, path);
  }
  lua_pushlightuserdata(L, F);         /* loading: catches cycles */
  lua_setfield(L, -2, name);
  load_file(L, path, name);
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  call(L, 2, 1);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  return 1;
}

/* ------------------------------------------- library functions that loop in C */

/* The count hook runs between VM instructions only, so a library function
 * that loops in C (string.rep of an empty string a billion times,
 * table.move over maxinteger slots, a backtracking pattern) would run past
 * the instruction limit.  Each of those is wrapped: the wrapper bounds the
 * work the call can do, charges it to the instruction count (a moved
 * slot or a matcher step as one VM instruction, string.rep's copies at
 * about what they cost against one) and
 * refuses the call at the user's line when it would pass the limit, or
 * when its result would not fit the memory limit, then calls Lua's own
 * function (upvalue 1) with the same arguments. */

static void charge(lua_State *L, const char *fn, double work)
{
  Front *F = front(L);
  double left = (double)(F->instr_limit - F->instr);
  if (work > left)
    ferr(L, "%s: this call could take %.3g steps, more than is left of the instruction limit "
         "(%ld instructions)", fn, work, F->instr_limit);
  F->instr += (long)work;
}

/* Calls upvalue 1 with this call's arguments and returns what it returns. */
static int call_original(lua_State *L)
{
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

static int capped_rep(lua_State *L)
{
  Front *F = front(L);
  size_t ls, lsep;
  luaL_checklstring(L, 1, &ls);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n > 0) {
    double bytes = (double)n * (double)ls + (double)(n - 1) * (double)lsep;
    if (bytes > (double)F->limit)
      ferr(L, "string.rep: memory limit exceeded (%zu bytes; the result would be %.0f)",
           F->limit, bytes);
    charge(L, "string.rep", (double)n / 8 + bytes / 128);   /* a copy is cheaper than a VM instruction */
  }
  return call_original(L);
}

/* The most matcher steps of one match of pattern p (lp bytes, no leading
 * '^') against ls bytes of subject: each path through the pattern visits
 * at most lp + 1 items; a '*', '+' or '-' item tries up to ls + 1
 * continuations, a '?' two; %b and a back-reference scan the subject. */
static double match_steps(const char *p, size_t lp, size_t ls)
{
  double paths = 1, scans = 0, n = (double)ls + 1;
  size_t i = 0;
  while (i < lp) {
    char c = p[i];
    if (c == '(' || c == ')' || (c == '$' && i + 1 == lp)) {
      i++;
      continue;
    }
    size_t start = i;
    if (c == '%' && i + 1 < lp && p[i + 1] == 'b') {
      i += 4;
      scans++;
      continue;
    }
    if (c == '%' && i + 1 < lp && p[i + 1] == 'f') {
      i += 2;
      c = '[';
    } else if (c == '%' && i + 1 < lp && isdigit((unsigned char)p[i + 1])) {
      i += 2;
      scans++;
      continue;
    }
    if (c == '[') {                       /* a set: [^]...] */
      i++;
      if (i < lp && p[i] == '^')
        i++;
      do {
        if (i < lp && p[i] == '%')
          i++;
        i++;
      } while (i < lp && p[i] != ']');
      i++;
      if (p[start] == '%')                /* %f[set] is no single-char item */
        continue;
    } else {
      i += c == '%' ? 2 : 1;
    }
    if (i < lp && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
      paths *= n;
      i++;
    } else if (i < lp && p[i] == '?') {
      paths *= 2;
      i++;
    }
  }
  return paths * ((double)lp + 1) * (1 + scans * n);
}

/* Whether p holds a character special in patterns (as lstrlib's
 * nospecials, NUL bytes included). */
static bool has_specials(const char *p, size_t lp)
{
  for (size_t i = 0; i < lp; i++)
    if (strchr("^$*+?.([%-", p[i]) && p[i])
      return true;
  return false;
}

/* The subject from init on and the pattern of a find, match, gmatch or
 * gsub call; charges the steps of every match the call may try. */
static void charge_pattern(lua_State *L, const char *fn, bool has_init, bool plain, bool anchors)
{
  size_t ls, lp;
  luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  if (has_init) {
    lua_Integer init = luaL_optinteger(L, 3, 1);
    if (init < 0)
      init = init < -(lua_Integer)ls ? 1 : (lua_Integer)ls + init + 1;
    if (init > 1)
      ls = init > (lua_Integer)ls ? 0 : ls - (size_t)(init - 1);
  }
  if (plain || !has_specials(p, lp)) {
    charge(L, fn, ((double)ls + 1) * ((double)lp + 1) / 16 + (double)ls);
    return;
  }
  bool anchored = anchors && lp > 0 && p[0] == '^';
  double starts = anchored ? 1 : (double)ls + 1;
  charge(L, fn, starts * match_steps(p + anchored, lp - anchored, ls));
}

static int capped_find(lua_State *L)
{
  charge_pattern(L, "string.find", true, lua_toboolean(L, 4), true);
  return call_original(L);
}

static int capped_match(lua_State *L)
{
  charge_pattern(L, "string.match", true, false, true);
  return call_original(L);
}

static int capped_gmatch(lua_State *L)
{
  charge_pattern(L, "string.gmatch", true, false, false);
  return call_original(L);
}

static int capped_gsub(lua_State *L)
{
  charge_pattern(L, "string.gsub", false, false, true);
  return call_original(L);
}

/* The length of the table argument at 1 as table.* functions see it. */
static double table_len(lua_State *L)
{
  luaL_checkany(L, 1);
  return (double)luaL_len(L, 1);
}

static int capped_move(lua_State *L)
{
  lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
  if (e >= f)
    charge(L, "table.move", (double)e - (double)f + 1);
  return call_original(L);
}

static int capped_insert(lua_State *L)
{
  charge(L, "table.insert", fabs(table_len(L)));
  return call_original(L);
}

static int capped_remove(lua_State *L)
{
  charge(L, "table.remove", fabs(table_len(L)));
  return call_original(L);
}

static int capped_sort(lua_State *L)
{
  double n = fabs(table_len(L));
  charge(L, "table.sort", n * (log2(n + 1) + 1));
  return call_original(L);
}

static int capped_concat(lua_State *L)
{
  lua_Integer i = luaL_optinteger(L, 3, 1);
  double j = lua_isnoneornil(L, 4) ? table_len(L) : (double)luaL_checkinteger(L, 4);
  if (j >= (double)i)
    charge(L, "table.concat", j - (double)i + 1);
  return call_original(L);
}

/* setmetatable refuses __gc: Lua runs finalizers with hooks off (and at
 * lua_close), where no limit could stop them. */
static int capped_setmetatable(lua_State *L)
{
  if (lua_istable(L, 2)) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      ferr(L, "setmetatable: a metatable with __gc is not allowed in graph files (finalizers "
           "would run outside the instruction and time limits)");
    lua_pop(L, 1);
  }
  return call_original(L);
}

/* Replaces lib.name (lib a global table, or NULL for a global) by fn, a
 * closure over the original. */
static void wrap(lua_State *L, const char *lib, const char *name, lua_CFunction fn)
{
  if (lib)
    lua_getglobal(L, lib);
  else
    lua_pushglobaltable(L);
  lua_getfield(L, -1, name);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

static void wrap_looping_functions(lua_State *L)
{
  static const struct { const char *lib, *name; lua_CFunction fn; } w[] = {
    {"string", "rep", capped_rep}, {"string", "find", capped_find}, {"string", "match", capped_match},
    {"string", "gmatch", capped_gmatch}, {"string", "gsub", capped_gsub},
    {"table", "move", capped_move}, {"table", "insert", capped_insert}, {"table", "remove", capped_remove},
    {"table", "sort", capped_sort}, {"table", "concat", capped_concat},
    {NULL, "setmetatable", capped_setmetatable},
  };
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
    wrap(L, w[i].lib, w[i].name, w[i].fn);
}

static void open_sandbox(lua_State *L)
{
  static const luaL_Reg libs[] = {
    {LUA_GNAME, luaopen_base}, {LUA_TABLIBNAME, luaopen_table},
    {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
    {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL},
  };
  for (const luaL_Reg *l = libs; l->func; l++) {
    luaL_requiref(L, l->name, l->func, 1);
    lua_pop(L, 1);
  }
  static const char *const drop[] = {"dofile", "loadfile", "collectgarbage", NULL};
  for (int i = 0; drop[i]; i++) {
    lua_pushnil(L);
    lua_setglobal(L, drop[i]);
  }
  lua_getglobal(L, "math");
  lua_pushnil(L);
  lua_setfield(L, -2, "random");
  lua_pushnil(L);
  lua_setfield(L, -2, "randomseed");
  lua_pop(L, 1);
  lua_register(L, "load", l_load);
  lua_register(L, "require", l_require);
  lua_register(L, "print", l_print);
  wrap_looping_functions(L);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "lmc.loaded");
}

/* -------------------------------------------------------- hyper-parameters */

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

static Hyp *find_hyp(Front *F, const char *name)
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

static void declare_builtin(Front *F, const char *name, long long def)
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
static void apply_builtins(Front *F)
{
  int b = F->o->batch;
  F->g->batch = b > 0 ? b : (int)builtin(F, b == 0 ? "batch_size" : "eval_batch_size");
  F->g->max_seq = F->o->max_seq > 0 ? F->o->max_seq : (int)builtin(F, "bptt");
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
static int l_params(lua_State *L)
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

/* ------------------------------------------------------------------ tensors */

typedef struct {
  int id;
} TensorUD;

typedef struct {
  int coef;                    /* the dimension is coef * T */
} SeqUD;

static Graph *graph(lua_State *L)
{
  return front(L)->g;
}

static int push_tensor(lua_State *L, int id)
{
  TensorUD *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->id = id;
  luaL_setmetatable(L, TENSOR);
  return 1;
}

static const char *type_of(lua_State *L, int arg)
{
  if (luaL_testudata(L, arg, TENSOR))
    return "tensor";
  if (luaL_testudata(L, arg, SEQDIM))
    return "seq()";
  return luaL_typename(L, arg);
}

static int check_tensor(lua_State *L, int arg, const char *fn)
{
  TensorUD *t = luaL_testudata(L, arg, TENSOR);
  if (!t)
    ferr(L, "%s: argument %d must be a tensor, got %s", fn, arg, type_of(L, arg));
  return t->id;
}

/* A tensor, or a number made into a scalar constant. */
static int tensor_or_number(lua_State *L, int arg, const char *fn)
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

static long long check_int(lua_State *L, int arg, const char *fn, const char *what)
{
  int ok;
  lua_Integer v = lua_tointegerx(L, arg, &ok);
  if (!ok || lua_type(L, arg) != LUA_TNUMBER)
    ferr(L, "%s: %s must be an integer, got %s", fn, what,
         lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : type_of(L, arg));
  return v;
}

static double check_num(lua_State *L, int arg, const char *fn, const char *what)
{
  if (lua_type(L, arg) != LUA_TNUMBER)
    ferr(L, "%s: %s must be a number, got %s", fn, what, type_of(L, arg));
  return lua_tonumber(L, arg);
}

static const char *check_str(lua_State *L, int arg, const char *fn, const char *what)
{
  if (lua_type(L, arg) != LUA_TSTRING)
    ferr(L, "%s: %s must be a string, got %s", fn, what, type_of(L, arg));
  return lua_tostring(L, arg);
}

/* One dimension at stack index idx: an integer, seq() (times an integer),
 * or the strings "T" / "N*T" that t.shape shows. */
static bool read_dim(lua_State *L, int idx, int *dim, bool *seq)
{
  SeqUD *s = luaL_testudata(L, idx, SEQDIM);
  if (s) {
    *dim = s->coef;
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
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *t = lua_tostring(L, idx);
    int c = 1, n = 0;
    if (!strcmp(t, "T") || (sscanf(t, "%d*T%n", &c, &n) == 1 && t[n] == 0 && c > 0)) {
      *dim = c;
      *seq = true;
      return true;
    }
  }
  return false;
}

static Shape check_shape(lua_State *L, int arg, const char *fn, bool allow_unknown)
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
    if (!read_dim(L, -1, &s.dim[i], &seq))
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

static void push_dim(lua_State *L, const Shape *s, int i)
{
  if (s->seq >> i & 1) {
    if (s->dim[i] == 1)
      lua_pushliteral(L, "T");
    else
      lua_pushfstring(L, "%d*T", s->dim[i]);
  } else {
    lua_pushinteger(L, s->dim[i]);
  }
}

static const char *dtype_text(DType t)
{
  return t == DT_F32 ? "f32" : t == DT_F64 ? "f64" : "i32";
}

/* Optional table of options at arg: only the listed keys, booleans. */
static bool opt_bool(lua_State *L, int arg, const char *fn, const char *key)
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

static void check_opts(lua_State *L, int arg, const char *fn, const char *const *keys)
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

static int l_pow(lua_State *L)
{
  ferr(L, "'^' is not defined on tensors; use mul, or exp and log");
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

static int push_seq(lua_State *L, int coef)
{
  SeqUD *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->coef = coef;
  luaL_setmetatable(L, SEQDIM);
  return 1;
}

static int l_seq_mul(lua_State *L)
{
  SeqUD *s = luaL_testudata(L, 1, SEQDIM);
  int other = s ? 2 : 1;
  if (!s)
    s = luaL_testudata(L, 2, SEQDIM);
  long long k = check_int(L, other, "seq()", "a multiplier of seq()");
  if (luaL_testudata(L, other, SEQDIM))
    ferr(L, "seq() * seq(): a dimension can hold T only once");
  if (k < 1 || k * s->coef > INT_MAX)
    ferr(L, "seq(): multiplier %lld out of range", k);
  return push_seq(L, (int)(k * s->coef));
}

static int l_seq_tostring(lua_State *L)
{
  SeqUD *s = luaL_checkudata(L, 1, SEQDIM);
  if (s->coef == 1)
    lua_pushliteral(L, "T");
  else
    lua_pushfstring(L, "%d*T", s->coef);
  return 1;
}

static int l_seq(lua_State *L)
{
  front(L)->builtins_used = true;
  return push_seq(L, 1);
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
      ferr(L, "param '%s': unknown init %s (expected \"zeros\", \"ones\", \"xavier\" or "
           "{ uniform = a })", name, shown_arg(L, 3));
  } else if (lua_istable(L, 3)) {
    check_opts(L, 3, "param", (const char *const[]){"uniform", NULL});
    lua_getfield(L, 3, "uniform");
    if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0))
      ferr(L, "param '%s': { uniform = a } needs a positive number a", name);
    init = INIT_UNIFORM;
    a = lua_tonumber(L, -1);
    lua_pop(L, 1);
  } else {
    ferr(L, "param '%s': init must be \"zeros\", \"ones\", \"xavier\" or { uniform = a }, got %s",
         name, type_of(L, 3));
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

/* transpose(x, {perm}) permutes like torch.permute; transpose(x, i, j)
 * swaps two axes like torch.transpose.  Axes are 0-based. */
static int l_transpose(lua_State *L)
{
  int x = check_tensor(L, 1, "transpose");
  int rank = ir_get(graph(L), x)->shape.rank;
  Attr a = {0};
  if (lua_istable(L, 2)) {
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

/* slice(x, axis, start, len): len an integer or seq() (T, or k*T). */
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
  } else {
    long long len = check_int(L, 4, "slice", "the length (an integer or seq())");
    if (len < 1 || len > INT_MAX)
      ferr(L, "slice: length %lld must be positive", len);
    a.len = (int)len;
  }
  here(L);
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
  return push_tensor(L, ir_op(graph(L), OP_TRIU_MASK, 0, NULL, NULL));
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
    if (n->shape.rank < 1 || !(n->shape.seq & 1) || n->shape.dim[0] != 1)
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
  for (int i = 0; i < ny; i++)
    if (ir_get(g, ys[i])->loop != loop)
      ferr(L, "scan: output %d of the body is not computed in the body", i + 1);
  for (int i = 0; i < ns; i++) {
    Node *c = ir_get(g, carry[i]), *n = ir_get(g, next[i]);
    if (n->loop != loop)
      ferr(L, "scan: next state %d is not computed in the body", i + 1);
    if (!shape_eq(&c->shape, &n->shape))
      ferr(L, "scan: next state %d has shape %s, but its initial state has shape %s", i + 1,
           shape_str(&n->shape), shape_str(&c->shape));
    ir_carry_next(g, carry[i], next[i]);
  }
  here(L);
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
static const luaL_Reg tensor_ops[] = {
  {"matmul", l_matmul}, {"bmm", l_bmm}, {"embedding", l_embedding},
  {"dropout", l_dropout}, {"softmax", l_softmax}, {"log_softmax", l_log_softmax},
  {"normalize", l_normalize}, {"nll_loss", l_nll_loss}, {"sum", l_sum},
  {"broadcast", l_broadcast}, {"reshape", l_reshape}, {"transpose", l_transpose},
  {"slice", l_slice}, {"concat", l_concat},
  {NULL, NULL},
};

static const luaL_Reg graph_api[] = {
  {"params", l_params}, {"kind", l_kind}, {"seq", l_seq}, {"batch", l_batch},
  {"training", l_training}, {"input", l_input}, {"state", l_state},
  {"param", l_param}, {"find_param", l_find_param}, {"alias", l_alias}, {"output", l_output},
  {"const", l_const}, {"arange", l_arange}, {"triu_mask", l_triu_mask},
  {"scan", l_scan}, {"scope", l_scope},
  {NULL, NULL},
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

static void open_api(lua_State *L)
{
  lua_pushglobaltable(L);
  luaL_setfuncs(L, tensor_ops, 0);
  luaL_setfuncs(L, graph_api, 0);
  lua_newtable(L);
  luaL_setfuncs(L, tensor_ops, 0);
  add_elementwise(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "lmc.methods");
  lua_pop(L, 1);

  static const luaL_Reg meta[] = {
    {"__pow", l_pow}, {"__index", l_index}, {"__newindex", l_newindex},
    {"__tostring", l_tostring}, {NULL, NULL},
  };
  static const struct { const char *event; Op op; } arith[] = {
    {"__add", OP_ADD}, {"__sub", OP_SUB}, {"__mul", OP_MUL}, {"__div", OP_DIV}, {"__unm", OP_NEG},
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
    {"__mul", l_seq_mul}, {"__tostring", l_seq_tostring}, {NULL, NULL},
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

/* --------------------------------------------------------------- front_load */

/* libdir as shown in messages: relative to the current folder when under
 * it, so locations read "graphs/lib/nn.lua:40" wherever lmc was built. */
static char *display_libdir(const char *libdir)
{
  char cwd[PATH_MAX];
  if (libdir[0] == '/' && getcwd(cwd, sizeof cwd)) {
    size_t n = strlen(cwd);
    if (!strncmp(libdir, cwd, n) && libdir[n] == '/')
      return xstrdup(libdir + n + 1);
  }
  return xstrdup(libdir);
}

/* What a load holds outside the arena and the Lua state. */
static void free_front(Front *F)
{
  for (int i = 0; i < F->nhyp; i++) {
    free(F->hyp[i].name);
    free(F->hyp[i].text);
    free(F->hyp[i].s);
  }
  free(F->hyp);
  free(F->def_used);
  free(F->slot);       /* the slot names live on in the dropout nodes */
  free(F->file);       /* the names live on in the nodes */
  free(F->dir);
  free(F->libsrc);
  free(F->libdir);
}

Graph *front_load(const FrontOptions *o, Hyper **hyper, int *nhyper)
{
  Front F = {
    .o = o,
    .path = o->path,
    .limit = o->mem_limit ? o->mem_limit : (size_t)64 << 20,
    .instr_limit = o->instr_limit > 0 ? o->instr_limit : 100000000,
    .time_limit = o->time_limit > 0 ? o->time_limit : 10,
  };
  /* A caller catching user errors (user_error_jmp) gets them after the
   * Lua state is closed and F freed. */
  jmp_buf caught, *outer = user_error_jmp;
  lua_State *volatile L = NULL;
  Alarm alarm;
  volatile bool alarm_on = false;
  if (outer) {
    if (setjmp(caught)) {
      user_error_jmp = outer;
      if (L)
        lua_close(L);
      if (alarm_on)
        alarm_stop(&alarm);
      free_front(&F);
      longjmp(*outer, 1);
    }
    user_error_jmp = &caught;
  }
  const char *slash = strrchr(o->path, '/');
  F.dir = slash ? xasprintf("%.*s/", (int)(slash - o->path), o->path) : xstrdup("");
  if (o->libdir)
    F.libdir = display_libdir(o->libdir);
  else
    F.libdir = xasprintf("%slib", F.dir);
  F.libsrc = xasprintf("@%s/", F.libdir);
  F.def_used = xcalloc((size_t)o->ndef + 1, sizeof(bool));
  F.hook_every = F.instr_limit < 1000 ? (int)F.instr_limit : 1000;

  declare_builtin(&F, "bptt", 35);
  declare_builtin(&F, "batch_size", 20);
  declare_builtin(&F, "eval_batch_size", 10);
  F.g = ir_new(35, 20, o->real);
  F.g->cur_file = intern_file(&F, o->path);
  apply_builtins(&F);

  alarm_start(&F, &alarm);
  alarm_on = true;
  L = lua_newstate(l_alloc, &F);
  if (!L)
    fail_at(o->path, 0, "cannot create a Lua state");
  *(Front **)lua_getextraspace(L) = &F;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, F.hook_every);
  open_sandbox(L);
  open_api(L);

  load_file(L, o->path, NULL);
  call(L, 0, 0);

  for (int i = 0; i < o->ndef; i++)
    if (!F.def_used[i]) {
      char *known = known_names(&F);
      char *msg = arena_printf("-D %s=%s: unknown hyper-parameter '%s' (known: %s)",
                               o->def[i].name, o->def[i].value, o->def[i].name, known);
      fail_at(o->path, 0, msg);
    }
  lua_close(L);
  L = NULL;
  alarm_stop(&alarm);
  alarm_on = false;

  *nhyper = F.nhyp;
  *hyper = arena_calloc((size_t)F.nhyp + 1, sizeof(Hyper));
  for (int i = 0; i < F.nhyp; i++)
    (*hyper)[i] = (Hyper){arena_strdup(F.hyp[i].name), arena_strdup(F.hyp[i].text)};
  free_front(&F);
  user_error_jmp = outer;
  return F.g;
}
