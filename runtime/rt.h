/*
 * rt.h: internal interfaces between the runtime's files (not for emitted
 * code, which sees only lmc_rt.h).
 *
 *   corpus.c      dictionary, tokenizer and batching with data.py's semantics
 *   checkpoint.c  safetensors files with PyTorch state_dict names
 *   train.c       main.py's training loop, evaluation, generation
 *   main.c        the command line of an emitted trainer
 *
 * Errors are reported as "file: error: ..." or "file:line: error: ..." into
 * a caller's buffer (err, ERRLEN) and a -1 return; callers print them once.
 */
#ifndef RT_H
#define RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lmc_rt.h"

#define ERRLEN 1024

/* ------------------------------------------------------------ corpus.c */

typedef struct {
  char **word;           /* id -> word, first-seen order */
  int nword;
  int *slot;             /* open-addressing hash: word id + 1, 0 empty */
  size_t nslot;
} Dict;

typedef struct {
  int32_t *id;           /* every word of the file, <eos> after each line */
  size_t n;
} Tokens;

typedef struct {
  Dict dict;             /* built over train, valid, test in that order */
  Tokens train, valid, test;
} Corpus;

void dict_init(Dict *d);
int dict_add(Dict *d, const char *w);            /* id, adding when new */
int dict_find(const Dict *d, const char *w);     /* id or -1 */
uint64_t dict_hash(const Dict *d);               /* FNV-1a over the words in id order */
void dict_free(Dict *d);
/* Tokenizes one file as data.py does (str.split() per line, then <eos>),
 * adding new words to d. */
int tokenize_file(Dict *d, const char *path, Tokens *out, char *err);
/* Loads DIR/train.txt, DIR/valid.txt, DIR/test.txt. */
int corpus_load(Corpus *c, const char *dir, char *err);
void corpus_free(Corpus *c);
void tokens_free(Tokens *t);   /* the list's memory; n = 0 */

/* batchify: the first nrows*bsz tokens as a (nrows, bsz) row-major matrix
 * whose column j is tokens [j*nrows, (j+1)*nrows): data.view(bsz, -1).t(). */
typedef struct {
  int32_t *data;         /* (nrows, bsz) */
  size_t nrows;
  int bsz;
} Batches;

void batchify(const Tokens *t, int bsz, Batches *out);
void batches_free(Batches *b);
/* get_batch(source, i): T = min(bptt, nrows - 1 - i); x = rows [i, i+T),
 * y = rows [i+1, i+1+T); returns T. */
int get_batch(const Batches *b, size_t i, int bptt, const int32_t **x, const int32_t **y);

/* -------------------------------------------------------- checkpoint.c */

typedef struct {
  char *key;
  char *value;
} Meta;

typedef struct {
  Meta *meta;
  int nmeta;
} MetaList;

void meta_set(MetaList *l, const char *key, const char *value);
const char *meta_get(const MetaList *l, const char *key);   /* NULL if absent */
void meta_free(MetaList *l);

/* Writes the parameters of m (from param, as float32) and metadata to
 * path atomically through outfile.h: path.tmp, fsync, rename.  A tied tensor is written
 * under both names.  Extra tensors (optimizer state) may be given as
 * (name, data, numel) triples with data laid out like param. */
typedef struct {
  const char *prefix;    /* e.g. "optimizer.exp_avg." + the parameter name */
  const real *data;      /* (param_numel) */
} ExtraBlock;

int ckpt_save(const char *path, const LmcModel *m, const real *param,
              const ExtraBlock *extra, int nextra, const MetaList *meta, char *err);
/* Whether ckpt_save could write path (outfile_check): path and path.tmp
 * are absent or regular files, and path.tmp can be created in the folder.
 * Checked before training, so that a bad --save fails at once. */
int ckpt_check_path(const char *path, char *err);
/* Reads and checks the header of path (the whole format, as ckpt_load
 * does, but no model) and adds its metadata to meta. */
int ckpt_read_meta(const char *path, MetaList *meta, char *err);
/* Test hook: sleeps LMC_TEST_SAVE_PAUSE_MS ms (when set) between the
 * stages of a save, so that a kill can land in any of them. */
void ckpt_test_pause(void);
/* Reads path into param (and extra blocks when present and data != NULL),
 * checking every tensor of m is there with its shape and dtype F32 (F64
 * accepted and converted); a tied pair must agree.  Refuses truncated or
 * malformed files naming the tensor and shapes.  An extra block is all or
 * nothing: when the file has none of its tensors, extra[k].data is set to
 * NULL (its buffer untouched); load writes through the (const) data
 * pointer, which must point at writable memory.  The file's metadata is
 * added to meta (when not NULL) with meta_set.  On failure neither param,
 * the extra buffers nor meta are changed. */
int ckpt_load(const char *path, const LmcModel *m, real *param,
              ExtraBlock *extra, int nextra, MetaList *meta, char *err);
/* ckpt_load with the parameters read first into scratch (param_numel
 * reals) instead of a block of its own, so that peak memory does not grow
 * by a second copy of the model: a buffer the caller no longer needs (the
 * gradients, at the end of training).  scratch == param reads straight
 * into param, for a caller that gives up on failure (param is then
 * undefined); NULL allocates, as ckpt_load does. */
int ckpt_load_via(const char *path, const LmcModel *m, real *param, real *scratch,
                  ExtraBlock *extra, int nextra, MetaList *meta, char *err);

/* ------------------------------------------------------------- train.c */

/* Name of the running program ("lstm"), prefixed to messages; main sets it. */
extern const char *rt_progname;

typedef struct {
  const char *data;      /* corpus folder */
  double lr;             /* 0: the default (20 sgd, 0.001 adamw; with resume, the saved lr) */
  double clip;           /* 0: no clipping */
  int epochs;
  uint64_t seed;
  double dropout;        /* < 0: the compiled defaults */
  int log_interval;
  const char *save;      /* NULL: model.safetensors (a dry run then uses a temp file) */
  bool dry_run;
  bool adamw;
  long max_batches;      /* per epoch, 0: all */
  int threads;
  const char *resume;
  const char *log_csv;
} TrainOptions;

int run_train(const LmcModel *m, const TrainOptions *o);
/* threads: BLAS and kernel threads (positive) */
int run_eval(const LmcModel *m, const char *checkpoint, const char *data, const char *split, bool json,
             int threads);
int run_generate(const LmcModel *m, const char *checkpoint, int words, double temperature,
                 uint64_t seed, const char *prompt, const char *outf, int threads);
void run_info(const LmcModel *m);
/* one word drawn from exp(logp / temperature); u in [0, 1); w: n scratch */
int sample_word(const real *logp, int n, double temperature, double u, real *w);

#endif
