/*
 * check_checkpoint.c: safetensors save and load on a small fake model.
 *
 * The model has a tied pair (decoder.weight is encoder.weight's storage,
 * as with --tied), so a file holds five tensors for four storages.  Files
 * with hand-written headers test what the loader accepts (F64, either name
 * of a tied pair, unknown tensors) and what it refuses, with the exact
 * message; every refusal must leave the parameters as they were.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"
#include "testutil.h"

/* sorted by name in the file:          data_offsets
 *   decoder.bias      (5)              [0, 20]
 *   decoder.weight    (5, 3) tied      [20, 80]
 *   encoder.weight    (5, 3)           [80, 140]
 *   rnn.bias_ih_l0    (4)              [140, 156]
 *   rnn.weight_ih_l0  (4, 3)           [156, 204] */
static const LmcTensorDesc params[] = {
  { "encoder.weight", 2, { 5, 3 }, 0, 15, LMC_INIT_UNIFORM, 0.1, -1, 0, 0 },
  { "rnn.weight_ih_l0", 2, { 4, 3 }, 15, 12, LMC_INIT_UNIFORM, 0.1, -1, 15, 0 },
  { "rnn.bias_ih_l0", 1, { 4 }, 27, 4, LMC_INIT_ZERO, 0, -1, 27, 0 },
  { "decoder.weight", 2, { 5, 3 }, 0, 15, LMC_INIT_UNIFORM, 0.1, 0, 0, 0 },
  { "decoder.bias", 1, { 5 }, 31, 5, LMC_INIT_ZERO, 0, -1, 31, 0 },
};
enum { NUMEL = 36, DATA_BYTES = 204 };

static const LmcModel model = {
  .kind = "LSTM",
  .version = "test",
  .flags = "",
  .ntoken = 5,
  .bptt = 4,
  .nparam = 5,
  .param = params,
  .param_numel = NUMEL,
};

static char dir[256], path[512], tmppath[600];

