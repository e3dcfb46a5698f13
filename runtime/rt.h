/*
 * rt.h: internal interfaces between the runtime's files (not for emitted
 * code, which sees only lmc_rt.h).
 *
 *   util.c         the program's name, messages, "did you mean", clock,
 *                  paths, memory
 *   corpus.c       dictionary, tokenizer and batching with data.py's semantics
 *   corpus_cache.c the binary token cache DIR/.lmc-tokens, and corpus_load
 *   json.c         the JSON of safetensors headers: a growing string, a reader
 *   safetensors.c  the safetensors format: writing, validating, reading tensors
 *   checkpoint.c   a model's parameters and optimizer state in safetensors
 *                  files, under PyTorch state_dict names
 *   model.c        the network in memory (Net), its initialisation, `info`
 *   vocab.c        a corpus against the compiled model and a checkpoint
 *   train.c        main.py's training loop, checkpoints saved and resumed
 *   eval.c         main.py's evaluate() and the `eval` command
 *   generate.c     generate.py's sampling
 *   dist.c         data-parallel training: ranks, reductions, broadcasts
 *   main.c         the command line of an emitted trainer
 *
 * Errors are reported as "file: error: ..." or "file:line: error: ..." into
 * a caller's buffer (err, ERRLEN) and a -1 return; callers print them once.
 * The commands (run_*) print theirs with rt_error.  Memory: util.c.
 */
#ifndef RT_H
#define RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "lmc_rt.h"

#define ERRLEN 1024

/* OpenBLAS's thread count (its header is not needed for one call). */
extern void openblas_set_num_threads(int);

/* -------------------------------------------------------------- util.c */

/* Name of the running program ("lstm"), prefixed to messages; main sets it. */
extern const char *rt_progname;

/* "PROG: error: ..." and "PROG: warning: ..." on stderr, control bytes as '?'. */
void rt_error(const char *fmt, ...);
void rt_warning(const char *fmt, ...);
/* Control bytes of s (tab too, unless keep_tab) and DEL to '?'. */
void rt_printable(char *s, bool keep_tab);
/* "did you mean": offer a misspelled name's candidates in turn; best is
 * the closest (edit distance, adjacent swaps counting one) within
 * 1 + strlen(want) / 3 edits and not want itself, the first offered of
 * equals; NULL when none is that near. */
typedef struct {
  const char *want, *best;
  int dist;
} RtNear;
RtNear rt_near_start(const char *want);
void rt_near_offer(RtNear *n, const char *cand);
/* The start of the command that rebuilds this trainer with other compiled
 * values, for the caller to finish: "make trainer MODEL=NAME" for a graph
 * graphs/NAME.lua, "make trainer GRAPH=PATH" for one elsewhere (returns
 * true; make's DATA= or LMCFLAGS= follow), "lmc compile 'PATH'" for a
 * path make cannot take, one with a space or a shell character (false;
 * lmc's -D follow). */
bool rt_rebuild_command(const LmcModel *m, char *out, size_t len);
double rt_now(void);                               /* seconds, monotonic */
bool rt_same_path(const char *a, const char *b);   /* one file, existing or not yet */
/* Never NULL: out of memory prints "PROG: error: out of memory (N bytes
 * for WHAT)" and exits 1 (the policy, and its two exceptions: util.c). */
void *rt_malloc(size_t bytes, const char *what);
void *rt_calloc(size_t n, size_t size, const char *what);
void *rt_realloc(void *p, size_t bytes, const char *what);
char *rt_strdup(const char *s, const char *what);
char *rt_concat(const char *a, const char *b, const char *what);   /* a then b */

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
  size_t mapped;         /* bytes mapped from the token cache; 0: malloc'd */
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
/* Loads DIR/train.txt, DIR/valid.txt, DIR/test.txt: from the token cache
 * DIR/.lmc-tokens when it is that text's (corpus_cache.c), else by
 * tokenizing them, then writing the cache. */
int corpus_load(Corpus *c, const char *dir, char *err);

/* What the token cache knows of a text file (corpus_cache.c). */
typedef struct {
  uint64_t size;
  int64_t mtime_sec, mtime_nsec;
  uint64_t hash;         /* text_hash of its bytes */
} TextStamp;

/* A fast 64-bit hash of a byte stream fed in pieces of any size. */
typedef struct {
  uint64_t h, tail, len;
  unsigned ntail;
} TextHash;

