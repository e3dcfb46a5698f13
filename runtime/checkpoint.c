/*
 * checkpoint.c: safetensors files holding a model's parameters under their
 * PyTorch state_dict names, so checkpoints move both ways between lmc
 * trainers and the PyTorch example.
 *
 * The format (github.com/huggingface/safetensors):
 *
 *   u64 N, little-endian        length of the header
 *   N bytes of JSON             {"__metadata__": {"key": "value", ...},
 *                                "name": {"dtype": "F32", "shape": [..],
 *                                         "data_offsets": [begin, end]}, ...}
 *   the data                    raw little-endian values; offsets are
 *                               relative to the first byte after the header
 *
 * We write F32 always (from float or double `real`), tensors sorted by
 * name, packed in that order, the header padded with spaces to a multiple
 * of 8 bytes as the reference writer does.  A tied tensor is written under
 * each of its names, as state_dict does.  Writes go through outfile.h:
 * PATH.tmp, created exclusively, flushed, fsync'd and renamed over PATH,
 * so PATH is either the old file or the complete new one, and a PATH that
 * is a device, FIFO or link is refused, never replaced.
 *
 * Reading trusts nothing, and enforces the format as the reference
 * implementation does (safetensors' Metadata::validate): a header of at
 * most 100 MB of valid UTF-8 JSON, no name twice (tensors or metadata
 * keys), a known dtype, byte sizes equal to numel x dtype size without
 * overflow, and data_offsets that, sorted, are contiguous from 0 to the
 * end of the file: no overlap, no gap, nothing after the last tensor.
 * Names are checked for repeats by sorting, so a header of 200000 empty
 * tensors costs n log n, not n^2.  All of this, then the compiled model's
 * names, dtypes and shapes, is checked before one value is copied into the
 * caller's
 * parameters, and the values go through a scratch copy, so a refused file
 * leaves param untouched.  F32 and F64 are accepted.  Tensors the model
 * does not have are ignored, except inside a requested extra block
 * (optimizer state), whose names must all be parameters.
 *
 * The JSON reader is a small recursive-descent parser for exactly this
 * schema; anything else in the header is skipped after a syntax check.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

enum { MAX_HEADER = 100000000 };   /* bytes: the reference's MAX_HEADER_SIZE */

static void *xmalloc(size_t n)
{
  void *p = malloc(n ? n : 1);
  if (!p) {
    perror("lmc: out of memory");
    abort();
  }
  return p;
}

static void *xrealloc(void *p, size_t n)
{
  p = realloc(p, n ? n : 1);
  if (!p) {
    perror("lmc: out of memory");
    abort();
  }
  return p;
}

static char *xstrdup(const char *s)
{
  size_t n = strlen(s) + 1;
  return memcpy(xmalloc(n), s, n);
}

static char *concat(const char *a, const char *b)
{
  size_t na = strlen(a), nb = strlen(b);
  char *s = xmalloc(na + nb + 1);
  memcpy(s, a, na);
  memcpy(s + na, b, nb + 1);
  return s;
}

/* ------------------------------------------------------------ metadata */

void meta_set(MetaList *l, const char *key, const char *value)
{
  for (int i = 0; i < l->nmeta; i++)
    if (strcmp(l->meta[i].key, key) == 0) {
      char *v = xstrdup(value);
      free(l->meta[i].value);
      l->meta[i].value = v;
      return;
    }
  l->meta = xrealloc(l->meta, (size_t)(l->nmeta + 1) * sizeof *l->meta);
  l->meta[l->nmeta].key = xstrdup(key);
  l->meta[l->nmeta].value = xstrdup(value);
  l->nmeta++;
}

const char *meta_get(const MetaList *l, const char *key)
{
  for (int i = 0; i < l->nmeta; i++)
    if (strcmp(l->meta[i].key, key) == 0)
      return l->meta[i].value;
  return NULL;
}

void meta_free(MetaList *l)
{
  for (int i = 0; i < l->nmeta; i++) {
    free(l->meta[i].key);
    free(l->meta[i].value);
  }
  free(l->meta);
  l->meta = NULL;
  l->nmeta = 0;
}

/* ------------------------------------------------------ growing string */

typedef struct {
  char *s;
  size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n)
{
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap)
      b->cap = b->cap ? 2 * b->cap : 64;
    b->s = xrealloc(b->s, b->cap);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

static void buf_puts(Buf *b, const char *s)
{
  buf_add(b, s, strlen(s));
}