static void setup(void)
{
  snprintf(dir, sizeof dir, "%s/lmc_ckpt_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  ck_assert(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  snprintf(tmppath, sizeof tmppath, "%s.tmp", path);
}

static void teardown(void)
{
  unlink(path);
  unlink(tmppath);
  rmdir(tmppath);
  rmdir(dir);
}

static void fill(real *p, int n, double scale)
{
  for (int i = 0; i < n; i++)
    p[i] = (real)(scale * (i - 17.25) / (1 + i % 7));
  p[3] = (real)-0.0;
  p[5] = (real)1e-40;      /* subnormal in float */
  p[8] = (real)3.4e38;
}

static unsigned char *slurp(const char *p, size_t *n)
{
  FILE *f = fopen(p, "rb");
  ck_assert_msg(f != NULL, "%s: %s", p, strerror(errno));
  static unsigned char buf[1 << 20];
  *n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  unsigned char *out = malloc(*n + 1);
  memcpy(out, buf, *n);
  return out;
}

static void spit(const char *p, const void *data, size_t n)
{
  FILE *f = fopen(p, "wb");
  ck_assert_msg(f != NULL, "%s: %s", p, strerror(errno));
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

/* A safetensors file with a hand-written header and n little-endian
 * float32 values v (or, with f64, float64). */
static void write_raw(const char *json, const double *v, int n, int f64)
{
  size_t hl = strlen(json), sz = f64 ? 8 : 4;
  size_t total = 8 + hl + (size_t)n * sz;
  unsigned char *b = malloc(total);
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(b + 8, json, hl);
  for (int i = 0; i < n; i++) {
    uint64_t u;
    if (f64)
      memcpy(&u, &v[i], 8);
    else {
      float f = (float)v[i];
      uint32_t u32;
      memcpy(&u32, &f, 4);
      u = u32;
    }
    for (size_t k = 0; k < sz; k++)
      b[8 + hl + (size_t)i * sz + k] = (unsigned char)(u >> (8 * k));
  }
  spit(path, b, total);
  free(b);
}

/* stderr into a file of dir while a load runs; stderr_text() reads it back. */
static int saved_stderr = -1;
static char stderr_buf[1 << 16];

static void capture_stderr(void)
{
  char p[600];
  snprintf(p, sizeof p, "%s/stderr.txt", dir);
  fflush(stderr);
  saved_stderr = dup(2);
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  dup2(fileno(f), 2);
  fclose(f);
}

static const char *stderr_text(void)
{
  char p[600];
  snprintf(p, sizeof p, "%s/stderr.txt", dir);
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  FILE *f = fopen(p, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(stderr_buf, 1, sizeof stderr_buf - 1, f);
  stderr_buf[n] = '\0';
  fclose(f);
  unlink(p);
  return stderr_buf;
}

/* Loads path expecting a refusal with message "PATH: error: want";
 * param must stay as it was. */
static void refused(const char *want)
{
  real param[NUMEL], before[NUMEL];
  fill(param, NUMEL, 0.5);
  memcpy(before, param, sizeof param);
  char err[ERRLEN] = "", full[ERRLEN + 600];
  MetaList meta = { 0 };
  ck_assert_int_eq(ckpt_load(path, &model, param, NULL, 0, &meta, err), -1);
  snprintf(full, sizeof full, "%s: error: %s", path, want);
  ck_assert_str_eq(err, full);
  ck_assert_int_eq(memcmp(param, before, sizeof param), 0);
  ck_assert_int_eq(meta.nmeta, 0);
}

/* A header for the model's five tensors with one of them replaced. */
static const char *const good_entries[5] = {
  "\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]}",
  "\"decoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[20,80]}",
  "\"encoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[80,140]}",
  "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]}",
  "\"rnn.weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[156,204]}",
};

static void header_with(char *out, size_t len, int which, const char *entry)
{
  size_t k = (size_t)snprintf(out, len, "{");
  for (int i = 0; i < 5; i++) {
    const char *e = i == which ? entry : good_entries[i];
    if (e)
      k += (size_t)snprintf(out + k, len - k, "%s%s", k > 1 ? "," : "", e);
  }
  snprintf(out + k, len - k, "}");
}

/* Values of a file laid out as good_entries: decoder.bias, decoder.weight,
 * encoder.weight, rnn.bias_ih_l0, rnn.weight_ih_l0. */
static void file_values(double *v)
{
  for (int i = 0; i < DATA_BYTES / 4; i++)
    v[i] = i * 0.25 - 3;
  for (int i = 0; i < 15; i++)    /* the tied pair agrees */
    v[20 + i] = v[5 + i];
}

START_TEST(test_round_trip)
{
  real param[NUMEL], m[NUMEL], v[NUMEL], back[NUMEL], mb[NUMEL], vb[NUMEL];
  fill(param, NUMEL, 1);
  fill(m, NUMEL, 0.001);
  fill(v, NUMEL, 1e-6);
  m[0] = 7;
  ExtraBlock ex[2] = { { "optimizer.exp_avg.", m }, { "optimizer.exp_avg_sq.", v } };
  char err[ERRLEN] = "";
  ck_assert_msg(ckpt_save(path, &model, param, ex, 2, NULL, err) == 0, "%s", err);
  ck_assert_int_eq(access(tmppath, F_OK), -1);

  memset(back, 0x55, sizeof back);
  memset(mb, 0x55, sizeof mb);
  memset(vb, 0x55, sizeof vb);
  ExtraBlock in[2] = { { "optimizer.exp_avg.", mb }, { "optimizer.exp_avg_sq.", vb } };
  MetaList meta = { 0 };
  ck_assert_msg(ckpt_load(path, &model, back, in, 2, &meta, err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(back, param, sizeof back), 0);
  ck_assert_int_eq(memcmp(mb, m, sizeof mb), 0);
  ck_assert_int_eq(memcmp(vb, v, sizeof vb), 0);
  ck_assert_ptr_eq(in[0].data, mb);
  ck_assert_int_eq(meta.nmeta, 0);

  /* the layout: header padded to 8, both names of the tied pair, F32 data */
  size_t n;
  unsigned char *b = slurp(path, &n);
  uint64_t hl = 0;
  for (int i = 0; i < 8; i++)
    hl |= (uint64_t)b[i] << (8 * i);
  ck_assert_uint_eq(hl % 8, 0);
  ck_assert_uint_eq(n, 8 + hl + DATA_BYTES + 2 * (DATA_BYTES - 60));   /* extras skip the alias */
  b[8 + hl] = 0;
  ck_assert_ptr_nonnull(strstr((char *)b + 8,
                               "\"decoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[20,80]}"));
  ck_assert_ptr_nonnull(strstr((char *)b + 8, "\"optimizer.exp_avg.encoder.weight\""));
  ck_assert_ptr_null(strstr((char *)b + 8, "\"optimizer.exp_avg.decoder.weight\""));
  free(b);

  /* without its extra blocks, a file still loads; the blocks say absent */
  ck_assert_msg(ckpt_save(path, &model, param, NULL, 0, NULL, err) == 0, "%s", err);
  memset(mb, 0x55, sizeof mb);
  real keep[NUMEL];
  memcpy(keep, mb, sizeof keep);
  in[0].data = mb;
  in[1].data = NULL;           /* not asked for */
  ck_assert_msg(ckpt_load(path, &model, back, in, 2, NULL, err) == 0, "%s", err);
  ck_assert_ptr_null(in[0].data);
  ck_assert_int_eq(memcmp(mb, keep, sizeof mb), 0);
  ck_assert_int_eq(memcmp(back, param, sizeof back), 0);
}
END_TEST

START_TEST(test_metadata)
{
  MetaList meta = { 0 }, got = { 0 };
  char big[100000];
  for (size_t i = 0; i < sizeof big - 1; i++)
    big[i] = (char)('a' + i % 26);
  big[sizeof big - 1] = 0;
  meta_set(&meta, "format", "1");
  meta_set(&meta, "note", "first");
  meta_set(&meta, "vocab", "<eos> = caf\xc3\xa9 \"quoted\" back\\slash\ttab\nnewline \x01 end");
  meta_set(&meta, "empty", "");
  meta_set(&meta, "big", big);
  meta_set(&meta, "note", "second");             /* replaces */
  ck_assert_int_eq(meta.nmeta, 5);
  ck_assert_str_eq(meta_get(&meta, "note"), "second");
  ck_assert_ptr_null(meta_get(&meta, "nope"));

  real param[NUMEL], back[NUMEL];
  fill(param, NUMEL, 1);
  char err[ERRLEN] = "";
  ck_assert_msg(ckpt_save(path, &model, param, NULL, 0, &meta, err) == 0, "%s", err);
  ck_assert_msg(ckpt_load(path, &model, back, NULL, 0, &got, err) == 0, "%s", err);
  ck_assert_int_eq(got.nmeta, 5);
  for (int i = 0; i < meta.nmeta; i++) {
    const char *v = meta_get(&got, meta.meta[i].key);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(v, meta.meta[i].value);
  }
  meta_free(&got);
  meta_free(&meta);
  ck_assert_int_eq(meta.nmeta, 0);

  /* JSON escapes a writer other than ours may use */
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048];
  header_with(h, sizeof h, -1, NULL);
  char full[2300];
  snprintf(full, sizeof full, "{\"__metadata__\":{\"k\\u00e9y\":\"\\ud83d\\ude00 \\/ \\\" \\u0041\"},%s", h + 1);
  write_raw(full, v, DATA_BYTES / 4, 0);
  ck_assert_msg(ckpt_load(path, &model, back, NULL, 0, &got, err) == 0, "%s", err);
  ck_assert_str_eq(meta_get(&got, "k\xc3\xa9y"), "\xf0\x9f\x98\x80 / \" A");
  meta_free(&got);
}
END_TEST

/* What else the loader accepts: F64, a tied pair under one name, unknown
 * tensors, padding. */
START_TEST(test_accepts)
{
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048], err[ERRLEN] = "";
  real param[NUMEL];

  /* only decoder.weight of the tied pair, and an unknown int64 tensor */
  header_with(h, sizeof h, 2, "\"extra.counter\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[80,96]},"
                              "\"rnn.scale\":{\"dtype\":\"BF16\",\"shape\":[22],\"data_offsets\":[96,140]}");
  strcat(h, "    ");
  write_raw(h, v, DATA_BYTES / 4, 0);
  capture_stderr();
  int rc = ckpt_load(path, &model, param, NULL, 0, NULL, err);
  const char *said = stderr_text();
  ck_assert_msg(rc == 0, "%s", err);
  /* the tensors the model lacks are named, once */
  char want[1024];
  snprintf(want, sizeof want, "lmc: warning: %s: 2 tensors that the model does not have, not read: "
           "extra.counter, rnn.scale\n", path);
  ck_assert_str_eq(said, want);
  for (int i = 0; i < 15; i++)
    ck_assert(param[i] == (real)v[5 + i]);             /* encoder storage from decoder.weight */
  for (int i = 0; i < 12; i++)
    ck_assert(param[15 + i] == (real)v[39 + i]);       /* rnn.weight_ih_l0 */
  for (int i = 0; i < 5; i++)
    ck_assert(param[31 + i] == (real)v[i]);            /* decoder.bias */

  /* the whole file in F64 */
  char h64[2048];
  snprintf(h64, sizeof h64,
           "{\"decoder.bias\":{\"dtype\":\"F64\",\"shape\":[5],\"data_offsets\":[0,40]},"
           "\"decoder.weight\":{\"dtype\":\"F64\",\"shape\":[5,3],\"data_offsets\":[40,160]},"
           "\"encoder.weight\":{\"shape\":[5,3],\"dtype\":\"F64\",\"data_offsets\":[160,280],\"x\":[1,{}]},"
           "\"rnn.bias_ih_l0\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[280,312]},"
           "\"rnn.weight_ih_l0\":{\"dtype\":\"F64\",\"shape\":[4,3],\"data_offsets\":[312,408]}}");
  v[7] = 0.1;
  v[22] = 0.1;
  write_raw(h64, v, DATA_BYTES / 4, 1);
  capture_stderr();
  rc = ckpt_load(path, &model, param, NULL, 0, NULL, err);
  ck_assert_str_eq(stderr_text(), "");   /* the model's tensors and no others: nothing said */
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert(param[2] == (real)0.1);
  ck_assert(param[27] == (real)v[35]);
}
END_TEST

START_TEST(test_refuses_bad_files)
{
  real param[NUMEL];
  fill(param, NUMEL, 1);
  char err[ERRLEN] = "", want[ERRLEN];
  ck_assert_msg(ckpt_save(path, &model, param, NULL, 0, NULL, err) == 0, "%s", err);
  size_t n;
  unsigned char *b = slurp(path, &n);
  uint64_t hl = 0;
  for (int i = 0; i < 8; i++)
    hl |= (uint64_t)b[i] << (8 * i);

  spit(path, b, n - 10);                              /* truncated data */
  snprintf(want, sizeof want, "rnn.weight_ih_l0: data_offsets [156, 204] beyond the 194 bytes of data: file truncated");
  refused(want);
  spit(path, b, 5);
  refused("file too short (5 bytes) for a safetensors header");
  spit(path, b, 8 + hl - 3);                          /* truncated header */
  snprintf(want, sizeof want, "header length %llu beyond the file size (%llu bytes)", (unsigned long long)hl,
           (unsigned long long)(8 + hl - 3));
  refused(want);

  unsigned char *c = malloc(n);
  memcpy(c, b, n);
  c[0] = 0x40, c[1] = 0x42, c[2] = 0x0f;              /* 1000000 */
  for (int i = 3; i < 8; i++) c[i] = 0;
  spit(path, c, n);
  snprintf(want, sizeof want, "header length 1000000 beyond the file size (%zu bytes)", n);
  refused(want);

  memcpy(c, b, n);
  unsigned char *colon = memchr(c + 8, ':', hl);
  *colon = ' ';                                        /* {"decoder.bias" {...  */
  spit(path, c, n);
  snprintf(want, sizeof want, "malformed JSON header at byte %td: expected ':'", colon - (c + 8) + 1);
  refused(want);
  memcpy(c, b, n);
  c[8 + hl - 1] = '}';                                 /* padding replaced */
  spit(path, c, n);
  snprintf(want, sizeof want, "malformed JSON header at byte %llu: text after the header object",
           (unsigned long long)(hl - 1));
  refused(want);
  free(c);
  free(b);

  write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", NULL, 0, 0);
  refused("malformed JSON header at byte 54: expected '\"'");
  write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", NULL, 0, 0);
  refused("malformed JSON header at byte 29: expected a non-negative integer");
  write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1], \"data_offsets\":[0]}}", NULL, 0, 0);
  refused("malformed JSON header at byte 51: data_offsets must hold two integers");
  write_raw("{\"__metadata__\":{\"k\":1}}", NULL, 0, 0);
  refused("malformed JSON header at byte 21: __metadata__ values must be strings");
  write_raw("[]", NULL, 0, 0);
  refused("malformed JSON header at byte 0: expected '{'");
  write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", NULL, 0, 0);
  refused("malformed JSON header at byte 52: expected '}', found the end");
  write_raw("", NULL, 0, 0);
  refused("malformed JSON header at byte 0: expected '{', found the end");
}
END_TEST

