/*
 * safetensors.c: the safetensors format (github.com/huggingface/safetensors),
 * written and read; checkpoint.c maps a model's tensors onto it.
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
 * of 8 bytes as the reference writer does.  Writes go through outfile.h:
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
 * tensors costs n log n, not n^2.  st_open checks all of this before
 * checkpoint.c looks at one name; the header's JSON is read with json.c,
 * anything outside the schema skipped after a syntax check.  F32 and F64
 * values are converted to `real` as they are read.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

enum { MAX_HEADER = 100000000 };   /* bytes: the reference's MAX_HEADER_SIZE */

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

static int cmp_item(const void *a, const void *b)
{
  return strcmp(((const StItem *)a)->name, ((const StItem *)b)->name);
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

/* The header: sorted items packed in order, metadata first, padded to 8. */
static void save_header(Buf *h, const StItem *item, int nitem, const MetaList *meta)
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

int st_save(const char *path, StItem *item, int nitem, const MetaList *meta, char *err)
{
  qsort(item, (size_t)nitem, sizeof *item, cmp_item);
  for (int i = 1; i < nitem; i++)
    if (strcmp(item[i - 1].name, item[i].name) == 0) {
      snprintf(err, ERRLEN, "%s: error: two tensors named %s", path, item[i].name);
      return -1;
    }
  Buf h = {0};
  save_header(&h, item, nitem, meta);
  OutFile o;
  if (outfile_open(&o, path, err, ERRLEN) < 0) {
    free(h.s);
    return -1;
  }
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
  }
  free(h.s);
  if (bad)
    return -1;
  ckpt_test_pause();
  return outfile_commit(&o, true, err, ERRLEN);
}

/* -------------------------------------------------------------- header */

/* {"dtype": .., "shape": [..], "data_offsets": [b, e]} */
static int parse_tensor(JsonReader *j, StEntry *t)
{
  if (json_expect(j, '{') < 0)
    return -1;
  if (json_peek(j, '}')) { j->p++; return 0; }
  for (;;) {
    char *key;
    if (json_string(j, &key) < 0)
      return -1;
    int rc = json_expect(j, ':');
    if (rc == 0) {
      if (strcmp(key, "dtype") == 0) {
        free(t->dtype);
        t->dtype = NULL;
        rc = json_string(j, &t->dtype);
      } else if (strcmp(key, "shape") == 0) {
        rc = json_uint_array(j, &t->shape, &t->rank);
        if (rc < 0) t->rank = -1;
      } else if (strcmp(key, "data_offsets") == 0) {
        uint64_t *o = NULL;
        int n = 0;
        rc = json_uint_array(j, &o, &n);
        if (rc == 0 && n != 2)
          rc = json_fail(j, "data_offsets must hold two integers");
        if (rc == 0) {
          t->off[0] = o[0];
          t->off[1] = o[1];
          t->noff = 2;
        }
        free(o);
      } else
        rc = json_skip(j, 1);
    }
    free(key);
    if (rc < 0)
      return -1;
    if (json_peek(j, ',')) { j->p++; continue; }
    return json_expect(j, '}');
  }
}

/* {"key": "value", ...} */
static int parse_metadata(JsonReader *j, StFile *h)
{
  if (json_peek(j, 'n'))
    return json_skip(j, 0);    /* null */
  if (json_expect(j, '{') < 0)
    return -1;
  if (json_peek(j, '}')) { j->p++; return 0; }
  for (;;) {
    char *key, *value;
    if (json_string(j, &key) < 0)
      return -1;
    if (json_expect(j, ':') < 0 || (json_peek(j, '"') ? 0 : json_fail(j, "__metadata__ values must be strings")) < 0 ||
        json_string(j, &value) < 0) {
      free(key);
      return -1;
    }
    if (h->nmk == h->capmk) {
      h->capmk = h->capmk ? 2 * h->capmk : 16;
      h->mk = rt_realloc(h->mk, (size_t)h->capmk * sizeof *h->mk, "a checkpoint's metadata");
    }
    h->mk[h->nmk++] = (Meta){ key, value };
    if (json_peek(j, ',')) { j->p++; continue; }
    return json_expect(j, '}');
  }
}

