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
 * each of its names, as state_dict does.  Writes go to PATH.tmp, which is
 * flushed, fsync'd and renamed over PATH, so PATH is either the old file or
 * the complete new one.
 *
 * Reading trusts nothing: the header length, the JSON, every tensor's
 * dtype, shape and data_offsets are checked against the file and against
 * the compiled model before one value is copied into the caller's
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
#include <unistd.h>

#include "rt.h"

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
      b->cap = b->cap ? 2 * b->cap : 1024;
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

static void fsync_dir(const char *path)
{
  char *dir = xstrdup(path);
  char *slash = strrchr(dir, '/');
  if (slash)
    slash[slash == dir ? 1 : 0] = '\0';
  int fd = open(slash ? dir : ".", O_RDONLY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

int ckpt_check_path(const char *path, char *err)
{
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(err, ERRLEN, "%s: error: cannot save there: is a directory", path);
    return -1;
  }
  char *tmp = concat(path, ".tmp");
  int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
  if (fd >= 0) {
    close(fd);
    unlink(tmp);
  } else if (errno != EEXIST || access(tmp, W_OK) != 0) {
    snprintf(err, ERRLEN, "%s: error: cannot create %s: %s", path, tmp, strerror(errno));
    rc = -1;
  }
  free(tmp);
  return rc;
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

  char *tmp = concat(path, ".tmp");
  FILE *f = NULL;
  int created = 0, rc = -1;
  Buf h = {0};
  for (int i = 1; i < nitem; i++)
    if (strcmp(item[i - 1].name, item[i].name) == 0) {
      snprintf(err, ERRLEN, "%s: error: two tensors named %s", path, item[i].name);
      goto out;
    }

  buf_puts(&h, "{");
  if (meta && meta->nmeta > 0) {
    buf_puts(&h, "\"__metadata__\":{");
    for (int i = 0; i < meta->nmeta; i++) {
      if (i) buf_puts(&h, ",");
      buf_json_string(&h, meta->meta[i].key);
      buf_puts(&h, ":");
      buf_json_string(&h, meta->meta[i].value);
    }
    buf_puts(&h, "}");
  }
  uint64_t off = 0;
  for (int i = 0; i < nitem; i++) {
    const LmcTensorDesc *d = item[i].d;
    if (i || (meta && meta->nmeta > 0)) buf_puts(&h, ",");
    buf_json_string(&h, item[i].name);
    buf_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int r = 0; r < d->rank; r++)
      buf_printf(&h, "%s%d", r ? "," : "", d->shape[r]);
    uint64_t end = off + 4 * (uint64_t)d->numel;
    buf_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, end);
    off = end;
  }
  buf_puts(&h, "}");
  while (h.n % 8)
    buf_puts(&h, " ");

  f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, ERRLEN, "%s: error: cannot create %s: %s", path, tmp, strerror(errno));
    goto out;
  }
  created = 1;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
  if (fwrite(len8, 1, 8, f) != 8 || fwrite(h.s, 1, h.n, f) != h.n)
    goto write_error;
  for (int i = 0; i < nitem; i++)
    if (write_f32(f, item[i].src, item[i].d->numel) < 0)
      goto write_error;
  if (fflush(f) != 0 || fsync(fileno(f)) != 0)
    goto write_error;
  FILE *g = f;
  f = NULL;
  if (fclose(g) != 0)
    goto write_error;
  if (rename(tmp, path) != 0) {
    snprintf(err, ERRLEN, "%s: error: cannot rename %s to it: %s", path, tmp, strerror(errno));
    goto out;
  }
  created = 0;
  fsync_dir(path);
  rc = 0;
  goto out;

write_error:
  snprintf(err, ERRLEN, "%s: error: cannot write %s: %s", path, tmp, strerror(errno));
