/* Template body of the group norm entry points; included by groupnorm.c
   once per dtype through instantiate.h (T the data type, NAME(f) the name).

   x is n samples of c channels of hw elements; each sample is contiguous
   ((c, hw) in C order) and samples are xs elements apart.  The c channels
   form g groups of c/g adjacent channels; statistics are per (sample,
   group), over a contiguous block of m = (c/g)*hw elements; gamma and beta
   are per channel.  Built from the along-runs kernels, one sample at a
   time (a sample's planes stay in cache between the backward's two
   passes). */

/* Samples [i0, i1) of the forward; work: 3*c doubles. */
static void NAME(gn_forward1)(const T *x, ptrdiff_t i0, ptrdiff_t i1,
                              ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                              ptrdiff_t xs, const double *gamma,
                              const double *beta, double eps, T *y,
                              ptrdiff_t ys, double *mean, double *invstd,
                              double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *mu = work, *scale = work + c, *m2 = work + 2 * c;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *xi = x + i * xs;
        NAME(runs_stats)(xi, 1, 0, g, m, m, mean + i * g, m2);
        for (ptrdiff_t k = 0; k < g; k++)
            invstd[i * g + k] = 1.0 / sqrt(m2[k] / (double)m + eps);
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            ptrdiff_t k = i * g + ch / cg;
            mu[ch] = mean[k];
            scale[ch] = gamma[ch] * invstd[k];
        }
        NAME(runs_apply)(xi, 1, 0, c, hw, hw, mu, scale, beta, y + i * ys, 0,
                         hw, 0);
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
    double *work = malloc(3 * (size_t)nt * (size_t)c * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n, nt, t, 1, &i0, &i1);
        NAME(gn_forward1)(x, i0, i1, c, g, hw, xs, gamma, beta, eps, y, ys,
                          mean, invstd, work + 3 * t * c);
    }
    free(work);
    return BNF_OK;
}

/*
 * Per group, with is = 1/std, a_ch = is * gamma_ch and the channel sums
 * s1 = sum dy, s2 = sum dy * (x - mean):
 *   A = sum_ch a_ch * s1_ch, B = sum_ch a_ch * s2_ch   (is * the sums of
 *   dxhat and dxhat * (x - mean)),
 *   dx = a_ch * dy - A / m - (x - mean) * is**2 * B / m;
 * dbeta_ch = sum over samples of s1_ch, dgamma_ch of is * s2_ch.  Forming
 * A from a_ch (as dx's first term) makes groups of one element give
 * dx == 0 exactly.  Samples [i0, i1), their dgamma and dbeta into the given
 * arrays, summed over blocks of BNF_SUM_ROWS samples first (long batches
 * keep the rounding of a cascade, not of one running sum); work: 8*c
 * doubles.
 */
static void NAME(gn_backward1)(const T *dy, ptrdiff_t ds, const T *x,
                               ptrdiff_t xs, ptrdiff_t i0, ptrdiff_t i1,
                               ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                               const double *mean, const double *invstd,
                               const double *gamma, T *dx, ptrdiff_t ts,
                               double *dgamma, double *dbeta, double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *mu = work, *s1 = work + c, *s2 = work + 2 * c;
    double *k_dy = work + 3 * c, *k_xmu = work + 4 * c, *k_0 = work + 5 * c;
    double *bg = work + 6 * c, *bb = work + 7 * c; /* the block's sums */
    for (ptrdiff_t ch = 0; ch < c; ch++)
        dgamma[ch] = dbeta[ch] = bg[ch] = bb[ch] = 0.0;
    double dm = (double)m;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *gi = dy + i * ds, *xi = x + i * xs;
        for (ptrdiff_t ch = 0; ch < c; ch++)
            mu[ch] = mean[i * g + ch / cg];
        NAME(runs_bwd_reduce)(gi, 0, hw, xi, 0, hw, 1, c, hw, mu, NULL, NULL,
                              s1, s2);
        for (ptrdiff_t k = 0; k < g; k++) {
            double is = invstd[i * g + k], a = 0.0, b = 0.0;
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_dy[ch] = is * gamma[ch];
                a += k_dy[ch] * s1[ch];
                b += k_dy[ch] * s2[ch];
                bb[ch] += s1[ch];
                bg[ch] += is * s2[ch];
            }
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_0[ch] = -a / dm;
                k_xmu[ch] = -is * is * b / dm;
            }
        }
        NAME(runs_bwd_apply)(gi, 0, hw, xi, 0, hw, 1, c, hw, mu, NULL, NULL,
                             k_dy, k_xmu, k_0, dx + i * ts, 0, hw);
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
    double *work = malloc(10 * (size_t)nt * (size_t)c * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        double *w = work + 10 * t * c;
        bnf_part(n, nt, t, 1, &i0, &i1);
        NAME(gn_backward1)(dy, ds, x, xs, i0, i1, c, g, hw, mean, invstd,
                           gamma, dx, ts, w + 8 * c, w + 9 * c, w);
    }
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        dgamma[ch] = dbeta[ch] = 0.0;
        for (int t = 0; t < nt; t++) {
            dgamma[ch] += work[10 * t * c + 8 * c + ch];
            dbeta[ch] += work[10 * t * c + 9 * c + ch];
        }
    }
    free(work);
    return BNF_OK;
}
