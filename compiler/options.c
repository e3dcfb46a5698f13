/*
 * options.c: lmc compile's options (options.h).
 *
 *   lmc compile GRAPH.lua [-o OUT.c] [-D name=value]... [-O0|-O1|-O2] ...
 *
 * One if-chain over the arguments, an option per branch.  A mistake is
 * "lmc: error: ..." in the caller's buffer and a jump back to
 * options_parse, as Lua's errors do; main.c prints it with the usage and
 * exits 2.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

const char lmc_usage[] =
  "usage: lmc compile GRAPH.lua [-o OUT.c] [-D name=value]... [-O0|-O1|-O2]\n"
  "                   [--disable-pass=NAME[,NAME]] [--enable-pass=NAME[,NAME]]\n"
  "                   [--emit=c|ir|dot] [--dump-ir=after:PASS] [--stats] [--dtype=f32|f64]\n"
  "                   [--time-limit=SECONDS]   (each run of the graph file; default 10)\n"
  "       lmc vocab DIR      vocabulary size and hash of a corpus folder\n"
  "       lmc passes         list the optimization passes\n"
  "       lmc --help | --version\n";

typedef struct {
  char *err;
  size_t errlen;
  jmp_buf fail;
} Parser;

static _Noreturn void usage_error(Parser *p, const char *fmt, const char *arg)
{
  int n = snprintf(p->err, p->errlen, "lmc: error: ");
  if (n >= 0 && (size_t)n < p->errlen)
    snprintf(p->err + n, p->errlen - (size_t)n, fmt, arg);
  longjmp(p->fail, 1);
}

static void add_define(Parser *p, CompileOptions *o, const char *def)
{
  const char *eq = strchr(def, '=');
  if (!eq || eq == def)
    usage_error(p, "-D %s: expected name=value", def);
  if (o->ndef == (int)(sizeof o->def / sizeof o->def[0]))
    usage_error(p, "-D %s: too many -D options", def);
  o->def[o->ndef++] = (Define){arena_printf("%.*s", (int)(eq - def), def), eq + 1};
}

static void set_passes(Parser *p, const char *list, bool *which)
{
  char *copy = arena_strdup(list);
  for (char *name = strtok(copy, ","); name; name = strtok(NULL, ",")) {
    const Pass *pass = find_pass(name);
    if (!pass)
      usage_error(p, "unknown pass '%s' (see lmc passes)", name);
    which[pass - passes] = true;
  }
}

int options_parse(int argc, char **argv, CompileOptions *out, char *err, size_t errlen)
{
  Parser p = {.err = err, .errlen = errlen};
  if (errlen)
    err[0] = '\0';
  CompileOptions o = {.level = 2, .emit = "c", .real = DT_F32};
  if (setjmp(p.fail))
    return 2;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-o")) {
      if (i + 1 >= argc || !argv[i + 1][0])
        usage_error(&p, "%s needs a file name (- for standard output)", a);
      o.out = argv[++i];
    } else if (!strcmp(a, "-D")) {
      if (i + 1 >= argc)
        usage_error(&p, "%s needs name=value", a);
      add_define(&p, &o, argv[++i]);
    } else if (!strncmp(a, "-D", 2)) {
      add_define(&p, &o, a + 2);
    } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2")) {
      o.level = a[2] - '0';
    } else if (!strncmp(a, "--disable-pass=", 15)) {
      set_passes(&p, a + 15, o.disabled);
    } else if (!strncmp(a, "--enable-pass=", 14)) {
      set_passes(&p, a + 14, o.enabled);
    } else if (!strncmp(a, "--emit=", 7)) {
      o.emit = a + 7;
      if (strcmp(o.emit, "c") && strcmp(o.emit, "ir") && strcmp(o.emit, "dot"))
        usage_error(&p, "--emit=%s: expected c, ir or dot", o.emit);
    } else if (!strcmp(a, "--stats")) {
      o.stats = true;
    } else if (!strncmp(a, "--dump-ir=after:", 16)) {
      o.dump_after = a + 16;
      if (!find_pass(o.dump_after) && strcmp(o.dump_after, "front") && strcmp(o.dump_after, "autodiff"))
        usage_error(&p, "--dump-ir=after:%s: unknown pass (see lmc passes)", o.dump_after);
    } else if (!strncmp(a, "--dtype=", 8)) {
      if (!strcmp(a + 8, "f32"))
        o.real = DT_F32;
      else if (!strcmp(a + 8, "f64"))
        o.real = DT_F64;
      else
        usage_error(&p, "%s: expected --dtype=f32 or --dtype=f64", a);
    } else if (!strncmp(a, "--time-limit=", 13)) {
      char *end;
      o.time_limit = strtod(a + 13, &end);
      if (end == a + 13 || *end || !(o.time_limit > 0 && o.time_limit <= 86400))
        usage_error(&p, "%s: expected a number of seconds, more than 0 and at most 86400", a);
    } else if (a[0] == '-') {
      usage_error(&p, "unknown option '%s'", a);
    } else if (o.graph) {
      usage_error(&p, "more than one graph file ('%s')", a);
    } else {
      o.graph = a;
    }
  }
  if (!o.graph)
    usage_error(&p, "%s", "compile: no graph file");
  *out = o;
  return 0;
}
