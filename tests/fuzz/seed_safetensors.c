/*
 * seed_safetensors.c: writes the seed checkpoints of fuzz_safetensors into
 * the folder given, with ckpt_save on the target's model: parameters alone,
 * with metadata, with both AdamW moments, and truncated copies of the last.
 * Run once by hand when the format changes (tests/fuzz/README.md):
 *   make all && clang -D_POSIX_C_SOURCE=200809L -Iruntime -Itests/fuzz -o build/seed \
 *     tests/fuzz/seed_safetensors.c build/liblmcrt.a -lopenblas -lm
 *   build/seed tests/fuzz/corpus/safetensors
 */
#include <stdio.h>
#include <stdlib.h>
#include "rt.h"

#define LLVMFuzzerInitialize unused_initialize
#define LLVMFuzzerTestOneInput unused_test_one_input
#include "fuzz_safetensors.c"

static void save(const char *dir, const char *name, const ExtraBlock *extra, int nextra, const MetaList *meta)
{
  real param[NUMEL];
  for (int i = 0; i < NUMEL; i++)
    param[i] = (real)((i - 17.25) / (1 + i % 7));
  char file[512], err[ERRLEN];
  snprintf(file, sizeof file, "%s/%s", dir, name);
  if (ckpt_save(file, &model, param, extra, nextra, meta, err) != 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

/* dir/NAME.cut-N: the first n bytes of dir/NAME */
static void cut(const char *dir, const char *name, long n)
{
  char src[512], dst[600];
  snprintf(src, sizeof src, "%s/%s", dir, name);
  snprintf(dst, sizeof dst, "%s/%s.cut-%ld", dir, name, n);
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  if (!in || !out)
    exit(1);
  for (long i = 0; i < n; i++) {
    int c = getc(in);
    if (c == EOF)
      break;
    putc(c, out);
  }
  fclose(in);
  fclose(out);
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: seed_safetensors DIR\n");
    return 2;
  }
  real m[NUMEL] = {0}, v[NUMEL] = {0};
  for (int i = 0; i < NUMEL; i++)
    m[i] = (real)(0.01 * i), v[i] = (real)(0.001 * i * i);
  ExtraBlock extra[2] = { { "optimizer.exp_avg.", m }, { "optimizer.exp_avg_sq.", v } };
  MetaList meta = { 0 };
  meta_set(&meta, "lmc.kind", "LSTM");
  meta_set(&meta, "lmc.epoch", "3");
  meta_set(&meta, "lmc.lr", "20");
  save(argv[1], "plain.ckpt", NULL, 0, NULL);
  save(argv[1], "meta.ckpt", NULL, 0, &meta);
  save(argv[1], "adamw.ckpt", extra, 2, &meta);
  cut(argv[1], "adamw.ckpt", 7);
  cut(argv[1], "adamw.ckpt", 200);
  cut(argv[1], "adamw.ckpt", 700);
  meta_free(&meta);
  return 0;
}