static void buf_printf(Buf *b, const char *fmt, ...)
{
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* s as a JSON string: quotes, backslashes and control bytes escaped,
 * other bytes (UTF-8) as they are. */
static void buf_json_string(Buf *b, const char *s)
{
  buf_add(b, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    buf_add(b, run, (size_t)(s - run));
    run = s + 1;
    switch (c) {
    case '"': buf_puts(b, "\\\""); break;
    case '\\': buf_puts(b, "\\\\"); break;
    case '\n': buf_puts(b, "\\n"); break;
    case '\t': buf_puts(b, "\\t"); break;
    case '\r': buf_puts(b, "\\r"); break;
    default: buf_printf(b, "\\u%04x", c); break;
    }
  }
  buf_add(b, run, (size_t)(s - run));
  buf_add(b, "\"", 1);
}

/* "[800, 650]" */
static void fmt_shape(char *out, size_t len, int rank, const uint64_t *shape)
{
  size_t k = (size_t)snprintf(out, len, "[");
  for (int i = 0; i < rank && k < len; i++)
    k += (size_t)snprintf(out + k, len - k, "%s%" PRIu64, i ? ", " : "", shape[i]);
  if (k < len)
    snprintf(out + k, len - k, "]");
}

static void desc_shape(const LmcTensorDesc *d, uint64_t *shape)
{
  for (int i = 0; i < d->rank; i++)
    shape[i] = (uint64_t)d->shape[i];
}

/* ------------------------------------------------------- little endian */

static void put_f32(unsigned char *p, float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(u >> (8 * i));
}

static float get_f32(const unsigned char *p)
{
  uint32_t u = 0;
  for (int i = 0; i < 4; i++)
    u |= (uint32_t)p[i] << (8 * i);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static double get_f64(const unsigned char *p)
{
  uint64_t u = 0;
  for (int i = 0; i < 8; i++)
    u |= (uint64_t)p[i] << (8 * i);
  double f;
  memcpy(&f, &u, 8);
  return f;
}

/* ---------------------------------------------------------------- save */

typedef struct {
  char *name;
  const LmcTensorDesc *d;
  const real *src;       /* (d->numel) */
} SaveItem;

static int cmp_item(const void *a, const void *b)
{
  return strcmp(((const SaveItem *)a)->name, ((const SaveItem *)b)->name);
}

/* Converts n reals to little-endian float32 and writes them. */
static int write_f32(FILE *f, const real *x, size_t n)
{
  unsigned char buf[4 * 4096];
  while (n > 0) {
    size_t k = n < 4096 ? n : 4096;
    for (size_t i = 0; i < k; i++)
      put_f32(buf + 4 * i, (float)x[i]);
    if (fwrite(buf, 4, k, f) != k)
      return -1;
    x += k;
    n -= k;
  }
  return 0;
}

/* LMC_TEST_SAVE_PAUSE_MS=N: sleep N ms at each stage of a save, so that
 * tests/suite_faults.sh can kill a trainer at any moment of one. */
void ckpt_test_pause(void)
{
  const char *s = getenv("LMC_TEST_SAVE_PAUSE_MS");
  long ms = s ? atol(s) : 0;
  if (ms > 0 && ms <= 10000) {
    struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
    nanosleep(&ts, NULL);
  }
}

int ckpt_check_path(const char *path, char *err)
{
  return outfile_check(path, err, ERRLEN);
}

/* The header: sorted items packed in order, metadata first, padded to 8. */
static void save_header(Buf *h, const SaveItem *item, int nitem, const MetaList *meta)
{
  buf_puts(h, "{");
  if (meta && meta->nmeta > 0) {
    buf_puts(h, "\"__metadata__\":{");
    for (int i = 0; i < meta->nmeta; i++) {
      if (i) buf_puts(h, ",");
      buf_json_string(h, meta->meta[i].key);
      buf_puts(h, ":");
      buf_json_string(h, meta->meta[i].value);
    }
    buf_puts(h, "}");
  }
  uint64_t off = 0;
  for (int i = 0; i < nitem; i++) {
    const LmcTensorDesc *d = item[i].d;
    if (i || (meta && meta->nmeta > 0)) buf_puts(h, ",");
    buf_json_string(h, item[i].name);
    buf_puts(h, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int r = 0; r < d->rank; r++)
      buf_printf(h, "%s%d", r ? "," : "", d->shape[r]);
    uint64_t end = off + 4 * (uint64_t)d->numel;
    buf_printf(h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, end);
    off = end;
  }
  buf_puts(h, "}");
  while (h->n % 8)
    buf_puts(h, " ");
}

int ckpt_save(const char *path, const LmcModel *m, const real *param,
              const ExtraBlock *extra, int nextra, const MetaList *meta, char *err)
{
  int nitem = 0;
  SaveItem *item = xmalloc((size_t)m->nparam * (size_t)(1 + (nextra > 0 ? nextra : 0)) * sizeof *item);
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    const LmcTensorDesc *store = d->alias >= 0 ? &m->param[d->alias] : d;
    item[nitem++] = (SaveItem){ xstrdup(d->name), d, param + store->offset };
  }
  for (int k = 0; k < nextra; k++)
    for (int i = 0; i < m->nparam && extra[k].data; i++) {
      const LmcTensorDesc *d = &m->param[i];
      if (d->alias < 0)
        item[nitem++] = (SaveItem){ concat(extra[k].prefix, d->name), d, extra[k].data + d->offset };
    }
  qsort(item, (size_t)nitem, sizeof *item, cmp_item);

  int rc = -1;
  Buf h = {0};
  OutFile o;
  for (int i = 1; i < nitem; i++)
    if (strcmp(item[i - 1].name, item[i].name) == 0) {
      snprintf(err, ERRLEN, "%s: error: two tensors named %s", path, item[i].name);
      goto out;
    }
  save_header(&h, item, nitem, meta);
  if (outfile_open(&o, path, err, ERRLEN) < 0)
    goto out;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
  int bad = fwrite(len8, 1, 8, o.f) != 8 || fwrite(h.s, 1, h.n, o.f) != h.n;
  ckpt_test_pause();
  for (int i = 0; i < nitem && !bad; i++)
    bad = write_f32(o.f, item[i].src, item[i].d->numel) < 0;
  if (bad) {
    int e = errno;
    snprintf(err, ERRLEN, "%s: error: cannot write %s: %s", path, o.tmp, strerror(e ? e : EIO));
    outfile_abort(&o);
    goto out;
  }
  ckpt_test_pause();
  if (outfile_commit(&o, true, err, ERRLEN) < 0)
    goto out;
  rc = 0;
out:
  free(h.s);
  for (int i = 0; i < nitem; i++)
    free(item[i].name);
  free(item);
  return rc;
}

/* ---------------------------------------------------------------- JSON */

typedef struct {
  char *name;
  char *dtype;
  uint64_t *shape;
  int rank;              /* -1: no shape */
  uint64_t off[2];
  int noff;              /* -1: no data_offsets */
} Entry;

typedef struct {
  const char *s, *p, *e; /* header text, cursor, end */
  char msg[256];
  Entry *ent;
  int nent, capent;
  Meta *mk;              /* __metadata__ in file order, repeats kept (refused later) */
  int nmk, capmk;
  int nmetaobj;          /* how many "__metadata__" keys */
} Json;

static int js_fail(Json *j, const char *what)
{
  if (!j->msg[0])
    snprintf(j->msg, sizeof j->msg, "malformed JSON header at byte %zu: %s", (size_t)(j->p - j->s), what);
  return -1;
}

static void js_ws(Json *j)
{
  while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

static int js_peek(Json *j, char c)
{
  js_ws(j);
  return j->p < j->e && *j->p == c;
}

static int js_expect(Json *j, char c)
{
  if (!js_peek(j, c)) {
    char what[32];
    snprintf(what, sizeof what, j->p < j->e ? "expected '%c'" : "expected '%c', found the end", c);
    return js_fail(j, what);
  }
  j->p++;
  return 0;
}

static int hex4(const char *p, unsigned *v)
{
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    *v = *v * 16 + (unsigned)d;
  }
  return 0;
}

static void put_utf8(Buf *b, unsigned cp)
{
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xc0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
  else if (cp < 0x10000) {
    u[0] = (char)(0xe0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
  } else {
    u[0] = (char)(0xf0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
  }
  buf_add(b, u, n);
}

/* A string; *out gets it decoded (malloc'd) unless out is NULL. */
static int js_string(Json *j, char **out)
{
  if (js_expect(j, '"') < 0)
    return -1;
  Buf b = {0};
  buf_add(&b, "", 0);
  for (;;) {
    const char *run = j->p;
    while (j->p < j->e && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20)
      j->p++;
    buf_add(&b, run, (size_t)(j->p - run));
    if (j->p == j->e) { js_fail(j, "unterminated string"); goto fail; }
    char c = *j->p;
    if (c == '"') { j->p++; break; }
    if (c != '\\') { js_fail(j, "control character in string"); goto fail; }
    if (j->e - j->p < 2) { js_fail(j, "unterminated string"); goto fail; }
    c = j->p[1];
    j->p += 2;
    switch (c) {
    case '"': buf_add(&b, "\"", 1); break;
    case '\\': buf_add(&b, "\\", 1); break;
    case '/': buf_add(&b, "/", 1); break;
    case 'b': buf_add(&b, "\b", 1); break;
    case 'f': buf_add(&b, "\f", 1); break;
    case 'n': buf_add(&b, "\n", 1); break;
    case 'r': buf_add(&b, "\r", 1); break;
    case 't': buf_add(&b, "\t", 1); break;
    case 'u': {
      unsigned cp, lo;
      if (j->e - j->p < 4 || hex4(j->p, &cp) < 0) { js_fail(j, "bad \\u escape"); goto fail; }
      j->p += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && j->e - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
          hex4(j->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        j->p += 6;
      } else if (cp >= 0xd800 && cp < 0xe000) {
        js_fail(j, "unpaired surrogate in \\u escape");
        goto fail;
      }
      if (cp == 0) { js_fail(j, "\\u0000 in string"); goto fail; }
      put_utf8(&b, cp);
      break;
    }
    default:
      j->p -= 1;
      js_fail(j, "bad escape in string");
      goto fail;
    }
  }
  if (out) *out = b.s;
  else free(b.s);
  return 0;
fail:
  free(b.s);
  return -1;
}

/* A non-negative integer that fits in 63 bits. */
static int js_uint(Json *j, uint64_t *v)
{
  js_ws(j);
  const char *q = j->p;
  *v = 0;
  while (q < j->e && *q >= '0' && *q <= '9') {
    if (*v > (UINT64_C(1) << 62) / 5)
      return js_fail(j, "integer too large");
    *v = *v * 10 + (uint64_t)(*q++ - '0');
  }
  if (q == j->p || (q < j->e && (*q == '.' || *q == 'e' || *q == 'E')) || (*j->p == '0' && q - j->p > 1))
    return js_fail(j, "expected a non-negative integer");
  j->p = q;
  return 0;
}

/* [n, n, ...] */
static int js_uint_array(Json *j, uint64_t **out, int *n)
{
  free(*out);
  *out = NULL;
  *n = 0;
  if (js_expect(j, '[') < 0)
    return -1;
  if (js_peek(j, ']')) {
    j->p++;
    return 0;
  }
  for (;;) {
    uint64_t v;
    if (*n >= 64)
      return js_fail(j, "array too long");
    if (js_uint(j, &v) < 0)
      return -1;
    *out = xrealloc(*out, (size_t)(*n + 1) * sizeof **out);
    (*out)[(*n)++] = v;
    if (js_peek(j, ',')) { j->p++; continue; }
    return js_expect(j, ']');
  }
}

/* Any value, checked and thrown away. */
static int js_skip(Json *j, int depth)
{
  if (depth > 64)
    return js_fail(j, "nested too deeply");
  js_ws(j);
  if (j->p == j->e)
    return js_fail(j, "expected a value, found the end");
  char c = *j->p;
  if (c == '"')
    return js_string(j, NULL);
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    j->p++;
    if (js_peek(j, close)) { j->p++; return 0; }
    for (;;) {
      if (c == '{' && (js_string(j, NULL) < 0 || js_expect(j, ':') < 0))
        return -1;
      if (js_skip(j, depth + 1) < 0)
        return -1;
      if (js_peek(j, ',')) { j->p++; continue; }
      return js_expect(j, close);
    }
  }
  static const char *const lit[] = { "true", "false", "null" };
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(lit[i]);
    if ((size_t)(j->e - j->p) >= n && memcmp(j->p, lit[i], n) == 0) {
      j->p += n;
      return 0;
    }
  }
  /* number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
  const char *q = j->p;
  if (q < j->e && *q == '-') q++;
  const char *d = q;
  while (q < j->e && *q >= '0' && *q <= '9') q++;
  if (q == d || (*d == '0' && q - d > 1))
    return js_fail(j, "expected a value");
  if (q < j->e && *q == '.') {
    d = ++q;
    while (q < j->e && *q >= '0' && *q <= '9') q++;
    if (q == d) return js_fail(j, "bad number");
  }
  if (q < j->e && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < j->e && (*q == '+' || *q == '-')) q++;
    d = q;
    while (q < j->e && *q >= '0' && *q <= '9') q++;
    if (q == d) return js_fail(j, "bad number");
  }
  j->p = q;
  return 0;
}

/* {"dtype": .., "shape": [..], "data_offsets": [b, e]} */
static int js_tensor(Json *j, Entry *t)
{
  if (js_expect(j, '{') < 0)
    return -1;
  if (js_peek(j, '}')) { j->p++; return 0; }
  for (;;) {
    char *key;
    if (js_string(j, &key) < 0)
      return -1;
    int rc = js_expect(j, ':');
    if (rc == 0) {
      if (strcmp(key, "dtype") == 0) {
        free(t->dtype);
        t->dtype = NULL;
        rc = js_string(j, &t->dtype);
      } else if (strcmp(key, "shape") == 0) {
        rc = js_uint_array(j, &t->shape, &t->rank);
        if (rc < 0) t->rank = -1;
      } else if (strcmp(key, "data_offsets") == 0) {
        uint64_t *o = NULL;
        int n = 0;
        rc = js_uint_array(j, &o, &n);
        if (rc == 0 && n != 2)
          rc = js_fail(j, "data_offsets must hold two integers");
        if (rc == 0) {
          t->off[0] = o[0];
          t->off[1] = o[1];
          t->noff = 2;
        }
        free(o);
      } else
        rc = js_skip(j, 1);
    }
    free(key);
    if (rc < 0)
      return -1;
    if (js_peek(j, ',')) { j->p++; continue; }
    return js_expect(j, '}');
  }
}

/* {"key": "value", ...} */
static int js_metadata(Json *j)
{
  if (js_peek(j, 'n'))
    return js_skip(j, 0);    /* null */
  if (js_expect(j, '{') < 0)
    return -1;
  if (js_peek(j, '}')) { j->p++; return 0; }
  for (;;) {
    char *key, *value;
    if (js_string(j, &key) < 0)
      return -1;
    if (js_expect(j, ':') < 0 || (js_peek(j, '"') ? 0 : js_fail(j, "__metadata__ values must be strings")) < 0 ||
        js_string(j, &value) < 0) {
      free(key);
      return -1;
    }
    if (j->nmk == j->capmk) {
      j->capmk = j->capmk ? 2 * j->capmk : 16;
      j->mk = xrealloc(j->mk, (size_t)j->capmk * sizeof *j->mk);
    }
    j->mk[j->nmk++] = (Meta){ key, value };
    if (js_peek(j, ',')) { j->p++; continue; }
    return js_expect(j, '}');
  }
}

static void entries_free(Json *j)
{
  for (int i = 0; i < j->nent; i++) {
    free(j->ent[i].name);
    free(j->ent[i].dtype);
    free(j->ent[i].shape);
  }
  free(j->ent);
  j->ent = NULL;
  j->nent = j->capent = 0;
  for (int i = 0; i < j->nmk; i++) {
    free(j->mk[i].key);
    free(j->mk[i].value);
  }
  free(j->mk);
  j->mk = NULL;
  j->nmk = j->capmk = 0;
}

static int js_header(Json *j)
{
  if (js_expect(j, '{') < 0)
    return -1;
  if (js_peek(j, '}'))
    j->p++;
  else
    for (;;) {
      char *key;
      if (js_string(j, &key) < 0)
        return -1;
      if (js_expect(j, ':') < 0) {
        free(key);
        return -1;
      }
      if (strcmp(key, "__metadata__") == 0) {
        free(key);
        j->nmetaobj++;
        if (js_metadata(j) < 0)
          return -1;
      } else {
        if (j->nent == j->capent) {
          j->capent = j->capent ? 2 * j->capent : 16;
          j->ent = xrealloc(j->ent, (size_t)j->capent * sizeof *j->ent);
        }
        Entry *t = &j->ent[j->nent++];
        *t = (Entry){ .name = key, .rank = -1, .noff = -1 };
        if (js_tensor(j, t) < 0)
          return -1;
      }
      if (js_peek(j, ',')) { j->p++; continue; }
      if (js_expect(j, '}') < 0)
        return -1;
      break;
    }
  js_ws(j);
  if (j->p != j->e)
    return js_fail(j, "text after the header object");
  return 0;
}

/* ---------------------------------------------------------------- load */

static int itemsize(const char *dtype)
{
  static const struct { const char *name; int size; } t[] = {
    { "F64", 8 }, { "F32", 4 }, { "F16", 2 }, { "BF16", 2 }, { "F8_E4M3", 1 }, { "F8_E5M2", 1 },
    { "I64", 8 }, { "I32", 4 }, { "I16", 2 }, { "I8", 1 },
    { "U64", 8 }, { "U32", 4 }, { "U16", 2 }, { "U8", 1 }, { "BOOL", 1 },
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(dtype, t[i].name) == 0)
      return t[i].size;
  return 0;
}

static const Entry *find_entry(const Json *j, const char *name)
{
  for (int i = 0; i < j->nent; i++)
    if (strcmp(j->ent[i].name, name) == 0)
      return &j->ent[i];
  return NULL;
}

/* "the file has 3 tensors: a, b, c" (shortened to fit) */
static void file_has(const Json *j, char *out, size_t len)
{
  size_t k = (size_t)snprintf(out, len, "the file has %d tensor%s%s", j->nent, j->nent == 1 ? "" : "s",
                              j->nent ? ": " : "");
  for (int i = 0; i < j->nent && k < len; i++) {
    size_t need = strlen(j->ent[i].name) + 2;
    if (k + need + 8 > len) {
      snprintf(out + k, len - k, "...");
      return;
    }
    k += (size_t)snprintf(out + k, len - k, "%s%s", i ? ", " : "", j->ent[i].name);
  }
}

/* Is entry t the tensor d of the model: its dtype and shape. */
static int check_entry(const Entry *t, const LmcTensorDesc *d, char *msg, size_t len)
{
  if (strcmp(t->dtype, "F32") != 0 && strcmp(t->dtype, "F64") != 0) {
    snprintf(msg, len, "%s: dtype %s in file, F32 or F64 expected", t->name, t->dtype);
    return -1;
  }
  int same = t->rank == d->rank;
  for (int i = 0; same && i < d->rank; i++)
    same = t->shape[i] == (uint64_t)d->shape[i];
  if (!same) {
    char a[128], b[128];
    uint64_t s[LMC_MAXRANK];
    desc_shape(d, s);
    fmt_shape(a, sizeof a, t->rank, t->shape);
    fmt_shape(b, sizeof b, d->rank, s);
    snprintf(msg, len, "%s: shape %s in file, %s compiled", t->name, a, b);
    return -1;
  }
  return 0;
}

/* Reads tensor t (F32 or F64) into dst (numel reals). */
static int read_entry(FILE *f, uint64_t base, const Entry *t, real *dst, size_t numel)
{
  int sz = itemsize(t->dtype);
  if (fseeko(f, (off_t)(base + t->off[0]), SEEK_SET) != 0)
    return -1;
  unsigned char buf[8 * 4096];
  while (numel > 0) {
    size_t k = numel < 4096 ? numel : 4096;
    if (fread(buf, (size_t)sz, k, f) != k)
      return -1;
    for (size_t i = 0; i < k; i++)
      dst[i] = sz == 4 ? (real)get_f32(buf + 4 * i) : (real)get_f64(buf + 8 * i);
    dst += k;
    numel -= k;
  }
  return 0;
}

int ckpt_load(const char *path, const LmcModel *m, real *param,
              ExtraBlock *extra, int nextra, MetaList *meta, char *err)
{
  return ckpt_load_via(path, m, param, NULL, extra, nextra, meta, err);
}

/* Length of the longest prefix of s[0, n) that is valid UTF-8 (RFC 3629:
 * no overlong forms, surrogates or code points above U+10FFFF). */
static size_t utf8_prefix(const unsigned char *s, size_t n)
{
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;   /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else return i;
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xc0) != 0x80) return i;
    i += len;
  }
  return n;
}

