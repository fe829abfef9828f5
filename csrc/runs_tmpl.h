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

/* Runs of a channel summed together as one block: as many as fit in
   BNF_RUN_BLOCK elements (1 for runs of more than half of it). */
BNF_INLINE ptrdiff_t NAME(runs_per_block)(ptrdiff_t len)
{
    return len * 2 <= BNF_RUN_BLOCK ? BNF_RUN_BLOCK / len : 1;
}

/*
 * Per-channel mean and M2 over n1 runs of len elements, in one pass over
 * memory.  The numerics of rows_stats, along runs: shifted by the
 * channel's first finite value K (read again at each block, so no
 * scratch); each block (a piece of a long run, or several short runs of
 * the channel: runs_per_block) summed around a center c and corrected
 * (corrected two-pass); the channel's first block estimates c from a pass
 * over itself (from cache), later blocks use the running mean; blocks
 * merged with Chan's formula.  Blocks in memory order (block-outer,
 * channel-inner: a C-order NCHW batch is read front to back).
 */
void NAME(runs_stats)(const T *BNF_RESTRICT x, ptrdiff_t n1, ptrdiff_t s1,
                      ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,
                      double *BNF_RESTRICT mean, double *BNF_RESTRICT m2,
                      double *BNF_RESTRICT mean_lo)
{
    ptrdiff_t per = NAME(runs_per_block)(len);
    for (ptrdiff_t i0 = 0; i0 < n1; i0 += per) {
        ptrdiff_t nr = bnf_min(per, n1 - i0);
        double count = (double)i0 * (double)len;
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *run = x + i0 * s1 + j * s2;
            double k = (double)LOAD(x[j * s2]);
            k = bnf_isfinite(k) ? k : 0.0;
            if (per > 1)
                NAME(block_moments)(run, nr, s1, len, k, count, &mean[j],
                                    &m2[j]);
            else
                NAME(run_moments)(run, len, k, count, &mean[j], &m2[j]);
        }
    }
    for (ptrdiff_t j = 0; j < n2; j++) {
        double k = (double)LOAD(x[j * s2]), lo;
        mean[j] = bnf_two_sum(mean[j], bnf_isfinite(k) ? k : 0.0, &lo);
        if (mean_lo != NULL)
            mean_lo[j] = lo;
    }
}

/* y = (x - mh_j) * a_j + b_j along each run of channel j, in C, b_j =
   beta_j - ml_j * a_j (then max(y, 0) with relu; NaN stays NaN). */
void NAME(runs_apply)(const T *BNF_RESTRICT x, ptrdiff_t n1, ptrdiff_t s1,
                      ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,
                      NAME(bnf_coefs) cf, T *BNF_RESTRICT y, ptrdiff_t t1,
                      ptrdiff_t t2, int relu)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *BNF_RESTRICT p = x + i * s1 + j * s2;
            T *BNF_RESTRICT o = y + i * t1 + j * t2;
            C mh = cf.mh[j], a = cf.a[j], b = cf.b[j];
            if (relu) {
                for (ptrdiff_t e = 0; e < len; e++) {
                    C v = (LOAD(p[e]) - mh) * a + b;
                    o[e] = v <= RELU_MIN ? STORE(0) : STORE(v);
                }
            } else {
                for (ptrdiff_t e = 0; e < len; e++)
                    o[e] = STORE((LOAD(p[e]) - mh) * a + b);
            }
        }
}

/* The fused residual along runs: y = (x - mh_j) * a_j + b_j + z (then
   max(., 0) with relu); z NULL: the residual is y itself (out=residual),
   read before it is written. */
#define BNF_RES_RUN(ZV)                                                       \
    do {                                                                      \
        if (relu) {                                                           \
            for (ptrdiff_t e = 0; e < len; e++) {                             \
                C v = (LOAD(p[e]) - mh) * a + b + LOAD(ZV);                   \
                o[e] = v <= RELU_MIN ? STORE(0) : STORE(v);                   \
            }                                                                 \
        } else {                                                              \
            for (ptrdiff_t e = 0; e < len; e++)                               \
                o[e] = STORE((LOAD(p[e]) - mh) * a + b + LOAD(ZV));           \
        }                                                                     \
    } while (0)

