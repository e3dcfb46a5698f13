/*
 * corpus.c: the dictionary, the tokenizer and batching of the PyTorch
 * example's data.py, byte for byte.
 *
 * data.py reads each file in text mode (UTF-8, universal newlines), and for
 * every line appends line.split() + ['<eos>'] to one dictionary shared by
 * train, valid and test, in that order, so word ids are first-seen order
 * over the three files.  We reproduce that on raw bytes:
 *
 *   lines   end at "\n", "\r\n" or a lone "\r" (Python's universal
 *           newlines); the last line may lack its end; an empty file has no
 *           lines, and every line, empty or not, gives one <eos>.
 *   words   runs of bytes between whitespace as str.isspace() defines it
 *           on the decoded text: ASCII \t \n \v \f \r, space and \x1c-\x1f,
 *           and the UTF-8 encodings of U+0085, U+00A0, U+1680,
 *           U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
 *
 * Where Python would fail (bytes that are not UTF-8) we refuse the file
 * with its line number; NUL bytes, which Python accepts but which C strings
 * cannot hold, are refused too.
 *
 * A file is read in pieces of 1 MiB and only whole lines are tokenized,
 * so memory is the token list (4 bytes a token) and the dictionary, not a
 * copy of the text.  corpus_load (corpus_cache.c) adds the token cache.
 *
 * batchify and get_batch are data.view(bsz, -1).t().contiguous() and
 * main.py's get_batch: the stream cut into bsz columns of nrows tokens,
 * read in windows of bptt rows, the last one shorter.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

/* ---------------------------------------------------------- dictionary */

static uint64_t fnv1a(const char *s, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

void dict_init(Dict *d)
{
  memset(d, 0, sizeof *d);
}

/* Slot of word w (len n): the one holding it, or the empty one where it
 * would go.  nslot is a power of two, at most half full. */
static size_t dict_slot(const Dict *d, const char *w, size_t n)
{
  size_t mask = d->nslot - 1;
  size_t i = (size_t)fnv1a(w, n) & mask;
  for (;;) {
    int id = d->slot[i] - 1;
    if (id < 0)
      return i;
    const char *v = d->word[id];
    if (strncmp(v, w, n) == 0 && v[n] == '\0')
      return i;
    i = (i + 1) & mask;
  }
}

static void dict_grow(Dict *d)
{
  size_t nslot = d->nslot ? d->nslot * 2 : 1024;
  int *old = d->slot;
  size_t oldn = d->nslot;
  d->slot = rt_calloc(nslot, sizeof *d->slot, "the dictionary");
  d->nslot = nslot;
  for (size_t i = 0; i < oldn; i++)
    if (old[i]) {
      const char *w = d->word[old[i] - 1];
      d->slot[dict_slot(d, w, strlen(w))] = old[i];
    }
  free(old);
}

static int dict_find_n(const Dict *d, const char *w, size_t n)
{
  if (d->nslot == 0)
    return -1;
  return d->slot[dict_slot(d, w, n)] - 1;
}

static int dict_add_n(Dict *d, const char *w, size_t n)
{
  if (2 * ((size_t)d->nword + 1) > d->nslot)
    dict_grow(d);
  size_t i = dict_slot(d, w, n);
  if (d->slot[i])
    return d->slot[i] - 1;
  int nw = d->nword;   /* word holds 16, then doubles when full */
  if (nw == 0 || (nw >= 16 && (nw & (nw - 1)) == 0)) {
    d->word = rt_realloc(d->word, (nw ? 2 * (size_t)nw : 16) * sizeof *d->word, "the dictionary");
  }
  char *s = rt_malloc(n + 1, "a word");
  memcpy(s, w, n);
  s[n] = '\0';
  d->word[d->nword] = s;
  d->slot[i] = ++d->nword;
  return d->nword - 1;
}

int dict_add(Dict *d, const char *w)
{
  return dict_add_n(d, w, strlen(w));
}

int dict_find(const Dict *d, const char *w)
{
  return dict_find_n(d, w, strlen(w));
}

uint64_t dict_hash(const Dict *d)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < d->nword; i++) {
    const unsigned char *s = (const unsigned char *)d->word[i];
    do {
      h ^= *s;
      h *= 0x100000001b3ull;
    } while (*s++);
  }
  return h;
}

