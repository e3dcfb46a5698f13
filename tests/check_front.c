/*
 * check_front.c: the Lua front end (compiler/lua_*.c, front.h).
 *
 * Graph files are written to a temporary folder and loaded with
 * front_load().  A graph the front end rejects prints one error and exits,
 * so those run in a forked child whose stderr and exit status the test
 * reads (run()); graphs that load are inspected in the test process.
 * Run from the repository root (the library folder is graphs/lib).
 */
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "lmc.h"
#include "testutil.h"

static char dir[64];

/* Writes a file under the temporary folder; returns its path. */
static const char *put(const char *name, const char *src)
{
  static char path[8][256];
  static int k;
  char *p = path[k++ % 8];
  snprintf(p, 256, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs(src, f);
  fclose(f);
  return p;
}

static FrontOptions opts(const char *path)
{
  return (FrontOptions){
    .path = path, .libdir = "graphs/lib", .batch = 0, .training = true,
    .real = DT_F32, .mem_limit = 16u << 20, .instr_limit = 2000000,
  };
}

static Graph *load(const char *src, Define *def, int ndef, Hyper **h, int *nh)
{
  FrontOptions o = opts(put("g.lua", src));
  o.def = def;
  o.ndef = ndef;
  Hyper *hh;
  int n;
  return front_load(&o, h ? h : &hh, nh ? nh : &n);
}

/* Loads o in a child; returns its exit status, stderr in err. */
static int run(FrontOptions o, char *err, size_t errlen)
{
  int fd[2];
  ck_assert_int_eq(pipe(fd), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fd[0]);
    dup2(fd[1], 2);
    alarm(60);   /* a graph that hangs the front end fails its test, not the suite */
    Hyper *h;
    int nh;
    front_load(&o, &h, &nh);
    _exit(0);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t k;
  while (n + 1 < errlen && (k = read(fd[0], err + n, errlen - 1 - n)) > 0)
    n += (size_t)k;
  err[n] = 0;
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Expects src to fail with status 1 and a message containing want. */
static void fails(const char *src, const char *want)
{
  char err[2048];
  FrontOptions o = opts(put("g.lua", src));
  int rc = run(o, err, sizeof err);
  if (rc != 1 || !strstr(err, want))
    ck_abort_msg("status %d, stderr:\n%s\nexpected status 1 and: %s", rc, err, want);
}

static void fails_def(const char *src, Define *def, int ndef, const char *want)
{
  char err[2048];
  FrontOptions o = opts(put("g.lua", src));
  o.def = def;
  o.ndef = ndef;
  int rc = run(o, err, sizeof err);
  if (rc != 1 || !strstr(err, want))
    ck_abort_msg("status %d, stderr:\n%s\nexpected status 1 and: %s", rc, err, want);
}

/* Expects src to load (its asserts hold). */
static void loads(const char *src)
{
  char err[2048];
  int rc = run(opts(put("g.lua", src)), err, sizeof err);
  if (rc != 0)
    ck_abort_msg("status %d, stderr:\n%s", rc, err);
}

static void setup(void)
{
  strcpy(dir, "/tmp/check_front.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
  arena_free_all();   /* the graphs a test built */
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

static int count_op(Graph *g, Op op)
{
  int n = 0;
  for (int i = 0; i < g->nnode; i++)
    n += g->node[i].op == op && !g->node[i].dead;
  return n;
}

static int find_op(Graph *g, Op op, int nth)
{
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == op && nth-- == 0)
      return i;
  return -1;
}

static const char *hyper(Hyper *h, int n, const char *name)
{
  for (int i = 0; i < n; i++)
    if (!strcmp(h[i].name, name))
      return h[i].value;
  return NULL;
}

/* ------------------------------------------------------------- sandbox */

START_TEST(sandbox_io) { fails("local f = io.open('/etc/passwd')\n", "g.lua:1: error: 'io' is not available"); }
END_TEST

START_TEST(sandbox_os) { fails("\nos.execute('true')\n", "g.lua:2: error: 'os' is not available"); }
END_TEST

START_TEST(sandbox_debug) { fails("debug.sethook()\n", "error: 'debug' is not available"); }
END_TEST

START_TEST(sandbox_loadlib)
{
  fails("package.loadlib('libc.so.6', 'system')\n", "error: 'package' is not available");
}
END_TEST

START_TEST(sandbox_file_functions)
{
  fails("dofile('/etc/passwd')\n", "error: 'dofile' is not available");
  fails("loadfile('/etc/passwd')\n", "error: 'loadfile' is not available");
  fails("collectgarbage()\n", "error: 'collectgarbage' is not available");
  loads("assert(rawget(_G, 'io') == nil and math.random == nil and string.format)\n");
}
END_TEST

START_TEST(sandbox_require_c)
{
  fails("require 'lfs'\n", "error: require 'lfs': no ");
  fails("require 'io'\n", "no C modules");
}
END_TEST

START_TEST(sandbox_require_paths)
{
  fails("require '../x'\n", "error: require '../x': paths are not allowed");
  fails("require '/etc/passwd'\n", "paths are not allowed");
  fails("require 'a..b'\n", "'..' is not allowed");
  fails("require '.hidden'\n", "a module name is letters");
  fails("require(3)\n", "module name must be a string");
}
END_TEST

START_TEST(sandbox_require_local)
{
  put("m.lua", "count = (rawget(_G, 'count') or 0) + 1\nreturn { twice = function(x) return 2 * x end }\n");
  put("sub_m.lua", "return 1\n");
  loads("local m = require 'm'\nlocal m2 = require 'm'\n"
        "assert(m == m2 and count == 1 and m.twice(3) == 6)\n"
        "assert(require('nn').linear)\n");
}
END_TEST

START_TEST(sandbox_require_cycle)
{
  put("a.lua", "return require 'b'\n");
  put("b.lua", "return require 'a'\n");
  fails("require 'a'\n", "circular require");
}
END_TEST

START_TEST(sandbox_binary_chunk)
{
  fails("local f = load(string.dump(function() end))\n", "g.lua:1: error: load: binary chunks are not allowed");
  fails("local f = load('return 1', 'x', 'b')\n", "mode 'b' is not allowed");
  loads("assert(load('return 1 + 1')() == 2)\n"
        "local f, msg = load('return +')\nassert(f == nil and msg:find('unexpected'))\n"
        "assert(load('return y', 'c', 't', { y = 5 })() == 5)\n");
}
END_TEST

START_TEST(sandbox_binary_file)
{
  char err[1024];
  const char *p = put("bin.lua", "\x1bLua\x54");
  int rc = run(opts(p), err, sizeof err);
  ck_assert_int_eq(rc, 1);
  ck_assert_ptr_nonnull(strstr(err, "binary chunks are not allowed"));
}
END_TEST

START_TEST(sandbox_instruction_limit)
{
  char err[1024];
  FrontOptions o = opts(put("g.lua", "local n = 0\nwhile true do n = n + 1 end\n"));
  o.instr_limit = 100000;
  ck_assert_int_eq(run(o, err, sizeof err), 1);
  ck_assert_ptr_nonnull(strstr(err, "g.lua:2: error: instruction limit exceeded (100000 instructions)"));
}
END_TEST

START_TEST(sandbox_instruction_limit_pcall)
{
  fails("pcall(function() while true do end end)\nerror('escaped')\n",
        "g.lua:1: error: instruction limit exceeded");
}
END_TEST

START_TEST(sandbox_memory_limit)
{
  char err[1024];
  FrontOptions o = opts(put("g.lua", "local t = {}\nfor i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end\n"));
  o.mem_limit = 4u << 20;
  ck_assert_int_eq(run(o, err, sizeof err), 1);
  ck_assert_ptr_nonnull(strstr(err, "g.lua: error: memory limit exceeded (4194304 bytes)"));
  fails("local ok = pcall(string.rep, 'x', 1 << 30)\nerror('escaped')\n", "memory limit exceeded");
}
END_TEST

START_TEST(sandbox_unknown_global)
{
  fails("local x = input('x', 'f32', {2})\nlocal y = sigmod(x)\n",
        "g.lua:2: error: unknown global 'sigmod' (did you mean 'sigmoid'?)");
  fails("local y = frobnicate\n", "unknown global 'frobnicate'\n");
}
END_TEST

/* ------------------------------------------------------------------ names */

/* Hostile text, as Lua expressions: a comment closed by a line splice, a
 * preprocessor line, quotes, a NUL byte, 100 KB, and names that are just
 * wrong (empty, a leading digit, a space, ':' as in "alias:", a '/'). */
static const char *const hostile[] = {
  "'a\\\\\\r*/ int x; /*'", "'\\n#include <stdio.h>'", "'q\"uo\\'te'", "'nul\\0byte'",
  "string.rep('a', 100000)", "''", "'1abc'", "'a b'", "'alias:x'", "'a/b'", "'a\\r'",
};

/* Every string argument of the graph API that names something, S the
 * hostile text, and what the error at line 2 begins with. */
static const struct { const char *call, *want; } named[] = {
  {"kind(S)", "kind: the model kind "},
  {"local x = input(S, 'i32', {2})", "input: the name "},
  {"local x = state(S, {2})", "state: the name "},
  {"local w = param(S, {2}, 'zeros')", "param: the name "},
  {"local w = find_param(S)", "find_param: the name "},
  {"alias(S, param('w', {2}, 'zeros'))", "alias: the name "},
  {"output(S, input('x', 'f32', {2}))", "output: the name "},
  {"local y = dropout(input('x', 'f32', {2}), 0.1, S)", "dropout: the slot "},
  {"local p = params { [S] = 1 }", "params: the hyper-parameter "},
  {"local x = input('x', S, {2})", "input: dtype must be \"i32\" or \"f32\", got "},
  {"local w = param('w', {2}, S)", "param 'w': unknown init "},
  {"local m = require(S)", "require "},
};

START_TEST(names_hostile)
{
  char src[512], want[256], err[2048];
  for (size_t c = 0; c < sizeof named / sizeof named[0]; c++)
    for (size_t h = 0; h < sizeof hostile / sizeof hostile[0]; h++) {
      snprintf(src, sizeof src, "local S = %s\n%s\n", hostile[h], named[c].call);
      snprintf(want, sizeof want, "g.lua:2: error: %s", named[c].want);
      int rc = run(opts(put("g.lua", src)), err, sizeof err);
      if (rc != 1 || !strstr(err, want))
        ck_abort_msg("status %d, stderr:\n%s\nexpected status 1 and: %s\nfor:\n%s", rc, err, want, src);
      /* one line, with the text shown escaped and cut short */
      ck_assert_msg(strchr(err, '\n') == err + strlen(err) - 1 && !strchr(err, '\r') && strlen(err) < 600,
                    "the message is not one short line: %s", err);
    }
  /* string values may be any printable text, not control characters, at most 1024 bytes */
  fails("local S = 'a\\r*/'\nlocal p = params { act = S }\n",
        "g.lua:2: error: params: the default of 'act', \"a\\x0d*/\", holds a control character");
  fails("local p = params { act = ('x'):rep(1025) }\n", "g.lua:1: error: params: the default of 'act'");
  fails_def("local p = params { act = 'tanh' }\n", (Define[]){{"act", "a\nb"}}, 1,
            "-D act=a\nb: expected a string (at most 1024 bytes of printable text)");
  /* ordinary names and values pass */
  loads("kind 'RNN_TANH'\nlocal p = params { act = 'tanh */ \"?\?/\\\\', _x9 = 1 }\n"
        "local x = input('x', 'f32', {2})\n"
        "output('encoder.layers.0.self_attn.in_proj_weight', param('_a.B9', {2}, 'zeros') + x)\n"
        "assert(find_param(('a'):rep(128)) == nil)\n");
  fails("local w = find_param(('a'):rep(129))\n", "find_param: the name \"aaaa");
}
END_TEST

/* Runs a C file with the strings escaped as emit_c escapes them, in
 * comments and in literals, through clang (warnings are errors, trigraphs
 * on): the program prints every literal back. */
START_TEST(names_escape)
{
  static const char *const text[] = {
    "a\\\r*/ int x; /*", "\n#include <stdio.h>\n", "q\"uote'", "?\?/\n?\?=?\?'", "back\\", "*/", "/",
    "*", "x/", "x*", "/*", "tab\tdel\x7f\x80\xff", "encoder.layers.0.weight", "\\\n", "",
  };
  int n = (int)(sizeof text / sizeof text[0]);
  /* names come out unchanged, and a few exact forms */
  for (int lit = 0; lit < 2; lit++) {
    char *e = emit_c_escape("encoder.layers.0.self_attn.in_proj_weight", lit);
    ck_assert_str_eq(e, "encoder.layers.0.self_attn.in_proj_weight");
    free(e);
  }
  struct { const char *s; bool lit; const char *want; } exact[] = {
    {"a*/b", false, "a* /b"}, {"a/*b", false, "a/ *b"}, {"x/", false, "x/ "}, {"x\\\r", false, "x\\134\\015"},
    {"?\?/", true, "?\\?/"}, {"q\"\\", true, "q\\\"\\\\"}, {"\n", true, "\\012"}, {"graphs/lstm.lua", false, "graphs/lstm.lua"},
  };
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
    char *e = emit_c_escape(exact[i].s, exact[i].lit);
    ck_assert_str_eq(e, exact[i].want);
    free(e);
  }
  char path[300], prog[300], out[300];
  snprintf(path, sizeof path, "%s/esc.c", dir);
  snprintf(prog, sizeof prog, "%s/esc", dir);
  snprintf(out, sizeof out, "%s/esc.out", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("#include <stdio.h>\n#include <string.h>\n", f);
  fputs("static const char *const text[] = {\n", f);
  for (int i = 0; i < n; i++) {
    char *c = emit_c_escape(text[i], false), *l = emit_c_escape(text[i], true);
    fprintf(f, "  /* %s */ \"%s\",   /* %s */\n", c, l, c);
    free(c);
    free(l);
  }
  fprintf(f, "};\nint main(void)\n{\n  for (int i = 0; i < %d; i++)\n"
             "    printf(\"%%zu:%%s\", strlen(text[i]), text[i]);\n  return 0;\n}\n", n);
  fclose(f);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "clang -std=c11 -trigraphs -Wall -Wextra -Wcomment -Wtrigraphs -Werror -o %s %s "
           "&& %s > %s", prog, path, prog, out);
  ck_assert_msg(system(cmd) == 0, "%s does not build and run", path);
  char want[2048] = "", got[2048];
  for (int i = 0; i < n; i++)
    snprintf(want + strlen(want), sizeof want - strlen(want), "%zu:%s", strlen(text[i]), text[i]);
  f = fopen(out, "rb");
  ck_assert_ptr_nonnull(f);
  size_t k = fread(got, 1, sizeof got - 1, f);
  fclose(f);
  got[k] = 0;
  ck_assert_str_eq(got, want);
}
END_TEST

/* --------------------------------------------- C functions and the limits */

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* fails(), and within max_s seconds. */
static void fails_within(double max_s, const char *src, const char *want)
{
  double t0 = now();
  fails(src, want);
  double dt = now() - t0;
  ck_assert_msg(dt < max_s, "took %.2f s, more than %.1f s: %s", dt, max_s, src);
}

START_TEST(limits_c_loops)
{
  /* each looped in C for hours, where the count hook does not run */
  fails_within(2, "local x = 1\nlocal s = string.rep('', math.maxinteger)\n",
               "g.lua:2: error: string.rep: this call could take");
  fails_within(2, "local s = (''):rep(1e15, '')\n", "g.lua:1: error: string.rep: this call could take");
  fails_within(2, "local s = ('x'):rep(1 << 40)\n", "g.lua:1: error: string.rep: memory limit exceeded");
  fails_within(2, "\ntable.move({}, 1, math.maxinteger - 1, 1, {})\n",
               "g.lua:2: error: table.move: this call could take");
  fails_within(2, "local s = ('a'):rep(40)\nlocal i = string.find(s, ('a*'):rep(30) .. 'b')\n",
               "g.lua:2: error: string.find: this call could take");
  fails_within(2, "local s = ('a'):rep(40)\nlocal i = s:match(('a-'):rep(30) .. 'b')\n",
               "g.lua:2: error: string.match: this call could take");
  fails_within(2, "local s = ('a'):rep(40)\nlocal i = s:gsub(('.?'):rep(60) .. 'b', '')\n",
               "g.lua:2: error: string.gsub: this call could take");
  fails_within(2, "local s = ('a'):rep(40)\nfor w in s:gmatch(('a+'):rep(30) .. 'b') do end\n",
               "g.lua:2: error: string.gmatch: this call could take");
  /* a table whose __len is maxinteger: insert, remove, sort and concat loop over it */
  const char *big = "local t = setmetatable({}, { __len = function() return math.maxinteger end, "
                    "__index = rawlen })\n";
  char src[512];
  const char *call[] = {"table.insert(t, 1, 0)", "table.remove(t, 1)", "table.sort(t)", "table.concat(t)"};
  const char *fn[] = {"table.insert", "table.remove", "table.sort", "table.concat"};
  for (int i = 0; i < 4; i++) {
    char want[128];
    snprintf(src, sizeof src, "%s%s\n", big, call[i]);
    snprintf(want, sizeof want, "g.lua:2: error: %s: this call could take", fn[i]);
    fails_within(2, src, want);
  }
  /* pcall cannot catch the refusal */
  fails_within(2, "pcall(string.rep, '', 1e18)\nerror('escaped')\n", "g.lua:1: error: string.rep");
}
END_TEST

START_TEST(limits_gc)
{
  /* Lua runs finalizers with hooks off, and at lua_close */
  fails_within(2, "local t = {}\nsetmetatable(t, { __gc = function() while true do end end })\n",
               "g.lua:2: error: setmetatable: a metatable with __gc is not allowed");
  fails_within(2, "local mt = { __gc = false }\nlocal t = setmetatable({}, mt)\n",
               "g.lua:2: error: setmetatable: a metatable with __gc");
  fails("local f = collectgarbage\nf('stop')\n", "g.lua:1: error: 'collectgarbage' is not available");
}
END_TEST

START_TEST(limits_ordinary_use)
{
  /* what graph files do with these functions still works */
  loads("assert(('a.b.c'):gsub('%.', '_') == 'a_b_c')\n"
        "local a, b = ('encoder.layers.0.weight'):match('^(.-)%.(.*)$')\n"
        "assert(a == 'encoder' and b == 'layers.0.weight')\n"
        "local n = 0\nfor w in ('x,y,z'):gmatch('[^,]+') do n = n + 1 end\nassert(n == 3)\n"
        "assert(('hello world'):find('o w', 1, true) == 5 and ('f(a(b)c)'):match('%b()') == '(a(b)c)')\n"
        "assert(('THE (quick) fox'):find('%f[%a]%a+%f[%A]') == 1)\n"
        "local t = {3, 1, 2}\ntable.sort(t)\ntable.insert(t, 4)\nassert(table.remove(t) == 4)\n"
        "assert(table.concat(t, ',') == '1,2,3' and #table.move(t, 1, 3, 1, {}) == 3)\n"
        "assert(('ab'):rep(3, '-') == 'ab-ab-ab' and #('x'):rep(1000000) == 1000000)\n"
        "assert(setmetatable({}, { __index = function() return 1 end }).x == 1)\n"
        "assert(not pcall(string.find, 'x', '%'))\n");
}
END_TEST

/* run() with a time limit and an instruction limit that does not end it first */
static int run_timed(const char *src, double limit, char *err, size_t errlen, double *took)
{
  FrontOptions o = opts(put("g.lua", src));
  o.instr_limit = 1000000000000000000;
  o.time_limit = limit;
  double t0 = now();
  int rc = run(o, err, errlen);
  *took = now() - t0;
  return rc;
}

START_TEST(limits_time)
{
  char err[1024];
  double took;
  /* Lua code: the count hook stops it at the user's line */
  int rc = run_timed("local n = 0\nwhile true do n = n + 1 end\n", 0.3, err, sizeof err, &took);
  ck_assert_msg(rc == 1 && strstr(err, "g.lua:2: error: the graph file ran longer than the time limit "
                                       "(0.3 s; --time-limit)\n"), "status %d: %s", rc, err);
  ck_assert_msg(took < 2, "took %.2f s", took);
  /* a C function that does not return (a backtracking pattern under a huge
   * instruction limit): the timer itself ends the program a second later */
  rc = run_timed("local s = ('a'):rep(30)\nlocal i = s:find(('a*'):rep(10) .. 'b')\n", 0.2, err, sizeof err,
                 &took);
  ck_assert_msg(rc == 1 && strstr(err, "g.lua: error: the graph file ran longer than the time limit "
                                       "(0.2 s; --time-limit)\n"), "status %d: %s", rc, err);
  ck_assert_msg(took < 4, "took %.2f s", took);
  /* the default is 10 s */
  rc = run_timed("while true do end\n", 0, err, sizeof err, &took);
  ck_assert_msg(rc == 1 && strstr(err, "g.lua:1: error: the graph file ran longer than the time limit "
                                       "(10 s; --time-limit)\n"), "status %d: %s", rc, err);
  ck_assert_msg(took > 9.5 && took < 15, "took %.2f s", took);
}
END_TEST

/* ------------------------------------------------------------------ files */

START_TEST(files_not_regular)
{
  char err[1024], fifo[300];
  snprintf(fifo, sizeof fifo, "%s/fifo.lua", dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  double t0 = now();
  int rc = run(opts(fifo), err, sizeof err);
  ck_assert_msg(rc == 1 && strstr(err, "fifo.lua: error: is not a regular file"), "status %d: %s", rc, err);
  rc = run(opts("/dev/zero"), err, sizeof err);
  ck_assert_msg(rc == 1 && strstr(err, "/dev/zero: error: is not a regular file"), "status %d: %s", rc, err);
  rc = run(opts(dir), err, sizeof err);
  ck_assert_msg(rc == 1 && strstr(err, "error: is a folder"), "status %d: %s", rc, err);
  /* a module that is a FIFO: at the require line */
  char mod[300];
  snprintf(mod, sizeof mod, "%s/m.lua", dir);
  ck_assert_int_eq(mkfifo(mod, 0600), 0);
  fails("local x = 1\nlocal m = require 'm'\n", "g.lua:2: error: require 'm': ");
  fails("local m = require 'm'\n", "m.lua is not a regular file");
  ck_assert_msg(now() - t0 < 5, "took %.2f s", now() - t0);
}
END_TEST

START_TEST(files_size_cap)
{
  char path[300];
  snprintf(path, sizeof path, "%s/big.lua", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  for (int i = 0; i < (4 << 20) / 64 + 1; i++)
    fputs("-- a comment line of sixty-four bytes, over and over again ....\n", f);
  fclose(f);
  char err[1024];
  int rc = run(opts(path), err, sizeof err);
  ck_assert_msg(rc == 1 && strstr(err, "big.lua: error: is 4194368 bytes; graph files and modules may be at "
                                       "most 4194304 bytes"), "status %d: %s", rc, err);
  char mod[300];
  snprintf(mod, sizeof mod, "%s/m.lua", dir);
  ck_assert_int_eq(rename(path, mod), 0);
  fails("local m = require 'm'\n", "g.lua:1: error: require 'm': ");
}
END_TEST

/* --------------------------------------------------------------- errors */

START_TEST(errors_lua)
{
  fails("local x = \n= 3\n", "g.lua:2: error: unexpected symbol near '='");
  fails("local t = nil\nlocal y = t.x\n", "g.lua:2: error: attempt to index a nil value");
  fails("error('boom')\n", "g.lua:1: error: boom\n");
  fails("error({})\n", "g.lua:1: error: error object is a table value");
  fails("assert(false, 'nope')\n", "g.lua:1: error: nope");
}
END_TEST

START_TEST(errors_arguments)
{
  fails("local y = tanh(3)\n", "g.lua:1: error: tanh: argument 1 must be a tensor, got number");
  fails("local x = input('x', 'f32', {2})\nlocal y = x + 'a'\n", "add: argument 2 must be a tensor or a number, got string");
  fails("local x = input('x', 'f16', {2})\n", "dtype must be \"i32\" or \"f32\"");
  fails("local x = input('x', 'f32', {2, 0})\n", "shape entry 2 must be a positive integer or seq(), got 0");
  fails("local x = input('x', 'f32', 5)\n", "shape must be a table");
  fails("local w = param('w', {2}, 'gaussian')\n", "unknown init \"gaussian\"");
  fails("local w = param('w', {2}, {uniform = -1})\n", "needs a positive number");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = matmul(x, x, {tc = true})\n", "matmul: unknown option 'tc'");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = x ^ 'a'\n", "pow: argument 2 must be a tensor or a number, got string");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = mean(x, 1, 1)\n", "mean: keepdim must be a boolean, got number");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = mean(x, nil, true)\n", "mean: keepdim needs a dim");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = mean(x, 2)\n", "mean: axis 2 out of range");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = where(x, x)\n", "where: argument 3 must be a tensor or a number, got no value");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = where(1, x, x)\n", "where: argument 1 must be a tensor, got number");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = gelu(x, 'tanh')\n", "gelu: takes 1 argument, got 2");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = log_softmax(x, -1)\n", "log_softmax: takes at most 1 argument, got 2");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = concat({x, x}, 0, 1)\n", "concat: a list { a, b, ... } takes only the axis");
  fails("local x = triu_mask(1)\n", "triu_mask: takes at most 0 arguments, got 1 (triu_mask())");
  fails("local w = param('w', {2}, 'zeros', 1)\n", "param: takes at most 3 arguments, got 4");
  fails("local x = input('x', 'f32', {2, 3})\nx.shape = 1\n", "tensors are read-only");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = x.size\n", "tensor has no field 'size'");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = slice(x, 2, 0, 1)\n", "slice: axis 2 out of range");
  fails("local x = input('x', 'f32', {2, 3})\nlocal y = transpose(x, {0, 0})\n", "axis 0 appears twice");
}
END_TEST

