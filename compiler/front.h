/*
 * front.h: the private header of the front end's rooms, the files that
 * run a graph file and build its IR (lmc.h declares front_load, the one
 * thing the rest of the compiler sees).
 *
 *   lua_front.c    front_load; locations and errors
 *   lua_sandbox.c  the Lua state's limits and its safe environment
 *   lua_source.c   reading graph files and modules, require
 *   lua_params.c   params{...} and -D name=value
 *   lua_args.c     names, tensors and the other arguments of the graph API
 *   lua_api.c      scopes, the tensor metatable and the graph API
 *
 * One load is one Front, reached from the Lua state's extra space.
 */
#ifndef FRONT_H
#define FRONT_H

#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <time.h>
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
  int nkv;                     /* key/value caches made (FrontOptions.kv_cache) */
  StrMap scope_ids;            /* scope name -> index in scope_name */
  const char **scope_name;     /* interned scope names (arena) */
  int nscope_name, capscope_name, scope_depth;
  double time_limit;           /* seconds */
} Front;

static inline Front *front(lua_State *L)
{
  return *(Front **)lua_getextraspace(L);
}

static inline Graph *graph(lua_State *L)
{
  return front(L)->g;
}

/* ----------------------------------------------------------- lua_front.c */

/* Points g->cur_file:cur_line at the user's call site before building. */
void here(lua_State *L);
/* n bytes of a graph file's text to stderr, control bytes as '?'. */
void put_text(const char *s, size_t n);
/* "file[:line]: error: msg", then user_error_exit(). */
_Noreturn void fail_at(const char *file, int line, const char *msg);
/* A mistake found by the front end, at the user's call site. */
_Noreturn void ferr(lua_State *L, const char *fmt, ...);
/* A Lua error message "file:line: msg" as "file:line: error: msg". */
_Noreturn void fail_lua(Front *F, const char *msg);
/* Runs the function on the stack top under the message handler; an error
 * ends the program. */
void call(lua_State *L, int nargs, int nres);

/* --------------------------------------------------------- lua_sandbox.c */

typedef struct {
  timer_t timer;
  struct sigaction old;
} Alarm;

/* The wall-clock limit F->time_limit, from now until alarm_stop. */
void alarm_start(Front *F, Alarm *a);
void alarm_stop(Alarm *a);
/* A fresh Lua state under F's memory and instruction limits. */
lua_State *sandbox_state(Front *F);
/* The libraries a graph file may use, wrapped where they loop in C. */
void open_sandbox(lua_State *L);
/* __index of the globals: reading an undefined name is a mistake. */
int l_unknown_global(lua_State *L);

/* ---------------------------------------------------------- lua_source.c */

/* path as a text chunk on the stack (required_as: the require naming it). */
void load_file(lua_State *L, const char *path, const char *required_as);
int l_require(lua_State *L);

/* ---------------------------------------------------------- lua_params.c */

Hyp *find_hyp(Front *F, const char *name);
/* A built-in hyper-parameter with its default, bound by -D. */
void declare_builtin(Front *F, const char *name, long long def);
/* The graph's batch and max_seq from the bound built-ins. */
void apply_builtins(Front *F);
/* Every -D names a hyper-parameter the graph file has. */
void check_defines_used(Front *F);
int l_params(lua_State *L);

/* ------------------------------------------------------------ lua_args.c */

/* Names and string values (lua_args.c checks them). */
enum { GRAPH_NAME_MAX = 128, VALUE_MAX = 1024 };

typedef struct {
  int id;
} TensorUD;

typedef struct {
  int coef;                    /* the dimension is coef * T + off */
  int off;                     /* seq() - 1: coef 1, off -1 */
} SeqUD;

const char *shown(const char *s, size_t len);
const char *shown_arg(lua_State *L, int idx);
const char *safe_text(const char *s);
const char *check_name(lua_State *L, int arg, const char *fn, const char *what);
const char *value_problem(const char *s, size_t len);
int push_tensor(lua_State *L, int id);
const char *type_of(lua_State *L, int arg);
int check_tensor(lua_State *L, int arg, const char *fn);
int tensor_or_number(lua_State *L, int arg, const char *fn);
long long check_int(lua_State *L, int arg, const char *fn, const char *what);
double check_num(lua_State *L, int arg, const char *fn, const char *what);
const char *check_str(lua_State *L, int arg, const char *fn, const char *what);
Shape check_shape(lua_State *L, int arg, const char *fn, bool allow_unknown);
void push_dim(lua_State *L, const Shape *s, int i);
const char *dtype_text(DType t);
bool opt_bool(lua_State *L, int arg, const char *fn, const char *key);
void check_opts(lua_State *L, int arg, const char *fn, const char *const *keys);

/* A function of the graph API: its name, its C function, the most
 * arguments it takes (-1: any number) and its usage, shown when it gets
 * more.  set_api sets each row's function in the table at the top of the
 * stack, its argument count checked. */
typedef struct {
  const char *name;
  lua_CFunction fn;
  int max;
  const char *usage;
} Api;
void set_api(lua_State *L, const Api *api);

/* ------------------------------------------------------------- lua_api.c */

/* The graph API as globals, tensor methods and metatables. */
void open_api(lua_State *L);

#endif
