/* Template body of the group norm entry points; included by groupnorm.c
   once per dtype through instantiate.h (T the data type, NAME(f) the name).

   x is n samples of c channels of hw elements; each sample is contiguous
   ((c, hw) in C order) and samples are xs elements apart.  The c channels
   form g groups of c/g adjacent channels; statistics are per (sample,
   group), over a contiguous block of m = (c/g)*hw elements; gamma and beta
   are per channel.  Built from the along-runs kernels, one sample at a
   time (a sample's planes stay in cache between the backward's two
   passes). */

/* The mean of channel ch of sample i, split into C values mh + ml (ml 0
   for double, where it is never read). */
BNF_INLINE void NAME(gn_split)(double mean, C *mh, C *ml)
{
    *mh = (C)mean;
    *ml = bnf_isfinite((double)*mh) ? (C)(mean - (double)*mh) : (C)0;
}

/* Samples [i0, i1) of the forward; work: c doubles and 4*c C values. */
static void NAME(gn_forward1)(const T *x, ptrdiff_t i0, ptrdiff_t i1,
                              ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                              ptrdiff_t xs, const double *gamma,
                              const double *beta, double eps, T *y,
                              ptrdiff_t ys, double *mean, double *invstd,
                              double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *m2 = work;
    C *mh = (C *)(work + c), *ml = mh + c, *a = ml + c, *b = a + c;
    NAME(bnf_coefs) cf = {mh, HILO ? ml : NULL, a, b, NULL, NULL, NULL};
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *xi = x + i * xs;
        NAME(runs_stats)(xi, 1, 0, g, m, m, mean + i * g, m2, NULL);
        for (ptrdiff_t k = 0; k < g; k++)
            invstd[i * g + k] = 1.0 / sqrt(m2[k] / (double)m + eps);
        /* squares out of range: the group again, scaled
           (extremes_tmpl.h) */
        int any = 0;
        for (ptrdiff_t k = 0; k < g; k++)
            any |= bnf_suspect(mean[i * g + k], m2[k] / (double)m, eps,
                               BNF_TINY_VAR(C));
        for (ptrdiff_t k = 0; BNF_RARELY(any) && k < g; k++)
            if (bnf_suspect(mean[i * g + k], m2[k] / (double)m, eps,
                            BNF_TINY_VAR(C)))
                NAME(rescue_moments)(xi + k * m, 1, 0, m, eps,
                                     &mean[i * g + k], &m2[k],
                                     &invstd[i * g + k]);
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            ptrdiff_t k = i * g + ch / cg;
            double ak = BNF_GAMMA(gamma, ch) * invstd[k];
            NAME(gn_split)(mean[k], &mh[ch], &ml[ch]);
            a[ch] = (C)ak;
            /* as coefs_new */
            b[ch] = (C)(BNF_BETA(beta, ch) - (double)ml[ch] * ak);
        }
        NAME(runs_apply)(xi, 1, 0, c, hw, hw, cf, y + i * ys, 0, hw, 0);
    }
}

/* The entry points split the samples among threads (bnf_run, internal.h):
   the forward's results are bitwise the serial ones; the backward's
   per-thread dgamma and dbeta are summed in thread order. */
typedef struct {
    const bnf_panel *p;
    const bnf_params *q;
    const T *x, *dy;
    T *y; /* y or dx */
    bnf_results *r;
} NAME(gn_job);

/* samples [i0, i1); part: their scratch */
static int NAME(gn_forward_samples)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                    double *part)
{
    const NAME(gn_job) *j = ctx;
    const bnf_panel *p = j->p;
    const bnf_params *q = j->q;
    NAME(gn_forward1)(j->x, i0, i1, p->n2, q->groups, p->len, p->x.s1,
                      q->gamma, q->beta, q->eps, j->y, p->y.s1, j->r->mean,
                      j->r->invstd, part);
    return BNF_OK;
}

/* The group norm entry points' launcher (NCHW and channels-last): task
   over the p->n1 samples, split across threads (at most one per sample),
   per scratch doubles per thread; with dy (a backward), the threads'
   dgamma and dbeta (p->n2 each) summed in thread order. */
