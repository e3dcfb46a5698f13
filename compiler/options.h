/*
 * options.h: lmc compile's command line, parsed without exiting.
 *
 * options_parse fills a CompileOptions from the arguments after "compile",
 * or returns 2 with "lmc: error: ..." in err; it opens no file, writes
 * nothing and never calls exit, so that a fuzzer can call it
 * (tests/fuzz/fuzz_cli.c).  Strings it makes (-D names) are in the
 * compiler's arena.  main.c prints the message with lmc_usage.
 */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "lmc.h"

typedef struct {
  const char *graph;     /* the graph file */
  const char *out;       /* -o: NULL or "-" for stdout */
  const char *emit;      /* c, ir or dot */
  const char *dump_after;   /* --dump-ir=after:PASS */
  Define def[256];
  int ndef;
  int level;             /* -O0, -O1, -O2 */
  bool enabled[64], disabled[64];   /* by index in passes[] */
  bool stats;
  DType real;
  double time_limit;     /* seconds per run of the graph file, 0: the front end's default */
} CompileOptions;

extern const char lmc_usage[];

int options_parse(int argc, char **argv, CompileOptions *o, char *err, size_t errlen);

#endif
