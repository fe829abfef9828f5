/* Template body of the rescue kernels for the extremes of the range;
   included by extremes.c once per dtype through instantiate.h (T the
   storage type, C the compute type, NAME(f) the name).

   The fast kernels square deviations (statistics) and multiply them by dy
   (the backward's sums) in C, unscaled: finite data whose squares
   overflow (float64 |x - mean| above ~1e154, float32 above ~1e19 in the
   backward's C sums) or underflow (a spread below ~1e-154, float32
   ~1e-19, that matters with a tiny eps) would give a NaN, infinite or
   inexact channel.  The entry points check each channel's results once
   (bnf_suspect, internal.h: a few comparisons per channel, nothing per
   element, in loops of their own or after the row loop, so that the hot
   loops compile as before) and hand the rare suspect channel to these
   kernels, which read it again in double, scaled by a power of two (exact
   but for values that underflow, negligible beside the channel's largest)
   so that nothing leaves the range.  A channel that holds a NaN or an Inf
   is left as the fast kernels computed it (the scan stops at the first
   such value).

   The channel is n1 runs of len elements, run i at x + i*s1 (a column of
   an across-rows panel: len 1, s1 the row stride).  Sums are compensated
   (ksum below). */

/* v * 2**e for |e| <= 2046 in two steps (2**e itself may not be a
   double), per element; ldexp per channel */
BNF_INLINE double NAME(scale2)(double v, int e)
{
    int h = e / 2;
    return (v * ldexp(1.0, h)) * ldexp(1.0, e - h);
}

/* A compensated (Neumaier) sum: right to rounding whatever the terms (a
   plain or cascaded sum that adds many small terms to a lone huge one
   rounds each of them at the huge one's scale: 7 ulps of a variance). */
typedef struct {
    double s, c;
} NAME(ksum);

BNF_INLINE void NAME(ksum_add)(NAME(ksum) *k, double v)
{
    double t = k->s + v;
    k->c += fabs(k->s) >= fabs(v) ? (k->s - t) + v : (v - t) + k->s;
    k->s = t;
}

BNF_INLINE double NAME(ksum_total)(const NAME(ksum) *k) { return k->s + k->c; }

/*
 * Mean, variance and 1/sqrt(var + eps) of one channel, scaled: x * 2**-e
 * with max |x| * 2**-e in [0.5, 1), its mean, then its M2 by the
 * corrected two-pass algorithm (compensated sums); then mean = mean_s *
 * 2**e (exact), var = var_s * 4**e (+Inf beyond the range: the math's
 * variance is not a double, and neither is the running variance it
 * updates), invstd = 2**-e / sqrt(var_s + eps * 4**-e).  A constant
 * channel gives its value and var 0 after the first pass.  Returns 0,
 * writing nothing, when the channel holds a NaN or an Inf.
 */
int NAME(rescue_moments)(const T *x, ptrdiff_t n1, ptrdiff_t s1, ptrdiff_t len,
                         double eps, double *mean, double *var, double *invstd)
{
    double x0 = (double)LOAD(x[0]), amax = 0.0;
    int same = 1, e;
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t k = 0; k < len; k++) {
            double v = (double)LOAD(x[i * s1 + k]);
            if (!bnf_isfinite(v))
                return 0;
            amax = fmax(amax, fabs(v));
            same &= v == x0;
        }
    if (same) {
        *mean = x0;
        *var = 0.0;
        *invstd = 1.0 / sqrt(eps);
        return 1;
    }
    frexp(amax, &e);
    double n = (double)n1 * (double)len;
    NAME(ksum) sm = {0}, sd = {0}, sq = {0};
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t k = 0; k < len; k++)
            NAME(ksum_add)(&sm, NAME(scale2)((double)LOAD(x[i * s1 + k]), -e));
    double ms = NAME(ksum_total)(&sm) / n;
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t k = 0; k < len; k++) {
            double d = NAME(scale2)((double)LOAD(x[i * s1 + k]), -e) - ms;
            NAME(ksum_add)(&sd, d);
            NAME(ksum_add)(&sq, d * d);
        }
    double s = NAME(ksum_total)(&sd), t = s / n;
    double m2 = NAME(ksum_total)(&sq) - s * t;
    double vs = (m2 < 0.0 ? 0.0 : m2) / n;
    *mean = ldexp(ms, e);
    *var = ldexp(vs, 2 * e);
    *invstd = ldexp(1.0 / sqrt(vs + ldexp(eps, -2 * e)), -e);
    return 1;
}