START_TEST(errors_ir_location)
{
  /* shape errors found by ir.c carry the user's line */
  fails("local x = input('x', 'f32', {seq(), 4, 200})\n\nlocal w = param('w', {300, 10}, 'zeros')\n"
        "local y = matmul(x, w)\n", "g.lua:4: error: matmul: inner dimensions differ (200 vs 300)");
  /* ... also when the op is built inside the layer library */
  fails("local nn = require 'nn'\nlocal x = input('x', 'f32', {seq(), 4, 16})\n"
        "local y = nn.linear('proj', x, 32, 8)\n", "g.lua:3: error: matmul: inner dimensions differ");
  /* error(msg, 0) from the library: the user's line */
  fails("local nn = require 'nn'\nlocal x = input('x', 'f32', {seq(), 4, 16})\n"
        "local y, h = nn.rnn('rnn', x, state('h', {1, 4, 8}), 16, 8, 1, 'sigmoid', 0)\n",
        "g.lua:3: error: rnn: nonlinearity must be \"tanh\" or \"relu\"");
}
END_TEST

/* ------------------------------------------------------ hyper-parameters */

static const char *psrc =
  "local p = params { nhid = 200, dropout = 0.2, tied = false, act = 'tanh' }\n"
  "local x = input('x', 'f32', { batch(), p.nhid })\n"
  "output('t', x)\n"
  "assert(math.type(p.nhid) == 'integer' and math.type(p.dropout) == 'float')\n"
  "assert(type(p.tied) == 'boolean' and type(p.act) == 'string')\n"
  "assert(p.bptt == 35 or p.bptt == 7)\n";

