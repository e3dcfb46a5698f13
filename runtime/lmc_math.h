/*
 * lmc_math.h: float exp and tanh that vectorise.  libm's expf and tanhf
 * are one call per element; these are branch-free arithmetic (selects,
 * no calls) that clang and gcc turn into four or eight lanes at -O3, for
 * the softmax rows and the recurrent gates of the emitted kernels.  The
 * compiler's fold-constants pass uses them too, so that a folded value is
 * the one the kernel would compute.  Accuracy against libm:
 * tests/check_math.c.
 */
#ifndef LMC_MATH_H
#define LMC_MATH_H

#include <math.h>
#include <stdint.h>

/* exp for float, branch-free so that loops calling it vectorise (four or
 * eight lanes where libm's expf is one call per element): round x / ln 2
 * to n, r = x - n ln 2 in two parts (Cody-Waite), exp(r) by the Cephes
 * degree-6 polynomial, times 2^n built in the exponent bits.  Within 4.2
 * ulp of libm's expf over [-87.3, 88.7] (tests/check_math.c); 0 below
 * ln(FLT_MIN) where expf returns subnormals, inf above ln(FLT_MAX), NaN
 * for NaN.  Used by the softmax kernels and sigmoid; the exp op keeps
 * libm's (it builds tables such as the positional encoding, which
 * fold-constants computes with libm at compile time). */
static inline float lmc_expf(float x)
{
  union { float f; uint32_t u; } s;
  float xc = x < -87.33654f ? -87.33654f : x;
  xc = xc > 88.72283f ? 88.72283f : xc;
  xc = xc == xc ? xc : 0.0f;
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* 1.5 * 2^23 rounds */
  n = n > 127.0f ? 127.0f : n;
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  s.u = (uint32_t)((int32_t)n + 127) << 23;
  float y = p * s.f;
  y = x < -87.33654f ? 0.0f : y;
  y = x > 88.72283f ? INFINITY : y;
  return x == x ? y : x;
}

/* tanh for float from lmc_expf, vectorisable: 1 - 2 / (exp(2|x|) + 1)
 * with x's sign, and below |x| = 0.4, where that difference cancels,
 * tanh's series to x^11.  Odd, within 6 ulp of libm's tanhf
 * (tests/check_math.c); the LSTM, GRU and RNN_TANH gates use it. */
static inline float lmc_tanhf(float x)
{
  float t = 1.0f - 2.0f / (lmc_expf(2.0f * fabsf(x)) + 1.0f);   /* odd: on |x| */
  t = x < 0 ? -t : t;
  float x2 = x * x;
  float p = -0.00886323552f;               /* -1382/155925 */
  p = p * x2 + 0.0218694885f;              /* 62/2835 */
  p = p * x2 - 0.0539682540f;              /* 17/315 */
  p = p * x2 + 0.133333333f;               /* 2/15 */
  p = p * x2 - 0.333333333f;
  p = x + x * x2 * p;
  return x < 0.4f && x > -0.4f ? p : t;
}

#endif