static int cmp_name(const void *a, const void *b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A name given twice among names[0, n) (sorted in place), or NULL. */
static const char *repeated(const char **names, size_t n)
{
  qsort(names, n, sizeof *names, cmp_name);
  for (size_t i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0)
      return names[i];
  return NULL;
}

/* No tensor name and no metadata key twice: n log n, not n^2. */
static int check_names(const Json *j, char *msg, size_t len)
{
  if (j->nmetaobj > 1) {
    snprintf(msg, len, "__metadata__ appears twice in the header");
    return -1;
  }
  size_t n = (size_t)(j->nent > j->nmk ? j->nent : j->nmk);
  const char **names = xmalloc(n * sizeof *names), *dup;
  for (int i = 0; i < j->nent; i++) names[i] = j->ent[i].name;
  if ((dup = repeated(names, (size_t)j->nent)))
    snprintf(msg, len, "tensor %s appears twice in the header", dup);
  else {
    for (int i = 0; i < j->nmk; i++) names[i] = j->mk[i].key;
    if ((dup = repeated(names, (size_t)j->nmk)))
      snprintf(msg, len, "__metadata__ key %s appears twice in the header", dup);
  }
  free(names);
  return dup ? -1 : 0;
}

/* Entry t complete, of a known dtype, its bytes numel x dtype size, inside
 * the datalen bytes of data. */
static int check_entry_layout(const Entry *t, uint64_t datalen, char *msg, size_t len)
{
  if (!t->dtype || t->rank < 0 || t->noff < 0) {
    snprintf(msg, len, "%s: no %s in the header", t->name, !t->dtype ? "dtype" : t->rank < 0 ? "shape" : "data_offsets");
    return -1;
  }
  if (t->off[0] > t->off[1]) {
    snprintf(msg, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", t->name, t->off[0],
             t->off[1]);
    return -1;
  }
  int sz = itemsize(t->dtype);
  if (!sz) {
    snprintf(msg, len, "%s: unknown dtype %s", t->name, t->dtype);
    return -1;
  }
  char s[128];
  fmt_shape(s, sizeof s, t->rank, t->shape);
  uint64_t bytes = (uint64_t)sz;
  for (int r = 0; r < t->rank; r++) {
    if (t->shape[r] && bytes > UINT64_MAX / t->shape[r]) {
      snprintf(msg, len, "%s: shape %s of %s holds more than 2^64 bytes", t->name, s, t->dtype);
      return -1;
    }
    bytes *= t->shape[r];
  }
  if (bytes != t->off[1] - t->off[0]) {
    snprintf(msg, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes, shape %s of %s needs %" PRIu64,
             t->name, t->off[0], t->off[1], t->off[1] - t->off[0], s, t->dtype, bytes);
    return -1;
  }
  if (t->off[1] > datalen) {
    snprintf(msg, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] beyond the %" PRIu64 " bytes of data: file truncated",
             t->name, t->off[0], t->off[1], datalen);
    return -1;
  }
  return 0;
}

