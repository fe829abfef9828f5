/* Template body of the along-runs kernels; included by runs.c once per
   dtype through instantiate.h (T the data type, NAME(f) the name).

   The data is n2 channels of n1 contiguous runs of len elements each: run i
   of channel j starts at x + i*s1 + j*s2.  Statistics and backward sums are
   per channel, over its n1*len elements; the apply passes use per-channel
   coefficients.  Sums along a run go into BNF_LANES independent lane
   accumulators (vectorized, fixed order, no reassociation by the compiler)
   combined by a fixed pairwise tree, within blocks of at most
   BNF_RUN_BLOCK elements. */

#include "lanes_tmpl.h"

/*
 * Per-channel mean and M2 over n1 runs of len elements, in one pass over
 * memory, visiting runs in memory order (run-outer, channel-inner: a C-order
 * NCHW batch is read sequentially).  The numerics of rows_stats, along
 * runs: shifted by the channel's first finite value K (read again at each
 * run, so no scratch); each block of a run summed around a center c and
 * corrected (corrected two-pass); the channel's first block estimates c
 * from a pass over itself (from L1), later blocks use the running mean;
 * blocks merged with Chan's formula.
 */
BNF_DISPATCH
void NAME(runs_stats)(const T *restrict x, ptrdiff_t n1, ptrdiff_t s1,
                      ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,
                      double *restrict mean, double *restrict m2)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *run = x + i * s1 + j * s2;
            double k = (double)x[j * s2];
            k = bnf_isfinite(k) ? k : 0.0;
            NAME(run_moments)(run, len, k, (double)i * (double)len,
                              &mean[j], &m2[j]);
        }
    for (ptrdiff_t j = 0; j < n2; j++) {
        double k = (double)x[j * s2];
        mean[j] += bnf_isfinite(k) ? k : 0.0;
    }
}

/* y = (x - mean_j) * scale_j + shift_j along each run of channel j (then
   max(y, 0) with relu; NaN stays NaN). */
BNF_DISPATCH
void NAME(runs_apply)(const T *restrict x, ptrdiff_t n1, ptrdiff_t s1,
                      ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,
                      const double *restrict mean,
                      const double *restrict scale,
                      const double *restrict shift, T *restrict y,
                      ptrdiff_t t1, ptrdiff_t t2, int relu)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *restrict p = x + i * s1 + j * s2;
            T *restrict o = y + i * t1 + j * t2;
            double mu = mean[j], a = scale[j], b = shift[j];
            if (relu) {
                for (ptrdiff_t e = 0; e < len; e++) {
                    T v = (T)(((double)p[e] - mu) * a + b);
                    o[e] = v <= 0 ? 0 : v; /* vectorizes; see rows_apply */
                }
            } else {
                for (ptrdiff_t e = 0; e < len; e++)
                    o[e] = (T)(((double)p[e] - mu) * a + b);
            }
        }
}

/* Per-channel sums of g and g * (x - mean_j), g = dy (masked by the
   forward's relu when ra != NULL, see block_sums_bwd), runs in memory
   order: lanes within a block, blocks into the channel's totals. */
BNF_DISPATCH
void NAME(runs_bwd_reduce)(const T *restrict dy, ptrdiff_t d1, ptrdiff_t d2,
                           const T *restrict x, ptrdiff_t s1, ptrdiff_t s2,
                           ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                           const double *restrict mean,
                           const double *restrict ra,
                           const double *restrict rb,
                           double *restrict sum_dy,
                           double *restrict sum_dyxmu)
{
    for (ptrdiff_t j = 0; j < n2; j++)
        sum_dy[j] = sum_dyxmu[j] = 0.0;
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *g = dy + i * d1 + j * d2;
            const T *p = x + i * s1 + j * s2;
            for (ptrdiff_t e0 = 0; e0 < len; e0 += BNF_RUN_BLOCK) {
                double s, q;
                NAME(block_sums_bwd)(g + e0, p + e0,
                                     bnf_min(BNF_RUN_BLOCK, len - e0),
                                     mean[j], ra != NULL,
                                     ra != NULL ? ra[j] : 0.0,
                                     rb != NULL ? rb[j] : 0.0, &s, &q);
                sum_dy[j] += s;
                sum_dyxmu[j] += q;
            }
        }
}

/* dx = k_dy_j * g + k_xmu_j * (x - mean_j) + k_0_j along each run, g as in
   runs_bwd_reduce. */
BNF_DISPATCH
void NAME(runs_bwd_apply)(const T *restrict dy, ptrdiff_t d1, ptrdiff_t d2,
                          const T *restrict x, ptrdiff_t s1, ptrdiff_t s2,
                          ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                          const double *restrict mean,
                          const double *restrict ra,
                          const double *restrict rb,
                          const double *restrict k_dy,
                          const double *restrict k_xmu,
                          const double *restrict k_0, T *restrict dx,
                          ptrdiff_t t1, ptrdiff_t t2)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *restrict g = dy + i * d1 + j * d2;
            const T *restrict p = x + i * s1 + j * s2;
            T *restrict o = dx + i * t1 + j * t2;
            double mu = mean[j], a = k_dy[j], b = k_xmu[j], c0 = k_0[j];
            if (ra == NULL) {
                for (ptrdiff_t e = 0; e < len; e++)
                    o[e] = (T)(a * (double)g[e] + b * ((double)p[e] - mu) +
                               c0);
            } else {
                double wa = ra[j], wb = rb[j];
                for (ptrdiff_t e = 0; e < len; e++) {
                    double xm = (double)p[e] - mu, gv = (double)g[e];
                    double ge = gv * (double)(xm * wa + wb > RELU_MIN);
                    o[e] = (T)(a * ge + b * xm + c0);
                }
            }
        }
}