START_TEST(hyper_defaults)
{
  Hyper *h;
  int n;
  Graph *g = load(psrc, NULL, 0, &h, &n);
  ck_assert_int_eq(n, 7);
  const char *order[] = {"bptt", "batch_size", "eval_batch_size", "act", "dropout", "nhid", "tied"};
  const char *value[] = {"35", "20", "10", "tanh", "0.2", "200", "false"};
  for (int i = 0; i < n; i++) {
    ck_assert_str_eq(h[i].name, order[i]);
    ck_assert_str_eq(h[i].value, value[i]);
  }
  ck_assert_int_eq(g->max_seq, 35);
  ck_assert_int_eq(g->batch, 20);
  ck_assert_int_eq(g->node[0].shape.dim[1], 200);
}
END_TEST

START_TEST(hyper_overrides)
{
  Define d[] = {{"nhid", "650"}, {"dropout", "0.5"}, {"tied", "true"}, {"act", "relu"}, {"bptt", "7"},
                {"batch_size", "3"}, {"nhid", "64"}};
  Hyper *h;
  int n;
  Graph *g = load(psrc, d, 7, &h, &n);
  ck_assert_str_eq(hyper(h, n, "nhid"), "64");    /* the last -D wins */
  ck_assert_str_eq(hyper(h, n, "dropout"), "0.5");
  ck_assert_str_eq(hyper(h, n, "tied"), "true");
  ck_assert_str_eq(hyper(h, n, "act"), "relu");
  ck_assert_int_eq(g->max_seq, 7);
  ck_assert_int_eq(g->batch, 3);
  ck_assert_int_eq(g->node[0].shape.dim[0], 3);
  ck_assert_int_eq(g->node[0].shape.dim[1], 64);
}
END_TEST

