/* Template body of the group norm entry points; included by groupnorm.c
   once per dtype through instantiate.h (T the data type, NAME(f) the name).

   x is n samples of c channels of hw elements; each sample is contiguous
   ((c, hw) in C order) and samples are xs elements apart.  The c channels
   form g groups of c/g adjacent channels; statistics are per (sample,
   group), over a contiguous block of m = (c/g)*hw elements; gamma and beta
   are per channel.  Built from the along-runs kernels, one sample at a
   time (a sample's planes stay in cache between the backward's two
   passes). */

int NAME(gn_forward)(const T *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                     ptrdiff_t hw, ptrdiff_t xs, const double *gamma,
                     const double *beta, double eps, T *y, ptrdiff_t ys,
                     double *mean, double *invstd)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *work = malloc(3 * (size_t)c * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *mu = work, *scale = work + c, *m2 = work + 2 * c;
    for (ptrdiff_t i = 0; i < n; i++) {
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
                         hw);
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
 * dx == 0 exactly.
 */
int NAME(gn_backward)(const T *dy, ptrdiff_t ds, const T *x, ptrdiff_t xs,
                      ptrdiff_t n, ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                      const double *mean, const double *invstd,
                      const double *gamma, T *dx, ptrdiff_t ts,
                      double *dgamma, double *dbeta)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *work = malloc(6 * (size_t)c * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *mu = work, *s1 = work + c, *s2 = work + 2 * c;
    double *k_dy = work + 3 * c, *k_xmu = work + 4 * c, *k_0 = work + 5 * c;
    for (ptrdiff_t ch = 0; ch < c; ch++)
        dgamma[ch] = dbeta[ch] = 0.0;
    double dm = (double)m;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *gi = dy + i * ds, *xi = x + i * xs;
        for (ptrdiff_t ch = 0; ch < c; ch++)
            mu[ch] = mean[i * g + ch / cg];
        NAME(runs_bwd_reduce)(gi, 0, hw, xi, 0, hw, 1, c, hw, mu, s1, s2);
        for (ptrdiff_t k = 0; k < g; k++) {
            double is = invstd[i * g + k], a = 0.0, b = 0.0;
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_dy[ch] = is * gamma[ch];
                a += k_dy[ch] * s1[ch];
                b += k_dy[ch] * s2[ch];
                dbeta[ch] += s1[ch];
                dgamma[ch] += is * s2[ch];
            }
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_0[ch] = -a / dm;
                k_xmu[ch] = -is * is * b / dm;
            }
        }
        NAME(runs_bwd_apply)(gi, 0, hw, xi, 0, hw, 1, c, hw, mu, k_dy, k_xmu,
                             k_0, dx + i * ts, 0, hw);
    }
    free(work);
    return BNF_OK;
}
