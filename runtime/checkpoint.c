/*
 * checkpoint.c: a model's parameters, and optimizer state beside them, in
 * safetensors files (safetensors.c) under their PyTorch state_dict names,
 * so checkpoints move both ways between lmc trainers and the PyTorch
 * example; and the metadata lists that travel in their headers.
 *
 * A tied tensor is written under each of its names, as state_dict does,
 * and an extra block (AdamW's moments) as one tensor per parameter under
 * its prefix ("optimizer.exp_avg.encoder.weight").
 *
 * A load trusts nothing.  st_open checks the whole format; then the
 * compiled model's names, dtypes and shapes are checked before one value
 * is copied into the caller's parameters, and the values go through a
 * scratch copy, so a refused file leaves param untouched.  A tensor the
 * model lacks is refused inside a requested extra block (whose names must
 * all be parameters); elsewhere it is read past with a warning naming it,
 * as Hugging Face's "weights not used" (PyTorch's strict load_state_dict
 * refuses them, but a PyTorch state_dict holds buffers that lmc computes
 * in the graph, such as the Transformer's pos_encoder.pe).  A missing
 * tensor is refused, with "did you mean" for a near name among the file's
 * tensors the model lacks.  One Load owns what a load holds
 * (the open file, the scratch copies) and its steps, each one job, run in
 * turn until one refuses:
 *
 *   st_open       open the file, read and check its header
 *   check_kind    a model of another kind is said first, not as shapes
 *   load_params   every tensor of the model, in the descriptor's order:
 *                 its entries checked and read, a tied pair compared
 *   load_blocks   each extra block asked for: all of it, or none
 *   commit        the values, the blocks found and the metadata, out;
 *                 the tensors read past, said
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outfile.h"
#include "rt.h"

/* ------------------------------------------------------------ metadata */

void meta_set(MetaList *l, const char *key, const char *value)
{
  for (int i = 0; i < l->nmeta; i++)
    if (strcmp(l->meta[i].key, key) == 0) {
      char *v = rt_strdup(value, "a metadata value");
      free(l->meta[i].value);
      l->meta[i].value = v;
      return;
    }
  l->meta = rt_realloc(l->meta, (size_t)(l->nmeta + 1) * sizeof *l->meta, "metadata");
  l->meta[l->nmeta].key = rt_strdup(key, "a metadata key");
  l->meta[l->nmeta].value = rt_strdup(value, "a metadata value");
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

/* ---------------------------------------------------------------- save */

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

int ckpt_save(const char *path, const LmcModel *m, const real *param,
              const ExtraBlock *extra, int nextra, const MetaList *meta, char *err)
{
  int nitem = 0;
  StItem *item = rt_malloc((size_t)m->nparam * (size_t)(1 + (nextra > 0 ? nextra : 0)) * sizeof *item,
                           "a checkpoint's tensor list");
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    const LmcTensorDesc *store = d->alias >= 0 ? &m->param[d->alias] : d;
    item[nitem++] = (StItem){ rt_strdup(d->name, "a tensor name"), d, param + store->offset };
  }
  for (int k = 0; k < nextra; k++)
    for (int i = 0; i < m->nparam && extra[k].data; i++) {
      const LmcTensorDesc *d = &m->param[i];
      if (d->alias < 0)
        item[nitem++] = (StItem){ rt_concat(extra[k].prefix, d->name, "a tensor name"), d, extra[k].data + d->offset };
    }
  int rc = st_save(path, item, nitem, meta, err);
  for (int i = 0; i < nitem; i++)
    free(item[i].name);
  free(item);
  return rc;
}

/* ---------------------------------------------------------------- load */

int ckpt_read_meta(const char *path, MetaList *meta, char *err)
{
  StFile h;
  if (st_open(&h, path, err) < 0)
    return -1;
  st_take_meta(&h, meta);
  st_close(&h);
  return 0;
}

typedef struct {
  const LmcModel *m;
  StFile st;
  char msg[ERRLEN];      /* the refusal, without "PATH: error: " */
  real *into;            /* (param_numel) the model's tensors as read: the caller's scratch, own, or param */
  real *own;             /* into, when allocated here */
  real *tied;            /* (largest numel) a tied name's values, compared with the first name's */
  real **block;          /* (nblock) each extra block's values as read, NULL: not in the file */
  int nblock;
} Load;

static int check_kind(Load *L)
{
  const char *kind = st_meta_get(&L->st, "kind");
  if (kind && L->m->kind && strcmp(kind, L->m->kind) != 0) {
    snprintf(L->msg, sizeof L->msg, "holds a %s model, this program is compiled for %s", kind, L->m->kind);
    return -1;
  }
  return 0;
}

/* Whether the file's tensor s is one the load reads: a parameter's name,
 * or a name under the prefix of an extra block asked for. */