out:
  if (f)
    fclose(f);
  if (created)
    unlink(tmp);
  free(tmp);
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
  int nent;
  MetaList meta;
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
    meta_set(&j->meta, key, value);
    free(key);
    free(value);
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
  j->nent = 0;
  meta_free(&j->meta);
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
        if (js_metadata(j) < 0)
          return -1;
      } else {
        j->ent = xrealloc(j->ent, (size_t)(j->nent + 1) * sizeof *j->ent);
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
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, ERRLEN, "%s: error: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    snprintf(msg, sizeof msg, "cannot stat: %s", strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(msg, sizeof msg, "not a regular file");
    goto out;
  }
  uint64_t size = (uint64_t)st.st_size;
  unsigned char len8[8];
  if (size < 8 || fread(len8, 1, 8, f) != 8) {
    snprintf(msg, sizeof msg, "file too short (%" PRIu64 " bytes) for a safetensors header", size);
    goto out;
  }
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++)
    hlen |= (uint64_t)len8[i] << (8 * i);
  if (hlen > size - 8) {
    snprintf(msg, sizeof msg, "header length %" PRIu64 " beyond the file size (%" PRIu64 " bytes)", hlen, size);
    goto out;
  }
  head = xmalloc((size_t)hlen + 1);
  if (fread(head, 1, (size_t)hlen, f) != (size_t)hlen) {
    snprintf(msg, sizeof msg, "cannot read the header: %s", ferror(f) ? strerror(errno) : "file shrank");
    goto out;
  }
  j.s = j.p = head;
  j.e = head + hlen;
  if (js_header(&j) < 0) {
    snprintf(msg, sizeof msg, "%s", j.msg);
    goto out;
  }

  /* every entry: complete, offsets matching its shape, inside the file */
  uint64_t base = 8 + hlen, datalen = size - base;
  for (int i = 0; i < j.nent; i++) {
    const Entry *t = &j.ent[i];
    for (int k = 0; k < i; k++)
      if (strcmp(j.ent[k].name, t->name) == 0) {
        snprintf(msg, sizeof msg, "tensor %s appears twice in the header", t->name);
        goto out;
      }
    if (!t->dtype || t->rank < 0 || t->noff < 0) {
      snprintf(msg, sizeof msg, "%s: no %s in the header", t->name,
               !t->dtype ? "dtype" : t->rank < 0 ? "shape" : "data_offsets");
      goto out;
    }
    if (t->off[0] > t->off[1]) {
      snprintf(msg, sizeof msg, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", t->name,
               t->off[0], t->off[1]);
      goto out;
    }
    int sz = itemsize(t->dtype);
    if (sz) {
      uint64_t bytes = (uint64_t)sz;
      int overflow = 0;
      for (int r = 0; r < t->rank; r++) {
        if (t->shape[r] && bytes > UINT64_MAX / t->shape[r]) overflow = 1;
        bytes *= t->shape[r];
      }
      if (overflow || bytes != t->off[1] - t->off[0]) {
        char s[128];
        fmt_shape(s, sizeof s, t->rank, t->shape);
        snprintf(msg, sizeof msg, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                 " bytes, shape %s of %s needs %s%" PRIu64, t->name, t->off[0], t->off[1],
                 t->off[1] - t->off[0], s, t->dtype, overflow ? "more than " : "", overflow ? UINT64_MAX : bytes);
        goto out;
      }
    }
    if (t->off[1] > datalen) {
      snprintf(msg, sizeof msg, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] beyond the %" PRIu64
               " bytes of data: file truncated", t->name, t->off[0], t->off[1], datalen);
      goto out;
    }
  }

  /* a model of another kind: said first, not as its tensors' shapes */
  const char *kind = meta_get(&j.meta, "kind");
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
    for (int i = 0; i < j.meta.nmeta; i++)
      meta_set(meta, j.meta.meta[i].key, j.meta.meta[i].value);
  rc = 0;

out:
  if (rc < 0)
    snprintf(err, ERRLEN, "%s: error: %s", path, msg);
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
