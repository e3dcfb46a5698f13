/*
 * fuzz_cli.c: libFuzzer target for the two command-line parsers, the
 * trainer's cli_parse (runtime/cli.c) and lmc compile's options_parse
 * (compiler/options.c).
 *
 * The input is an argument list, split at NUL bytes and newlines: the
 * first argument is the trainer's command (train, eval, generate, info,
 * --help, ...), the rest its options; the same rest is lmc compile's
 * arguments.  Neither parser may crash, exit, write or open a file; a
 * refusal must be a "PROG: error: " message that fits its buffer.  The
 * model below stands in for an emitted trainer's lmc_model: the parser
 * reads only its kind, ntoken, hyper-parameters (for the messages about
 * compiled shapes) and dropout slots (--dropout NAME=P).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "options.h"

enum { MAX_ARGS = 256, MAX_INPUT = 1 << 14 };

static const char *const hyper[][2] = {
  { "emsize", "200" }, { "nhid", "200" }, { "nlayers", "2" }, { "bptt", "35" },
  { "batch_size", "20" }, { "tied", "false" }, { "dropout", "0.2" },
};
static const LmcDropoutSlot slots[] = { { "dropout", 0.2 }, { "dropouth", 0.3 } };
static const LmcModel model = {
  .kind = "LSTM",
  .ndropout = 2,
  .dropout = slots,
  .nhyper = (int)(sizeof hyper / sizeof hyper[0]),
  .hyper = hyper,
  .ntoken = 33278,
  .bptt = 35,
};

static void check_message(int rc, const char *err, const char *prefix, size_t errlen)
{
  if (rc == 0)
    return;
  if (rc != 2 || strlen(err) >= errlen || strncmp(err, prefix, strlen(prefix)) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > MAX_INPUT)
    return 0;
  char *buf = malloc(size + 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  char *argv[MAX_ARGS + 2];
  int argc = 0;
  argv[argc++] = "fuzz_cli";
  char *start = buf;
  for (size_t i = 0; i <= size && argc < MAX_ARGS + 1; i++) {
    if (i == size || buf[i] == '\0' || buf[i] == '\n') {
      buf[i] = '\0';
      argv[argc++] = start;
      start = buf + i + 1;
    }
  }
  argv[argc] = NULL;

  char err[1024];
  CliOptions co;
  int rc = cli_parse(&model, "fuzz_cli", argc, argv, &co, err, sizeof err);
  check_message(rc, err, "fuzz_cli: error: ", sizeof err);
  if (rc == 0 && co.cmd == CLI_TRAIN && (co.train.epochs < 1 || co.train.threads < 1 || co.train.log_interval < 1))
    abort();   /* the parser's ranges are what run_train relies on */

  CompileOptions lo;
  rc = options_parse(argc - 2, argv + 2, &lo, err, sizeof err);   /* argc >= 2: the split gives one argument at least */
  check_message(rc, err, "lmc: error: ", sizeof err);
  if (rc == 0 && (lo.ndef < 0 || lo.ndef > 256 || lo.level < 0 || lo.level > 2))
    abort();
  arena_free_all();
  free(buf);
  return 0;
}
