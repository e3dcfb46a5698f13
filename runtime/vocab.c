/*
 * vocab.c: a corpus and a checkpoint against the compiled model, word for
 * word.  A trainer is compiled for one vocabulary size (ntoken); the
 * corpus it reads must have that many words, and a checkpoint's stored
 * vocabulary (metadata "vocab", the words joined by '\n' in id order, and
 * "vocab_hash", FNV-1a over them) must be the corpus's.  Generation reads
 * the checkpoint's own vocabulary, or data/wikitext-2's for a state_dict
 * saved without one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

int vocab_load_corpus(const LmcModel *m, Corpus *c, const char *dir)
{
  char err[ERRLEN];
  memset(c, 0, sizeof *c);
  if (corpus_load(c, dir, err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  if (c->dict.nword != m->ntoken) {
    char cmd[512];
    if (rt_rebuild_command(m, cmd, sizeof cmd))
      rt_error("%s has a vocabulary of %d words, but this trainer was compiled for %d; recompile for it: %s DATA=%s "
               "(or: lmc compile %s -D ntoken=%d ...)", dir, c->dict.nword, m->ntoken, cmd, dir,
               m->graph && *m->graph ? m->graph : "GRAPH.lua", c->dict.nword);
    else
      rt_error("%s has a vocabulary of %d words, but this trainer was compiled for %d; recompile for it: "
               "%s -D ntoken=%d ...", dir, c->dict.nword, m->ntoken, cmd, c->dict.nword);
    corpus_free(c);
    return -1;
  }
  return 0;
}

char *vocab_join(const Dict *d)
{
  size_t n = 1;
  for (int i = 0; i < d->nword; i++) n += strlen(d->word[i]) + 1;
  char *s = rt_malloc(n, "the vocabulary"), *p = s;
  for (int i = 0; i < d->nword; i++) {
    size_t k = strlen(d->word[i]);
    memcpy(p, d->word[i], k);
    p += k;
    if (i + 1 < d->nword) *p++ = '\n';
  }
  *p = '\0';
  return s;
}

/* The dictionary stored in a checkpoint's metadata; 0 when there is none. */
static int vocab_from_meta(const MetaList *meta, Dict *d)
{
  const char *v = meta_get(meta, "vocab");
  dict_init(d);
  if (!v) return 0;
  const char *p = v;
  char *w = rt_malloc(strlen(v) + 1, "a word");
  for (;;) {
    const char *e = strchr(p, '\n');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    memcpy(w, p, k);
    w[k] = '\0';
    if (dict_add(d, w) != d->nword - 1) {
      free(w);
      return -1;   /* a word twice */
    }
    if (!e) break;
    p = e + 1;
  }
  free(w);
  return 1;
}

void vocab_hash_hex(const Dict *d, char hex[17])
{
  snprintf(hex, 17, "%016llx", (unsigned long long)dict_hash(d));
}

/* A checkpoint's vocabulary must be the corpus's, word for word. */
int vocab_check(const MetaList *meta, const Dict *corpus, const char *ckpt, const char *dir)
{
  Dict d;
  int have = vocab_from_meta(meta, &d);
  if (have < 0) {
    rt_error("%s: the vocabulary in the metadata repeats a word", ckpt);
    dict_free(&d);
    return -1;
  }
  if (!have) {
    const char *h = meta_get(meta, "vocab_hash");
    char mine[17];
    vocab_hash_hex(corpus, mine);
    if (h && strcmp(h, mine) != 0) {
      rt_error("%s was trained on another vocabulary than %s's (hash %s, %s's is %s)", ckpt, dir, h, dir, mine);
      return -1;
    }
    if (!h) rt_warning("%s holds no vocabulary; assuming %s's", ckpt, dir);
    return 0;
  }
  int rc = 0;
  if (d.nword != corpus->nword) {
    rt_error("%s was trained on a vocabulary of %d words, %s has %d", ckpt, d.nword, dir, corpus->nword);
    rc = -1;
  } else
    for (int i = 0; i < d.nword; i++)
      if (strcmp(d.word[i], corpus->word[i]) != 0) {
        rt_error("%s was trained on another vocabulary than %s's: word %d is '%s' there, '%s' here", ckpt, dir,
                 i, d.word[i], corpus->word[i]);
        rc = -1;
        break;
      }
  dict_free(&d);
  return rc;
}

/* The vocabulary for generate: the checkpoint's, or data/wikitext-2's for a
 * state_dict saved without one. */
int vocab_for_generate(const LmcModel *m, const MetaList *meta, const char *ckpt, Dict *d)
{
  int have = vocab_from_meta(meta, d);
  if (have < 0) {
    rt_error("%s: the vocabulary in the metadata repeats a word", ckpt);
    dict_free(d);
    return -1;
  }
  if (!have) {
    const char *dir = "data/wikitext-2";
    Corpus c;
    rt_warning("%s holds no vocabulary; using %s's", ckpt, dir);
    if (vocab_load_corpus(m, &c, dir) < 0) return -1;
    *d = c.dict;
    dict_init(&c.dict);
    corpus_free(&c);
  }
  if (d->nword != m->ntoken) {
    rt_error("%s has a vocabulary of %d words, this trainer was compiled for %d", ckpt, d->nword, m->ntoken);
    dict_free(d);
    return -1;
  }
  const char *h = meta_get(meta, "vocab_hash");
  char mine[17];
  vocab_hash_hex(d, mine);
  if (have && h && strcmp(h, mine) != 0) {
    rt_error("%s: the vocabulary does not match its hash (%s, computed %s)", ckpt, h, mine);
    dict_free(d);
    return -1;
  }
  return 0;
}
