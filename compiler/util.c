/*
 * util.c: allocation that cannot fail quietly, and die() for compiler bugs.
 *
 * A compiler bug (an invariant broken inside lmc, never a user's mistake)
 * stops with the C source location, as QBE's die() does.  User mistakes go
 * through ir_error() instead.
 */
#include <stdlib.h>
#include <string.h>
#include "lmc.h"

_Noreturn void die_at(const char *file, int line, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "lmc: internal error at %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

void *xcalloc(size_t n, size_t size)
{
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    die("out of memory");
  return p;
}

void *xrealloc(void *p, size_t size)
{
  p = realloc(p, size ? size : 1);
  if (!p)
    die("out of memory");
  return p;
}

char *xstrdup(const char *s)
{
  size_t n = strlen(s) + 1;
  return memcpy(xcalloc(n, 1), s, n);
}

char *xasprintf(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = xcalloc((size_t)n + 1, 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}
