/*
 * lua_front.c: runs a graph file in a sandboxed Lua 5.4 and builds its IR.
 *
 * A graph file is plain Lua calling the tensor API (lua_api.c,
 * docs/graph-api.md): every call builds IR nodes through ir_op() and
 * friends, so shapes are checked as the file runs and a mistake is reported
 * at the line of the graph file that made it.  front_load() runs the file
 * once, in a fresh Lua state under the sandbox's limits (lua_sandbox.c),
 * with the hyper-parameters bound (lua_params.c); main.c runs it once per
 * program (training, evaluation, generation).  front.h lists the rooms.
 *
 * This file also holds the locations and the errors of every room.
 * Everything the front end reports is "file:line: error: message"
 * followed by user_error_exit(), like ir_error() (exit(1); a longjmp in the
 * fuzz target, after front_load has closed the Lua state).  The line is the user's: the
 * innermost Lua frame not in the library folder, so a shape mismatch in
 * nn.linear points at the graph file line that called nn.linear.  Lua's own
 * errors (syntax, runtime, error()) keep the location Lua gives them.
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "front.h"

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
void here(lua_State *L)
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
void put_text(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    bool control = (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f;
    fputc(control ? '?' : c, stderr);
  }
}

_Noreturn void fail_at(const char *file, int line, const char *msg)
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
_Noreturn void ferr(lua_State *L, const char *fmt, ...)
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
_Noreturn void fail_lua(Front *F, const char *msg)
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
void call(lua_State *L, int nargs, int nres)
{
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msgh);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, nres, base) != LUA_OK)
    fail_lua(front(L), lua_tostring(L, -1));
  lua_remove(L, base);
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
  L = sandbox_state(&F);
  open_sandbox(L);
  open_api(L);

  load_file(L, o->path, NULL);
  call(L, 0, 0);
  int objective = ir_find_output(F.g, "objective");
  if (objective >= 0 && ir_find_output(F.g, "loss") < 0)
    ir_error_node(F.g, objective, "output 'objective' needs an output 'loss', the loss to log and evaluate");

  check_defines_used(&F);
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