void NAME(runs_apply_res)(const T *BNF_RESTRICT x, ptrdiff_t n1, ptrdiff_t s1,
                          ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,
                          const T *BNF_RESTRICT z, ptrdiff_t z1, ptrdiff_t z2,
                          NAME(bnf_coefs) cf, T *BNF_RESTRICT y, ptrdiff_t t1,
                          ptrdiff_t t2, int relu)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *BNF_RESTRICT p = x + i * s1 + j * s2;
            T *BNF_RESTRICT o = y + i * t1 + j * t2;
            C mh = cf.mh[j], a = cf.a[j], b = cf.b[j];
            if (z != NULL) {
                const T *BNF_RESTRICT q = z + i * z1 + j * z2;
                BNF_RES_RUN(q[e]);
            } else {
                BNF_RES_RUN(o[e]);
            }
        }
}
#undef BNF_RES_RUN

/* The fused residual's ReLU gate along runs: g = dy where the forward's
   (x - mh_j) * a_j + b_j + z > 0, else 0 */
void NAME(runs_gate_res)(const T *BNF_RESTRICT dy, ptrdiff_t d1, ptrdiff_t d2,
                         const T *BNF_RESTRICT x, ptrdiff_t s1, ptrdiff_t s2,
                         const T *BNF_RESTRICT z, ptrdiff_t z1, ptrdiff_t z2,
                         ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                         NAME(bnf_coefs) cf, T *BNF_RESTRICT g, ptrdiff_t t1,
                         ptrdiff_t t2)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *BNF_RESTRICT gd = dy + i * d1 + j * d2;
            const T *BNF_RESTRICT p = x + i * s1 + j * s2;
            const T *BNF_RESTRICT q = z + i * z1 + j * z2;
            T *BNF_RESTRICT o = g + i * t1 + j * t2;
            C mh = cf.mh[j], a = cf.a[j], b = cf.b[j];
            for (ptrdiff_t e = 0; e < len; e++)
                o[e] = STORE(BNF_GATE(LOAD(gd[e]),
                                      (LOAD(p[e]) - mh) * a + b + LOAD(q[e]),
                                      RELU_MIN));
        }
}

/* Per-channel sums of g and g * (x - mean_j), g = dy (masked by the
   forward's relu, see block_sums_bwd), in blocks as runs_stats': lanes
   within a block, blocks into the channel's totals.  float64: the blocks'
   sums compensated too (lanes_tmpl.h), their low parts in a scratch of
   2*n2 doubles when a channel has several blocks (without it, if it
   cannot be had, the blocks' sums are added plainly). */