/* The whole header: tensors into h->ent, __metadata__ into h->mk. */
static int parse_header(JsonReader *j, StFile *h)
{
  if (json_expect(j, '{') < 0)
    return -1;
  if (json_peek(j, '}'))
    j->p++;
  else
    for (;;) {
      char *key;
      if (json_string(j, &key) < 0)
        return -1;
      if (json_expect(j, ':') < 0) {
        free(key);
        return -1;
      }
      if (strcmp(key, "__metadata__") == 0) {
        free(key);
        h->nmetaobj++;
        if (parse_metadata(j, h) < 0)
          return -1;
      } else {
        if (h->nent == h->capent) {
          h->capent = h->capent ? 2 * h->capent : 16;
          h->ent = rt_realloc(h->ent, (size_t)h->capent * sizeof *h->ent, "a checkpoint's tensor list");
        }
        StEntry *t = &h->ent[h->nent++];
        *t = (StEntry){ .name = key, .rank = -1, .noff = -1 };
        if (parse_tensor(j, t) < 0)
          return -1;
      }
      if (json_peek(j, ',')) { j->p++; continue; }
      if (json_expect(j, '}') < 0)
        return -1;
      break;
    }
  if (!json_at_end(j))
    return json_fail(j, "text after the header object");
  return 0;
}

/* ---------------------------------------------------------- validation */

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
static int check_names(const StFile *h, char *msg, size_t len)
{
  if (h->nmetaobj > 1) {
    snprintf(msg, len, "__metadata__ appears twice in the header");
    return -1;
  }
  size_t n = (size_t)(h->nent > h->nmk ? h->nent : h->nmk);
  const char **names = rt_malloc(n * sizeof *names, "a checkpoint's names"), *dup;
  for (int i = 0; i < h->nent; i++) names[i] = h->ent[i].name;
  if ((dup = repeated(names, (size_t)h->nent)))
    snprintf(msg, len, "tensor %s appears twice in the header", dup);
  else {
    for (int i = 0; i < h->nmk; i++) names[i] = h->mk[i].key;
    if ((dup = repeated(names, (size_t)h->nmk)))
      snprintf(msg, len, "__metadata__ key %s appears twice in the header", dup);
  }
  free(names);
  return dup ? -1 : 0;
}

/* Entry t complete, of a known dtype, its bytes numel x dtype size, inside
 * the datalen bytes of data. */
static int check_entry_layout(const StEntry *t, uint64_t datalen, char *msg, size_t len)
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
  const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
  if (x->off[0] != y->off[0]) return x->off[0] < y->off[0] ? -1 : 1;
  if (x->off[1] != y->off[1]) return x->off[1] < y->off[1] ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Sorted by offset, the tensors tile the data: from byte 0, each one
 * beginning where the one before ends, the last one at the end of the file. */
