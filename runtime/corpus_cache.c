/*
 * corpus_cache.c: the binary token cache next to a corpus, DIR/.lmc-tokens,
 * and corpus_load, which reads it or makes it.  It holds the dictionary
 * and the three token streams of DIR/train.txt, valid.txt and test.txt,
 * so that a start on a corpus of WikiText-103's size maps 400 MB of tokens
 * instead of tokenizing 500 MB of text (bench/README.md, "Large corpora").
 *
 * Layout, in the machine's byte order:
 *   header   CacheHeader: magic, CACHE_VERSION, the word and token counts,
 *            a hash of what follows, and each text file's size, mtime and
 *            text hash (TextStamp)
 *   words    the nword words in id order, each ending in a NUL
 *   tokens   train, valid and test as int32 ids, each at an offset that is
 *            a multiple of 64 KiB, mapped on its own (so that processes
 *            reading one corpus share the page cache's copy, and a trainer
 *            unmaps each list once it is batched)
 *
 * A cache is used only when every text file has the recorded size and
 * mtime and its bytes hash to the recorded hash (the text is read again:
 * a fraction of a second for 500 MB), and it was written by this
 * tokenizer (CACHE_VERSION: bump it when tokenize_file's output changes).
 * Otherwise it is stale: tokenized again and rewritten, silently.  A cache
 * that is not sound (truncated, sizes that do not add up to its length, a
 * word repeated or empty, an id not below the word count, a payload hash
 * that does not match) is never used: a warning, then the same.
 *
 * Written through outfile.c (PATH.tmp renamed over PATH: never half a
 * cache, nothing written through a link or over what is not a regular
 * file), under an flock of DIR, so that programs starting together on one
 * corpus tokenize it once.  A folder that cannot take the cache gives one
 * warning and the run goes on without it.
 */
#define _DEFAULT_SOURCE   /* flock */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

#define CACHE_NAME ".lmc-tokens"
#define CACHE_VERSION 1
#define CACHE_ALIGN ((uint64_t)1 << 16)
#define CACHE_MAX ((uint64_t)1 << 56)   /* any count above is a crafted file */
static const char cache_magic[8] = { 'l', 'm', 'c', '-', 't', 'o', 'k', '\n' };

typedef struct {
  char magic[8];
  uint64_t version;
  uint64_t nword, words_bytes;
  uint64_t ntok[3];
  uint64_t payload_hash;   /* text_hash of the words, then the three token lists */
  TextStamp text[3];
} CacheHeader;

/* ---------------------------------------------------------------- hash */

static uint64_t le64(const unsigned char *p)
{
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
         (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static uint64_t mix(uint64_t h, uint64_t w)
{
  h ^= w * 0x9e3779b97f4a7c15ull;
  return (h << 31 | h >> 33) * 0xbf58476d1ce4e5b9ull;
}

void text_hash_init(TextHash *h)
{
  *h = (TextHash){ .h = 0x243f6a8885a308d3ull };
}

/* Eight bytes at a time, little-endian, whatever the pieces. */
void text_hash_update(TextHash *h, const void *data, size_t n)
{
  const unsigned char *p = data;
  h->len += n;
  if (h->ntail) {
    for (; n && h->ntail < 8; n--)
      h->tail |= (uint64_t)*p++ << (8 * h->ntail++);
    if (h->ntail < 8)
      return;
    h->h = mix(h->h, h->tail);
    h->tail = 0;
    h->ntail = 0;
  }
  for (; n >= 8; p += 8, n -= 8)
    h->h = mix(h->h, le64(p));
  for (; n; n--)
    h->tail |= (uint64_t)*p++ << (8 * h->ntail++);
}

uint64_t text_hash_final(const TextHash *h)
{
  uint64_t x = mix(mix(h->h, h->tail), h->len);
  x ^= x >> 29;
  return x;
}

/* -------------------------------------------------------------- layout */

static uint64_t align_up(uint64_t x)
{
  return (x + CACHE_ALIGN - 1) & ~(CACHE_ALIGN - 1);
}

/* Offsets of the three token lists; the cache's length.  Counts are below
 * CACHE_MAX (checked before), so nothing overflows. */
static uint64_t cache_layout(const CacheHeader *h, uint64_t off[3])
{
  uint64_t end = sizeof *h + h->words_bytes;
  for (int i = 0; i < 3; i++) {
    off[i] = align_up(end);
    end = off[i] + 4 * h->ntok[i];
  }
  return end;
}

/* ---------------------------------------------------------------- read */

/* Whether the text file at path is the one st describes: size and mtime,
 * then the hash of its bytes. */
static bool text_matches(const char *path, const TextStamp *want)
{
  char err[ERRLEN];
  TextStamp st;
  int fd = corpus_open_text(path, &st, err);
  if (fd < 0)
    return false;
  bool ok = st.size == want->size && st.mtime_sec == want->mtime_sec && st.mtime_nsec == want->mtime_nsec;
  if (ok) {
    static unsigned char buf[1 << 20];
    TextHash h;
    text_hash_init(&h);
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR))
      if (r > 0)
        text_hash_update(&h, buf, (size_t)r);
    ok = r == 0 && h.len == want->size && text_hash_final(&h) == want->hash;
  }
  close(fd);
  return ok;
}

