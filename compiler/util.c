/*
 * util.c: allocation that cannot fail quietly, the compilation arena, and
 * die() for compiler bugs.
 *
 * Two kinds of memory:
 *   x*()      plain heap memory for a pass's own scratch (a liveness array,
 *             an output buffer): the pass frees it with free() when done.
 *   arena_*() memory that lives as long as the compilation: the graphs,
 *             their nodes, loops and outputs, and every string a node, an
 *             output or a hyper-parameter points to.  Nothing in the arena
 *             is freed alone; arena_free_all() frees all of it at once at
 *             the end of a compilation (QBE's pools, chibicc's "never free"
 *             made leak-free).  Never free() or xrealloc() arena memory.
 * Each arena block is a malloc() of its own with a small header linking it
 * into one list, so the sanitizers still see every block's bounds.
 *
 * A StrMap maps names to node or output numbers in expected constant time
 * (open addressing, FNV-1a), so that looking a parameter or an output up by
 * name does not make building a graph of many parameters quadratic.
 *
 * A compiler bug (an invariant broken inside lmc, never a user's mistake)
 * stops with the C source location, as QBE's die() does.  User mistakes go
 * through ir_error() instead, which ends in user_error_exit().
 */
#include <math.h>
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

jmp_buf *user_error_jmp;

_Noreturn void user_error_exit(void)
{
  if (user_error_jmp)
    longjmp(*user_error_jmp, 1);
  exit(1);
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

/* fmt's text in memory from alloc: xcalloc, or arena_calloc. */
static char *vformat(void *(*alloc)(size_t, size_t), const char *fmt, va_list ap)
{
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    die("vsnprintf failed");
  char *s = alloc((size_t)n + 1, 1);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
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
  char *s = vformat(xcalloc, fmt, ap);
  va_end(ap);
  return s;
}

const char *c_double(double v, char out[C_DOUBLE_LEN])
{
  if (isnan(v))
    return "NAN";
  if (isinf(v))
    return v < 0 ? "-INFINITY" : "INFINITY";
  snprintf(out, C_DOUBLE_LEN, "%.17g", v);
  if (!strpbrk(out, ".e"))
    strcat(out, ".0");
  return out;
}

/* ----------------------------------------------------------------- arena */

typedef union Block Block;
union Block {
  struct {
    Block *prev, *next;
  } link;
  max_align_t align;      /* keeps the memory after the header aligned */
};

static Block arena = {{&arena, &arena}};   /* circular list, arena is its head */

static void *link_block(Block *b)
{
  b->link.prev = arena.link.prev;
  b->link.next = &arena;
  arena.link.prev->link.next = b;
  arena.link.prev = b;
  return b + 1;
}

static void unlink_block(Block *b)
{
  b->link.prev->link.next = b->link.next;
  b->link.next->link.prev = b->link.prev;
}

void *arena_calloc(size_t n, size_t size)
{
  if (size && n > (SIZE_MAX - sizeof(Block)) / size)
    die("out of memory");
  Block *b = calloc(1, sizeof(Block) + n * size);
  if (!b)
    die("out of memory");
  return link_block(b);
}

void *arena_realloc(void *p, size_t size)
{
  if (!p)
    return arena_calloc(1, size);
  if (size > SIZE_MAX - sizeof(Block))
    die("out of memory");
  Block *b = (Block *)p - 1;
  unlink_block(b);
  Block *nb = realloc(b, sizeof(Block) + size);
  if (!nb)
    die("out of memory");
  return link_block(nb);
}

char *arena_strdup(const char *s)
{
  size_t n = strlen(s) + 1;
  return memcpy(arena_calloc(n, 1), s, n);
}

char *arena_printf(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(arena_calloc, fmt, ap);
  va_end(ap);
  return s;
}

void arena_free_all(void)
{
  for (Block *b = arena.link.next, *next; b != &arena; b = next) {
    next = b->link.next;
    free(b);
  }
  arena.link.prev = arena.link.next = &arena;
}

/* ---------------------------------------------------------------- StrMap */

static size_t hash_str(const char *s)
{
  size_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

int strmap_get(const StrMap *m, const char *key)
{
  if (!m->cap)
    return -1;
  for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->key[i])
      return -1;
    if (!strcmp(m->key[i], key))
      return m->val[i];
  }
}

void strmap_put(StrMap *m, const char *key, int val)
{
  if (2 * (m->n + 1) > m->cap) {   /* at most half full */
    StrMap old = *m;
    m->cap = old.cap ? 2 * old.cap : 64;
    m->n = 0;
    m->key = arena_calloc(m->cap, sizeof *m->key);
    m->val = arena_calloc(m->cap, sizeof *m->val);
    for (size_t i = 0; i < old.cap; i++)
      if (old.key[i])
        strmap_put(m, old.key[i], old.val[i]);
  }
  size_t i = hash_str(key) & (m->cap - 1);
  while (m->key[i] && strcmp(m->key[i], key))
    i = (i + 1) & (m->cap - 1);
  if (!m->key[i])
    m->n++;
  m->key[i] = key;
  m->val[i] = val;
}

void strmap_clear(StrMap *m)
{
  if (m->cap) {
    memset(m->key, 0, m->cap * sizeof *m->key);
    m->n = 0;
  }
}
