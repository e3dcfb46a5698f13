/*
 * util.c: what every file of the runtime shares: the program's name and
 * its messages, "did you mean" for a misspelled name, how to rebuild a
 * trainer, the clock, paths, and memory.
 *
 * Messages go to stderr as "PROG: error: ..." or "PROG: warning: ...",
 * PROG being rt_progname (main sets it to the trainer's name; "lmc" in the
 * compiler, which links the corpus and outfile code).  A message's control
 * bytes print as '?': messages quote words, names and values read from
 * checkpoints and corpora, which must not reach the terminal as escape
 * sequences.
 *
 * Out of memory has one policy in the whole runtime: rt_malloc, rt_calloc,
 * rt_realloc and rt_strdup never return NULL.  When the system refuses,
 * they print "PROG: error: out of memory (N bytes for WHAT)" and exit 1.
 * What the runtime allocates is bookkeeping it sized itself (names,
 * lists, a corpus, scratch of the model's size), without which a run
 * cannot go on; a kill at any moment leaves the files consistent (outfile.h,
 * train.c's save_checkpoint), and so does this exit.  Two allocations
 * whose size is not the runtime's to choose return NULL instead, their
 * callers reporting the failure in their own words: the model's block
 * (net_alloc: "out of memory (N MiB)", huge-page aligned) and a
 * checkpoint's header (its length read from the file: a refusal of that
 * file, "out of memory for a header of N bytes").
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outfile.h"
#include "rt.h"

const char *rt_progname = "lmc";

void rt_printable(char *s, bool keep_tab)
{
  for (; *s; s++)
    if (((unsigned char)*s < 0x20 && !(keep_tab && *s == '\t')) || *s == 0x7f)
      *s = '?';
}

static void report(const char *level, const char *fmt, va_list ap)
{
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  rt_printable(msg, true);
  fprintf(stderr, "%s: %s: %s\n", rt_progname, level, msg);
}

void rt_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  report("error", fmt, ap);
  va_end(ap);
}

void rt_warning(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  report("warning", fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------- did you mean */

/* The optimal string alignment distance (Levenshtein with adjacent
 * transpositions) of a and b, bytes; -1 when either is longer than
 * NEAR_MAXLEN (no suggestion for names that long). */
enum { NEAR_MAXLEN = 256 };

static int osa_distance(const char *a, const char *b)
{
  int na = (int)strnlen(a, NEAR_MAXLEN + 1), nb = (int)strnlen(b, NEAR_MAXLEN + 1);
  if (na > NEAR_MAXLEN || nb > NEAR_MAXLEN) return -1;
  int row[3][NEAR_MAXLEN + 1];   /* rows i - 2, i - 1, i of the table, cyclically */
  for (int j = 0; j <= nb; j++) row[0][j] = j;
  for (int i = 1; i <= na; i++) {
    int *cur = row[i % 3], *up = row[(i + 2) % 3], *up2 = row[(i + 1) % 3];
    cur[0] = i;
    for (int j = 1; j <= nb; j++) {
      int d = up[j - 1] + (a[i - 1] != b[j - 1]);
      if (up[j] + 1 < d) d = up[j] + 1;
      if (cur[j - 1] + 1 < d) d = cur[j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && up2[j - 2] + 1 < d) d = up2[j - 2] + 1;
      cur[j] = d;
    }
  }
  return row[na % 3][nb];
}

RtNear rt_near_start(const char *want)
{
  return (RtNear){ .want = want, .best = NULL, .dist = -1 };
}

void rt_near_offer(RtNear *n, const char *cand)
{
  int limit = 1 + (int)strlen(n->want) / 3, dlen = (int)strlen(n->want) - (int)strnlen(cand, NEAR_MAXLEN + 1);
  if (dlen > limit || -dlen > limit) return;   /* at least |dlen| edits apart */
  int d = osa_distance(n->want, cand);
  if (d > 0 && d <= limit && (n->dist < 0 || d < n->dist)) {
    n->best = cand;
    n->dist = d;
  }
}

/* ------------------------------------------------------------ rebuild */

/* A path that make takes as GRAPH=PATH and the shell as one word. */
static bool plain_path(const char *s)
{
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("._/+-", *s)) return false;
  return true;
}

bool rt_rebuild_command(const LmcModel *m, char *out, size_t len)
{
  const char *g = m->graph && *m->graph ? m->graph : NULL;
  while (g && strncmp(g, "./", 2) == 0) g += 2;
  size_t n = g ? strlen(g) : 0;
  if (g && plain_path(g)) {
    if (strncmp(g, "graphs/", 7) == 0 && n > 11 && strcmp(g + n - 4, ".lua") == 0 && !memchr(g + 7, '/', n - 11))
      snprintf(out, len, "make trainer MODEL=%.*s", (int)(n - 11), g + 7);
    else
      snprintf(out, len, "make trainer GRAPH=%s", g);
    return true;
  }
  if (g) {   /* single-quoted for the shell, each ' as '\'' */
    size_t k = (size_t)snprintf(out, len, "lmc compile '");
    for (const char *p = g; *p && k + 6 < len; p++) {
      if (*p != '\'') {
        out[k++] = *p;
        continue;
      }
      memcpy(out + k, "'\\''", 4);
      k += 4;
    }
    if (k + 2 <= len) memcpy(out + k, "'", 2);
    return false;
  }
  /* a file emitted before LmcModel.graph: the graph named after the kind */
  size_t k = (size_t)snprintf(out, len, "make trainer MODEL=");
  for (const char *p = m->kind; *p && k + 1 < len; p++)
    out[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
  if (k < len) out[k] = '\0';
  return true;
}

double rt_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool rt_same_path(const char *a, const char *b)
{
  return strcmp(a, b) == 0 || outfile_same_file(a, b);
}

/* ------------------------------------------------------------- memory */

static _Noreturn void out_of_memory(size_t bytes, const char *what)
{
  rt_error("out of memory (%zu bytes for %s)", bytes, what);
  exit(1);
}

void *rt_malloc(size_t bytes, const char *what)
{
  void *p = malloc(bytes ? bytes : 1);
  if (!p) out_of_memory(bytes, what);
  return p;
}

void *rt_calloc(size_t n, size_t size, const char *what)
{
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) out_of_memory(size && n > SIZE_MAX / size ? SIZE_MAX : n * size, what);
  return p;
}

void *rt_realloc(void *p, size_t bytes, const char *what)
{
  p = realloc(p, bytes ? bytes : 1);
  if (!p) out_of_memory(bytes, what);
  return p;
}

char *rt_strdup(const char *s, const char *what)
{
  size_t n = strlen(s) + 1;
  return memcpy(rt_malloc(n, what), s, n);
}

char *rt_concat(const char *a, const char *b, const char *what)
{
  size_t na = strlen(a), nb = strlen(b);
  char *s = rt_malloc(na + nb + 1, what);
  memcpy(s, a, na);
  memcpy(s + na, b, nb + 1);
  return s;
}