START_TEST(test_refuses_mismatches)
{
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048];

  header_with(h, sizeof h, 3, "\"rnn.bias_hh_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("missing tensor rnn.bias_ih_l0; did you mean rnn.bias_hh_l0, which the file has?");
  header_with(h, sizeof h, 3, "\"rnn.bais_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("missing tensor rnn.bias_ih_l0; did you mean rnn.bais_ih_l0, which the file has?");
  /* nothing near: the tensors the model lacks, not the whole file */
  header_with(h, sizeof h, 3, "\"head.b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("missing tensor rnn.bias_ih_l0; the file's tensor that the model lacks: head.b");
  char h2[2048];
  snprintf(h2, sizeof h2, "{\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]}}");
  write_raw(h2, v, 5, 0);
  refused("missing tensor encoder.weight (or its tied decoder.weight); the file has 1 tensor, none of that name");
  /* near the tied name */
  snprintf(h2, sizeof h2, "{\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]},"
           "\"decoder.weigth\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[20,80]}}");
  write_raw(h2, v, 20, 0);
  refused("missing tensor encoder.weight (or its tied decoder.weight); did you mean decoder.weigth, which the file "
          "has?");

  header_with(h, sizeof h, 4, "\"rnn.weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[156,188]}");
  write_raw(h, v, DATA_BYTES / 4 - 4, 0);
  refused("rnn.weight_ih_l0: shape [4, 2] in file, [4, 3] compiled");
  header_with(h, sizeof h, 4, "\"rnn.weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[156,204]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.weight_ih_l0: shape [12] in file, [4, 3] compiled");
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: dtype F16 in file, F32 or F64 expected");
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,152]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: data_offsets [140, 152] hold 12 bytes, shape [4] of F32 needs 16");
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[300,316]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: data_offsets [300, 316] beyond the 204 bytes of data: file truncated");
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[156,140]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: data_offsets [156, 140] end before they begin");
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: no shape in the header");
  header_with(h, sizeof h, 3, "\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("tensor decoder.bias appears twice in the header");

  /* another kind of model: named before any tensor's shape is compared */
  LmcModel gru = model;
  gru.kind = "GRU";
  MetaList gm = { 0 };
  meta_set(&gm, "kind", "GRU");
  real gp[NUMEL];
  fill(gp, NUMEL, 0.25);
  char gerr[ERRLEN];
  ck_assert_msg(ckpt_save(path, &gru, gp, NULL, 0, &gm, gerr) == 0, "%s", gerr);
  meta_free(&gm);
  refused("holds a GRU model, this program is compiled for LSTM");

  header_with(h, sizeof h, -1, NULL);
  v[20 + 7] = 0.5;                                     /* encoder.weight[7] != decoder.weight[7] */
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("encoder.weight and decoder.weight are tied but differ in the file (element 7: 0.5 vs 0)");
}
END_TEST

/* Extra blocks: all of a block or nothing; names under a requested
 * prefix must be parameters. */
START_TEST(test_extra_blocks)
{
  real param[NUMEL], m[NUMEL], back[NUMEL], mb[NUMEL], before[NUMEL];
  fill(param, NUMEL, 1);
  fill(m, NUMEL, 2);
  ExtraBlock ex = { "opt.m.", m };
  char err[ERRLEN] = "", want[ERRLEN + 600];
  ck_assert_msg(ckpt_save(path, &model, param, &ex, 1, NULL, err) == 0, "%s", err);
  /* the block under another prefix is just unknown tensors */
  ExtraBlock other = { "opt.v.", mb };
  ck_assert_msg(ckpt_load(path, &model, back, &other, 1, NULL, err) == 0, "%s", err);
  ck_assert_ptr_null(other.data);

  double v[DATA_BYTES / 4 + 4] = { 0 };
  file_values(v);
  char h[2048];
  header_with(h, sizeof h, -1, NULL);
  h[strlen(h) - 1] = 0;
  strcat(h, ",\"opt.m.rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[204,220]}}");
  write_raw(h, v, DATA_BYTES / 4 + 4, 0);
  fill(back, NUMEL, 3);
  memcpy(before, back, sizeof back);
  ExtraBlock in = { "opt.m.", mb };
  ck_assert_int_eq(ckpt_load(path, &model, back, &in, 1, NULL, err), -1);
  snprintf(want, sizeof want, "%s: error: missing tensor opt.m.encoder.weight (the file has other tensors under opt.m.)", path);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(memcmp(back, before, sizeof back), 0);
  ck_assert_ptr_eq(in.data, mb);
  /* not asked for: ignored */
  ck_assert_msg(ckpt_load(path, &model, back, NULL, 0, NULL, err) == 0, "%s", err);

  header_with(h, sizeof h, -1, NULL);
  h[strlen(h) - 1] = 0;
  strcat(h, ",\"opt.m.rnn.gain\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[204,220]}}");
  write_raw(h, v, DATA_BYTES / 4 + 4, 0);
  ck_assert_int_eq(ckpt_load(path, &model, back, &in, 1, NULL, err), -1);
  snprintf(want, sizeof want, "%s: error: opt.m.rnn.gain: not a parameter of the compiled model (under opt.m.)", path);
  ck_assert_str_eq(err, want);
}
END_TEST

/* ckpt_load_via: through the caller's scratch block, or straight into
 * param; a refused file leaves param as it was when scratch is another
 * block. */
START_TEST(test_load_via)
{
  real param[NUMEL], back[NUMEL], scratch[NUMEL], keep[NUMEL];
  fill(param, NUMEL, 1);
  char err[ERRLEN] = "";
  ck_assert_msg(ckpt_save(path, &model, param, NULL, 0, NULL, err) == 0, "%s", err);

  memset(back, 0x55, sizeof back);
  memset(scratch, 0x33, sizeof scratch);
  ck_assert_msg(ckpt_load_via(path, &model, back, scratch, NULL, 0, NULL, err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(back, param, sizeof back), 0);

  memset(back, 0x55, sizeof back);
  ck_assert_msg(ckpt_load_via(path, &model, back, back, NULL, 0, NULL, err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(back, param, sizeof back), 0);

  size_t n;
  unsigned char *b = slurp(path, &n);
  ck_assert_int_eq(truncate(path, (off_t)(n - 4)), 0);
  free(b);
  fill(back, NUMEL, -5);
  memcpy(keep, back, sizeof keep);
  ck_assert_int_eq(ckpt_load_via(path, &model, back, scratch, NULL, 0, NULL, err), -1);
  ck_assert_int_eq(memcmp(back, keep, sizeof back), 0);
  printf("load via a scratch block and in place: the saved values; a truncated file refused (%s), "
         "the parameters untouched\n", err);
}
END_TEST

static void check_untouched(const unsigned char *old, size_t n)
{
  size_t n2;
  unsigned char *now = slurp(path, &n2);
  ck_assert_uint_eq(n2, n);
  ck_assert_int_eq(memcmp(now, old, n), 0);
  free(now);
}

START_TEST(test_failed_save)
{
  real param[NUMEL], other[NUMEL];
  fill(param, NUMEL, 1);
  fill(other, NUMEL, -2);
  char err[ERRLEN] = "", want[ERRLEN + 600];
  MetaList meta = { 0 };
  meta_set(&meta, "format", "1");
  ck_assert_msg(ckpt_save(path, &model, param, NULL, 0, &meta, err) == 0, "%s", err);
  size_t n;
  unsigned char *old = slurp(path, &n);

  /* the temporary name is taken by a folder */
  ck_assert_int_eq(mkdir(tmppath, 0700), 0);
  ck_assert_int_eq(ckpt_save(path, &model, other, NULL, 0, &meta, err), -1);
  snprintf(want, sizeof want, "%s: error: refusing to write %s: it exists and is a folder, not a regular file",
           path, tmppath);
  ck_assert_str_eq(err, want);
  check_untouched(old, n);
  ck_assert_int_eq(rmdir(tmppath), 0);

  /* the disk fills up half way: the file size limit stands in for it */
  struct rlimit rl, small = { 300, 300 };
  ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
  small.rlim_max = rl.rlim_max;
  signal(SIGXFSZ, SIG_IGN);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
  int rc = ckpt_save(path, &model, other, NULL, 0, &meta, err);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
  ck_assert_int_eq(rc, -1);
  snprintf(want, sizeof want, "%s: error: cannot write %s: File too large", path, tmppath);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(access(tmppath, F_OK), -1);         /* removed */
  check_untouched(old, n);

  /* a folder that does not exist */
  char nodir[600];
  snprintf(nodir, sizeof nodir, "%s/nodir/m.safetensors", dir);
  ck_assert_int_eq(ckpt_save(nodir, &model, other, NULL, 0, &meta, err), -1);
  snprintf(want, sizeof want, "%s: error: cannot create %s.tmp: No such file or directory", nodir, nodir);
  ck_assert_str_eq(err, want);

  /* a read-only folder (root writes anyway, so only as another user) */
  if (geteuid() != 0) {
    ck_assert_int_eq(chmod(dir, 0500), 0);
    rc = ckpt_save(path, &model, other, NULL, 0, &meta, err);
    chmod(dir, 0700);
    ck_assert_int_eq(rc, -1);
    snprintf(want, sizeof want, "%s: error: cannot create %s: Permission denied", path, tmppath);
    ck_assert_str_eq(err, want);
    check_untouched(old, n);
  }

  /* and a good save replaces it */
  ck_assert_msg(ckpt_save(path, &model, other, NULL, 0, &meta, err) == 0, "%s", err);
  real back[NUMEL];
  ck_assert_msg(ckpt_load(path, &model, back, NULL, 0, NULL, err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(back, other, sizeof back), 0);
  free(old);
  meta_free(&meta);
}
END_TEST

START_TEST(test_missing_file)
{
  real param[NUMEL];
  char err[ERRLEN] = "", want[ERRLEN + 600];
  ck_assert_int_eq(ckpt_load(path, &model, param, NULL, 0, NULL, err), -1);
  snprintf(want, sizeof want, "%s: error: cannot open: No such file or directory", path);
  ck_assert_str_eq(err, want);
  snprintf(want, sizeof want, "%s: error: not a regular file", dir);
  ck_assert_int_eq(ckpt_load(dir, &model, param, NULL, 0, NULL, err), -1);
  ck_assert_str_eq(err, want);
}
END_TEST

/* ------------------------------------------- the format, as the reference enforces it */

/* A file of size bytes, sparse, whose header length field says hlen. */
static void sparse_file(uint64_t hlen, off_t size)
{
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)(hlen >> (8 * i));
  spit(path, len8, 8);
  ck_assert_int_eq(truncate(path, size), 0);
}

/* A 64 GiB header length in a 64 GiB (sparse) file is refused before any
 * allocation (it was xmalloc'd: SIGABRT), as is one byte over 100 MB. */
START_TEST(test_header_limits)
{
  sparse_file(UINT64_C(1) << 36, (off_t)((UINT64_C(1) << 36) + 64));
  refused("header length 68719476736 is over the format's limit of 100000000 bytes");
  sparse_file(100000001, 100000001 + 8 + 16);
  refused("header length 100000001 is over the format's limit of 100000000 bytes");
  unlink(path);
}
END_TEST

/* Byte offset of the first occurrence of needle in the header text h. */
static size_t at(const char *h, const char *needle)
{
  const char *p = strstr(h, needle);
  ck_assert_ptr_nonnull(p);
  return (size_t)(p - h);
}

START_TEST(test_refuses_bad_utf8)
{
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048], full[2400], want[256];
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_\xff\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  snprintf(want, sizeof want, "header is not valid UTF-8 (byte %zu)", at(h, "\xff"));
  refused(want);

  header_with(h, sizeof h, -1, NULL);
  /* an overlong '/' in a value, a UTF-16 surrogate encoded in a key, a
   * sequence cut short by the closing quote */
  const char *bad[] = { "\"note\":\"a\xc0\xafz\"", "\"k\xed\xa0\x80\":\"1\"", "\"note\":\"caf\xc3\"" };
  const char *mark[] = { "\xc0", "\xed", "\xc3" };
  for (int i = 0; i < 3; i++) {
    snprintf(full, sizeof full, "{\"__metadata__\":{%s},%s", bad[i], h + 1);
    write_raw(full, v, DATA_BYTES / 4, 0);
    snprintf(want, sizeof want, "header is not valid UTF-8 (byte %zu)", at(full, mark[i]));
    refused(want);
  }
  /* and the largest code point is fine */
  snprintf(full, sizeof full, "{\"__metadata__\":{\"note\":\"\xf4\x8f\xbf\xbf\"},%s", h + 1);
  write_raw(full, v, DATA_BYTES / 4, 0);
  real param[NUMEL];
  char err[ERRLEN];
  ck_assert_msg(ckpt_load(path, &model, param, NULL, 0, NULL, err) == 0, "%s", err);
}
END_TEST

START_TEST(test_refuses_repeated_metadata)
{
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048], full[2400];
  header_with(h, sizeof h, -1, NULL);
  snprintf(full, sizeof full, "{\"__metadata__\":{\"kind\":\"LSTM\",\"step\":\"1\",\"kind\":\"GRU\"},%s", h + 1);
  write_raw(full, v, DATA_BYTES / 4, 0);
  refused("__metadata__ key kind appears twice in the header");
  snprintf(full, sizeof full, "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\"},%s", h + 1);
  write_raw(full, v, DATA_BYTES / 4, 0);
  refused("__metadata__ appears twice in the header");
}
END_TEST

/* Sorted by offset, the tensors must tile the data exactly. */
START_TEST(test_refuses_bad_tiling)
{
  double v[DATA_BYTES / 4 + 1] = { 0 };
  file_values(v);
  char h[2048];
  header_with(h, sizeof h, 2, "\"encoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[20,80]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("encoder.weight: data_offsets [20, 80] overlap decoder.weight's [20, 80]");

  header_with(h, sizeof h, 4, "\"rnn.weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[160,208]}");
  write_raw(h, v, DATA_BYTES / 4 + 1, 0);
  refused("bytes [156, 160) of the data, before rnn.weight_ih_l0, belong to no tensor");

  header_with(h, sizeof h, -1, NULL);
  write_raw(h, v, DATA_BYTES / 4 + 1, 0);
  refused("bytes [204, 208) of the data, after the last tensor, belong to no tensor");

  write_raw("{}", v, 1, 0);
  refused("bytes [0, 4) of the data, after the last tensor, belong to no tensor");

  header_with(h, sizeof h, 0, "\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4,20]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("bytes [0, 4) of the data, before decoder.bias, belong to no tensor");

  /* the header's order is not the data's: any order that tiles is fine */
  const char *rev = "{\"rnn.weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]},"
                    "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[48,64]},"
                    "\"encoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[64,124]},"
                    "\"decoder.bias\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[184,204]},"
                    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[124,124]},"
                    "\"decoder.weight\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[124,184]}}";
  for (int i = 0; i < 15; i++) v[31 + i] = v[16 + i];   /* the tied pair agrees */
  write_raw(rev, v, DATA_BYTES / 4, 0);
  real param[NUMEL];
  char err[ERRLEN];
  ck_assert_msg(ckpt_load(path, &model, param, NULL, 0, NULL, err) == 0, "%s", err);
  ck_assert(param[15] == (real)v[0]);                  /* rnn.weight_ih_l0 */
  ck_assert(param[31] == (real)v[46]);                 /* decoder.bias */
}
END_TEST

START_TEST(test_refuses_bad_sizes)
{
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048];
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],"
                              "\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: shape [4294967296, 4294967296, 2] of F32 holds more than 2^64 bytes");
  /* numel 2^64 exactly wraps to 0 bytes in 64-bit arithmetic */
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                              "\"data_offsets\":[140,140]},\"rnn.pad\":{\"dtype\":\"F32\",\"shape\":[4],"
                              "\"data_offsets\":[140,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.bias_ih_l0: shape [4294967296, 4294967296] of U8 holds more than 2^64 bytes");
  /* a dtype the format does not have, even on a tensor the model ignores */
  header_with(h, sizeof h, 3, "\"rnn.bias_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[140,156]},"
                              "\"rnn.q\":{\"dtype\":\"Q4\",\"shape\":[0],\"data_offsets\":[156,156]}");
  write_raw(h, v, DATA_BYTES / 4, 0);
  refused("rnn.q: unknown dtype Q4");
}
END_TEST