START_TEST(hyper_number_from_integer_text)
{
  Define d[] = {{"dropout", "1"}};
  Hyper *h;
  int n;
  load("local p = params { dropout = 0.5 }\nassert(math.type(p.dropout) == 'float' and p.dropout == 1)\n",
       d, 1, &h, &n);
  ck_assert_str_eq(hyper(h, n, "dropout"), "1");
}
END_TEST

START_TEST(hyper_errors)
{
  fails_def(psrc, (Define[]){{"nhidd", "3"}}, 1,
            "g.lua: error: -D nhidd=3: unknown hyper-parameter 'nhidd' (known: bptt, batch_size, "
            "eval_batch_size, act, dropout, nhid, tied)");
  fails_def(psrc, (Define[]){{"nhid", "abc"}}, 1, "g.lua: error: -D nhid=abc: expected an integer");
  fails_def(psrc, (Define[]){{"nhid", "2.5"}}, 1, "-D nhid=2.5: expected an integer");
  fails_def(psrc, (Define[]){{"dropout", "x"}}, 1, "-D dropout=x: expected a number");
  fails_def(psrc, (Define[]){{"tied", "1"}}, 1, "-D tied=1: expected a boolean (true or false)");
  fails_def(psrc, (Define[]){{"bptt", "0"}}, 1, "-D bptt=0: must be at least 1");
  fails("local p = params { nhid = 2 }\nlocal q = p.nhdi\n", "g.lua:2: error: unknown hyper-parameter 'nhdi'");
  fails("local p = params { nhid = 2 }\nlocal q = params { nhid = 3 }\n", "'nhid' is declared twice");
  fails("local p = params { x = {} }\n", "'x' has a table default");
  fails("local p = params { bptt = 0.5 }\n", "'bptt' is a built-in and must be a positive integer");
  fails("local b = batch()\nlocal p = params { batch_size = 7 }\n", "must be declared before seq() or batch()");
}
END_TEST

