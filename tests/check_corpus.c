/*
 * check_corpus.c: the dictionary, tokenizer and batching against data.py.
 *
 * The small corpus below is written to a temporary folder; its word ids
 * are written out by hand (and agree with data.py run on the same bytes).
 * The real WikiText-2 must give PyTorch's numbers: 33278 words, 2088628
 * train tokens.  Run from the repository root (make test does).
 */
#define _DEFAULT_SOURCE   /* mknod, makedev */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "rt.h"
#include "testutil.h"

static char tmpdir[256];

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  ck_assert_uint_eq(fwrite(text, 1, len, f), len);
  fclose(f);
}

#define WRITE(dir, name, lit) write_file(dir, name, lit, sizeof lit - 1)

static void setup(void)
{
  snprintf(tmpdir, sizeof tmpdir, "%s/lmc_corpus_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  ck_assert(mkdtemp(tmpdir) != NULL);
}

static void teardown(void)
{
  static const char *const f[] = { "train.txt", "valid.txt", "test.txt", ".lmc-tokens", ".lmc-tokens.tmp" };
  char path[512];
  for (int i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "%s/%s", tmpdir, f[i]);
    unlink(path);
  }
  rmdir(tmpdir);
}

static void check_ids(const char *what, const Tokens *t, const int32_t *want, size_t n)
{
  ck_assert_msg(t->n == n, "%s: %zu tokens, want %zu", what, t->n, n);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(t->id[i] == want[i], "%s: token %zu is %d, want %d", what, i, t->id[i], want[i]);
}

/* Lines: runs of spaces and tabs, an empty line, non-ASCII spaces, \r\n
 * and a lone \r, a last line without its \n, words seen again later. */
START_TEST(test_tokenize_small)
{
  WRITE(tmpdir, "train.txt",
        "the cat  sat\n"                         /* the cat sat <eos>          0 1 2 3 */
        "\n"                                     /* <eos>                          3 */
        "\tthe\tdog \n"                          /* the dog <eos>              0 4 3 */
        "a\xc2\xa0" "b\xe3\x80\x80" "c\n"        /* U+00A0, U+3000: a b c      5 6 7 3 */
        "x\x1fy\r\n"                             /* \x1f; \r\n is one line end 8 9 3 */
        "\x0bv\x0c m\xc2\x85n\xe2\x80\xa8o"      /* \v \f U+0085 U+2028 */
        "\xe1\x9a\x80p\xe2\x80\x8aq\xe2\x80\xafr" /* U+1680 U+200A U+202F */
        "\xe2\x81\x9fs\xe2\x80\xa9t\n"           /* U+205F U+2029: v m n o p q r s t <eos> */
        "caf\xc3\xa9 \xe2\x80\x8bz");            /* U+200B is not a space; no final \n */
  WRITE(tmpdir, "valid.txt", "the end\rcat\n");  /* a lone \r ends a line */
  WRITE(tmpdir, "test.txt", "sat   dog\n\n");
  static const int32_t train[] = {
    0, 1, 2, 3,
    3,
    0, 4, 3,
    5, 6, 7, 3,
    8, 9, 3,
    10, 11, 12, 13, 14, 15, 16, 17, 18, 3,
    19, 20, 3,
  };
  static const int32_t valid[] = { 0, 21, 3, 1, 3 };
  static const int32_t test[] = { 2, 4, 3, 3 };
  static const char *const words[] = {
    "the", "cat", "sat", "<eos>", "dog", "a", "b", "c", "x", "y", "v", "m", "n", "o", "p",
    "q", "r", "s", "t", "caf\xc3\xa9", "\xe2\x80\x8bz", "end",
  };
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  check_ids("train", &c.train, train, sizeof train / sizeof train[0]);
  check_ids("valid", &c.valid, valid, sizeof valid / sizeof valid[0]);
  check_ids("test", &c.test, test, sizeof test / sizeof test[0]);
  ck_assert_int_eq(c.dict.nword, (int)(sizeof words / sizeof words[0]));
  for (int i = 0; i < c.dict.nword; i++) {
    ck_assert_str_eq(c.dict.word[i], words[i]);
    ck_assert_int_eq(dict_find(&c.dict, words[i]), i);
  }
  ck_assert_int_eq(dict_find(&c.dict, "cafe"), -1);
  corpus_free(&c);
}
END_TEST