void NAME(runs_bwd_reduce)(const T *BNF_RESTRICT dy, ptrdiff_t d1,
                           ptrdiff_t d2, const T *BNF_RESTRICT x, ptrdiff_t s1,
                           ptrdiff_t s2, ptrdiff_t n1, ptrdiff_t n2,
                           ptrdiff_t len, NAME(bnf_coefs) cf, int relu,
                           double *BNF_RESTRICT sum_dy,
                           double *BNF_RESTRICT sum_dyxmu)
{
    ptrdiff_t per = NAME(runs_per_block)(len);
    double *lo = NULL; /* the totals' low parts (float64) */
    if (!HILO && n1 > per)
        lo = calloc(2 * (size_t)n2, sizeof(double));
    for (ptrdiff_t j = 0; j < n2; j++)
        sum_dy[j] = sum_dyxmu[j] = 0.0;
    for (ptrdiff_t i0 = 0; i0 < n1; i0 += per) {
        ptrdiff_t nr = bnf_min(per, n1 - i0);
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *g = dy + i0 * d1 + j * d2;
            const T *p = x + i0 * s1 + j * s2;
            C mh = cf.mh[j], ml = HILO ? cf.ml[j] : 0;
            C ra = relu ? cf.a[j] : 0, rb = relu ? cf.b[j] : 0;
            double sl = 0.0, ql = 0.0;
            for (ptrdiff_t e0 = 0; e0 < len; e0 += BNF_RUN_BLOCK) {
                double s, q, es, eq;
                NAME(block_sums_bwd)(g + e0, d1, p + e0, s1, nr,
                                     bnf_min(BNF_RUN_BLOCK, len - e0), mh, ml,
                                     relu, ra, rb, &s, &q);
                if (HILO) {
                    sum_dy[j] += s;
                    sum_dyxmu[j] += q;
                } else {
                    sum_dy[j] = bnf_two_sum(sum_dy[j], s, &es);
                    sum_dyxmu[j] = bnf_two_sum(sum_dyxmu[j], q, &eq);
                    sl += es;
                    ql += eq;
                }
            }
            if (lo != NULL) {
                lo[j] += sl;
                lo[n2 + j] += ql;
            } else if (!HILO) {
                sum_dy[j] += sl;
                sum_dyxmu[j] += ql;
            }
        }
    }
    if (lo != NULL) {
        for (ptrdiff_t j = 0; j < n2; j++) {
            sum_dy[j] += lo[j];
            sum_dyxmu[j] += lo[n2 + j];
        }
        free(lo);
    }
}

/* dx = a_j * g + k_xhat_j * (x - mean_j) * is_j + k_0_j along each run, g
   as in runs_bwd_reduce; with k_xhat NULL (frozen statistics) a_j * g. */
void NAME(runs_bwd_apply)(const T *BNF_RESTRICT dy, ptrdiff_t d1, ptrdiff_t d2,
                          const T *BNF_RESTRICT x, ptrdiff_t s1, ptrdiff_t s2,
                          ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                          NAME(bnf_coefs) cf, int relu, T *BNF_RESTRICT dx,
                          ptrdiff_t t1, ptrdiff_t t2)
{
    for (ptrdiff_t i = 0; i < n1; i++)
        for (ptrdiff_t j = 0; j < n2; j++) {
            const T *BNF_RESTRICT g = dy + i * d1 + j * d2;
            const T *BNF_RESTRICT p = x + i * s1 + j * s2;
            T *BNF_RESTRICT o = dx + i * t1 + j * t2;
            C mh = cf.mh[j], ml = HILO ? cf.ml[j] : 0, a = cf.a[j];
            if (cf.k_xhat == NULL) { /* frozen statistics: dx = a * g */
                if (!relu) {
                    for (ptrdiff_t e = 0; e < len; e++)
                        o[e] = STORE(a * LOAD(g[e]));
                } else {
                    C rb = cf.b[j];
                    for (ptrdiff_t e = 0; e < len; e++)
                        o[e] = STORE(a * BNF_GATE(LOAD(g[e]),
                                                  (LOAD(p[e]) - mh) * a + rb,
                                                  RELU_MIN));
                }
                continue;
            }
            C is = cf.is[j], kx = cf.k_xhat[j], k0 = cf.k_0[j];
            if (!relu) {
                for (ptrdiff_t e = 0; e < len; e++) {
                    C xh = XMU(LOAD(p[e]), mh, ml) * is;
                    o[e] = STORE(a * LOAD(g[e]) + kx * xh + k0);
                }
            } else {
                C rb = cf.b[j];
                for (ptrdiff_t e = 0; e < len; e++) {
                    C d = LOAD(p[e]) - mh, xm = HILO ? d - ml : d;
                    C ge = BNF_GATE(LOAD(g[e]), d * a + rb, RELU_MIN);
                    o[e] = STORE(a * ge + kx * (xm * is) + k0);
                }
            }
        }
}
