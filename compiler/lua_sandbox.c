/*
 * lua_sandbox.c: the Lua state a graph file runs in, and its limits.
 *
 * A graph file is data, not a program with the user's rights:
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
 *   - load() takes text chunks only, and require() is ours (lua_source.c):
 *     a dotted name resolved to <graph file's folder>/name.lua, then
 *     <libdir>/name.lua; the graph file and modules are read only from
 *     regular files of at most SOURCE_MAX bytes;
 *   - every name the file gives is checked ([A-Za-z_][A-Za-z0-9_.]*, at
 *     most 128 bytes) at the line that gives it (lua_args.c);
 *   - reading an undefined global is an error ("unknown global 'sigmod'
 *     (did you mean 'sigmoid'?)"), which is also what io, os, debug and
 *     package look like from inside.
 */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <lualib.h>
#include "front.h"

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

void alarm_start(Front *F, Alarm *a)
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

void alarm_stop(Alarm *a)
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

lua_State *sandbox_state(Front *F)
{
  lua_State *L = lua_newstate(l_alloc, F);
  if (!L)
    fail_at(F->path, 0, "cannot create a Lua state");
  *(Front **)lua_getextraspace(L) = F;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, F->hook_every);
  return L;
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
int l_unknown_global(lua_State *L)
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

void open_sandbox(lua_State *L)
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
