/*
 * gencorpus.c: a synthetic corpus with WikiText-103's sizes, for timing
 * and memory measurements of the runtime's corpus code (bench/README.md,
 * "Large corpora").
 *
 *   gencorpus [-s SEED] [-n TRAIN_TOKENS] [-v WORDS] DIR
 *
 * writes DIR/train.txt, valid.txt and test.txt (DIR is created when it is
 * missing) in WikiText's line format: " = Title = " headings and
 * " = = Section = = " subheadings, paragraphs of space-separated tokens,
 * blank lines " ", every line starting with a space.  Token counts are
 * data.py's (words plus one <eos> a line): by default 103,227,021 train
 * tokens, and valid and test in WikiText-103's proportions (217,646 and
 * 245,569 at full size).  Words are drawn from a Zipf law (s = 1) over
 * WORDS ranks (default 267,735, WikiText-103's vocabulary), each a string
 * of consonant-vowel syllables, every 37th with a UTF-8 "é": at full size
 * nearly every rank appears, about 540 MB in all.  The same SEED gives the
 * same bytes.  Files are written through runtime/outfile.c.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

#define TRAIN_TOKENS 103227021ull
#define VALID_TOKENS 217646ull
#define TEST_TOKENS 245569ull

static uint64_t mix_state;

static uint64_t mix_next(void)   /* splitmix64 */
{
  uint64_t z = (mix_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t mix_below(uint64_t n)
{
  return (uint64_t)(((unsigned __int128)mix_next() * n) >> 64);
}

/* Walker's alias table for the Zipf law over n ranks: O(1) a draw. */
typedef struct {
  double *prob;
  uint32_t *alias;
  uint32_t n;
} Zipf;

static void zipf_init(Zipf *z, uint32_t n)
{
  z->n = n;
  z->prob = rt_malloc(n * sizeof *z->prob, "the Zipf table");
  z->alias = rt_malloc(n * sizeof *z->alias, "the Zipf table");
  uint32_t *small = rt_malloc(n * sizeof *small, "the Zipf table");
  uint32_t *large = rt_malloc(n * sizeof *large, "the Zipf table");
  double h = 0;
  for (uint32_t i = 0; i < n; i++)
    h += 1.0 / (i + 1);
  uint32_t ns = 0, nl = 0;
  for (uint32_t i = 0; i < n; i++) {
    z->prob[i] = n / ((i + 1) * h);
    z->alias[i] = i;
    if (z->prob[i] < 1) small[ns++] = i;
    else large[nl++] = i;
  }
  while (ns && nl) {
    uint32_t s = small[--ns], l = large[nl - 1];
    z->alias[s] = l;
    z->prob[l] -= 1 - z->prob[s];
    if (z->prob[l] < 1) {
      nl--;
      small[ns++] = l;
    }
  }
  while (nl) z->prob[large[--nl]] = 1;
  while (ns) z->prob[small[--ns]] = 1;
  free(small);
  free(large);
}

static uint32_t zipf_draw(const Zipf *z)
{
  uint64_t r = mix_next();
  uint32_t i = (uint32_t)(((r >> 32) * z->n) >> 32);
  double u = (double)(r & 0xffffffffu) / 4294967296.0;
  return u < z->prob[i] ? i : z->alias[i];
}

/* The word of rank r: bijective base-105 in consonant-vowel syllables. */
static size_t word_of(uint32_t r, char *out)
{
  static const char cons[] = "bcdfghjklmnpqrstvwxyz", vow[] = "aeiou";
  size_t n = 0;
  uint64_t v = (uint64_t)r + 1;
  while (v) {
    v--;
    unsigned s = (unsigned)(v % 105);
    out[n++] = cons[s / 5];
    out[n++] = vow[s % 5];
    v /= 105;
  }
  if (r % 37 == 36) {
    out[n++] = (char)0xc3;
    out[n++] = (char)0xa9;
  }
  return n;
}

typedef struct {
  char **word;
  size_t *len;
  Zipf zipf;
} Words;

static void put_words(FILE *f, const Words *w, uint64_t n)
{
  for (uint64_t i = 0; i < n; i++) {
    uint32_t r = zipf_draw(&w->zipf);
    fputc(' ', f);
    fwrite(w->word[r], 1, w->len[r], f);
  }
}

/* One file of about `tokens` tokens: articles of a heading and paragraphs. */
static int write_split(const char *path, const Words *w, uint64_t tokens)
{
  OutFile o;
  char err[4200];
  if (outfile_open(&o, path, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  static char buf[1 << 20];
  setvbuf(o.f, buf, _IOFBF, sizeof buf);
  uint64_t done = 0;
  while (done < tokens) {
    uint64_t title = 1 + mix_below(4);
    fputs(" \n =", o.f);                            /* blank, " = Title = " */
    put_words(o.f, w, title);
    fputs(" = \n \n", o.f);
    done += title + 2 + 3;
    uint64_t paras = 2 + mix_below(12);
    for (uint64_t p = 0; p < paras && done < tokens; p++) {
      if (p > 0 && mix_below(3) == 0) {             /* " = = Section = = " */
        uint64_t s = 1 + mix_below(3);
        fputs(" = =", o.f);
        put_words(o.f, w, s);
        fputs(" = = \n \n", o.f);
        done += s + 4 + 2;
      }
      uint64_t len = 20 + mix_below(230);
      if (len > tokens - done) len = tokens - done;
      put_words(o.f, w, len);
      fputs(" \n \n", o.f);
      done += len + 2;
    }
  }
  if (outfile_commit(&o, false, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

static int usage(void)
{
  fprintf(stderr, "usage: gencorpus [-s SEED] [-n TRAIN_TOKENS] [-v WORDS] DIR\n");
  return 2;
}

int main(int argc, char **argv)
{
  uint64_t seed = 1, train = TRAIN_TOKENS, nwords = 267735;
  int opt;
  while ((opt = getopt(argc, argv, "s:n:v:")) != -1) {
    char *e;
    errno = 0;
    unsigned long long v = strtoull(optarg, &e, 10);
    if (*e || errno || !*optarg || optarg[0] == '-') return usage();
    if (opt == 's') seed = v;
    else if (opt == 'n' && v >= 100) train = v;
    else if (opt == 'v' && v >= 1 && v < (1ull << 31)) nwords = v;
    else return usage();
  }
  if (optind + 1 != argc) return usage();
  const char *dir = argv[optind];
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "gencorpus: error: cannot create %s: %s\n", dir, strerror(errno));
    return 1;
  }
  mix_state = seed;
  Words w;
  w.word = rt_malloc(nwords * sizeof *w.word, "the words");
  w.len = rt_malloc(nwords * sizeof *w.len, "the words");
  for (uint32_t r = 0; r < nwords; r++) {
    char s[32];
    w.len[r] = word_of(r, s);
    w.word[r] = memcpy(rt_malloc(w.len[r], "a word"), s, w.len[r]);
  }
  zipf_init(&w.zipf, (uint32_t)nwords);
  static const char *const name[3] = { "train.txt", "valid.txt", "test.txt" };
  uint64_t tokens[3] = { train, train * VALID_TOKENS / TRAIN_TOKENS, train * TEST_TOKENS / TRAIN_TOKENS };
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name[i]);
    rc = write_split(path, &w, tokens[i] < 100 ? 100 : tokens[i]);
  }
  for (uint32_t r = 0; r < nwords; r++) free(w.word[r]);
  free(w.word);
  free(w.len);
  free(w.zipf.prob);
  free(w.zipf.alias);
  return rc ? 1 : 0;
}