static int cmp_offsets(const void *a, const void *b)
{
  const Entry *x = *(const Entry *const *)a, *y = *(const Entry *const *)b;
  if (x->off[0] != y->off[0]) return x->off[0] < y->off[0] ? -1 : 1;
  if (x->off[1] != y->off[1]) return x->off[1] < y->off[1] ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Sorted by offset, the tensors tile the data: from byte 0, each one
 * beginning where the one before ends, the last one at the end of the file. */
static int check_tiling(const Json *j, uint64_t datalen, char *msg, size_t len)
{
  const Entry **by = xmalloc((size_t)j->nent * sizeof *by), *prev = NULL;
  for (int i = 0; i < j->nent; i++) by[i] = &j->ent[i];
  qsort(by, (size_t)j->nent, sizeof *by, cmp_offsets);
  uint64_t at = 0;
  int rc = 0;
  for (int i = 0; i < j->nent && rc == 0; i++) {
    const Entry *t = by[i];
    if (t->off[0] < at) {
      snprintf(msg, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] overlap %s's [%" PRIu64 ", %" PRIu64 "]",
               t->name, t->off[0], t->off[1], prev->name, prev->off[0], prev->off[1]);
      rc = -1;
    } else if (t->off[0] > at) {
      snprintf(msg, len, "bytes [%" PRIu64 ", %" PRIu64 ") of the data, before %s, belong to no tensor", at,
               t->off[0], t->name);
      rc = -1;
    }
    at = t->off[1];
    prev = t;
  }
  if (rc == 0 && at != datalen) {
    snprintf(msg, len, "bytes [%" PRIu64 ", %" PRIu64 ") of the data, after the last tensor, belong to no tensor",
             at, datalen);
    rc = -1;
  }
  free(by);
  return rc;
}