START_TEST(hyper_builtin_defaults)
{
  Hyper *h;
  int n;
  Graph *g = load("local p = params { bptt = 70, batch_size = 8 }\nassert(batch() == 8 and p.bptt == 70)\n",
                  NULL, 0, &h, &n);
  ck_assert_int_eq(g->max_seq, 70);
  ck_assert_int_eq(g->batch, 8);
  ck_assert_int_eq(n, 3);
  ck_assert_str_eq(hyper(h, n, "bptt"), "70");
}
END_TEST

START_TEST(hyper_batch_specialisations)
{
  const char *src = "local x = input('x', 'i32', {seq(), batch()})\n";
  int want[] = {20, 10, 1, 5};
  int batch[] = {0, -1, 1, 5};
  for (int i = 0; i < 4; i++) {
    FrontOptions o = opts(put("g.lua", src));
    o.batch = batch[i];
    Hyper *h;
    int n;
    Graph *g = front_load(&o, &h, &n);
    ck_assert_int_eq(g->batch, want[i]);
    ck_assert_int_eq(g->node[0].shape.dim[1], want[i]);
  }
}
END_TEST

/* ---------------------------------------------------------------- tensors */

START_TEST(tensor_fields)
{
  loads("local x = input('x', 'f32', { seq(), batch(), 8 })\n"
        "local s = x.shape\n"
        "assert(s[1] == 'T' and s[2] == 20 and s[3] == 8 and x.rank == 3 and x.dtype == 'f32')\n"
        "local f = reshape(x, { -1, 8 })\n"
        "assert(f.shape[1] == '20*T' and f.shape[2] == 8)\n"
        "local r = reshape(f, x.shape)\n"
        "assert(r.shape[1] == 'T' and r.op == 'reshape')\n"
        "assert(reshape(f, { seq() * 20, 8 }).shape[1] == '20*T')\n"
        "assert(tostring(x):find('input f32 %(T, 20, 8%)'))\n"
        "assert(x:tanh():sigmoid().op == 'sigmoid')\n"
        "assert(training() == true)\n");
}
END_TEST

/* Sizes in T: seq() - 1, k * (seq() - 1), seq() + k; slices of the
 * sequence dimension; t.shape shows and reads them back. */
