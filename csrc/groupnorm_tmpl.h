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
        NAME(runs_stats)(xi, 1, 0, g, m, m, mean + i * g, m2);
        for (ptrdiff_t k = 0; k < g; k++)
            invstd[i * g + k] = 1.0 / sqrt(m2[k] / (double)m + eps);
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            ptrdiff_t k = i * g + ch / cg;
            double ak = gamma[ch] * invstd[k];
            NAME(gn_split)(mean[k], &mh[ch], &ml[ch]);
            a[ch] = (C)ak;
            b[ch] = (C)(beta[ch] - (double)ml[ch] * ak); /* as coefs_new */
        }
        NAME(runs_apply)(xi, 1, 0, c, hw, hw, cf, y + i * ys, 0, hw, 0);
    }
}

/* Threads split the samples (results bitwise the serial ones). */
int NAME(gn_forward)(const T *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                     ptrdiff_t hw, ptrdiff_t xs, const double *gamma,
                     const double *beta, double eps, T *y, ptrdiff_t ys,
                     double *mean, double *invstd)
{
    int nt = bnf_threads_for(n * c * hw);
    if (nt > n)
        nt = (int)n;
    /* per thread: c doubles, 4*c C values (<= 4*c doubles) */
    double *work = malloc(5 * (size_t)nt * (size_t)c * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n, nt, t, 1, &i0, &i1);
        NAME(gn_forward1)(x, i0, i1, c, g, hw, xs, gamma, beta, eps, y, ys,
                          mean, invstd, work + 5 * t * c);
    }
    free(work);
    return BNF_OK;
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
 * keep the rounding of a cascade, not of one running sum); work: 7*c
 * doubles and 6*c C values.
 */
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
    NAME(bnf_coefs) cf = {mh, HILO ? ml : NULL, a, NULL, is, kx, k0};
    for (ptrdiff_t ch = 0; ch < c; ch++)
        dgamma[ch] = dbeta[ch] = bg[ch] = bb[ch] = 0.0;
    double dm = (double)m;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *gi = dy + i * ds, *xi = x + i * xs;
        for (ptrdiff_t ch = 0; ch < c; ch++)
            NAME(gn_split)(mean[i * g + ch / cg], &mh[ch], &ml[ch]);
        NAME(runs_bwd_reduce)(gi, 0, hw, xi, 0, hw, 1, c, hw, cf, 0, s1, s2);
        for (ptrdiff_t k = 0; k < g; k++) {
            double isk = invstd[i * g + k], sa = 0.0, sb = 0.0;
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_dy[ch] = (double)(C)(isk * gamma[ch]); /* as a_ch */
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
        if ((i - i0 + 1) % BNF_SUM_ROWS == 0 || i == i1 - 1) {
            for (ptrdiff_t ch = 0; ch < c; ch++) {
                dgamma[ch] += bg[ch];
                dbeta[ch] += bb[ch];
                bg[ch] = bb[ch] = 0.0;
            }
        }
    }
}

/* Threads split the samples; their dgamma and dbeta are summed in thread
   order. */
int NAME(gn_backward)(const T *dy, ptrdiff_t ds, const T *x, ptrdiff_t xs,
                      ptrdiff_t n, ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                      const double *mean, const double *invstd,
                      const double *gamma, T *dx, ptrdiff_t ts,
                      double *dgamma, double *dbeta)
{
    int nt = bnf_threads_for(n * c * hw);
    if (nt > n)
        nt = (int)n;
    /* per thread: 7*c doubles, 6*c C values (<= 6*c doubles), dgamma and
       dbeta */
    const ptrdiff_t per = 15 * c;
    double *work = malloc((size_t)nt * (size_t)per * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        double *w = work + t * per;
        bnf_part(n, nt, t, 1, &i0, &i1);
        NAME(gn_backward1)(dy, ds, x, xs, i0, i1, c, g, hw, mean, invstd,
                           gamma, dx, ts, w + 13 * c, w + 14 * c, w);
    }
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        dgamma[ch] = dbeta[ch] = 0.0;
        for (int t = 0; t < nt; t++) {
            dgamma[ch] += work[t * per + 13 * c + ch];
            dbeta[ch] += work[t * per + 14 * c + ch];
        }
    }
    free(work);
    return BNF_OK;
}
