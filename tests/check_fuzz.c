/*
 * check_fuzz.c: the fuzz targets' findings as regression tests.
 *
 * The three libFuzzer targets of tests/fuzz/ are compiled in here (their
 * entry points renamed) and run on every file of tests/fuzz/regress/NAME/,
 * the reproducers of what `make fuzz` found, and of the seed corpus
 * tests/fuzz/corpus/NAME/ (for the graph target, the models in graphs/
 * and the bad graphs of tests/golden/errors/).  A target aborts on a finding it checks itself (a malformed
 * refusal, a token id out of range) and a compiler bug exits: either fails
 * the test.  A reproducer also runs four more times, and the
 * heap in use (mallinfo2) must not grow from the second run to the last:
 * a user error caught through user_error_jmp must free what it held.  The
 * suite runs itself again without glibc's thread cache (GLIBC_TUNABLES),
 * whose cached chunks count as in use.  Under make sanitize, ASan and
 * LeakSanitizer check the same runs.
 * Run from the repository root.
 */
#include <dirent.h>
#include <malloc.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

#define LLVMFuzzerInitialize graph_init
#define LLVMFuzzerTestOneInput graph_one
#include "fuzz/fuzz_graph.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerInitialize ckpt_init
#define LLVMFuzzerTestOneInput ckpt_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerInitialize corpus_init
#define LLVMFuzzerTestOneInput corpus_one
#include "fuzz/fuzz_corpus.c"

typedef int (*TestOne)(const uint8_t *data, size_t size);

static size_t heap_in_use(void)
{
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

static uint8_t *slurp(const char *path, size_t *n)
{
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "%s: cannot open", path);
  size_t cap = 1 << 16;
  uint8_t *b = malloc(cap);
  *n = 0;
  size_t k;
  while ((k = fread(b + *n, 1, cap - *n, f)) > 0)
    if ((*n += k) == cap)
      b = realloc(b, cap *= 2);
  fclose(f);
  return b;
}

/* Runs one on every file of dir whose name ends in suffix ("" for all),
 * repeat times each; returns the count.  Fails naming every file whose
 * runs grew the heap. */
static int replay(const char *dir, const char *suffix, TestOne one, int repeat)
{
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  int count = 0, ngrew = 0;
  char grew[4096] = "";
  struct dirent *e;
  while ((e = readdir(d))) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    size_t len = strlen(e->d_name), slen = strlen(suffix);
    if (e->d_name[0] == '.' || len < slen || strcmp(e->d_name + len - slen, suffix) != 0 ||
        stat(path, &st) != 0 || !S_ISREG(st.st_mode))
      continue;
    size_t n;
    uint8_t *data = slurp(path, &n);
    fprintf(stderr, "replay %s\n", path);
    one(data, n);
    size_t before = heap_in_use();
    for (int r = 1; r < repeat; r++)
      one(data, n);
    size_t after = heap_in_use();
    if (repeat >= 3 && after > before) {
      ngrew++;
      snprintf(grew + strlen(grew), sizeof grew - strlen(grew), "\n  %s: the heap grew by %zu bytes in %d runs",
               path, after - before, repeat - 1);
    }
    free(data);
    count++;
  }
  closedir(d);
  ck_assert_msg(ngrew == 0, "%d of %d files leak:%s", ngrew, count, grew);
  return count;
}

START_TEST(graph_regressions)
{
  graph_init(NULL, NULL);
  ck_assert_int_gt(replay("tests/fuzz/regress/graph", "", graph_one, 5), 0);
}
END_TEST

START_TEST(graph_seeds)
{
  graph_init(NULL, NULL);
  ck_assert_int_gt(replay("tests/golden/errors", ".lua", graph_one, 1), 0);
  ck_assert_int_ge(replay("graphs", ".lua", graph_one, 1), 5);
}
END_TEST

START_TEST(safetensors_seeds_and_regressions)
{
  ckpt_init(NULL, NULL);
  replay("tests/fuzz/regress/safetensors", "", ckpt_one, 5);
  ck_assert_int_gt(replay("tests/fuzz/corpus/safetensors", "", ckpt_one, 5), 0);
}
END_TEST

START_TEST(corpus_seeds_and_regressions)
{
  corpus_init(NULL, NULL);
  replay("tests/fuzz/regress/corpus", "", corpus_one, 5);
  ck_assert_int_gt(replay("tests/fuzz/corpus/corpus", "", corpus_one, 5), 0);
}
END_TEST

int main(int argc, char **argv)
{
  const char *tunables = getenv("GLIBC_TUNABLES");
  if (argc > 0 && !(tunables && strstr(tunables, "glibc.malloc.tcache_count=0"))) {
    setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
    execv("/proc/self/exe", argv);
    perror("check_fuzz: cannot run itself again");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("fuzz");
  TCase *tc = tcase_create("replay");
  tcase_set_timeout(tc, 60);   /* a hang (gc_finalizer_hang.lua) fails */
  tcase_add_test(tc, graph_regressions);
  tcase_add_test(tc, graph_seeds);
  tcase_add_test(tc, safetensors_seeds_and_regressions);
  tcase_add_test(tc, corpus_seeds_and_regressions);
  suite_add_tcase(s, tc);
  return run_suite(s);
}