START_TEST(tensor_seq_sizes)
{
  loads("local h = input('h', 'f32', { seq(), 2, 3 })\n"
        "assert(tostring(seq() - 1) == 'T-1' and tostring(2 * (seq() - 1)) == '2*T-2')\n"
        "assert(tostring(seq() + 2) == 'T+2' and tostring(3 + seq()) == 'T+3')\n"
        "local d = slice(h, 0, 1, seq() - 1) - slice(h, 0, 0, seq() - 1)\n"
        "assert(d.shape[1] == 'T-1' and d.shape[2] == 2)\n"
        "assert(broadcast(const(1), d.shape).shape[1] == 'T-1')\n"
        "assert(slice(h, 0, 0, 1).shape[1] == 1)\n"
        "assert(slice(input('pe', 'f32', { 40, 3 }), 0, 0, seq() + 5).shape[1] == 'T+5')\n");
  fails("local h = input('h', 'f32', { seq(), 2 })\nlocal d = seq() - 2\n",
        "g.lua:2: error: seq(): T-2 is negative when T = 1");
  fails("local d = 5 - seq()\n", "g.lua:1: error: seq(): 5 - seq() is not a size (seq() - k is)");
  fails("local d = seq() + seq()\n", "g.lua:1: error: seq() + seq(): a dimension can hold T only once");
  fails("local h = input('h', 'f32', { seq(), 2 })\nlocal d = slice(h, 0, 1, seq() - 1)\n"
        "local y = scan { xs = h, body = function(x) return { x * d } end }\n",
        "g.lua:3: error: mul: a tensor with a shifted sequence dimension, as (T-1, 2), "
        "cannot be made in a scan body");
  fails("local h = input('h', 'f32', { seq(), 2 })\nlocal d = slice(h, 0, 1, seq() - 1)\n"
        "local y = scan { xs = d, body = function(x) return { x } end }\n",
        "g.lua:3: error: scan: xs[1] has shape (T-1, 2); its first dimension must be the sequence (T)");
  fails("local h = input('h', 'f32', { seq(), 2 })\nlocal d = slice(h, 0, 1, seq() - 1)\n"
        "local y = d * reshape(h, { 2, seq() })\n", "g.lua:3: error: mul: shapes");
  fails("local h = input('h', 'f32', { seq(), 2, 3 })\nlocal y = reshape(h, { seq() - 1, 6 })\n",
        "g.lua:2: error: reshape: takes no tensor with a shifted sequence dimension, as (T-1, 6)");
}
END_TEST

START_TEST(tensor_numbers_become_consts)
{
  Graph *g = load("local x = input('x', 'f32', {4})\noutput('y', 1 - x * 2)\n", NULL, 0, NULL, NULL);
  ck_assert_int_eq(count_op(g, OP_CONST), 2);
  int sub = find_op(g, OP_SUB, 0);
  ck_assert_int_eq(g->node[g->node[sub].in[0]].op, OP_CONST);
  ck_assert_double_eq(g->node[g->node[sub].in[0]].a.f, 1);
}
END_TEST

START_TEST(tensor_attributes)
{
  Graph *g = load("local x = input('x', 'f32', {seq(), 3, 4})\n"
                  "output('a', transpose(x, {2, 0, 1}))\n"
                  "output('b', transpose(x, 0, -1))\n"
                  "output('c', slice(input('pe', 'f32', {50, 4}), 0, 2, seq()))\n"
                  "output('d', concat(x, x, -1))\n"
                  "output('e', arange(10, 1, 0.5))\n"
                  "output('f', matmul(x, param('w', {5, 4}, 'zeros'), {tb = true}))\n",
                  NULL, 0, NULL, NULL);
  Node *a = &g->node[find_op(g, OP_TRANSPOSE, 0)];
  ck_assert_int_eq(a->a.perm[0], 2);
  ck_assert_int_eq(a->a.perm[1], 0);
  ck_assert_int_eq(a->a.perm[2], 1);
  Node *b = &g->node[find_op(g, OP_TRANSPOSE, 1)];
  ck_assert_int_eq(b->a.perm[0], 2);
  ck_assert_int_eq(b->a.perm[2], 0);
  ck_assert_str_eq(shape_str(&b->shape), "(4, 3, T)");
  Node *c = &g->node[find_op(g, OP_SLICE, 0)];
  ck_assert_int_eq(c->a.start, 2);
  ck_assert_int_eq(c->a.len, -1);
  ck_assert_str_eq(shape_str(&c->shape), "(T, 4)");
  Node *d = &g->node[find_op(g, OP_CONCAT, 0)];
  ck_assert_int_eq(d->a.axis, 2);
  Node *e = &g->node[find_op(g, OP_ARANGE, 0)];
  ck_assert_double_eq(e->a.f, 1);
  ck_assert_double_eq(e->a.f2, 0.5);
  Node *f = &g->node[find_op(g, OP_MATMUL, 0)];
  ck_assert(f->a.tb && !f->a.ta);
  ck_assert_str_eq(shape_str(&f->shape), "(T, 3, 5)");
}
END_TEST

START_TEST(tensor_dropout)
{
  const char *src = "local p = params { dropout = 0.3, dropouth = 0.1 }\n"
                    "local x = input('x', 'f32', {4})\n"
                    "local y = dropout(dropout(x, p.dropout), p.dropouth, 'dropouth')\n"
                    "output('y', dropout(y, 0.2))\n";
  Graph *g = load(src, NULL, 0, NULL, NULL);
  ck_assert_int_eq(g->ndropout, 3);
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 3);
  int want_slot[] = {0, 1, 0};
  double want_p[] = {0.3, 0.1, 0.2};
  for (int k = 0; k < 3; k++) {
    Node *n = &g->node[find_op(g, OP_DROPOUT, k)];
    ck_assert_int_eq(n->a.id, k);
    ck_assert_int_eq(n->a.id2, want_slot[k]);
    ck_assert_str_eq(n->a.name, want_slot[k] ? "dropouth" : "dropout");
    ck_assert_double_eq_tol(n->a.f, want_p[k], 1e-12);
  }
  FrontOptions o = opts(put("g.lua", src));
  o.training = false;
  Hyper *h;
  int n;
  g = front_load(&o, &h, &n);
  ck_assert_int_eq(g->ndropout, 0);
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 0);
  ck_assert_int_eq(ir_find_output(g, "y"), 0);   /* the input itself */
  fails("local x = input('x', 'f32', {4})\nlocal y = dropout(x, 0.5, 'nope')\n", "slot 'nope' must name");
  fails("local p = params { dropout = 'x' }\nlocal x = input('x', 'f32', {4})\nlocal y = dropout(x, 0.5)\n",
        "slot 'dropout' must name a numeric");
  g = load("local x = input('x', 'f32', {4})\noutput('y', dropout(x, 0.5))\n", NULL, 0, NULL, NULL);
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 1);   /* the default slot need not be declared */
  fails("local p = params { dropout = 0.5 }\nlocal x = input('x', 'f32', {4})\nlocal y = dropout(x, 1)\n",
        "probability 1 is not in [0, 1)");
}
END_TEST