/* Reads the header of f (size bytes) into j, its text into *head, and
 * checks the whole layout; *base: where the data begins. */
static int read_header(FILE *f, uint64_t size, Json *j, char **head, uint64_t *base, char *msg, size_t len)
{
  unsigned char len8[8];
  if (size < 8 || fread(len8, 1, 8, f) != 8) {
    snprintf(msg, len, "file too short (%" PRIu64 " bytes) for a safetensors header", size);
    return -1;
  }
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++)
    hlen |= (uint64_t)len8[i] << (8 * i);
  if (hlen > MAX_HEADER) {
    snprintf(msg, len, "header length %" PRIu64 " is over the format's limit of %d bytes", hlen, MAX_HEADER);
    return -1;
  }
  if (hlen > size - 8) {
    snprintf(msg, len, "header length %" PRIu64 " beyond the file size (%" PRIu64 " bytes)", hlen, size);
    return -1;
  }
  if (!(*head = malloc((size_t)hlen + 1))) {
    snprintf(msg, len, "out of memory for a header of %" PRIu64 " bytes", hlen);
    return -1;
  }
  if (fread(*head, 1, (size_t)hlen, f) != (size_t)hlen) {
    snprintf(msg, len, "cannot read the header: %s", ferror(f) ? strerror(errno) : "file shrank");
    return -1;
  }
  size_t good = utf8_prefix((const unsigned char *)*head, (size_t)hlen);
  if (good != hlen) {
    snprintf(msg, len, "header is not valid UTF-8 (byte %zu)", good);
    return -1;
  }
  j->s = j->p = *head;
  j->e = *head + hlen;
  if (js_header(j) < 0) {
    snprintf(msg, len, "%s", j->msg);
    return -1;
  }
  if (check_names(j, msg, len) < 0)
    return -1;
  *base = 8 + hlen;
  for (int i = 0; i < j->nent; i++)
    if (check_entry_layout(&j->ent[i], size - *base, msg, len) < 0)
      return -1;
  return check_tiling(j, size - *base, msg, len);
}