START_TEST(test_empty_and_eos_order)
{
  /* an empty file has no lines; <eos> gets its id after the first line's words */
  WRITE(tmpdir, "train.txt", "");
  WRITE(tmpdir, "valid.txt", "b a\n");
  WRITE(tmpdir, "test.txt", "\r\r\n");
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  ck_assert_uint_eq(c.train.n, 0);
  static const int32_t valid[] = { 0, 1, 2 }, test[] = { 2, 2 };
  check_ids("valid", &c.valid, valid, 3);
  check_ids("test", &c.test, test, 2);
  ck_assert_str_eq(c.dict.word[2], "<eos>");
  corpus_free(&c);
}
END_TEST

START_TEST(test_bad_bytes)
{
  Dict d;
  Tokens t;
  char err[ERRLEN] = "", path[512], want[700];
  dict_init(&d);
  WRITE(tmpdir, "train.txt", "ok\nbad \xff here\n");
  snprintf(path, sizeof path, "%s/train.txt", tmpdir);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want, "%s:2: error: invalid UTF-8 (byte 0xff at offset 7)", path);
  ck_assert_str_eq(err, want);
  WRITE(tmpdir, "train.txt", "nul\0here\n");
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want, "%s:1: error: NUL byte in text", path);
  ck_assert_str_eq(err, want);
  dict_free(&d);
}
END_TEST

START_TEST(test_missing_file)
{
  Corpus c;
  char err[ERRLEN] = "", want[700];
  ck_assert_int_eq(corpus_load(&c, tmpdir, err), -1);
  snprintf(want, sizeof want, "%s/train.txt: error: cannot open: No such file or directory", tmpdir);
  ck_assert_str_eq(err, want);
  WRITE(tmpdir, "train.txt", "a b\n");
  WRITE(tmpdir, "test.txt", "a b\n");
  ck_assert_int_eq(corpus_load(&c, tmpdir, err), -1);
  snprintf(want, sizeof want, "%s/valid.txt: error: cannot open: No such file or directory", tmpdir);
  ck_assert_str_eq(err, want);
}
END_TEST

/* Only regular files are read, and at most LMC_CORPUS_MAX_BYTES of them:
 * a FIFO is refused at once (fopen used to wait for a writer), a device
 * node (here a /dev/null made in the test folder) is not read as an empty
 * file, a folder is named.  alarm() fails the test if anything blocks. */
START_TEST(test_not_regular)
{
  Dict d;
  Tokens t;
  char err[ERRLEN] = "", path[512], want[700];
  snprintf(path, sizeof path, "%s/train.txt", tmpdir);
  dict_init(&d);
  alarm(20);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want, "%s: error: not a regular file (it is a FIFO)", path);
  ck_assert_str_eq(err, want);
  unlink(path);
  ck_assert_int_eq(mknod(path, S_IFCHR | 0666, makedev(1, 3)), 0);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want, "%s: error: not a regular file (it is a character device)", path);
  ck_assert_str_eq(err, want);
  unlink(path);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want, "%s: error: not a regular file (it is a folder)", path);
  ck_assert_str_eq(err, want);
  rmdir(path);
  alarm(0);
  dict_free(&d);
}
END_TEST

START_TEST(test_size_cap)
{
  Dict d;
  Tokens t;
  char err[ERRLEN] = "", path[512], want[700];
  snprintf(path, sizeof path, "%s/train.txt", tmpdir);
  dict_init(&d);
  WRITE(tmpdir, "train.txt", "a b c d\n");   /* 8 bytes */
  setenv("LMC_CORPUS_MAX_BYTES", "8", 1);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), 0);
  ck_assert_uint_eq(t.n, 5);
  tokens_free(&t);
  setenv("LMC_CORPUS_MAX_BYTES", "7", 1);
  ck_assert_int_eq(tokenize_file(&d, path, &t, err), -1);
  snprintf(want, sizeof want,
           "%s: error: 8 bytes, more than the 7 a corpus file may have (LMC_CORPUS_MAX_BYTES)", path);
  ck_assert_str_eq(err, want);
  unsetenv("LMC_CORPUS_MAX_BYTES");
  dict_free(&d);
}
END_TEST