START_TEST(tensor_kind_and_alias)
{
  Graph *g = load("kind 'LSTM'\nlocal nn = require 'nn'\n"
                  "local t = input('t', 'i32', {seq(), batch()})\n"
                  "local e = nn.embedding('encoder', t, 30, 8)\n"
                  "output('y', nn.linear('decoder', e, 8, 30, { tie = 'encoder.weight' }))\n",
                  NULL, 0, NULL, NULL);
  ck_assert_str_eq(g->kind, "LSTM");
  int w = ir_find_param(g, "encoder.weight");
  ck_assert_int_ge(w, 0);
  ck_assert_int_lt(ir_find_param(g, "decoder.weight"), 0);
  ck_assert_int_ge(ir_find_param(g, "decoder.bias"), 0);
  ck_assert_int_eq(ir_find_output(g, "alias:decoder.weight"), w);
}
END_TEST

/* ------------------------------------------------------------------ scan */

static const char *scan_src =
  "local x  = input('x', 'f32', { seq(), batch(), 4 })\n"            /* 1 */
  "local h0 = state('h', { batch(), 4 })\n"
  "local w  = param('w', { 4, 4 }, 'xavier')\n"
  "local ys, fin = scan {\n"
  "  xs = { x }, init = { h0 },\n"                                   /* 5 */
  "  body = function(x_t, h)\n"
  "    local h2 = tanh(x_t + matmul(h, w))\n"
  "    return { h2 }, { h2 }\n"
  "  end,\n"
  "}\n"                                                              /* 10 */
  "output('y', ys[1])\n"
  "output('h', fin[1])\n";

START_TEST(scan_builds_loop)
{
  Graph *g = load(scan_src, NULL, 0, NULL, NULL);
  ck_assert_int_eq(g->nloop, 2);
  ck_assert(!g->loop[1].reverse);
  ck_assert_int_eq(g->cur_loop, 0);
  int step = find_op(g, OP_STEP, 0), carry = find_op(g, OP_CARRY, 0);
  int tanh_ = find_op(g, OP_TANH, 0), stack = find_op(g, OP_STACK, 0), fin = find_op(g, OP_FINAL, 0);
  ck_assert_int_ge(step, 0);
  ck_assert_int_eq(g->node[step].loop, 1);
  ck_assert_int_eq(g->node[carry].loop, 1);
  ck_assert_int_eq(g->node[carry].in[1], tanh_);
  ck_assert_int_eq(g->node[tanh_].loop, 1);
  ck_assert_int_eq(g->node[stack].loop, 0);
  ck_assert_int_eq(g->node[stack].in[0], tanh_);
  ck_assert_int_eq(g->node[fin].in[0], carry);
  ck_assert_str_eq(shape_str(&g->node[step].shape), "(20, 4)");
  ck_assert_str_eq(shape_str(&g->node[stack].shape), "(T, 20, 4)");
  ck_assert_str_eq(shape_str(&g->node[fin].shape), "(20, 4)");
  ck_assert_int_eq(ir_find_output(g, "y"), stack);
  ck_assert_int_eq(ir_find_output(g, "h"), fin);
  char err[256];
  ck_assert_int_eq(verify(g, err, sizeof err), 0);
}
END_TEST

START_TEST(scan_reverse_and_methods)
{
  Graph *g = load("local x = input('x', 'f32', { seq(), 2, 3 })\n"
                  "local ys, fin = scan { xs = x, reverse = true,\n"
                  "  body = function(x_t) return { x_t:exp() } end }\n"
                  "assert(#fin == 0 and ys[1].shape[1] == 'T')\n"
                  "output('y', ys[1])\n", NULL, 0, NULL, NULL);
  ck_assert(g->loop[1].reverse);
  ck_assert_int_eq(count_op(g, OP_CARRY), 0);
}
END_TEST

START_TEST(scan_errors)
{
  fails("local x = input('x', 'f32', { seq(), 2, 3 })\nlocal h = state('h', {2, 3})\n"
        "local ys = scan { xs = { x }, init = { h, h },\n body = function(x_t, a, b) return { a }, { a } end }\n",
        "g.lua:3: error: scan: the body returned 1 next state for 2 initial states");
  fails("local x = input('x', 'f32', { seq(), 2, 3 })\nlocal h = state('h', {2, 3})\n"
        "local ys = scan { xs = { x }, init = { h },\n body = function(x_t, a) return { a }, { slice(a, 1, 0, 2) } end }\n",
        "g.lua:3: error: scan: next state 1 has shape (2, 2), but its initial state has shape (2, 3)");
  fails("local x = input('x', 'f32', { 2, 3 })\nlocal ys = scan { xs = { x }, body = function(x_t) return {} end }\n",
        "g.lua:2: error: scan: xs[1] has shape (2, 3); its first dimension must be the sequence (T)");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, body = function(x_t)\n"
        "  error('inside')\nend }\n", "g.lua:3: error: inside");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, body = function(x_t)\n"
        "  return scan { xs = { x }, body = function(y) return {} end }\nend }\n",
        "g.lua:3: error: scan: a scan inside a scan body is not supported");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, body = function(x_t)\n"
        "  return { x }\nend }\n", "g.lua:2: error: scan: output 1 of the body is a tensor from outside the body whose shape (T, 3) "
        "depends on the sequence; a per-step output cannot");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, body = 3 }\n",
        "scan: body must be a function, got number");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, bodyy = 3 }\n",
        "scan: unknown option 'bodyy'");
  fails("local x = input('x', 'f32', { seq(), 3 })\nlocal ys = scan { xs = { x }, body = function(x_t)\n"
        "  return 1, 2\nend }\n", "scan: the body must return two lists");
}
END_TEST

/* -------------------------------------------------------------- locations */

START_TEST(location_user_line)
{
  Graph *g = load(scan_src, NULL, 0, NULL, NULL);
  const char *path = g->node[0].file;
  ck_assert_ptr_nonnull(strstr(path, "/g.lua"));
  ck_assert_int_eq(g->node[0].line, 1);
  ck_assert_int_eq(g->node[find_op(g, OP_PARAM, 0)].line, 3);
  ck_assert_int_eq(g->node[find_op(g, OP_STEP, 0)].line, 4);
  ck_assert_int_eq(g->node[find_op(g, OP_MATMUL, 0)].line, 7);
  ck_assert_int_eq(g->node[find_op(g, OP_TANH, 0)].line, 7);
  ck_assert_int_eq(g->node[find_op(g, OP_STACK, 0)].line, 4);
}
END_TEST