/* Opens path for reading: a regular file (a FIFO is refused, not waited
 * on), its size in *size. */
static FILE *open_checkpoint(const char *path, uint64_t *size, char *err)
{
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, ERRLEN, "%s: error: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  const char *why = NULL;
  char buf[128];
  if (fstat(fd, &st) != 0) {
    snprintf(buf, sizeof buf, "cannot stat: %s", strerror(errno));
    why = buf;
  } else if (!S_ISREG(st.st_mode))
    why = "not a regular file";
  FILE *f = NULL;
  if (!why && (fcntl(fd, F_SETFL, 0) != 0 || !(f = fdopen(fd, "rb")))) {
    snprintf(buf, sizeof buf, "cannot open: %s", strerror(errno));
    why = buf;
  }
  if (why) {
    snprintf(err, ERRLEN, "%s: error: %s", path, why);
    close(fd);
    return NULL;
  }
  *size = (uint64_t)st.st_size;
  return f;
}

/* The file's metadata into meta: moved when meta is empty (a header of
 * many keys costs no n^2 meta_set), else merged key by key. */
static void give_meta(Json *j, MetaList *meta)
{
  if (meta->nmeta == 0) {
    free(meta->meta);
    meta->meta = j->mk;
    meta->nmeta = j->nmk;
    j->mk = NULL;
    j->nmk = j->capmk = 0;
    return;
  }
  for (int i = 0; i < j->nmk; i++)
    meta_set(meta, j->mk[i].key, j->mk[i].value);
}