static double seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 200000 empty tensors and 200000 metadata keys: the repeat checks sort
 * (they compared every pair: minutes), the metadata is moved, not merged
 * key by key. */
START_TEST(test_many_entries)
{
  enum { MANY = 200000 };
  double v[DATA_BYTES / 4];
  file_values(v);
  char h[2048];
  header_with(h, sizeof h, -1, NULL);
  size_t cap = (size_t)MANY * 80 + 4096, k = 0;
  char *big = malloc(cap);
  k += (size_t)snprintf(big + k, cap - k, "{\"__metadata__\":{");
  for (int i = 0; i < MANY; i++)
    k += (size_t)snprintf(big + k, cap - k, "%s\"k%06d\":\"v\"", i ? "," : "", i);
  k += (size_t)snprintf(big + k, cap - k, "},");
  for (int i = 0; i < MANY; i++)
    k += (size_t)snprintf(big + k, cap - k, "\"t%06d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},", i);
  snprintf(big + k, cap - k, "%s", h + 1);
  write_raw(big, v, DATA_BYTES / 4, 0);
  double t0 = seconds();
  real param[NUMEL];
  char err[ERRLEN];
  MetaList meta = { 0 };
  capture_stderr();
  int rc = ckpt_load(path, &model, param, NULL, 0, &meta, err);
  double t1 = seconds();
  const char *said = stderr_text();
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_msg(strstr(said, "200000 tensors that the model does not have, not read: t000000, t000001, ") &&
                strstr(said, ", ...\n"), "%s", said);
  ck_assert_int_eq(meta.nmeta, MANY);
  ck_assert_str_eq(meta_get(&meta, "k199999"), "v");
  meta_free(&meta);
  ck_assert_msg(ckpt_read_meta(path, &meta, err) == 0, "%s", err);
  ck_assert_int_eq(meta.nmeta, MANY);
  meta_free(&meta);
  printf("%d empty tensors and %d metadata keys (a %.1f MB header): loaded in %.2f s (bound 20 s)\n", MANY, MANY,
         (double)strlen(big) / 1e6, t1 - t0);
  ck_assert_double_lt(t1 - t0, 20);

  /* a repeat among them is still found */
  memcpy(strstr(big, "\"t123457\""), "\"t123456\"", 9);
  write_raw(big, v, DATA_BYTES / 4, 0);
  refused("tensor t123456 appears twice in the header");
  free(big);
}
END_TEST