START_TEST(location_library_call)
{
  /* nodes built in graphs/lib get the line of the graph file calling it */
  Graph *g = load("local nn = require 'nn'\nlocal t = input('t', 'i32', {seq(), batch()})\nlocal p = params { dropout = 0.5 }\n"
                  "local e = nn.embedding('encoder', t, 30, 8)\n"
                  "local y, h = nn.rnn('rnn', e, nn.rnn_state('h', 2, 8), 8, 8, 2, 'relu', p.dropout)\n",
                  NULL, 0, NULL, NULL);
  ck_assert_int_eq(g->node[ir_find_param(g, "encoder.weight")].line, 4);
  ck_assert_int_eq(g->node[find_op(g, OP_EMBEDDING, 0)].line, 4);
  ck_assert_int_eq(g->node[ir_find_param(g, "rnn.weight_hh_l1")].line, 5);
  ck_assert_int_eq(g->node[find_op(g, OP_RELU, 1)].line, 5);
  ck_assert_ptr_nonnull(strstr(g->node[find_op(g, OP_RELU, 1)].file, "/g.lua"));
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 1);   /* between the layers only */
  ck_assert_int_eq(g->nloop, 3);
}
END_TEST

/* ----------------------------------------------------------- model graphs */

START_TEST(graphs_rnn_tanh)
{
  Define d[] = {{"ntoken", "40"}, {"emsize", "6"}, {"nhid", "5"}};
  FrontOptions o = opts("graphs/rnn_tanh.lua");
  o.def = d;
  o.ndef = 3;
  Hyper *h;
  int n;
  Graph *g = front_load(&o, &h, &n);
  ck_assert_str_eq(g->kind, "RNN_TANH");
  const char *names[] = {"encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                         "rnn.bias_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1",
                         "rnn.bias_hh_l1", "decoder.weight", "decoder.bias"};
  int k = 0;
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == OP_PARAM)
      ck_assert_str_eq(g->node[i].a.name, names[k++]);
  ck_assert_int_eq(k, 11);
  ck_assert_str_eq(shape_str(&g->node[ir_find_param(g, "rnn.weight_ih_l0")].shape), "(5, 6)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_param(g, "decoder.weight")].shape), "(40, 5)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_output(g, "logp")].shape), "(T, 20, 40)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_output(g, "hidden")].shape), "(2, 20, 5)");
  ck_assert_int_eq(g->node[ir_find_output(g, "loss")].shape.rank, 0);
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 3);
  /* the input projection is outside the loops: no body matmul reads a step of x directly */
  for (int i = 0; i < g->nnode; i++)
    if (g->node[i].op == OP_MATMUL && g->node[i].loop)
      ck_assert_int_eq(g->node[g->node[i].in[0]].op, OP_CARRY);
  char err[256];
  ck_assert_int_eq(verify(g, err, sizeof err), 0);
}
END_TEST

START_TEST(graphs_lstm_eval_tied)
{
  Define d[] = {{"ntoken", "40"}, {"emsize", "6"}, {"nhid", "6"}, {"tied", "true"}, {"nlayers", "3"}};
  FrontOptions o = opts("graphs/lstm.lua");
  o.def = d;
  o.ndef = 5;
  o.batch = -1;
  o.training = false;
  Hyper *h;
  int n;
  Graph *g = front_load(&o, &h, &n);
  ck_assert_str_eq(g->kind, "LSTM");
  ck_assert_int_eq(g->batch, 10);
  ck_assert_int_eq(count_op(g, OP_DROPOUT), 0);
  ck_assert_int_eq(g->nloop, 4);
  ck_assert_int_lt(ir_find_param(g, "decoder.weight"), 0);
  ck_assert_int_eq(ir_find_output(g, "alias:decoder.weight"), ir_find_param(g, "encoder.weight"));
  ck_assert_str_eq(shape_str(&g->node[ir_find_param(g, "rnn.weight_hh_l2")].shape), "(24, 6)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_output(g, "hidden.h")].shape), "(3, 10, 6)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_output(g, "hidden.c")].shape), "(3, 10, 6)");
  ck_assert_str_eq(hyper(h, n, "tied"), "true");
  char err[256];
  ck_assert_int_eq(verify(g, err, sizeof err), 0);
}
END_TEST

START_TEST(graphs_gru_layer)
{
  Graph *g = load("local nn = require 'nn'\nlocal x = input('x', 'f32', {seq(), batch(), 4})\n"
                  "local y, h = nn.gru('rnn', x, nn.rnn_state('h', 1, 3), 4, 3, 1, 0)\n"
                  "output('y', y)\noutput('h', h)\n", NULL, 0, NULL, NULL);
  ck_assert_str_eq(shape_str(&g->node[ir_find_param(g, "rnn.weight_ih_l0")].shape), "(9, 4)");
  ck_assert_str_eq(shape_str(&g->node[ir_find_output(g, "y")].shape), "(T, 20, 3)");
  char err[256];
  ck_assert_int_eq(verify(g, err, sizeof err), 0);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("front");
  struct { const char *name; const TTest *t[16]; } groups[] = {
    {"sandbox", {sandbox_io, sandbox_os, sandbox_debug, sandbox_loadlib, sandbox_file_functions,
                 sandbox_require_c, sandbox_require_paths, sandbox_require_local, sandbox_require_cycle,
                 sandbox_binary_chunk, sandbox_binary_file, sandbox_instruction_limit,
                 sandbox_instruction_limit_pcall, sandbox_memory_limit, sandbox_unknown_global}},
    {"names", {names_hostile, names_escape}},
    {"limits", {limits_c_loops, limits_gc, limits_ordinary_use, limits_time}},
    {"files", {files_not_regular, files_size_cap}},
    {"errors", {errors_lua, errors_arguments, errors_ir_location}},
    {"hyper", {hyper_defaults, hyper_overrides, hyper_number_from_integer_text, hyper_errors,
               hyper_builtin_defaults, hyper_batch_specialisations}},
    {"tensor", {tensor_fields, tensor_seq_sizes, tensor_numbers_become_consts, tensor_attributes, tensor_dropout,
                tensor_kind_and_alias}},
    {"scan", {scan_builds_loop, scan_reverse_and_methods, scan_errors}},
    {"location", {location_user_line, location_library_call}},
    {"graphs", {graphs_rnn_tanh, graphs_lstm_eval_tied, graphs_gru_layer}},
  };
  for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
    TCase *tc = tcase_create(groups[i].name);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);   /* limits_time waits out the default 10 s limit */
    for (int k = 0; k < 16 && groups[i].t[k]; k++)
      tcase_add_test(tc, groups[i].t[k]);
    suite_add_tcase(s, tc);
  }
  return run_suite(s);
}
