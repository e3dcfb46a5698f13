/*
 * sample.c: one word drawn from the log-probabilities of the gen program,
 * generate.py's torch.multinomial(exp(logp / temperature), 1), narrowed as
 * people usually narrow it, in this order:
 *   1. temperature: weights exp((logp - max) / temperature);
 *   2. top-k: only the k heaviest words;
 *   3. top-p (nucleus): of those, the fewest, heaviest first, whose weights
 *      reach p times their sum (the probability renormalised over the k);
 *   4. the draw, over what is left, renormalised.
 * Equal weights rank by word id, lowest first, so --top-k 1 (or a tiny
 * top-p) is the argmax at any temperature.
 *
 * Ranking all of a 33278-word vocabulary for every word would cost more
 * than the model's step, so the words are first put in buckets by the
 * binary exponent of their weight (weights lie in (0, 1]; a bucket holds
 * one octave, heaviest first); only the buckets down to the one that
 * completes k words (or p of the weight, and one bucket more for the
 * rounding of the sums) are sorted.
 */
#include <math.h>
#include <stdlib.h>

#include "rt.h"

enum { NBUCKET = 256 };

/* exp((logp - max) / temperature) into w, by the softmax kernels'
 * vectorised exp (libm's exp took a tenth of a word's time); returns
 * their sum. */
static double weights(const real *logp, int n, double temperature, real *w)
{
  real mx = lmc_row_max(logp, n);
  if (temperature == 1)
    return lmc_exp_sum_to(w, logp, n, mx);
  for (int v = 0; v < n; v++) w[v] = (real)(logp[v] / temperature);
  return lmc_exp_sum_inplace(w, n, (real)(mx / temperature));
}

/* The octave of x in (0, 1]: 0 for [0.5, 1], 1 for [0.25, 0.5), ... */
static int bucket(real x)
{
  int b = -ilogb(x);
  return b < NBUCKET ? b : NBUCKET - 1;
}

static int heavier_first(const void *pa, const void *pb)
{
  const SampleCand *a = pa, *b = pb;
  if (a->w != b->w) return a->w > b->w ? -1 : 1;
  return (a->v > b->v) - (a->v < b->v);
}

/* The words rule r keeps, heaviest first, into cand; returns how many
 * (at least one: the heaviest weighs 1). */
static int narrow(const real *w, int n, const SampleRule *r, double total, SampleCand *cand)
{
  double mass[NBUCKET] = { 0 };
  int count[NBUCKET] = { 0 };
  for (int v = 0; v < n; v++)
    if (w[v] > 0) {
      int b = bucket(w[v]);
      mass[b] += w[v];
      count[b]++;
    }
  bool by_k = r->top_k > 0 && r->top_k < n;
  int last = 0, have = 0;
  double acc = 0;
  for (; last < NBUCKET; last++) {
    have += count[last], acc += mass[last];
    if (by_k ? have >= r->top_k : acc >= r->top_p * total) break;
  }
  if (!by_k && last < NBUCKET - 1) last++;   /* the sums' rounding: one octave more */
  int m = 0;
  for (int v = 0; v < n; v++)
    if (w[v] > 0 && bucket(w[v]) <= last) cand[m++] = (SampleCand){ w[v], v };
  qsort(cand, (size_t)m, sizeof *cand, heavier_first);
  if (by_k && m > r->top_k) m = r->top_k;
  if (r->top_p < 1) {
    double sum = 0, at;
    for (int i = 0; i < m; i++) sum += cand[i].w;
    at = r->top_p * sum;
    acc = 0;
    for (int i = 0; i < m; i++)
      if ((acc += cand[i].w) >= at) return i + 1;
  }
  return m;
}

int sample_word(const real *logp, int n, const SampleRule *r, double u, real *w, SampleCand *cand)
{
  double total = weights(logp, n, r->temperature, w);
  if ((r->top_k > 0 && r->top_k < n) || r->top_p < 1) {
    int m = narrow(w, n, r, total, cand);
    double sum = 0, acc = 0;
    for (int i = 0; i < m; i++) sum += cand[i].w;
    for (int i = 0; i < m; i++)
      if ((acc += cand[i].w) > u * sum) return cand[i].v;
    return cand[m - 1].v;   /* rounding: the lightest kept */
  }
  /* the first word whose running sum of weights passes u times their
   * total; words of weight 0 are never drawn */
  double at = u * total, acc = 0;
  for (int v = 0; v < n; v++)
    if ((acc += w[v]) > at && w[v] > 0)
      return v;
  for (int v = n - 1; v > 0; v--)   /* rounding: the last word of weight > 0 */
    if (w[v] > 0)
      return v;
  return 0;
}