/*
 * The backward's sums over one channel, in double and scaled: sum g and
 * sum g * xhat, xhat = (x - mean) * is formed as (x * 2**f - mean * 2**f)
 * * (is * 2**-f) with is * 2**-f in [0.5, 1), so that neither x - mean
 * nor the products leave the range; g = dy * w[k] (w NULL: 1; layer norm:
 * gamma along the row), with cf non-NULL (relu) counted only where the
 * forward's (x - mh) * a + b in C was positive (as the fast kernels:
 * cf.mh, cf.a, cf.b of this channel).  Returns 0, writing nothing, when
 * is is 0 or not finite, or dy or x holds a NaN or an Inf.
 */
int NAME(rescue_bwd_sums)(const T *dy, ptrdiff_t d1, const T *x, ptrdiff_t s1,
                          ptrdiff_t n1, ptrdiff_t len, double mean, double is,
                          const C *w, const NAME(bnf_coefs) *cf, double *sum_g,
                          double *sum_gxhat)
{
    int f;
    if (!(bnf_isfinite(is) && is > 0.0 && bnf_isfinite(mean)))
        return 0;
    double isf = frexp(is, &f); /* is = isf * 2**f */
    double mf = ldexp(mean, f);
    NAME(ksum) sg = {0}, sx = {0};
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t k = 0; k < len; k++) {
            double xv = (double)LOAD(x[i * s1 + k]);
            double gv = (double)LOAD(dy[i * d1 + k]);
            if (!(bnf_isfinite(xv) && bnf_isfinite(gv)))
                return 0;
            if (w != NULL)
                gv *= (double)w[k];
            if (cf != NULL) {
                C v = (LOAD(x[i * s1 + k]) - cf->mh[0]) * cf->a[0] + cf->b[0];
                gv = v > RELU_MIN ? gv : 0.0;
            }
            double xh = (NAME(scale2)(xv, f) - mf) * isf;
            NAME(ksum_add)(&sg, gv);
            NAME(ksum_add)(&sx, gv * xh);
        }
    *sum_g = NAME(ksum_total)(&sg);
    *sum_gxhat = NAME(ksum_total)(&sx);
    return 1;
}

/*
 * RMS norm's statistics of one row of len elements, scaled: x * 2**-e
 * with max |x| * 2**-e in [0.5, 1), the mean of its squares (compensated
 * sum), then ms = ms_s * 4**e (+Inf beyond the range) and invrms = 2**-e
 * / sqrt(ms_s + eps * 4**-e).  An all-zero row gives ms 0.  Returns 0,
 * writing nothing, when the row holds a NaN or an Inf.
 */
int NAME(rescue_meansq)(const T *x, ptrdiff_t len, double eps, double *ms,
                        double *invrms)
{
    double amax = 0.0;
    int e;
    for (ptrdiff_t k = 0; k < len; k++) {
        double v = (double)LOAD(x[k]);
        if (!bnf_isfinite(v))
            return 0;
        amax = fmax(amax, fabs(v));
    }
    if (amax == 0.0) {
        *ms = 0.0;
        *invrms = 1.0 / sqrt(eps);
        return 1;
    }
    frexp(amax, &e);
    NAME(ksum) sq = {0};
    for (ptrdiff_t k = 0; k < len; k++) {
        double d = NAME(scale2)((double)LOAD(x[k]), -e);
        NAME(ksum_add)(&sq, d * d);
    }
    double mss = NAME(ksum_total)(&sq) / (double)len;
    *ms = ldexp(mss, 2 * e);
    *invrms = ldexp(1.0 / sqrt(mss + ldexp(eps, -2 * e)), -e);
    return 1;
}