static int NAME(gn_launch)(const bnf_panel *p, const bnf_params *q, const T *x,
                           const T *dy, T *y, bnf_results *r, bnf_task task,
                           ptrdiff_t per)
{
    ptrdiff_t n = p->n1, c = p->n2;
    int nt = bnf_threads_for(n * c * p->len * (ptrdiff_t)sizeof(T));
    if (nt > n)
        nt = (int)n;
    NAME(gn_job) j = {p, q, x, dy, y, r};
    bnf_split s = {.nt = nt, .n = n, .task = task, .ctx = &j, .per = per};
    if (dy != NULL) {
        s.merge = BNF_MERGE_SUMS;
        s.k = 2;
        s.m = c;
        s.out[0] = r->dgamma;
        s.out[1] = r->dbeta;
    }
    return bnf_run(&s);
}

int NAME(gn_forward)(const bnf_panel *p, const bnf_params *q, const T *x, T *y,
                     bnf_results *r)
{
    /* per thread: c doubles, 4*c C values (<= 4*c doubles) */
    return NAME(gn_launch)(p, q, x, NULL, y, r, NAME(gn_forward_samples),
                           5 * p->n2);
}

/*
 * Per group, with is = 1/std, a_ch = is * gamma_ch and the channel sums
 * s1 = sum dy, s2 = sum dy * (x - mean):
 *   A = sum_ch a_ch * s1_ch, B = sum_ch a_ch * s2_ch   (is * the sums of
 *   dxhat and dxhat * (x - mean)),
 *   dx = a_ch * dy - A / m - xhat * is * B / m,  xhat = (x - mean) * is;
 * dbeta_ch = sum over samples of s1_ch, dgamma_ch of is * s2_ch.  Forming
 * A from a_ch (as dx's first term) makes groups of one element give
 * dx == 0 exactly.  Samples [i0, i1), their dgamma and dbeta into the given
 * arrays, summed over blocks of BNF_SUM_ROWS samples first (long batches
 * keep the rounding of a cascade, not of one running sum; float64: blocks
 * of BNF_FLUSH samples added compensated (bnf_two_sum), as the lanes'
 * sums: a repeated dy over 32769 samples was 30x the reference's error);
 * work: 9*c doubles and 6*c C values.
 */
/* A block of samples' dgamma and dbeta sums (bg, bb; zeroed) into the
   totals: plain for float32 data, compensated for float64 (the low parts
   into lg, lb, added at the end by the caller). */
BNF_INLINE void NAME(gn_add_block)(ptrdiff_t c, double *bg, double *bb,
                                   double *dgamma, double *dbeta, double *lg,
                                   double *lb)
{
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        if (HILO) {
            dgamma[ch] += bg[ch];
            dbeta[ch] += bb[ch];
        } else {
            double eg, eb;
            dgamma[ch] = bnf_two_sum(dgamma[ch], bg[ch], &eg);
            dbeta[ch] = bnf_two_sum(dbeta[ch], bb[ch], &eb);
            lg[ch] += eg;
            lb[ch] += eb;
        }
        bg[ch] = bb[ch] = 0.0;
    }
}