static int check_tiling(const StFile *h, uint64_t datalen, char *msg, size_t len)
{
  const StEntry **by = rt_malloc((size_t)h->nent * sizeof *by, "a checkpoint's offsets"), *prev = NULL;
  for (int i = 0; i < h->nent; i++) by[i] = &h->ent[i];
  qsort(by, (size_t)h->nent, sizeof *by, cmp_offsets);
  uint64_t at = 0;
  int rc = 0;
  for (int i = 0; i < h->nent && rc == 0; i++) {
    const StEntry *t = by[i];
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

/* Reads the header of h->f (h->size bytes): its text into h->head, its
 * tensors and metadata into h, and checks the whole layout; h->base:
 * where the data begins. */
static int read_header(StFile *h, char *msg, size_t len)
{
  FILE *f = h->f;
  uint64_t size = h->size;
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
  /* not rt_malloc: its length is the file's, refused as the file (util.c) */
  if (!(h->head = malloc((size_t)hlen + 1))) {
    snprintf(msg, len, "out of memory for a header of %" PRIu64 " bytes", hlen);
    return -1;
  }
  if (fread(h->head, 1, (size_t)hlen, f) != (size_t)hlen) {
    snprintf(msg, len, "cannot read the header: %s", ferror(f) ? strerror(errno) : "file shrank");
    return -1;
  }
  size_t good = utf8_prefix((const unsigned char *)h->head, (size_t)hlen);
  if (good != hlen) {
    snprintf(msg, len, "header is not valid UTF-8 (byte %zu)", good);
    return -1;
  }
  JsonReader j = { .s = h->head, .p = h->head, .e = h->head + hlen };
  if (parse_header(&j, h) < 0) {
    snprintf(msg, len, "%s", j.msg);
    return -1;
  }
  if (check_names(h, msg, len) < 0)
    return -1;
  h->base = 8 + hlen;
  for (int i = 0; i < h->nent; i++)
    if (check_entry_layout(&h->ent[i], size - h->base, msg, len) < 0)
      return -1;
  return check_tiling(h, size - h->base, msg, len);
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

/* ---------------------------------------------------------------- read */

void st_refuse(char *err, const char *path, char *msg)
{
  rt_printable(msg, false);
  snprintf(err, ERRLEN, "%s: error: %s", path, msg);
}

int st_open(StFile *h, const char *path, char *err)
{
  *h = (StFile){ 0 };
  if (!(h->f = open_checkpoint(path, &h->size, err)))
    return -1;
  char msg[ERRLEN] = "";
  if (read_header(h, msg, sizeof msg) < 0) {
    st_refuse(err, path, msg);
    st_close(h);
    return -1;
  }
  return 0;
}

void st_close(StFile *h)
{
  if (h->f)
    fclose(h->f);
  free(h->head);
  for (int i = 0; i < h->nent; i++) {
    free(h->ent[i].name);
    free(h->ent[i].dtype);
    free(h->ent[i].shape);
  }
  free(h->ent);
  for (int i = 0; i < h->nmk; i++) {
    free(h->mk[i].key);
    free(h->mk[i].value);
  }
  free(h->mk);
  *h = (StFile){ 0 };
}

const char *st_meta_get(const StFile *h, const char *key)
{
  for (int i = 0; i < h->nmk; i++)
    if (strcmp(h->mk[i].key, key) == 0)
      return h->mk[i].value;
  return NULL;
}

void st_take_meta(StFile *h, MetaList *meta)
{
  if (meta->nmeta == 0) {
    free(meta->meta);
    meta->meta = h->mk;
    meta->nmeta = h->nmk;
    h->mk = NULL;
    h->nmk = h->capmk = 0;
    return;
  }
  for (int i = 0; i < h->nmk; i++)
    meta_set(meta, h->mk[i].key, h->mk[i].value);
}

const StEntry *st_find(const StFile *h, const char *name)
{
  for (int i = 0; i < h->nent; i++)
    if (strcmp(h->ent[i].name, name) == 0)
      return &h->ent[i];
  return NULL;
}

int st_check_entry(const StEntry *t, const LmcTensorDesc *d, char *msg, size_t len)
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

/* Tensor t (F32 or F64) into dst (numel reals). */
static int read_values(FILE *f, uint64_t base, const StEntry *t, real *dst, size_t numel)
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

int st_read(const StFile *h, const StEntry *t, real *dst, size_t numel, char *msg, size_t len)
{
  if (read_values(h->f, h->base, t, dst, numel) == 0)
    return 0;
  snprintf(msg, len, "%s: cannot read its data: %s", t->name, ferror(h->f) ? strerror(errno) : "file truncated");
  return -1;
}