void dict_free(Dict *d)
{
  for (int i = 0; i < d->nword; i++)
    free(d->word[i]);
  free(d->word);
  free(d->slot);
  dict_init(d);
}

/* ----------------------------------------------------------- tokenizer */

/* Length of the UTF-8 sequence at p (end e), or 0 when it is not valid
 * UTF-8 as Python's strict decoder sees it (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
static int utf8_len(const unsigned char *p, const unsigned char *e)
{
  unsigned c = p[0];
  int n;
  unsigned lo = 0x80, hi = 0xbf;
  if (c < 0x80) return 1;
  else if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else
    return 0;
  if (e - p < n) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (int i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xbf) return 0;
  return n;
}

/* Bytes of the whitespace character at p (of UTF-8 length n), else 0. */
static int space_len(const unsigned char *p, int n)
{
  if (n == 1) {
    unsigned c = p[0];
    return (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
  }
  if (n == 2)
    return (p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0)) ? 2 : 0;
  if (n == 3) {
    unsigned cp = ((p[0] & 0x0fu) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3fu);
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202f || cp == 0x205f || cp == 0x3000)
      return 3;
  }
  return 0;
}

static void tokens_push(Tokens *t, size_t *cap, int32_t id)
{
  if (t->n == *cap) {
    *cap = *cap ? *cap * 2 : 4096;
    t->id = rt_realloc(t->id, *cap * sizeof *t->id, "a corpus's tokens");
  }
  t->id[t->n++] = id;
}

/* The largest corpus file read: 8 GiB by default (WikiText-103's train.txt
 * is 540 MB), LMC_CORPUS_MAX_BYTES to change it.  A folder, FIFO or device
 * at train.txt (/dev/zero would be read forever) is refused before a byte
 * is read. */
#define CORPUS_MAX_BYTES ((size_t)8 << 30)

size_t corpus_max_bytes(void)
{
  const char *s = getenv("LMC_CORPUS_MAX_BYTES");
  if (s && *s) {
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (!*e && !errno && v > 0 && !strchr(s, '-'))
      return (size_t)v;
  }
  return CORPUS_MAX_BYTES;
}