/* A FIFO given as a checkpoint is refused, not waited on. */
START_TEST(test_refuses_fifo)
{
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  refused("not a regular file");
  unlink(path);
}
END_TEST

static Suite *checkpoint_suite(void)
{
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("checkpoint");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_load_via);
  tcase_add_test(tc, test_metadata);
  tcase_add_test(tc, test_accepts);
  tcase_add_test(tc, test_refuses_bad_files);
  tcase_add_test(tc, test_refuses_mismatches);
  tcase_add_test(tc, test_extra_blocks);
  tcase_add_test(tc, test_failed_save);
  tcase_add_test(tc, test_missing_file);
  tcase_add_test(tc, test_header_limits);
  tcase_add_test(tc, test_refuses_bad_utf8);
  tcase_add_test(tc, test_refuses_repeated_metadata);
  tcase_add_test(tc, test_refuses_bad_tiling);
  tcase_add_test(tc, test_refuses_bad_sizes);
  tcase_add_test(tc, test_refuses_fifo);
  suite_add_tcase(s, tc);
  TCase *many = tcase_create("many");   /* its own time limit: the old n^2 checks ran for minutes */
  tcase_add_checked_fixture(many, setup, teardown);
  tcase_set_timeout(many, 120);
  tcase_add_test(many, test_many_entries);
  suite_add_tcase(s, many);
  return s;
}

int main(void)
{
  return run_suite(checkpoint_suite());
}
