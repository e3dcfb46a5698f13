/*
 * main.c: the command line of an emitted trainer.
 *
 *   build/MODEL train    [--data DIR] [--lr F] [--clip F] [--epochs N] ...
 *   build/MODEL eval     --checkpoint FILE [--data DIR] [--split valid|test] [--json] ...
 *   build/MODEL generate --checkpoint FILE [--words N] [--temperature F] ...
 *   build/MODEL info
 *   build/MODEL --help
 *
 * cli_parse (cli.c) reads the options; run_train (train.c), run_eval
 * (eval.c), run_generate (generate.c) and run_info (model.c) do the work.
 * A user's mistake on the command line is one line and exit 2.  Standard
 * output is checked at exit: `build/MODEL info >/dev/full` fails.
 *
 * Not part of liblmcrt.a: linked next to it into each trainer, whose C
 * defines lmc_model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "outfile.h"
#include "rt.h"

static int finish(const char *prog, int rc)
{
  if (outfile_close_stdout(prog) < 0 && rc == 0) rc = 1;
  return rc;
}

int main(int argc, char **argv)
{
  /* OpenMP workers of the kernels sleep rather than spin on a core while OpenBLAS's threads compute */
  setenv("OMP_WAIT_POLICY", "passive", 0);
  const char *prog = "lmc";   /* basename of argv[0] */
  if (argc > 0 && argv[0]) {
    const char *s = strrchr(argv[0], '/');
    prog = s ? s + 1 : argv[0];
  }
  rt_progname = prog;
  if (argc < 2) {
    cli_help(stderr, &lmc_model, prog, NULL);
    return 2;
  }
  CliOptions o;
  char err[ERRLEN];
  if (cli_parse(&lmc_model, prog, argc, argv, &o, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  switch (o.cmd) {
  case CLI_HELP:
    cli_help(stdout, &lmc_model, prog, o.help);
    return finish(prog, 0);
  case CLI_TRAIN:
    return finish(prog, run_train(&lmc_model, &o.train));
  case CLI_EVAL:
    return finish(prog, run_eval(&lmc_model, o.eval.checkpoint, o.eval.data, o.eval.split, o.eval.json,
                                 o.eval.threads, o.eval.bf16));
  case CLI_GENERATE:
    return finish(prog, run_generate(&lmc_model, &o.gen));
  case CLI_INFO:
    run_info(&lmc_model);
    return finish(prog, 0);
  }
  return 2;
}
