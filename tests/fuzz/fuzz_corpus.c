/*
 * fuzz_corpus.c: libFuzzer target for the corpus reader.  The input bytes
 * are written to a temporary file, tokenized with tokenize_file into a
 * fresh dictionary, batchified with a small batch size and walked with
 * get_batch, as the trainer walks a split; every token id read must be in
 * the dictionary.  A refusal is fine (one "PATH: error: ..." line); a
 * crash, a sanitizer report or a leak is a finding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rt.h"

static char corpus_path[256];

static void remove_corpus(void)
{
  unlink(corpus_path);
  *strrchr(corpus_path, '/') = 0;
  rmdir(corpus_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(corpus_path, sizeof corpus_path, "%s/lmc_fuzz_corpus_XXXXXX", tmp);
  if (!mkdtemp(corpus_path)) {
    perror(corpus_path);
    abort();
  }
  strcat(corpus_path, "/train.txt");
  atexit(remove_corpus);
  return 0;
}

static void walk(const Tokens *t, int nword, int bsz, int bptt)
{
  Batches b;
  batchify(t, bsz, &b);
  for (size_t i = 0; b.nrows > 1 && i < b.nrows - 1; i += (size_t)bptt) {
    const int32_t *x, *y;
    int T = get_batch(&b, i, bptt, &x, &y);
    if (T < 1 || T > bptt)
      abort();
    for (int k = 0; k < T * bsz; k++)
      if (x[k] < 0 || x[k] >= nword || y[k] < 0 || y[k] >= nword)
        abort();
  }
  batches_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  FILE *f = fopen(corpus_path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    perror(corpus_path);
    abort();
  }
  Dict d;
  dict_init(&d);
  Tokens t = { 0 };
  char err[ERRLEN] = "";
  if (tokenize_file(&d, corpus_path, &t, err) == 0) {
    for (size_t i = 0; i < t.n; i++)
      if (t.id[i] < 0 || t.id[i] >= d.nword)
        abort();
    walk(&t, d.nword, 3, 5);
    walk(&t, d.nword, 1, 2);
  } else if (strncmp(err, corpus_path, strlen(corpus_path)) || strchr(err, '\n') || !strstr(err, ": error: ")) {
    fprintf(stderr, "fuzz_corpus: malformed refusal: '%s'\n", err);
    abort();
  }
  tokens_free(&t);
  dict_free(&d);
  return 0;
}