void text_hash_init(TextHash *h);
void text_hash_update(TextHash *h, const void *p, size_t n);
uint64_t text_hash_final(const TextHash *h);

#define CORPUS_PATHLEN 4096
extern const char *const corpus_file[3];   /* "train.txt", "valid.txt", "test.txt" */
void corpus_join(const char *dir, const char *name, char path[CORPUS_PATHLEN]);
size_t corpus_max_bytes(void);   /* LMC_CORPUS_MAX_BYTES, default 8 GiB */
/* The regular file at path opened for reading (an fd), its size and mtime
 * in *st; else -1 and "PATH: error: ..." */
int corpus_open_text(const char *path, TextStamp *st, char *err);
/* corpus_load without the cache, each file's stamp in stamp[]. */
int corpus_tokenize(Corpus *c, const char *dir, TextStamp stamp[3], char *err);
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
/* Columns [slice * bsz, (slice + 1) * bsz) of batchify(t, nslice * bsz):
 * rank slice's share of a batch of nslice ranks (nslice 1: batchify). */
void batchify_slice(const Tokens *t, int bsz, int slice, int nslice, Batches *out);
void batches_free(Batches *b);
/* get_batch(source, i): T = min(bptt, nrows - 1 - i); x = rows [i, i+T),
 * y = rows [i+1, i+1+T); returns T. */
int get_batch(const Batches *b, size_t i, int bptt, const int32_t **x, const int32_t **y);

/* ---------------------------------------------- checkpoint.c: metadata */

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

/* -------------------------------------------------------------- json.c */

/* A growing string, NUL-terminated: s (n bytes), cap allocated. */
typedef struct {
  char *s;
  size_t n, cap;
} Buf;

void buf_add(Buf *b, const char *s, size_t n);
void buf_puts(Buf *b, const char *s);
void buf_printf(Buf *b, const char *fmt, ...);   /* at most 255 bytes */
void buf_json_string(Buf *b, const char *s);     /* s quoted and escaped */

/* A reader over the text [s, e), at p.  Each call skips whitespace first
 * and returns 0, or -1 with the first failure in msg. */
typedef struct {
  const char *s, *p, *e;
  char msg[256];
} JsonReader;

int json_fail(JsonReader *j, const char *what);  /* "malformed JSON header at byte N: what" */
int json_peek(JsonReader *j, char c);            /* 1 when c is next (not taken) */
int json_expect(JsonReader *j, char c);
/* A string; *out gets it decoded (malloc'd) unless out is NULL. */
int json_string(JsonReader *j, char **out);
/* [n, ...] of at most 64 non-negative integers of 63 bits, into *out (malloc'd) and *n. */
int json_uint_array(JsonReader *j, uint64_t **out, int *n);
int json_skip(JsonReader *j, int depth);         /* any value, checked */
bool json_at_end(JsonReader *j);

/* ------------------------------------------------------- safetensors.c */

/* One tensor of a header, as the file has it. */
typedef struct {
  char *name;
  char *dtype;
  uint64_t *shape;
  int rank;              /* -1: no shape */
  uint64_t off[2];
  int noff;              /* -1: no data_offsets */
} StEntry;

/* An open safetensors file whose header has passed every check of the format. */
typedef struct {
  FILE *f;
  uint64_t size;         /* of the file, bytes */
  uint64_t base;         /* where the data begins */
  char *head;            /* the header's text */
  StEntry *ent;          /* in file order */
  int nent, capent;
  Meta *mk;              /* __metadata__ in file order */
  int nmk, capmk;
  int nmetaobj;          /* how many "__metadata__" keys */
} StFile;

/* A tensor to write: d's shape, numel values from src, as F32. */
typedef struct {
  char *name;
  const LmcTensorDesc *d;
  const real *src;       /* (d->numel) */
} StItem;

/* Writes the items, sorted here by name (a name twice is refused), and
 * meta to path through outfile.h, durably. */
int st_save(const char *path, StItem *item, int nitem, const MetaList *meta, char *err);
/* Opens path (a regular file) and reads and checks its header; on failure
 * nothing is left open.  st_close afterwards (also on a zeroed h). */
