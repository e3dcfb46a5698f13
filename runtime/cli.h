/*
 * cli.h: the command line of an emitted trainer, parsed without exiting.
 *
 * cli_parse fills a CliOptions from argv, or returns 2 with the one-line
 * (or two-line) message "PROG: error: ..." in err; it writes nothing,
 * opens no file and never calls exit, so that a fuzzer can call it
 * (tests/fuzz/fuzz_cli.c).  runtime/main.c prints the message and runs the
 * command.
 */
#ifndef CLI_H
#define CLI_H

#include <stdio.h>

#include "rt.h"

typedef enum {
  CLI_HELP,              /* --help: print cli_help(help) to stdout */
  CLI_TRAIN,
  CLI_EVAL,
  CLI_GENERATE,
  CLI_INFO,
} CliCommand;

typedef struct {
  CliCommand cmd;
  const char *help;      /* CLI_HELP: the command asked about, NULL for all */
  TrainOptions train;
  struct {
    const char *checkpoint, *data, *split;
    bool json, bf16;
    int threads;
  } eval;
  GenOptions gen;
} CliOptions;

/* argv[0] is the program, argv[1] the command; prog names it in messages. */
int cli_parse(const LmcModel *m, const char *prog, int argc, char **argv, CliOptions *o, char *err,
              size_t errlen);
/* The usage of one command (which), or of all of them (NULL). */
void cli_help(FILE *f, const LmcModel *m, const char *prog, const char *which);

#endif
