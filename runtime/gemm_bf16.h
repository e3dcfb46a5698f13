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

/* The product on oneDNN's matmul (runtime/gemm_dnnl.c): 0, or -1 where
 * oneDNN is not installed or refuses the shape (y then untouched: every
 * primitive a call needs is made before y is written). */
int lmc_gemm_bf16_dnnl(int ta, int tb, int M, int N, int K, const lmc_bf16 *a, int lda, const lmc_bf16 *b, int ldb,
                       float beta, float *y, int ldy, int threads);

#endif