static bool wanted(const LmcModel *m, const char *s, const ExtraBlock *extra, int nextra)
{
  for (int i = 0; i < m->nparam; i++)
    if (strcmp(s, m->param[i].name) == 0) return true;
  for (int k = 0; k < nextra; k++)
    if (extra[k].data && strncmp(s, extra[k].prefix, strlen(extra[k].prefix)) == 0) return true;
  return false;
}

/* The file's tensors the model lacks: "a, b, c" into out (cut short with
 * "..." to fit len); returns how many. */
static int unwanted(Load *L, const ExtraBlock *extra, int nextra, char *out, size_t len)
{
  int n = 0;
  size_t k = 0;
  out[0] = '\0';
  for (int e = 0; e < L->st.nent; e++) {
    const char *nm = L->st.ent[e].name;
    if (wanted(L->m, nm, extra, nextra)) continue;
    if (k < len && k + strlen(nm) + 8 > len) {
      snprintf(out + k, len - k, "%s...", n ? ", " : "");
      k = len;   /* full */
    } else if (k < len)
      k += (size_t)snprintf(out + k, len - k, "%s%s", n ? ", " : "", nm);
    n++;
  }
  return n;
}

/* "missing tensor NAME (or its tied NAME); did you mean NEAR ...?", NEAR
 * a near name among the file's tensors that the model lacks; else those
 * tensors, or how many tensors the file has. */
static int missing(Load *L, int i)
{
  const LmcModel *m = L->m;
  const char *tied = NULL;
  for (int k = 0; k < m->nparam && !tied; k++)
    if (m->param[k].alias == i) tied = m->param[k].name;
  RtNear near = rt_near_start(m->param[i].name), near_tied = rt_near_start(tied ? tied : "");
  for (int e = 0; e < L->st.nent; e++)
    if (!wanted(m, L->st.ent[e].name, NULL, 0)) {
      rt_near_offer(&near, L->st.ent[e].name);
      if (tied) rt_near_offer(&near_tied, L->st.ent[e].name);
    }
  if (!near.best || (near_tied.best && near_tied.dist < near.dist)) near = near_tied;
  int k = snprintf(L->msg, sizeof L->msg, "missing tensor %s%s%s%s; ", m->param[i].name,
                   tied ? " (or its tied " : "", tied ? tied : "", tied ? ")" : "");
  size_t at = k > 0 && (size_t)k < sizeof L->msg ? (size_t)k : sizeof L->msg - 1;
  char list[ERRLEN / 2];
  int n = unwanted(L, NULL, 0, list, sizeof list);
  if (near.best)
    snprintf(L->msg + at, sizeof L->msg - at, "did you mean %s, which the file has?", near.best);
  else if (n)
    snprintf(L->msg + at, sizeof L->msg - at, "the file's tensor%s that the model lacks: %s", n == 1 ? "" : "s", list);
  else
    snprintf(L->msg + at, sizeof L->msg - at, "the file has %d tensor%s, none of that name", L->st.nent,
             L->st.nent == 1 ? "" : "s");
  return -1;
}

/* Tensor i (not an alias) and the tensors tied to it: one storage, read
 * from the first of their names the file has; every other name it has
 * must hold the same values. */
static int load_tensor(Load *L, int i)
{
  const LmcModel *m = L->m;
  const LmcTensorDesc *d = &m->param[i];
  real *dst = L->into + d->offset;
  const StEntry *first = NULL;
  for (int q = -1; q < m->nparam; q++) {
    int k = q < 0 ? i : q;
    const LmcTensorDesc *e = &m->param[k];
    if (q >= 0 && (k == i || e->alias != i))
      continue;
    const StEntry *t = st_find(&L->st, e->name);
    if (!t)
      continue;
    if (st_check_entry(t, e, L->msg, sizeof L->msg) < 0 ||
        st_read(&L->st, t, first ? L->tied : dst, d->numel, L->msg, sizeof L->msg) < 0)
      return -1;
    if (!first) {
      first = t;
      continue;
    }
    for (size_t n = 0; n < d->numel; n++)
      if (memcmp(&L->tied[n], &dst[n], sizeof(real)) != 0) {
        snprintf(L->msg, sizeof L->msg, "%s and %s are tied but differ in the file (element %zu: %.9g vs %.9g)",
                 first->name, t->name, n, (double)dst[n], (double)L->tied[n]);
        return -1;
      }
  }
  return first ? 0 : missing(L, i);
}

/* The model's tensors, read into `into`: a scratch block (the caller's
 * given, or ours), or param itself when given is param (the caller gives
 * up on failure). */