START_TEST(test_dict)
{
  Dict d;
  dict_init(&d);
  ck_assert_int_eq(dict_find(&d, "x"), -1);
  /* FNV-1a 64 of the empty dictionary is the offset basis */
  ck_assert(dict_hash(&d) == 0xcbf29ce484222325ull);
  char w[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(w, sizeof w, "w%d", i);
    ck_assert_int_eq(dict_add(&d, w), i);
  }
  for (int i = 0; i < 5000; i++) {
    snprintf(w, sizeof w, "w%d", i);
    ck_assert_int_eq(dict_add(&d, w), i);
    ck_assert_int_eq(dict_find(&d, w), i);
    ck_assert_str_eq(d.word[i], w);
  }
  ck_assert_int_eq(d.nword, 5000);
  ck_assert_int_eq(dict_find(&d, "w5000"), -1);
  dict_free(&d);
  /* "a\0b\0": by hand from the FNV-1a definition */
  dict_init(&d);
  dict_add(&d, "a");
  dict_add(&d, "b");
  uint64_t h = 0xcbf29ce484222325ull;
  const unsigned char bytes[] = { 'a', 0, 'b', 0 };
  for (int i = 0; i < 4; i++) {
    h ^= bytes[i];
    h *= 0x100000001b3ull;
  }
  ck_assert(dict_hash(&d) == h);
  dict_free(&d);
}
END_TEST

/* 23 tokens 0..22 in 4 columns: nrows 5, the last 3 tokens dropped. */
START_TEST(test_batchify)
{
  int32_t ids[23];
  for (int i = 0; i < 23; i++)
    ids[i] = i;
  Tokens t = { ids, 23, 0 };
  Batches b;
  batchify(&t, 4, &b);
  ck_assert_uint_eq(b.nrows, 5);
  ck_assert_int_eq(b.bsz, 4);
  static const int32_t want[5][4] = {
    { 0, 5, 10, 15 },
    { 1, 6, 11, 16 },
    { 2, 7, 12, 17 },
    { 3, 8, 13, 18 },
    { 4, 9, 14, 19 },
  };
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++)
      ck_assert_int_eq(b.data[i * 4 + j], want[i][j]);

  const int32_t *x, *y;
  ck_assert_int_eq(get_batch(&b, 0, 3, &x, &y), 3);    /* rows 0..2, targets 1..3 */
  ck_assert_ptr_eq(x, &b.data[0]);
  ck_assert_ptr_eq(y, &b.data[4]);
  ck_assert_int_eq(x[4 * 2 + 3], 17);
  ck_assert_int_eq(y[4 * 2 + 3], 18);
  ck_assert_int_eq(get_batch(&b, 3, 3, &x, &y), 1);    /* the shorter last window */
  static const int32_t x3[4] = { 3, 8, 13, 18 }, y3[4] = { 4, 9, 14, 19 };
  for (int j = 0; j < 4; j++) {
    ck_assert_int_eq(x[j], x3[j]);
    ck_assert_int_eq(y[j], y3[j]);
  }
  ck_assert_int_eq(get_batch(&b, 2, 5, &x, &y), 2);
  ck_assert_int_eq(x[0], 2);
  ck_assert_int_eq(y[4 + 3], 19);
  ck_assert_int_eq(get_batch(&b, 4, 3, &x, &y), 0);    /* no target row left */
  batches_free(&b);

  Tokens few = { ids, 3, 0 };                             /* fewer tokens than columns */
  batchify(&few, 4, &b);
  ck_assert_uint_eq(b.nrows, 0);
  ck_assert_int_eq(get_batch(&b, 0, 3, &x, &y), 0);
  batches_free(&b);
}
END_TEST

/* tests/data/tiny: the first lines of WikiText-2, for small trainers. */
START_TEST(test_tiny)
{
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, "tests/data/tiny", err) == 0, "%s (run from the repository root)", err);
  ck_assert_int_eq(c.dict.nword, 751);
  ck_assert_uint_eq(c.train.n, 1562);
  ck_assert_uint_eq(c.valid.n, 156);
  ck_assert_uint_eq(c.test.n, 334);
  ck_assert(dict_hash(&c.dict) == 0xd27cf8b8bcbc6449ull);
  corpus_free(&c);
}
END_TEST