/* The words block into d: nword distinct non-empty words, each ending in
 * a NUL; NULL when it is that, else what is wrong. */
static const char *read_words(Dict *d, const char *w, uint64_t n, uint64_t nword)
{
  if (n && w[n - 1] != '\0')
    return "the last word has no end";
  for (const char *p = w, *e = w + n; p < e; p += strlen(p) + 1) {
    if (!*p)
      return "an empty word";
    if ((uint64_t)d->nword == nword)
      return "more words than its header says";
    if (dict_add(d, p) != d->nword - 1)
      return "a word twice";
  }
  return (uint64_t)d->nword == nword ? NULL : "fewer words than its header says";
}

/* Maps token list i at off; NULL when it is sound, else what is wrong.
 * Every id must be below the word count; the payload hash runs on. */
static const char *map_tokens(Tokens *t, int fd, uint64_t off, uint64_t n, uint64_t nword, TextHash *h)
{
  if (n == 0)
    return NULL;
  void *p = mmap(NULL, (size_t)(4 * n), PROT_READ, MAP_PRIVATE, fd, (off_t)off);
  if (p == MAP_FAILED)
    return "it cannot be mapped";
  *t = (Tokens){ p, (size_t)n, (size_t)(4 * n) };
  const uint32_t *id = p;
  uint32_t bad = 0;
  for (size_t i = 0; i < t->n; i++)
    bad |= id[i] >= nword;
  text_hash_update(h, p, (size_t)(4 * n));
  return bad ? "a token id is not below the word count" : NULL;
}

/* What is wrong with the sound parts of the cache open at fd (size bytes),
 * or NULL, c then holding its corpus. */
static const char *read_payload(Corpus *c, int fd, const CacheHeader *h, uint64_t size)
{
  uint64_t off[3];
  if (h->nword > (uint64_t)INT32_MAX || h->words_bytes >= CACHE_MAX || h->ntok[0] >= CACHE_MAX ||
      h->ntok[1] >= CACHE_MAX || h->ntok[2] >= CACHE_MAX || cache_layout(h, off) != size)
    return "its header's sizes do not add up to its length";
  char *w = rt_malloc((size_t)h->words_bytes, "the token cache's words");
  const char *why = NULL;
  if (pread(fd, w, (size_t)h->words_bytes, (off_t)sizeof *h) != (ssize_t)h->words_bytes)
    why = "it cannot be read";
  if (!why)
    why = read_words(&c->dict, w, h->words_bytes, h->nword);
  TextHash hash;
  text_hash_init(&hash);
  text_hash_update(&hash, w, (size_t)h->words_bytes);
  free(w);
  Tokens *split[3] = { &c->train, &c->valid, &c->test };
  for (int i = 0; i < 3 && !why; i++)
    why = map_tokens(split[i], fd, off[i], h->ntok[i], h->nword, &hash);
  if (!why && text_hash_final(&hash) != h->payload_hash)
    why = "its contents do not match their hash";
  return why;
}

/* 1: c holds the cache's corpus.  0: no cache of this text (none, not a
 * regular file, stale, another version).  -1: a cache that is not sound,
 * why saying how. */