static const char *file_kind(mode_t m)
{
  if (S_ISDIR(m)) return "a folder";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

/* Opens the regular file at path for reading, its size and mtime in *st.
 * Opened without blocking, so that a FIFO is refused rather than waited on. */
int corpus_open_text(const char *path, TextStamp *st, char *err)
{
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, ERRLEN, "%s: error: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    snprintf(err, ERRLEN, "%s: error: cannot read: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  if (!S_ISREG(sb.st_mode)) {
    snprintf(err, ERRLEN, "%s: error: not a regular file (it is %s)", path, file_kind(sb.st_mode));
    close(fd);
    return -1;
  }
  size_t max = corpus_max_bytes();
  if ((unsigned long long)sb.st_size > max) {
    snprintf(err, ERRLEN, "%s: error: %lld bytes, more than the %zu a corpus file may have (LMC_CORPUS_MAX_BYTES)",
             path, (long long)sb.st_size, max);
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  *st = (TextStamp){ (uint64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec, (int64_t)sb.st_mtim.tv_nsec, 0 };
  return fd;
}

/* One file's tokenization as it goes: the file is read in pieces, and
 * only whole lines are tokenized, the rest kept for the next piece. */
typedef struct {
  Dict *d;
  Tokens t;
  size_t cap;
  int eos;               /* <eos>'s id, -1 until seen */
  int line;              /* of the next line, from 1 */
  size_t base;           /* file offset of the buffer's first byte */
  const char *path;
} Scan;

/* Where the whole lines of b[0, n) end: after the last line end, a \r
 * at the very end excepted (it may be the first half of a \r\n). */
static size_t lines_end(const unsigned char *b, size_t n)
{
  size_t q = n;
  if (q && b[q - 1] == '\r')
    q--;
  while (q && b[q - 1] != '\n' && b[q - 1] != '\r')
    q--;
  return q;
}

/* Tokenizes the lines that start in [buf, lim), e being the end of the
 * bytes read (the file's end when lim is). */
static int scan_lines(Scan *s, const unsigned char *buf, const unsigned char *lim, const unsigned char *e, char *err)
{
  const unsigned char *p = buf;
  Tokens t = s->t;   /* in locals: the dictionary's stores cannot alias them */
  size_t cap = s->cap;
  int line = s->line, rc = 0;
  while (p < lim) {
    /* one line: words up to the line end, then <eos> */
    const unsigned char *w = NULL;   /* start of the current word */
    for (;;) {
      if (p == e || *p == '\n' || *p == '\r') {
        if (w) tokens_push(&t, &cap, dict_add_n(s->d, (const char *)w, (size_t)(p - w)));
        break;
      }
      if (*p == 0) {
        snprintf(err, ERRLEN, "%s:%d: error: NUL byte in text", s->path, line);
        rc = -1;
        goto out;
      }
      int n = utf8_len(p, e);
      if (n == 0) {
        snprintf(err, ERRLEN, "%s:%d: error: invalid UTF-8 (byte 0x%02x at offset %zu)", s->path, line, *p,
                 s->base + (size_t)(p - buf));
        rc = -1;
        goto out;
      }
      if (space_len(p, n)) {
        if (w) tokens_push(&t, &cap, dict_add_n(s->d, (const char *)w, (size_t)(p - w)));
        w = NULL;
      } else if (!w)
        w = p;
      p += n;
    }
    if (s->eos < 0)
      s->eos = dict_add(s->d, "<eos>");
    tokens_push(&t, &cap, s->eos);
    if (p < e && *p++ == '\r' && p < e && *p == '\n')
      p++;
    line++;
  }
out:
  s->t = t;
  s->cap = cap;
  s->line = line;
  return rc;
}

/* Reads fd in pieces of 1 MiB (more for a longer line), hashing every
 * byte into h, and tokenizes its lines. */
static int scan_file(Scan *s, int fd, TextHash *h, char *err)
{
  size_t cap = (size_t)1 << 20, have = 0, total = 0, max = corpus_max_bytes();
  unsigned char *buf = rt_malloc(cap, "a corpus file's buffer");
  int rc = -1;
  for (;;) {
    if (have == cap)
      buf = rt_realloc(buf, cap *= 2, "a corpus file's buffer");
    ssize_t r = read(fd, buf + have, cap - have);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      snprintf(err, ERRLEN, "%s: error: cannot read: %s", s->path, strerror(errno));
      break;
    }
    total += (size_t)r;
    if (total > max) {   /* a file that grew since it was opened */
      snprintf(err, ERRLEN, "%s: error: more than the %zu bytes a corpus file may have (LMC_CORPUS_MAX_BYTES)",
               s->path, max);
      break;
    }
    text_hash_update(h, buf + have, (size_t)r);
    have += (size_t)r;
    size_t lim = r == 0 ? have : lines_end(buf, have);
    if (scan_lines(s, buf, buf + lim, buf + have, err) < 0)
      break;
    memmove(buf, buf + lim, have - lim);
    s->base += lim;
    have -= lim;
    if (r == 0) {
      rc = 0;
      break;
    }
  }
  free(buf);
  return rc;
}

/* tokenize_file, and the file's size, mtime and text hash in *st. */
static int tokenize_stamped(Dict *d, const char *path, Tokens *out, TextStamp *st, char *err)
{
  int fd = corpus_open_text(path, st, err);
  if (fd < 0)
    return -1;
  /* English text: about one token per 5 bytes; the pages not used are
   * never touched, and given back at the end */
  Scan s = { .d = d, .cap = (size_t)st->size / 4 + 16, .line = 1, .path = path };
  s.t.id = rt_malloc(s.cap * sizeof *s.t.id, "a corpus's tokens");
  /* <eos> gets its id when first seen: after the first line's words */
  s.eos = dict_find(d, "<eos>");
  TextHash h;
  text_hash_init(&h);
  int rc = scan_file(&s, fd, &h, err);
  close(fd);
  if (rc < 0) {
    free(s.t.id);
    return -1;
  }
  st->hash = text_hash_final(&h);
  s.t.id = rt_realloc(s.t.id, (s.t.n ? s.t.n : 1) * sizeof *s.t.id, "a corpus's tokens");
  *out = s.t;
  return 0;
}

int tokenize_file(Dict *d, const char *path, Tokens *out, char *err)
{
  TextStamp st;
  return tokenize_stamped(d, path, out, &st, err);
}

void corpus_join(const char *dir, const char *name, char path[CORPUS_PATHLEN])
{
  size_t dl = strlen(dir);
  snprintf(path, CORPUS_PATHLEN, "%s%s%s", dir, dl > 0 && dir[dl - 1] == '/' ? "" : "/", name);
}

const char *const corpus_file[3] = { "train.txt", "valid.txt", "test.txt" };

int corpus_tokenize(Corpus *c, const char *dir, TextStamp stamp[3], char *err)
{
  memset(c, 0, sizeof *c);
  dict_init(&c->dict);
  Tokens *split[3] = { &c->train, &c->valid, &c->test };
  for (int i = 0; i < 3; i++) {
    char path[CORPUS_PATHLEN];
    corpus_join(dir, corpus_file[i], path);
    if (tokenize_stamped(&c->dict, path, split[i], &stamp[i], err) < 0) {
      corpus_free(c);
      return -1;
    }
  }
  return 0;
}

void tokens_free(Tokens *t)
{
  if (t->mapped)
    munmap(t->id, t->mapped);
  else
    free(t->id);
  t->mapped = 0;
  t->id = NULL;
  t->n = 0;
}

void corpus_free(Corpus *c)
{
  dict_free(&c->dict);
  tokens_free(&c->train);
  tokens_free(&c->valid);
  tokens_free(&c->test);
  memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------ batching */

void batchify_slice(const Tokens *t, int bsz, int slice, int nslice, Batches *out)
{
  out->bsz = bsz;
  out->nrows = bsz > 0 ? t->n / ((size_t)bsz * (size_t)nslice) : 0;
  out->data = NULL;
  if (out->nrows == 0)
    return;
  out->data = rt_malloc(out->nrows * (size_t)bsz * sizeof *out->data, "batches");
  size_t first = (size_t)slice * (size_t)bsz;
  for (size_t i = 0; i < out->nrows; i++)
    for (int j = 0; j < bsz; j++)
      out->data[i * (size_t)bsz + (size_t)j] = t->id[(first + (size_t)j) * out->nrows + i];
}

void batchify(const Tokens *t, int bsz, Batches *out)
{
  batchify_slice(t, bsz, 0, 1, out);
}

void batches_free(Batches *b)
{
  free(b->data);
  b->data = NULL;
  b->nrows = 0;
}

int get_batch(const Batches *b, size_t i, int bptt, const int32_t **x, const int32_t **y)
{
  if (b->nrows == 0 || i + 1 >= b->nrows || bptt <= 0) {
    *x = *y = NULL;
    return 0;
  }
  size_t T = b->nrows - 1 - i;
  if (T > (size_t)bptt)
    T = (size_t)bptt;
  *x = b->data + i * (size_t)b->bsz;
  *y = b->data + (i + 1) * (size_t)b->bsz;
  return (int)T;
}