#define GN_SUM (HILO ? BNF_SUM_ROWS : BNF_FLUSH)
static void NAME(gn_backward1)(const T *dy, ptrdiff_t ds, const T *x,
                               ptrdiff_t xs, ptrdiff_t i0, ptrdiff_t i1,
                               ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                               const double *mean, const double *invstd,
                               const double *gamma, T *dx, ptrdiff_t ts,
                               double *dgamma, double *dbeta, double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *s1 = work, *s2 = work + c;
    double *k_dy = work + 2 * c, *k_xhat = work + 3 * c, *k_0 = work + 4 * c;
    double *bg = work + 5 * c, *bb = work + 6 * c; /* the block's sums */
    C *mh = (C *)(work + 7 * c), *ml = mh + c, *a = ml + c, *is = a + c;
    C *kx = is + c, *k0 = kx + c;
    double *lg = work + 13 * c, *lb = work + 14 * c; /* float64: low parts */
    NAME(bnf_coefs) cf = {mh, HILO ? ml : NULL, a, NULL, is, kx, k0};
    for (ptrdiff_t ch = 0; ch < c; ch++)
        dgamma[ch] = dbeta[ch] = bg[ch] = bb[ch] = lg[ch] = lb[ch] = 0.0;
    double dm = (double)m;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *gi = dy + i * ds, *xi = x + i * xs;
        for (ptrdiff_t ch = 0; ch < c; ch++)
            NAME(gn_split)(mean[i * g + ch / cg], &mh[ch], &ml[ch]);
        NAME(runs_bwd_reduce)(gi, 0, hw, xi, 0, hw, 1, c, hw, cf, 0, s1, s2);
        for (ptrdiff_t k = 0; k < g; k++) {
            double isk = invstd[i * g + k], sa = 0.0, sb = 0.0;
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                /* as a_ch */
                k_dy[ch] = (double)(C)(isk * BNF_GAMMA(gamma, ch));
                double st[2]; /* sum dy, sum dy * xhat */
                if (BNF_RARELY(
                        !(bnf_isfinite(s1[ch]) && bnf_isfinite(s2[ch]))) &&
                    NAME(rescue_bwd_sums)(gi + ch * hw, 0, xi + ch * hw, 0, 1,
                                          hw, mean[i * g + k], isk, NULL, NULL,
                                          &st[0], &st[1])) {
                    /* x - mean of ~1e308, C sums of float32 past ~3e38:
                       again, scaled (extremes_tmpl.h) */
                    sa += k_dy[ch] * st[0];
                    sb += (k_dy[ch] / isk) * st[1];
                    bb[ch] += st[0];
                    bg[ch] += st[1];
                    continue;
                }
                sa += k_dy[ch] * s1[ch];
                sb += k_dy[ch] * s2[ch];
                bb[ch] += s1[ch];
                bg[ch] += isk * s2[ch];
            }
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_0[ch] = -sa / dm;
                k_xhat[ch] = -isk * sb / dm;
                a[ch] = (C)k_dy[ch];
                is[ch] = (C)isk;
                kx[ch] = (C)k_xhat[ch];
                k0[ch] = (C)k_0[ch];
            }
        }
        NAME(runs_bwd_apply)(gi, 0, hw, xi, 0, hw, 1, c, hw, cf, 0,
                             dx + i * ts, 0, hw);
        if ((i - i0 + 1) % GN_SUM == 0 || i == i1 - 1)
            NAME(gn_add_block)(c, bg, bb, dgamma, dbeta, lg, lb);
    }
    for (ptrdiff_t ch = 0; !HILO && ch < c; ch++) {
        dgamma[ch] += lg[ch];
        dbeta[ch] += lb[ch];
    }
}

#undef GN_SUM

/* samples [i0, i1); part: their dgamma and dbeta, then their scratch */
static int NAME(gn_backward_samples)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                     double *part)
{
    const NAME(gn_job) *j = ctx;
    const bnf_panel *p = j->p;
    const bnf_params *q = j->q;
    ptrdiff_t c = p->n2;
    NAME(gn_backward1)(j->dy, p->dy.s1, j->x, p->x.s1, i0, i1, c, q->groups,
                       p->len, q->mean, q->invstd, q->gamma, j->y, p->y.s1,
                       part, part + c, part + 2 * c);
    return BNF_OK;
}

int NAME(gn_backward)(const bnf_panel *p, const bnf_params *q, const T *x,
                      const T *dy, T *dx, bnf_results *r)
{
    /* per thread: dgamma and dbeta, 7*c doubles, 6*c C values (<= 6*c
       doubles), 2*c doubles */
    return NAME(gn_launch)(p, q, x, dy, dx, r, NAME(gn_backward_samples),
                           17 * p->n2);
}

/* the channels-last entry points (gnl_*), sharing gn_split and gn_job */
#include "groupnorm_last_tmpl.h"