static int cache_read(Corpus *c, const char *dir, const char *cpath, char *why)
{
  memset(c, 0, sizeof *c);
  dict_init(&c->dict);
  int fd = open(cpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return 0;
  struct stat sb;
  CacheHeader h;
  const char *bad = NULL;
  int rc = 0;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    goto done;
  if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
    bad = "shorter than its header";
  else if (memcmp(h.magic, cache_magic, sizeof h.magic) != 0)
    bad = "not a token cache";
  if (bad || h.version != CACHE_VERSION)
    goto done;
  for (int i = 0; i < 3; i++) {
    char path[CORPUS_PATHLEN];
    corpus_join(dir, corpus_file[i], path);
    if (!text_matches(path, &h.text[i]))
      goto done;
  }
  bad = read_payload(c, fd, &h, (uint64_t)sb.st_size);
  rc = bad ? 0 : 1;
done:
  close(fd);
  if (rc != 1)
    corpus_free(c);
  if (bad) {
    snprintf(why, ERRLEN, "%s", bad);
    return -1;
  }
  return rc;
}

/* --------------------------------------------------------------- write */

static void write_zeros(FILE *f, uint64_t n)
{
  static const char zero[4096];
  for (uint64_t k; n; n -= k) {
    k = n < sizeof zero ? n : sizeof zero;
    fwrite(zero, 1, (size_t)k, f);
  }
}

static int cache_write(const Corpus *c, const TextStamp stamp[3], const char *cpath, char *err)
{
  const Tokens *split[3] = { &c->train, &c->valid, &c->test };
  CacheHeader h = { .version = CACHE_VERSION, .nword = (uint64_t)c->dict.nword };
  memcpy(h.magic, cache_magic, sizeof h.magic);
  TextHash hash;
  text_hash_init(&hash);
  for (int i = 0; i < c->dict.nword; i++) {
    size_t n = strlen(c->dict.word[i]) + 1;
    text_hash_update(&hash, c->dict.word[i], n);
    h.words_bytes += n;
  }
  for (int i = 0; i < 3; i++) {
    h.ntok[i] = split[i]->n;
    h.text[i] = stamp[i];
    text_hash_update(&hash, split[i]->id, 4 * split[i]->n);
  }
  h.payload_hash = text_hash_final(&hash);
  uint64_t off[3];
  cache_layout(&h, off);

  OutFile o;
  if (outfile_open(&o, cpath, err, ERRLEN) < 0)
    return -1;
  fwrite(&h, sizeof h, 1, o.f);
  for (int i = 0; i < c->dict.nword; i++)
    fwrite(c->dict.word[i], strlen(c->dict.word[i]) + 1, 1, o.f);
  uint64_t at = sizeof h + h.words_bytes;
  for (int i = 0; i < 3; i++) {
    write_zeros(o.f, off[i] - at);
    if (split[i]->n)
      fwrite(split[i]->id, 4, split[i]->n, o.f);
    at = off[i] + 4 * h.ntok[i];
  }
  return outfile_commit(&o, false, err, ERRLEN);   /* checks every write */
}

/* ---------------------------------------------------------------- load */

/* An flock of DIR held while its cache is made; -1 when it cannot be had.
 * *waited: another program held it (and may have made the cache). */
static int lock_dir(const char *dir, bool *waited)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  *waited = false;
  if (fd < 0)
    return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) == 0)
    return fd;
  *waited = true;
  while (flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) {
      close(fd);
      return -1;
    }
  return fd;
}

/* err's "PATH: error: " left out, for a warning. */
static const char *reason(const char *err, const char *path)
{
  size_t k = strlen(path);
  return strncmp(err, path, k) == 0 && strncmp(err + k, ": error: ", 9) == 0 ? err + k + 9 : err;
}

int corpus_load(Corpus *c, const char *dir, char *err)
{
  char cpath[CORPUS_PATHLEN], why[ERRLEN];
  corpus_join(dir, CACHE_NAME, cpath);
  int r = cache_read(c, dir, cpath, why);
  if (r > 0)
    return 0;
  if (r < 0)
    rt_warning("%s: %s; tokenizing the corpus again", cpath, why);
  bool waited;
  int lock = lock_dir(dir, &waited);
  if (waited && cache_read(c, dir, cpath, why) > 0) {
    close(lock);
    return 0;
  }
  TextStamp stamp[3];
  int rc = corpus_tokenize(c, dir, stamp, err);
  char werr[ERRLEN];
  static bool warned;
  if (rc == 0 && cache_write(c, stamp, cpath, werr) < 0 && !warned) {
    rt_warning("%s: %s; running without a token cache", cpath, reason(werr, cpath));
    warned = true;
  }
  if (lock >= 0)
    close(lock);
  return rc;
}
