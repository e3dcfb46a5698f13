/*
 * json.c: the JSON of safetensors headers, both ways.
 *
 * Writing: Buf, a growing string, with s as a JSON string (quotes,
 * backslashes and control bytes escaped, other bytes, UTF-8, as they are).
 *
 * Reading: a small recursive-descent reader over a header's text (RFC
 * 8259 syntax; safetensors.c walks the schema with it): strings decoded
 * to UTF-8 (surrogate pairs joined, \u0000 and unpaired surrogates
 * refused), arrays of non-negative integers of at most 63 bits, and any
 * other value checked and skipped.  The first failure is kept in
 * JsonReader.msg with its byte offset; every call then returns -1.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

/* ------------------------------------------------------ growing string */

void buf_add(Buf *b, const char *s, size_t n)
{
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap)
      b->cap = b->cap ? 2 * b->cap : 64;
    b->s = rt_realloc(b->s, b->cap, "JSON text");
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

void buf_puts(Buf *b, const char *s)
{
  buf_add(b, s, strlen(s));
}

void buf_printf(Buf *b, const char *fmt, ...)
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
void buf_json_string(Buf *b, const char *s)
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

/* ------------------------------------------------------------ reading */

int json_fail(JsonReader *j, const char *what)
{
  if (!j->msg[0])
    snprintf(j->msg, sizeof j->msg, "malformed JSON header at byte %zu: %s", (size_t)(j->p - j->s), what);
  return -1;
}

static void json_ws(JsonReader *j)
{
  while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

int json_peek(JsonReader *j, char c)
{
  json_ws(j);
  return j->p < j->e && *j->p == c;
}

int json_expect(JsonReader *j, char c)
{
  if (!json_peek(j, c)) {
    char what[32];
    snprintf(what, sizeof what, j->p < j->e ? "expected '%c'" : "expected '%c', found the end", c);
    return json_fail(j, what);
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
int json_string(JsonReader *j, char **out)
{
  if (json_expect(j, '"') < 0)
    return -1;
  Buf b = {0};
  buf_add(&b, "", 0);
  for (;;) {
    const char *run = j->p;
    while (j->p < j->e && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20)
      j->p++;
    buf_add(&b, run, (size_t)(j->p - run));
    if (j->p == j->e) { json_fail(j, "unterminated string"); goto fail; }
    char c = *j->p;
    if (c == '"') { j->p++; break; }
    if (c != '\\') { json_fail(j, "control character in string"); goto fail; }
    if (j->e - j->p < 2) { json_fail(j, "unterminated string"); goto fail; }
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
      if (j->e - j->p < 4 || hex4(j->p, &cp) < 0) { json_fail(j, "bad \\u escape"); goto fail; }
      j->p += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && j->e - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
          hex4(j->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        j->p += 6;
      } else if (cp >= 0xd800 && cp < 0xe000) {
        json_fail(j, "unpaired surrogate in \\u escape");
        goto fail;
      }
      if (cp == 0) { json_fail(j, "\\u0000 in string"); goto fail; }
      put_utf8(&b, cp);
      break;
    }
    default:
      j->p -= 1;
      json_fail(j, "bad escape in string");
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
static int json_uint(JsonReader *j, uint64_t *v)
{
  json_ws(j);
  const char *q = j->p;
  *v = 0;
  while (q < j->e && *q >= '0' && *q <= '9') {
    if (*v > (UINT64_C(1) << 62) / 5)
      return json_fail(j, "integer too large");
    *v = *v * 10 + (uint64_t)(*q++ - '0');
  }
  if (q == j->p || (q < j->e && (*q == '.' || *q == 'e' || *q == 'E')) || (*j->p == '0' && q - j->p > 1))
    return json_fail(j, "expected a non-negative integer");
  j->p = q;
  return 0;
}

/* [n, n, ...] */
int json_uint_array(JsonReader *j, uint64_t **out, int *n)
{
  free(*out);
  *out = NULL;
  *n = 0;
  if (json_expect(j, '[') < 0)
    return -1;
  if (json_peek(j, ']')) {
    j->p++;
    return 0;
  }
  for (;;) {
    uint64_t v;
    if (*n >= 64)
      return json_fail(j, "array too long");
    if (json_uint(j, &v) < 0)
      return -1;
    *out = rt_realloc(*out, (size_t)(*n + 1) * sizeof **out, "a JSON array");
    (*out)[(*n)++] = v;
    if (json_peek(j, ',')) { j->p++; continue; }
    return json_expect(j, ']');
  }
}

/* Any value, checked and thrown away. */
int json_skip(JsonReader *j, int depth)
{
  if (depth > 64)
    return json_fail(j, "nested too deeply");
  json_ws(j);
  if (j->p == j->e)
    return json_fail(j, "expected a value, found the end");
  char c = *j->p;
  if (c == '"')
    return json_string(j, NULL);
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    j->p++;
    if (json_peek(j, close)) { j->p++; return 0; }
    for (;;) {
      if (c == '{' && (json_string(j, NULL) < 0 || json_expect(j, ':') < 0))
        return -1;
      if (json_skip(j, depth + 1) < 0)
        return -1;
      if (json_peek(j, ',')) { j->p++; continue; }
      return json_expect(j, close);
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
    return json_fail(j, "expected a value");
  if (q < j->e && *q == '.') {
    d = ++q;
    while (q < j->e && *q >= '0' && *q <= '9') q++;
    if (q == d) return json_fail(j, "bad number");
  }
  if (q < j->e && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < j->e && (*q == '+' || *q == '-')) q++;
    d = q;
    while (q < j->e && *q >= '0' && *q <= '9') q++;
    if (q == d) return json_fail(j, "bad number");
  }
  j->p = q;
  return 0;
}

/* {"dtype": .., "shape": [..], "data_offsets": [b, e]} */

/* Nothing but whitespace left. */
bool json_at_end(JsonReader *j)
{
  json_ws(j);
  return j->p == j->e;
}
