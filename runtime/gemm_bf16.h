/*
 * gemm_bf16.h: the paths of runtime/gemm_bf16.c one by one, for
 * tests/check_gemm_bf16.c and bench/peak.c, which hold each against the
 * portable one; the emitted code and the trainer call lmc_gemm_bf16
 * (lmc_rt.h), which picks the path.
 */
#ifndef GEMM_BF16_H
#define GEMM_BF16_H

#include "lmc_rt.h"

/* The portable forms: the reference the fast paths are held to. */
void lmc_to_bf16_c(const float *x, lmc_bf16 *y, size_t n);
void lmc_gemm_bf16_c(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                     float beta, float *y, int ldy);

/* y = a b^T (ta 0, tb 1) of any M on vdpbf16ps (runtime/gemm_bf16.c), b
 * read once per two rows of a: 0, or -1 where the CPU lacks AVX512_BF16
 * or the transposes are others.  lmc_gemm_bf16 takes it for M <=
 * LMC_BF16_FEW (generation's one row), on one thread. */
enum { LMC_BF16_FEW = 2 };
int lmc_gemm_bf16_few(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                      float beta, float *y, int ldy);

/* The product on oneDNN's matmul (runtime/gemm_dnnl.c): 0, or -1 where
 * oneDNN is not installed or refuses the shape (y then untouched: every
 * primitive a call needs is made before y is written). */
int lmc_gemm_bf16_dnnl(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                       float beta, float *y, int ldy, int threads);

#endif
