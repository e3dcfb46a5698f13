/*
 * text.c: the emitter's text: a growable buffer (Buf) that all emitted C
 * is written into, bescape, the one way outside text enters it, doubles
 * as exact literals, and Str, the bounded value type of short expressions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"

static void bvprintf(Buf *b, const char *fmt, va_list ap)
{
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    die("vsnprintf failed");
  if (b->len + (size_t)n + 1 > b->cap) {
    b->cap = (b->len + (size_t)n + 1) * 2;
    b->s = xrealloc(b->s, b->cap);
  }
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void bprintf(Buf *b, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  bvprintf(b, fmt, ap);
  va_end(ap);
}

void indent(Buf *b, int depth)
{
  for (int i = 0; i < depth; i++)
    bprintf(b, "  ");
}

const char *bstr(Buf *b)
{
  return b->s ? b->s : "";
}

void bfree(Buf *b)
{
  free(b->s);
  *b = (Buf){0};
}

/* The one way text that came from outside (names, file names, the command
 * line, string hyper-parameters) enters the emitted C: s written for the
 * inside of a string literal (literal) or of a block comment, so that no
 * input can end the literal or the comment early.  Bytes outside printable
 * ASCII and the backslash become three-digit octal escapes (\015), so no
 * line break or line splice (backslash-newline) is ever written; in a
 * literal '"' becomes \"; the second '?' of "??" becomes \? (no trigraph,
 * for compilers that have them on); in a comment "*" and "/" are never
 * written next to each other, nor as the text's last character (the
 * caller's next character could complete a "*" "/"; every caller writes a
 * space or a letter before the text).  Names the front end
 * accepts ([A-Za-z_][A-Za-z0-9_.]*) come out unchanged. */
static void bescape(Buf *b, const char *s, bool literal)
{
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    unsigned c = *p;
    if (c < 32 || c >= 127 || (c == '\\' && !literal))
      bprintf(b, "\\%03o", c);
    else if (literal && (c == '"' || c == '\\'))
      bprintf(b, "\\%c", c);
    else if (c == '?' && p > (const unsigned char *)s && p[-1] == '?')
      bprintf(b, "\\?");
    else if (!literal && (c == '*' || c == '/') && (!p[1] || p[1] == (c == '*' ? '/' : '*')))
      bprintf(b, "%c ", c);
    else
      bprintf(b, "%c", c);
  }
}

void bquote(Buf *b, const char *s)
{
  bprintf(b, "\"");
  bescape(b, s, true);
  bprintf(b, "\"");
}

void bcomment(Buf *b, const char *s)
{
  bescape(b, s, false);
}

char *emit_c_escape(const char *s, bool literal)
{
  Buf b = {0};
  bprintf(&b, "%s", "");
  bescape(&b, s, literal);
  return b.s;
}

void bdouble(Buf *b, double v)
{
  if (isnan(v)) {
    bprintf(b, "NAN");
    return;
  }
  if (isinf(v)) {
    bprintf(b, v < 0 ? "-INFINITY" : "INFINITY");
    return;
  }
  char s[64];
  snprintf(s, sizeof s, "%.17g", v);
  bprintf(b, "%s%s", s, strpbrk(s, ".e") ? "" : ".0");
}

void sprint(Str *s, const char *fmt, ...)
{
  size_t len = strlen(s->s);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(s->s + len, sizeof s->s - len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof s->s - len)
    die("an expression of more than %d characters", STR_MAX - 1);
}