/* A refusal quotes names and values from the file; a control byte among
 * them (a name holding "\n" or an escape sequence) becomes '?', so the
 * message stays one line and cannot drive the terminal. */
static void printable(char *s)
{
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      *s = '?';
}

int ckpt_read_meta(const char *path, MetaList *meta, char *err)
{
  uint64_t size, base;
  FILE *f = open_checkpoint(path, &size, err);
  if (!f)
    return -1;
  char msg[ERRLEN] = "", *head = NULL;
  Json j = {0};
  int rc = read_header(f, size, &j, &head, &base, msg, sizeof msg);
  if (rc < 0) {
    printable(msg);
    snprintf(err, ERRLEN, "%s: error: %s", path, msg);
  }
  else
    give_meta(&j, meta);
  fclose(f);
  free(head);
  entries_free(&j);
  return rc;
}

int ckpt_load_via(const char *path, const LmcModel *m, real *param, real *given,
                  ExtraBlock *extra, int nextra, MetaList *meta, char *err)
{
  char msg[ERRLEN];
  msg[0] = '\0';
  Json j = {0};
  char *head = NULL;
  real *scratch = NULL, *into = NULL, *tmp = NULL;
  real **xs = NULL;              /* scratch of each extra block, NULL: not loaded */
  int rc = -1;
  uint64_t size, base;
  FILE *f = open_checkpoint(path, &size, err);
  if (!f)
    return -1;
  if (read_header(f, size, &j, &head, &base, msg, sizeof msg) < 0)
    goto out;

  /* a model of another kind: said first, not as its tensors' shapes */
  const char *kind = NULL;
  for (int i = 0; i < j.nmk; i++)
    if (strcmp(j.mk[i].key, "kind") == 0) kind = j.mk[i].value;
  if (kind && m->kind && strcmp(kind, m->kind) != 0) {
    snprintf(msg, sizeof msg, "holds a %s model, this program is compiled for %s", kind, m->kind);
    goto out;
  }

  /* the model's tensors, read into `into`: a scratch block (ours or the
   * caller's), or param itself when the caller gives up on failure */
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->offset + d->numel > m->param_numel) {
      snprintf(msg, sizeof msg, "%s: compiled layout out of range (internal error)", d->name);
      goto out;
    }
  }
  into = given;
  if (!into)
    into = scratch = xmalloc(m->param_numel * sizeof *scratch);
  if (into != param)
    memcpy(into, param, m->param_numel * sizeof *into);
  size_t maxn = 0;
  for (int i = 0; i < m->nparam; i++)
    if (m->param[i].numel > maxn) maxn = m->param[i].numel;
  tmp = xmalloc(maxn * sizeof *tmp);
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->alias >= 0)
      continue;
    /* d and the tensors tied to it: one storage, every name in the file must agree */
    const Entry *first = NULL;
    for (int q = -1; q < m->nparam; q++) {
      int k = q < 0 ? i : q;
      const LmcTensorDesc *e = &m->param[k];
      if (q >= 0 && (k == i || e->alias != i))
        continue;
      const Entry *t = find_entry(&j, e->name);
      if (!t)
        continue;
      if (check_entry(t, e, msg, sizeof msg) < 0)
        goto out;
      real *dst = first ? tmp : into + d->offset;
      if (read_entry(f, base, t, dst, d->numel) < 0) {
        snprintf(msg, sizeof msg, "%s: cannot read its data: %s", t->name,
                 ferror(f) ? strerror(errno) : "file truncated");
        goto out;
      }
      if (!first) {
        first = t;
        continue;
      }
      for (size_t n = 0; n < d->numel; n++)
        if (memcmp(&tmp[n], &into[d->offset + n], sizeof(real)) != 0) {
          snprintf(msg, sizeof msg, "%s and %s are tied but differ in the file (element %zu: %.9g vs %.9g)",
                   first->name, t->name, n, (double)into[d->offset + n], (double)tmp[n]);
          goto out;
        }
    }
    if (!first) {
      char has[ERRLEN / 2];
      file_has(&j, has, sizeof has);
      const char *tied = NULL;
      for (int k = 0; k < m->nparam && !tied; k++)
        if (m->param[k].alias == i) tied = m->param[k].name;
      snprintf(msg, sizeof msg, "missing tensor %s%s%s%s; %s", d->name, tied ? " (or its tied " : "",
               tied ? tied : "", tied ? ")" : "", has);
      goto out;
    }
  }

  /* extra blocks: all of a block's tensors, or none (then data = NULL) */
  xs = xmalloc((size_t)(nextra > 0 ? nextra : 1) * sizeof *xs);
  for (int k = 0; k < nextra; k++)
    xs[k] = NULL;
  for (int k = 0; k < nextra; k++) {
    if (!extra[k].data)
      continue;
    size_t plen = strlen(extra[k].prefix);
    int present = 0;
    for (int e = 0; e < j.nent; e++) {
      const char *nm = j.ent[e].name;
      if (strncmp(nm, extra[k].prefix, plen) != 0)
        continue;
      int known = 0;
      for (int i = 0; i < m->nparam && !known; i++)
        known = strcmp(nm + plen, m->param[i].name) == 0;
      if (!known) {
        snprintf(msg, sizeof msg, "%s: not a parameter of the compiled model (under %s)", nm, extra[k].prefix);
        goto out;
      }
      present = 1;
    }
    if (!present)
      continue;
    xs[k] = xmalloc(m->param_numel * sizeof **xs);
    memcpy(xs[k], extra[k].data, m->param_numel * sizeof **xs);
    for (int i = 0; i < m->nparam; i++) {
      const LmcTensorDesc *d = &m->param[i];
      if (d->alias >= 0)
        continue;
      char *name = concat(extra[k].prefix, d->name);
      const Entry *t = find_entry(&j, name);
      if (!t) {
        snprintf(msg, sizeof msg, "missing tensor %s (the file has other tensors under %s)", name,
                 extra[k].prefix);
        free(name);
        goto out;
      }
      free(name);
      if (check_entry(t, d, msg, sizeof msg) < 0)
        goto out;
      if (read_entry(f, base, t, xs[k] + d->offset, d->numel) < 0) {
        snprintf(msg, sizeof msg, "%s: cannot read its data: %s", t->name,
                 ferror(f) ? strerror(errno) : "file truncated");
        goto out;
      }
    }
  }

  /* accepted: copy out */
  if (into != param)
    memcpy(param, into, m->param_numel * sizeof *param);
  for (int k = 0; k < nextra; k++) {
    if (!extra[k].data)
      continue;
    if (xs[k])
      memcpy((real *)extra[k].data, xs[k], m->param_numel * sizeof **xs);
    else
      extra[k].data = NULL;
  }
  if (meta)
    give_meta(&j, meta);
  rc = 0;

out:
  if (rc < 0) {
    printable(msg);
    snprintf(err, ERRLEN, "%s: error: %s", path, msg);
  }
  fclose(f);
  free(head);
  entries_free(&j);
  free(scratch);
  free(tmp);
  if (xs)
    for (int k = 0; k < nextra; k++)
      free(xs[k]);
  free(xs);
  return rc;
}
