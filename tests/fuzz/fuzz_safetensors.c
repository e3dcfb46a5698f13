/*
 * fuzz_safetensors.c: libFuzzer target for the checkpoint loader.  The
 * input bytes are written to a temporary file and loaded with ckpt_load
 * against a small model with a tied pair (tests/check_checkpoint.c's), with
 * the AdamW moments as extra blocks and the metadata collected, as
 * `train --resume` loads.  A refusal is fine (its message must be one
 * "PATH: error: ..." line); a crash, a sanitizer report or a leak is a
 * finding.  Seeds: tests/fuzz/corpus/safetensors/ (see README.md there).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt.h"

static const LmcTensorDesc params[] = {
  { "encoder.weight", 2, { 5, 3 }, 0, 15, LMC_INIT_UNIFORM, 0.1, -1, 0, 0 },
  { "rnn.weight_ih_l0", 2, { 4, 3 }, 15, 12, LMC_INIT_UNIFORM, 0.1, -1, 15, 0 },
  { "rnn.bias_ih_l0", 1, { 4 }, 27, 4, LMC_INIT_ZERO, 0, -1, 27, 0 },
  { "decoder.weight", 2, { 5, 3 }, 0, 15, LMC_INIT_UNIFORM, 0.1, 0, 0, 0 },
  { "decoder.bias", 1, { 5 }, 31, 5, LMC_INIT_ZERO, 0, -1, 31, 0 },
};
enum { NUMEL = 36 };

static const LmcModel model = {
  .kind = "LSTM",
  .version = "fuzz",
  .flags = "",
  .ntoken = 5,
  .bptt = 4,
  .nparam = 5,
  .param = params,
  .param_numel = NUMEL,
};

static char ckpt_path[256];

static void remove_ckpt(void)
{
  unlink(ckpt_path);
  *strrchr(ckpt_path, '/') = 0;
  rmdir(ckpt_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(ckpt_path, sizeof ckpt_path, "%s/lmc_fuzz_ckpt_XXXXXX", tmp);
  if (!mkdtemp(ckpt_path)) {
    perror(ckpt_path);
    abort();
  }
  strcat(ckpt_path, "/model.safetensors");
  atexit(remove_ckpt);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  FILE *f = fopen(ckpt_path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    perror(ckpt_path);
    abort();
  }
  real param[NUMEL], m[NUMEL], v[NUMEL];
  ExtraBlock extra[2] = {
    { "optimizer.exp_avg.", m },
    { "optimizer.exp_avg_sq.", v },
  };
  MetaList meta = { 0 };
  char err[ERRLEN] = "";
  if (ckpt_load(ckpt_path, &model, param, extra, 2, &meta, err) != 0) {
    /* one line, naming the file */
    if (strncmp(err, ckpt_path, strlen(ckpt_path)) || strchr(err, '\n') || !strstr(err, ": error: ")) {
      fprintf(stderr, "fuzz_safetensors: malformed refusal: '%s'\n", err);
      abort();
    }
  }
  meta_free(&meta);
  return 0;
}