int st_open(StFile *h, const char *path, char *err);
void st_close(StFile *h);
/* err = "PATH: error: msg", msg's control bytes as '?'. */
void st_refuse(char *err, const char *path, char *msg);
const char *st_meta_get(const StFile *h, const char *key);   /* NULL if absent */
/* The file's metadata into meta: moved when meta is empty (a header of
 * many keys costs no n^2 meta_set), else merged key by key. */
void st_take_meta(StFile *h, MetaList *meta);
const StEntry *st_find(const StFile *h, const char *name);   /* NULL if absent */
/* Whether t can be the model's tensor d: dtype F32 or F64, d's shape. */
int st_check_entry(const StEntry *t, const LmcTensorDesc *d, char *msg, size_t len);
/* t's values into dst (numel reals), converted from F32 or F64. */
int st_read(const StFile *h, const StEntry *t, real *dst, size_t numel, char *msg, size_t len);

/* -------------------------------------------------------- checkpoint.c */

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

/* ------------------------------------------------------------- model.c */

/* splitmix64: parameter init and sampling (dropout has its own, in lmc_rt.h). */
typedef struct {
  uint64_t s;
} Rng;

Rng rng_new(uint64_t seed, uint64_t stream);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);   /* [0, 1) */

/* Checks what the runtime relies on, so a broken descriptor fails here
 * (said, -1). */
int model_check(const LmcModel *m);

/* The network's memory: one block, and an LmcCtx per program in use. */
typedef struct {
  real *block;
  real *param;                  /* (param_numel) */
  real *exp_avg, *exp_avg_sq;   /* (param_numel) each, AdamW only */
  real *spare;                  /* param_numel reals free once training ends, or NULL */
  double *dropout;              /* (ndropout) */
  /* USE_BF16 (--precision bf16): one more block, the parameters in bf16
   * (param_numel) and the programs' bf16 arena; NULL otherwise */
  lmc_bf16 *block16, *param16;
  LmcCtx train, eval, gen, sample, step, steps;
} Net;

enum { USE_TRAIN = 1, USE_EVAL = 2, USE_GEN = 4, USE_ADAMW = 8, USE_SAMPLE = 16, USE_STEP = 32, USE_BF16 = 64,
       USE_STEPS = 128 };

/* --dropout: slot (an index into LmcModel.dropout) gets probability p. */
typedef struct {
  int slot;
  double p;
} DropoutSet;

enum { MAX_DROPOUT_SET = 64 };

/* The programs in use (USE_*) and their memory, zeroed; the dropout
 * probabilities the compiled ones, then set[0..nset) applied in order.
 * -1, said, when the block cannot be had. */
int net_alloc(Net *n, const LmcModel *m, int use, uint64_t seed, int threads, const DropoutSet *set, int nset);
void net_free(Net *n);   /* also of a zeroed or failed Net */
/* The bf16 copy from the parameters, after they are set other than by
 * the optimizer (initialised, loaded, broadcast); nothing in fp32 mode. */
void net_round16(Net *n, const LmcModel *m);
/* USE_BF16 for --precision bf16 (said, with a warning, where the CPU
 * has no bf16 products and the portable ones run), else 0. */
int net_precision(bool bf16);
/* Every tensor per its descriptor, from one stream of seed. */
void init_params(const LmcModel *m, real *param, uint64_t seed);
void run_info(const LmcModel *m);

/* ------------------------------------------------------------- vocab.c */

/* corpus_load, and the corpus's vocabulary must be the one the model is
 * compiled for (ntoken); -1, said, else. */
int vocab_load_corpus(const LmcModel *m, Corpus *c, const char *dir);
char *vocab_join(const Dict *d);   /* the words joined by '\n' (malloc'd) */
void vocab_hash_hex(const Dict *d, char hex[17]);   /* dict_hash in hex */
/* A checkpoint's vocabulary (its metadata) must be corpus's, word for
 * word; without one its hash must match, when it has one. */
int vocab_check(const MetaList *meta, const Dict *corpus, const char *ckpt, const char *dir);
/* generate's vocabulary into d: the checkpoint's, or data/wikitext-2's
 * for a state_dict saved without one. */
int vocab_for_generate(const LmcModel *m, const MetaList *meta, const char *ckpt, Dict *d);

/* -------------------------------------------------------------- eval.c */

/* main.py's evaluate() of program p over b: the mean loss per token;
 * max_windows > 0 stops early (dry run); *ntok: targets scored. */