/* Numbers from data.py's Corpus on the same files. */
START_TEST(test_wikitext2)
{
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, "data/wikitext-2", err) == 0, "%s (run from the repository root)", err);
  printf("wikitext-2: %d words, train %zu, valid %zu, test %zu tokens, hash %016llx\n", c.dict.nword,
         c.train.n, c.valid.n, c.test.n, (unsigned long long)dict_hash(&c.dict));
  ck_assert_int_eq(c.dict.nword, 33278);
  ck_assert_uint_eq(c.train.n, 2088628);
  ck_assert_uint_eq(c.valid.n, 217646);
  ck_assert_uint_eq(c.test.n, 245569);
  ck_assert(dict_hash(&c.dict) == 0x87db9c29adaccbf3ull);
  static const char *const first[] = { "<eos>", "=", "Valkyria", "Chronicles", "III", "Senj\xc5\x8d", "no", "3" };
  for (int i = 0; i < 8; i++)
    ck_assert_str_eq(c.dict.word[i], first[i]);
  ck_assert_str_eq(c.dict.word[33277], "gallinae");
  static const int32_t head[] = { 0, 1, 2, 3, 4, 1, 0, 0, 5, 6, 2, 7 };
  for (int i = 0; i < 12; i++)
    ck_assert_int_eq(c.train.id[i], head[i]);
  Batches b;
  batchify(&c.train, 20, &b);
  ck_assert_uint_eq(b.nrows, 104431);                  /* 2088628 / 20 */
  ck_assert_int_eq(b.data[1], c.train.id[104431]);
  batches_free(&b);
  corpus_free(&c);
}
END_TEST


/* Files are read in pieces of 1 MiB: a first line longer than a piece,
 * whose \r\n is split between the first piece and the next. */
START_TEST(test_pieces)
{
  size_t n = ((size_t)1 << 20) + 8;
  char *text = malloc(n);
  ck_assert(text != NULL);
  for (size_t i = 0; i < n; i++)
    text[i] = i % 3 == 2 ? ' ' : 'a' + (char)(i % 3);
  text[((size_t)1 << 20) - 1] = '\r';
  text[(size_t)1 << 20] = '\n';
  text[n - 1] = '\n';
  write_file(tmpdir, "train.txt", text, n);
  free(text);
  Dict d;
  Tokens t;
  char err[ERRLEN] = "", path[512];
  snprintf(path, sizeof path, "%s/train.txt", tmpdir);
  dict_init(&d);
  ck_assert_msg(tokenize_file(&d, path, &t, err) == 0, "%s", err);
  int eos = dict_find(&d, "<eos>");
  size_t neos = 0;
  for (size_t i = 0; i < t.n; i++)
    neos += t.id[i] == eos;
  ck_assert_uint_eq(neos, 2);
  for (int i = 0; i < d.nword; i++)
    ck_assert_msg(!strchr(d.word[i], '\r') && !strchr(d.word[i], '\n'), "word %d", i);
  ck_assert_uint_eq(t.n, 349525 + 1 + 2 + 1);   /* "ab" x 349525, <eos>, ... */
  tokens_free(&t);
  dict_free(&d);
}
END_TEST

/* ------------------------------------------------------- token cache */

static const char cache_train[] = "the cat sat\n\nthe dog\r\ncaf\xc3\xa9 z\n";

static void write_corpus(void)
{
  WRITE(tmpdir, "train.txt", cache_train);
  WRITE(tmpdir, "valid.txt", "the end\rcat\n");
  WRITE(tmpdir, "test.txt", "sat dog\n\n");
}