static int load_params(Load *L, real *param, real *given)
{
  const LmcModel *m = L->m;
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->offset + d->numel > m->param_numel) {
      snprintf(L->msg, sizeof L->msg, "%s: compiled layout out of range (internal error)", d->name);
      return -1;
    }
  }
  L->into = given;
  if (!L->into)
    L->into = L->own = rt_malloc(m->param_numel * sizeof *L->own, "a checkpoint's parameters");
  if (L->into != param)
    memcpy(L->into, param, m->param_numel * sizeof *L->into);
  size_t maxn = 0;
  for (int i = 0; i < m->nparam; i++)
    if (m->param[i].numel > maxn) maxn = m->param[i].numel;
  L->tied = rt_malloc(maxn * sizeof *L->tied, "a tied tensor");
  for (int i = 0; i < m->nparam; i++)
    if (m->param[i].alias < 0 && load_tensor(L, i) < 0)
      return -1;
  return 0;
}

/* 1 when the file has tensors under ex's prefix, 0 when none, -1 when one
 * of them is not a parameter's. */
static int block_present(Load *L, const ExtraBlock *ex)
{
  const LmcModel *m = L->m;
  size_t plen = strlen(ex->prefix);
  int present = 0;
  for (int e = 0; e < L->st.nent; e++) {
    const char *nm = L->st.ent[e].name;
    if (strncmp(nm, ex->prefix, plen) != 0)
      continue;
    int known = 0;
    for (int i = 0; i < m->nparam && !known; i++)
      known = strcmp(nm + plen, m->param[i].name) == 0;
    if (!known) {
      snprintf(L->msg, sizeof L->msg, "%s: not a parameter of the compiled model (under %s)", nm, ex->prefix);
      return -1;
    }
    present = 1;
  }
  return present;
}

/* Extra block ex, when the file has it: every parameter's tensor under
 * its prefix, into *out (param_numel, laid out like param). */
static int load_block(Load *L, const ExtraBlock *ex, real **out)
{
  const LmcModel *m = L->m;
  int present = block_present(L, ex);
  if (present <= 0)
    return present;
  real *x = *out = rt_malloc(m->param_numel * sizeof *x, "optimizer state");
  memcpy(x, ex->data, m->param_numel * sizeof *x);
  for (int i = 0; i < m->nparam; i++) {
    const LmcTensorDesc *d = &m->param[i];
    if (d->alias >= 0)
      continue;
    char *name = rt_concat(ex->prefix, d->name, "a tensor name");
    const StEntry *t = st_find(&L->st, name);
    if (!t)
      snprintf(L->msg, sizeof L->msg, "missing tensor %s (the file has other tensors under %s)", name, ex->prefix);
    free(name);
    if (!t || st_check_entry(t, d, L->msg, sizeof L->msg) < 0 ||
        st_read(&L->st, t, x + d->offset, d->numel, L->msg, sizeof L->msg) < 0)
      return -1;
  }
  return 0;
}

static int load_blocks(Load *L, const ExtraBlock *extra, int nextra)
{
  L->nblock = nextra > 0 ? nextra : 0;
  L->block = rt_calloc((size_t)(nextra > 0 ? nextra : 1), sizeof *L->block, "optimizer state");
  for (int k = 0; k < nextra; k++)
    if (extra[k].data && load_block(L, &extra[k], &L->block[k]) < 0)
      return -1;
  return 0;
}

/* Accepted: the values, the blocks found (a block absent: data = NULL)
 * and the metadata go to the caller. */
static void commit(Load *L, real *param, ExtraBlock *extra, int nextra, MetaList *meta)
{
  const LmcModel *m = L->m;
  if (L->into != param)
    memcpy(param, L->into, m->param_numel * sizeof *param);
  for (int k = 0; k < nextra; k++) {
    if (!extra[k].data)
      continue;
    if (L->block[k])
      memcpy((real *)extra[k].data, L->block[k], m->param_numel * sizeof **L->block);
    else
      extra[k].data = NULL;
  }
  if (meta)
    st_take_meta(&L->st, meta);
}

static void load_free(Load *L)
{
  st_close(&L->st);
  free(L->own);
  free(L->tied);
  for (int k = 0; L->block && k < L->nblock; k++)
    free(L->block[k]);
  free(L->block);
}

int ckpt_load_via(const char *path, const LmcModel *m, real *param, real *given,
                  ExtraBlock *extra, int nextra, MetaList *meta, char *err)
{
  Load L = { .m = m };
  if (st_open(&L.st, path, err) < 0)
    return -1;
  int rc = check_kind(&L) < 0 || load_params(&L, param, given) < 0 || load_blocks(&L, extra, nextra) < 0 ? -1 : 0;
  if (rc == 0) {
    char list[ERRLEN / 2];
    int n = unwanted(&L, extra, nextra, list, sizeof list);
    if (n)
      rt_warning("%s: %d tensor%s that the model does not have, not read: %s", path, n, n == 1 ? "" : "s", list);
    commit(&L, param, extra, nextra, meta);
  } else
    st_refuse(err, path, L.msg);
  load_free(&L);
  return rc;
}

int ckpt_load(const char *path, const LmcModel *m, real *param,
              ExtraBlock *extra, int nextra, MetaList *meta, char *err)
{
  return ckpt_load_via(path, m, param, NULL, extra, nextra, meta, err);
}