double eval_loss(LmcCtx *c, const LmcProgram *p, const Batches *b, int bptt, long max_windows, size_t *ntok);
/* threads: BLAS and kernel threads (positive) */
int run_eval(const LmcModel *m, const char *checkpoint, const char *data, const char *split, bool json,
             int threads, bool bf16);

/* ---------------------------------------------------------- generate.c */

/* How a word is drawn (sample.c): the temperature, then the top_k most
 * likely words (0: all), then the fewest of those whose probability,
 * renormalised over them, reaches top_p (1: all); then a draw from what is
 * left, renormalised. */
typedef struct {
  double temperature;    /* >= 1e-3 */
  int top_k;             /* >= 0 */
  double top_p;          /* (0, 1] */
} SampleRule;

typedef struct {
  real w;
  int32_t v;
} SampleCand;

/* One word drawn from logp (n) by rule r with u in [0, 1); w (n) and cand
 * (n) are scratch. */
int sample_word(const real *logp, int n, const SampleRule *r, double u, real *w, SampleCand *cand);

typedef struct {
  const char *checkpoint;
  const char *prompt;       /* words, or NULL */
  const char *prompt_file;  /* a file of words, or NULL (not both) */
  const char *outf;         /* "-": standard output */
  int words, samples, threads;
  bool no_kv_cache;         /* the gen program on the window even where a step program exists */
  bool bf16;                /* --precision bf16 */
  SampleRule rule;
  uint64_t seed;
} GenOptions;

enum { GEN_MAX_SAMPLES = 100000, GEN_PROMPT_MAX_BYTES = 1 << 20 };

int run_generate(const LmcModel *m, const GenOptions *o);

/* -------------------------------------------------------------- dist.c */

/* MPI_Init (a no-op in the default build) and MPI_Finalize; with several
 * ranks rt_progname names the rank.  dist_end(rc) with rc != 0 and
 * several ranks ends the whole job (MPI_Abort) and does not return. */
void dist_begin(void);
int dist_end(int rc);
int dist_rank(void);   /* 0 in the default build */
int dist_size(void);   /* 1 in the default build */
double dist_mean(double x);          /* over the ranks; x itself with one */
bool dist_any(bool x);               /* true on some rank */
void dist_bcast(void *p, size_t bytes);   /* rank 0's bytes to every rank */

/* The gradient the ranks step with, reduced in buckets as run() finishes
 * each parameter's (dist.c). */
typedef struct DistGrad DistGrad;

/* With several ranks, *d for c (the training context), and sets
 * c->grad_ready; NULL, and nothing set, with one.  -1, said, for a bad
 * LMC_BUCKET_KB (the bucket size, dist.c). */
int dist_grad_init(DistGrad **d, LmcCtx *c);
void dist_grad_free(DistGrad *d);   /* d may be NULL */
/* After c's run(): *m, *grad, the model and c's gradient block, become the
 * dense model and the mean gradient over the ranks (d NULL: they stay). */
void dist_grad_mean(DistGrad *d, LmcCtx *c, const LmcModel **m, real **grad);
double dist_comm_seconds(void);   /* spent in MPI calls so far: 0 with one rank */
/* -1, said by rank 0 naming the step and the ranks, when the ranks' p
 * differ (a hash of its bytes) after step `step`. */
int dist_check_same(const real *p, size_t n, uint64_t step);

/* ------------------------------------------------------------- train.c */

typedef struct {
  const char *data;      /* corpus folder */
  double lr;             /* 0: the default (20 sgd, 0.001 adamw; with resume, the saved lr) */
  double clip;           /* 0: no clipping */
  int epochs;
  uint64_t seed;
  int ndropout;          /* --dropout options given, in order (a later one for a slot wins) */
  DropoutSet dropout[MAX_DROPOUT_SET];
  int log_interval;
  const char *save;      /* NULL: model.safetensors (a dry run then uses a temp file) */
  bool dry_run;
  bool adamw;
  long max_batches;      /* per epoch, 0: all */
  int threads;
  bool bf16;             /* --precision bf16 */
  const char *resume;
  const char *log_csv;
  long check_every;      /* steps between two dist_check_same (mpirun); 0: at epoch ends only */
} TrainOptions;

int run_train(const LmcModel *m, const TrainOptions *o);

#endif