static bool cache_exists(void)
{
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/.lmc-tokens", tmpdir);
  return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void same_tokens(const char *what, const Tokens *a, const Tokens *b)
{
  ck_assert_msg(a->n == b->n, "%s: %zu tokens, want %zu", what, a->n, b->n);
  for (size_t i = 0; i < a->n; i++)
    ck_assert_msg(a->id[i] == b->id[i], "%s: token %zu is %d, want %d", what, i, a->id[i], b->id[i]);
}

/* corpus_load (through the cache when there is one) against a fresh
 * tokenization of the same folder. */
static void check_against_fresh(void)
{
  Corpus c, f;
  TextStamp st[3];
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  ck_assert_msg(corpus_tokenize(&f, tmpdir, st, err) == 0, "%s", err);
  ck_assert_int_eq(c.dict.nword, f.dict.nword);
  for (int i = 0; i < c.dict.nword; i++)
    ck_assert_str_eq(c.dict.word[i], f.dict.word[i]);
  ck_assert(dict_hash(&c.dict) == dict_hash(&f.dict));
  same_tokens("train", &c.train, &f.train);
  same_tokens("valid", &c.valid, &f.valid);
  same_tokens("test", &c.test, &f.test);
  corpus_free(&c);
  corpus_free(&f);
}

/* The first load writes the cache, the second maps it: both as fresh. */
START_TEST(test_cache_same)
{
  write_corpus();
  ck_assert(!cache_exists());
  check_against_fresh();
  ck_assert(cache_exists());
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  ck_assert_uint_ne(c.train.mapped, 0);   /* read from the cache */
  corpus_free(&c);
  check_against_fresh();
}
END_TEST

/* A train.txt changed: other bytes of the same size, its mtime put back
 * (only the hash tells); then a size change. */
START_TEST(test_cache_stale)
{
  char path[512];
  struct stat st;
  write_corpus();
  check_against_fresh();
  snprintf(path, sizeof path, "%s/train.txt", tmpdir);
  ck_assert_int_eq(stat(path, &st), 0);
  char text[sizeof cache_train];
  memcpy(text, cache_train, sizeof text);
  memcpy(text, "THE", 3);
  write_file(tmpdir, "train.txt", text, sizeof text - 1);
  struct timespec t[2] = { st.st_atim, st.st_mtim };
  ck_assert_int_eq(utimensat(AT_FDCWD, path, t, 0), 0);
  check_against_fresh();
  Corpus c;
  char err[ERRLEN] = "";
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  ck_assert_str_eq(c.dict.word[0], "THE");
  corpus_free(&c);
  WRITE(tmpdir, "valid.txt", "new words here\n");
  check_against_fresh();
  ck_assert_msg(corpus_load(&c, tmpdir, err) == 0, "%s", err);
  ck_assert_int_eq(dict_find(&c.dict, "here"), c.dict.nword - 1);
  corpus_free(&c);
}
END_TEST

static size_t read_cache(char *buf, size_t cap)
{
  char path[512];
  snprintf(path, sizeof path, "%s/.lmc-tokens", tmpdir);
  FILE *f = fopen(path, "rb");
  ck_assert(f != NULL);
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

/* Corrupt caches: truncated anywhere, or a byte flipped in the magic, the
 * version, the header's counts, the words, a token id: each one refused
 * (the version: taken as another tokenizer's), rebuilt as it was. */
START_TEST(test_cache_corrupt)
{
  static char good[1 << 18], bad[1 << 18];
  write_corpus();
  check_against_fresh();
  size_t n = read_cache(good, sizeof good);
  ck_assert_uint_gt(n, 200);
  const size_t cut[] = { 0, 7, 100, 184, n - 1 };
  for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
    write_file(tmpdir, ".lmc-tokens", good, cut[i]);
    check_against_fresh();
    ck_assert_uint_eq(read_cache(bad, sizeof bad), n);   /* rebuilt whole */
  }
  const size_t flip[] = { 0, 8, 16, 24, 32, 40, 48, 186, 65536, n - 4 };
  for (size_t i = 0; i < sizeof flip / sizeof flip[0]; i++) {
    memcpy(bad, good, n);
    bad[flip[i]] ^= 0x41;
    write_file(tmpdir, ".lmc-tokens", bad, n);
    check_against_fresh();
    ck_assert_uint_eq(read_cache(bad, sizeof bad), n);
    ck_assert(memcmp(bad, good, n) == 0);
  }
}
END_TEST

/* A folder that cannot take the cache (as root, only a non-regular file
 * at its path refuses it): loads work, from the text, and it stays. */
START_TEST(test_cache_unwritable)
{
  char path[512];
  write_corpus();
  snprintf(path, sizeof path, "%s/.lmc-tokens", tmpdir);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  check_against_fresh();
  check_against_fresh();
  struct stat st;
  ck_assert_int_eq(lstat(path, &st), 0);
  ck_assert(S_ISDIR(st.st_mode));
  rmdir(path);
  if (geteuid() != 0) {
    ck_assert_int_eq(chmod(tmpdir, 0500), 0);
    check_against_fresh();
    ck_assert(!cache_exists());
    chmod(tmpdir, 0700);
  }
}
END_TEST

static Suite *corpus_suite(void)
{
  Suite *s = suite_create("corpus");
  TCase *tc = tcase_create("corpus");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_tokenize_small);
  tcase_add_test(tc, test_empty_and_eos_order);
  tcase_add_test(tc, test_bad_bytes);
  tcase_add_test(tc, test_missing_file);
  tcase_add_test(tc, test_not_regular);
  tcase_add_test(tc, test_size_cap);
  tcase_add_test(tc, test_dict);
  tcase_add_test(tc, test_batchify);
  tcase_add_test(tc, test_tiny);
  tcase_add_test(tc, test_wikitext2);
  tcase_add_test(tc, test_pieces);
  tcase_add_test(tc, test_cache_same);
  tcase_add_test(tc, test_cache_stale);
  tcase_add_test(tc, test_cache_corrupt);
  tcase_add_test(tc, test_cache_unwritable);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return run_suite(corpus_suite());
}
